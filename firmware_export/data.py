"""The patches an export needs: representative data for int8 calibration, the site's threshold part (to re-derive
the threshold on int8 scores) and its held-out part plus injected simulator faults (for parity and AUC).

The calibration audio is cut exactly as :mod:`calibration.calibrate` cuts it: patches in recording order across the
files, one-minute chunks of ``CHUNK_PATCHES`` patches alternating two for the threshold, one held out (under three
chunks: every third patch held out). Faults are mixed into held-out audio as ``calibration.calibrate.inject_faults``
does: the simulator's fault component scaled by the audio's RMS / 0.1, then clipped to ±1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.audio import iter_blocks
from anomaly.features import FeatureParams, PatchStream, log_mel, patches
from anomaly.simulate import fault_signal, injection_machine
from calibration.calibrate import split_masks
from firmware_export.errors import ExportError

INJECT_FAULTS = ("cavitation", "bearing-outer", "electrical-arc")
INJECT_SEVERITY = 0.5
FAULT_PATCHES = 64  # per fault (about a minute of audio each)
PIECE_PATCHES = 31  # held-out audio is cut into ~30 s pieces, as calibration's fault injection does
MAX_REPRESENTATIVE = 400
MAX_CHECK = 1500


@dataclass
class FileAudio:
    path: Path
    n_patches: int


@dataclass
class ExportData:
    """Raw (not normalised) log-mel patches ``[n, T, M]`` for each role."""

    threshold: np.ndarray
    check: np.ndarray
    faults: np.ndarray
    fault_names: list[str]
    representative: np.ndarray
    files: list[FileAudio] = field(default_factory=list)
    extra_faults: np.ndarray | None = None  # faults injected for the classifier only (its classes beyond INJECT_FAULTS)
    extra_fault_names: list[str] = field(default_factory=list)
    representative_files: list[Path] = field(default_factory=list)
    split: str = ""


def read_patches(files: Sequence[Path], params: FeatureParams, offsets: np.ndarray | None) -> tuple[np.ndarray,
                                                                                                   list[FileAudio]]:
    """All patches of the files in order (streamed block-wise, as calibration reads them)."""
    parts, info = [], []
    for f in files:
        stream = PatchStream(params, offsets)
        n0 = sum(len(p) for p in parts)
        for block in iter_blocks(f, params.sample_rate, min_samples=params.min_samples):
            X = stream.push(block)
            if len(X):
                parts.append(X)
        info.append(FileAudio(Path(f), sum(len(p) for p in parts) - n0))
    if not parts:
        raise ExportError("the audio holds no complete patch")
    return np.concatenate(parts).astype(np.float32, copy=False), info


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, last)`` of sorted indices."""
    if idx.size == 0:
        return []
    breaks = np.nonzero(np.diff(idx) != 1)[0]
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _extract(path: Path, ranges: list[tuple[int, int]], params: FeatureParams) -> list[np.ndarray]:
    """Sample ranges ``[a, b)`` (sorted) of one file, streamed block-wise."""
    out = [np.zeros(b - a, np.float32) for a, b in ranges]
    pos = 0
    last = max(b for _, b in ranges)
    for block in iter_blocks(path, params.sample_rate, min_samples=params.min_samples):
        end = pos + block.size
        for (a, b), buf in zip(ranges, out, strict=True):
            lo, hi = max(a, pos), min(b, end)
            if lo < hi:
                buf[lo - a: hi - a] = block[lo - pos: hi - pos]
        pos = end
        if pos >= last:
            break
    return out


