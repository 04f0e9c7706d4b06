"""PyTorch → ONNX (dynamo exporter, opset 18) and ONNX Runtime inference for the parity check.

The exported network is the bare :class:`anomaly.model.ConvAutoencoder`: normalised log-mel patch ``[1, 1, T, M]``
in, its reconstruction out. The dynamo exporter folds BatchNorm into the convolutions (the legacy exporter leaves it
unfused, which quantises worse).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from firmware_export.errors import ExportError
from firmware_export.quiet import quiet

OPSET = 18


def export_onnx(model: torch.nn.Module, path: Path, patch_frames: int, n_mels: int) -> dict:
    """Write ``path``; return ``{"opset", "ops"}`` (the ONNX node types, sorted)."""
    import onnx

    model = model.eval()
    x = torch.zeros(1, 1, patch_frames, n_mels)
    with quiet() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of torch.export internals, not ours to act on
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=OPSET, external_data=False)
        except Exception as e:
            err = e
        else:
            err = None
    if err is not None or not Path(path).is_file():
        raise ExportError(f"ONNX export failed: {type(err).__name__ if err else 'no file'}: "
                          f"{' '.join(str(err).split())[:300] if err else cap.tail()}")
    m = onnx.load(str(path))
    return {"opset": OPSET, "ops": sorted({n.op_type for n in m.graph.node})}


def run_onnxruntime(path: Path, Xn: np.ndarray) -> np.ndarray:
    """Reconstructions ``[n, T, M]`` of normalised patches ``[n, T, M]``, one patch per run (batch 1 as exported)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = np.empty_like(Xn, dtype=np.float32)
    for i in range(len(Xn)):
        out[i] = sess.run(None, {name: Xn[i][None, None].astype(np.float32)})[0][0, 0]
    return out
