"""Thresholds from baseline scores, and what they cost in false alarms.

* The threshold in force is ``mean + k·σ`` of baseline patch scores (:func:`anomaly.decision.fit_threshold`: the rule,
  its σ convention and its defaults live there).
* Reported alongside: ``median + k·1.4826·MAD`` (robust to a few loud events) and the empirical 99.9 % quantile.
* The per-patch exceedance probability at the threshold is estimated by peaks over threshold: a generalized Pareto
  distribution (``scipy.stats.genpareto``) fitted to the excesses over the 95th percentile, with a bootstrap
  confidence interval. Gaussian tails would be badly wrong for reconstruction errors, which are skewed.
* The alarm rule (an :class:`anomaly.decision.MOfN`) raises an alarm when at least ``m`` of the last ``n`` patches
  exceed. Treating patches as
  independent with exceedance probability ``p``, an alarm *starts* at a patch when that patch exceeds and exactly
  ``m − 1`` of the ``n − 1`` before it did: rate ``p · C(n−1, m−1) · p^(m−1) · (1−p)^(n−m)`` per patch, times the
  patches per day (86 400 / 0.96 = 90 000).
* Neighbouring patches are correlated in practice (a passing forklift, an intermittent impact lasts several
  patches), so exceedances come in clusters and the independence formula can be far too optimistic. The scores are
  therefore also replayed in recording order at the 95th percentile, where there are enough exceedances to count,
  and declustered into runs (exceedances less than ``n`` patches apart belong to one cluster). That gives the
  extremal index ``θ`` (clusters per exceedance) and the share ``q`` of clusters that would raise an alarm on their
  own, beyond the alarms independent patches would raise by chance at that level; the cluster-aware rate is
  ``p · θ · q`` per patch. The certificate states the larger of the two estimates, and
  the held-out check (observed exceedances and alarms on audio not used for the threshold) is stored beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from anomaly.decision import MEAN_LIMIT_FLOOR, TARGET_PER_DAY, MOfN, WindowMean, fit_threshold, standard_of
from calibration.errors import CalibrationError
from calibration.upcrossing import FLOOR_PER_DAY, MeanTail, crossfit_z, delay_seconds

SECONDS_PER_DAY = 86400.0
MAD_TO_SIGMA = 1.4826


def patches_per_day(patch_seconds: float) -> float:
    return SECONDS_PER_DAY / patch_seconds


def alarm_onset_prob(p: float, rule: MOfN) -> float:
    """Probability that an alarm starts at a given patch under the m-of-n ``rule``, patches independent.

    An alarm starts at patch t when t exceeds, exactly m − 1 of the n − 1 patches before it do, and the patch that
    just left the window (t − n) did not (else the previous window already held m).
    """
    m, n = _m_of_n(rule)
    p = min(max(float(p), 0.0), 1.0)
    return p * math.comb(n - 1, m - 1) * p ** (m - 1) * (1 - p) ** (n - m) * (1 - p)


def alarms_per_day(p: float, rule: MOfN, patch_seconds: float) -> float:
    return alarm_onset_prob(p, rule) * patches_per_day(patch_seconds)


def _m_of_n(rule) -> tuple[int, int]:
    """The certificate's estimates are written for the m-of-n rule; another kind of rule needs its own."""
    if not isinstance(rule, MOfN):
        raise CalibrationError(f"the false-alarm estimate covers the m-of-n alarm rule, not {rule.kind!r}")
    return rule.m, rule.n


@dataclass
class TailFit:
    """Peaks-over-threshold fit: P(score > t) = rate_u · (1 − GPD(t − u))."""

    u: float
    rate_u: float
    shape: float
    scale: float
    n_excess: int

    def sf(self, t: float) -> float:
        if t <= self.u:
            return float("nan")
        return float(self.rate_u * stats.genpareto.sf(t - self.u, self.shape, loc=0, scale=self.scale))


def fit_tail(scores: np.ndarray, u_quantile: float = 0.95, start: TailFit | None = None) -> TailFit:
    """Fit a generalized Pareto distribution to the excesses over the ``u_quantile`` level.

    Args:
        start: a previous fit whose parameters start the optimiser (the bootstrap's refits converge ~2x faster).
    """
    scores = np.asarray(scores, float)
    u = float(np.quantile(scores, u_quantile))
    exc = scores[scores > u] - u
    if exc.size < 10:
        raise CalibrationError(f"only {exc.size} scores above the {u_quantile:.0%} quantile: too few patches "
                               "for a tail fit (record longer)")
    if start is None:
        shape, _, scale = stats.genpareto.fit(exc, floc=0.0)
    else:
        shape, _, scale = stats.genpareto.fit(exc, start.shape, floc=0.0, scale=start.scale)
    return TailFit(u, exc.size / scores.size, float(shape), float(scale), int(exc.size))


