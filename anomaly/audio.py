"""Audio input: WAV/FLAC via soundfile, block-wise, resampled to the front end's rate, mixed or picked to mono.

Everything is streamed in blocks, so a 24 h recording is never held in memory at once. Problems that make a file
unusable raise :class:`~anomaly.errors.AudioError` with a one-line message; problems that only make it suspicious
(all-zero audio, clipping) are reported as :class:`AudioWarning` through :mod:`warnings` once the file is read.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from anomaly.errors import AudioError, HumwatchWarning, one_line, shown
from anomaly.features import FeatureParams, FrameStream, PatchStream, patch_starts

AUDIO_SUFFIXES = (".wav", ".flac")
CLIP_LEVEL = 0.999  # |sample| at or above this share of full scale counts as clipped
CLIP_WARN_SHARE = 1e-4  # warn when at least 0.01 % of samples are clipped
MAX_ABS_SAMPLE = 1000.0  # float files may exceed full scale a little; a sample beyond this is not audio


class AudioWarning(HumwatchWarning):
    """Audio that is usable but suspicious (all zeros, clipping)."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _sf_name(path: Path) -> str | bytes:
    """The name soundfile opens: the path's bytes when it is not valid UTF-8 (libsndfile cannot take it as text)."""
    s = str(path)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s)


