"""The fleet's telemetry schema: the one owner of the MQTT topics and of the bytes of a patch or alarm message.

A device (the exported firmware, or ``humwatch monitor --publish``) publishes one message per scored patch and one
per alarm; ``humwatch ingest`` decodes them into the site's score log. The C encoder in the exported firmware
(``frontend_ref/hw_telemetry.c``, constants generated from this module by :mod:`firmware_export.telemetry_c`) writes
the same bytes; ``tests/test_telemetry.py`` compares the two byte for byte. docs/fleet.md documents the layout.

Topics: ``humwatch/v1/<site>/<device>/p`` (patches), ``.../a`` (alarms), ``.../b`` (birth: the device's decision
constants as JSON, retained). The broker's ACL gives a device's credential (user name = site, client id = device)
write access to ``humwatch/v1/<site>/<device>/#`` only; the site is also inside every message, so the ingest can
refuse a message whose site is not its topic's.

Message layout, version 1, little-endian (22 bytes + the site name + the body)::

    0  u8   version (1)             1  u8  kind (1 patch, 2 alarm)
    2  u8   flags                   3  u8  n_classes (class probabilities that follow, 0..32)
    4  u16  boot (device start counter)    6  u16 milliseconds of the time
    8  u32  sequence number within the boot    12 u32 time, whole seconds since the Unix epoch (UTC)
    16 f32  raw score               20 u8  operating state (255: none)    21 u8 site name length (1..64)
    22 ...  site name (ASCII)
    then, patch: n_classes bytes, each round(p * 255) of a class probability
          alarm: f32 threshold, u8 alarm class (255: the anomaly score's rule; else a class index), then the
                 n_classes bytes of the class probabilities at the onset

Flags: bit 0 the score is over the device's threshold; bit 1 the score comes from the int8 runtime (compare with
the int8 threshold of the export, not the float calibration's); bit 2 the device applies the alarm rule itself
(it publishes alarm messages; the ingest then applies no rule to its scores).
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from dataclasses import dataclass, field

from anomaly.decision import AlarmRule, rule_from_dict
from anomaly.errors import DecisionError, HumwatchError

VERSION = 1
PREFIX = "humwatch/v1"
KIND_PATCH, KIND_ALARM = 1, 2
SUFFIX = {KIND_PATCH: "p", KIND_ALARM: "a"}
BIRTH_SUFFIX = "b"
F_OVER, F_INT8, F_DEVICE_RULE = 1, 2, 4
NO_STATE = NO_CLASS = 255
MAX_CLASSES = 32
HEADER = struct.Struct("<BBBBHHIIfBB")  # version, kind, flags, n_classes, boot, ms, seq, t_s, score, state, site_len
ALARM_TAIL = struct.Struct("<fB")  # threshold, alarm class
MAX_SITE = 64
DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SITE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # the site store's names (calibration.store.NAME_RE)
EARLIEST_UTC = 1_577_836_800.0  # 2020-01-01: a device clock before this was never set
MAX_FUTURE_S = 300.0  # a message more than 5 minutes ahead of the ingest's clock has a wrong clock


class TelemetryError(HumwatchError, ValueError):
    """A message that cannot be decoded or must be refused (malformed, wrong site, implausible time)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # malformed | wrong_site | implausible_time | unknown_site | bad_topic


@dataclass(frozen=True)
class Message:
    """One decoded patch or alarm message."""

    kind: int
    site: str
    seq: int
    boot: int
    t_utc: float
    score: float
    over: bool = False
    int8: bool = False
    device_rule: bool = False
    state: int | None = None
    classes: tuple[float, ...] = ()
    threshold: float | None = None  # alarms only
    alarm_class: int | None = None  # alarms only: None = the anomaly score's rule
    device: str = ""  # from the topic (filled by decode_topic/parse)

    @property
    def key(self) -> int:
        """The device's sequence number across boots: ``boot << 32 | seq`` (the log's idempotency key)."""
        return (self.boot << 32) | self.seq


@dataclass
class Topic:
    site: str
    device: str
    suffix: str


def topic(site: str, device: str, kind: int | str) -> str:
    suffix = kind if isinstance(kind, str) else SUFFIX[kind]
    return f"{PREFIX}/{site}/{device}/{suffix}"


def subscription(site: str | None = None) -> str:
    """The ingest's subscription: every site, or one (``humwatch/v1/+/+/+`` or ``humwatch/v1/pump-3/+/+``)."""
    return f"{PREFIX}/{site or '+'}/+/+"


def parse_topic(t: str) -> Topic:
    parts = t.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[4] not in (*SUFFIX.values(), BIRTH_SUFFIX):
        raise TelemetryError("bad_topic", f"not a humwatch v1 topic: {t[:120]!r}")
    if not SITE_RE.fullmatch(parts[2]) or not DEVICE_RE.fullmatch(parts[3]):
        raise TelemetryError("bad_topic", f"bad site or device name in {t[:120]!r}")
    return Topic(parts[2], parts[3], parts[4])


