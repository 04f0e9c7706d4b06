"""Random streams that can be evaluated at any chunk / index independently: every value is fixed by
``(seed, stream, index)``, so any block size and start offset give bit-identical samples."""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np
from scipy import signal

from anomaly.simulate.config import _CHUNK, _GROUP, _KEY_OFFSET, SAMPLE_RATE
from anomaly.simulate.filters import _Filter


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
