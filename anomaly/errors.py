"""Exceptions raised by humwatch library code.

Library code raises these; only the CLI turns them into a one-line message and an exit code.
"""


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library messages from soundfile, torch etc. span several)."""
    return " ".join(str(e).split())[:limit] or type(e).__name__


class HumwatchError(Exception):
    """Base class for every error humwatch reports to a user (message is one line)."""

    exit_code = 1


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


class HumwatchWarning(UserWarning):
    """Something usable but suspicious; the CLI prints these as one ``warning:`` line."""
