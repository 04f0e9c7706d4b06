"""Exceptions raised by humwatch library code, and the CLI's exit codes.

Library code raises these; only the CLI turns them into a one-line message and an exit code. Every exit code the
CLI uses is one of the ``EXIT_*`` constants below (docs/reliability.md lists them with examples).
"""

import errno

EXIT_OK = 0
EXIT_ERROR = 1  # bad input or settings; the message says what to change
EXIT_USAGE = 2  # command-line syntax: an unknown option, a missing argument (typer's own)
EXIT_GATE = 3  # export: a size, op, parity or AUC gate failed; nothing was written
EXIT_REFUSED = 4  # recalibration refused: the new baseline looks like a developing fault; the old one stays
EXIT_DAMAGED = 5  # a stored file is damaged or of an unknown version: `humwatch site repair NAME` says what to do
EXIT_PARTIAL = 6  # finished, but some inputs were skipped (each named in a `warning:` line)
EXIT_INTERNAL = 70  # a humwatch bug (EX_SOFTWARE): one line, details with HUMWATCH_DEBUG=1
EXIT_IO = 74  # the system refused a read or write: disk full, read-only file system, permission (EX_IOERR)
EXIT_BUSY = 75  # the site is busy: another calibration, repair or monitor holds it; try again later (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT

# errno values that mean "the system refused", not "your input is wrong"
IO_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.EFBIG})


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library messages from soundfile, torch etc. span several)."""
    return " ".join(str(e).split())[:limit] or type(e).__name__


def shown(x: object) -> str:
    """Text of a user-supplied name or path that can be printed and logged: file names that are not valid UTF-8
    (Python keeps their bytes as surrogates) get ``\\xff``-style escapes instead of failing to print."""
    s = str(x)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class HumwatchError(Exception):
    """Base class for every error humwatch reports to a user (message is one line)."""

    exit_code = EXIT_ERROR


class AudioError(HumwatchError, ValueError):
    """Audio that cannot be used: missing, not audio, empty, too short, NaN/Inf samples."""


class ParamsMismatchError(HumwatchError, ValueError):
    """An artifact was made with other front-end parameters than the ones in use."""


class ModelError(HumwatchError):
    """A model directory that is missing, corrupt, or of an unknown version."""


class NotFittedError(HumwatchError, ValueError):
    """A detector was used before `fit` (scikit-learn's convention)."""


class DataError(HumwatchError, ValueError):
    """A data set or test directory that cannot be used as given."""


class DecisionError(HumwatchError, ValueError):
    """A threshold or alarm-rule setting that is malformed or out of range (``k = 7``, an alarm rule ``6 of 5``)."""


class DamagedError(HumwatchError):
    """A stored file (site settings, a calibration record, the ``current`` pointer, the score log, a model folder) is
    damaged, of another program, or of a newer humwatch: refused as a whole, never half-used (exit 5)."""

    exit_code = EXIT_DAMAGED


class StorageError(HumwatchError):
    """The system refused a write: disk full, read-only file or file system, permission (exit 74)."""

    exit_code = EXIT_IO


class HumwatchWarning(UserWarning):
    """Something usable but suspicious; the CLI prints these as one ``warning:`` line."""
