"""The fleet telemetry schema (calibration/fleet/telemetry.py): round trips, sizes, refusals, and the C encoder of the
exported firmware (frontend_ref/hw_telemetry.c) byte for byte against the Python encoder."""

from __future__ import annotations

import json
import re
import struct
import subprocess

import numpy as np
import pytest
from helpers import GCC, build_c

from anomaly.decision import MOfN, WindowMean
from calibration.fleet import telemetry as tm
from calibration.fleet.mqtt import BrokerError, broker, parse_url, read_credentials
from firmware_export.frontend_ref import DIR as REF_DIR
from firmware_export.telemetry_c import HEADER, SOURCES, telemetry_header

NOW = 1_790_000_000.0
# an int8 export's windowed-mean rule (firmware_export.export.device_rule): doubles that must survive JSON and C exactly
INT8_RULE = WindowMean(120, 1).with_calibration(-3.0123456789012345, 0.1234567890123456, 1.5000000000000002)


def test_patch_round_trip_and_size():
    b = tm.patch("pump-3", 41, NOW + 0.96, 0.0123, True, boot=7, int8=True, state=2, classes=[0.1, 0.9, 0.0])
    assert len(b) == tm.HEADER.size + len("pump-3") + 3 == 31
    m = tm.decode(b, "dev-1")
    assert (m.kind, m.site, m.seq, m.boot, m.over, m.int8, m.device_rule, m.state, m.device) == (
        tm.KIND_PATCH, "pump-3", 41, 7, True, True, False, 2, "dev-1")
    assert m.t_utc == pytest.approx(NOW + 0.96, abs=1e-6) and m.score == pytest.approx(0.0123, rel=1e-7)
    assert np.allclose(m.classes, [26 / 255, 230 / 255, 0.0])
    assert m.key == (7 << 32) | 41
    assert len(tm.patch("pump-3", 0, NOW, 1.0, False)) == 28  # no classes: 22 + site


def test_alarm_round_trip():
    b = tm.alarm("fan-12", 9, NOW, 3.5, 2.25, boot=1, alarm_class=2, classes=[0.2, 0.3, 0.5])
    m = tm.decode(b)
    assert (m.kind, m.threshold, m.alarm_class, m.device_rule, m.over) == (tm.KIND_ALARM, 2.25, 2, True, True)
    assert tm.decode(tm.alarm("fan-12", 9, NOW, 3.5, 2.25)).alarm_class is None


def test_binary_is_smaller_than_compact_json():
    m = tm.decode(tm.patch("pump-3", 123456, NOW + 0.123, 0.01234567, False, boot=3))
    assert len(tm.encode(m)) == 28 and len(tm.json_patch(m)) > 2 * 28


@pytest.mark.parametrize("payload, why", [
    (b"", "at least"),
    (b"\x02" + bytes(27), "schema version 2"),
    (bytes([1, 9]) + bytes(26), "unknown message kind"),
    (tm.patch("pump-3", 1, NOW, 0.5, False)[:-1], "expected"),
    (tm.patch("pump-3", 1, NOW, 0.5, False) + b"x", "expected"),
    (tm.patch("pump-3", 1, NOW, 0.5, False).replace(b"pump-3", b"../etc"), "invalid site"),
    (tm.HEADER.pack(1, 1, 0, 0, 0, 0, 0, int(NOW), float("nan"), 255, 1) + b"a", "score nan"),
])
def test_malformed_messages_are_refused(payload, why):
    with pytest.raises(tm.TelemetryError, match=why) as e:
        tm.decode(payload)
    assert e.value.reason == "malformed"


def test_wrong_site_and_implausible_time_are_refused():
    m = tm.decode(tm.patch("pump-3", 1, NOW, 0.5, False))
    assert tm.check_message(m, "pump-3", now=NOW + 10) is m
    with pytest.raises(tm.TelemetryError) as e:
        tm.check_message(m, "pump-4", now=NOW)
    assert e.value.reason == "wrong_site"
    for now in (NOW - 3600, NOW + 100 * 86400):  # an hour in the future; older than the retention
        with pytest.raises(tm.TelemetryError) as e:
            tm.check_message(m, "pump-3", now=now)
        assert e.value.reason == "implausible_time"
    with pytest.raises(tm.TelemetryError, match="implausible_time"):
        tm.check_message(tm.decode(tm.patch("pump-3", 1, 1e9, 0.5, False)), "pump-3", now=1e9)  # 2001


def test_topics():
    assert tm.topic("pump-3", "dev1", tm.KIND_PATCH) == "humwatch/v1/pump-3/dev1/p"
    t = tm.parse_topic("humwatch/v1/pump-3/dev1/a")
    assert (t.site, t.device, t.suffix) == ("pump-3", "dev1", "a")
    for bad in ("humwatch/v2/pump-3/dev1/p", "humwatch/v1/Pump/dev1/p", "humwatch/v1/pump-3/dev1/x", "a/b"):
        with pytest.raises(tm.TelemetryError):
            tm.parse_topic(bad)


