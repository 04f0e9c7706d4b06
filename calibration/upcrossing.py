"""Expected false alarms of the windowed-mean rule from one calibration recording (issue #14).

The rule's statistic ``y_t`` (the mean of the last n standardised log scores) is treated as a stationary Gaussian
sequence with mean ``mu``, sd ``sd`` and lag-1 correlation ``rho``; an alarm starts where ``y`` up-crosses the limit,
so the expected onsets per patch are ``P(y_{t-1} <= T < y_t)`` (bivariate normal), summed over both sides for a
two-sided rule. Averaging over n patches makes ``y`` close to Gaussian where single patch scores are not.

* **Out of sample.** ``y`` is computed on *cross-fitted* values (:func:`crossfit_z`: each of 5 blocks standardised by
  a fit on the other 4), so a standardisation that fits its own recording too well does not make the estimate
  optimistic.
* **What one recording can say (the between-part term).** A recording holds only ``n_eff`` effectively independent
  values of ``y``: ``n / tau`` with the integrated autocorrelation time ``tau = L·var(block means)/var(y)`` from
  batch means over 3-min blocks (or a tenth of the recording, when longer). The slow drift of a background makes
  30 min worth ~7–36 independent 2-min means.
* **Stated rate: predictive.** A future ``y`` given ``n_eff`` values seen is Student-t with ``n_eff − 1`` degrees of
  freedom and scale ``sd·sqrt(1 + 1/n_eff)``; its exceedance at T is mapped onto the Gaussian level with the same
  exceedance, so the up-crossings keep ``rho``.
* **90 % interval.** Low end: the plug-in Gaussian rate at the chi-square lower sd with the mean 1.645·sd/sqrt(n_eff)
  away from T; high end: the predictive rate at the chi-square upper sd.
* **Never zero.** The stated rate is at least :data:`FLOOR_PER_DAY`: a promise of 0 is never true.

Measured on 24 simulated sites × 8 h (docs/calibration.md): observed/stated 0.5–1 from 178 down to ~1 per day, and
optimistic in the far tail (below ~0.1/day), which is why the plain-words certificate states a number only down to
about one per week.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from anomaly.decision import CROSSFIT_BLOCKS, WindowMean, standard_of
from calibration.errors import CalibrationError

FLOOR_PER_DAY = 0.01  # below one per 100 days a recording cannot tell
BLOCK_SECONDS = 180.0  # batch-means blocks for the effective number of independent values
BATCHES = 10  # ... or a tenth of the recording, whichever is longer
_X, _W = np.polynomial.legendre.leggauss(200)


def crossfit_z(scores, blocks: int = CROSSFIT_BLOCKS) -> np.ndarray:
    """Out-of-sample standardised log scores of a recording in order: each of ``blocks`` contiguous parts standardised
    by the log mean and sd (:func:`anomaly.decision.standard_of`) of the other parts."""
    s = np.asarray(scores, np.float64)
    edges = np.linspace(0, s.size, blocks + 1).astype(int)
    out = np.empty(s.size)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        c, sd = standard_of(np.r_[s[:a], s[b:]])
        out[a:b] = (np.log(s[a:b]) - c) / sd
    return out


def upcross_prob(u, rho) -> np.ndarray:
    """``P(Y0 <= u < Y1)`` for standard bivariate normal pairs with correlation ``rho``: the integral over ``x <= u``
    of ``pdf(x)·P(Y1 > u | Y0 = x)`` by Gauss-Legendre (on ``[u − 8s, u]``, where the mass is when rho is near 1, and
    below it; ``s = sqrt(1 − rho²)``)."""
    u, rho = np.broadcast_arrays(np.asarray(u, float), np.clip(np.asarray(rho, float), -0.999999, 0.999999))
    s = np.sqrt(1 - rho * rho)
    a0 = u - 8.0 * s
    total = np.zeros(u.shape)
    for lo, hi in ((a0, u), (np.minimum(-8.0, a0), a0)):
        half = (hi - lo) / 2
        xs = lo[..., None] + (_X + 1) * half[..., None]
        f = stats.norm.pdf(xs) * stats.norm.sf((u[..., None] - rho[..., None] * xs) / s[..., None])
        total += np.sum(_W * f, axis=-1) * half
    return np.maximum(total, 0.0)


def _moments(y: np.ndarray) -> tuple[float, float, float]:
    mu, sd = float(y.mean()), float(np.std(y, ddof=1))  # the window mean's own spread (not a threshold's)
    d = y - mu
    rho = float(np.dot(d[1:], d[:-1]) / max(float(np.dot(d, d)), 1e-300))
    return mu, max(sd, 1e-9), rho


def effective_n(y: np.ndarray, block: int) -> float:
    """``n / tau`` with ``tau = block·var(block means)/var(y)`` (at least 1), and at least 2."""
    nb = y.size // block
    if nb < 2:
        return 2.0
    m = y[: nb * block].reshape(nb, block).mean(axis=1)
    tau = max(1.0, block * float(m.var(ddof=1)) / max(float(y.var(ddof=1)), 1e-300))
    return float(max(2.0, y.size / tau))


@dataclass(frozen=True)
class Side:
    """Moments of one side's statistic on the calibration and how many independent values they rest on."""

    mu: float
    sd: float
    rho: float
    n_eff: float

    def _per_patch(self, mu: float, sd: float, limit: float) -> float:
        return float(upcross_prob((limit - mu) / max(sd, 1e-12), self.rho))

    def _sd_ends(self) -> tuple[float, float]:
        nu = max(self.n_eff - 1.0, 1.0)
        return (self.sd * math.sqrt(nu / stats.chi2.ppf(0.95, nu)), self.sd * math.sqrt(nu / stats.chi2.ppf(0.05, nu)))

    def predictive(self, limit: float, sd: float) -> float:
        """Onset probability per patch from the Student-t predictive tail at ``limit`` (scale from ``sd``)."""
        nu = max(self.n_eff - 1.0, 1.0)
        tail = float(stats.t.sf((limit - self.mu) / (sd * math.sqrt(1 + 1 / self.n_eff)), nu))
        u = -float(stats.norm.ppf(tail)) if tail > 0 else 40.0
        return float(upcross_prob(u, self.rho))

    def per_patch(self, limit: float) -> tuple[float, float, float]:
        """(stated, low, high) onset probability per patch."""
        sd_lo, sd_hi = self._sd_ends()
        low = self._per_patch(self.mu - 1.645 * self.sd / math.sqrt(self.n_eff), sd_lo, limit)
        return self.predictive(limit, self.sd), low, self.predictive(limit, sd_hi)