def check_device(device: str) -> str:
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise TelemetryError("bad_topic", f"invalid device id {device!r}: use 1-64 characters A-Z, a-z, 0-9, '_', "
                                          "'.', '-', starting with a letter or digit")
    return device


def _prob_bytes(classes) -> bytes:
    if len(classes) > MAX_CLASSES:
        raise TelemetryError("malformed", f"{len(classes)} class probabilities, at most {MAX_CLASSES}")
    # round half up, as the C encoder does (floor(p * 255 + 0.5) in double)
    return bytes(min(255, max(0, math.floor(float(p) * 255 + 0.5))) for p in classes)


def _time_parts(t_utc: float) -> tuple[int, int]:
    ms = round(t_utc * 1000)
    return ms // 1000, ms % 1000


def encode(m: Message) -> bytes:
    """The message's bytes (the layout in this module's docstring)."""
    site = m.site.encode("ascii")
    if not SITE_RE.fullmatch(m.site):
        raise TelemetryError("malformed", f"invalid site name {m.site!r}")
    t_s, ms = _time_parts(m.t_utc)
    flags = (F_OVER if m.over else 0) | (F_INT8 if m.int8 else 0) | (F_DEVICE_RULE if m.device_rule else 0)
    state = NO_STATE if m.state is None else m.state
    head = HEADER.pack(VERSION, m.kind, flags, len(m.classes), m.boot, ms, m.seq, t_s, m.score, state, len(site))
    body = _prob_bytes(m.classes)
    if m.kind == KIND_ALARM:
        cls = NO_CLASS if m.alarm_class is None else m.alarm_class
        body = ALARM_TAIL.pack(float(m.threshold if m.threshold is not None else math.nan), cls) + body
    return head + site + body


def patch(site: str, seq: int, t_utc: float, score: float, over: bool, boot: int = 0, int8: bool = False,
          device_rule: bool = False, state: int | None = None, classes=()) -> bytes:
    """A patch message's bytes."""
    return encode(Message(KIND_PATCH, site, seq, boot, t_utc, score, over, int8, device_rule, state, tuple(classes)))


def alarm(site: str, seq: int, t_utc: float, score: float, threshold: float, boot: int = 0, int8: bool = False,
          alarm_class: int | None = None, state: int | None = None, classes=()) -> bytes:
    """An alarm message's bytes (``seq``: the onset patch's sequence number)."""
    return encode(Message(KIND_ALARM, site, seq, boot, t_utc, score, True, int8, True, state, tuple(classes),
                          threshold, alarm_class))


def decode(payload: bytes, device: str = "") -> Message:
    """A message from its bytes; TelemetryError("malformed", ...) for anything that is not a v1 message."""
    if len(payload) < HEADER.size:
        raise TelemetryError("malformed", f"{len(payload)} bytes, a v1 message has at least {HEADER.size}")
    version, kind, flags, n_cls, boot, ms, seq, t_s, score, state, site_len = HEADER.unpack_from(payload)
    if version != VERSION:
        raise TelemetryError("malformed", f"schema version {version}, this humwatch reads {VERSION}")
    if kind not in SUFFIX:
        raise TelemetryError("malformed", f"unknown message kind {kind}")
    tail = ALARM_TAIL.size if kind == KIND_ALARM else 0
    want = HEADER.size + site_len + tail + n_cls
    if n_cls > MAX_CLASSES or ms > 999 or flags > 7 or len(payload) != want:
        raise TelemetryError("malformed", f"{len(payload)} bytes with {n_cls} classes, site length {site_len}, "
                                          f"ms {ms}, flags {flags} (expected {want} bytes)")
    try:
        site = payload[HEADER.size:HEADER.size + site_len].decode("ascii")
    except UnicodeDecodeError:
        raise TelemetryError("malformed", "site name is not ASCII") from None
    if not SITE_RE.fullmatch(site):
        raise TelemetryError("malformed", f"invalid site name {site!r}")
    if not math.isfinite(score):
        raise TelemetryError("malformed", f"score {score}")
    pos = HEADER.size + site_len
    threshold = alarm_class = None
    if kind == KIND_ALARM:
        threshold, cls = ALARM_TAIL.unpack_from(payload, pos)
        alarm_class = None if cls == NO_CLASS else cls
        pos += tail
    classes = tuple(b / 255 for b in payload[pos:pos + n_cls])
    return Message(kind, site, seq, boot, t_s + ms / 1000, float(score), bool(flags & F_OVER), bool(flags & F_INT8),
                   bool(flags & F_DEVICE_RULE), None if state == NO_STATE else state, classes, threshold,
                   alarm_class, device)


