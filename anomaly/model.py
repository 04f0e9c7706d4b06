"""The convolutional autoencoder (a pure ``nn.Module``) and its size/compute accounting.

Only layers that convert to full-integer TFLite and run under TensorFlow Lite Micro are used: Conv2d with kernel 3,
stride 2, padding 1; BatchNorm (folded into the convs at export); ReLU; Linear; ConvTranspose2d with kernel 3,
stride 2, padding 1, output_padding 1 (kernel 4 transposed convs are mis-permuted by onnx2tf, see docs/model.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ArchConfig:
    """Architecture of :class:`ConvAutoencoder`.

    Attributes:
        widths: output channels of the encoder convs (3-4 layers); the decoder mirrors them.
        bottleneck: size of the latent vector (8-128 accepted; 16-64 recommended).
        patch_frames, n_mels: input patch size; each must be divisible by ``2 ** len(widths)``.
    """

    widths: tuple[int, ...] = (8, 16, 32, 32)
    bottleneck: int = 32
    patch_frames: int = 96
    n_mels: int = 64

    def __post_init__(self) -> None:
        if not 3 <= len(self.widths) <= 4:
            raise ValueError(f"need 3-4 encoder widths, got {self.widths}")
        if not 8 <= self.bottleneck <= 128:
            raise ValueError(f"bottleneck must be in 8..128, got {self.bottleneck}")
        div = 2 ** len(self.widths)
        if self.patch_frames % div or self.n_mels % div:
            raise ValueError(f"patch {self.patch_frames}x{self.n_mels} is not divisible by {div}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def latent_hw(self) -> tuple[int, int]:
        d = 2 ** len(self.widths)
        return self.patch_frames // d, self.n_mels // d

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArchConfig:
        return cls(**{**d, "widths": tuple(d["widths"])})


class ConvAutoencoder(nn.Module):
    """Conv encoder → linear bottleneck → transposed-conv decoder.

    Input and output: normalised log-mel patches ``[B, 1, patch_frames, n_mels]``.
    """

    def __init__(self, arch: ArchConfig | None = None):
        super().__init__()
        self.arch = arch = arch or ArchConfig()
        enc, c = [], 1
        for w in arch.widths:
            enc += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.encoder = nn.Sequential(*enc)
        h, w_ = arch.latent_hw
        self._latent_shape = (c, h, w_)
        self.to_z = nn.Linear(c * h * w_, arch.bottleneck)
        self.from_z = nn.Linear(arch.bottleneck, c * h * w_)
        dec = []
        outs = list(arch.widths[::-1][1:]) + [1]
        for i, o in enumerate(outs):
            last = i == len(outs) - 1
            dec.append(nn.ConvTranspose2d(c, o, 3, stride=2, padding=1, output_padding=1, bias=last))
            if not last:
                dec += [nn.BatchNorm2d(o), nn.ReLU()]
            c = o
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T, M]`` → latent ``[B, bottleneck]``."""
        return self.to_z(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, bottleneck]`` → reconstruction ``[B, 1, T, M]``."""
        h = torch.relu(self.from_z(z)).view(-1, *self._latent_shape)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: ConvAutoencoder) -> int:
    """Multiply-accumulates for one patch (convs, transposed convs, linears; BN/ReLU are free after folding)."""
    macs = 0
    hooks = []

    def conv_hook(m, inp, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            macs += out[0].numel() * k
        elif isinstance(m, nn.ConvTranspose2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            macs += inp[0][0].numel() * k
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features

    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(conv_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, model.arch.patch_frames, model.arch.n_mels))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return macs
