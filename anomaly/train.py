"""Training the autoencoder on normal audio only.

Data: one log-mel frame sequence ``[frames, n_mels]`` per recording. Training draws random 96-frame crops from the
training part of every recording (the time-shift augmentation), validation uses fixed non-overlapping patches of a
held-out part, and early stopping keeps the weights of the best validation epoch.

Augmentation (each switchable in :class:`TrainConfig`; applied to the network input only, the target stays clean, so
masks and noise make it a denoising autoencoder):
  * time shift: random crop offsets instead of a fixed patch grid;
  * gain: a random level change of ±``gain_db`` (an additive constant on the log-mel);
  * noise: Gaussian noise of ``noise_std`` on the normalised input;
  * SpecAugment-style masks: one time mask of up to ``time_mask`` frames and one frequency mask of up to
    ``freq_mask`` mel bins, set to the normalised mean (0).

Objective: with ``mask_frames`` > 0 (e.g. 24; the default 0 is the plain autoencoder) the network is trained to
*interpolate*: a block of ``mask_frames`` frames at a random offset is set to 0 (the normalised mean) in the input
and the loss is the MSE on that block only (IDNN-style; an identity mapping cannot solve it, so the model must learn
the machine's temporal structure). Validation and scoring hide each block of the fixed grid ``0, mask_frames,
2 * mask_frames, ...`` in turn (``patch_frames / mask_frames`` forward passes per patch) and keep the error of the
hidden block (:func:`masked_error_maps`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from anomaly.errors import DataError
from anomaly.model import ArchConfig, ConvAutoencoder
from anomaly.score import check_kind


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (defaults are what ``humwatch train`` uses)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    samples_per_epoch: int = 2048
    val_fraction: float = 0.15
    patience: int = 8
    seed: int = 0
    threads: int = 2
    time_shift: bool = True
    gain_db: float = 3.0
    noise_std: float = 0.05
    spec_masks: bool = True
    time_mask: int = 8
    freq_mask: int = 6
    mask_frames: int = 0  # interpolation objective (e.g. 24; 0 = plain autoencoder); must divide the patch length
    score: str = "mse"  # "mse" | "gaussian": Mahalanobis distance of the log band errors (see AutoencoderDetector)

    def __post_init__(self) -> None:
        check_kind(self.score)
        if self.mask_frames < 0:
            raise DataError(f"mask_frames must be >= 0, got {self.mask_frames}")

    def to_dict(self) -> dict:
        return asdict(self)

    def without_augmentation(self) -> TrainConfig:
        return TrainConfig(**{**self.to_dict(), "time_shift": False, "gain_db": 0.0, "noise_std": 0.0,
                              "spec_masks": False})


@dataclass
class Split:
    """Training frame sequences and validation patches."""

    train: list[np.ndarray]
    val: np.ndarray  # [n, T, M]
    how: str
    train_index: list[int] = field(default_factory=list)  # which input recording each training sequence comes from


def split_recordings(recordings: Sequence[np.ndarray], patch_frames: int, val_fraction: float,
                     seed: int) -> Split:
    """Hold out whole recordings when there are enough, else the tail of each recording.

    Raises:
        DataError: when there is too little audio for one training and one validation patch.
    """
    kept = [i for i, r in enumerate(recordings) if r.shape[0] >= patch_frames]
    recs = [recordings[i] for i in kept]
    if not recs:
        raise DataError(f"no recording holds one whole patch ({patch_frames} frames)")
    rng = np.random.default_rng(seed)
    n_val = int(round(len(recs) * val_fraction))
    if len(recs) >= 5 and n_val >= 1:
        order = rng.permutation(len(recs))
        val_idx = set(order[:n_val].tolist())
        train = [r for i, r in enumerate(recs) if i not in val_idx]
        train_index = [kept[i] for i in range(len(recs)) if i not in val_idx]
        val_recs = [r for i, r in enumerate(recs) if i in val_idx]
        how = f"{len(val_recs)} of {len(recs)} recordings held out"
    else:
        train, val_recs, train_index = [], [], []
        for i, r in zip(kept, recs, strict=True):
            cut = int(r.shape[0] * (1 - val_fraction))
            if cut >= patch_frames and r.shape[0] - cut >= patch_frames:
                train.append(r[:cut])
                val_recs.append(r[cut:])
            else:
                train.append(r)
            train_index.append(i)
        how = f"last {val_fraction:.0%} of each recording held out"
        if not val_recs:
            need = math.ceil(max(patch_frames / val_fraction, patch_frames / (1 - val_fraction))) + 1
            raise DataError(f"too little normal audio to hold out a validation part: need at least "
                            f"{need * 0.01:.2f} s ({need} frames at a 10 ms hop) per recording, or 5 or more "
                            "recordings")
    val = np.concatenate([_grid(r, patch_frames) for r in val_recs])
    return Split(train, val, how, train_index)


def _grid(frames: np.ndarray, patch_frames: int) -> np.ndarray:
    n = frames.shape[0] // patch_frames
    return frames[: n * patch_frames].reshape(n, patch_frames, frames.shape[1])


def state_weights(states: Sequence[str], lengths: Sequence[float]) -> np.ndarray:
    """Sampling weights that give every operating state the same share of the training crops (within a state, in
    proportion to length): ``lengths[i] / (total length of state i's recordings)``, normalised to sum 1."""
    states, lengths = np.asarray(states), np.asarray(lengths, float)
    total = {s: lengths[states == s].sum() for s in set(states.tolist())}
    w = lengths / np.array([total[s] for s in states.tolist()])
    return w / w.sum()


class _Sampler:
    """Draws augmented training batches from frame sequences (all state from one seeded Generator).

    ``states`` (one label per training sequence, optional): crops are drawn so that every state gets the same share
    (:func:`state_weights`) instead of in proportion to each state's amount of audio."""

    def __init__(self, train: list[np.ndarray], patch_frames: int, cfg: TrainConfig, rng: np.random.Generator,
                 states: Sequence[str] | None = None):
        self.train, self.T, self.cfg, self.rng = train, patch_frames, cfg, rng
        lengths = np.array([r.shape[0] - patch_frames + 1 for r in train], float)
        if cfg.time_shift:
            self.p = lengths / lengths.sum() if states is None else state_weights(states, lengths)
        elif states is not None:
            grids = [_grid(r, patch_frames) for r in train]
            self.grid = np.concatenate(grids)
            self.grid_p = state_weights([s for s, g in zip(states, grids, strict=True) for _ in range(len(g))],
                                        np.ones(len(self.grid)))
        else:
            self.grid = np.concatenate([_grid(r, patch_frames) for r in train])

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng, T = self.cfg, self.rng, self.T
        if cfg.time_shift:
            which = rng.choice(len(self.train), size=n, p=self.p)
            x = np.stack([self.train[i][o: o + T] for i, o in
                          ((i, rng.integers(0, self.train[i].shape[0] - T + 1)) for i in which)])
        elif getattr(self, "grid_p", None) is not None:
            x = self.grid[rng.choice(len(self.grid), size=n, p=self.grid_p)]
        else:
            x = self.grid[rng.integers(0, len(self.grid), size=n)]
        target = x.copy()
        x = x.copy()
        if cfg.gain_db > 0:
            x += (rng.uniform(-cfg.gain_db, cfg.gain_db, size=(n, 1, 1)) * math.log(10) / 20).astype(np.float32)
            target = x.copy()  # a level change is not an anomaly to reconstruct away: input and target move together
        if cfg.noise_std > 0:
            x += rng.normal(0, cfg.noise_std, size=x.shape).astype(np.float32)
        if cfg.spec_masks:
            spec_masks_(x, rng, cfg.time_mask, cfg.freq_mask)
        weight = np.ones((n, T, 1), np.float32)
        if cfg.mask_frames:  # hide one block per patch; the loss is taken on that block only
            weight[:] = 0.0
            for k, t0 in enumerate(rng.integers(0, T - cfg.mask_frames + 1, size=n)):
                x[k, t0: t0 + cfg.mask_frames] = 0.0
                weight[k, t0: t0 + cfg.mask_frames] = 1.0
        return x, target, weight


def spec_masks_(x, rng: np.random.Generator, time_mask: int, freq_mask: int) -> None:
    """SpecAugment in place: per patch one time mask of up to ``time_mask`` frames and one frequency mask of up to
    ``freq_mask`` bands, set to 0 (the normalised mean). ``x``: ``[n, ..., T, M]`` numpy array or tensor."""
    T, M = x.shape[-2], x.shape[-1]
    for k in range(x.shape[0]):
        t0, tw = rng.integers(0, T), rng.integers(0, time_mask + 1)
        f0, fw = rng.integers(0, M), rng.integers(0, freq_mask + 1)
        x[k, ..., t0: t0 + tw, :] = 0.0
        x[k, ..., f0: f0 + fw] = 0.0


def mask_positions(patch_frames: int, mask_frames: int) -> list[int] | None:
    """Start frames of the scoring grid of hidden blocks (``None`` for the plain autoencoder)."""
    if not mask_frames:
        return None
    if patch_frames % mask_frames:
        raise ValueError(f"mask_frames {mask_frames} does not divide the patch length {patch_frames}")
    return list(range(0, patch_frames, mask_frames))


def assemble_passes(run: Callable[[np.ndarray], np.ndarray], Xn: np.ndarray, mask_frames: int) -> np.ndarray:
    """The output the score compares with ``Xn``, for any runtime of the network (PyTorch, ONNX, TFLite).

    Args:
        run: the network on normalised patches ``[n, T, M]`` -> outputs ``[n, T, M]``.
        Xn: normalised patches ``[n, T, M]``.
        mask_frames: 0: one pass, ``run(Xn)``. Else, for every block of the grid, the block is set to 0 (the
            normalised mean; it quantises to an int8 model's input zero point exactly) and ``run``'s output on that
            block is kept: the interpolations stitched together, as :func:`masked_error_maps` scores them.
    """
    positions = mask_positions(Xn.shape[1], mask_frames)
    if positions is None or not len(Xn):
        return run(Xn)
    out = np.empty(Xn.shape, np.float32)
    for t0 in positions:
        xm = np.array(Xn, np.float32, copy=True)
        xm[:, t0: t0 + mask_frames] = 0.0
        out[:, t0: t0 + mask_frames] = run(xm)[:, t0: t0 + mask_frames]
    return out


@torch.no_grad()
def masked_error_maps(model: nn.Module, x: torch.Tensor, mask_frames: int) -> torch.Tensor:
    """Squared error maps ``[B, T, M]`` of normalised patches ``x [B, 1, T, M]``: the plain reconstruction error
    for ``mask_frames = 0``, else, for every block of the grid, the error of that block when it is hidden."""
    positions = mask_positions(x.shape[-2], mask_frames)
    if positions is None:
        return (model(x) - x).square_().squeeze(1)
    out = torch.empty(x.shape[0], x.shape[-2], x.shape[-1])
    for t0 in positions:
        xm = x.clone()
        xm[..., t0: t0 + mask_frames, :] = 0.0
        out[:, t0: t0 + mask_frames] = (model(xm) - x).square_().squeeze(1)[:, t0: t0 + mask_frames]
    return out


def train_autoencoder(
    split: Split,
    arch: ArchConfig,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
    states: Sequence[str] | None = None,
) -> tuple[ConvAutoencoder, dict]:
    """Train on normalised frames; return the best model (by validation loss) and the training history.

    Args:
        split: normalised training frame sequences and validation patches.
        on_epoch: called as ``on_epoch(epoch, train_loss, val_loss)``.
        states: one operating-state label per training sequence of ``split`` (optional): state-balanced sampling.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        mask_positions(arch.patch_frames, cfg.mask_frames)  # fail early on a bad mask_frames
        model = ConvAutoencoder(arch)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = max(1, cfg.samples_per_epoch // cfg.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs,
                                                    pct_start=0.15)
        sampler = _Sampler(split.train, arch.patch_frames, cfg, rng, states)
        val = torch.from_numpy(split.val).unsqueeze(1)
        best, best_state, best_epoch, bad = math.inf, None, 0, 0
        history = {"train_loss": [], "val_loss": []}
        t0 = time.time()
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            tot = 0.0
            for _ in range(steps):
                x, y, w = (torch.from_numpy(a).unsqueeze(1) for a in sampler.batch(cfg.batch_size))
                opt.zero_grad(set_to_none=True)
                loss = ((model(x) - y).square() * w).sum() / (w.sum() * y.shape[-1])
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item()
            model.eval()
            with torch.no_grad():
                v = float(torch.cat([masked_error_maps(model, b, cfg.mask_frames) for b in val.split(256)]).mean())
            tl = tot / steps
            history["train_loss"].append(tl)
            history["val_loss"].append(v)
            if on_epoch:
                on_epoch(epoch, tl, v)
            if v < best - 1e-6:
                best, best_state, best_epoch, bad = v, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        model.load_state_dict(best_state)
        model.eval()
        history.update(best_epoch=best_epoch, best_val_loss=best, epochs_run=epoch,
                       train_seconds=round(time.time() - t0, 2))
        return model, history
    finally:
        torch.set_num_threads(prev_threads)


STILL_IMPROVING = 0.005  # a validation loss still falling by this share over the last epochs is still improving


def stopping_advice(history: dict, max_epochs: int, patience: int, window: int = 3) -> str:
    """One sentence on how training ended and whether more epochs would help (for ``train`` and ``classify train``).

    ``history``: ``val_loss`` per epoch, ``best_epoch``, ``epochs_run``. Early stopping ended it (no gain for
    ``patience`` epochs): more epochs would not help. The epoch limit ended it with the validation loss still falling
    (best at the last epoch, down by at least ``STILL_IMPROVING`` over the last ``window`` epochs): they would.
    """
    val = [float(v) for v in history.get("val_loss", [])]
    run, best = int(history.get("epochs_run", len(val))), int(history.get("best_epoch", 0))
    if not val:
        return ""
    if run < max_epochs:
        return (f"stopped early at epoch {run}: the validation loss had not improved for {patience} epochs since "
                f"epoch {best}, so more epochs would not help")
    if len(val) < 2:
        return (f"reached the epoch limit {run} after a single epoch, with no earlier validation loss to compare; "
                f"more epochs will likely help: try --epochs {max(2 * run, 10)}")
    k = min(window, len(val) - 1)
    gain = (val[-1 - k] - min(val[-k:])) / abs(val[-1 - k]) if k > 0 and val[-1 - k] else 0.0
    if best >= run - 1 and gain >= STILL_IMPROVING:
        return (f"still improving at epoch {run} (validation loss {gain:.1%} lower than {k} epochs before): try "
                f"--epochs {2 * run}")
    return (f"reached the epoch limit {run}; the best validation loss was at epoch {best} and the last epochs gained "
            f"{max(gain, 0):.1%}, so more epochs would likely not help")