def test_birth_message():
    b = tm.Birth(0.25, "int8", "abc", "cal1", ("normal", "cavitation"))
    assert tm.Birth.from_json(b.to_json()) == b
    for bad in (b"{", b'{"v":1}', b'{"v":1,"threshold":"x"}', b'{"v":1,"threshold":1,"runtime":"fp16"}', b"[1]"):
        with pytest.raises(tm.TelemetryError):
            tm.Birth.from_json(bad)


def test_birth_message_with_more_classes_than_a_patch_carries_is_refused():
    names = tuple(f"c{i}" for i in range(tm.MAX_CLASSES + 1))
    assert len(tm.Birth(0.25, classes=names[:-1]).classes) == tm.MAX_CLASSES
    with pytest.raises(tm.TelemetryError, match=f"{tm.MAX_CLASSES + 1} classes, at most {tm.MAX_CLASSES}"):
        tm.Birth(0.25, classes=names)
    payload = json.dumps({"v": tm.VERSION, "threshold": 0.25, "classes": list(names)}).encode()
    with pytest.raises(tm.TelemetryError, match="malformed.*at most"):
        tm.Birth.from_json(payload)


@pytest.mark.parametrize("rule", [INT8_RULE, WindowMean(60, 2).with_calibration(0.0, 1.0, 2.0), MOfN(3, 5)],
                         ids=["window_mean_upward", "window_mean", "m_of_n"])
def test_birth_message_with_its_alarm_rule(rule):
    b = tm.Birth(0.0123, "int8", "abc", "cal1", ("normal",), rule)
    back = tm.Birth.from_json(b.to_json())
    assert back == b and back.rule.to_dict() == rule.to_dict()
    if isinstance(rule, WindowMean):  # the same constants, to the last bit: the same decisions
        assert (back.rule.centre, back.rule.scale, back.rule.limit_q) == (rule.centre, rule.scale, rule.limit_q)
    # a birth message from before the field (the schema's version is unchanged): no rule, the site's applies
    old = b'{"v":1,"threshold":0.0123,"runtime":"int8","model":"abc","calibration":"cal1","classes":[]}'
    assert tm.Birth.from_json(old) == tm.Birth(0.0123, "int8", "abc", "cal1") and tm.Birth.from_json(old).rule is None
    assert tm.Birth.from_json(old[:-1] + b',"rule":null}').rule is None


@pytest.mark.parametrize("rule, why", [
    ('"3/5"', "rule must be an alarm rule's JSON object, got '3/5'"),
    ('{"kind":"median","n":5}', "unknown alarm rule kind 'median'"),
    ('{"kind":"m_of_n","m":6,"n":5}', "6 of 5"),
    ('{"kind":"m_of_n","m":3}', "needs whole numbers m and n"),
    ('{"kind":"window_mean","n":120,"sides":2}', "has no calibration"),
    ('{"kind":"window_mean","n":120,"centre":-3.0,"scale":0.1}', "centre, scale and limit go together"),
    ('{"kind":"window_mean","n":120,"centre":-3.0,"scale":-0.1,"limit":1.5}', "scale -0.1"),
    ('{"kind":"window_mean","n":120,"centre":-3.0,"scale":0.1,"limit":1.5,"z_scale":1000,"z_clamp":1000.0}',
     "z_scale 1000"),
])
def test_birth_message_with_a_malformed_rule_is_refused(rule, why):
    payload = b'{"v":1,"threshold":0.5,"runtime":"int8","rule":' + rule.encode() + b"}"
    with pytest.raises(tm.TelemetryError, match=re.escape(why)) as e:
        tm.Birth.from_json(payload)
    assert e.value.reason == "malformed" and "birth message: rule" in str(e.value)


def test_a_birth_message_with_an_uncalibrated_rule_is_never_written():
    with pytest.raises(tm.TelemetryError, match="has no calibration"):
        tm.Birth(0.5, "int8", rule=WindowMean(120, 2))
    with pytest.raises(tm.TelemetryError, match="has no calibration"):
        telemetry_header("pump-3", 0.5, "abc", None, classes=(), rule=WindowMean(120, 2))


def test_broker_url_and_credentials(tmp_path):
    assert parse_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884, False)
    assert parse_url("mqtts://broker.example") == ("broker.example", 8883, True)
    with pytest.raises(BrokerError, match="not in the URL"):
        parse_url("mqtt://u:secret@host:1883")
    for bad in ("http://h:1", "mqtt://", "mqtt://h:99999", "mqtt://h/x"):
        with pytest.raises(BrokerError):
            parse_url(bad)
    f = tmp_path / "cred"
    f.write_text("pump-3:s3cret:with-colon\n")
    assert read_credentials(f) == ("pump-3", "s3cret:with-colon")
    b = broker("mqtt://h:1", env={"HUMWATCH_MQTT_CREDENTIALS": str(f)})
    assert (b.username, b.password) == ("pump-3", "s3cret:with-colon") and "s3cret" not in str(b)
    assert broker("mqtt://h:1", env={"HUMWATCH_MQTT_USER": "a", "HUMWATCH_MQTT_PASSWORD": "b"}).username == "a"
    with pytest.raises(BrokerError, match="expected one line"):
        f.write_text("no-colon\n")
        read_credentials(f)