@dataclass
class ThresholdReport:
    """Everything the certificate says about the threshold."""

    k: float
    threshold: float
    mean: float
    std: float
    n_patches: int
    robust_threshold: float
    quantile_999: float
    max_score: float
    exceedance: float  # per-patch probability of exceeding the threshold (tail estimate)
    exceedance_ci: tuple[float, float]
    exceedance_method: str
    false_alarms_per_day: float
    false_alarms_per_day_ci: tuple[float, float]
    extremal_index: float | None  # clusters per exceedance at cluster_level (1 = no clustering; None: not m-of-n)
    alarm_cluster_share: float | None  # share of those clusters that raise an alarm on their own
    cluster_level: float | None
    alarm_m: int  # the m-of-n rule's m and n (0 and the window for another kind of rule: see ``rule``)
    alarm_n: int
    tail: dict | None
    rule: dict | None = None  # the alarm rule in force, with its calibration (anomaly.decision.rule_from_dict)
    alarm_rule: dict | None = None  # the windowed-mean rule's certificate (mean_rule_report), None for m-of-n

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_report(scores: np.ndarray, k: float, rule, patch_seconds: float,
                     n_boot: int = 100, seed: int = 0, ordered: np.ndarray | None = None,
                     short_ok: bool = False) -> ThresholdReport:
    """Set ``mean + k·σ`` on ``scores`` and estimate its exceedance and the false-alarm rate of the alarm ``rule``.

    For an m-of-n rule the false alarms come from the tail of the patch scores (below); for a
    :class:`~anomaly.decision.WindowMean` rule the rule is calibrated on ``ordered`` (every calibration score in
    recording order, default ``scores``) by :func:`calibrate_mean_rule`, whose figures it reports (``short_ok``: a
    forced calibration may be shorter than two windows).

    Raises:
        CalibrationError: fewer than 100 scores, or non-finite scores; a windowed-mean rule on too little audio.
    """
    s = np.asarray(scores, float)
    if s.size < 100:
        raise CalibrationError(f"need at least 100 patches to set a threshold, got {s.size}")
    if not np.isfinite(s).all():
        raise CalibrationError("baseline scores contain NaN or Inf")
    fit = fit_threshold(s, k)
    mean, std, thr = fit.mean, fit.std, fit.value
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med)))
    try:
        tail = fit_tail(s)
        p = tail.sf(thr)
        method = f"generalized Pareto tail over the 95th percentile ({tail.n_excess} excesses)"
    except (CalibrationError, ValueError, RuntimeError):
        tail, p = None, float("nan")
    if not np.isfinite(p):
        # Threshold inside the bulk (or no tail fit): the empirical share is the honest estimate.
        p = float(np.mean(s > thr))
        method = "empirical share of held-out patches above the threshold"
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        b = rng.choice(s, size=s.size, replace=True)
        # The threshold stays the installed one: the interval is for *its* exceedance.
        try:
            pb = fit_tail(b, start=tail).sf(thr) if tail is not None else float("nan")
        except (CalibrationError, ValueError, RuntimeError):
            pb = float("nan")
        boots.append(pb if np.isfinite(pb) else float(np.mean(b > thr)))
    lo, hi = (float(x) for x in np.quantile(boots, [0.05, 0.95]))
    lo, hi = min(lo, p), max(hi, p)
    common = dict(k=float(k), threshold=thr, mean=mean, std=std, n_patches=int(s.size),
                  robust_threshold=med + k * MAD_TO_SIGMA * mad, quantile_999=float(np.quantile(s, 0.999)),
                  max_score=float(s.max()), exceedance=p, exceedance_ci=(lo, hi), exceedance_method=method,
                  tail=asdict(tail) if tail else None)
    if isinstance(rule, WindowMean):
        cal, mr = calibrate_mean_rule(s if ordered is None else ordered, rule, patch_seconds, short_ok=short_ok)
        # alarm_m = 0: not an m-of-n rule (the rule is ``rule``); no m-of-n clustering figures (JSON without NaN)
        return ThresholdReport(**common, false_alarms_per_day=mr["false_alarms_per_day"],
                               false_alarms_per_day_ci=tuple(mr["ci90"]), extremal_index=None,
                               alarm_cluster_share=None, cluster_level=None, alarm_m=0, alarm_n=rule.n,
                               rule=cal.to_dict(), alarm_rule=mr)
    theta, q, level = cluster_stats(s, rule)
    c = theta * q
    fa = max(alarms_per_day(p, rule, patch_seconds), p * c * patches_per_day(patch_seconds))
    fa_ci = tuple(max(alarms_per_day(x, rule, patch_seconds), x * c * patches_per_day(patch_seconds)) for x in (lo, hi))
    return ThresholdReport(**common, false_alarms_per_day=fa, false_alarms_per_day_ci=fa_ci, extremal_index=theta,
                           alarm_cluster_share=q, cluster_level=level, alarm_m=rule.m, alarm_n=rule.n,
                           rule=rule.to_dict())


