"""One model through the conversion chain, the same way for the autoencoder and the fault classifier.

PyTorch module (input ``[1, 1, T, M]``) → ONNX (dynamo, opset 18) → onnx2tf SavedModel → TFLite float and
full-integer int8 (calibrated on representative patches) → LiteRT interpreters for parity; then the int8 model in
TensorFlow Lite Micro (arena, agreement with LiteRT) and the op gate. TensorFlow, onnx2tf and the interpreters are
imported inside :mod:`firmware_export.tflite`'s functions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from firmware_export import onnx_export, tflite
from firmware_export.errors import ExportError
from firmware_export.parity import gate
from firmware_export.targets import TFLM_BUILTIN_OPS

TFLM_PATCHES = 8  # patches run through the (slow, reference-kernel) TFLM interpreter to compare with LiteRT
ARENA_MARGIN = 1.25  # recommended arena = measured x margin, rounded up to 1 KiB (optimised kernels' scratch)


class Clock:
    """Progress and timings of one export.

    ``report(what, fraction)`` reports progress of the whole export; ``step`` the same, scaled by ``share`` (the
    autoencoder's stages take the first ~60 % of the bar when a classifier follows); ``lap(name)`` records the
    seconds since the previous lap under ``name``.
    """

    def __init__(self, on_progress: Callable[[str, float], None] | None = None):
        self.on_progress = on_progress
        self.share = 1.0
        self.timings: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def report(self, what: str, fraction: float) -> None:
        if self.on_progress is not None:
            self.on_progress(what, fraction)

    def step(self, what: str, fraction: float) -> None:
        self.report(what, fraction * self.share)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._last, 2)
        self._last = now

    def total(self) -> None:
        self.timings["total"] = round(time.perf_counter() - self._start, 2)


@dataclass
class Converted:
    """The files of one converted model (written as ``<stem>.onnx``, ``<stem>_float.tflite``,
    ``<stem>_int8.tflite`` into the export directory) and interpreters for the two TFLite models."""

    stem: str
    onnx_path: Path
    onnx_info: dict
    float_bytes: bytes
    int8_bytes: bytes
    fm: object  # tflite.TFLiteModel (float)
    qm: object  # tflite.TFLiteModel (int8)
    ops: list[str]

    @property
    def input_quant(self) -> tuple[float, int]:
        return self.qm.input_quant

    @property
    def output_quant(self) -> tuple[float, int]:
        return self.qm.output_quant

    def sizes(self) -> dict[str, int]:
        return {"onnx": self.onnx_path.stat().st_size, "tflite_float": len(self.float_bytes),
                "tflite_int8": len(self.int8_bytes)}


def convert_model(module: torch.nn.Module, stem: str, out_dir: Path, work: Path, patch_frames: int, n_mels: int,
                  representative: np.ndarray, output_shape: tuple[int, ...],
                  step: Callable[[str, float], None], lap: Callable[[str], None],
                  fractions: tuple[float, float, float] = (0.12, 0.2, 0.55), label: str = "") -> Converted:
    """Convert ``module`` and write its ONNX and TFLite files into ``out_dir``.

    Args:
        module: takes ``[1, 1, patch_frames, n_mels]``; must be in eval mode.
        stem: file-name stem (``model``, ``classifier``); also the timing prefix for the classifier.
        work: scratch directory (onnx2tf's SavedModel goes to ``work / stem``).
        representative: patches ``[n, T, M]`` as the module's input takes them, for the int8 calibration.
        output_shape: the expected TFLite output shape, batch included (``(1, T, M, 1)``, ``(1, n_classes)``).
        step, lap: progress and timing callbacks; ``fractions`` are the progress values of the three stages.
        label: prefix of progress messages and timing keys (``""`` for the autoencoder, ``"classifier "``).

    Raises:
        ExportError: a tool failed, or a converted model has the wrong shapes or no int8 input/output.
    """
    key = label.strip().replace(" ", "_") + "_" if label.strip() else ""
    step(f"{label}exporting ONNX", fractions[0])
    onnx_path = out_dir / f"{stem}.onnx"
    onnx_info = onnx_export.export_onnx(module, onnx_path, patch_frames, n_mels)
    lap(f"{key}onnx_export")

    step(f"{label}converting ONNX to TensorFlow (onnx2tf)", fractions[1])
    wd = work / stem
    wd.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, wd / f"{stem}.onnx")
    tflite.onnx_to_saved_model(wd / f"{stem}.onnx", wd / "saved_model")
    lap(f"{key}onnx2tf")

    step(f"{label}converting to TFLite float and int8", fractions[2])
    float_bytes, int8_bytes = tflite.convert(wd / "saved_model", representative)
    (out_dir / f"{stem}_float.tflite").write_bytes(float_bytes)
    (out_dir / f"{stem}_int8.tflite").write_bytes(int8_bytes)
    lap(f"{key}tflite_convert")

    fm = tflite.TFLiteModel(float_bytes, f"{stem}_float.tflite")
    qm = tflite.TFLiteModel(int8_bytes, f"{stem}_int8.tflite")
    in_shape = (1, patch_frames, n_mels, 1)
    fm.check_io(in_shape, output_shape)
    qm.check_io(in_shape, output_shape)
    if qm.input_quant is None or qm.output_quant is None:
        raise ExportError(f"{stem}_int8.tflite does not have int8 input and output tensors")
    return Converted(stem=stem, onnx_path=onnx_path, onnx_info=onnx_info, float_bytes=float_bytes,
                     int8_bytes=int8_bytes, fm=fm, qm=qm, ops=qm.ops())


def tflm_figures(conv: Converted, Xq: np.ndarray) -> dict:
    """Run the int8 model in TensorFlow Lite Micro on int8 patches ``Xq [n, T, M]``.

    Returns:
        ``tflite.tflm_check``'s dict without the raw outputs, plus (when it runs) the largest difference from
        LiteRT's int8 outputs in LSB, the share of identical outputs and the recommended arena (measured x
        ``ARENA_MARGIN``, rounded up to 1 KiB).
    """
    tflm = tflite.tflm_check(conv.int8_bytes, Xq)
    if tflm.get("runs"):
        lit = np.stack([conv.qm.run_raw(x) for x in Xq])
        diff = np.abs(tflm.pop("outputs").astype(int) - lit.astype(int))
        tflm.update(max_lsb_diff_vs_litert=int(diff.max()), share_identical=float(np.mean(diff == 0)),
                    patches_compared=int(len(Xq)),
                    arena_bytes_recommended=int(-(-tflm["arena_bytes"] * ARENA_MARGIN // 1024) * 1024),
                    arena_note="minimal arena of the TFLM Python interpreter (reference kernels), 16-byte "
                               "resolution; CMSIS-NN / ESP-NN kernels may request extra scratch: start from the "
                               "recommended size and read MicroInterpreter::arena_used_bytes() on the device")
    return tflm


def ops_gate(name: str, ops: list[str], tflm: dict) -> dict:
    """The op gate: every op a TFLM builtin, and the TFLM interpreter allocates and runs the model."""
    bad_ops = sorted(set(ops) - TFLM_BUILTIN_OPS)
    ok = not bad_ops and tflm.get("runs", True) is not False
    detail = (f"ops not in TensorFlow Lite Micro: {', '.join(bad_ops)}" if bad_ops else
              f"TFLM could not run the model: {tflm.get('reason')}" if not ok else
              f"all {len(ops)} ops are TFLM builtins" + (" and the TFLM interpreter runs the model"
                                                         if tflm.get("runs") else ""))
    return gate(name, ok, bad_ops, "TFLM builtins", detail)
