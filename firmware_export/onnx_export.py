"""PyTorch → ONNX (dynamo exporter, opset 18) and ONNX Runtime inference for the parity check.

Any module taking one patch ``[1, 1, T, M]`` is exported the same way: the bare
:class:`anomaly.model.ConvAutoencoder` (normalised log-mel patch in, its reconstruction out) and the fault classifier
wrapper :class:`firmware_export.classifier.DeviceClassifier` (raw log-mel patch in, calibrated logits out). The dynamo
exporter folds BatchNorm into the convolutions (the legacy exporter leaves it unfused, which quantises worse).
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
    """Export ``model`` (input ``[1, 1, patch_frames, n_mels]``) to ``path``.

    Returns:
        ``{"opset", "ops"}``: the opset and the ONNX node types, sorted.
    """
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


def run_onnxruntime(path: Path, X: np.ndarray) -> np.ndarray:
    """Run patches ``[n, T, M]`` one at a time (batch 1 as exported).

    Returns:
        The outputs without the batch axis, ``[n, *output_shape[1:]]``: ``[n, 1, T, M]`` for the autoencoder,
        ``[n, n_classes]`` for the classifier.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: X[i][None, None].astype(np.float32)})[0][0] for i in range(len(X))]
    return np.stack(outs).astype(np.float32, copy=False) if outs else np.zeros((0,), np.float32)
