"""The windowed-mean rule's certificate (calibration.upcrossing, calibration.threshold.calibrate_mean_rule) and its
plain words (calibration.certificate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from anomaly.decision import DEFAULT_RULE, MEAN_LIMIT_FLOOR, WindowMean
from calibration.certificate import per_week_words, plain_words, verdict
from calibration.errors import CalibrationError
from calibration.threshold import calibrate_mean_rule, threshold_report
from calibration.upcrossing import FLOOR_PER_DAY, MeanTail, crossfit_z, delay_seconds, effective_n, upcross_prob

PATCH_S = 0.96


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(0, np.sqrt(1 - phi * phi), n)
    x = np.empty(n)
    x[0] = rng.normal()
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


@pytest.mark.parametrize("u", [-1.0, 0.0, 1.5, 3.0])
def test_upcrossing_of_independent_pairs_is_the_product(u):
    assert upcross_prob(u, 0.0) == pytest.approx(stats.norm.cdf(u) * stats.norm.sf(u), rel=1e-6)


def test_upcrossing_matches_simulation_for_correlated_pairs():
    rng = np.random.default_rng(0)
    rho, u = 0.9, 1.0
    y0 = rng.normal(size=400_000)
    y1 = rho * y0 + np.sqrt(1 - rho * rho) * rng.normal(size=y0.size)
    assert upcross_prob(u, rho) == pytest.approx(np.mean((y0 <= u) & (y1 > u)), rel=0.05)


def test_effective_n_of_independent_values_is_about_n_and_of_a_slow_drift_much_less():
    rng = np.random.default_rng(1)
    assert effective_n(rng.normal(size=2000), 100) > 800
    assert effective_n(_ar1(2000, 0.995, 2), 100) < 100


def test_crossfit_standardises_each_block_by_the_others():
    s = np.exp(np.r_[np.zeros(50), np.ones(50) * 2, np.zeros(150)] + np.random.default_rng(3).normal(0, 0.1, 250))
    z = crossfit_z(s)
    rest = np.log(s[50:])
    assert z[:50] == pytest.approx((np.log(s[:50]) - rest.mean()) / rest.std(ddof=1))


def test_stated_rate_holds_on_long_stationary_runs():
    """Three 'sites' with a stationary AR(1) log score: the predictive estimate from 30 min each is within ×2 of
    what the next 12 h raise in total, and each site's count is consistent with its 90 % interval (one-sided 5 %
    Poisson tests at both ends) -- the fleet criteria of issue #14 in miniature."""
    stated = observed = 0.0
    days = 45_000 * PATCH_S / 86400
    for seed in (10, 12, 14):
        cal = np.exp(_ar1(1875, 0.5, seed))
        cal_rule, rep = calibrate_mean_rule(cal, WindowMean(120, 2), PATCH_S, floor=0.01, target=20.0)
        count = cal_rule.onsets(np.exp(_ar1(45_000, 0.5, seed + 1))).size
        lo, hi = rep["ci90"]
        assert stats.poisson.sf(count - 1, hi * days) >= 0.05 and stats.poisson.cdf(count, lo * days) >= 0.05
        stated, observed = stated + rep["false_alarms_per_day"], observed + count / days
    assert 0.5 <= observed / stated <= 2.0


def test_never_states_zero_and_the_interval_holds_the_stated_rate():
    tail = MeanTail.fit(WindowMean(120, 2), np.random.default_rng(4).normal(size=2000), PATCH_S)
    stated, lo, hi = tail.rate(25.0)
    assert stated == FLOOR_PER_DAY and lo <= stated <= hi
    t = tail.limit_for(0.1)
    assert tail.rate(t, floor=0.0)[0] == pytest.approx(0.1, rel=0.01)


