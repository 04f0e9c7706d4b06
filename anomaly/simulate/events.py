"""Event processes: impulses at fractional sample positions, events locked to a rotation, Poisson bursts, and their
levels (Campbell's theorem)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import signal

from anomaly.simulate.config import _CHUNK, SAMPLE_RATE
from anomaly.simulate.filters import _Filter
from anomaly.simulate.streams import _indexed, _rng


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
