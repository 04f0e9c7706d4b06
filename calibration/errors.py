"""Exceptions of the calibration package (all are HumwatchError, so the CLI prints one line)."""

from anomaly.errors import HumwatchError


class SiteError(HumwatchError, ValueError):
    """A bad site name, a missing or malformed site, or a site not ready for the requested step."""


class SiteLockedError(HumwatchError):
    """Another calibration or recalibration of the same site is running."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class CalibrationError(HumwatchError, ValueError):
    """Audio or settings that cannot give a trustworthy calibration."""


class ReportError(HumwatchError, ValueError):
    """A report option that cannot be used (bad --since or --format, nothing in the period)."""


class ShiftRefused(HumwatchError):
    """A recalibration was refused because the new baseline looks like a developing fault."""

    exit_code = 4
