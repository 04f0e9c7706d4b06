"""Fault classifier: which condition(s) a clip shows, with calibrated probabilities and per-class thresholds.

Model: a multi-label head (one sigmoid output per class; ``exclusive=True`` uses a softmax for mutually exclusive
states) on either

* the embedding of a trained autoencoder (``base``): its encoder convolutions and bottleneck ``model_.encode``, with
  the autoencoder's own normalisation; frozen by default, or with the last ``finetune_layers`` encoder blocks (and the
  bottleneck layer) trained at a low learning rate (``finetune_lr``, 1e-5…1e-4), or
* a small CNN trained from scratch (no base): 4 × [conv 3×3 stride 2 → BN → ReLU], mean over time, a linear head, or
* YAMNet's 1024-d embeddings (``yamnet``, a :class:`~anomaly.yamnet.YamnetEmbedder`, frozen): computed once per
  patch before training (grid patches, plus ``yamnet_shifts`` time-shifted crops of each training clip), standardised
  with the training mean/std, then dropout → ``hidden`` → ReLU → one logit per class.

Training draws random 96-frame crops of the training clips (time shift) and augments them with a speed/pitch
perturbation (the log-mel resampled along time and along frequency by a factor in 1 ± ``stretch``), a gain change,
added Gaussian noise and SpecAugment time/frequency masks. The YAMNet route keeps only the time shift (the fixed
offsets) and adds Gaussian noise (``noise_std``) to the standardised embeddings.

Class imbalance is handled by ``pos_weight`` in the BCE loss: for each class, negatives / positives among the
training clips (class weights ∝ 1 / frequency for softmax).

After training on a stratified by-file split, one temperature is fitted by LBFGS on the validation NLL of the clip
probabilities (clip probability = mean of the patch probabilities), and per-class thresholds are chosen on validation:
the lowest threshold whose precision reaches the target with recall > 0, else (a fallback, recorded per class) the
threshold of best F1.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import nn

from anomaly import __version__
from anomaly.atomic import atomic_dir
from anomaly.audio import file_log_mel
from anomaly.errors import DataError, ModelError, one_line
from anomaly.features import DEFAULT_PARAMS, FeatureParams
from anomaly.model import ArchConfig, ConvAutoencoder
from anomaly.modeldir import CLASSIFIER_FORMAT, CLASSIFIER_KIND, check_values, file_sha256, read_checked
from anomaly.train import spec_masks_
from anomaly.yamnet import open_recorded

ECE_BINS = 15


# ---------------------------------------------------------------------------------------------------------------------
# Configuration and networks


@dataclass(frozen=True)
class ClassifyConfig:
    """Training hyper-parameters (defaults are what ``humwatch classify train`` uses)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    steps_per_epoch: int = 40
    val_fraction: float = 0.25
    patience: int = 8
    seed: int = 0
    threads: int = 2
    exclusive: bool = False  # softmax over mutually exclusive states instead of independent sigmoids
    finetune_layers: int = 0  # with a base: encoder blocks (from the end) trained too; 0 = frozen
    finetune_lr: float = 1e-4
    widths: tuple[int, ...] = (16, 32, 64, 64)  # the scratch CNN
    hidden: int = 64  # head hidden units on a base / YAMNet embedding
    yamnet_shifts: int = 4  # YAMNet: crops per training clip at offsets k * 96 / yamnet_shifts frames (k < shifts)
    # augmentation
    time_shift: bool = True
    stretch: float = 0.08
    gain_db: float = 3.0
    noise_std: float = 0.1
    spec_masks: bool = True
    time_mask: int = 12
    freq_mask: int = 6

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not 1e-6 <= self.finetune_lr <= 1e-2:
            raise DataError(f"fine-tuning learning rate must be in [1e-6, 1e-2] (1e-5…1e-4 advised), got "
                            f"{self.finetune_lr:g}")
        if self.finetune_layers < 0:
            raise DataError(f"finetune_layers must be >= 0, got {self.finetune_layers}")
        if not 1 <= self.yamnet_shifts <= 96:
            raise DataError(f"yamnet_shifts must be in [1, 96], got {self.yamnet_shifts}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


class ScratchCNN(nn.Module):
    """Small CNN: ``[B, 1, T, M]`` → embedding ``[B, 2 * widths[-1] * M / 2**len(widths)]`` (mean and max over time;
    the max keeps intermittent events such as arcing)."""

    def __init__(self, widths: Sequence[int], n_mels: int):
        super().__init__()
        layers, c = [], 1
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.out_dim = 2 * c * math.ceil(n_mels / 2 ** len(widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return torch.cat([h.mean(dim=2).flatten(1), h.amax(dim=2).flatten(1)], dim=1)


class AEEmbedding(nn.Module):
    """The encoder and bottleneck of a :class:`~anomaly.model.ConvAutoencoder` (its ``encode``)."""

    def __init__(self, ae: nn.Module):
        super().__init__()
        self.encoder = copy.deepcopy(ae.encoder)
        self.to_z = copy.deepcopy(ae.to_z)
        self.out_dim = self.to_z.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_z(self.encoder(x).flatten(1))

    def blocks(self) -> list[nn.Sequential]:
        m = list(self.encoder)
        return [nn.Sequential(*m[i:i + 3]) for i in range(0, len(m), 3)]


class EmbeddingInput(nn.Module):
    """The backbone of the YAMNet route: the (standardised) embeddings are computed outside, once per patch, and
    come in as they are, ``[B, dim]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ClassifierNet(nn.Module):
    """Backbone + head; ``forward`` gives logits ``[B, n_classes]``."""

    def __init__(self, backbone: nn.Module, n_classes: int, hidden: int = 0, dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        if hidden:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.ReLU(),
                                      nn.Linear(hidden, n_classes))
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _build_net(arch: dict, n_classes: int, ae: nn.Module | None = None) -> ClassifierNet:
    if arch["backbone"] == "ae":
        if ae is None:
            ae = ConvAutoencoder(ArchConfig.from_dict(arch["ae"]))
        return ClassifierNet(AEEmbedding(ae), n_classes, hidden=arch["hidden"])
    if arch["backbone"] == "yamnet":
        return ClassifierNet(EmbeddingInput(arch["embedding_dim"]), n_classes, hidden=arch["hidden"])
    return ClassifierNet(ScratchCNN(arch["widths"], arch["n_mels"]), n_classes, hidden=0)


# ---------------------------------------------------------------------------------------------------------------------
# Data: splitting and augmented batches


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


# ---------------------------------------------------------------------------------------------------------------------
# Calibration and thresholds


def expected_calibration_error(probs: np.ndarray, Y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over all class-probabilities: ``sum_b |B|/N * |mean(p in b) - mean(y in b)|`` on ``bins`` equal bins."""
    p = np.asarray(probs, float).ravel()
    y = np.asarray(Y, float).ravel()
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.sum() / p.size * abs(p[m].mean() - y[m].mean())
    return float(ece)


def _clip_probs_t(patch_logits: list[torch.Tensor], T: torch.Tensor, exclusive: bool) -> torch.Tensor:
    act = (lambda z: torch.softmax(z, dim=1)) if exclusive else torch.sigmoid
    return torch.stack([act(z / T).mean(0) for z in patch_logits])


def clip_probabilities(patch_logits: list[np.ndarray], temperature: float = 1.0, exclusive: bool = False) -> np.ndarray:
    """Clip probabilities ``[n_clips, n_classes]``: the mean of the patch probabilities at ``temperature``."""
    with torch.no_grad():
        return _clip_probs_t([torch.as_tensor(z, dtype=torch.float64) for z in patch_logits],
                             torch.tensor(float(temperature), dtype=torch.float64), exclusive).numpy()


def _nll(P: torch.Tensor, Y: torch.Tensor, exclusive: bool) -> torch.Tensor:
    P = P.clamp(1e-7, 1 - 1e-7)
    if exclusive:
        return -(Y * P.log()).sum(1).mean()
    return -(Y * P.log() + (1 - Y) * (1 - P).log()).mean()


def fit_temperature(patch_logits: list[np.ndarray], Y: np.ndarray, exclusive: bool = False) -> float:
    """One temperature minimising the NLL of the clip probabilities (LBFGS on log T, T in [0.05, 20])."""
    zs = [torch.as_tensor(z, dtype=torch.float64) for z in patch_logits]
    y = torch.as_tensor(Y, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _nll(_clip_probs_t(zs, log_t.clamp(math.log(0.05), math.log(20)).exp(), exclusive), y, exclusive)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().clamp(math.log(0.05), math.log(20)).exp())
    with torch.no_grad():  # never worse than no scaling on the data it was fitted on
        nll_t = _nll(_clip_probs_t(zs, torch.tensor(t, dtype=torch.float64), exclusive), y, exclusive)
        nll_1 = _nll(_clip_probs_t(zs, torch.tensor(1.0, dtype=torch.float64), exclusive), y, exclusive)
    return t if nll_t <= nll_1 else 1.0


def _pr_at(p: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float]:
    pred = p >= t
    tp = int((pred & (y == 1)).sum())
    prec = tp / pred.sum() if pred.sum() else float("nan")
    rec = tp / (y == 1).sum() if (y == 1).sum() else float("nan")
    return float(prec), float(rec)


def choose_threshold(p: np.ndarray, y: np.ndarray, target: float) -> dict:
    """Per-class threshold on validation scores ``p`` with labels ``y``.

    The lowest threshold whose precision ≥ ``target`` with recall > 0 sets the recall to aim for; among the
    thresholds with that same recall (and precision ≥ target) the highest is taken, since going lower only admits
    more negatives. Without any such threshold, the best-F1 one is returned with ``fallback=True``. The value sits
    halfway between the chosen validation score and the next lower one: the same validation precision and recall,
    with a margin on both sides instead of a boundary exactly on the weakest positive.
    """
    p, y = np.asarray(p, float), np.asarray(y).astype(int)
    cands = np.unique(p)
    if not len(cands) or not y.any():
        return {"threshold": 0.5, "val_precision": float("nan"), "val_recall": float("nan"), "fallback": True}
    best_f1 = (-1.0, 0, float("nan"), float("nan"))
    ok: list[tuple[int, float, float]] = []
    for i, t in enumerate(cands):
        prec, rec = _pr_at(p, y, t)
        if not (rec > 0):
            continue
        if prec >= target:
            ok.append((i, prec, rec))
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        if f1 > best_f1[0]:
            best_f1 = (f1, i, prec, rec)
    if ok:
        r_lowest = ok[0][2]  # recall at the lowest threshold that meets the target (recall falls as t rises)
        i, prec, rec = max((o for o in ok if o[2] == r_lowest), key=lambda o: o[0])
        fb = False
    else:
        _, i, prec, rec = best_f1
        fb = True
    t = float(cands[i] if i == 0 else (cands[i] + cands[i - 1]) / 2)
    return {"threshold": t, "val_precision": prec, "val_recall": rec, "fallback": fb}


# ---------------------------------------------------------------------------------------------------------------------
# The classifier


class FaultClassifier:
    """Train with :meth:`fit`, use with :meth:`predict_clips` / :meth:`predict_file`, persist with :meth:`save`."""

    def __init__(self, classes: Sequence[str], params: FeatureParams = DEFAULT_PARAMS,
                 config: ClassifyConfig | None = None, base=None, base_hash: str | None = None, yamnet=None):
        """
        Args:
            base: a fitted :class:`~anomaly.detectors.AutoencoderDetector`: classify on its encoder embedding.
            yamnet: a :class:`~anomaly.yamnet.YamnetEmbedder`: classify on YAMNet's 1024-d embeddings (frozen).
                Without either, a small CNN is trained from scratch.
        """
        if base is not None and yamnet is not None:
            raise DataError("an autoencoder base (--base) and YAMNet embeddings (--embeddings yamnet) are mutually "
                            "exclusive: choose one backbone")
        self.classes = list(classes)
        self.params = params
        self.config = config or ClassifyConfig()
        self.base, self.base_hash, self.yamnet = base, base_hash, yamnet
        self.logit_offset_ = np.zeros(len(self.classes))

    # -- features -----------------------------------------------------------------------------------------------
    def _norm(self, frames: np.ndarray) -> np.ndarray:
        return ((frames - self.mean_) / self.std_).astype(np.float32)

    @torch.no_grad()
    def logits_of_patches(self, X: np.ndarray) -> np.ndarray:
        """Logits ``[n, n_classes]`` (before temperature) for raw log-mel patches ``X [n, patch_frames, n_mels]``."""
        X = np.asarray(X, np.float32)
        T, M = self.params.patch_frames, self.params.n_mels
        if X.ndim != 3 or X.shape[1:] != (T, M):
            raise DataError(f"expected patches [n, {T}, {M}], got shape {X.shape}")
        if not len(X):
            return np.zeros((0, len(self.classes)))
        if self.arch_["backbone"] == "yamnet":
            return self._logits_of_embeddings(self.yamnet.embed(X))
        self.net_.eval()
        x = torch.from_numpy(self._norm(X)).unsqueeze(1)
        return torch.cat([self.net_(b) for b in x.split(256)]).double().numpy() + self.logit_offset_[None, :]

    @torch.no_grad()
    def _logits_of_embeddings(self, E: np.ndarray) -> np.ndarray:
        """Logits ``[n, n_classes]`` of YAMNet embeddings ``E [n, dim]`` (standardised here)."""
        self.net_.eval()
        x = torch.from_numpy(self._norm(E))
        return torch.cat([self.net_(b) for b in x.split(1024)]).double().numpy() + self.logit_offset_[None, :]

    def patch_logits(self, frames: np.ndarray) -> np.ndarray:
        """Logits ``[n_patches, n_classes]`` (before temperature) for one clip's raw log-mel frames."""
        return self.logits_of_patches(grid_patches(np.asarray(frames, np.float32), self.params.patch_frames))

    def probabilities_of_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated per-patch probabilities ``[n, n_classes]`` from :meth:`logits_of_patches` output."""
        z = np.asarray(logits, np.float64) / self.temperature_
        if self.config.exclusive:
            z = z - z.max(1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))

    def predict_clips(self, recs: Sequence[np.ndarray], calibrated: bool = True) -> np.ndarray:
        """Clip probabilities ``[n, n_classes]`` (mean of patch probabilities) for raw log-mel frame arrays."""
        t = self.temperature_ if calibrated else 1.0
        return clip_probabilities([self.patch_logits(r) for r in recs], t, self.config.exclusive)

    def predict_file(self, path: str | Path) -> np.ndarray:
        return self.predict_clips([file_log_mel(path, self.params)])[0]

    # -- training -----------------------------------------------------------------------------------------------
    def fit(self, recs: Sequence[np.ndarray], Y: np.ndarray, precision: float = 0.9,
            on_epoch: Callable[[int, float, float], None] | None = None,
            on_embed: Callable[[int, int], None] | None = None) -> FaultClassifier:
        """Train on raw log-mel frames of clips ``recs`` with multi-hot labels ``Y``; calibrate and set thresholds.

        Args:
            on_epoch: progress ``(epoch, train_loss, val_loss)``.
            on_embed: progress of the YAMNet embeddings ``(clips done, clips)`` (YAMNet backbone only).
        """
        cfg = self.config
        Y = np.asarray(Y, np.uint8)
        if len(recs) != len(Y) or Y.ndim != 2 or Y.shape[1] != len(self.classes):
            raise DataError(f"labels {Y.shape} do not match {len(recs)} clips and {len(self.classes)} classes")
        if cfg.exclusive and (Y.sum(1) != 1).any():
            raise DataError("exclusive (softmax) classes need exactly one label per clip; some clips have "
                            f"{sorted(set(Y.sum(1).tolist()) - {1})}")
        if not 0 < precision <= 1:
            raise DataError(f"precision target must be in (0, 1], got {precision:g}")
        self.precision_target_ = float(precision)
        tr, va = stratified_split(Y, cfg.val_fraction, cfg.seed, self.classes)
        self.split_ = {"train": int(len(tr)), "val": int(len(va))}
        T = self.params.patch_frames
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        prev = torch.get_num_threads()
        torch.set_num_threads(max(1, cfg.threads))
        try:
            if self.yamnet is not None:
                # YAMNet runs once per patch, before training: the grid patches of every clip, and for training
                # clips also crops at yamnet_shifts time offsets (the time-shift augmentation of this route).
                embs = self._yamnet_embeddings(recs, set(tr.tolist()), on_embed)
                allE = np.concatenate([embs[i] for i in tr])
                self.mean_ = allE.mean(0).astype(np.float32)
                self.std_ = np.maximum(allE.std(0), 1e-6).astype(np.float32)
                self.arch_ = {"backbone": "yamnet", "embedding_dim": int(allE.shape[1]), "hidden": cfg.hidden,
                              "yamnet": self.yamnet.info(), "train_crop_offsets": self._shift_offsets()}
                val_raw = [embs[i] for i in va]  # validation clips: grid patches only
                sampler = _EmbeddingSampler([self._norm(embs[i]) for i in tr], Y[tr], cfg, rng)
                vx = [torch.from_numpy(self._norm(e)) for e in val_raw]
            else:
                if self.base is not None:
                    self.mean_, self.std_ = self.base.mean_.astype(np.float32), self.base.std_.astype(np.float32)
                    self.arch_ = {"backbone": "ae", "ae": self.base.arch.to_dict(), "hidden": cfg.hidden}
                else:
                    allf = np.concatenate([recs[i] for i in tr])
                    self.mean_ = allf.mean(0).astype(np.float32)
                    self.std_ = np.maximum(allf.std(0), 1e-3).astype(np.float32)
                    self.arch_ = {"backbone": "cnn", "widths": list(cfg.widths), "n_mels": self.params.n_mels}
                norm = [self._norm(r) for r in recs]
                sampler = _Sampler([norm[i] for i in tr], Y[tr], T, cfg, rng)
                vx = [torch.from_numpy(grid_patches(norm[i], T)).unsqueeze(1) for i in va]
            self.arch_["n_classes"] = len(self.classes)
            self.arch_["exclusive"] = cfg.exclusive
            self.net_ = _build_net(self.arch_, len(self.classes), self.base.model_ if self.base is not None else None)
            self.history_ = self._train(sampler, vx, Y, tr, va, on_epoch)
        finally:
            torch.set_num_threads(prev)

        # calibration and thresholds on the validation clips
        if self.yamnet is not None:
            zs = [self._logits_of_embeddings(e) for e in val_raw]
        else:
            zs = [self.patch_logits(recs[i]) for i in va]
        Yv = Y[va]
        p1 = clip_probabilities(zs, 1.0, cfg.exclusive)
        self.temperature_ = fit_temperature(zs, Yv, cfg.exclusive)
        pt = clip_probabilities(zs, self.temperature_, cfg.exclusive)
        yv = torch.as_tensor(Yv, dtype=torch.float64)
        self.ece_ = {"val_before": expected_calibration_error(p1, Yv),
                     "val_after": expected_calibration_error(pt, Yv), "bins": ECE_BINS,
                     "val_nll_before": float(_nll(torch.from_numpy(p1), yv, cfg.exclusive)),
                     "val_nll_after": float(_nll(torch.from_numpy(pt), yv, cfg.exclusive))}
        self.thresholds_ = {}
        for k, c in enumerate(self.classes):
            self.thresholds_[c] = choose_threshold(pt[:, k], Yv[:, k], precision)
        return self

    def _shift_offsets(self) -> list[int]:
        T, k = self.params.patch_frames, self.config.yamnet_shifts
        return [int(round(i * T / k)) for i in range(k)]

    def _yamnet_embeddings(self, recs, train_idx: set[int], on_embed) -> list[np.ndarray]:
        """YAMNet embeddings per clip ``[n_i, dim]``: the grid patches first, then (training clips only) the patches
        of the time-shifted crops."""
        T, out = self.params.patch_frames, []
        for i, r in enumerate(recs):
            r = np.asarray(r, np.float32)
            P = shifted_patches(r, T, self.config.yamnet_shifts) if i in train_idx else grid_patches(r, T)
            out.append(self.yamnet.embed(P))
            if on_embed:
                on_embed(i + 1, len(recs))
        return out

    def _train(self, sampler, vx: list[torch.Tensor], Y, tr, va, on_epoch) -> dict:
        """Train ``net_`` on batches from ``sampler``; early stopping on the loss of the validation patches ``vx``
        (one tensor per validation clip, labelled with its clip's labels)."""
        cfg, net = self.config, self.net_
        head_params = list(net.head.parameters())
        groups = [{"params": head_params, "lr": cfg.lr}]
        frozen: list[nn.Module] = []
        if isinstance(net.backbone, AEEmbedding):
            blocks = net.backbone.blocks()
            k = min(cfg.finetune_layers, len(blocks))
            train_mods = blocks[len(blocks) - k:] + ([net.backbone.to_z] if k > 0 else [])
            frozen = blocks[: len(blocks) - k] + ([] if k > 0 else [net.backbone.to_z])
            for m in frozen:
                for p in m.parameters():
                    p.requires_grad_(False)
            bb = [p for m in train_mods for p in m.parameters()]
            if bb:
                groups.append({"params": bb, "lr": cfg.finetune_lr})
        elif list(net.backbone.parameters()):  # the YAMNet route has no trainable backbone
            groups.append({"params": list(net.backbone.parameters()), "lr": cfg.lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups],
                                                    total_steps=cfg.steps_per_epoch * cfg.epochs, pct_start=0.15)
        Ytr = Y[tr].astype(np.float64)
        if cfg.exclusive:
            freq = Ytr.sum(0).clip(min=1)
            w = torch.tensor(len(Ytr) / (len(freq) * freq), dtype=torch.float32)
            loss_fn = nn.CrossEntropyLoss(weight=w)
            self.pos_weight_ = None
            self.class_weight_ = w.tolist()
            self.logit_offset_ = -np.log(w.numpy().astype(np.float64))  # the same prior correction for softmax

            def loss_of(z, y):
                return loss_fn(z, y.argmax(1))
        else:
            pos = Ytr.sum(0)
            pw = torch.tensor((len(Ytr) - pos) / np.maximum(pos, 1), dtype=torch.float32)
            self.pos_weight_ = pw.tolist()
            # BCE with pos_weight w is minimised by logit = log(w p / (1 - p)): subtracting log w at inference gives
            # back probabilities of the true class frequency (before temperature scaling).
            self.logit_offset_ = -np.log(np.maximum(pw.numpy().astype(np.float64), 1e-6))
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=pw)
            loss_of = loss_fn
        vy = torch.from_numpy(Y[va].astype(np.float32))
        hist = {"train_loss": [], "val_loss": []}
        best, best_state, best_epoch, bad = math.inf, None, 0, 0
        t0 = time.time()
        epoch = 0
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            for m in frozen:
                m.eval()  # frozen BatchNorm keeps its statistics
            tot = 0.0
            for _ in range(cfg.steps_per_epoch):
                x, y = sampler.batch(cfg.batch_size)
                opt.zero_grad(set_to_none=True)
                loss = loss_of(net(x), y)
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item()
            net.eval()
            with torch.no_grad():  # validation loss on patches, labels of their clip
                z = torch.cat([net(b) for b in vx])
                yy = torch.cat([vy[i].expand(len(b), -1) for i, b in enumerate(vx)])
                v = float(loss_of(z, yy))
            tl = tot / cfg.steps_per_epoch
            hist["train_loss"].append(round(tl, 6))
            hist["val_loss"].append(round(v, 6))
            if on_epoch:
                on_epoch(epoch, tl, v)
            if v < best - 1e-6:
                best, best_state, best_epoch, bad = v, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(True)
        hist.update(best_epoch=best_epoch, best_val_loss=round(best, 6), epochs_run=epoch,
                    train_seconds=round(time.time() - t0, 2))
        return hist

    # -- thresholds and persistence ----------------------------------------------------------------------------
    @property
    def threshold_array(self) -> np.ndarray:
        return np.array([self.thresholds_[c]["threshold"] for c in self.classes])

    def fallbacks(self) -> list[str]:
        return [c for c in self.classes if self.thresholds_[c]["fallback"]]

    def meta(self) -> dict:
        return {
            "format_version": CLASSIFIER_FORMAT,
            "humwatch_version": __version__,
            "kind": CLASSIFIER_KIND,
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "classes": self.classes,
            "output": "softmax" if self.config.exclusive else "sigmoid",
            "clip_probability": "mean of patch probabilities",
            "temperature": self.temperature_,
            "ece": self.ece_,
            "precision_target": self.precision_target_,
            "thresholds": self.thresholds_,
            "threshold_fallbacks": self.fallbacks(),
            "feature_params": self.params.to_dict(),
            "feature_params_hash": self.params.hash(),
            "base_model_hash": self.base_hash,
            "normalisation": {"mean": self.mean_.tolist(), "std": self.std_.tolist(),
                              **({"input": "yamnet_embedding"} if self.arch_["backbone"] == "yamnet" else {})},
            "architecture": self.arch_,
            "loss": {**({"pos_weight": self.pos_weight_} if self.pos_weight_ is not None
                        else {"class_weight": self.class_weight_}),
                     "logit_offset": self.logit_offset_.tolist()},
            "split": self.split_,
            "training": {**self.config.to_dict(), **self.history_},
        }

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.json`` + ``weights.pt`` (a plain state dict) atomically."""
        with atomic_dir(directory) as tmp:
            torch.save(self.net_.state_dict(), tmp / "weights.pt")
            meta = self.meta()
            meta["files"] = {"weights.pt": file_sha256(tmp / "weights.pt")}
            meta.update(extra or {})
            (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        return Path(directory)


def load_classifier(directory: str | Path, params: FeatureParams | None = DEFAULT_PARAMS) -> FaultClassifier:
    """Load a model directory written by :meth:`FaultClassifier.save`.

    A YAMNet-backbone classifier re-opens its YAMNet model from the path recorded at training and checks its sha256.

    Raises:
        ModelError: missing, corrupt or not a classifier; its YAMNet model moved, changed or unreadable.
            ParamsMismatchError: other front-end parameters.
    """
    d = Path(directory)
    meta, mp = read_checked(d, "classifier", params)
    try:
        known = set(ClassifyConfig.__dataclass_fields__)
        cfg = ClassifyConfig(**{k: v for k, v in meta.get("training", {}).items() if k in known})
        clf = FaultClassifier(meta["classes"], mp, cfg, base_hash=meta.get("base_model_hash"))
        clf.arch_ = meta["architecture"]
        clf.net_ = _build_net(clf.arch_, len(clf.classes))
        clf.mean_ = np.asarray(meta["normalisation"]["mean"], np.float32)
        clf.std_ = np.asarray(meta["normalisation"]["std"], np.float32)
        clf.temperature_ = float(meta["temperature"])
        clf.thresholds_ = meta["thresholds"]
        clf.ece_ = meta.get("ece", {})
        clf.precision_target_ = float(meta.get("precision_target", 0.9))
        clf.history_ = meta.get("training", {})
        clf.split_ = meta.get("split", {})
        loss = meta.get("loss", {})
        clf.pos_weight_, clf.class_weight_ = loss.get("pos_weight"), loss.get("class_weight")
        clf.logit_offset_ = np.asarray(loss.get("logit_offset", [0.0] * len(clf.classes)), float)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{d / 'model.json'}: incomplete classifier description ({one_line(e)})") from None
    try:
        state = torch.load(d / "weights.pt", weights_only=True, map_location="cpu")
        clf.net_.load_state_dict(state)
    except Exception as e:
        raise ModelError(f"{d / 'weights.pt'}: corrupt or incompatible weights ({one_line(e)})") from None
    check_values(d, "normalisation mean", clf.mean_)
    check_values(d, "normalisation std", clf.std_, positive=True)
    check_values(d, "temperature", [clf.temperature_], positive=True)
    for k, v in state.items():
        if v.is_floating_point():
            check_values(d, f"weight {k}", v.numpy(), where="weights.pt")
    clf.net_.eval()
    if clf.arch_.get("backbone") == "yamnet":
        clf.yamnet = open_recorded(clf.arch_.get("yamnet"), f"classifier {d}")
        if clf.yamnet.dim != clf.arch_.get("embedding_dim"):
            raise ModelError(f"{d}: YAMNet gives {clf.yamnet.dim}-d embeddings, the classifier expects "
                             f"{clf.arch_.get('embedding_dim')}")
    clf.meta_ = meta
    return clf


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_probs(P: np.ndarray, Y: np.ndarray, classes: Sequence[str], thresholds: np.ndarray,
                   precision_target: float | None = None) -> dict:
    """Per-class average precision, mAP, precision/recall at the thresholds, and confusions between classes.

    ``confusions[true][other]``: among clips labelled ``true`` but not ``other``, the share where ``other`` fires.
    mAP is the mean AP over the classes that have at least one positive clip.
    """
    P, Y = np.asarray(P, float), np.asarray(Y).astype(int)
    fired = P >= np.asarray(thresholds)[None, :]
    out: dict = {"n_clips": int(len(Y)), "classes": {}, "confusions": {}}
    aps = []
    chances = []
    for k, c in enumerate(classes):
        y = Y[:, k]
        ap = float(average_precision_score(y, P[:, k])) if y.any() else None
        if ap is not None:
            aps.append(ap)
            chances.append(float(y.mean()))  # an uninformative score's AP is the share of positives
        tp = int((fired[:, k] & (y == 1)).sum())
        n_fired = int(fired[:, k].sum())
        prec = tp / n_fired if n_fired else None
        rec = tp / int(y.sum()) if y.any() else None
        r = {"n_positive": int(y.sum()), "ap": ap, "ap_chance": float(y.mean()) if y.size else None,
             "threshold": float(thresholds[k]), "precision": prec,
             "recall": rec, "n_fired": n_fired}
        if precision_target is not None:
            r["meets_precision_target"] = None if prec is None else bool(prec >= precision_target)
        out["classes"][c] = r
    for k, c in enumerate(classes):
        rows = Y[:, k] == 1
        conf = {}
        for j, o in enumerate(classes):
            if j == k:
                continue
            m = rows & (Y[:, j] == 0)
            if m.any():
                conf[o] = float(fired[m, j].mean())
        out["confusions"][c] = conf
    out["map"] = float(np.mean(aps)) if aps else None
    out["map_chance"] = float(np.mean(chances)) if chances else None
    out["ece"] = expected_calibration_error(P, Y)
    if precision_target is not None:
        out["precision_target"] = precision_target
        out["below_precision_target"] = [c for c, r in out["classes"].items()
                                         if r["meets_precision_target"] is False]
        out["never_fired"] = [c for c, r in out["classes"].items() if r["n_fired"] == 0 and r["n_positive"]]
    return out


def evaluate_classifier(clf: FaultClassifier, recs: Sequence[np.ndarray], Y: np.ndarray,
                        classes: Sequence[str]) -> dict:
    """Evaluate on raw log-mel clips labelled with ``classes`` (mapped onto the model's classes by name).

    Raises:
        DataError: a data class the model does not know.
    """
    unknown = [c for c in classes if c not in clf.classes]
    if unknown:
        raise DataError(f"classes not known to the model: {', '.join(unknown)} (model classes: "
                        f"{', '.join(clf.classes)})")
    Ym = np.zeros((len(Y), len(clf.classes)), np.uint8)
    for j, c in enumerate(classes):
        Ym[:, clf.classes.index(c)] = np.asarray(Y)[:, j]
    zs = [clf.patch_logits(r) for r in recs]
    P1 = clip_probabilities(zs, 1.0, clf.config.exclusive)
    P = clip_probabilities(zs, clf.temperature_, clf.config.exclusive)
    m = evaluate_probs(P, Ym, clf.classes, clf.threshold_array, clf.precision_target_)
    m["ece_uncalibrated"] = expected_calibration_error(P1, Ym)
    m["temperature"] = clf.temperature_
    m["probabilities"] = P
    return m


__all__ = ["ClassifyConfig", "FaultClassifier", "choose_threshold", "clip_probabilities", "evaluate_classifier",
           "evaluate_probs", "expected_calibration_error", "fit_temperature", "load_classifier", "stratified_split"]