@dataclass(frozen=True)
class MeanTail:
    """The windowed-mean rule's statistic on a calibration, per side, and the false alarms it implies."""

    sides: tuple[Side, ...]
    block_patches: int
    n_values: int
    patches_per_day: float

    @classmethod
    def fit(cls, rule: WindowMean, z: np.ndarray, patch_seconds: float, short_ok: bool = False) -> MeanTail:
        """``z``: the calibration's (cross-fitted) standardised log scores in recording order.

        Raises:
            CalibrationError: fewer than ``2·n`` values (the rule's window twice); with ``short_ok`` (a forced
                calibration) fewer than ``n + 2`` (two window means: the estimate is then very wide).
        """
        z = np.asarray(z, np.float64)
        n = rule.n
        if z.size < (n + 2 if short_ok else 2 * n):
            raise CalibrationError(f"the alarm rule {rule.short} needs at least {2 * n} patches of calibration audio "
                                   f"({2 * n * patch_seconds / 60:.1f} min), got {z.size}: record longer, or use a "
                                   "shorter rule (--alarm mean/60 or 3/5)")
        c = np.concatenate([[0.0], np.cumsum(z)])
        y = (c[n:] - c[:-n]) / n
        # batch means over 3-min blocks (at least two windows), or a tenth of the recording when that is longer: a
        # long recording's between-part variation is measured at the scale of its parts (a 60-min calibration with
        # 3-min blocks stated 0.19 false alarms where 4 came on the fleet; with 6-min blocks 0.25 where 2 came)
        block = max(2 * n, int(round(BLOCK_SECONDS / patch_seconds)), y.size // BATCHES)
        block = max(1, min(block, y.size // 4))
        sides = tuple(Side(*_moments(sign * y), effective_n(sign * y, block))
                      for sign in ((1.0, -1.0) if rule.sides == 2 else (1.0,)))
        return cls(sides, int(block), int(y.size), 86400.0 / patch_seconds)

    def rate(self, limit: float, floor: float = FLOOR_PER_DAY) -> tuple[float, float, float]:
        """(stated, low, high) expected alarm onsets per day at ``limit``: a 90 % interval, stated >= ``floor``."""
        parts = np.array([s.per_patch(limit) for s in self.sides]).sum(axis=0) * self.patches_per_day
        point, lo, hi = (float(x) for x in parts)
        point = max(point, floor)
        return point, min(lo, point), max(hi, point)

    def limit_for(self, target_per_day: float, lo: float = 0.0, hi: float = 30.0) -> float:
        """The smallest limit whose stated rate (without the floor) is at most ``target_per_day``."""
        if self.rate(hi, floor=0.0)[0] > target_per_day:
            return hi
        for _ in range(30):
            mid = (lo + hi) / 2
            if self.rate(mid, floor=0.0)[0] > target_per_day:
                lo = mid
            else:
                hi = mid
        return hi

    @property
    def n_eff(self) -> float:
        return min(s.n_eff for s in self.sides)


def delay_seconds(rule: WindowMean, shift_sd: float, patch_seconds: float) -> float | None:
    """Seconds until a persistent shift of ``shift_sd`` calibration sds (from a window at its calibration mean) moves
    the window mean past the rule's limit: ``ceil(n·limit/shift)`` patches; None when the shift is within the limit."""
    if shift_sd <= rule.limit:
        return None
    return math.ceil(rule.n * rule.limit / shift_sd - 1e-9) * patch_seconds