def test_the_limit_is_the_floor_or_the_target_limit_whichever_is_higher():
    steady = np.exp(np.random.default_rng(5).normal(size=1875))
    rule, rep = calibrate_mean_rule(steady, DEFAULT_RULE, PATCH_S)
    assert rule.limit == MEAN_LIMIT_FLOOR == rep["limit"] and rep["limit_source"] == "floor"
    assert rep["target_limit"] < MEAN_LIMIT_FLOOR and rep["false_alarms_per_day"] <= 0.1
    drifting = np.exp(_ar1(1875, 0.998, 6))
    rule, rep = calibrate_mean_rule(drifting, DEFAULT_RULE, PATCH_S)
    assert rule.limit == rep["target_limit"] > MEAN_LIMIT_FLOOR and rep["limit_source"] == "target"
    assert (rule.centre, rule.scale) == (np.log(drifting).mean(), np.log(drifting).std(ddof=1))


def test_too_short_a_recording_is_refused_unless_forced():
    s = np.exp(np.random.default_rng(7).normal(size=200))
    with pytest.raises(CalibrationError, match="at least 240 patches.*--alarm mean/60 or 3/5"):
        calibrate_mean_rule(s, DEFAULT_RULE, PATCH_S)
    rule, rep = calibrate_mean_rule(s, DEFAULT_RULE, PATCH_S, short_ok=True)
    assert rule.calibrated and rep["n_eff"] >= 2
    with pytest.raises(CalibrationError, match="scores <= 0"):
        calibrate_mean_rule(np.r_[s, 0.0], DEFAULT_RULE, PATCH_S)


def test_threshold_report_carries_the_calibrated_rule():
    s = np.exp(np.random.default_rng(8).normal(size=1200))
    rep = threshold_report(s, 4.0, DEFAULT_RULE, PATCH_S, n_boot=5)
    assert rep.rule["kind"] == "window_mean" and rep.rule["limit"] == rep.alarm_rule["limit"]
    assert rep.false_alarms_per_day == rep.alarm_rule["false_alarms_per_day"] and (rep.alarm_m, rep.alarm_n) == (0, 120)
    json.dumps(rep.to_dict(), allow_nan=False)  # records are stored without NaN


def test_delay_of_a_persistent_shift():
    rule = DEFAULT_RULE.with_calibration(0.0, 1.0, 1.5)
    assert delay_seconds(rule, 3.0, PATCH_S) == 60 * PATCH_S
    assert delay_seconds(rule, 1.5, PATCH_S) is None
    x = np.r_[np.zeros(200), np.full(100, 3.0)]
    assert rule.onsets(np.exp(x)).tolist() == [200 + 60]


def _record(per_day: float, forced: bool = False, findings=()) -> dict:
    return {"site": "p", "status": "adopted", "audio": {"minutes": 30.0, "forced": forced, "min_minutes": 30.0},
            "findings": list(findings),
            "threshold": {"false_alarms_per_day": per_day, "false_alarms_per_day_ci": [per_day / 3, per_day * 3],
                          "alarm_rule": {"n": 120, "limit": 1.5, "delays_s": {"2": 86.4, "3": 57.6, "5": 34.56}}}}


def test_plain_words_state_a_number_down_to_one_a_week_and_a_bound_below():
    assert per_week_words(0.5, [0.2, 1.0]).startswith("about 3.5 per week (90 % interval 1.4-7)")
    assert per_week_words(0.05, [0.01, 0.2]).startswith("fewer than 1 per week for the sounds this recording held")
    words = plain_words(_record(0.05, findings=[{"level": "warning", "what": "the recording sounds like one steady "
                                                 "state: record them too"}]))
    assert words[0] == "READY"
    assert "alarmed about 86 s after it moves the score by 2 sds, or 58 s after it moves the score by 3 sds" in words[2]
    assert "1.5 sds or less is not alarmed" in words[2]
    assert "one steady state" in words[3] and "humwatch monitor --site p" in words[3]


def test_verdict_not_ready_names_why():
    ready, reasons, steps = verdict(_record(0.05, forced=True))
    assert not ready and "forced" in reasons[0] and "calibrate again" in steps[0]
    ready, reasons, _ = verdict(_record(3.0))
    assert not ready and "about 3 false alarms a day" in reasons[0]
