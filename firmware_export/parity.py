"""Every runtime's output for a set of patches, and how far each runtime's scores are from PyTorch's.

The score is the same everywhere: the model's :mod:`anomaly.score` formula (``det.scorer.of_output``) applied to the
*float* normalised input patch and the runtime's reconstruction (dequantised for the int8 model) -- the MSE, or the
Gaussian score of the log band errors. That is what the device computes (the C reference's ``hw_score``), so the int8
figures here are the device's figures. For a model trained with the interpolation objective the "reconstruction" is
assembled from one pass per hidden block (:func:`interpolated`), as the device's pass loop assembles it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from anomaly.train import assemble_passes, mask_positions
from firmware_export.onnx_export import run_onnxruntime

RUNTIMES = ("pytorch", "onnxruntime", "tflite_float", "tflite_int8")


@torch.no_grad()
def torch_outputs(model: torch.nn.Module, X: np.ndarray, batch: int = 256) -> np.ndarray:
    """``model`` on patches ``[n, T, M]`` (fed as ``[n, 1, T, M]``) → its outputs ``[n, ...]`` as float32."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(X, np.float32)).unsqueeze(1)
    return torch.cat([model(b) for b in x.split(batch)]).float().numpy()


def torch_reconstruct(model: torch.nn.Module, Xn: np.ndarray, batch: int = 256) -> np.ndarray:
    """The autoencoder's reconstructions ``[n, T, M]`` of normalised patches ``[n, T, M]``."""
    return torch_outputs(model, Xn, batch)[:, 0] if len(Xn) else np.zeros_like(Xn)


def _onnxruntime_reconstruct(onnx_path: Path, Xn: np.ndarray) -> np.ndarray:
    return run_onnxruntime(onnx_path, Xn)[:, 0]


def runtimes(model: torch.nn.Module, onnx_path: Path, float_model, int8_model) -> dict[str, Callable]:
    """``{runtime: normalised patches [n, T, M] in, the network's outputs [n, T, M] out}`` for the autoencoder in
    PyTorch, ONNX Runtime, float TFLite and int8 TFLite (``RUNTIMES`` order)."""
    return {"pytorch": partial(torch_reconstruct, model), "onnxruntime": partial(_onnxruntime_reconstruct, onnx_path),
            "tflite_float": float_model.run, "tflite_int8": int8_model.run}


def interpolated(run: Callable[[np.ndarray], np.ndarray], Xn: np.ndarray, mask_frames: int) -> np.ndarray:
    """The output ``[n, T, M]`` the score is computed from, for one runtime ``run`` (normalised patches in, outputs
    out): one pass, or for an interpolation model the hidden blocks' predictions stitched together, as the device's
    pass loop (``hw_pass_input`` / ``hw_pass_collect``) assembles them. See :func:`anomaly.train.assemble_passes`."""
    return assemble_passes(run, Xn, mask_frames)


def hide_blocks(Xn: np.ndarray, mask_frames: int) -> np.ndarray:
    """A copy of patches ``[n, T, M]`` with block ``i mod passes`` of patch ``i`` set to 0: the inputs an
    interpolation model sees, in equal shares (its int8 representative set)."""
    positions = mask_positions(Xn.shape[1], mask_frames)
    out = np.array(Xn, np.float32, copy=True)
    for i in range(len(out) if positions else 0):
        t0 = positions[i % len(positions)]
        out[i, t0: t0 + mask_frames] = 0.0
    return out


def auc(normal: np.ndarray, fault: np.ndarray) -> float:
    """Area under the ROC curve (fault scores above normal ones = 1), ties counted half."""
    normal, fault = np.asarray(normal, float), np.asarray(fault, float)
    if normal.size == 0 or fault.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([normal, fault]))  # average ranks for ties
    r_fault = ranks[normal.size:].sum()
    return float((r_fault - fault.size * (fault.size + 1) / 2.0) / (normal.size * fault.size))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    """Agreement of a runtime's per-patch scores with PyTorch's."""
    ref, got = np.asarray(ref, float), np.asarray(got, float)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)
    return {"pearson": pearson(ref, got), "max_rel_error": float(rel.max()) if rel.size else float("nan"),
            "mean_rel_error": float(rel.mean()) if rel.size else float("nan")}


def summarise(scores: dict[str, dict[str, np.ndarray]], recon_diff: dict[str, float],
              fault_names: list[str]) -> dict:
    """Per-runtime parity figures.

    Args:
        scores: ``{runtime: {"normal": [n], "fault": [f]}}``.
        recon_diff: ``{runtime: max |reconstruction - PyTorch's|}`` over the normal patches.
    """
    ref = scores["pytorch"]
    names = np.asarray(fault_names)
    out = {}
    for rt, s in scores.items():
        row = {
            "auc": auc(s["normal"], s["fault"]),
            "auc_by_fault": {f: auc(s["normal"], s["fault"][names == f]) for f in dict.fromkeys(fault_names)},
            "score_mean_normal": float(np.mean(s["normal"])),
        }
        if rt != "pytorch":
            row["normal"] = compare(ref["normal"], s["normal"])
            row["all"] = compare(np.r_[ref["normal"], ref["fault"]], np.r_[s["normal"], s["fault"]])
            row["max_abs_recon_diff"] = recon_diff.get(rt)
        out[rt] = row
    return out


def gate(name: str, passed: bool, value, limit, detail: str) -> dict:
    """One gate's entry in the manifest (``gates.checks[]``)."""
    return {"gate": name, "passed": bool(passed), "value": value, "limit": limit, "detail": detail}
