"""The simulator's fixed filters (noise colouring, resonators, burst envelopes), each with the warm-up length after
which its impulse response has died out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

from anomaly.simulate.config import (
    _CHUNK,
    BEARING_RESONANCE_HZ,
    BEARING_RING_S,
    SAMPLE_RATE,
    VALVE_RESONANCE_HZ,
    VALVE_RING_S,
)


@dataclass(frozen=True)
class _Filter:
    sos: np.ndarray
    norm: float  # 1 / sqrt(sum h^2): unit-variance white noise in -> unit RMS out
    energy: float  # sum h^2 of the (unnormalised) impulse response
    area: float  # sum h
    warm: int  # samples after which the impulse response has died out (tail RMS below `tail` of the total)


def _make_filter(*parts: np.ndarray, tail: float = 1e-8) -> _Filter:
    sos = np.vstack(parts)
    imp = np.zeros(1 << 16)
    imp[0] = 1.0
    h = signal.sosfilt(sos, imp)
    e = float(np.sum(h * h))
    rest = np.cumsum((h * h)[::-1])[::-1]  # energy from sample n on
    warm = int(np.argmax(rest < tail**2 * e)) + 1
    if warm > _CHUNK:
        raise ValueError(f"filter rings for {warm} samples, longer than a chunk")
    return _Filter(sos, 1.0 / math.sqrt(e), e, float(np.sum(h)), warm)


def _resonator(freq_hz: float, ring_s: float) -> np.ndarray:
    # Two-pole resonator: impulse response r^n sin((n+1) w), a damped ring at freq_hz with time constant ring_s.
    r = math.exp(-1.0 / (ring_s * SAMPLE_RATE))
    w = 2 * math.pi * freq_hz / SAMPLE_RATE
    return np.array([[math.sin(w), 0.0, 0.0, 1.0, -2 * r * math.cos(w), r * r]])


def _attack_decay(attack_s: float, decay_s: float) -> np.ndarray:
    # Envelope of one burst: exp(-t/decay) - exp(-t/attack), as the difference of two one-pole filters.
    pd, pa = math.exp(-1.0 / (decay_s * SAMPLE_RATE)), math.exp(-1.0 / (attack_s * SAMPLE_RATE))
    n = np.arange(1 << 16)
    peak = float(np.max(pd**n - pa**n))
    return np.array([[0.0, (pd - pa) / peak, 0.0, 1.0, -(pd + pa), pd * pa]])


@lru_cache(maxsize=1)
def _filters() -> dict[str, _Filter]:
    fs = SAMPLE_RATE
    # A standard 3-pole "pinking" filter: about -3 dB/octave from ~20 Hz to ~5 kHz at 16 kHz.
    pink = signal.tf2sos([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                         [1.0, -2.494956002, 2.017265875, -0.522189400])
    hp20 = signal.butter(1, 20, "highpass", fs=fs, output="sos")

    def butter(order: int, wn: float | list[float], btype: str) -> np.ndarray:
        return signal.butter(order, wn, btype, fs=fs, output="sos")

    return {
        "pink": _make_filter(pink, hp20),
        "pump.flow": _make_filter(pink, hp20, butter(2, 900, "lowpass")),
        "compressor.mech": _make_filter(pink, butter(2, [60, 5000], "bandpass")),
        "fan.aero": _make_filter(pink, butter(1, [150, 3000], "bandpass")),
        "motor.noise": _make_filter(pink, butter(1, 200, "highpass")),
        "impact": _make_filter(butter(2, [120, 2500], "bandpass")),
        "rumble": _make_filter(butter(2, 160, "lowpass"), hp20),
        "hp1k": _make_filter(butter(4, 1000, "highpass")),
        "hp2k": _make_filter(butter(4, 2000, "highpass")),
        "bearing.res": _make_filter(_resonator(BEARING_RESONANCE_HZ, BEARING_RING_S)),
        "valve.res": _make_filter(_resonator(VALVE_RESONANCE_HZ, VALVE_RING_S)),
        "cavitation.env": _make_filter(_attack_decay(0.1e-3, 2e-3)),
        # 1e-5 of an impact is far below one 16-bit step; a stricter bound would not fit a chunk.
        "impact.env": _make_filter(_attack_decay(2e-3, 70e-3), tail=1e-5),
    }
