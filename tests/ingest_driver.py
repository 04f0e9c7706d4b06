"""An ingest driven in process (no broker): messages go through its handler (``_on_message`` → ``flush``: decode,
log, commit), the same path as a delivered message, at QoS 0 so nothing is acknowledged."""

from __future__ import annotations

from types import SimpleNamespace

from helpers import valid_record

from calibration.fleet import telemetry as tm
from calibration.fleet.ingest import Ingest, IngestConfig
from calibration.fleet.mqtt import broker
from calibration.store import SiteConfig, SiteStore


def calibrated_store(root, rule, threshold: float = 1.0, site: str = "pump-3") -> SiteStore:
    """A site store with ``site`` calibrated (threshold ``threshold``, alarm rule ``rule``) on model hash ``m0``."""
    store = SiteStore(root)
    s = store.create(SiteConfig(name=site, model_path="model", model_hash="m0"))
    base = valid_record(threshold, site=site, model={**valid_record()["model"], "hash": "m0"})
    s.add_calibration({**base, "threshold": {**base["threshold"], "alarm_m": getattr(rule, "m", 0),
                                             "alarm_n": rule.n, "rule": rule.to_dict()}})
    return store


class Driver:
    """An ingest fed messages directly, as its network thread would queue them."""

    def __init__(self, store: SiteStore, site: str = "pump-3"):
        self.site = site
        self.said: list[str] = []
        self.ing = Ingest(IngestConfig(broker("mqtt://127.0.0.1:1", env={}), store), say=self.said.append)

    def send(self, topic: str, payload: bytes) -> None:
        self.ing._on_message(None, None, SimpleNamespace(topic=topic, payload=payload, mid=0, qos=0))

    def birth(self, device: str, birth: tm.Birth | bytes) -> None:
        """Deliver a birth message: a :class:`~calibration.fleet.telemetry.Birth` or its JSON bytes as sent."""
        self.send(tm.topic(self.site, device, tm.BIRTH_SUFFIX), birth if isinstance(birth, bytes) else birth.to_json())

    def patches(self, device: str, seqs, t0: float, scores, classes=None, **kw) -> None:
        """Patches ``seqs`` (at ``t0 + seq``, score ``scores[seq]``, class probabilities ``classes[seq]`` if given),
        then a flush."""
        for i in seqs:
            cls = () if classes is None else classes[i]
            self.send(tm.topic(self.site, device, tm.KIND_PATCH),
                      tm.patch(self.site, i, t0 + i, float(scores[i]), False, classes=cls, **kw))
        self.ing.flush()

    def run_id(self, device: str) -> int:
        return self.ing.sites[self.site].devices[device].run.run_id

    def close(self) -> None:
        for s in self.ing.sites.values():
            s.log.close()
