"""Deterministic, physically motivated synthetic machine sound at 16 kHz mono.

The simulator builds a recording as ``soft_limit(machine + background + fault)``:

* **machine** – shaft-locked tones (rendered from one-period wavetables, so hundreds of harmonics cost one table
  look-up per sample), broadband noise shaped by fixed filters, and crank-locked valve clicks (compressor);
* **background** – room noise, distant machinery and impacts (factory) or a cycling HVAC rumble, all under a slow
  level drift;
* **fault** – an additive component; :func:`fault_signal` returns exactly that component, so faults can also be
  injected into real recordings.

Everything is rendered in fixed one-second *chunks*, each a pure function of ``(config, chunk index)``: random numbers
come from ``numpy.random.SeedSequence(seed, spawn_key=(stream, index))``, filters are warmed up on the previous
chunk's noise, and events that ring across a chunk edge are drawn from both neighbouring chunks. Any block size,
and any start offset, therefore gives bit-identical samples. See ``docs/simulator.md`` for the physics and every
parameter.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from anomaly.atomic import atomic_path
from anomaly.errors import DataError

SAMPLE_RATE = 16000
MACHINES = ("pump", "compressor", "fan", "motor")
FAULTS = ("none", "cavitation", "bearing-outer", "bearing-inner", "compressor-valve-leak", "electrical-arc")
BACKGROUNDS = ("quiet", "factory", "hvac-cycling")
MACHINE_FAULTS = {
    "pump": ("cavitation", "bearing-outer", "bearing-inner"),
    "compressor": ("compressor-valve-leak", "bearing-outer", "bearing-inner"),
    "fan": ("bearing-outer", "bearing-inner"),
    "motor": ("electrical-arc", "bearing-outer", "bearing-inner"),
}
"""The faults each machine really has (any fault can be mixed into any machine's sound, as an additive stand-in);
their words label bands in alarms and reports (:mod:`anomaly.vocabulary`)."""

MAINS_HZ = 50.0
"""Mains frequency: motor magnetic hum and electrical arcs are locked to ``2 * MAINS_HZ`` (100 Hz)."""

DEFAULT_SHAFT_HZ = {"pump": 29.5, "compressor": 24.5, "fan": 16.2, "motor": 24.7}
"""Shaft (crank) rate per machine when ``SimConfig.shaft_hz`` is None: 1770, 1470, 972 and 1482 rpm."""

SHAFT_HZ_RANGE = (1.0, 200.0)
"""Accepted ``shaft_hz`` (60 to 12000 rpm); outside it the blade-pass and bearing rates stop making sense."""

PUMP_VANES = 6  # impeller vanes: blade-pass at 6x shaft
FAN_BLADES = 9  # fan blades: blade-pass at 9x shaft
MOTOR_ROTOR_BARS = 28  # rotor slots: slot-pass at 28x shaft, with +-2*mains sidebands
MOTOR_FAN_BLADES = 11  # the motor's own cooling fan
FACTORY_DISTANT_HZ = 18.7  # shaft rate of the distant machine in the factory background
HVAC_BLOWER_HZ = 14.8  # shaft rate of the HVAC blower

BEARING_RESONANCE_HZ = 3200.0  # structural resonance rung by each bearing impact
BEARING_RING_S = 1.0e-3  # its amplitude decay time constant (Q ~ 10: rings ~5 ms to -40 dB)
BEARING_JITTER = 0.015  # impact timing jitter, fraction of a period (rolling elements slip)
VALVE_RESONANCE_HZ = 1850.0  # compressor valve-plate / head resonance rung by each valve click
VALVE_RING_S = 2.5e-3

LIMIT_KNEE = 0.8  # the soft limiter is the identity below this |sample| ...
LIMIT_CEILING = 0.98  # ... and never reaches this, so float32 and 16-bit output stay below full scale

# Component levels as RMS in dBFS. A healthy machine sums to about -20 dBFS; fault levels are the RMS of the fault
# component at severity 1 (while active) and scale linearly in amplitude with severity.
_LEVELS = {
    "pump.tones": -22.5, "pump.flow": -24.0,
    "compressor.tones": -21.5, "compressor.clicks": -28.0, "compressor.mech": -30.0,
    "fan.tones": -27.0, "fan.aero": -21.0,
    "motor.hum": -23.5, "motor.shaft": -27.0, "motor.slot": -33.0, "motor.noise": -31.0,
    "quiet.room": -50.0,
    "factory.room": -34.0, "factory.machinery": -38.0, "factory.impacts": -44.0,
    "hvac.room": -48.0, "hvac.rumble": -30.0, "hvac.blower": -36.0,
    "cavitation": -28.0, "bearing": -28.0, "leak.hiss": -30.0, "electrical-arc": -28.0,
}

_CHUNK = SAMPLE_RATE  # rendering unit (samples); filter warm-ups must fit in one chunk
_TABLE = 8192  # wavetable length (linear interpolation error < 0.1 % up to the 100th harmonic)
_GROUP = 1024  # indexed random values are drawn in groups of this many per SeedSequence
_KEY_OFFSET = 1 << 32  # spawn keys must be >= 0; chunk -1 (the warm-up of chunk 0) is a valid index
_N = np.arange(_CHUNK, dtype=np.int64)
_NF = _N.astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------------
# Public configuration
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry (defaults: a 6205-type deep-groove ball bearing)."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.n_balls, int) and self.n_balls >= 1):
            raise DataError(f"bearing n_balls must be a positive integer, got {self.n_balls!r}")
        if not (0 < self.ball_diameter_mm < self.pitch_diameter_mm):
            raise DataError(
                f"bearing ball diameter {self.ball_diameter_mm!r} mm must be > 0 and below the pitch diameter "
                f"{self.pitch_diameter_mm!r} mm"
            )
        if not (0 <= self.contact_angle_deg < 90):
            raise DataError(f"bearing contact angle {self.contact_angle_deg!r} deg must be in [0, 90)")

    def _ratio(self) -> float:
        return self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))

    def bpfo(self, shaft_hz: float) -> float:
        """Ball-pass frequency, outer race: ``n/2 * f * (1 - d/D cos a)``."""
        return self.n_balls / 2 * shaft_hz * (1 - self._ratio())

    def bpfi(self, shaft_hz: float) -> float:
        """Ball-pass frequency, inner race: ``n/2 * f * (1 + d/D cos a)``."""
        return self.n_balls / 2 * shaft_hz * (1 + self._ratio())


def _choice(kind: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DataError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Validated on construction (raises DataError with a one-line message)."""

    machine: str = "pump"
    fault: str = "none"
    severity: float = 0.0  # 0 = healthy (the fault adds nothing), 1 = obvious
    background: str = "quiet"
    seed: int = 0
    shaft_hz: float | None = None  # None -> DEFAULT_SHAFT_HZ[machine]
    bearing: BearingGeometry = BearingGeometry()

    def __post_init__(self) -> None:
        _choice("machine", self.machine, MACHINES)
        _choice("fault", self.fault, FAULTS)
        _choice("background", self.background, BACKGROUNDS)
        try:
            severity = float(self.severity)
        except (TypeError, ValueError):
            raise DataError(f"severity must be a number in [0, 1], got {self.severity!r}") from None
        if not 0.0 <= severity <= 1.0:  # also rejects NaN
            raise DataError(f"severity {self.severity!r} is outside [0, 1]")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.shaft_hz is not None:
            lo, hi = SHAFT_HZ_RANGE
            try:
                shaft = float(self.shaft_hz)
            except (TypeError, ValueError):
                raise DataError(f"shaft_hz must be a number, got {self.shaft_hz!r}") from None
            if not lo <= shaft <= hi:
                raise DataError(f"shaft_hz {self.shaft_hz!r} is outside [{lo:g}, {hi:g}] Hz")
            object.__setattr__(self, "shaft_hz", shaft)
        if not isinstance(self.bearing, BearingGeometry):
            raise DataError(f"bearing must be a BearingGeometry, got {type(self.bearing).__name__}")
        # Normalise types so that equal configs compare and hash equal (the wavetables are cached on these values).
        object.__setattr__(self, "severity", severity)
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def effective_shaft_hz(self) -> float:
        """The shaft (crank) rate in use: ``shaft_hz`` or the machine's default."""
        return self.shaft_hz if self.shaft_hz is not None else DEFAULT_SHAFT_HZ[self.machine]


# ----------------------------------------------------------------------------------------------------------------------
# Random streams that can be evaluated at any chunk / index independently
# ----------------------------------------------------------------------------------------------------------------------


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    key = (zlib.crc32(stream.encode()), index + _KEY_OFFSET)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


@lru_cache(maxsize=256)
def _group(seed: int, stream: str, group: int, width: int, normal: bool) -> np.ndarray:
    g = _rng(seed, stream, group)
    a = g.standard_normal((_GROUP, width)) if normal else g.random((_GROUP, width))
    a.flags.writeable = False
    return a


def _indexed(seed: int, stream: str, j0: int, j1: int, width: int = 1, normal: bool = False) -> np.ndarray:
    """Random values for integer indices ``j0 <= j < j1`` (shape ``[j1 - j0, width]``), each fixed by its index."""
    if j1 <= j0:
        return np.empty((0, width))
    g0, g1 = j0 // _GROUP, (j1 - 1) // _GROUP
    parts = [_group(seed, stream, g, width, normal) for g in range(g0, g1 + 1)]
    a = parts[0] if len(parts) == 1 else np.concatenate(parts)
    off = j0 - g0 * _GROUP
    return a[off : off + j1 - j0]


def _knots(seed: int, stream: str, spacing_s: float, n: np.ndarray, normal: bool = True) -> np.ndarray:
    """A smooth random curve: independent knot values every ``spacing_s``, smoothstep-interpolated (C1, no kinks)."""
    pos = n * (1.0 / (spacing_s * SAMPLE_RATE))
    j = np.floor(pos).astype(np.int64)
    w = pos - j
    w = w * w * (3 - 2 * w)
    j0 = int(j.min())
    v = _indexed(seed, stream, j0, int(j.max()) + 2, 1, normal)[:, 0]
    a = v[j - j0]
    return a + (v[j - j0 + 1] - a) * w


class _Rand:
    """Per-run noise source: white noise per (stream, chunk), with a small cache for the warm-up overlap."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def white(self, stream: str, k: int) -> np.ndarray:
        key = (stream, k)
        x = self._cache.get(key)
        if x is None:
            x = _rng(self.seed, stream, k).standard_normal(_CHUNK)
            self._cache[key] = x
            if len(self._cache) > 48:  # only chunk k-1 and k of each stream are ever reused
                del self._cache[next(iter(self._cache))]
        return x

    def colored(self, stream: str, filt: _Filter, k: int) -> np.ndarray:
        """Unit-RMS filtered noise for chunk k.

        The filter starts from rest ``filt.warm`` samples early, on the tail of chunk k-1's noise, so chunk edges are
        seamless (to ~1e-8 of the signal) while every chunk stays a pure function of k.
        """
        x = np.concatenate((self.white(stream, k - 1)[_CHUNK - filt.warm :], self.white(stream, k)))
        return signal.sosfilt(filt.sos, x)[filt.warm :] * filt.norm


# ----------------------------------------------------------------------------------------------------------------------
# Filters and wavetables
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Event processes
# ----------------------------------------------------------------------------------------------------------------------


def _place(length: int, pos: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Impulses at fractional sample positions (split linearly between the two neighbours) in a length buffer.

    Only impulses with 0 <= pos < length are placed; the share that falls on sample ``length`` is dropped here and
    picked up by the next chunk, whose window also contains the impulse.
    """
    sel = (pos >= 0) & (pos < length)
    pos, amp = pos[sel], amp[sel]
    i = pos.astype(np.int64)
    f = pos - i
    idx = np.concatenate((i, i + 1))
    w = np.concatenate((amp * (1 - f), amp * f))
    return np.bincount(idx, weights=w, minlength=length + 1)[:length]


def _locked_events(seed: int, stream: str, rate_hz: float, slots: tuple[float, ...], phase0: float, jitter: float,
                   amp_jitter: float, w0: int, w1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events locked to a rotation: ``len(slots)`` per cycle at fractions ``slots``, with random timing jitter.

    Returns absolute times in samples, amplitude factors and slot numbers of the events that land in ``[w0, w1)``.
    Each event's jitter and amplitude are fixed by its index, so overlapping windows agree on shared events.
    """
    per = SAMPLE_RATE / rate_hz
    r0 = math.floor(w0 / per - phase0) - 2
    r1 = math.ceil(w1 / per - phase0) + 1
    s = len(slots)
    rnd = _indexed(seed, stream, r0 * s, (r1 + 1) * s, 2, normal=True)
    cyc = np.repeat(np.arange(r0, r1 + 1), s) + np.tile(np.asarray(slots), r1 - r0 + 1)
    z = np.clip(rnd[:, 0], -3, 3)
    t = (cyc + phase0 + jitter * z) * per
    amp = np.maximum(1 + amp_jitter * rnd[:, 1], 0.0)
    slot = np.tile(np.arange(s), r1 - r0 + 1)
    sel = (t >= w0) & (t < w1)
    return t[sel], amp[sel], slot[sel]


def _split_power(freq_hz: float) -> float:
    """Mean power kept at freq_hz by the linear two-sample split in :func:`_place` (it acts as a mild low-pass)."""
    return 2 / 3 + math.cos(2 * math.pi * freq_hz / SAMPLE_RATE) / 3


def _ring(filt: _Filter, k: int, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Chunk k of impulses (absolute sample times) through a resonator, warmed up over the preceding samples."""
    w0 = k * _CHUNK - filt.warm
    buf = _place(_CHUNK + filt.warm, times - w0, amps)
    return signal.sosfilt(filt.sos, buf)[filt.warm :]


def _poisson_envelope(seed: int, stream: str, rate_hz: float, amp_fn: Callable[[np.random.Generator, int], np.ndarray],
                      env: _Filter, k: int) -> np.ndarray:
    """Envelope of Poisson-timed bursts for chunk k; bursts from the end of chunk k-1 ring over into chunk k."""
    pos, amp = [], []
    for c in (k - 1, k):
        g = _rng(seed, stream, c)
        m = int(g.poisson(rate_hz))  # one chunk is one second
        pos.append(g.random(m) * _CHUNK + (c - k) * _CHUNK + env.warm)
        amp.append(amp_fn(g, m))
    buf = _place(_CHUNK + env.warm, np.concatenate(pos), np.concatenate(amp))
    return signal.sosfilt(env.sos, buf)[env.warm :]


def _shot_rms(env: _Filter, rate_hz: float, mean_a: float, mean_a2: float) -> float:
    # Campbell's theorem: mean-square of a Poisson pulse train = rate*E[a^2]*sum h^2 + (rate*E[a]*sum h)^2, per sample.
    lam = rate_hz / SAMPLE_RATE
    return math.sqrt(lam * mean_a2 * env.energy + (lam * mean_a * env.area) ** 2)


def _db(level_dbfs: float) -> float:
    return 10 ** (level_dbfs / 20)


# ----------------------------------------------------------------------------------------------------------------------
# Components: each is fn(rand, k, n, t) -> float64 chunk, with n absolute sample indices and t = n / SAMPLE_RATE
# ----------------------------------------------------------------------------------------------------------------------

_Part = Callable[[_Rand, int, np.ndarray, np.ndarray], np.ndarray]


def _tone(table: np.ndarray, freq_hz: float, gain: float) -> _Part:
    return lambda rand, k, n, t: _periodic(table, freq_hz, n) * gain


def _noise(stream: str, filt: _Filter, gain: float, mod_depth: float = 0.0, mod_spacing_s: float = 1.0) -> _Part:
    def part(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        x = rand.colored(stream, filt, k) * gain
        if mod_depth:  # slow random level modulation (turbulence, flow changes)
            x *= np.maximum(1 + mod_depth * _knots(rand.seed, stream + ".mod", mod_spacing_s, n), 0.0)
        return x

    return part


def _machine_parts(cfg: SimConfig) -> list[_Part]:
    f, seed, F = cfg.effective_shaft_hz, cfg.seed, _filters()
    L = {key: _db(v) for key, v in _LEVELS.items()}
    if cfg.machine == "pump":
        return [
            _tone(_tone_table(seed, "pump", f, _PUMP_ORDERS), f, L["pump.tones"]),
            _noise("pump.flow", F["pump.flow"], L["pump.flow"], 0.15, 0.4),
        ]
    if cfg.machine == "compressor":
        healthy, _ = _compressor_tables(seed, f, 0.0)
        clicks = F["valve.res"]
        # Per revolution: suction and discharge valve of cylinder 1, then of cylinder 2 (discharge is louder).
        slots, slot_amp = (0.06, 0.36, 0.56, 0.86), np.array([0.6, 1.0, 0.55, 0.95])
        click_power = f * len(slots) / SAMPLE_RATE * np.mean(slot_amp**2) * (1 + 0.1**2)
        click_gain = L["compressor.clicks"] / math.sqrt(click_power * clicks.energy * _split_power(VALVE_RESONANCE_HZ))
        phase0 = float(_rng(seed, "compressor.clicks.phase", 0).random())

        def valve_clicks(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            w0, w1 = k * _CHUNK - clicks.warm, (k + 1) * _CHUNK
            times, amp, which = _locked_events(seed, "compressor.clicks", f, slots, phase0, 0.002, 0.1, w0, w1)
            return _ring(clicks, k, times, amp * slot_amp[which]) * click_gain

        return [
            _tone(healthy, f, L["compressor.tones"]),
            valve_clicks,
            _noise("compressor.mech", F["compressor.mech"], L["compressor.mech"]),
        ]
    if cfg.machine == "fan":
        return [
            _tone(_tone_table(seed, "fan", f, _FAN_ORDERS), f, L["fan.tones"]),
            _noise("fan.aero", F["fan.aero"], L["fan.aero"], 0.12, 0.25),
        ]
    # motor: magnetic hum at 2x mains, shaft harmonics (incl. the cooling fan), rotor-slot tones, light noise.
    slot_pass = MOTOR_ROTOR_BARS * f
    slot_freqs = np.array([slot_pass - 2 * MAINS_HZ, slot_pass, slot_pass + 2 * MAINS_HZ])
    slot_amps = np.array([1.0, 0.5, 1.0])
    ok = slot_freqs < 0.45 * SAMPLE_RATE
    slot_freqs, slot_amps = slot_freqs[ok], slot_amps[ok]
    slot_amps = slot_amps / math.sqrt(max(np.sum(slot_amps**2) / 2, 1e-12)) * L["motor.slot"]
    slot_phase = _rng(seed, "identity.motor.slot", 0).uniform(0, 2 * np.pi, 3)[: len(slot_freqs)]
    w = 2 * np.pi * slot_freqs / SAMPLE_RATE
    # These tones are not shaft harmonics, so no shared wavetable: a chunk of each is cos(w m + p) =
    # cos(p) cos(w m) - sin(p) sin(w m) with the chunk's start phase p and fixed cos/sin arrays over m.
    cos_wm, sin_wm = np.cos(np.outer(w, _NF)), np.sin(np.outer(w, _NF))

    def slot_tones(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        p = np.fmod(w * float(n[0]), 2 * np.pi) + slot_phase
        return (slot_amps * np.cos(p)) @ cos_wm - (slot_amps * np.sin(p)) @ sin_wm

    return [
        _tone(_tone_table(seed, "motor.hum", MAINS_HZ, _MOTOR_HUM_ORDERS), MAINS_HZ, L["motor.hum"]),
        _tone(_tone_table(seed, "motor.shaft", f, _MOTOR_SHAFT_ORDERS), f, L["motor.shaft"]),
        slot_tones,
        _noise("motor.noise", F["motor.noise"], L["motor.noise"]),
    ]


def _background_parts(cfg: SimConfig) -> list[_Part]:
    seed, F = cfg.seed, _filters()
    L = {key: _db(v) for key, v in _LEVELS.items()}
    if cfg.background == "quiet":
        return [_noise("bg.room", F["pink"], L["quiet.room"])]
    if cfg.background == "factory":
        distant = _tone_table(seed, "bg.distant", FACTORY_DISTANT_HZ, _DISTANT_ORDERS)
        env = F["impact.env"]
        rate = 0.3
        amp_fn = lambda g, m: g.uniform(0.3, 1.0, m)  # noqa: E731
        impact_gain = L["factory.impacts"] / _shot_rms(env, rate, 0.65, (1 - 0.3**3) / (3 * 0.7))

        def machinery(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            # A distant machine that starts and stops: on when a slow random curve is high, with ~10 s fades.
            v = _knots(seed, "bg.distant.gate", 20.0, n)
            gate = np.clip(0.5 + 1.5 * v, 0.0, 1.0)
            return _periodic(distant, FACTORY_DISTANT_HZ, n) * (gate * L["factory.machinery"])

        def impacts(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            e = _poisson_envelope(seed, "bg.impacts", rate, amp_fn, env, k)
            return rand.colored("bg.impacts.carrier", F["impact"], k) * e * impact_gain

        return [_noise("bg.room", F["pink"], L["factory.room"]), machinery, impacts]
    blower = _tone_table(seed, "bg.blower", HVAC_BLOWER_HZ, _BLOWER_ORDERS)

    def hvac(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        g = hvac_gate(seed, t)
        if not g.any():
            return np.zeros(_CHUNK)
        rumble = rand.colored("bg.hvac.rumble", F["rumble"], k) * L["hvac.rumble"]
        return (rumble + _periodic(blower, HVAC_BLOWER_HZ, n) * L["hvac.blower"]) * g

    return [_noise("bg.room", F["pink"], L["hvac.room"]), hvac]


HVAC_CYCLE_S = 240.0  # one thermostat cycle slot: the unit runs once per slot
_HVAC_START = (10.0, 70.0)  # switch-on time within the slot (s, uniform)
_HVAC_ON = (60.0, 150.0)  # run time (s, uniform)
_HVAC_RAMP = (3.0, 8.0)  # spin-up / spin-down time (s, uniform)


def hvac_gate(seed: int, t: np.ndarray) -> np.ndarray:
    """HVAC on/off gain in [0, 1] at times t (s): one run per 240 s slot, with raised-cosine ramps of 3-8 s."""
    j = np.floor(t / HVAC_CYCLE_S).astype(np.int64)
    j0 = int(j.min()) if len(j) else 0
    u = _indexed(seed, "bg.hvac.cycle", j0, int(j.max()) + 1 if len(j) else 0, 3)[j - j0]
    start = _HVAC_START[0] + (_HVAC_START[1] - _HVAC_START[0]) * u[:, 0]
    on = _HVAC_ON[0] + (_HVAC_ON[1] - _HVAC_ON[0]) * u[:, 1]
    ramp = _HVAC_RAMP[0] + (_HVAC_RAMP[1] - _HVAC_RAMP[0]) * u[:, 2]
    tau = t - j * HVAC_CYCLE_S
    x = np.clip(np.minimum(tau - start, start + on - tau) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def background_drift_db(seed: int, t: np.ndarray) -> np.ndarray:
    """Slow background level drift in dB at times t (s): +-1.5 dB knots every 4 min plus +-0.5 dB every 40 s."""
    n = np.asarray(t) * SAMPLE_RATE
    return 1.5 * _knots(seed, "bg.drift.slow", 240.0, n) + 0.5 * _knots(seed, "bg.drift.fast", 40.0, n)


# ----------------------------------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------------------------------


def _modulation_hz(cfg: SimConfig) -> float:
    # Cavitation collapses where pressure is lowest, which sweeps past with every vane (pump) or blade (fan).
    f = cfg.effective_shaft_hz
    return f * {"pump": PUMP_VANES, "fan": FAN_BLADES}.get(cfg.machine, 1)


def _fault_parts(cfg: SimConfig) -> list[_Part]:
    s, seed, f, F = cfg.severity, cfg.seed, cfg.effective_shaft_hz, _filters()
    if cfg.fault == "none" or s == 0.0:
        return []
    const = _rng(seed, f"fault.{cfg.fault}.const", 0).random(4)  # per-seed phases of the fault's periodicities

    if cfg.fault == "cavitation":
        rate = 800.0 * s  # bursts per second grow with severity ...
        sigma = 0.3  # ... and so does their (log-normal) amplitude, via the level normalisation below
        env = F["cavitation.env"]
        depth, fm = 0.4, _modulation_hz(cfg)
        gain = s * _db(_LEVELS["cavitation"]) / _shot_rms(env, rate, math.exp(sigma**2 / 2), math.exp(2 * sigma**2))
        gain /= math.sqrt(1 + depth**2 / 2)
        amp_fn = lambda g, m: g.lognormal(0.0, sigma, m)  # noqa: E731

        def cavitation(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            e = _poisson_envelope(seed, "fault.cavitation.events", rate, amp_fn, env, k)
            e *= 1 + depth * _periodic(_COS_TABLE, fm, n, const[0])
            return rand.colored("fault.cavitation.carrier", F["hp1k"], k) * e * gain

        return [cavitation]

    if cfg.fault in ("bearing-outer", "bearing-inner"):
        inner = cfg.fault == "bearing-inner"
        rate = cfg.bearing.bpfi(f) if inner else cfg.bearing.bpfo(f)
        res = F["bearing.res"]
        amp_jitter = 0.2
        # Inner race: the defect rides on the shaft and is loaded once per revolution -> AM at the shaft rate.
        m_dc, m_ac = (0.6, 0.4) if inner else (1.0, 0.0)
        power = (rate / SAMPLE_RATE * (1 + amp_jitter**2) * (m_dc**2 + m_ac**2 / 2) * res.energy
                 * _split_power(BEARING_RESONANCE_HZ))
        gain = s * _db(_LEVELS["bearing"]) / math.sqrt(power)

        def bearing(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            w0, w1 = k * _CHUNK - res.warm, (k + 1) * _CHUNK
            times, amp, _ = _locked_events(seed, f"fault.{cfg.fault}", rate, (0.0,), float(const[0]),
                                           BEARING_JITTER, amp_jitter, w0, w1)
            if inner:
                amp = amp * (m_dc + m_ac * np.cos(2 * np.pi * (np.mod(times * (f / SAMPLE_RATE), 1.0) + const[1])))
            return _ring(res, k, times, amp) * gain

        return [bearing]

    if cfg.fault == "compressor-valve-leak":
        # Hiss of gas forced back through the leaking valve; the leak flow follows the cylinder pressure, so it
        # swells once per revolution. Plus the change of the compressor's pulsation pattern (see _compressor_tables),
        # laid at this machine's shaft rate whatever the machine is (an additive stand-in on non-compressors).
        _, delta = _compressor_tables(seed, f, s)
        tone_gain = _db(_LEVELS["compressor.tones"])
        depth = 0.3
        hiss_gain = s * _db(_LEVELS["leak.hiss"]) / math.sqrt((1 - depth) ** 2 + depth**2 / 2)

        def leak(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            mod = (1 - depth) + depth * _periodic(_COS_TABLE, f, n, const[0])
            hiss = rand.colored("fault.leak.hiss", F["hp2k"], k) * mod * hiss_gain
            return hiss + _periodic(delta, f, n) * tone_gain

        return [leak]

    # electrical-arc: the arc re-strikes every half mains cycle near the voltage peak -> 2x mains AM of a
    # 2-8 kHz buzz; it is intermittent (episodes come and go) and its duty rises with severity.
    duty = 0.25 + 0.5 * s
    p_strike = 0.8
    shape = np.sin(np.pi * np.arange(_TABLE + 1) / _TABLE) ** 8  # envelope within each half cycle, peaky
    mean_shape2 = math.prod(range(15, 0, -2)) / math.prod(range(16, 0, -2))  # E[shape^2] = E[sin^16]
    mean_amp2 = p_strike * (0.16 + 0.24 + 0.12)  # E[(0.4 + 0.6 u)^2] for u ~ U(0, 1)
    gain = s * _db(_LEVELS["electrical-arc"]) / math.sqrt(mean_shape2 * mean_amp2)

    def arc(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        gate = np.clip((duty - _knots(seed, "fault.arc.gate", 0.25, n, normal=False)) / 0.08, 0.0, 1.0)
        if not gate.any():
            return np.zeros(_CHUNK)
        # Half cycle h of the mains strikes with probability p_strike and a random strength.
        h = np.floor(n * (2 * MAINS_HZ / SAMPLE_RATE)).astype(np.int64)
        h0 = int(h[0])
        u = _indexed(seed, "fault.arc.strikes", h0, int(h[-1]) + 1, 2)
        strike = (u[:, 0] < p_strike) * (0.4 + 0.6 * u[:, 1])
        env = _periodic(shape, 2 * MAINS_HZ, n) * strike[h - h0] * gate
        return rand.colored("fault.arc.carrier", F["hp2k"], k) * env * gain

    return [arc]


# ----------------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------------


def _soft_limit(x: np.ndarray) -> np.ndarray:
    """Identity below LIMIT_KNEE; above it a tanh curve that approaches, but never reaches, LIMIT_CEILING."""
    a = np.abs(x)
    over = a > LIMIT_KNEE
    if not over.any():
        return x
    span = LIMIT_CEILING - LIMIT_KNEE
    y = x.copy()
    y[over] = np.sign(x[over]) * (LIMIT_KNEE + span * np.tanh((a[over] - LIMIT_KNEE) / span))
    return y


class _Renderer:
    """Renders chunk k of a config; machine + background + fault (limited) or the fault alone."""

    def __init__(self, cfg: SimConfig, fault_only: bool = False) -> None:
        self.rand = _Rand(cfg.seed)
        self.seed = cfg.seed
        self.fault_only = fault_only
        self.machine = [] if fault_only else _machine_parts(cfg)
        self.background = [] if fault_only else _background_parts(cfg)
        self.fault = _fault_parts(cfg)

    def __call__(self, k: int) -> np.ndarray:
        n = k * _CHUNK + _N
        t = n / SAMPLE_RATE
        out = np.zeros(_CHUNK)
        for part in self.machine:
            out += part(self.rand, k, n, t)
        if self.background:
            bg = np.zeros(_CHUNK)
            for part in self.background:
                bg += part(self.rand, k, n, t)
            out += bg * np.exp(background_drift_db(self.seed, t) * (math.log(10) / 20))
        for part in self.fault:
            out += part(self.rand, k, n, t)
        if not self.fault_only:
            out = _soft_limit(out)
        return out.astype(np.float32)


def _n_samples(seconds: float, what: str) -> int:
    try:
        x = float(seconds)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number of seconds, got {seconds!r}") from None
    if not (math.isfinite(x) and x >= 0):
        raise DataError(f"{what} must be finite and >= 0, got {seconds!r}")
    return round(x * SAMPLE_RATE)


def _blocks(render: Callable[[int], np.ndarray], start: int, total: int, block: int) -> Iterator[np.ndarray]:
    end, pos = start + total, start
    cur_k, chunk = None, None
    out = np.empty(min(block, max(total, 1)), dtype=np.float32)
    filled = 0
    while pos < end:
        k, off = divmod(pos, _CHUNK)
        if k != cur_k:
            chunk, cur_k = render(k), k
        take = min(_CHUNK - off, end - pos, block - filled)
        out[filled : filled + take] = chunk[off : off + take]
        filled += take
        pos += take
        if filled == block or pos == end:
            yield out[:filled].copy()
            filled = 0


def _check_config(config: object) -> SimConfig:
    if not isinstance(config, SimConfig):
        raise DataError(f"expected a SimConfig, got {type(config).__name__}")
    return config


def iter_simulate(config: SimConfig, seconds: float, block_seconds: float = 10.0, *,
                  start_s: float = 0.0) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at 16 kHz covering ``[start_s, start_s + seconds)`` of the unit's timeline.

    The concatenation is identical whatever ``block_seconds`` is (deterministic per seed); the last block may be
    shorter. ``start_s`` continues the same unit (seed) later in time: consecutive ranges join seamlessly.
    Arguments are validated at the call, not at the first ``next()``.

    Raises:
        DataError: a non-SimConfig config, negative/non-finite seconds or start_s, or a block shorter than one sample.
    """
    config = _check_config(config)
    total = _n_samples(seconds, "seconds")
    start = _n_samples(start_s, "start_s")
    block = _n_samples(block_seconds, "block_seconds")
    if block < 1:
        raise DataError(f"block_seconds must be at least one sample (1/{SAMPLE_RATE} s), got {block_seconds!r}")
    return _blocks(_Renderer(config), start, total, block)


def simulate(config: SimConfig, seconds: float, *, start_s: float = 0.0) -> np.ndarray:
    """Simulate ``seconds`` of audio from ``start_s`` on: float32 ``[n_samples]``, equal to the concatenation of
    :func:`iter_simulate`."""
    config = _check_config(config)
    total = _n_samples(seconds, "seconds")
    start = _n_samples(start_s, "start_s")
    out = np.empty(total, dtype=np.float32)
    pos = 0
    for b in _blocks(_Renderer(config), start, total, 60 * SAMPLE_RATE):
        out[pos : pos + len(b)] = b
        pos += len(b)
    return out


def fault_signal(fault: str, severity: float, seconds: float, *, seed: int = 0, machine: str = "pump",
                 shaft_hz: float | None = None, start_s: float = 0.0,
                 bearing: BearingGeometry | None = None) -> np.ndarray:
    """Only the additive fault component (float32, 16 kHz), e.g. to inject a fault into real site audio.

    It is exactly what :func:`simulate` adds for the same seed, machine and shaft rate (before the soft limiter),
    and it covers ``[start_s, start_s + seconds)`` of that timeline, so consecutive calls join seamlessly. Levels are
    relative to a healthy machine at about -20 dBFS RMS; scale to the target recording's level as needed. For
    ``compressor-valve-leak`` the change of harmonic ratios cannot be applied to foreign audio, so this returns the
    hiss plus the *difference* pattern (leaking minus healthy pulsation) at the shaft rate of ``machine``.
    ``fault="none"`` or ``severity=0`` gives zeros.

    Raises:
        DataError: an unknown fault/machine, severity outside [0, 1], bad seconds/start_s/shaft_hz/seed.
    """
    cfg = SimConfig(machine=machine, fault=fault, severity=severity, seed=seed, shaft_hz=shaft_hz,
                    bearing=BearingGeometry() if bearing is None else bearing)
    total = _n_samples(seconds, "seconds")
    start = _n_samples(start_s, "start_s")
    out = np.zeros(total, dtype=np.float32)
    if cfg.fault == "none" or cfg.severity == 0.0 or total == 0:
        return out
    pos = 0
    for b in _blocks(_Renderer(cfg, fault_only=True), start, total, 60 * SAMPLE_RATE):
        out[pos : pos + len(b)] = b
        pos += len(b)
    return out


def injection_machine(machine: str | None) -> str:
    """The simulated machine whose faults are injected into a site's audio: the site's own type when the simulator
    models it (:data:`MACHINES`), else a pump."""
    return machine if machine in MACHINES else "pump"


def describe_injection(machine: str | None, faults: Sequence[str], severities: Sequence[float] = ()) -> dict:
    """What an injection of simulator faults into a site's audio is, in words a report can show beside its figures.

    ``machine`` is the site's machine type (``None`` or ``""`` when unknown). The result says which faults were
    injected and which machine they model, and carries a ``warning`` when that is not the site's machine: the
    figures then show that the model reacts to added sounds, not how well it detects this machine's real faults.
    """
    sim = injection_machine(machine)
    modelled = machine in MACHINES
    faults = [f for f in faults if f != "none"]
    sev = f" at severity {', '.join(f'{x:g}' for x in severities)}" if severities else ""
    text = f"simulated {sim} faults ({', '.join(faults)}){sev} mixed into the site's held-out normal audio"
    if modelled:
        warning = None
    else:
        what = f"machine type {machine!r}" if machine else "an unknown machine type (no site machine given)"
        warning = (f"{what} is not one the simulator models ({', '.join(MACHINES)}): these are simulated {sim} "
                   "faults, so their figures show that the model reacts to added fault sounds, not how well it "
                   "detects real faults of this machine; check detection on labelled recordings of it "
                   "(--validate-with DIR with normal_*/anomaly_* clips)")
    return {"faults": faults, "simulated_machine": sim, "site_machine": machine or None, "machine_modelled": modelled,
            "description": text, "warning": warning}


def write_audio(path: str | Path, config: SimConfig, minutes: float, *,
                progress: Callable[[float], None] | None = None, start_s: float = 0.0) -> Path:
    """Stream a simulation into a 16-bit PCM FLAC (or WAV, by suffix) at 16 kHz mono; ``start_s`` continues the
    same unit later in time (e.g. monitoring audio after a calibration recording).

    The file is written to a temp file beside ``path`` and renamed into place at the end, so an interrupted run
    (including KeyboardInterrupt raised by ``progress``) leaves no partial file at ``path``. ``progress(fraction)``
    is called after each 10 s block.

    Raises:
        DataError: an unsupported suffix, bad minutes or config.
    """
    path = Path(path)
    fmt = {".flac": "FLAC", ".wav": "WAV"}.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unsupported output suffix {path.suffix!r} for {path}; use .flac or .wav")
    config = _check_config(config)
    try:
        seconds = float(minutes) * 60.0
    except (TypeError, ValueError):
        raise DataError(f"minutes must be a number, got {minutes!r}") from None
    total = _n_samples(seconds, "minutes * 60")
    blocks = iter_simulate(config, seconds, start_s=start_s)
    with atomic_path(path, suffix=path.suffix) as tmp:
        with sf.SoundFile(str(tmp), mode="w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16",
                          format=fmt) as fh:
            done = 0
            for block in blocks:
                fh.write(block)
                done += len(block)
                if progress is not None:
                    progress(done / total)
    return path
