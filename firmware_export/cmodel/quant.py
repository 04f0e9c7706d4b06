"""Requantisation constants, computed at export time the way the TFLite (Micro) kernels compute them at ``Prepare``.

A real multiplier ``m`` (e.g. ``input_scale * filter_scale / output_scale``, in double from the float32 scales) becomes
a Q31 significand and a power-of-two exponent: ``m = significand * 2**(shift - 31)`` with the significand in
``[2**30, 2**31)``, rounded half away from zero. The C side (``hwk_mbqm`` in hw_kernels.c) applies it with the
rounding-doubling high multiply and the rounding right shift of the reference kernels.
"""

from __future__ import annotations

import math

import numpy as np

ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3


def round_half_away(v: float) -> int:
    """``std::round``: halves away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def quantize_multiplier(m: float) -> tuple[int, int]:
    """``(significand, shift)`` of a real multiplier, as TFLite's ``QuantizeMultiplier``."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), int(shift)


def f32(v) -> np.float32:
    return np.float32(v)


def quantize_value(f: float, scale: float, zero_point: int) -> int:
    """``zero_point + round(f / scale)`` with the division in float32 (activation bounds)."""
    return int(zero_point) + round_half_away(float(f32(f) / f32(scale)))


def activation_range(act: int, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp bounds of a fused activation (``CalculateActivationRangeQuantized``)."""
    lo, hi = -128, 127
    if act == ACT_RELU:
        lo = max(lo, quantize_value(0.0, scale, zero_point))
    elif act == ACT_RELU6:
        lo = max(lo, quantize_value(0.0, scale, zero_point))
        hi = min(hi, quantize_value(6.0, scale, zero_point))
    elif act == ACT_RELU_N1_TO_1:
        lo = max(lo, quantize_value(-1.0, scale, zero_point))
        hi = min(hi, quantize_value(1.0, scale, zero_point))
    elif act != ACT_NONE:
        raise ValueError(f"unsupported fused activation {act}")
    return lo, hi


def per_channel(input_scale: float, filter_scales: np.ndarray, output_scale: float, channels: int):
    """Per-output-channel ``(multipliers, shifts)`` of a conv / depthwise / transposed conv / dense layer: in double,
    ``input_scale * filter_scale[c] / output_scale`` (one filter scale broadcast to every channel)."""
    fs = np.asarray(filter_scales, np.float32)
    if fs.size not in (1, channels):
        raise ValueError(f"{fs.size} filter scales for {channels} channels")
    fs = np.broadcast_to(fs, (channels,))
    pairs = [quantize_multiplier(float(input_scale) * float(s) / float(output_scale)) for s in fs]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# -- a Python model of the C arithmetic (tests check hw_kernels.c against it, and it documents the rounding) --------

def srdhm(a: int, b: int) -> int:
    """Saturating rounding doubling high multiply of two int32."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return int(v / (1 << 31)) if v >= 0 else -int(-v // (1 << 31))  # C division truncates toward zero


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """``MultiplyByQuantizedMultiplier`` (the double-rounding form TFLite Micro builds by default)."""
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    v = (x * (1 << left) + (1 << 31)) % (1 << 32) - (1 << 31)  # int32 wrap of the left shift, as in C
    return rounding_divide_by_pot(srdhm(v, multiplier), right)
