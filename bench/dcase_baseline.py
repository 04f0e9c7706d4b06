"""The DCASE 2020 Challenge Task 2 baseline autoencoder, re-implemented in PyTorch for benchmarking.

Source: Y. Koizumi, Y. Kawaguchi, K. Imoto et al., "Description and discussion on DCASE2020 Challenge Task 2:
Unsupervised anomalous sound detection for machine condition monitoring", DCASE Workshop 2020, and its public
Keras reference code (Hitachi, Ltd.; the ``dcase2020_task2_baseline`` repository on GitHub: ``common.py``,
``keras_model.py``, ``baseline.yaml``, ``00_train.py``, ``01_test.py``). This file is written from that description,
not copied from the Keras code.

What the baseline does, and what is reproduced here:

* Features: log-mel power spectrogram from ``librosa.feature.melspectrogram`` with n_fft 1024, hop 512, 128 mel
  bins, power 2.0, the file's own sample rate, Slaney mel filters up to Nyquist and a centred STFT, converted with
  ``20 / power * log10(mel + eps)`` as the reference ``file_to_vector_array`` does (with power 2 that is
  ``10 * log10``: decibels of power), eps being the float64 machine epsilon. No normalisation of any kind.
* Vectors: 5 consecutive frames concatenated frame after frame (all 128 bins of frame t, then of frame t+1, ...)
  into a 640-d vector; a clip of F frames gives F - 4 vectors (hop of one frame).
* Network: dense 640 → 128 → 128 → 128 → 128 → 8 → 128 → 128 → 128 → 128 → 640, every hidden layer
  Dense + BatchNorm + ReLU, linear output. Initialisation and BatchNorm settings follow Keras' defaults
  (Glorot-uniform kernels, zero biases, BN momentum 0.99 i.e. PyTorch 0.01, BN epsilon 1e-3).
* Training: MSE loss, Adam (lr 1e-3, Keras' epsilon 1e-7), batch 512, 100 epochs, ``validation_split=0.1`` and
  ``shuffle=True`` as Keras applies them: the *last* 10 % of the concatenated training vectors (i.e. of the last
  files in sorted order) are held out before shuffling and only used to report a validation loss; the remaining
  vectors are reshuffled every epoch, the last batch of an epoch may be short, and the weights after the final
  epoch are kept (the baseline has no early stopping or checkpoint selection).
* Score: for each clip, the mean over its vectors of the per-vector mean squared reconstruction error.

Differences, all immaterial for 16 kHz mono clips: audio is read with soundfile (librosa 0.6 used audioread; both
give int16 / 32768 as float32), multi-channel files use channel 0 (the baseline's ``demux_wav``), the STFT is padded
with ``pad_mode="reflect"`` (the default of librosa 0.6.0, which the baseline pinned; librosa >= 0.10 pads with
zeros), and PyTorch's Adam places epsilon slightly differently from Keras 2.1's. The baseline's published pAUC
numbers come from ``sklearn.metrics.roc_auc_score(max_fpr=0.1)``, which applies the McClish correction; the
benchmark instead scores both methods with :func:`anomaly.evaluate.auc_pauc` (the task description's definition).

librosa is a benchmark-only dependency (the ``dev`` extra); humwatch itself does not use it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from torch import nn

THREADS = 2


@dataclass(frozen=True)
class BaselineConfig:
    """The baseline's ``baseline.yaml`` (DCASE 2020 final release values)."""

    n_mels: int = 128
    frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    power: float = 2.0
    hidden: int = 128
    bottleneck: int = 8
    batch_size: int = 512
    lr: float = 1e-3
    adam_eps: float = 1e-7
    validation_split: float = 0.1

    @property
    def dims(self) -> int:
        return self.n_mels * self.frames

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_CONFIG = BaselineConfig()


@contextmanager
def _threads(n: int = THREADS) -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def log_mel(y: np.ndarray, sr: int, cfg: BaselineConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The baseline's log-mel energies ``[n_mels, frames]`` (dB of power) for a mono signal."""
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                         n_mels=cfg.n_mels, power=cfg.power, pad_mode="reflect")
    return (20.0 / cfg.power * np.log10(mel + sys.float_info.epsilon)).astype(np.float32)


def stack_frames(log_mel_spec: np.ndarray, frames: int) -> np.ndarray:
    """``[n_mels, F]`` → ``[F - frames + 1, n_mels * frames]``: row i holds frames i..i+frames-1, one after another."""
    n_mels, total = log_mel_spec.shape
    n = total - frames + 1
    if n < 1:
        return np.empty((0, n_mels * frames), np.float32)
    lm = log_mel_spec.T
    return np.ascontiguousarray(np.concatenate([lm[t: t + n] for t in range(frames)], axis=1), np.float32)


