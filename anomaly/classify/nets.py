"""The classifier's configuration (:class:`ClassifyConfig`) and networks: a backbone (a small CNN from scratch, an
autoencoder's encoder, or precomputed YAMNet embeddings) and a head, built from a saved architecture by
:func:`_build_net`."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from anomaly.errors import DataError
from anomaly.model import ArchConfig, ConvAutoencoder


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
