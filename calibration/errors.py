"""Exceptions of the calibration package (all are HumwatchError, so the CLI prints one line; exit codes are
:mod:`anomaly.errors`' ``EXIT_*``)."""

from anomaly.errors import EXIT_BUSY, EXIT_DAMAGED, EXIT_REFUSED, DamagedError, HumwatchError


class SiteError(HumwatchError, ValueError):
    """A bad site name, a missing or malformed site, or a site not ready for the requested step."""


class SiteDamagedError(SiteError, DamagedError):
    """A stored file of a site (site.toml, a calibration record, ``current``, its switch log, the score log) is
    damaged, foreign or of a newer humwatch. The message names the file and says what to do (usually
    ``humwatch site repair NAME``)."""

    exit_code = EXIT_DAMAGED


class SiteLockedError(HumwatchError):
    """Another calibration, recalibration, repair or monitor holds the site (or its score log)."""

    exit_code = EXIT_BUSY  # EX_TEMPFAIL: try again later


class CalibrationError(HumwatchError, ValueError):
    """Audio or settings that cannot give a trustworthy calibration."""


class ReportError(HumwatchError, ValueError):
    """A report option that cannot be used (bad --since or --format, nothing in the period)."""


class ShiftRefused(HumwatchError):
    """A recalibration was refused because the new baseline looks like a developing fault."""

    exit_code = EXIT_REFUSED
