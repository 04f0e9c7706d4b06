"""The classifier's probabilities: clip probabilities (the mean of the patch probabilities), the temperature fitted
on validation, the expected calibration error, and the per-class thresholds chosen for a precision target."""

from __future__ import annotations

import math

import numpy as np
import torch

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, Y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over all class-probabilities: ``sum_b |B|/N * |mean(p in b) - mean(y in b)|`` on ``bins`` equal bins."""
    p = np.asarray(probs, float).ravel()
    y = np.asarray(Y, float).ravel()
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.sum() / p.size * abs(p[m].mean() - y[m].mean())
    return float(ece)


def _clip_probs_t(patch_logits: list[torch.Tensor], T: torch.Tensor, exclusive: bool) -> torch.Tensor:
    act = (lambda z: torch.softmax(z, dim=1)) if exclusive else torch.sigmoid
    return torch.stack([act(z / T).mean(0) for z in patch_logits])


def clip_probabilities(patch_logits: list[np.ndarray], temperature: float = 1.0, exclusive: bool = False) -> np.ndarray:
    """Clip probabilities ``[n_clips, n_classes]``: the mean of the patch probabilities at ``temperature``."""
    with torch.no_grad():
        return _clip_probs_t([torch.as_tensor(z, dtype=torch.float64) for z in patch_logits],
                             torch.tensor(float(temperature), dtype=torch.float64), exclusive).numpy()


def _nll(P: torch.Tensor, Y: torch.Tensor, exclusive: bool) -> torch.Tensor:
    P = P.clamp(1e-7, 1 - 1e-7)
    if exclusive:
        return -(Y * P.log()).sum(1).mean()
    return -(Y * P.log() + (1 - Y) * (1 - P).log()).mean()


def fit_temperature(patch_logits: list[np.ndarray], Y: np.ndarray, exclusive: bool = False) -> float:
    """One temperature minimising the NLL of the clip probabilities (LBFGS on log T, T in [0.05, 20])."""
    zs = [torch.as_tensor(z, dtype=torch.float64) for z in patch_logits]
    y = torch.as_tensor(Y, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _nll(_clip_probs_t(zs, log_t.clamp(math.log(0.05), math.log(20)).exp(), exclusive), y, exclusive)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().clamp(math.log(0.05), math.log(20)).exp())
    with torch.no_grad():  # never worse than no scaling on the data it was fitted on
        nll_t = _nll(_clip_probs_t(zs, torch.tensor(t, dtype=torch.float64), exclusive), y, exclusive)
        nll_1 = _nll(_clip_probs_t(zs, torch.tensor(1.0, dtype=torch.float64), exclusive), y, exclusive)
    return t if nll_t <= nll_1 else 1.0


def _pr_at(p: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float]:
    pred = p >= t
    tp = int((pred & (y == 1)).sum())
    prec = tp / pred.sum() if pred.sum() else float("nan")
    rec = tp / (y == 1).sum() if (y == 1).sum() else float("nan")
    return float(prec), float(rec)


def choose_threshold(p: np.ndarray, y: np.ndarray, target: float) -> dict:
    """Per-class threshold on validation scores ``p`` with labels ``y``.

    The lowest threshold whose precision ≥ ``target`` with recall > 0 sets the recall to aim for; among the
    thresholds with that same recall (and precision ≥ target) the highest is taken, since going lower only admits
    more negatives. Without any such threshold, the best-F1 one is returned with ``fallback=True``. The value sits
    halfway between the chosen validation score and the next lower one: the same validation precision and recall,
    with a margin on both sides instead of a boundary exactly on the weakest positive.
    """
    p, y = np.asarray(p, float), np.asarray(y).astype(int)
    cands = np.unique(p)
    if not len(cands) or not y.any():
        return {"threshold": 0.5, "val_precision": float("nan"), "val_recall": float("nan"), "fallback": True}
    best_f1 = (-1.0, 0, float("nan"), float("nan"))
    ok: list[tuple[int, float, float]] = []
    for i, t in enumerate(cands):
        prec, rec = _pr_at(p, y, t)
        if not (rec > 0):
            continue
        if prec >= target:
            ok.append((i, prec, rec))
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        if f1 > best_f1[0]:
            best_f1 = (f1, i, prec, rec)
    if ok:
        r_lowest = ok[0][2]  # recall at the lowest threshold that meets the target (recall falls as t rises)
        i, prec, rec = max((o for o in ok if o[2] == r_lowest), key=lambda o: o[0])
        fb = False
    else:
        _, i, prec, rec = best_f1
        fb = True
    t = float(cands[i] if i == 0 else (cands[i] + cands[i - 1]) / 2)
    return {"threshold": t, "val_precision": prec, "val_recall": rec, "fallback": fb}
