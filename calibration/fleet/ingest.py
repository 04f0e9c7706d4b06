"""``humwatch ingest``: the fleet's telemetry (MQTT) into each site's score log, the same log ``monitor`` writes.

Delivery: one MQTT 5 session that outlives the process (fixed client id, clean start off, session expiry a week),
QoS 1, and *manual* acknowledgements: a message is acknowledged only after the transaction that logged it is
committed. A message the ingest received but had not committed when it was killed is therefore delivered again
after the restart, and a message the broker delivers twice (a QoS 1 resend) is logged once: the score log's rows are
unique by (device, sequence number) (:meth:`calibration.monitoring.scorelog.ScoreLog.append_device`).

Decisions come from their owners: a device that sends scores only is judged by ``rule.stream(threshold)``, where
``rule`` (an :mod:`anomaly.decision` rule) is the device's own from its birth message (an exported firmware's int8
rule) or else the rule of the site's calibration in force (``calibrate.calibration_rule``; the site's setting before
any calibration), and the threshold is the device's own (its birth message: e.g. the int8 threshold of an exported
firmware) or else the site's current calibration. An int8 device whose birth message names no rule is refused when the
site's rule is bound to the float model's scores (``rule.bound_to_scores``: a windowed mean's centre and scale): its
scores cannot be judged by it. A device that applies the rule itself (flag in its messages) sends alarm messages,
which are logged as they are.

Nothing a device sends can stop the ingest: a malformed message, a message for an unknown or uncalibrated site, for
another site than its topic's, or with an implausible time is counted by reason, logged (the first few of each kind
per site) and dropped. A gap is recorded when a device's next patch comes more than ``silence_s`` after its
previous one; a device silent now is reported by the ingest's log and shown by the reports (its last patch time).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from anomaly.atomic import write_text
from anomaly.decision import MAX_WINDOW
from anomaly.errors import HumwatchError
from calibration.calibrate import calibration_rule
from calibration.fleet import telemetry
from calibration.fleet.mqtt import Broker, BrokerError, client, describe_connack
from calibration.fleet.telemetry import Birth, TelemetryError
from calibration.monitoring.scorelog import DEFAULT_RETENTION_DAYS, Run, ScoreLog
from calibration.store import SiteStore

SESSION_EXPIRY_S = 7 * 86400
REFRESH_S = 10.0  # how often a site's settings and current calibration are re-read
LOG_FIRST = 5  # rejected messages logged per (site, reason); the rest are only counted


@dataclass
class IngestConfig:
    broker: Broker
    store: SiteStore
    client_id: str = "humwatch-ingest"
    site: str | None = None  # subscribe to one site only
    partition: tuple[int, int] | None = None  # (k, n): only the sites of partition k of n (partition_of)
    silence_s: float = 30.0
    commit_s: float = 0.5
    max_age_days: float = DEFAULT_RETENTION_DAYS
    stats_path: Path | None = None  # counters as JSON, rewritten every few seconds


@dataclass
class _Device:
    run: Run | None = None
    run_key: tuple | None = None
    rule: object = None  # the rule's state (rule.stream(threshold))
    applied: tuple = (None, "")  # the rule applied and whose it is ("device": its birth's; "site"), for the alarm
    last_key: int = -1  # the highest sequence key fed to the rule (and logged)
    last_t: float | None = None  # its patch time
    heard: float = 0.0  # wall clock of the last message
    silent_noted: bool = False
    resumed: bool = False  # logged by an earlier ingest: its first run replays its last logged scores into the rule


@dataclass
class _Site:
    log: ScoreLog
    rule: object
    threshold: float | None
    calibration_id: str | None
    model_hash: str
    checked: float
    devices: dict[str, _Device] = field(default_factory=dict)
    births: dict[str, Birth] = field(default_factory=dict)
    batch: dict[str, tuple] = field(default_factory=dict)  # device -> (run, seqs, times, scores, probs) to insert

    def write_batch(self, device: str | None = None) -> tuple[int, int]:
        """Insert the queued patches (of one device, or all); returns (new rows, duplicates skipped)."""
        new = dup = 0
        for dev in ([device] if device is not None else list(self.batch)):
            b = self.batch.pop(dev, None)
            if b is None:
                continue
            run, seqs, ts, scores, probs = b
            n = self.log.append_device(run, dev, seqs, ts, scores, probs if any(p is not None for p in probs)
                                       else None)
            new, dup = new + n, dup + len(seqs) - n
        return new, dup


class Ingest:
    """Subscribes and logs until :meth:`stop`. ``counts`` holds the counters shown in the stats."""

    def __init__(self, cfg: IngestConfig, say: Callable[[str], None] = print):
        self.cfg, self.say = cfg, say
        self.counts: Counter = Counter()
        self.sites: dict[str, _Site] = {}
        self._logged: Counter = Counter()
        self._queue: list[tuple[str, bytes, int, int, int]] = []
        self._qlock = threading.Lock()
        self._gen = 0  # connection generation: acknowledge only on the connection that delivered
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.refused: str | None = None
        self.client = None
        self._subscribed: set[str] = set()

    # -- network thread ------------------------------------------------------------------------------------------
    def _on_connect(self, c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = describe_connack(reason_code)
            self.counts["connect_refused"] += 1
            self.say(f"broker {self.cfg.broker} refused the ingest: {self.refused}")
            return
        self._gen += 1
        self.refused = None
        self._subscribed = set()
        self._subscribe(c)
        self.counts["connects"] += 1
        self.connected.set()
        self.say(f"connected to {self.cfg.broker} (session {'resumed' if flags.session_present else 'new'})")

    def topics(self) -> list[str]:
        """The subscriptions: every site, one site, or the sites of this process's partition."""
        if self.cfg.partition is None:
            return [telemetry.subscription(self.cfg.site)]
        k, n = self.cfg.partition
        return [telemetry.subscription(s) for s in self.cfg.store.names() if partition_of(s, n) == k]

    def _subscribe(self, c) -> None:
        new = [t for t in self.topics() if t not in self._subscribed]
        if new:
            c.subscribe([(t, 1) for t in new])
            self._subscribed.update(new)

    def _on_disconnect(self, c, userdata, flags, reason_code, properties):
        if self.connected.is_set():
            self.say(f"lost the broker {self.cfg.broker} ({reason_code}); reconnecting")
        self.connected.clear()

    def _on_message(self, c, userdata, msg):
        with self._qlock:
            self._queue.append((msg.topic, msg.payload, msg.mid, msg.qos, self._gen))

    # -- main thread -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        b = self.cfg.broker
        self.client = client(b, self.cfg.client_id, manual_ack=True, v5=True)
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = 65535
        try:
            self.client.connect_async(b.host, b.port, keepalive=30, clean_start=False, properties=props)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot connect to {b}: {e}") from None
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> None:
        if not self.connected.wait(timeout):
            why = f"refused: {self.refused}" if self.refused else "no answer"
            raise BrokerError(f"cannot connect to {self.cfg.broker} within {timeout:g} s ({why})")

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: Callable[[], bool] | None = None) -> Counter:
        """Log what arrives every ``commit_s`` until :meth:`stop` (or ``until()`` is true); then flush and close."""
        if self.client is None:
            self.start()
        last_stats = 0.0
        try:
            while not self._stop.is_set() and not (until and until()):
                self._stop.wait(self.cfg.commit_s)
                self.flush()
                now = time.monotonic()
                if now - last_stats > 5:
                    self._note_silent()
                    if self.cfg.partition is not None and self.connected.is_set():
                        self._subscribe(self.client)  # sites created since
                    self.write_stats()
                    last_stats = now
        finally:
            self.flush()
            self.client.disconnect()
            self.client.loop_stop()
            for s in self.sites.values():
                s.log.close()
            self.write_stats()
        return self.counts

    def write_stats(self) -> None:
        if self.cfg.stats_path:
            write_text(self.cfg.stats_path, json.dumps({"t": time.time(), **self.counts}, sort_keys=True) + "\n")

    def flush(self) -> int:
        """Log the queued messages, commit, then acknowledge them. Returns how many were handled."""
        with self._qlock:
            batch, self._queue = self._queue, []
        if not batch:
            return 0
        now = time.time()
        touched: set[str] = set()
        for topic_, payload, _, _, _ in batch:
            site = self._handle(topic_, payload, now)
            if site:
                touched.add(site)
        for name in touched:  # commit before acknowledging: an unlogged message is never acknowledged
            self._count_written(self.sites[name].write_batch())
            self.sites[name].log.maybe_commit(force=True)
        for _, _, mid, qos, gen in batch:
            if qos and gen == self._gen:
                self.client.ack(mid, qos)
        self.counts["received"] += len(batch)
        return len(batch)

    def _count_written(self, new_dup: tuple[int, int]) -> None:
        self.counts["logged"] += new_dup[0]
        self.counts["duplicates"] += new_dup[1]

    def _reject(self, reason: str, site: str, detail: str) -> None:
        self.counts[f"rejected_{reason}"] += 1
        self._logged[(site, reason)] += 1
        if self._logged[(site, reason)] <= LOG_FIRST:
            more = " (further ones counted only)" if self._logged[(site, reason)] == LOG_FIRST else ""
            self.say(f"rejected ({reason}): {detail}{more}")

    def _handle(self, topic_: str, payload: bytes, now: float) -> str | None:
        try:
            tp = telemetry.parse_topic(topic_)
        except TelemetryError as e:
            self._reject(e.reason, "?", str(e))
            return None
        st = self._site(tp.site)
        if st is None:
            return None
        try:
            if tp.suffix == telemetry.BIRTH_SUFFIX:
                st.births.pop(tp.device, None)  # a birth it cannot read leaves none: no older constants apply
                if payload:  # an empty retained message clears the birth
                    st.births[tp.device] = Birth.from_json(payload)
                self.counts["births"] += 1
                return None
            m = telemetry.decode(payload, tp.device)
            telemetry.check_message(m, tp.site, now, self.cfg.max_age_days * 86400)
        except TelemetryError as e:
            self._reject(e.reason, tp.site, f"{topic_}: {e}")
            return None
        try:
            self._log(st, tp.site, tp.device, m)
        except HumwatchError as e:
            self._reject("site", tp.site, f"{topic_}: {e}")
            return None
        return tp.site

    def _site(self, name: str) -> _Site | None:
        st = self.sites.get(name)
        mono = time.monotonic()
        if st is not None and mono - st.checked < REFRESH_S:
            return st
        site = self.cfg.store.site(name)
        try:
            if not site.exists():
                self._reject("unknown_site", name, f"no site {name!r} in {self.cfg.store.root}")
                return None
            cfg = site.config()
            cal = site.calibration() if site.current_id() else None
        except HumwatchError as e:
            self._reject("site", name, str(e))
            return None
        thr = float(cal["threshold"]["threshold"]) if cal else None
        cid = cal["id"] if cal else None
        try:  # the rule of the calibration in force, as monitor applies it
            rule = calibration_rule(cal) if cal else cfg.rule
        except (KeyError, TypeError, ValueError) as e:
            self._reject("site", name, f"site {name!r}: calibration {cid} names no usable alarm rule ({e!r})")
            return None
        if st is None:
            st = self.sites[name] = _Site(ScoreLog(site.dir / "scores.sqlite", commit_every=3600), rule, thr, cid,
                                          cal["model"]["hash"] if cal else "", mono)
            for dev, (key, t) in st.log.last_seq().items():  # resume: what is logged already was fed to the rule
                st.devices[dev] = _Device(last_key=key, last_t=t, heard=time.time(), resumed=True)
        else:
            st.rule, st.threshold, st.calibration_id, st.checked = rule, thr, cid, mono
            st.model_hash = cal["model"]["hash"] if cal else ""
        return st

    def _device_run(self, st: _Site, name: str, m: telemetry.Message) -> tuple[_Device, float]:
        d = st.devices.setdefault(name, _Device())
        birth = st.births.get(name)
        if birth is not None:
            thr, cid, model = birth.threshold, birth.calibration or (st.calibration_id or ""), birth.model_hash
        elif m.int8:
            raise TelemetryError("site", f"device {name!r} sends int8 scores but no birth message with its threshold")
        elif st.threshold is None:
            raise TelemetryError("site", f"device {name!r}: the site is not calibrated and the device sent no "
                                         "threshold (birth message)")
        else:
            thr, cid, model = st.threshold, st.calibration_id, st.model_hash
        own = birth is not None and birth.rule is not None
        rule = birth.rule if own else st.rule
        if (not own and not m.device_rule and rule.bound_to_scores
                and (m.int8 or birth is not None and birth.runtime == "int8")):
            raise TelemetryError("site", f"device {name!r} sends int8 scores but its birth message names no alarm "
                                         f"rule, and the site's rule ({rule.short}) is calibrated on the float "
                                         "model's scores (export the firmware again: its birth message carries the "
                                         "int8 rule)")
        key = (thr, cid, model, rule)
        if d.run_key != key:
            self._count_written(st.write_batch(name))  # the queued patches belong to the previous run
            classes = list(birth.classes) if birth and birth.classes else None
            clf = {"hash": "", "classes": classes, "thresholds": [float("nan")] * len(classes)} if classes else None
            state = rule.stream(thr)
            d.run = st.log.start_run(cid, model, thr, getattr(rule, "m", 0), rule.n, f"mqtt:{name}", clf)
            d.run_key, d.rule, d.applied = key, state, (rule, "device" if own else "site")
            if d.resumed:  # continue the rule where the previous ingest stopped (no repeated onset)
                for score, t in st.log.recent_device_scores(name, max(MAX_WINDOW, rule.n)):
                    if t == thr:
                        d.rule.update(score)
                d.resumed = False
        return d, thr

    def _log(self, st: _Site, site: str, device: str, m: telemetry.Message) -> None:
        d, thr = self._device_run(st, device, m)
        d.heard, d.silent_noted = time.time(), False
        if m.kind == telemetry.KIND_ALARM:
            info = {"t_utc": m.t_utc, "site": site, "device": device, "kind": "anomaly" if m.alarm_class is None
                    else "classifier", "score": m.score, "threshold": m.threshold, "source": "device",
                    "class_index": m.alarm_class}
            self.counts["alarms" if st.log.alarm_device(d.run, device, m.key, m.t_utc, m.score, info)
                        else "duplicates"] += 1
            return
        birth = st.births.get(device)
        n_cls = len(birth.classes) if birth is not None else 0
        b = st.batch.setdefault(device, (d.run, [], [], [], []))
        b[1].append(m.key)
        b[2].append(m.t_utc)
        b[3].append(m.score)
        b[4].append(m.classes if m.classes and len(m.classes) == n_cls else None)
        if m.key <= d.last_key:
            return  # a resend, or a late older patch: logged (if new) but not fed to the rule again
        if d.last_t is not None and m.t_utc - d.last_t > self.cfg.silence_s:
            st.log.gap(device, d.last_t, m.t_utc)
            self.counts["gaps"] += 1
        d.last_key, d.last_t = m.key, m.t_utc
        if not m.device_rule and d.rule.update(m.score):
            info = {"t_utc": m.t_utc, "site": site, "device": device, "kind": "anomaly", "score": m.score,
                    "threshold": thr, "rule": d.applied[0].describe(), "rule_of": d.applied[1], "source": "ingest"}
            if st.log.alarm_device(d.run, device, m.key, m.t_utc, m.score, info):
                self.counts["alarms"] += 1

    def _note_silent(self) -> None:
        now = time.time()
        for name, st in self.sites.items():
            for dev, d in st.devices.items():
                if not d.silent_noted and d.heard and now - d.heard > self.cfg.silence_s:
                    d.silent_noted = True
                    self.counts["silent_devices_noted"] += 1
                    self.say(f"site {name} device {dev}: silent for {now - d.heard:.0f} s")


def partition_of(site: str, n: int) -> int:
    """The partition (0..n-1) of a site: a stable hash of its name, the same in every ingest process."""
    return zlib.crc32(site.encode()) % n


def run_ingest(cfg: IngestConfig, say: Callable[[str], None] = print, connect_timeout: float = 15.0,
               until: Callable[[], bool] | None = None) -> Counter:
    ing = Ingest(cfg, say)
    ing.start()
    ing.wait_connected(connect_timeout)
    return ing.run(until)


def summary(counts: Counter) -> str:
    rej = {k.removeprefix("rejected_"): v for k, v in counts.items() if k.startswith("rejected_")}
    return (f"{counts['received']} messages: {counts['logged']} scores logged, {counts['duplicates']} duplicates "
            f"skipped, {counts['alarms']} alarms, {counts['gaps']} gaps" +
            (", rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(rej.items())) if rej else ""))
