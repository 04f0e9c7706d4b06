"""The operating/background states a calibration recording covered, and states monitoring had never heard (#14).

* **Features**: each patch's band levels (mean log-mel per mel band over the patch, natural-log units) pooled into
  :data:`GROUPS` coarse bands (8 groups of 8 mel bands, ~125 Hz … 7.5 kHz) and smoothed by a causal moving mean
  over :data:`SMOOTH` patches (~10 s: an impact or a single patch does not make a state).
* **States**: Gaussian mixtures (full covariances, k = 1 … :data:`MAX_STATES`) on the calibration's smoothed
  features; k minimises BIC computed with the *effective* sample size n / SMOOTH (neighbouring smoothed vectors are
  not independent: the plain BIC would split every wobble of a drifting background into a state); components closer
  than :data:`MERGE_DB` in every group are merged, and so is a component holding under :data:`MIN_SHARE` of the
  time (the smoothed passage from one state to another) into its nearest.
* **Plain words**: per state its share of the time, minutes and stretches, and how it differs from the main state
  (dB at the two most different frequency ranges); findings when the recording sounds like one state, or when a
  state was heard for less than :data:`MIN_STATE_MINUTES` ("record another 15 min while it is on").
* **Novelty**: the distance of a patch's smoothed features to the nearest state (Mahalanobis under that state's
  covariance, variances floored at :data:`VAR_FLOOR_DB`); the limit is the calibration's 99.9 % distance ×
  :data:`MARGIN`. A *novel-state event* starts when the distance stays above the limit for :data:`MIN_PATCHES`
  patches in a row (:class:`NoveltyTracker`, what monitoring runs). Its state depends on the last :data:`MEMORY`
  patches only, so a restarted monitor resumes it from their group levels (logged with every score).

Policy (docs/calibration.md): a novel state is a *notice* of its own kind, never an anomaly alarm and never a reason
to suppress one. A fault can sound like a new state (on the simulated fleet 6–18 of 24 faults per type were also
flagged novel, usually within ~35 s), so an anomaly alarm inside a novel-state period is reported with that note;
recalibrating "to include the new state" goes through the recalibration shift test like any other recording.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from anomaly.decision import rising_edges

GROUPS = 8
SMOOTH = 10  # patches
MAX_STATES = 5
MERGE_DB = 1.5
VAR_FLOOR_DB = 0.5
QUANTILE = 0.999
MARGIN = 2.5  # measured: 0.25 novel-state events per site-day on normal drift (1.5: 4.6)
MIN_PATCHES = 30
MEMORY = SMOOTH + MIN_PATCHES - 1  # a tracker fed the last MEMORY patches is in the state all of them would give
MIN_STATE_MINUTES = 5.0
MIN_SHARE = 0.02  # a component with less of the time is a transition between states: merged into its nearest
DB = 20.0 / np.log(10.0)  # natural-log amplitude -> dB
BAND_NAMES = ("125-250 Hz", "250-500 Hz", "0.5-0.9 kHz", "0.9-1.5 kHz", "1.5-2.3 kHz", "2.3-3.4 kHz", "3.4-5 kHz",
              "5-7.5 kHz")


def group_levels(band_levels: np.ndarray) -> np.ndarray:
    """[n, n_mels] band levels -> [n, GROUPS] means of consecutive groups of bands."""
    lv = np.asarray(band_levels, np.float64)
    return lv.reshape(lv.shape[0], GROUPS, -1).mean(axis=2)


def smooth(groups: np.ndarray, width: int = SMOOTH) -> np.ndarray:
    """Causal moving mean over ``width`` patches (the first rows use the rows so far)."""
    g = np.asarray(groups, np.float64)
    c = np.cumsum(g, axis=0)
    out = np.empty_like(g)
    out[width:] = (c[width:] - c[:-width]) / width
    k = np.arange(1, min(width, g.shape[0]) + 1)[:, None]
    out[:width] = c[:width] / k
    return out


@dataclass
class StateModel:
    """The states a calibration heard (means and covariances of the smoothed group levels) and the novelty limit."""

    means: np.ndarray  # [k, GROUPS]
    covs: np.ndarray  # [k, GROUPS, GROUPS]
    shares: np.ndarray  # [k] share of the calibration's patches nearest each state
    stretches: list[int]  # per state, how many separate stretches it was heard in
    limit: float
    minutes: float  # length of the calibration recording

    @property
    def k(self) -> int:
        return int(self.means.shape[0])

    def _precisions(self) -> list[np.ndarray]:
        floor = (VAR_FLOOR_DB / DB) ** 2
        out = []
        for c in self.covs:
            w, v = np.linalg.eigh(c)
            out.append((v / np.maximum(w, floor)) @ v.T)
        return out

    def distance(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance to the nearest state, its index) per row of smoothed features."""
        f = np.atleast_2d(np.asarray(feats, np.float64))
        d = np.stack([np.sqrt(np.sum(((f - m) @ p) * (f - m), axis=1))
                      for m, p in zip(self.means, self._precisions(), strict=True)], axis=1)
        return d.min(axis=1), d.argmin(axis=1)

    def novel(self, band_levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(onsets of novel-state events, 'in a novel state' per patch) over a sequence of band levels."""
        d, _ = self.distance(smooth(group_levels(band_levels)))
        over = d > self.limit
        run = np.convolve(over.astype(int), np.ones(MIN_PATCHES, int))[: over.size]
        on = run >= MIN_PATCHES
        return rising_edges(on), on

    def tracker(self) -> NoveltyTracker:
        return NoveltyTracker(self)

    def differs(self, feats: np.ndarray) -> str:
        """How smoothed features differ from the nearest state, in words (``+13 dB at 5-7.5 kHz``)."""
        _, i = self.distance(feats)
        diff = (np.atleast_2d(feats)[0] - self.means[int(i[0])]) * DB
        j = np.argsort(-np.abs(diff))[:2]
        return ", ".join(f"{diff[x]:+.0f} dB at {BAND_NAMES[x]}" for x in j)

    def describe(self) -> list[str]:
        """One line per state, the main one first."""
        order = np.argsort(-self.shares)
        main = int(order[0])
        out = []
        for rank, i in enumerate(order):
            name = chr(ord("A") + rank)
            txt = (f"state {name}: {self.shares[i]:.0%} of the time ({self.shares[i] * self.minutes:.0f} min in "
                   f"{self.stretches[i]} stretch{'es' if self.stretches[i] != 1 else ''})")
            if i != main:
                diff = (self.means[i] - self.means[main]) * DB
                j = np.argsort(-np.abs(diff))[:2]
                txt += "; against state A: " + ", ".join(f"{diff[x]:+.0f} dB at {BAND_NAMES[x]}" for x in j)
            out.append(txt)
        return out

    def findings(self) -> list[tuple[str, str]]:
        """(level, words) about the states the recording covered."""
        out = []
        if self.k == 1:
            out.append(("warning", "the recording sounds like one steady state: if the machine or its surroundings "
                                   "have others (load changes, HVAC, a neighbouring machine, another shift), record "
                                   "them too, or monitoring will report them as states the calibration never heard"))
        order = np.argsort(-self.shares)
        for rank, i in enumerate(order):
            mins = self.shares[i] * self.minutes
            if self.k > 1 and mins < MIN_STATE_MINUTES:
                out.append(("warning", f"state {chr(ord('A') + rank)} was heard for only {mins:.1f} min: too short "
                                       "to set a threshold on; record another 15 min while it is on"))
        return out

    def to_dict(self) -> dict:
        return {"means": np.round(self.means, 6).tolist(), "covs": np.round(self.covs, 8).tolist(),
                "shares": np.round(self.shares, 6).tolist(), "stretches": [int(x) for x in self.stretches],
                "limit": float(self.limit), "minutes": float(self.minutes), "groups": GROUPS, "smooth": SMOOTH,
                "margin": MARGIN, "min_patches": MIN_PATCHES, "describe": self.describe()}

    @classmethod
    def from_dict(cls, d: dict) -> StateModel:
        means = np.asarray(d["means"], np.float64)
        covs = np.asarray(d["covs"], np.float64)
        shares = np.asarray(d["shares"], np.float64)
        k = means.shape[0] if means.ndim == 2 else 0
        if (k < 1 or means.shape != (k, GROUPS) or covs.shape != (k, GROUPS, GROUPS) or shares.shape != (k,)
                or not np.isfinite(means).all() or not np.isfinite(covs).all()
                or not (isinstance(d["limit"], (int, float)) and d["limit"] > 0)):
            raise ValueError(f"a state model needs k >= 1 states of {GROUPS} groups and a positive limit")
        return cls(means, covs, shares, [int(x) for x in d["stretches"]], float(d["limit"]), float(d["minutes"]))


class NoveltyTracker:
    """Novel-state events patch by patch (what monitoring runs): ``update(band_levels_row)`` is True when an event
    starts; ``active`` while the site sounds unlike any state the calibration heard."""

    def __init__(self, model: StateModel):
        self.model = model
        self.recent: deque[np.ndarray] = deque(maxlen=SMOOTH)
        self.run = 0
        self.active = False
        self.feats: np.ndarray | None = None

    def update(self, band_levels_row: np.ndarray) -> bool:
        """Add one patch's band levels ``[n_mels]``; True when a novel-state event starts here."""
        return self.update_groups(group_levels(np.asarray(band_levels_row)[None, :])[0])

    def update_groups(self, groups_row: np.ndarray) -> bool:
        """Add one patch's group levels ``[GROUPS]`` (:func:`group_levels`: what the score log keeps, so that a
        restarted monitor replays them); True when a novel-state event starts here."""
        self.recent.append(np.asarray(groups_row, np.float64))
        self.feats = np.mean(self.recent, axis=0)
        d, _ = self.model.distance(self.feats)
        self.run = self.run + 1 if d[0] > self.model.limit else 0
        now = self.run >= MIN_PATCHES
        onset = now and not self.active
        self.active = now
        return onset


def fit_states(band_levels: np.ndarray, patch_seconds: float, seed: int = 0) -> StateModel:
    """The states of a calibration recording's band levels ([n, n_mels], in recording order).

    Raises:
        ValueError: fewer than ``2·SMOOTH`` patches.
    """
    from sklearn.mixture import GaussianMixture

    lv = np.asarray(band_levels, np.float64)
    if lv.shape[0] < 2 * SMOOTH:
        raise ValueError(f"need at least {2 * SMOOTH} patches to find states, got {lv.shape[0]}")
    f = smooth(group_levels(lv))[SMOOTH:]
    n_eff = max(f.shape[0] / SMOOTH, 1.0)
    fits = {}
    for k in range(1, MAX_STATES + 1):
        if k > 1 and n_eff < 5 * k * GROUPS:
            break
        gm = GaussianMixture(k, covariance_type="full", random_state=seed, n_init=2, reg_covar=1e-4).fit(f)
        p = k * (GROUPS + GROUPS * (GROUPS + 1) / 2) + k - 1
        fits[k] = (-2.0 * gm.score(f) * n_eff + p * np.log(n_eff), gm)
    gm = fits[min(fits, key=lambda k: fits[k][0])][1]
    means, covs, w = _merge(gm.means_, gm.covariances_, gm.weights_, MERGE_DB / DB)
    means, covs, w = _absorb_transitions(means, covs, w)
    minutes = lv.shape[0] * patch_seconds / 60.0
    model = StateModel(means, covs, w, [1] * len(w), np.inf, minutes)
    d, lab = model.distance(f)
    model.shares = np.bincount(lab, minlength=model.k) / lab.size
    model.stretches = [_stretches(lab == i) for i in range(model.k)]
    model.limit = float(np.quantile(d, QUANTILE) * MARGIN)
    return model


def _pool(means, covs, w, i, j):
    """Components i and j as one (moment matching), at index i; j removed."""
    wi, wj = w[i], w[j]
    m = (wi * means[i] + wj * means[j]) / (wi + wj)
    c = (wi * (covs[i] + np.outer(means[i] - m, means[i] - m))
         + wj * (covs[j] + np.outer(means[j] - m, means[j] - m))) / (wi + wj)
    means[i], covs[i], w[i] = m, c, wi + wj
    del means[j], covs[j], w[j]


def _absorb_transitions(means, covs, w):
    means, covs, w = list(means), list(covs), list(w)
    while len(w) > 1 and min(w) < MIN_SHARE * sum(w):
        j = int(np.argmin(w))
        others = [i for i in range(len(w)) if i != j]
        i = min(others, key=lambda i: float(np.sum((means[i] - means[j]) ** 2)))
        _pool(means, covs, w, i, j)
    return np.array(means), np.array(covs), np.array(w)


def _merge(means, covs, w, tol):
    means, covs, w = list(means), list(covs), list(w)
    merged = True
    while merged and len(means) > 1:
        merged = False
        for i in range(len(means)):
            for j in range(i + 1, len(means)):
                if np.all(np.abs(means[i] - means[j]) < tol):
                    _pool(means, covs, w, i, j)
                    merged = True
                    break
            if merged:
                break
    return np.array(means), np.array(covs), np.array(w)


def _stretches(mask: np.ndarray) -> int:
    """How many separate stretches of at least SMOOTH patches a state holds (shorter flickers do not count)."""
    d = np.diff(np.r_[0, mask.astype(int), 0])
    lengths = np.flatnonzero(d == -1) - np.flatnonzero(d == 1)
    return int(max(1, np.sum(lengths >= SMOOTH))) if mask.any() else 0
