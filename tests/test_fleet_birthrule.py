"""The ingest judges a scores-only device by the alarm rule of its birth message (an int8 firmware's rule, in the
int8 model's score domain), not by the site's float rule; without one, an int8 device is refused where the site's rule
is bound to the float model's scores. Driven in process through the ingest's message handler (no broker): the same
path as a delivered message (``_on_message`` → ``flush``: decode, log, commit), at QoS 0 so nothing is acknowledged."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest
from ingest_driver import Driver, calibrated_store

from anomaly.decision import MOfN, WindowMean
from calibration.fleet import telemetry as tm
from calibration.monitoring.scorelog import read_alarms, read_scores

THRESHOLD = 1.0
# the site's float rule: log scores centred on 0 (score 1.0), 10 patches; an int8 export's own rule: its scores sit
# around 4.0, much tighter, over 80 patches (longer than the m-of-n window the ingest used to replay after a restart)
SITE_RULE = WindowMean(10, 2).with_calibration(0.0, 0.1, 1.5)
DEVICE_RULE = WindowMean(80, 2).with_calibration(float(np.log(4.0)), 0.02, 2.0)
DEVICE_THRESHOLD = 5.0


def _store(root, rule):
    return calibrated_store(root, rule, THRESHOLD)


@pytest.fixture
def sequence():
    """80 patches at the int8 model's normal level (4.0), then 120 a little higher (6.0): the site's float rule
    alarms at once (4.0 is far above its centre), the device's rule only when the rise fills its window enough."""
    scores = np.r_[np.full(80, 4.0), np.full(120, 6.0)]
    assert SITE_RULE.onsets(scores).tolist() == [9]
    assert DEVICE_RULE.onsets(scores).tolist() == [87]
    return scores


def test_a_scores_only_int8_device_is_judged_by_its_birth_rule_and_resumes_it(tmp_path, sequence):
    store = _store(tmp_path / "sites", SITE_RULE)
    birth = tm.Birth(DEVICE_THRESHOLD, "int8", "m0", "cal-1", rule=DEVICE_RULE)
    t0 = time.time() - 600
    drv = Driver(store)
    try:
        drv.birth("dev-q", birth)
        drv.patches("dev-q", range(0, 100), t0, sequence, int8=True)
        assert drv.ing.counts["logged"] == 100 and drv.ing.counts["alarms"] == 1
    finally:
        drv.close()
    path = store.site("pump-3").dir / "scores.sqlite"
    al = read_alarms(path)
    assert len(al) == 1 and al["t_utc"][0] == pytest.approx(t0 + 87, abs=1e-3)
    info = al["info"][0]
    assert (info["source"], info["rule_of"], info["threshold"]) == ("ingest", "device", DEVICE_THRESHOLD)
    assert info["rule"] == DEVICE_RULE.describe() != SITE_RULE.describe()

    # a restart while the alarm holds: the retained birth comes again, the rule is warmed with a whole window of the
    # device's rule (80 logged scores) and does not raise the same alarm again; 95..99 are re-sent
    drv = Driver(store)
    try:
        drv.birth("dev-q", birth)
        drv.patches("dev-q", range(95, 200), t0, sequence, int8=True)
        assert (drv.ing.counts["logged"], drv.ing.counts["duplicates"], drv.ing.counts["alarms"]) == (100, 5, 0)
        run = drv.run_id("dev-q")
        drv.birth("dev-q", birth)  # the same birth again (a reconnection): the same run
        drv.send(tm.topic("pump-3", "dev-q", tm.KIND_PATCH), tm.patch("pump-3", 200, t0 + 200, 6.0, False, int8=True))
        drv.ing.flush()
        assert drv.run_id("dev-q") == run
        # a new export with another rule: a new run, judged by the new rule from a fresh window
        drv.birth("dev-q", tm.Birth(DEVICE_THRESHOLD, "int8", "m0", "cal-1", rule=MOfN(2, 3)))
        drv.send(tm.topic("pump-3", "dev-q", tm.KIND_PATCH), tm.patch("pump-3", 201, t0 + 201, 6.0, True, int8=True))
        drv.send(tm.topic("pump-3", "dev-q", tm.KIND_PATCH), tm.patch("pump-3", 202, t0 + 202, 6.0, True, int8=True))
        drv.ing.flush()
        assert drv.run_id("dev-q") != run and drv.ing.counts["alarms"] == 1
    finally:
        drv.close()
    al = read_alarms(path)
    assert al["t_utc"].tolist() == pytest.approx([t0 + 87, t0 + 202], abs=1e-3)
    assert al["info"][1]["rule"] == MOfN(2, 3).describe()
    assert len(read_scores(path)) == 203
    with sqlite3.connect(path) as con:
        assert [r[0] for r in con.execute("SELECT alarm_n FROM runs ORDER BY run_id")] == [80, 80, 3]


