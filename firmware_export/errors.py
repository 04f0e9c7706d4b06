"""Exceptions of the firmware export (all are HumwatchError, so the CLI prints one line and exits with their code)."""

from __future__ import annotations

from anomaly.errors import EXIT_ERROR, EXIT_GATE, HumwatchError


class ExportError(HumwatchError):
    """The export could not run: missing model, uncalibrated site, unusable audio, a tool that failed (exit 1)."""

    exit_code = EXIT_ERROR


class GateFailed(HumwatchError):
    """The export ran but its result must not ship: a size, op, parity or AUC gate failed (exit 3).

    ``failures`` holds one ``{"gate", "detail", ...}`` dict per failed gate and ``manifest`` the complete manifest
    (nothing is written to ``--out`` when a gate fails).
    """

    exit_code = EXIT_GATE

    def __init__(self, failures: list[dict], manifest: dict | None = None):
        self.failures = failures
        self.manifest = manifest
        what = "; ".join(f"{f['gate']}: {f['detail']}" for f in failures)
        super().__init__(f"export gate{'s' if len(failures) > 1 else ''} failed ({what}); nothing was written")