def read_mono(path: str | Path) -> tuple[np.ndarray, int]:
    """float32 samples of channel 0 and the file's sample rate."""
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(y[:, 0]), int(sr)


def clip_vectors(path: str | Path, cfg: BaselineConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The baseline's feature vectors of one file, ``[n, n_mels * frames]`` float32 (``[n, 640]`` by default)."""
    y, sr = read_mono(path)
    return stack_frames(log_mel(y, sr, cfg), cfg.frames)


def build_network(cfg: BaselineConfig = DEFAULT_CONFIG) -> nn.Sequential:
    """640 → 128×4 → 8 → 128×4 → 640; Dense + BatchNorm + ReLU on every hidden layer, Keras initialisation."""
    sizes = [cfg.dims] + [cfg.hidden] * 4 + [cfg.bottleneck] + [cfg.hidden] * 4
    layers: list[nn.Module] = []
    for i, o in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(i, o), nn.BatchNorm1d(o, eps=1e-3, momentum=0.01), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], cfg.dims))
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


class DcaseBaseline:
    """The DCASE 2020 Task 2 baseline: ``fit(train_files)`` on normal clips, then ``score_clip(path)``."""

    def __init__(self, cfg: BaselineConfig = DEFAULT_CONFIG, threads: int = THREADS):
        self.cfg = cfg
        self.threads = threads

    def fit(self, train_files: Sequence[str | Path], epochs: int = 100, seed: int = 0,
            on_epoch: Callable[[int, float, float], None] | None = None) -> DcaseBaseline:
        """Train on the vectors of ``train_files`` (sorted as given).

        Args:
            epochs: passes over the training vectors (the baseline's default is 100).
            seed: seeds weight initialisation and the per-epoch shuffles; equal seeds give equal models.
            on_epoch: called as ``on_epoch(epoch, train_loss, val_loss)``.
        """
        cfg = self.cfg
        if not train_files:
            raise ValueError("no training files")
        X = np.concatenate([clip_vectors(f, cfg) for f in train_files])
        if not np.isfinite(X).all():
            raise ValueError("training features contain NaN or Inf")
        split_at = int(len(X) * (1.0 - cfg.validation_split))  # Keras: the tail, taken before shuffling
        if split_at < 1:
            raise ValueError(f"too few training vectors ({len(X)})")
        x_train, x_val = torch.from_numpy(X[:split_at]), torch.from_numpy(X[split_at:])
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        with _threads(self.threads):
            torch.manual_seed(seed)
            net = build_network(cfg)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
            history: dict = {"train_loss": [], "val_loss": []}
            for epoch in range(1, epochs + 1):
                net.train()
                order = torch.from_numpy(rng.permutation(len(x_train)))
                total = 0.0
                for idx in order.split(cfg.batch_size):
                    xb = x_train[idx]
                    opt.zero_grad(set_to_none=True)
                    loss = nn.functional.mse_loss(net(xb), xb)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                tl = total / len(x_train)
                vl = self._mean_error(net, x_val) if len(x_val) else float("nan")
                history["train_loss"].append(tl)
                history["val_loss"].append(vl)
                if on_epoch:
                    on_epoch(epoch, tl, vl)
        net.eval()
        history.update(epochs=epochs, seed=seed, n_train_vectors=int(split_at), n_val_vectors=int(len(x_val)),
                       n_files=len(train_files), train_seconds=round(time.perf_counter() - t0, 3))
        self.model_, self.history_ = net, history
        return self

    @staticmethod
    @torch.no_grad()
    def _errors(net: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        net.eval()
        return torch.cat([(net(b) - b).square().mean(dim=1) for b in x.split(batch)])

    def _mean_error(self, net: nn.Module, x: torch.Tensor) -> float:
        return float(self._errors(net, x).mean())

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Per-vector mean squared reconstruction error ``[n]``."""
        if not hasattr(self, "model_"):
            raise RuntimeError("DcaseBaseline is not fitted: call fit() first")
        with _threads(self.threads):
            return self._errors(self.model_, torch.from_numpy(np.asarray(vectors, np.float32))).numpy()

    def score_clip(self, path: str | Path) -> float:
        """Anomaly score of one clip: the mean over its vectors of the per-vector MSE (higher = more anomalous)."""
        v = clip_vectors(path, self.cfg)
        if len(v) == 0:
            raise ValueError(f"{path}: too short for one {self.cfg.frames}-frame vector")
        return float(self.score_vectors(v).mean())
