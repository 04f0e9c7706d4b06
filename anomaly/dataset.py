"""Labelled clip sets for the fault classifier: writing simulated ones and loading user ones.

Two layouts are read by :func:`load_dataset`:

* **one folder per class**: ``DIR/<class>/*.wav|*.flac`` (searched recursively inside each class folder); each clip
  has exactly one label, the folder name;
* **a labels file**: ``DIR/labels.csv`` with rows ``file,labels`` where ``file`` is relative to ``DIR`` (or absolute)
  and ``labels`` are class names separated by ``;`` (a clip may carry several simultaneous conditions). A first row
  ``file,labels`` is taken as a header. Blank lines and lines starting with ``#`` are skipped.

Either gives ``(files, Y, classes)``: the clip paths, a multi-hot ``[n_files, n_classes]`` uint8 matrix and the sorted
class names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.errors import DataError
from anomaly.simulate import BACKGROUNDS, MACHINES, SimConfig, write_audio

SIM_CLASSES = ("normal", "cavitation", "bearing-outer", "bearing-inner", "compressor-valve-leak", "electrical-arc")
LABELS_FILE = "labels.csv"
CLIP_SECONDS = 10.0
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class LabelledSet:
    files: list[Path]
    Y: np.ndarray  # [n_files, n_classes] uint8 multi-hot
    classes: list[str]
    layout: str  # "folders" | "labels.csv"

    def __iter__(self):  # files, Y, classes = load_dataset(...)
        return iter((self.files, self.Y, self.classes))

    def counts(self) -> dict[str, int]:
        return {c: int(n) for c, n in zip(self.classes, self.Y.sum(0), strict=True)}


def _audio_in(d: Path) -> list[Path]:
    return sorted(q for q in d.rglob("*") if q.suffix.lower() in AUDIO_SUFFIXES and q.is_file())


def load_dataset(directory: str | Path) -> LabelledSet:
    """Load a labelled clip set (``labels.csv`` if present, else one folder per class).

    Raises:
        DataError: a missing directory, a corrupt labels file (with its line number), a file named in labels.csv
            that does not exist, an empty class folder, or fewer than 2 classes.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"data directory not found: {d}")
    if (d / LABELS_FILE).is_file():
        return _load_labels_csv(d)
    return _load_folders(d)


def _load_folders(d: Path) -> LabelledSet:
    sub = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sub:
        loose = " (it holds audio files directly: put them in one folder per class or list them in labels.csv)" \
            if _audio_in(d) else ""
        raise DataError(f"{d}: no class folders and no {LABELS_FILE}{loose}")
    files: list[Path] = []
    labels: list[int] = []
    for k, c in enumerate(sub):
        found = _audio_in(c)
        if not found:
            raise DataError(f"class folder {c} is empty (no .wav or .flac files)")
        files += found
        labels += [k] * len(found)
    classes = [c.name for c in sub]
    if len(classes) < 2:
        raise DataError(f"{d}: need at least 2 classes, found only {classes[0]!r}")
    Y = np.zeros((len(files), len(classes)), np.uint8)
    Y[np.arange(len(files)), labels] = 1
    return LabelledSet(files, Y, classes, "folders")


def _load_labels_csv(d: Path) -> LabelledSet:
    path = d / LABELS_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    rows: list[tuple[Path, list[str]]] = []
    seen: dict[Path, int] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise DataError(f"{path} line {lineno}: expected 2 fields (file,labels separated by ';'), got {len(row)}")
        name, lab = row[0].strip(), row[1].strip()
        if lineno == 1 and name.lower() == "file" and lab.lower() == "labels":
            continue
        if not name:
            raise DataError(f"{path} line {lineno}: empty file name")
        labs = [x.strip() for x in lab.split(";")]
        if not lab or any(not x for x in labs):
            raise DataError(f"{path} line {lineno}: empty label for {name} (use class names separated by ';')")
        f = Path(name) if Path(name).is_absolute() else d / name
        if not f.is_file():
            raise DataError(f"{path} line {lineno}: unknown file {name} (not found under {d})")
        if f.suffix.lower() not in AUDIO_SUFFIXES:
            raise DataError(f"{path} line {lineno}: {name} is not a .wav or .flac file")
        key = f.resolve()
        if key in seen:
            raise DataError(f"{path} line {lineno}: {name} is listed twice (first on line {seen[key]}); "
                            "put all its labels on one line")
        seen[key] = lineno
        rows.append((f, list(dict.fromkeys(labs))))
    if not rows:
        raise DataError(f"{path}: no labelled files")
    classes = sorted({c for _, labs in rows for c in labs})
    if len(classes) < 2:
        raise DataError(f"{path}: need at least 2 classes, found only {classes[0]!r}")
    idx = {c: i for i, c in enumerate(classes)}
    Y = np.zeros((len(rows), len(classes)), np.uint8)
    for i, (_, labs) in enumerate(rows):
        Y[i, [idx[c] for c in labs]] = 1
    return LabelledSet([f for f, _ in rows], Y, classes, LABELS_FILE)


def write_sim_dataset(out: str | Path, per_class: int, seed: int = 0, severity_range: tuple[float, float] = (0.3, 1.0),
                      seconds: float = CLIP_SECONDS, classes: tuple[str, ...] = SIM_CLASSES,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``per_class`` simulated clips for each class into ``out/<class>/``, plus ``out/simulation.csv``.

    Machine and background cycle through all combinations (shuffled per class by ``seed``), severity is uniform in
    ``severity_range`` (``normal`` clips have severity 0) and every clip has its own simulator seed. The same
    arguments give the same files.

    Raises:
        DataError: per_class < 1, a bad severity range, an unknown class, or ``out`` holding other files.
    """
    out = Path(out)
    lo, hi = (float(x) for x in severity_range)
    if per_class < 1:
        raise DataError(f"--per-class must be at least 1, got {per_class}")
    if not 0.0 <= lo <= hi <= 1.0:
        raise DataError(f"--severity-range must satisfy 0 <= LO <= HI <= 1, got {lo:g} {hi:g}")
    for c in classes:
        if c not in SIM_CLASSES:
            raise DataError(f"unknown class {c!r}; choose from {', '.join(SIM_CLASSES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty directory (choose a new --dataset directory)")
    rng = np.random.default_rng(seed)
    combos = [(m, b) for m in MACHINES for b in BACKGROUNDS]
    meta = ["file,class,machine,background,severity,seed"]
    total, done = per_class * len(classes), 0
    for ci, c in enumerate(classes):
        order = rng.permutation(len(combos))
        for i in range(per_class):
            m, b = combos[order[i % len(combos)]]
            sev = 0.0 if c == "normal" else float(rng.uniform(lo, hi))
            clip_seed = int(seed * 1_000_003 + ci * 100_003 + i) % (2**31)
            cfg = SimConfig(machine=m, fault="none" if c == "normal" else c, severity=round(sev, 4), background=b,
                            seed=clip_seed)
            rel = f"{c}/{c}_{i:04d}.flac"
            write_audio(out / rel, cfg, seconds / 60.0)
            meta.append(f"{rel},{c},{m},{b},{cfg.severity:g},{clip_seed}")
            done += 1
            if progress is not None:
                progress(done, total)
    (out / "simulation.csv").write_text("\n".join(meta) + "\n")
    return out


__all__ = ["LABELS_FILE", "SIM_CLASSES", "LabelledSet", "load_dataset", "write_sim_dataset"]
