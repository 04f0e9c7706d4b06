"""Evaluation on labelled test recordings: AUC and pAUC per machine.

Labels come from file names (``normal_*`` → 0, ``anomaly_*`` → 1, as in the DCASE and MIMII layouts; also a
``_normal_`` / ``_anomaly_`` word inside the name, as DCASE 2021 and later name files). The machine
of a file is its parent directory, or the grandparent when the parent is called ``test``
(``<set>/<machine>/test/anomaly_0001.flac`` → ``<machine>``). Files below a directory named ``train`` are
never test data and are skipped, so the root of a ``<set>/<machine>/{train,test}`` tree can be passed as it is.

pAUC follows the DCASE challenge evaluator (and every published DCASE table): the *standardised* partial AUC of
``sklearn.metrics.roc_auc_score(y, s, max_fpr=0.1)``, i.e. McClish's correction of the area under the ROC curve for
false-positive rates in ``[0, p]``, so that chance is 0.5 and a perfect detector 1.0. The unstandardised area divided
by ``p`` (chance ``p / 2`` = 0.05) is kept as :func:`partial_area` (``pauc_raw`` in the metrics) for comparison with
figures reported that way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from anomaly.errors import DataError

LABELS = {"normal": 0, "anomaly": 1}
MAX_FPR = 0.1
PAUC_DEFINITION = ("standardised partial AUC over false-positive rates 0-{p:g} (McClish; sklearn roc_auc_score "
                   "max_fpr={p:g}, as the DCASE evaluator): chance 0.5, perfect 1.0")
PAUC_RAW_DEFINITION = "area under the ROC curve over false-positive rates 0-{p:g}, divided by {p:g} (chance {c:g})"


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


def partial_area(y_true: Sequence[int], y_score: Sequence[float], max_fpr: float = MAX_FPR) -> float:
    """Area under the ROC curve over FPR in ``[0, max_fpr]``, divided by ``max_fpr`` (not standardised: chance is
    ``max_fpr / 2``)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.concatenate([fpr[:stop], [max_fpr]])
    y = np.concatenate([tpr[:stop], [np.interp(max_fpr, fpr, tpr)]])
    return float(np.trapezoid(y, x) / max_fpr)


def pauc(y_true: Sequence[int], y_score: Sequence[float], max_fpr: float = MAX_FPR) -> float:
    """Standardised partial AUC over FPR in ``[0, max_fpr]`` (McClish; ``roc_auc_score(..., max_fpr=...)``, the DCASE
    evaluator's pAUC): chance 0.5, perfect 1.0."""
    return float(roc_auc_score(y_true, y_score, max_fpr=max_fpr))


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def auc_pauc(y_true: Sequence[int], y_score: Sequence[float], max_fpr: float = MAX_FPR) -> tuple[float, float]:
    """AUC and the standardised pAUC (NaN for both when one class is missing)."""
    y_true = np.asarray(y_true)
    if len(set(y_true.tolist())) < 2:
        return float("nan"), float("nan")
    return float(roc_auc_score(y_true, y_score)), pauc(y_true, y_score, max_fpr)


def chance_levels(max_fpr: float = MAX_FPR) -> dict[str, float]:
    """What AUC, pAUC and the raw partial area give for scores that carry no information (a diagonal ROC curve),
    computed through the same functions as the metrics: AUC 0.5, pAUC 0.5, raw partial area ``max_fpr / 2``."""
    y, s = [0, 1], [0.0, 0.0]
    auc, pa = auc_pauc(y, s, max_fpr)
    return {"auc": round(auc, 6), "pauc": round(pa, 6), "pauc_raw": round(partial_area(y, s, max_fpr), 6)}


def definitions(max_fpr: float = MAX_FPR) -> dict[str, str]:
    """What the metrics' pAUC figures mean (printed by ``evaluate`` and stored in its JSON)."""
    return {"pauc": PAUC_DEFINITION.format(p=max_fpr),
            "pauc_raw": PAUC_RAW_DEFINITION.format(p=max_fpr, c=chance_levels(max_fpr)["pauc_raw"])}


def _metric_row(y: np.ndarray, s: np.ndarray, max_fpr: float) -> dict:
    auc, pa = auc_pauc(y, s, max_fpr)
    raw = partial_area(y, s, max_fpr) if len(set(y.tolist())) == 2 else float("nan")
    return {"auc": _nan_to_none(auc), "pauc": _nan_to_none(pa), "pauc_raw": _nan_to_none(raw)}


@dataclass
class Evaluation:
    """Clip scores and the metrics computed from them."""

    files: list[LabelledFile]
    scores: np.ndarray
    max_fpr: float = MAX_FPR

    def metrics(self) -> dict:
        y = np.array([f.label for f in self.files])
        machines: dict[str, dict] = {}
        for m in sorted({f.machine for f in self.files}):
            idx = np.array([f.machine == m for f in self.files])
            machines[m] = {**_metric_row(y[idx], self.scores[idx], self.max_fpr),
                           "n_normal": int((y[idx] == 0).sum()), "n_anomaly": int((y[idx] == 1).sum())}
        return {**_metric_row(y, self.scores, self.max_fpr), "max_fpr": self.max_fpr,
                "definitions": definitions(self.max_fpr), "chance": chance_levels(self.max_fpr),
                "n_files": len(self.files), "machines": machines}


def evaluate(score_file: Callable[[Path], float], test_dir: str | Path, max_fpr: float = MAX_FPR,
             on_file: Callable[[int, int], None] | None = None) -> Evaluation:
    """Score every labelled file with ``score_file`` and return the evaluation."""
    files = find_labelled(test_dir)
    scores = []
    for i, f in enumerate(files):
        scores.append(score_file(f.path))
        if on_file:
            on_file(i + 1, len(files))
    return Evaluation(files, np.asarray(scores, float), max_fpr)
