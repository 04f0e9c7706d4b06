"""The classifier's training data: the stratified by-file split, grid and time-shifted patches of a clip, and the
augmented training batches (log-mel crops, or precomputed YAMNet embeddings)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.classify.nets import ClassifyConfig
from anomaly.errors import DataError
from anomaly.train import spec_masks_


def stratified_split(Y: np.ndarray, val_fraction: float, seed: int,
                     classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split clip indices by file, stratified on the label combination; every class keeps ≥ 1 clip on each side.

    Raises:
        DataError: a class with fewer than 2 clips (it cannot be both trained and validated).
    """
    counts = Y.sum(0)
    if (counts < 2).any():
        names = classes or [str(i) for i in range(Y.shape[1])]
        few = ", ".join(f"{names[i]} ({int(counts[i])})" for i in np.nonzero(counts < 2)[0])
        raise DataError(f"each class needs at least 2 clips (one to train on, one to validate); too few: {few}")
    rng = np.random.default_rng(seed)
    keys = ["".join(map(str, r)) for r in Y]
    val: list[int] = []
    for k in sorted(set(keys)):
        idx = np.array([i for i, kk in enumerate(keys) if kk == k])
        rng.shuffle(idx)
        n = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        val += idx[:n].tolist()
    val_mask = np.zeros(len(Y), bool)
    val_mask[val] = True
    # rare combinations of one class may leave it absent on one side: move one clip over
    for c in range(Y.shape[1]):
        pos = np.nonzero(Y[:, c])[0]
        if not val_mask[pos].any():
            val_mask[rng.choice(pos)] = True
        if val_mask[pos].all():
            val_mask[rng.choice(pos)] = False
    return np.nonzero(~val_mask)[0], np.nonzero(val_mask)[0]


def grid_patches(frames: np.ndarray, T: int) -> np.ndarray:
    """Non-overlapping patches ``[n, T, M]`` of one clip (a short clip is padded by repetition to one patch)."""
    if frames.shape[0] < T:
        frames = np.concatenate([frames] * (T // max(1, frames.shape[0]) + 1))[:T]
    n = frames.shape[0] // T
    return frames[: n * T].reshape(n, T, frames.shape[1])


class _Sampler:
    """Augmented training batches from normalised clip frames (all randomness from one seeded Generator)."""

    def __init__(self, recs: list[np.ndarray], Y: np.ndarray, T: int, cfg: ClassifyConfig, rng: np.random.Generator):
        self.recs, self.Y, self.T, self.cfg, self.rng = recs, Y.astype(np.float32), T, cfg, rng
        # sample clips so that every label combination is seen evenly-ish: weight 1/sqrt(frequency of its classes)
        freq = Y.sum(0).clip(min=1)
        w = np.array([1.0 / math.sqrt(freq[r.astype(bool)].mean()) if r.any() else 1.0 for r in Y])
        self.p = w / w.sum()

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, rng, T = self.cfg, self.rng, self.T
        which = rng.choice(len(self.recs), size=n, p=self.p)
        out = []
        for i in which:
            r = self.recs[i]
            f = 1.0 + rng.uniform(-cfg.stretch, cfg.stretch) if cfg.stretch > 0 else 1.0
            L = min(r.shape[0], max(8, int(round(T * f))))  # speed: take T*f frames, resample to T
            if r.shape[0] < L:
                r = np.concatenate([r] * (L // r.shape[0] + 1))
            o = int(rng.integers(0, r.shape[0] - L + 1)) if cfg.time_shift else 0
            crop = torch.from_numpy(r[o:o + L]).T.unsqueeze(0)  # [1, M, L]
            if L != T:
                crop = F.interpolate(crop, size=T, mode="linear", align_corners=False)
            x = crop.squeeze(0).T  # [T, M]
            if cfg.stretch > 0:  # pitch: resample the mel axis by a factor, anchored at the lowest band
                g = 1.0 + rng.uniform(-cfg.stretch, cfg.stretch)
                M = x.shape[1]
                src = torch.clamp(torch.arange(M, dtype=torch.float32) / g, 0, M - 1)
                lo = src.floor().long()
                hi = torch.clamp(lo + 1, max=M - 1)
                w = src - lo
                x = x[:, lo] * (1 - w) + x[:, hi] * w
            out.append(x)
        x = torch.stack(out).unsqueeze(1).contiguous()  # [n, 1, T, M]
        if cfg.gain_db > 0:  # normalised domain: an approximate shift; the std is ~1 per band
            x = x + torch.from_numpy(rng.uniform(-1, 1, (n, 1, 1, 1)).astype(np.float32)) * (
                cfg.gain_db * math.log(10) / 20)
        if cfg.noise_std > 0:
            x = x + torch.from_numpy(rng.normal(0, cfg.noise_std, x.shape).astype(np.float32))
        if cfg.spec_masks:
            spec_masks_(x, rng, cfg.time_mask, cfg.freq_mask)
        return x, torch.from_numpy(self.Y[which])


class _EmbeddingSampler:
    """Training batches of precomputed, standardised patch embeddings (the YAMNet route): a clip drawn with the same
    1/sqrt(frequency) weights as :class:`_Sampler`, then one of its patch embeddings (any grid patch of any of its
    time-shifted crops), plus Gaussian noise of ``noise_std`` on the standardised embedding."""

    def __init__(self, embs: list[np.ndarray], Y: np.ndarray, cfg: ClassifyConfig, rng: np.random.Generator):
        self.embs, self.Y, self.cfg, self.rng = embs, Y.astype(np.float32), cfg, rng
        freq = Y.sum(0).clip(min=1)
        w = np.array([1.0 / math.sqrt(freq[r.astype(bool)].mean()) if r.any() else 1.0 for r in Y])
        self.p = w / w.sum()

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        which = self.rng.choice(len(self.embs), size=n, p=self.p)
        x = np.stack([self.embs[i][self.rng.integers(len(self.embs[i]))] for i in which])
        if self.cfg.noise_std > 0:
            x = x + self.rng.normal(0, self.cfg.noise_std, x.shape).astype(np.float32)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(self.Y[which])


def shifted_patches(frames: np.ndarray, T: int, shifts: int) -> np.ndarray:
    """Grid patches of a clip started at ``shifts`` offsets ``k * T / shifts`` frames (k = 0 … shifts-1), stacked
    ``[n, T, M]``; offsets that leave less than one patch are skipped (offset 0 is :func:`grid_patches`)."""
    out = [grid_patches(frames, T)]
    for k in range(1, shifts):
        o = int(round(k * T / shifts))
        if frames.shape[0] - o >= T:
            out.append(grid_patches(frames[o:], T))
    return np.concatenate(out)
