"""``humwatch report``: one self-contained HTML page about a site's monitoring, and exports of its score log.

The page holds:

* a verdict at the top (all normal / watch / act, the reasons and the next step:
  :func:`~calibration.report.data.verdict`);
* a score timeline with the threshold of each monitoring run, calibration changes and alarms;
* the alarm table with how serious each alarm is (and, with a fault classifier, the per-class probabilities over time);
* a histogram of the period's scores against the calibration baseline;
* drift indicators: 50/90/99 % score quantiles per week (per day, hour or 10 min on shorter spans) against the
  baseline's, and the share of patches over the threshold against the certificate's exceedance;
* the top-N most anomalous patches (at most one per ``PATCH_SPACING_S``), each re-read from its source file and run
  through the site's model: input log-mel, reconstruction, squared-error map and per-band error against the
  calibration's mean band error, naming the bands that deviated most;
* the current calibration certificate, its findings, and the site's calibration history.

Three modules: :mod:`~calibration.report.data` (reading the score log and calibrations, and the analysis behind each
section), :mod:`~calibration.report.charts` (matplotlib figures as inline PNG) and :mod:`~calibration.report.html`
(the page). A new section is a data function, a chart if it needs one, and an ``_..._section`` in ``html``.
"""

from calibration.errors import ReportError
from calibration.report.data import (
    MAX_POINTS,
    PATCH_SPACING_S,
    band_groups,
    export_log,
    fault_label,
    format_for,
    parse_since,
    read_log,
    resolve_audio,
    timeline_series,
    top_bands,
    top_patches,
)
from calibration.report.html import build_report, write_report

__all__ = ["MAX_POINTS", "PATCH_SPACING_S", "ReportError", "band_groups", "build_report", "export_log", "fault_label",
           "format_for", "parse_since", "read_log", "resolve_audio", "timeline_series", "top_bands", "top_patches",
           "write_report"]