def test_an_int8_device_without_a_birth_rule_is_refused_under_a_windowed_mean_site_rule(tmp_path, sequence):
    """Its birth names its threshold only: the site's windowed-mean rule holds the float model's log-score centre and
    scale, so judging int8 scores by it would be wrong (here: an alarm at patch 9 of normal operation)."""
    store = _store(tmp_path / "sites", SITE_RULE)
    t0 = time.time() - 600
    drv = Driver(store)
    try:
        drv.birth("dev-q", tm.Birth(DEVICE_THRESHOLD, "int8", "m0", "cal-1"))
        drv.patches("dev-q", range(20), t0, sequence, int8=True)
        assert drv.ing.counts["rejected_site"] == 20 and drv.ing.counts["logged"] == 0
        assert any("names no alarm rule" in m and "mean of 10" in m for m in drv.said), drv.said
        # a device that applies its rule itself only needs the ingest to log its scores
        drv.patches("dev-r", range(20), t0, sequence, int8=True, device_rule=True)
        assert drv.ing.counts["logged"] == 0  # dev-r sent no birth: int8 scores without a threshold
        drv.birth("dev-r", tm.Birth(DEVICE_THRESHOLD, "int8", "m0", "cal-1"))
        drv.patches("dev-r", range(20), t0, sequence, int8=True, device_rule=True)
        assert drv.ing.counts["logged"] == 20 and drv.ing.counts["alarms"] == 0
        # a birth whose rule cannot be applied is refused, and the device's earlier birth no longer holds
        drv.birth("dev-s", tm.Birth(DEVICE_THRESHOLD, "int8", "m0", "cal-1", rule=DEVICE_RULE))
        drv.patches("dev-s", range(10), t0, sequence, int8=True)
        drv.send(tm.topic("pump-3", "dev-s", tm.BIRTH_SUFFIX), tm.Birth(DEVICE_THRESHOLD, "int8").to_json()[:-1] +
                 b',"rule":{"kind":"window_mean","n":120}}')
        drv.patches("dev-s", range(10, 20), t0, sequence, int8=True)
        assert drv.ing.counts["rejected_malformed"] == 1 and drv.ing.counts["logged"] == 30
        assert any("has no calibration" in m for m in drv.said), drv.said
    finally:
        drv.close()


def test_an_m_of_n_site_rule_still_applies_to_an_int8_device_without_a_birth_rule(tmp_path):
    """An m-of-n rule is placed in a model's score domain by the threshold alone: with the device's threshold from
    its birth message it judges int8 scores rightly, as before birth messages carried a rule."""
    store = _store(tmp_path / "sites", MOfN(3, 5))
    t0 = time.time() - 600
    scores = [4.0] * 10 + [6.0] * 5  # over the device's threshold (5.0) from patch 10: onset at 12
    drv = Driver(store)
    try:
        drv.birth("dev-q", tm.Birth(DEVICE_THRESHOLD, "int8", "m0", "cal-1"))
        drv.patches("dev-q", range(15), t0, scores, int8=True)
        assert drv.ing.counts["logged"] == 15
    finally:
        drv.close()
    al = read_alarms(store.site("pump-3").dir / "scores.sqlite")
    assert al["t_utc"].tolist() == pytest.approx([t0 + 12], abs=1e-3)
    assert (al["info"][0]["rule"], al["info"][0]["rule_of"]) == (MOfN(3, 5).describe(), "site")
