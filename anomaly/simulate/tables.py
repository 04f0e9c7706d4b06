"""One-period wavetables of the shaft-locked tones (per-unit phases and levels), read at any absolute sample index,
and the two-cylinder compressor pulsation with the change a leaking valve makes."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from anomaly.simulate.config import (
    _NF,
    _TABLE,
    FAN_BLADES,
    MOTOR_FAN_BLADES,
    PUMP_VANES,
    SAMPLE_RATE,
)
from anomaly.simulate.streams import _rng


def _table_from_coeffs(orders: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """One period of sum_k |c_k| cos(2 pi k x + arg c_k), with a wrap-around sample appended for interpolation."""
    spec = np.zeros(_TABLE // 2 + 1, dtype=complex)
    np.add.at(spec, orders, coeffs * (_TABLE / 2))
    tab = np.fft.irfft(spec, _TABLE)
    return np.append(tab, tab[0])


def _audible(orders: np.ndarray, fundamental_hz: float) -> np.ndarray:
    # Harmonics near or above Nyquist would alias; real ones are absorbed by the 8 kHz anti-alias filter anyway.
    return orders * fundamental_hz < 0.45 * SAMPLE_RATE


@lru_cache(maxsize=64)
def _tone_table(seed: int, name: str, fundamental_hz: float, orders_db: tuple[tuple[int, float], ...]) -> np.ndarray:
    """Unit-RMS periodic table; each unit (seed) gets its own phases and +-1 dB harmonic levels."""
    orders = np.array([o for o, _ in orders_db])
    db = np.array([d for _, d in orders_db])
    g = _rng(seed, f"identity.{name}", 0)
    db = db + g.standard_normal(len(orders))
    phases = g.uniform(0, 2 * np.pi, len(orders))
    keep = _audible(orders, fundamental_hz)
    if not keep.any():
        return np.zeros(_TABLE + 1)
    amps = 10 ** (db[keep] / 20)
    tab = _table_from_coeffs(orders[keep], amps * np.exp(1j * phases[keep]))
    return tab / math.sqrt(np.sum(amps**2) / 2)


def _periodic(table: np.ndarray, freq_hz: float, n: np.ndarray, phase: float = 0.0) -> np.ndarray:
    """Read a one-period table at freq_hz over a chunk whose absolute sample indices are n.

    The phase comes from the absolute index of the chunk's first sample (no accumulated drift over hours);
    ``phase`` is an offset in cycles.
    """
    step = freq_hz / SAMPLE_RATE
    pos = _NF * step
    pos += math.fmod(int(n[0]) * step + phase, 1.0)
    pos -= np.floor(pos)
    pos *= _TABLE  # exact (power of two), so pos < _TABLE and i + 1 stays inside the table
    i = pos.astype(np.intp)
    pos -= i
    lo = table[i]
    return lo + pos * (table[i + 1] - lo)


_COS_TABLE = np.cos(2 * np.pi * np.arange(_TABLE + 1) / _TABLE)


# (shaft order, level in dB re the strongest tone). Shaft orders 1-3: imbalance, misalignment, looseness.
_PUMP_ORDERS = ((1, -6.0), (2, -10.0), (3, -16.0), (4, -24.0), (5, -27.0), (7, -22.0)) + tuple(
    (m * PUMP_VANES, db) for m, db in ((1, 0.0), (2, -8.0), (3, -14.0), (4, -20.0), (5, -26.0)))
_FAN_ORDERS = ((1, -12.0), (2, -20.0)) + tuple(
    (m * FAN_BLADES, db) for m, db in ((1, 0.0), (2, -8.0), (3, -15.0), (4, -22.0)))
_MOTOR_SHAFT_ORDERS = ((1, 0.0), (2, -6.0), (3, -14.0), (MOTOR_FAN_BLADES, -10.0))
_MOTOR_HUM_ORDERS = ((2, 0.0), (4, -10.0), (6, -16.0))  # harmonics of MAINS_HZ: 100, 200, 300 Hz
_DISTANT_ORDERS = tuple((k, -6.0 * math.log2(k)) for k in range(1, 11))  # -6 dB/octave, nothing above 10x
_BLOWER_ORDERS = ((1, -6.0), (5, 0.0), (10, -8.0))  # a 5-blade blower: blade-pass at 5x

_COMPRESSOR_HARMONICS = 40
_CYL2_GAIN = 0.92  # the second cylinder is slightly weaker and ...
_CYL2_OFFSET = 0.512  # ... not exactly half a revolution later, so odd crank harmonics are small but not zero
_LEAK_GAIN_DROP = 0.55  # at severity 1 the leaking cylinder's pulsation drops by 55 % ...
_LEAK_DELAY = 0.02  # ... and its valve events come 2 % of a revolution late (slower pressure build-up)


@lru_cache(maxsize=64)
def _compressor_tables(seed: int, crank_hz: float, severity: float) -> tuple[np.ndarray, np.ndarray]:
    """Healthy two-cylinder pulsation table (unit RMS) and the change a leaking valve makes, on the same scale.

    Identical cylinders half a revolution apart cancel each other's odd crank harmonics; a leaking valve weakens and
    delays one cylinder, which breaks that symmetry and raises the odd harmonics (a changed harmonic ratio).
    """
    orders = np.arange(1, _COMPRESSOR_HARMONICS + 1)
    g = _rng(seed, "identity.compressor", 0)
    db = -0.7 * 20 * np.log10(orders) + g.standard_normal(len(orders))
    cyl = 10 ** (db / 20) * np.exp(1j * g.uniform(0, 2 * np.pi, len(orders)))
    keep = _audible(orders, crank_hz)
    orders, cyl = orders[keep], cyl[keep]

    def shifted(gain: float, delay: float) -> np.ndarray:
        return gain * cyl * np.exp(-2j * np.pi * orders * delay)

    healthy = cyl + shifted(_CYL2_GAIN, _CYL2_OFFSET)
    faulty = cyl + shifted(_CYL2_GAIN * (1 - _LEAK_GAIN_DROP * severity), _CYL2_OFFSET + _LEAK_DELAY * severity)
    scale = 1.0 / math.sqrt(np.sum(np.abs(healthy) ** 2) / 2)
    return _table_from_coeffs(orders, healthy * scale), _table_from_coeffs(orders, (faulty - healthy) * scale)