def check_message(m: Message, topic_site: str, now: float | None = None, max_age_s: float = 56 * 86400) -> Message:
    """Refuse a message whose site is not its topic's (the credential's, under the broker's ACL) or whose time is
    implausible (before 2020, more than MAX_FUTURE_S ahead of ``now``, or older than ``max_age_s``)."""
    if m.site != topic_site:
        raise TelemetryError("wrong_site", f"message for site {m.site!r} on the topic of site {topic_site!r}")
    now = time.time() if now is None else now
    if m.t_utc < max(EARLIEST_UTC, now - max_age_s) or m.t_utc > now + MAX_FUTURE_S:
        raise TelemetryError("implausible_time", f"site {m.site!r} device {m.device!r}: time {m.t_utc:.3f} "
                                                 f"(now {now:.0f})")
    return m


# -- birth: the device's decision constants, JSON, retained ----------------------------------------------------------
@dataclass(frozen=True)
class Birth:
    """What a device says about itself when it connects: its threshold and alarm rule (in its own score domain) and
    its model.

    ``rule`` is the alarm rule the device's scores are judged by (an :mod:`anomaly.decision` rule; in the JSON its
    ``to_dict()``), optional: a birth message without one (written before the field existed) still parses, and the
    ingest then judges the device by the site's rule where that is honest (docs/fleet.md). A rule that cannot be
    applied (an uncalibrated windowed mean) is refused like a malformed one. The field is optional and an older
    reader ignores it, so the schema version stays 1 (docs/fleet.md, "Versions").
    """

    threshold: float
    runtime: str = "float"  # "float" (PyTorch/ONNX) or "int8"
    model_hash: str = ""
    calibration: str = ""
    classes: tuple[str, ...] = field(default_factory=tuple)
    rule: AlarmRule | None = None

    def __post_init__(self) -> None:
        if len(self.classes) > MAX_CLASSES:
            raise TelemetryError("malformed", f"birth message: {len(self.classes)} classes, at most {MAX_CLASSES} "
                                              "(a patch message carries one probability per class)")
        if self.rule is not None:
            _applicable(self.rule, self.threshold)

    def to_json(self) -> bytes:
        d = {"v": VERSION, "threshold": self.threshold, "runtime": self.runtime, "model": self.model_hash,
             "calibration": self.calibration, "classes": list(self.classes)}
        if self.rule is not None:
            d["rule"] = self.rule.to_dict()
        return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Birth:
        try:
            d = json.loads(payload)
            if not isinstance(d, dict):
                raise ValueError(f"a JSON object expected, got {type(d).__name__}")
            if d.get("v") != VERSION:
                raise ValueError(f"version {d.get('v')!r}")
            thr = d["threshold"]
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
                raise ValueError(f"threshold {thr!r}")
            runtime = d.get("runtime", "float")
            if runtime not in ("float", "int8"):
                raise ValueError(f"runtime {runtime!r}")
            classes = d.get("classes", [])
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ValueError("classes must be a list of names")
            rule = _rule_of(d["rule"]) if d.get("rule") is not None else None
            return cls(float(thr), runtime, str(d.get("model", "")), str(d.get("calibration", "")), tuple(classes),
                       rule)
        except TelemetryError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TelemetryError("malformed", f"birth message: {e}") from None


def _rule_of(d) -> AlarmRule:
    """The alarm rule of a birth message's ``rule`` field (its ``to_dict()``), by its owner's reader."""
    if not isinstance(d, dict):
        raise TelemetryError("malformed", f"birth message: rule must be an alarm rule's JSON object, got {d!r:.80}")
    try:
        return rule_from_dict(d)
    except DecisionError as e:
        raise TelemetryError("malformed", f"birth message: rule {json.dumps(d)[:160]}: {e}") from None


def _applicable(rule, threshold: float) -> None:
    """Refuse a rule the ingest could not apply to the device's scores (e.g. a windowed mean without its calibration):
    TelemetryError("malformed") naming the rule."""
    if not callable(getattr(rule, "stream", None)) or not callable(getattr(rule, "to_dict", None)):
        raise TelemetryError("malformed", f"birth message: rule {rule!r:.80} is not an alarm rule")
    if getattr(rule, "calibrated", True) is False:
        raise TelemetryError("malformed", f"birth message: rule {json.dumps(rule.to_dict())[:160]} has no calibration "
                                          "(its centre, scale and limit on the device's scores): it cannot be applied")
    try:
        rule.stream(threshold)
    except DecisionError as e:
        raise TelemetryError("malformed", f"birth message: rule {json.dumps(rule.to_dict())[:160]} cannot be "
                                          f"applied: {e}") from None


def json_patch(m: Message) -> bytes:
    """The same patch as compact JSON: the alternative measured against the binary layout (docs/fleet.md)."""
    d = {"v": VERSION, "s": m.site, "b": m.boot, "q": m.seq, "t": round(m.t_utc, 3), "x": float(f"{m.score:.7g}"),
         "o": int(m.over)}
    if m.classes:
        d["c"] = [round(p, 3) for p in m.classes]
    return json.dumps(d, separators=(",", ":")).encode()
