"""``monitor --publish``: the monitor's scores and alarms as telemetry messages (:mod:`calibration.fleet.telemetry`)
published at QoS 1 through a bounded buffer (:class:`calibration.fleet.mqtt.Publisher`).

The monitor applies the site's alarm rule itself, so its patch messages carry the "device applies the rule" flag and
it publishes its alarms; the ingest logs those instead of applying the rule again. Its birth message names the
threshold and the rule it applies. Its boot number is the local score
log's run id (each monitor run starts a new sequence).
"""

from __future__ import annotations

import numpy as np

from calibration.fleet import telemetry
from calibration.fleet.mqtt import Publisher


class TelemetrySink:
    """A monitor sink (:class:`calibration.monitoring.monitor.Sink`) that publishes every patch and alarm."""

    def __init__(self, publisher: Publisher, site: str):
        self.pub, self.site = publisher, site
        self.boot, self.seq = 0, 0

    def start(self, run_id: int, threshold: float, model_hash: str, calibration_id: str, classes: list[str],
              rule=None) -> None:
        """Publish the birth message (retained): the threshold and alarm rule (``rule``, an :mod:`anomaly.decision`
        rule) the monitor applies, its model and calibration."""
        self.boot, self.seq = run_id & 0xFFFF, 0
        birth = telemetry.Birth(threshold, "float", model_hash, calibration_id, tuple(classes), rule)
        self.pub.publish(telemetry.topic(self.site, self.pub.device, telemetry.BIRTH_SUFFIX), birth.to_json(),
                         retain=True)

    def patches(self, t_utc, scores, exceeded, probs) -> list[int]:
        seqs = []
        t = telemetry.topic(self.site, self.pub.device, telemetry.KIND_PATCH)
        for i in range(len(scores)):
            seqs.append(self.seq)
            cls = () if probs is None else probs[i]
            self.pub.publish(t, telemetry.patch(self.site, self.seq, float(t_utc[i]), float(scores[i]),
                                                bool(exceeded[i]), boot=self.boot, device_rule=True, classes=cls))
            self.seq += 1
        return seqs

    def alarm(self, seq: int, t_utc: float, score: float, threshold: float, class_index: int | None,
              probs: np.ndarray | None) -> None:
        self.pub.publish(telemetry.topic(self.site, self.pub.device, telemetry.KIND_ALARM),
                         telemetry.alarm(self.site, seq, t_utc, score, threshold, boot=self.boot,
                                         alarm_class=class_index, classes=() if probs is None else probs))