# -- the C encoder, byte for byte ------------------------------------------------------------------------------------
HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "hw_telemetry.h"

/* argv: kind flags boot seq t_s t_ms score state site threshold alarm_class p0 p1 ... */
int main(int argc, char **argv) {
    float probs[HW_TELEMETRY_MAX_CLASSES];
    hw_telemetry_msg m;
    uint8_t buf[HW_TELEMETRY_MAX_BYTES];
    char topic[128];
    if (argc < 12) return 2;
    m.kind = (uint8_t)atoi(argv[1]); m.flags = (uint8_t)atoi(argv[2]); m.boot = (uint16_t)atol(argv[3]);
    m.seq = (uint32_t)strtoul(argv[4], NULL, 10); m.t_s = (uint32_t)strtoul(argv[5], NULL, 10);
    m.t_ms = (uint16_t)atoi(argv[6]); m.score = strtof(argv[7], NULL); m.state = (uint8_t)atoi(argv[8]);
    m.site = argv[9]; m.threshold = strtof(argv[10], NULL); m.alarm_class = (uint8_t)atoi(argv[11]);
    m.n_classes = (uint8_t)(argc - 12);
    for (int i = 12; i < argc; i++) probs[i - 12] = strtof(argv[i], NULL);
    m.probs = probs;
    size_t n = hw_telemetry_encode(&m, buf, sizeof buf);
    for (size_t i = 0; i < n; i++) printf("%02x", buf[i]);
    printf("\n");
    if (!hw_telemetry_topic(topic, sizeof topic, m.site, "dev-1", m.kind)) return 3;
    printf("%s\n%s\n%s\n", topic, HW_TELEMETRY_SITE, HW_TELEMETRY_BIRTH);
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_encoder(tmp_path_factory):
    if GCC is None:
        pytest.skip("no host gcc")
    d = tmp_path_factory.mktemp("telemetry_c")
    (d / HEADER).write_text(telemetry_header("pump-3", 0.125, "abc123", "20260101T000000.000000Z", banner="test",
                                             classes=["a", "b"], rule=INT8_RULE))
    (d / "main.c").write_text(HARNESS)
    for name in SOURCES:
        (d / name).write_bytes((REF_DIR / name).read_bytes())
    return build_c(d, [d / SOURCES[1], d / "main.c"], d / "encode")


def _f32(x: float) -> float:
    return float(np.float32(x))


CASES = [  # kind, flags, boot, seq, t_s, t_ms, score, state, site, threshold, alarm_class, probs
    (1, 0, 0, 0, 1_790_000_000, 0, 0.5, 255, "pump-3", 0.0, 255, []),
    (1, 3, 65535, 4_294_967_295, 4_000_000_000, 999, 1e-7, 4, "p", 0.0, 255, [0.0, 1.0, 0.5, 0.25, 0.999]),
    (1, 4, 12, 123456, 1_790_001_234, 960, 123.456, 255, "a" * 64, 0.0, 255, [0.1] * 32),
    (2, 5, 3, 77, 1_790_000_100, 80, 3.75, 0, "fan_12-b", 2.5, 255, []),
    (2, 7, 3, 78, 1_790_000_101, 40, 0.0123, 255, "fan-12", 0.01, 1, [0.1, 0.8, 0.1]),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_c_encoder_matches_python_byte_for_byte(c_encoder, case):
    kind, flags, boot, seq, t_s, t_ms, score, state, site, thr, cls, probs = case
    probs = [_f32(p) for p in probs]
    r = subprocess.run([str(c_encoder), *map(str, case[:8]), site, repr(thr), str(cls), *map(repr, probs)],
                       capture_output=True, text=True, check=True)
    hex_c, topic_c, site_c, birth_c = r.stdout.splitlines()
    m = tm.Message(kind, site, seq, boot, t_s + t_ms / 1000, _f32(score), bool(flags & 1), bool(flags & 2),
                   bool(flags & 4), None if state == 255 else state, tuple(probs),
                   _f32(thr) if kind == 2 else None, None if cls == 255 else cls)
    assert bytes.fromhex(hex_c) == tm.encode(m)
    assert topic_c == tm.topic(site, "dev-1", kind)
    assert site_c == "pump-3"
    birth = tm.Birth.from_json(birth_c.encode())
    assert birth == tm.Birth(0.125, "int8", "abc123", "20260101T000000.000000Z", ("a", "b"), INT8_RULE)
    assert birth.rule.limit_q == INT8_RULE.limit_q and birth.rule.c_defines("R") == INT8_RULE.c_defines("R")


def test_c_encoder_refuses_what_python_refuses(c_encoder):
    for site in ("", "Pump", "-x", "a" * 65):
        r = subprocess.run([str(c_encoder), "1", "0", "0", "0", "1790000000", "0", "0.5", "255", site, "0", "255"],
                           capture_output=True, text=True)
        assert r.stdout.splitlines()[0] == "", site  # nothing encoded
    assert struct.calcsize("<BBBBHHIIfBB") == tm.HEADER.size == 22
