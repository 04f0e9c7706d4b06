"""Evaluation on labelled test recordings: AUC and pAUC per machine.

Labels come from file names (``normal_*`` → 0, ``anomaly_*`` → 1, as in the DCASE and MIMII layouts; also a
``_normal_`` / ``_anomaly_`` word inside the name, as DCASE 2021 and later name files). The machine
of a file is its parent directory, or the grandparent when the parent is called ``test``
(``<set>/<machine>/test/anomaly_0001.flac`` → ``<machine>``). Files below a directory named ``train`` are
never test data and are skipped, so the root of a ``<set>/<machine>/{train,test}`` tree can be passed as it is.

pAUC follows the DCASE challenge definition: the area under the ROC curve for false-positive rates in ``[0, p]``
divided by ``p`` (p = 0.1), without the McClish standardisation that ``sklearn.metrics.roc_auc_score(max_fpr=...)``
applies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from anomaly.errors import DataError

LABELS = {"normal": 0, "anomaly": 1}


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: int
    machine: str


def label_of(path: Path) -> int | None:
    """0 for ``normal_*``, 1 for ``anomaly_*``; also the DCASE 2021+ style where the label is one ``_``-separated
    word inside the name (``section_00_source_test_anomaly_0001.wav``); None otherwise."""
    words = path.stem.lower().split("_")
    if len(words) < 2:
        return None
    if words[0] in LABELS:
        return LABELS[words[0]]
    found = {LABELS[w] for w in words if w in LABELS}
    return found.pop() if len(found) == 1 else None


def machine_of(path: Path, root: Path) -> str:
    parent = path.parent
    if parent.name.lower() == "test":
        parent = parent.parent
    return parent.name or str(parent.resolve().name)


def find_labelled(test_dir: str | Path) -> list[LabelledFile]:
    """All ``normal_*``/``anomaly_*`` WAV/FLAC files under ``test_dir``, sorted.

    Raises:
        DataError: the directory is missing, holds no labelled files, or lacks one of the two classes.
    """
    root = Path(test_dir)
    if not root.is_dir():
        raise DataError(f"test directory not found: {root}")
    files = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".wav", ".flac") and p.is_file() and "train" not in p.relative_to(root).parts[:-1]:
            lab = label_of(p)
            if lab is not None:
                files.append(LabelledFile(p, lab, machine_of(p, root)))
    if not files:
        raise DataError(f"no normal_*/anomaly_* .wav/.flac files under {root} (labels come from file names)")
    have = {f.label for f in files}
    if have != {0, 1}:
        missing = "anomaly_*" if 1 not in have else "normal_*"
        raise DataError(f"{root} has no {missing} files: AUC needs both normal and anomalous examples")
    return files


def pauc(y_true: Sequence[int], y_score: Sequence[float], max_fpr: float = 0.1) -> float:
    """Partial AUC over FPR in ``[0, max_fpr]``, divided by ``max_fpr`` (DCASE definition)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.concatenate([fpr[:stop], [max_fpr]])
    y = np.concatenate([tpr[:stop], [np.interp(max_fpr, fpr, tpr)]])
    return float(np.trapezoid(y, x) / max_fpr)


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def auc_pauc(y_true: Sequence[int], y_score: Sequence[float], max_fpr: float = 0.1) -> tuple[float, float]:
    y_true = np.asarray(y_true)
    if len(set(y_true.tolist())) < 2:
        return float("nan"), float("nan")
    return float(roc_auc_score(y_true, y_score)), pauc(y_true, y_score, max_fpr)


def chance_levels(max_fpr: float = 0.1) -> dict[str, float]:
    """What AUC and pAUC give for scores that carry no information (a diagonal ROC curve), computed through the
    same functions as the metrics, so that they follow any change of definition: AUC 0.5; pAUC ``max_fpr / 2``
    without standardisation, 0.5 with McClish's."""
    auc, pa = auc_pauc([0, 1], [0.0, 0.0], max_fpr)
    return {"auc": round(auc, 6), "pauc": round(pa, 6)}


@dataclass
class Evaluation:
    """Clip scores and the metrics computed from them."""

    files: list[LabelledFile]
    scores: np.ndarray
    max_fpr: float = 0.1

    def metrics(self) -> dict:
        y = np.array([f.label for f in self.files])
        auc, pa = auc_pauc(y, self.scores, self.max_fpr)
        machines: dict[str, dict] = {}
        for m in sorted({f.machine for f in self.files}):
            idx = np.array([f.machine == m for f in self.files])
            ma, mp = auc_pauc(y[idx], self.scores[idx], self.max_fpr)
            machines[m] = {"auc": _nan_to_none(ma), "pauc": _nan_to_none(mp), "n_normal": int((y[idx] == 0).sum()),
                           "n_anomaly": int((y[idx] == 1).sum())}
        return {"auc": _nan_to_none(auc), "pauc": _nan_to_none(pa), "max_fpr": self.max_fpr,
                "chance": chance_levels(self.max_fpr), "n_files": len(self.files), "machines": machines}


def evaluate(score_file: Callable[[Path], float], test_dir: str | Path, max_fpr: float = 0.1,
             on_file: Callable[[int, int], None] | None = None) -> Evaluation:
    """Score every labelled file with ``score_file`` and return the evaluation."""
    files = find_labelled(test_dir)
    scores = []
    for i, f in enumerate(files):
        scores.append(score_file(f.path))
        if on_file:
            on_file(i + 1, len(files))
    return Evaluation(files, np.asarray(scores, float), max_fpr)
