"""Rendering: machine + background + fault, soft-limited, chunk by chunk, into blocks of any size; the public
entry points :func:`simulate`, :func:`iter_simulate`, :func:`fault_signal` and :func:`write_audio`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from anomaly.atomic import atomic_path
from anomaly.errors import DataError
from anomaly.simulate.config import _CHUNK, _N, LIMIT_CEILING, LIMIT_KNEE, SAMPLE_RATE, BearingGeometry, SimConfig
from anomaly.simulate.faults import _fault_parts
from anomaly.simulate.parts import _background_parts, _machine_parts, background_drift_db
from anomaly.simulate.streams import _Rand


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
