"""The alarm rule in C against anomaly.decision: the generated headers take the rule's constants from the rule object
(MOfN.c_defines), and the C reference's hw_alarm_update (anomaly alarms, hw_frontend.c) and hw_clf_alarm_update
(classifier alarms, hw_classifier.c) raise alarms at exactly the patches where the Python rule does, on the same
score and exceedance sequences, for several rules."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from helpers import GCC, build_c

from anomaly.decision import DEFAULT_RULE, MOFN_RULE, MOfN, WindowMean, hits_rule
from anomaly.features import DEFAULT_PARAMS
from firmware_export.c_arrays import classifier_header, frontend_header
from firmware_export.frontend_ref import CLASSIFIER_HARNESS, CLASSIFIER_SOURCES, DIR, HARNESS, SOURCES

pytestmark = pytest.mark.skipif(GCC is None, reason="needs gcc")

RULES = [MOfN(1, 1), MOfN(2, 2), MOFN_RULE, MOfN(4, 7), MOfN(5, 10), MOfN(1, 60)]
THRESHOLD = 1.0
LEVELS = np.array([0.25, 0.5, 1.0, 1.5, 3.0])  # exact in float32; 1.0 is *at* the threshold, which is not over it


def _onsets(active: np.ndarray) -> list[int]:
    """Where a 0/1 'alarm active' sequence goes from 0 to 1 (the C harnesses print the state after each patch)."""
    a = np.asarray(active, bool)
    return np.flatnonzero(a & ~np.r_[False, a[:-1]]).tolist()


def _sequences(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(LEVELS, size=int(rng.integers(1, 120)), p=[0.3, 0.2, 0.1, 0.2, 0.2]) for _ in range(12)]


def _hwref(rule, d) -> object:
    p = DEFAULT_PARAMS
    hdr = frontend_header(p, np.zeros(p.n_mels), np.ones(p.n_mels), None, (0.05, 0), (0.05, 0),
                          {"threshold": THRESHOLD, "k": 4.0, "rule": rule, "site_threshold_float": None,
                           "threshold_source": "test"}, {"model_hash": "x"}, "test")
    assert rule.c_defines("HW_ALARM") in hdr
    (d / "humwatch_frontend.h").write_text(hdr)
    for name in SOURCES:
        shutil.copyfile(DIR / name, d / name)
    return build_c(d, [d / "hw_frontend.c", DIR / HARNESS], d / "hwref")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.spelling)
def test_c_anomaly_alarm_rule_matches_python(rule, tmp_path):
    exe = _hwref(rule, tmp_path)
    for scores in _sequences(rule.m * 100 + rule.n):
        r = subprocess.run([str(exe), "alarm", *[f"{s:g}" for s in scores]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        c_active = np.array(r.stdout.split(), int)
        assert _onsets(c_active) == rule.onsets(scores, THRESHOLD).tolist(), (rule, scores.tolist())
        st = rule.stream(THRESHOLD)
        py_active = []
        for s in scores:
            st.update(s)
            py_active.append(int(st.active))
        assert c_active.tolist() == py_active


def _hwclf(rule, alarm: list[bool], d) -> object:
    classes = [f"c{k}" for k in range(len(alarm))]
    hdr = classifier_header(DEFAULT_PARAMS, classes, [0.5] * len(alarm), [0.0] * len(alarm), alarm, (0.05, 0),
                            (0.05, 0), {"model_hash": "x", "temperature": 1.0, "softmax": False, "rule": rule}, "test")
    assert hits_rule(rule).c_defines("HW_CLF_ALARM") in hdr
    (d / "humwatch_classifier.h").write_text(hdr)
    for name in CLASSIFIER_SOURCES:
        shutil.copyfile(DIR / name, d / name)
    return build_c(d, [d / "hw_classifier.c", DIR / CLASSIFIER_HARNESS], d / "hwclf")


MEAN_RULES = [DEFAULT_RULE.with_calibration(-2.345678901234567, 0.61803398875, 1.5),
              WindowMean(120, 1).with_calibration(0.1, 1.7, 0.75), WindowMean(7, 2).with_calibration(1.0, 0.25, 2.0),
              WindowMean(600, 2).with_calibration(-0.5, 0.9, 0.2)]


def _mean_sequences(rule: WindowMean, seed: int) -> list[np.ndarray]:
    """float32 scores (what the device's hw_score gives): normal stretches, shifts up and down, a level sitting on
    the limit, and bad values (0, negative), each long enough to fill the window."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        n = rule.n
        x = np.r_[rng.normal(0, 1, n + 50), rng.normal(2.5, 1, n), rng.normal(-2.5, 1, n), rng.normal(0, 1, n // 2)]
        s = np.exp(rule.centre + rule.scale * x)
        s[rng.integers(0, s.size, 3)] = 0.0
        s[rng.integers(0, s.size, 2)] = -1.0
        out.append(s.astype(np.float32).astype(np.float64))
    at_limit = np.full(2 * rule.n, np.exp(rule.centre + rule.scale * rule.limit), np.float32).astype(np.float64)
    return out + [at_limit]


@pytest.mark.parametrize("rule", MEAN_RULES, ids=lambda r: f"{r.spelling}-{r.limit:g}")
def test_c_window_mean_rule_matches_python(rule, tmp_path):
    """The windowed-mean rule in C (a ring of quantised z and an exact integer sum) raises alarms at exactly the
    patches where Python's does, whole sequence and streaming, on the same float32 scores."""
    exe = _hwref(rule, tmp_path)
    total = 0
    for scores in _mean_sequences(rule, rule.n):
        r = subprocess.run([str(exe), "alarm", *[f"{s:.9g}" for s in scores]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        c_active = np.array(r.stdout.split(), int)
        want = rule.onsets(scores).tolist()
        assert _onsets(c_active) == want, rule
        st = rule.stream()
        assert [int(st.update(s) or st.active) for s in scores] == c_active.tolist()
        total += len(want)
    assert total > 0  # the sequences do raise alarms


@pytest.mark.parametrize("rule", [MOfN(1, 1), MOFN_RULE, MOfN(4, 7), MEAN_RULES[0]], ids=lambda r: r.spelling)
def test_c_classifier_alarm_rule_matches_python(rule, tmp_path):
    """Per alarm class, the same rule on the class's hits (probability >= its threshold, as the monitor compares);
    classes that are not alarm classes never alarm."""
    alarm = [True, False, True]
    exe = _hwclf(rule, alarm, tmp_path)
    rng = np.random.default_rng(rule.n)
    rule = hits_rule(rule)  # class hits are counted by an m-of-n rule (the site's, or MOFN_RULE)
    for _ in range(8):
        probs = rng.choice([0.1, 0.5, 0.9], size=(int(rng.integers(1, 80)), len(alarm)))  # 0.5 is at the threshold
        fired = probs >= 0.5
        r = subprocess.run([str(exe), "alarm", *["".join("1" if f else "0" for f in row) for row in fired]],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        c_active = np.array([[int(ch) for ch in ln] for ln in r.stdout.split()])
        for k, is_alarm in enumerate(alarm):
            want = rule.onsets(probs[:, k], 0.5, inclusive=True).tolist() if is_alarm else []
            assert _onsets(c_active[:, k]) == want, (rule, k)