def heldout_pieces(files: list[FileAudio], check: np.ndarray, params: FeatureParams,
                   need_patches: int) -> list[np.ndarray]:
    """Raw audio of held-out patches, as pieces of up to ``PIECE_PATCHES`` contiguous patches (enough for
    ``need_patches`` patches at most)."""
    H, W = params.patch_hop_samples, params.min_samples
    pieces, got, base = [], 0, 0
    for fa in files:
        local = np.nonzero(check[base: base + fa.n_patches])[0]
        base += fa.n_patches
        ranges = []
        for j0, j1 in _runs(local):
            for s in range(j0, j1 + 1, PIECE_PATCHES):
                e = min(j1, s + PIECE_PATCHES - 1)
                if got >= need_patches:
                    break
                ranges.append((s * H, e * H + W))
                got += e - s + 1
        if ranges:
            pieces += _extract(fa.path, ranges, params)
        if got >= need_patches:
            break
    return pieces


def inject(pieces: list[np.ndarray], params: FeatureParams, offsets: np.ndarray | None, machine: str,
           seed: int = 0, faults: Sequence[str] = INJECT_FAULTS) -> tuple[np.ndarray, list[str]]:
    """Fault patches ``[n, T, M]`` and their fault names: each of ``faults`` (simulator fault names) at
    ``INJECT_SEVERITY`` mixed into held-out pieces until ``FAULT_PATCHES`` patches."""
    machine = injection_machine(machine)
    if not pieces:
        raise ExportError("no held-out audio to inject faults into")
    out, names = [], []
    for fi, fault in enumerate(faults):
        got, k = 0, 0
        start = fi * len(pieces) // len(faults)  # different faults use different audio where there is enough
        while got < FAULT_PATCHES and k < 4 * len(pieces):
            base = pieces[(start + k) % len(pieces)]
            rms = float(np.sqrt(np.mean(np.square(base, dtype=np.float64)))) or 1e-4
            add = fault_signal(fault, INJECT_SEVERITY, base.size / params.sample_rate, seed=seed + 17 * fi + k,
                               machine=machine)
            mixed = np.clip(base + add[: base.size] * (rms / 0.1), -1.0, 1.0)
            X = patches(log_mel(mixed, params, offsets), params)[: FAULT_PATCHES - got]
            out.append(X)
            names += [fault] * len(X)
            got += len(X)
            k += 1
    return np.concatenate(out).astype(np.float32, copy=False), names


def evenly(X: np.ndarray, k: int) -> np.ndarray:
    if len(X) <= k:
        return X
    return X[np.linspace(0, len(X) - 1, k).round().astype(int)]


def gather(files: Sequence[Path], params: FeatureParams, offsets: np.ndarray | None, machine: str,
           chunk_patches: int, representative_files: Sequence[Path] | None = None, seed: int = 0,
           extra_faults: Sequence[str] = ()) -> ExportData:
    """Read the audio and build every patch set an export needs.

    Args:
        extra_faults: simulator faults injected (into the same held-out audio, at the same severity) besides
            ``INJECT_FAULTS``, kept apart in ``ExportData.extra_faults`` (the classifier's other classes).
    """
    X, info = read_patches(files, params, offsets)
    thr, check, how = split_masks(len(X), chunk_patches)
    if check.sum() < 2 or thr.sum() < 2:
        raise ExportError(f"only {len(X)} patches of audio ({len(X) * params.patch_seconds:.0f} s): need at least "
                          "6 to split into threshold and held-out parts (give a few minutes)")
    pieces = heldout_pieces(info, check, params, FAULT_PATCHES * len(INJECT_FAULTS))
    F, names = inject(pieces, params, offsets, machine, seed)
    extra = [f for f in dict.fromkeys(extra_faults) if f not in INJECT_FAULTS]
    E, enames = inject(pieces, params, offsets, machine, seed + 1000, extra) if extra else (None, [])
    if representative_files:
        R, _ = read_patches(representative_files, params, offsets)
    else:
        R = X[thr]
    return ExportData(threshold=X[thr], check=evenly(X[check], MAX_CHECK), faults=F, fault_names=names,
                      representative=evenly(R, MAX_REPRESENTATIVE), files=info,
                      representative_files=list(representative_files or []), split=how, extra_faults=E,
                      extra_fault_names=enames)
