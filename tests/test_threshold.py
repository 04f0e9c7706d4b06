"""Threshold statistics (calibration.threshold): the m-of-n alarm rule's onset probability, the tail-estimated
exceedance of mean + k sigma and the false-alarm rate, checked against Monte Carlo on known distributions. (The rule
itself and the threshold rule are anomaly.decision's: tests/test_decision.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from anomaly.decision import MOfN
from calibration.errors import CalibrationError
from calibration.threshold import (
    MAD_TO_SIGMA,
    alarm_onset_prob,
    alarms_per_day,
    cluster_stats,
    patches_per_day,
    threshold_report,
)

PATCH_S = 0.96
RULE = MOfN(3, 5)
SHAPE = 2.0  # gamma(2, 1): skewed like reconstruction errors, with an exponential tail


def rule_onsets(over: np.ndarray, m: int, n: int) -> int:
    """Alarm onsets of the m-of-n rule in an exceedance sequence (replayed through the rule object)."""
    return int(MOfN(m, n).onsets_over(over).size)


def onsets_per_day(over: np.ndarray, m: int, n: int) -> float:
    return rule_onsets(over, m, n) / (over.size * PATCH_S / 86400.0)


def exact_onset_prob(p: float, m: int, n: int) -> float:
    """P(an m-of-n alarm starts at a patch) for iid patches: the patch exceeds, exactly m-1 of the n-1 before it do,
    and the patch that just left the window did not (else the alarm was already on)."""
    return p * math.comb(n - 1, m - 1) * p ** (m - 1) * (1 - p) ** (n - m) * (1 - p)


# --------------------------------------------------------------------------------------------------------------------
# alarm_onset_prob


@pytest.mark.parametrize("m, n", [(1, 1), (1, 5), (3, 5), (5, 5), (2, 3)])
def test_onset_prob_p_zero(m, n):
    assert alarm_onset_prob(0.0, MOfN(m, n)) == 0.0
    assert alarm_onset_prob(-0.5, MOfN(m, n)) == 0.0  # clamped


@pytest.mark.parametrize("m, n", [(1, 5), (3, 5), (2, 3), (4, 10)])
def test_onset_prob_p_one_is_zero_when_m_below_n(m, n):
    """Every patch exceeds: the alarm is on from the start and never starts again."""
    assert alarm_onset_prob(1.0, MOfN(m, n)) == 0.0
    assert alarm_onset_prob(1.5, MOfN(m, n)) == 0.0  # clamped
    assert rule_onsets(np.ones(1000, bool), m, n) == 1


@pytest.mark.parametrize("m", [1, 5])
def test_onset_prob_p_one_when_m_equals_n(m):
    assert alarm_onset_prob(1.0, MOfN(m, m)) == 0.0


def test_onset_prob_formula():
    p = 0.01
    assert alarm_onset_prob(p, RULE) == pytest.approx(6 * p ** 3 * (1 - p) ** 3, rel=1e-12)  # incl. the patch leaving
    assert alarms_per_day(p, RULE, PATCH_S) == pytest.approx(alarm_onset_prob(p, RULE) * 90000, rel=1e-12)
    assert patches_per_day(PATCH_S) == pytest.approx(90000.0)


def mc_onset_rate(p: float, m: int, n: int, size: int, seed: int) -> float:
    over = np.random.default_rng(seed).random(size) < p
    return rule_onsets(over, m, n) / size


@pytest.mark.parametrize("p, m, n", [(0.05, 3, 5), (0.02, 2, 5), (0.01, 1, 1), (0.03, 2, 2), (0.05, 2, 3)])
def test_onset_prob_against_monte_carlo(p, m, n):
    """Small p (the regime of real thresholds): formula within 10 % of a simulation of iid Bernoulli patches."""
    size = 2_000_000
    mc = mc_onset_rate(p, m, n, size, seed=1)
    assert mc * size > 1000  # enough events for 10 %
    assert alarm_onset_prob(p, MOfN(m, n)) == pytest.approx(mc, rel=0.10)
    assert exact_onset_prob(p, m, n) == pytest.approx(mc, rel=0.10)


def test_onset_prob_against_monte_carlo_large_p():
    p, m, n = 0.3, 3, 5
    mc = mc_onset_rate(p, m, n, 1_000_000, seed=2)
    assert exact_onset_prob(p, m, n) == pytest.approx(mc, rel=0.05)  # the corrected formula agrees
    assert alarm_onset_prob(p, MOfN(m, n)) == pytest.approx(mc, rel=0.10)


# --------------------------------------------------------------------------------------------------------------------
# threshold_report on iid data


@pytest.fixture(scope="module")
def gamma_report():
    scores = np.random.default_rng(0).gamma(SHAPE, 1.0, 4000)
    return scores, threshold_report(scores, 4.0, RULE, PATCH_S)


@pytest.fixture(scope="module")
def fresh_gamma():
    return np.random.default_rng(12345).gamma(SHAPE, 1.0, 1_000_000)


def test_threshold_is_mean_plus_k_sigma(gamma_report):
    s, r = gamma_report
    assert r.threshold == s.mean() + 4.0 * s.std(ddof=1)
    assert (r.mean, r.std, r.k, r.n_patches) == (s.mean(), s.std(ddof=1), 4.0, 4000)
    med = np.median(s)
    assert r.robust_threshold == pytest.approx(med + 4.0 * MAD_TO_SIGMA * np.median(np.abs(s - med)), rel=1e-12)
    assert r.quantile_999 == pytest.approx(np.quantile(s, 0.999)) and r.max_score == s.max()
    assert (r.alarm_m, r.alarm_n) == (3, 5)
    assert r.to_dict()["threshold"] == r.threshold


def test_tail_exceedance_against_fresh_draws(gamma_report, fresh_gamma):
    _, r = gamma_report
    true = float(np.mean(fresh_gamma > r.threshold))
    assert true == pytest.approx(stats.gamma.sf(r.threshold, SHAPE), rel=0.05)  # 1e6 draws are enough
    assert "generalized Pareto" in r.exceedance_method and r.tail is not None
    assert true / 2 < r.exceedance < true * 2, (r.exceedance, true)
    lo, hi = r.exceedance_ci
    assert lo <= r.exceedance <= hi
    assert lo <= true <= hi, (lo, true, hi)
    # a Gaussian tail would be far too optimistic for skewed scores: that is why the tail is fitted
    assert stats.norm.sf(4.0) < true / 5


@pytest.mark.parametrize("seed", [1, 2, 3, 6, 9])
def test_tail_exceedance_within_factor_two_other_baselines(seed, fresh_gamma):
    s = np.random.default_rng(seed).gamma(SHAPE, 1.0, 4000)
    r = threshold_report(s, 4.0, RULE, PATCH_S, n_boot=20)
    true = float(np.mean(fresh_gamma > r.threshold))
    assert true / 2 < r.exceedance < true * 2, (r.exceedance, true)


def test_threshold_in_the_bulk_uses_the_empirical_share():
    s = np.random.default_rng(3).gamma(SHAPE, 1.0, 500)
    r = threshold_report(s, 0.0, RULE, PATCH_S, n_boot=10)  # k = 0: the threshold is the mean, below the 95 % level
    assert r.exceedance_method.startswith("empirical")
    assert r.exceedance == np.mean(s > s.mean())


def test_false_alarms_iid_against_monte_carlo():
    """iid scores: the certificate's rate is within x3 of the simulated rule on fresh data, or above it."""
    s = np.random.default_rng(7).gamma(SHAPE, 1.0, 4000)
    r = threshold_report(s, 3.0, RULE, PATCH_S, n_boot=50)  # k = 3 so that alarms are frequent enough to count
    fresh = np.random.default_rng(8).gamma(SHAPE, 1.0, 4_000_000)
    over = fresh > r.threshold
    assert rule_onsets(over, 3, 5) >= 30
    observed = onsets_per_day(over, 3, 5)
    assert r.false_alarms_per_day >= observed / 3, (r.false_alarms_per_day, observed)
    # for iid patches the independence formula alone is already right
    assert alarms_per_day(r.exceedance, RULE, PATCH_S) == pytest.approx(observed, rel=0.5)
    lo, hi = r.false_alarms_per_day_ci
    assert lo <= r.false_alarms_per_day <= hi


