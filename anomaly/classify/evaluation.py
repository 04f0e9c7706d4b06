"""Evaluation of the fault classifier on labelled clips: per-class average precision, mAP, precision and recall at
the thresholds, confusions between classes, calibration error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from anomaly.classify.classifier import FaultClassifier
from anomaly.classify.probability import clip_probabilities, expected_calibration_error
from anomaly.errors import DataError


def evaluate_probs(P: np.ndarray, Y: np.ndarray, classes: Sequence[str], thresholds: np.ndarray,
                   precision_target: float | None = None) -> dict:
    """Per-class average precision, mAP, precision/recall at the thresholds, and confusions between classes.

    ``confusions[true][other]``: among clips labelled ``true`` but not ``other``, the share where ``other`` fires.
    mAP is the mean AP over the classes that have at least one positive clip.
    """
    P, Y = np.asarray(P, float), np.asarray(Y).astype(int)
    fired = P >= np.asarray(thresholds)[None, :]
    out: dict = {"n_clips": int(len(Y)), "classes": {}, "confusions": {}}
    aps = []
    chances = []
    for k, c in enumerate(classes):
        y = Y[:, k]
        ap = float(average_precision_score(y, P[:, k])) if y.any() else None
        if ap is not None:
            aps.append(ap)
            chances.append(float(y.mean()))  # an uninformative score's AP is the share of positives
        tp = int((fired[:, k] & (y == 1)).sum())
        n_fired = int(fired[:, k].sum())
        prec = tp / n_fired if n_fired else None
        rec = tp / int(y.sum()) if y.any() else None
        r = {"n_positive": int(y.sum()), "ap": ap, "ap_chance": float(y.mean()) if y.size else None,
             "threshold": float(thresholds[k]), "precision": prec,
             "recall": rec, "n_fired": n_fired}
        if precision_target is not None:
            r["meets_precision_target"] = None if prec is None else bool(prec >= precision_target)
        out["classes"][c] = r
    for k, c in enumerate(classes):
        rows = Y[:, k] == 1
        conf = {}
        for j, o in enumerate(classes):
            if j == k:
                continue
            m = rows & (Y[:, j] == 0)
            if m.any():
                conf[o] = float(fired[m, j].mean())
        out["confusions"][c] = conf
    out["map"] = float(np.mean(aps)) if aps else None
    out["map_chance"] = float(np.mean(chances)) if chances else None
    out["ece"] = expected_calibration_error(P, Y)
    if precision_target is not None:
        out["precision_target"] = precision_target
        out["below_precision_target"] = [c for c, r in out["classes"].items()
                                         if r["meets_precision_target"] is False]
        out["never_fired"] = [c for c, r in out["classes"].items() if r["n_fired"] == 0 and r["n_positive"]]
    return out


def evaluate_classifier(clf: FaultClassifier, recs: Sequence[np.ndarray], Y: np.ndarray,
                        classes: Sequence[str]) -> dict:
    """Evaluate on raw log-mel clips labelled with ``classes`` (mapped onto the model's classes by name).

    Raises:
        DataError: a data class the model does not know.
    """
    unknown = [c for c in classes if c not in clf.classes]
    if unknown:
        raise DataError(f"classes not known to the model: {', '.join(unknown)} (model classes: "
                        f"{', '.join(clf.classes)})")
    Ym = np.zeros((len(Y), len(clf.classes)), np.uint8)
    for j, c in enumerate(classes):
        Ym[:, clf.classes.index(c)] = np.asarray(Y)[:, j]
    zs = [clf.patch_logits(r) for r in recs]
    P1 = clip_probabilities(zs, 1.0, clf.config.exclusive)
    P = clip_probabilities(zs, clf.temperature_, clf.config.exclusive)
    m = evaluate_probs(P, Ym, clf.classes, clf.threshold_array, clf.precision_target_)
    m["ece_uncalibrated"] = expected_calibration_error(P1, Ym)
    m["temperature"] = clf.temperature_
    m["probabilities"] = P
    return m
