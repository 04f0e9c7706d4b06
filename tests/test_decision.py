"""The decision owner (anomaly.decision): the threshold rule, the m-of-n alarm rule (whole sequences and streaming)
and the defaults every other module takes."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.decision import (
    DEFAULT_K,
    DEFAULT_RULE,
    K_RANGE,
    MAX_WINDOW,
    MOFN_RULE,
    Z_CLAMP,
    Z_SCALE,
    MOfN,
    WindowMean,
    check_k,
    fit_threshold,
    hits_rule,
    over,
    parse_rule,
    rule_from_dict,
    standard_of,
    threshold,
)
from anomaly.errors import DecisionError, HumwatchError


def n_onsets(seq, m: int, n: int) -> int:
    return int(MOfN(m, n).onsets_over(np.asarray(seq)).size)


def brute_onsets(exceeded: np.ndarray, m: int, n: int) -> list[int]:
    on = [sum(exceeded[max(0, i - n + 1): i + 1]) >= m for i in range(exceeded.size)]
    return [i for i, x in enumerate(on) if x and (i == 0 or not on[i - 1])]


# --------------------------------------------------------------------------------------------------------------------
# the threshold rule


def test_threshold_is_mean_plus_k_sample_sigma():
    s = np.random.default_rng(0).gamma(2.0, 1.0, 1000)
    fit = fit_threshold(s, 3.5)
    assert fit.value == s.mean() + 3.5 * s.std(ddof=1) == threshold(s, 3.5)
    assert (fit.mean, fit.std, fit.k, fit.n) == (s.mean(), s.std(ddof=1), 3.5, 1000)
    assert threshold(s) == s.mean() + DEFAULT_K * s.std(ddof=1)


def test_threshold_of_one_score_is_that_score_and_of_none_an_error():
    assert fit_threshold([2.5], 4.0).value == 2.5 and fit_threshold([2.5]).std == 0.0
    with pytest.raises(DecisionError, match="no scores"):
        fit_threshold([], 4.0)


@pytest.mark.parametrize("k", [3, 3.0, 4.5, 5])
def test_check_k_accepts_the_range(k):
    assert check_k(k) == float(k)


@pytest.mark.parametrize("k, needle", [(2.9, "between 3 and 5"), (6, "got 6"), ("4", "must be a number"),
                                       (True, "must be a number")])
def test_check_k_names_the_bad_value(k, needle):
    with pytest.raises(DecisionError, match=needle):
        check_k(k)


def test_over_is_strict_unless_inclusive():
    s = np.array([0.5, 1.0, 1.5])
    assert over(s, 1.0).tolist() == [False, False, True]
    assert over(s, 1.0, inclusive=True).tolist() == [False, True, True]


def test_defaults():
    assert DEFAULT_K == 4.0 and K_RANGE == (3.0, 5.0)
    assert DEFAULT_RULE == WindowMean(120, 2) and DEFAULT_RULE.spelling == "mean/120"
    assert MOFN_RULE == MOfN(3, 5) and hits_rule(DEFAULT_RULE) == MOFN_RULE and hits_rule(MOfN(2, 4)) == MOfN(2, 4)
    assert isinstance(DecisionError("x"), HumwatchError) and isinstance(DecisionError("x"), ValueError)


# --------------------------------------------------------------------------------------------------------------------
# MOfN on whole sequences (moved from tests/test_threshold.py, where it was calibration.threshold.rule_onsets)


@pytest.mark.parametrize("seq, m, n, expected", [
    ([1, 1, 1, 0, 0, 0, 0, 1, 1, 1], 3, 5, 2),
    ([1] * 50, 3, 5, 1),  # a sustained alarm counts once
    ([1, 0, 1, 0, 1], 3, 5, 1),  # 3 of 5, not consecutive
    ([1, 0, 0, 0, 1, 0, 0, 0, 1], 3, 5, 0),  # never 3 inside one window of 5
    ([1, 1, 0, 0, 0, 0, 0, 1], 3, 5, 0),
    ([0] * 20, 3, 5, 0),
    ([], 3, 5, 0),
    ([1], 1, 1, 1),
    ([1, 1, 0, 1, 0, 1, 1], 1, 1, 3),  # 1 of 1: every run is an alarm
    ([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], 2, 2, 2),
    ([1, 1, 1, 0, 0, 0, 1, 1, 1], 3, 3, 2),
    ([True, True, True], 3, 5, 1),
])
def test_onsets_hand_made(seq, m, n, expected):
    assert n_onsets(np.array(seq, dtype=bool if seq and isinstance(seq[0], bool) else int), m, n) == expected


def test_flapping_alarm_counts_each_restart():
    # 1 0 1 0 1 0 1 ... under 3 of 5: the window holds 3, 2, 3, 2 ... exceedances, so the alarm toggles.
    exceeded = np.array([1, 0] * 10, bool)
    c = np.convolve(exceeded.astype(int), np.ones(5, int))[: exceeded.size]
    expected = int((c >= 3)[0] + np.sum((c[1:] >= 3) & (c[:-1] < 3)))
    assert n_onsets(exceeded, 3, 5) == expected == 8


def test_onsets_equal_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m, n = sorted(rng.integers(1, 7, size=2))
        exceeded = rng.random(rng.integers(1, 40)) < rng.random()
        got = MOfN(int(m), int(n)).onsets_over(exceeded).tolist()
        assert got == brute_onsets(exceeded, m, n), (exceeded.astype(int).tolist(), m, n)


def test_onsets_of_scores_compare_with_the_threshold_strictly():
    s = np.array([2.0, 2.0, 2.0, 0.0, 3.0, 3.0, 3.0])
    assert MOfN(3, 5).onsets(s, 2.0).tolist() == [6]  # 2.0 is not over 2.0: only the last three patches count
    assert MOfN(3, 5).onsets(s, 2.0, inclusive=True).tolist() == [2]


# --------------------------------------------------------------------------------------------------------------------
# MOfN patch by patch (moved from tests/test_monitor.py, where it was calibration.monitor.AlarmRule)


def test_stream_reports_onsets_once():
    r = MOfN(3, 5).stream(0.5)
    seq = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1]
    onsets = [i for i, x in enumerate(seq) if r.push(bool(x))]
    assert onsets == [2, 14]


def test_stream_and_whole_sequence_agree():
    rng = np.random.default_rng(1)
    for _ in range(100):
        m, n = sorted(int(x) for x in rng.integers(1, 9, size=2))
        scores = rng.gamma(2.0, 1.0, int(rng.integers(1, 80)))
        thr = float(np.quantile(scores, rng.random()))
        for inclusive in (False, True):
            st = MOfN(m, n).stream(thr, inclusive=inclusive)
            got = [i for i, s in enumerate(scores) if st.update(s)]
            assert got == MOfN(m, n).onsets(scores, thr, inclusive=inclusive).tolist(), (m, n, inclusive)
            on = [sum(over(scores, thr, inclusive)[max(0, len(scores) - n): len(scores)]) >= m]
            assert st.active == on[0]


# --------------------------------------------------------------------------------------------------------------------
# validation, spelling, storage


@pytest.mark.parametrize("m, n, needle", [(6, 5, "got 6 of 5"), (0, 5, "got 0 of 5"), (7, 5, "1 <= m <= n"),
                                          (1, MAX_WINDOW + 1, f"<= {MAX_WINDOW}, got 1 of {MAX_WINDOW + 1}"),
                                          (2.5, 5, "m must be a whole number, got 2.5"),
                                          (3, True, "n must be a whole number, got True")])
def test_bad_rules_are_refused_naming_the_values(m, n, needle):
    """An m above n could never fire (rule_onsets used to count 0 onsets for it); the rule object refuses it."""
    with pytest.raises(DecisionError, match=needle.replace("(", r"\(")):
        MOfN(m, n)


@pytest.mark.parametrize("text, rule", [("3/5", MOfN(3, 5)), ("2 of 4", MOfN(2, 4)), (" 1/1", MOfN(1, 1))])
def test_parse(text, rule):
    assert MOfN.parse(text) == rule


@pytest.mark.parametrize("text, needle", [("3-5", "must look like 3/5"), ("a/b", "got 'a/b'"),
                                          ("6/5", "alarm rule needs")])
def test_parse_refuses(text, needle):
    with pytest.raises(DecisionError, match=needle):
        MOfN.parse(text)


def test_describe_and_store():
    r = MOfN(3, 5)
    assert r.describe() == "3 of the last 5 patches over the threshold"
    assert r.describe("with p(x) over its threshold") == "3 of the last 5 patches with p(x) over its threshold"
    assert r.short == "3 of 5"
    assert r.to_dict() == {"kind": "m_of_n", "m": 3, "n": 5}
    assert rule_from_dict(r.to_dict()) == r and MOfN.from_dict({"m": 2, "n": 2}) == MOfN(2, 2)
    assert r.c_defines("HW_ALARM") == "#define HW_ALARM_M 3\n#define HW_ALARM_N 5"
    with pytest.raises(DecisionError, match="unknown alarm rule kind 'windowed'"):
        rule_from_dict({"kind": "windowed"})
    with pytest.raises(DecisionError, match="needs whole numbers m and n"):
        rule_from_dict({"kind": "m_of_n", "m": 3})
    with pytest.raises(AttributeError):
        r.m = 4  # frozen


# --------------------------------------------------------------------------------------------------------------------
# WindowMean: the windowed mean of the standardised log score (issue #14)


def _mean_brute(scores, rule: WindowMean) -> list[int]:
    """Onsets from the definition, in floats: |mean of the last n z| > limit (ties aside)."""
    z = np.clip((np.log(np.asarray(scores)) - rule.centre) / rule.scale, -Z_CLAMP, Z_CLAMP)
    on = [i >= rule.n - 1 and (abs(z[i - rule.n + 1: i + 1].mean()) if rule.sides == 2
                               else z[i - rule.n + 1: i + 1].mean()) > rule.limit for i in range(z.size)]
    return [i for i, x in enumerate(on) if x and (i == 0 or not on[i - 1])]


@pytest.mark.parametrize("sides", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_window_mean_whole_sequence_stream_and_definition_agree(sides, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    rule = WindowMean(n, sides).with_calibration(0.3, 0.8, float(rng.uniform(0.2, 1.5)))
    # a normal stretch, an upward shift, a downward shift, normal again
    x = np.r_[rng.normal(0, 0.8, 300), rng.normal(1.5, 0.8, 100), rng.normal(-1.5, 0.8, 100), rng.normal(0, 0.8, 100)]
    scores = np.exp(0.3 + x)
    on = rule.onsets(scores, threshold=123.0).tolist()
    st = rule.stream(123.0)
    assert [i for i, s in enumerate(scores) if st.update(s)] == on
    assert on == _mean_brute(scores, rule) and on  # exact integer sums agree with the float definition here
    stat = rule.statistic(scores)
    assert np.isnan(stat[: n - 1]).all() and abs(stat[-1] - st.mean) < 1e-12


def test_window_mean_quiet_in_its_warm_up_and_two_sided_only_when_asked():
    rule = WindowMean(10, 2).with_calibration(0.0, 1.0, 1.0)
    low = np.full(30, np.exp(-3.0))
    assert rule.onsets(low[:9]).size == 0 and rule.onsets(low).tolist() == [9]
    assert WindowMean(10, 1).with_calibration(0.0, 1.0, 1.0).onsets(low).size == 0


def test_window_mean_bad_scores_count_as_the_clamp():
    rule = WindowMean(3, 2).with_calibration(0.0, 1.0, 2.0)
    q = rule.quantised([0.0, -1.0, float("nan"), float("inf"), 1.0])
    assert q.tolist() == [-Z_CLAMP * Z_SCALE] * 3 + [Z_CLAMP * Z_SCALE, 0]
    assert rule.onsets([0.0, 0.0, 0.0]).tolist() == [2]


def test_window_mean_spelling_dict_and_errors():
    assert parse_rule("mean/120") == WindowMean(120, 2) and parse_rule("mean+/60") == WindowMean(60, 1)
    assert parse_rule("Mean of 90") == WindowMean(90, 2) and parse_rule("3/5") == MOfN(3, 5)
    rule = WindowMean(120, 2).with_calibration(-1.25, 0.5, 1.5)
    assert rule_from_dict(rule.to_dict()) == rule and rule_from_dict(DEFAULT_RULE.to_dict()) == DEFAULT_RULE
    assert rule.uncalibrated() == DEFAULT_RULE and rule.limit_q == int(1.5 * 120 * Z_SCALE)
    assert "120 patches beyond ±1.5 calibration sds" in rule.describe()
    with pytest.raises(DecisionError, match="mean/N"):
        parse_rule("median/120")
    with pytest.raises(DecisionError, match="2 <= n <= 600"):
        WindowMean(601)
    with pytest.raises(DecisionError, match="go together"):
        WindowMean(120, 2, centre=1.0)
    with pytest.raises(DecisionError, match="scale > 0"):
        WindowMean(120, 2, 0.0, -1.0, 1.5)
    with pytest.raises(DecisionError, match="no calibration"):
        DEFAULT_RULE.onsets([1.0] * 200)
    with pytest.raises(DecisionError, match="z_scale"):
        rule_from_dict({**rule.to_dict(), "z_scale": 1024})


def test_standard_of_is_the_log_mean_and_sample_sd():
    s = np.random.default_rng(1).gamma(2.0, 1.0, 500)
    assert standard_of(s) == (np.log(s).mean(), np.log(s).std(ddof=1))
    with pytest.raises(DecisionError, match="positive"):
        standard_of([1.0, 0.0, 2.0])
# fault_stream: the rule over normal operation followed by a persistent fault


def test_fault_stream_counts_false_alarms_and_the_delay():
    from anomaly.decision import fault_stream

    rule = MOfN(3, 5)
    normal = [0, 2, 2, 2, 0, 0, 0, 0, 0, 0]  # one false alarm (onset at index 3)
    fault = [0, 2, 0, 2, 2, 2, 2]  # over at 1, 3, 4: the window ending at fault index 4 holds 3 -> active there
    r = fault_stream(rule, normal, fault, 1.0)
    assert (r.normal_patches, r.fault_patches, r.false_alarms, r.first_alarm) == (10, 7, 1, 4)
    assert r.alarm_share == pytest.approx(3 / 7)
    assert r.delay_seconds(0.96) == pytest.approx(5 * 0.96)
    d = r.to_dict(0.96)
    assert d["delay_s"] == pytest.approx(4.8) and d["false_alarms"] == 1 and d["first_alarm_patch"] == 4
    quiet = fault_stream(rule, normal[4:], [0] * 20, 1.0)
    assert quiet.first_alarm is None and quiet.delay_seconds(0.96) is None and quiet.false_alarms == 0
    # an alarm still active when the fault starts counts from its first patch
    assert fault_stream(rule, [2, 2, 2], [2], 1.0).first_alarm == 0