def test_false_alarms_clustered_against_monte_carlo():
    """Each score repeated 4 times (an event lasting 4 patches): exceedances come in runs, every run is an alarm."""
    m, n = 3, 5
    s = np.repeat(np.random.default_rng(0).gamma(SHAPE, 1.0, 2000), 4)
    r = threshold_report(s, 4.0, MOfN(m, n), PATCH_S, n_boot=50)
    fresh = np.repeat(np.random.default_rng(1000).gamma(SHAPE, 1.0, 500_000), 4)
    over = fresh > r.threshold
    assert rule_onsets(over, m, n) > 500
    observed = onsets_per_day(over, m, n)
    assert observed / 3 < r.false_alarms_per_day < observed * 3, (r.false_alarms_per_day, observed)
    assert r.extremal_index == pytest.approx(0.25, abs=0.05)  # one cluster per 4 exceedances
    assert r.alarm_cluster_share > 0.9  # every run alarms, less the few that chance alone would explain
    # Why the cluster term exists: treating the patches as independent is off by orders of magnitude.
    independent = alarms_per_day(r.exceedance, MOfN(m, n), PATCH_S)
    assert independent < observed / 1000, (independent, observed)


def test_cluster_stats_by_hand():
    s = np.zeros(200)
    s[[10, 11, 12]] = 5.0  # one run of 3: alarms under 3 of 5
    s[[50, 53]] = 5.0  # 2 exceedances 3 apart: one cluster, no alarm
    s[[100, 180]] = 5.0  # two isolated exceedances
    s[[150, 152, 154]] = 5.0  # 3 exceedances within 5 patches: one cluster that alarms
    theta, q, level = cluster_stats(s, RULE, quantile=0.9)
    assert level == 0.0
    # 2 alarming clusters of 5, less the alarms independent patches would raise by chance at this level
    chance = 200 * alarm_onset_prob(10 / 200, RULE)
    assert theta == pytest.approx(5 / 10) and q == pytest.approx((2 - chance) / 5)
    assert cluster_stats(np.zeros(200), RULE) == (1.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("n", [0, 1, 99])
def test_too_few_scores(n):
    with pytest.raises(CalibrationError, match=f"at least 100 patches to set a threshold.*got {n}"):
        threshold_report(np.ones(n), 4.0, RULE, PATCH_S)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores(bad):
    s = np.random.default_rng(0).gamma(SHAPE, 1.0, 200)
    s[17] = bad
    with pytest.raises(CalibrationError, match="NaN or Inf"):
        threshold_report(s, 4.0, RULE, PATCH_S)


def test_constant_scores_give_a_finite_report():
    r = threshold_report(np.full(300, 0.5), 4.0, RULE, PATCH_S, n_boot=10)
    assert r.threshold == 0.5 and r.exceedance == 0.0 and r.false_alarms_per_day == 0.0
    assert r.tail is None


# --------------------------------------------------------------------------------------------------------------------
# Coverage of the exceedance confidence interval (slow: many baselines)


@pytest.mark.slow
def test_exceedance_ci_coverage():
    hits, N = 0, 40
    for seed in range(N):
        s = np.random.default_rng(seed).gamma(SHAPE, 1.0, 4000)
        r = threshold_report(s, 4.0, RULE, PATCH_S, n_boot=100, seed=seed)
        lo, hi = r.exceedance_ci
        hits += lo <= stats.gamma.sf(r.threshold, SHAPE) <= hi
    assert hits / N >= 0.8, hits / N
