"""The export manifest: what went in, what came out, and the figures that justify shipping it.

``manifest.json`` is the contract with a firmware repository's CI (see docs/firmware.md): ``status`` is
``"passed"`` for every manifest written to ``--out`` (an export whose gates fail writes nothing), ``outputs`` gives
each file's size and sha256, ``gates`` every check with its value and limit.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomaly import __version__
from anomaly.modeldir import file_sha256

MANIFEST_FORMAT = 1
TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx2tf", "tensorflow-cpu", "tf-keras", "ai-edge-litert",
         "tflite_micro", "numpy", "scipy")


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "platform": sys.platform}
    for name in TOOLS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["humwatch"] = __version__
    return out


def macs_by_kind(model: nn.Module, patch_frames: int, n_mels: int) -> dict[str, int]:
    """Multiply-accumulates per patch by kernel class (conv, fully_connected, transpose_conv); the same counting
    as :func:`anomaly.model.count_macs` (BatchNorm folded, ReLU free)."""
    macs = {"conv": 0, "fully_connected": 0, "transpose_conv": 0}
    hooks = []

    def hook(m, inp, out):
        if isinstance(m, nn.ConvTranspose2d):
            macs["transpose_conv"] += inp[0][0].numel() * m.kernel_size[0] * m.kernel_size[1] * m.out_channels \
                // m.groups
        elif isinstance(m, nn.Conv2d):
            macs["conv"] += out[0].numel() * m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        elif isinstance(m, nn.Linear):
            macs["fully_connected"] += m.in_features * m.out_features

    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, patch_frames, n_mels))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return macs


def file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def clean(obj, digits: int | None = None):
    """JSON-safe copy: numpy scalars to Python, NaN/Inf to None, floats optionally to ``digits`` significant
    digits (parity figures; thresholds and quantisation parameters stay exact)."""
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        if v != v or v in (float("inf"), float("-inf")):
            return None
        return float(f"{v:.{digits}g}") if digits else v
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist(), digits)
    if isinstance(obj, dict):
        return {str(k): clean(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v, digits) for v in obj]
    return obj