def audio_info(path: str | Path) -> AudioInfo:
    """Read the header of an audio file. Raises AudioError when it is missing or not audio."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {shown(path)}") from None
    except OSError as e:
        raise AudioError(f"{shown(path)}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"expected an audio file, got a directory: {shown(path)}")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(f"{shown(path)}: not a regular file (a device or pipe?)")
    try:
        i = sf.info(_sf_name(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError depending on the damage
        raise AudioError(f"{shown(path)}: not a readable WAV/FLAC file ({one_line(e)})") from None
    if not 0 < i.samplerate <= 10_000_000 or not 0 < i.channels <= 1024:
        raise AudioError(f"{shown(path)}: implausible header ({i.samplerate} Hz, {i.channels} channels)")
    return AudioInfo(path, int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)



class StreamResampler:
    """Polyphase resampling (``scipy.signal.resample_poly``) applied block by block.

    Each output sample depends only on input samples within the FIR filter's half-length, so resampling a window of
    input with that much context on both sides, aligned to a multiple of the decimation factor, gives exactly the
    samples ``resample_poly`` gives on the whole signal.
    """

    def __init__(self, sr_in: int, sr_out: int):
        g = math.gcd(sr_in, sr_out)
        self.up, self.down = sr_out // g, sr_in // g
        half_len = 10 * max(self.up, self.down)  # scipy's default filter half-length
        self.context = half_len // self.up + 2
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # global index of _buf[0], kept a multiple of `down`
        self._n_in = 0
        self._next_out = 0

    @property
    def identity(self) -> bool:
        return self.up == self.down

    def _run(self, final: bool) -> np.ndarray:
        if self.identity:
            out, self._buf = self._buf, np.zeros(0, np.float32)
            return out
        end_in = self._n_in
        if final:
            last_out = -(-end_in * self.up // self.down)  # ceil: resample_poly's output length
        else:
            last_out = max(0, ((end_in - self.context) * self.up) // self.down)
        if last_out <= self._next_out:
            return np.zeros(0, np.float32)
        y = signal.resample_poly(self._buf, self.up, self.down).astype(np.float32)
        first = self._buf_start * self.up // self.down
        out = y[self._next_out - first: last_out - first]
        self._next_out = last_out
        # Keep enough input for the next outputs' left context, starting at a multiple of `down`.
        keep_from = max(0, (self._next_out * self.down) // self.up - self.context)
        keep_from -= keep_from % self.down
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:]
            self._buf_start = keep_from
        return out

    def push(self, x: np.ndarray) -> np.ndarray:
        """Add input samples; return the output samples that are now final."""
        self._buf = np.concatenate([self._buf, np.asarray(x, np.float32)])
        self._n_in += len(x)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        """Return the remaining output samples at the end of the input."""
        return self._run(final=True)


@dataclass
class ReadStats:
    """Filled in while a file is read."""

    samples: int = 0
    clipped: int = 0
    nonzero: bool = False

    @property
    def clipped_share(self) -> float:
        return self.clipped / self.samples if self.samples else 0.0


def iter_blocks(
    path: str | Path,
    sample_rate: int = 16000,
    channel: str | int = "mean",
    block_seconds: float = 60.0,
    min_samples: int = 0,
    stats: ReadStats | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at ``sample_rate`` from a WAV/FLAC file of any rate, format and channel count.

    Args:
        path: the file.
        sample_rate: output rate (polyphase resampling when the file's rate differs).
        channel: ``"mean"`` to average all channels, or a 0-based channel index.
        block_seconds: input read per block.
        min_samples: raise AudioError when the file (after resampling) holds fewer samples than this.
        stats: filled with sample, clipping and silence counts while reading.

    Raises:
        AudioError: missing file, not audio, empty, too short, bad channel, NaN/Inf samples, a read error.
    """
    info = audio_info(path)
    name = shown(info.path)
    if info.frames <= 0 or info.sample_rate <= 0:
        raise AudioError(f"{name}: empty audio file (0 samples)")
    if channel != "mean" and not (isinstance(channel, int) and 0 <= channel < info.channels):
        raise AudioError(f"{name}: channel {channel!r} does not exist (file has {info.channels} channels)")
    n_out = -(-info.frames * sample_rate // info.sample_rate)
    if n_out < min_samples:
        raise AudioError(
            f"{name}: {info.duration_s:.3f} s of audio is shorter than one patch "
            f"({min_samples / sample_rate:.3f} s needed)"
        )
    stats = stats if stats is not None else ReadStats()
    rs = StreamResampler(info.sample_rate, sample_rate)
    block = max(1, int(block_seconds * info.sample_rate))
    pos = 0
    try:
        with sf.SoundFile(_sf_name(info.path)) as f:
            while True:
                try:
                    x = f.read(block, dtype="float32", always_2d=True)
                except Exception as e:
                    at = pos / info.sample_rate
                    raise AudioError(f"{name}: read error at {at:.1f} s ({one_line(e)})") from None
                if x.shape[0] == 0:
                    break
                if not np.isfinite(x).all():
                    bad = pos + int(np.argmax(~np.isfinite(x).all(axis=1)))
                    raise AudioError(f"{name}: NaN or Inf sample at {bad / info.sample_rate:.3f} s")
                peak = float(np.abs(x).max())
                if peak > MAX_ABS_SAMPLE:
                    bad = pos + int(np.argmax((np.abs(x) > MAX_ABS_SAMPLE).any(axis=1)))
                    raise AudioError(f"{name}: sample value {peak:.3g} at {bad / info.sample_rate:.3f} s is not audio "
                                     f"(float samples must stay within ±{MAX_ABS_SAMPLE:g} of full scale)")
                stats.clipped += int((np.abs(x) >= CLIP_LEVEL).sum())
                stats.samples += x.size
                stats.nonzero = stats.nonzero or bool(np.any(x))
                mono = x.mean(axis=1) if channel == "mean" else x[:, channel]
                pos += x.shape[0]
                y = rs.push(mono)
                if y.size:
                    yield y
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{name}: not a readable WAV/FLAC file ({one_line(e)})") from None
    y = rs.flush()
    if y.size:
        yield y
    if pos == 0:
        raise AudioError(f"{name}: empty audio file (0 samples)")
    if not stats.nonzero:
        warnings.warn(AudioWarning(f"{name}: all samples are zero (microphone muted or unplugged?)"), stacklevel=2)
    elif stats.clipped_share >= CLIP_WARN_SHARE:
        warnings.warn(
            AudioWarning(f"{name}: {stats.clipped_share:.2%} of samples are clipped (reduce the input gain)"),
            stacklevel=2,
        )


def load(path: str | Path, sample_rate: int = 16000, channel: str | int = "mean", min_samples: int = 0) -> np.ndarray:
    """Read a whole file as float32 mono at ``sample_rate`` (for clips; use :func:`iter_blocks` for long files)."""
    blocks = list(iter_blocks(path, sample_rate, channel, min_samples=min_samples))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def iter_patches(
    path: str | Path,
    params: FeatureParams,
    offsets: np.ndarray | None = None,
    channel: str | int = "mean",
    block_seconds: float = 60.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream a file as log-mel patches.

    Yields:
        ``(start_s [k], patches [k, patch_frames, n_mels])`` per block; start times are seconds from the file start.
    """
    stream = PatchStream(params, offsets)
    for block in iter_blocks(path, params.sample_rate, channel, block_seconds, min_samples=params.min_samples):
        before = stream.patches_emitted
        p = stream.push(block)
        if len(p):
            yield patch_starts(stream.patches_emitted, params)[before:], p


def file_patches(path: str | Path, params: FeatureParams, offsets: np.ndarray | None = None,
                 channel: str | int = "mean") -> tuple[np.ndarray, np.ndarray]:
    """All patches of one file: ``(start_s [n], patches [n, patch_frames, n_mels])``."""
    starts, parts = [], []
    for s, p in iter_patches(path, params, offsets, channel):
        starts.append(s)
        parts.append(p)
    return np.concatenate(starts), np.concatenate(parts)


def file_log_mel(path: str | Path, params: FeatureParams, offsets: np.ndarray | None = None,
                 channel: str | int = "mean") -> np.ndarray:
    """Log-mel frames ``[frames, n_mels]`` of a whole file, computed block-wise."""
    stream = FrameStream(params, offsets)
    parts = [stream.push(b) for b in iter_blocks(path, params.sample_rate, channel, min_samples=params.min_samples)]
    return np.concatenate(parts)


def find_audio(paths: list[str | Path] | tuple[str | Path, ...], unreadable: list[str] | None = None) -> list[Path]:
    """Expand files and directories (recursively, not following symlinked directories) into a sorted list of
    WAV/FLAC files.

    A subdirectory that cannot be read is reported, never silently skipped: appended to ``unreadable`` when given
    (the caller counts and names it), else an :class:`AudioWarning`.

    Raises AudioError for a path that does not exist, a directory that cannot be read, or one without audio.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            errors: list[OSError] = []
            found = []
            for d, _, files in os.walk(p, onerror=errors.append):
                found += [Path(d) / f for f in files if Path(f).suffix.lower() in AUDIO_SUFFIXES]
            found.sort()  # pipes, devices, dangling links with an audio name stay: reading them says why they fail
            top = [e for e in errors if Path(e.filename or "") == p]
            if top:
                raise AudioError(f"cannot read the directory {shown(p)} ({top[0].strerror})")
            for e in errors:
                msg = f"cannot read the directory {shown(e.filename)} ({e.strerror}): its files are not included"
                if unreadable is not None:
                    unreadable.append(msg)
                else:
                    warnings.warn(AudioWarning(msg), stacklevel=2)
            if not found:
                raise AudioError(f"no .wav or .flac files under {shown(p)}" + (" that could be read" if errors else ""))
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise AudioError(f"audio file or directory not found: {shown(p)}")
    return out
