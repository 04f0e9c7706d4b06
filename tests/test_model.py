"""The convolutional autoencoder (anomaly.model): shapes, allowed layers, and the size/compute accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomaly.model import ArchConfig, ConvAutoencoder, count_macs, count_params

ARCH3 = ArchConfig(widths=(8, 16, 32), bottleneck=16)
ARCH4 = ArchConfig()  # (8, 16, 32, 32) / 32


@pytest.mark.parametrize("arch", [ARCH3, ARCH4], ids=["3-layer", "4-layer"])
def test_forward_and_encode_shapes(arch):
    torch.manual_seed(0)
    model = ConvAutoencoder(arch).eval()
    x = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        y = model(x)
        z = model.encode(x)
        back = model.decode(z)
    assert y.shape == (3, 1, 96, 64)
    assert z.shape == (3, arch.bottleneck)
    assert back.shape == (3, 1, 96, 64)
    assert torch.isfinite(y).all()
    assert len(model.encoder) == 3 * len(arch.widths)


def test_default_arch_values():
    a = ArchConfig()
    assert a.widths == (8, 16, 32, 32) and a.bottleneck == 32 and (a.patch_frames, a.n_mels) == (96, 64)
    assert a.latent_hw == (6, 4)
    assert ArchConfig.from_dict(a.to_dict()) == a
    assert ArchConfig(widths=[8, 16, 32]).widths == (8, 16, 32)  # lists are normalised to tuples


@pytest.mark.parametrize("kwargs, needle", [
    ({"widths": (8, 16)}, "3-4"),
    ({"widths": (8, 16, 32, 32, 64)}, "3-4"),
    ({"bottleneck": 7}, "bottleneck"),
    ({"bottleneck": 129}, "bottleneck"),
    ({"patch_frames": 100}, "divisible"),  # 100 % 16 != 0
    ({"n_mels": 40}, "divisible"),  # 40 % 16 != 0
    ({"widths": (8, 16, 32), "patch_frames": 92}, "divisible"),  # 92 % 8 != 0
])
def test_arch_config_rejects(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ArchConfig(**kwargs)


def test_arch_config_accepts_limits():
    assert ArchConfig(bottleneck=8).bottleneck == 8
    assert ArchConfig(bottleneck=128).bottleneck == 128
    assert ArchConfig(widths=(8, 16, 32), patch_frames=104).latent_hw == (13, 8)  # 104 % 8 == 0


@pytest.mark.parametrize("arch", [ARCH3, ARCH4], ids=["3-layer", "4-layer"])
def test_only_tflm_friendly_layers(arch):
    model = ConvAutoencoder(arch)
    allowed = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.Linear, nn.Sequential, ConvAutoencoder)
    n_conv = n_tconv = 0
    for m in model.modules():
        assert type(m) in allowed, f"layer {type(m).__name__} is not allowed"
        if type(m) is nn.Conv2d:
            n_conv += 1
            assert (m.kernel_size, m.stride, m.padding, m.groups, m.dilation) == ((3, 3), (2, 2), (1, 1), 1, (1, 1))
        elif type(m) is nn.ConvTranspose2d:
            n_tconv += 1
            assert (m.kernel_size, m.stride, m.padding, m.output_padding, m.groups, m.dilation) == \
                ((3, 3), (2, 2), (1, 1), (1, 1), 1, (1, 1))
    assert n_conv == n_tconv == len(arch.widths)


def test_count_params_is_sum_of_numel():
    for arch in (ARCH3, ARCH4):
        model = ConvAutoencoder(arch)
        assert count_params(model) == sum(p.numel() for p in model.parameters())
    # and by hand for the default arch: convs (no bias except the last transposed conv), BN (2 per channel), linears
    enc = 1 * 8 * 9 + 8 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9
    bn = 2 * (8 + 16 + 32 + 32) + 2 * (32 + 16 + 8)
    lin = (768 * 32 + 32) + (32 * 768 + 768)
    dec = 32 * 32 * 9 + 32 * 16 * 9 + 16 * 8 * 9 + 8 * 1 * 9 + 1
    assert count_params(ConvAutoencoder(ARCH4)) == enc + bn + lin + dec == 80337


def hand_macs(arch: ArchConfig) -> int:
    """MACs for one patch from the layer shapes alone (no hooks)."""
    h, w, c = arch.patch_frames, arch.n_mels, 1
    macs = 0
    for out_c in arch.widths:  # conv k3 s2 p1: out = ceil(in / 2); out_elems * k*k*in_ch
        h, w = (h + 1) // 2, (w + 1) // 2
        macs += out_c * h * w * 9 * c
        c = out_c
    flat = c * h * w
    macs += 2 * flat * arch.bottleneck  # to_z and from_z
    for out_c in list(arch.widths[::-1][1:]) + [1]:  # transposed conv: in_elems * k*k*out_ch, doubles h and w
        macs += c * h * w * 9 * out_c
        h, w, c = 2 * h, 2 * w, out_c
    assert (h, w, c) == (arch.patch_frames, arch.n_mels, 1)
    return macs


def test_count_macs_matches_hand_computation():
    # Default arch, layer by layer: encoder 96x64 -> 48x32 -> 24x16 -> 12x8 -> 6x4.
    enc = (8 * 48 * 32) * 9 * 1 + (16 * 24 * 16) * 9 * 8 + (32 * 12 * 8) * 9 * 16 + (32 * 6 * 4) * 9 * 32
    lin = 768 * 32 + 32 * 768
    dec = (32 * 6 * 4) * 9 * 32 + (32 * 12 * 8) * 9 * 16 + (16 * 24 * 16) * 9 * 8 + (8 * 48 * 32) * 9 * 1
    assert enc + lin + dec == 2_482_176
    assert count_macs(ConvAutoencoder(ARCH4)) == hand_macs(ARCH4) == enc + lin + dec
    assert count_macs(ConvAutoencoder(ARCH3)) == hand_macs(ARCH3)
    wide = ArchConfig(widths=(16, 32, 32, 64), bottleneck=48)
    assert count_macs(ConvAutoencoder(wide)) == hand_macs(wide)


def test_count_macs_keeps_training_mode():
    model = ConvAutoencoder(ARCH4)
    model.train()
    count_macs(model)
    assert model.training
    model.eval()
    count_macs(model)
    assert not model.training
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_default_arch_fits_the_mcu_budget():
    model = ConvAutoencoder(ArchConfig())
    assert count_params(model) <= 100_000
    assert count_macs(model) <= 5_000_000


def test_stopping_advice():
    from anomaly.train import stopping_advice

    early = {"val_loss": [1.0, 0.8, 0.81, 0.82], "best_epoch": 2, "epochs_run": 4}
    assert "stopped early at epoch 4" in stopping_advice(early, 40, 2) and "would not help" in \
        stopping_advice(early, 40, 2)
    rising = {"val_loss": [1.0, 0.9, 0.8, 0.7, 0.6], "best_epoch": 5, "epochs_run": 5}
    assert stopping_advice(rising, 5, 8).startswith("still improving at epoch 5") and "--epochs 10" in \
        stopping_advice(rising, 5, 8)
    flat = {"val_loss": [1.0, 0.5, 0.5, 0.5, 0.5], "best_epoch": 2, "epochs_run": 5}
    assert "reached the epoch limit 5" in stopping_advice(flat, 5, 8) and "would likely not help" in \
        stopping_advice(flat, 5, 8)
    one = {"val_loss": [0.9], "best_epoch": 1, "epochs_run": 1}
    assert "after a single epoch" in stopping_advice(one, 1, 8) and "--epochs 10" in stopping_advice(one, 1, 8)
    assert stopping_advice({}, 5, 8) == ""
