"""``humwatch_telemetry.h``: the fleet telemetry schema's constants for the C encoder (``frontend_ref/hw_telemetry.c``),
generated from its owner :mod:`calibration.fleet.telemetry`, plus the device's birth message (its threshold, alarm
rule and model, as JSON) and its site."""

from __future__ import annotations

import json

from calibration.fleet import telemetry as tm

SOURCES = ("hw_telemetry.h", "hw_telemetry.c")
HEADER = "humwatch_telemetry.h"


def _c_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=True)  # a JSON string of ASCII is a valid C string literal


def telemetry_header(site: str | None, threshold: float, model_hash: str, calibration_id: str | None,
                     banner: str = "", *, classes, rule) -> str:
    """The text of ``humwatch_telemetry.h``; ``threshold`` and ``rule`` (an :mod:`anomaly.decision` rule, the export's
    ``device_rule``) are the device's, in the int8 model's score domain. ``classes`` are the exported fault
    classifier's class names in the order of the probabilities the device sends
    (:attr:`firmware_export.classifier.ClassifierSource.classes`), ``()`` without a classifier: the ingest logs a
    device's class probabilities only when their count is its birth message's. Both are keyword-only and required,
    so that no caller forgets them (the ingest judges a scores-only device by the rule).

    Raises:
        TelemetryError: a rule the ingest could not apply (an uncalibrated windowed mean).
    """
    birth = tm.Birth(float(threshold), "int8", model_hash, calibration_id or "", tuple(classes),
                     rule).to_json().decode()
    return f"""/* humwatch_telemetry.h: {banner}
 * Fleet telemetry schema v{tm.VERSION} (docs/fleet.md); the encoder is hw_telemetry.c. */
#ifndef HUMWATCH_TELEMETRY_H
#define HUMWATCH_TELEMETRY_H

#define HW_TELEMETRY_VERSION {tm.VERSION}
#define HW_TELEMETRY_KIND_PATCH {tm.KIND_PATCH}
#define HW_TELEMETRY_KIND_ALARM {tm.KIND_ALARM}
#define HW_TELEMETRY_F_OVER {tm.F_OVER}
#define HW_TELEMETRY_F_INT8 {tm.F_INT8}
#define HW_TELEMETRY_F_DEVICE_RULE {tm.F_DEVICE_RULE}
#define HW_TELEMETRY_NO_STATE {tm.NO_STATE}
#define HW_TELEMETRY_NO_CLASS {tm.NO_CLASS}
#define HW_TELEMETRY_MAX_CLASSES {tm.MAX_CLASSES}
#define HW_TELEMETRY_MAX_SITE {tm.MAX_SITE}
#define HW_TELEMETRY_HEADER_BYTES {tm.HEADER.size}
#define HW_TELEMETRY_ALARM_TAIL_BYTES {tm.ALARM_TAIL.size}
#define HW_TELEMETRY_MAX_BYTES (HW_TELEMETRY_HEADER_BYTES + HW_TELEMETRY_MAX_SITE + HW_TELEMETRY_ALARM_TAIL_BYTES + \\
                                HW_TELEMETRY_MAX_CLASSES)
#define HW_TELEMETRY_TOPIC_PREFIX {_c_string(tm.PREFIX)}

/* this export's site ("" without one) and its birth message (publish retained on humwatch/v1/<site>/<device>/b) */
#define HW_TELEMETRY_SITE {_c_string(site or "")}
#define HW_TELEMETRY_BIRTH {_c_string(birth)}

#endif /* HUMWATCH_TELEMETRY_H */
"""