DELAY_SHIFTS = (2.0, 3.0, 5.0)  # persistent score shifts (calibration sds) the certificate states a delay for


def calibrate_mean_rule(scores, rule: WindowMean, patch_seconds: float, floor: float = MEAN_LIMIT_FLOOR,
                        target: float = TARGET_PER_DAY, short_ok: bool = False) -> tuple[WindowMean, dict]:
    """Calibrate a windowed-mean rule on a recording's scores (in recording order) and state its false alarms.

    1. Cross-fit: each of 5 blocks standardised by a fit on the other 4 (:func:`calibration.upcrossing.crossfit_z`).
    2. The tail model of the rule's statistic on those values (:class:`calibration.upcrossing.MeanTail`).
    3. limit = max(``floor``, the limit whose stated rate is ``target`` per day).
    4. centre and scale: the log mean and sd of the whole recording.

    Returns:
        ``(calibrated rule, report)``; the report holds the stated rate and its 90 % interval, the limit's parts, the
        tail model's figures, a replay of the rule over the cross-fitted values and the delay for persistent shifts.
    """
    s = np.asarray(scores, np.float64)
    if s.size and (not np.isfinite(s).all() or (s <= 0).any()):
        raise CalibrationError(f"the alarm rule {rule.short} works on log scores: the model gave scores <= 0 or not "
                               f"finite (min {s.min():.3g}); use an m-of-n rule (--alarm 3/5) with this model")
    z = crossfit_z(s)
    tail = MeanTail.fit(rule, z, patch_seconds, short_ok=short_ok)
    target_limit = tail.limit_for(target)
    limit = max(float(floor), target_limit)
    centre, scale = standard_of(s)
    cal = rule.with_calibration(centre, scale, limit)
    stated, lo, hi = tail.rate(limit)
    replay = int(cal.onsets_z(z).size)
    minutes = s.size * patch_seconds / 60.0
    return cal, {
        "kind": rule.kind, "n": rule.n, "sides": rule.sides, "limit": limit, "limit_floor": float(floor),
        "target_per_day": float(target), "target_limit": target_limit,
        "limit_source": "floor" if limit == floor else "target",
        "false_alarms_per_day": stated, "ci90": [lo, hi], "floor_per_day": FLOOR_PER_DAY,
        "n_eff": tail.n_eff, "values": tail.n_values, "block_patches": tail.block_patches,
        "sides_moments": [{"mu": sd.mu, "sd": sd.sd, "rho": sd.rho, "n_eff": sd.n_eff} for sd in tail.sides],
        "method": "Gaussian up-crossings of the window mean on cross-fitted calibration values (5 blocks), "
                  "predictive Student-t over the effective number of independent values (batch means over 3-min "
                  "blocks or a tenth of the recording)",
        "crossfit_alarms": replay, "crossfit_minutes": minutes,
        "delays_s": {f"{d:g}": delay_seconds(cal, d, patch_seconds) for d in DELAY_SHIFTS},
        "patch_seconds": patch_seconds,
    }


def cluster_stats(scores: np.ndarray, rule: MOfN, quantile: float = 0.95) -> tuple[float, float, float]:
    """Runs declustering of the exceedances of ``scores`` (in recording order) over their ``quantile``.

    Returns:
        ``(theta, q, level)``: clusters per exceedance; the share of clusters that hold ``m`` exceedances within
        some ``n`` consecutive patches *beyond what independent patches would give by chance at that level*
        (otherwise independent data would count chance coincidences at the low level as clustering); the level.
    """
    _, n = _m_of_n(rule)
    s = np.asarray(scores, float)
    level = float(np.quantile(s, quantile))
    idx = np.nonzero(s > level)[0]
    if idx.size == 0:
        return 1.0, 0.0, level
    breaks = np.nonzero(np.diff(idx) >= n)[0]
    clusters = np.split(idx, breaks + 1)
    alarming = 0
    for c in clusters:
        over = np.zeros(c[-1] - c[0] + 1, bool)
        over[c - c[0]] = True
        alarming += rule.onsets_over(over).size > 0
    by_chance = s.size * alarm_onset_prob(idx.size / s.size, rule)
    return len(clusters) / idx.size, max(0.0, alarming - by_chance) / len(clusters), level
