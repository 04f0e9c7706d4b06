"""ONNX → TensorFlow SavedModel (onnx2tf) → TFLite float and full-integer int8, and the interpreters that run them.

TensorFlow, onnx2tf and the interpreters are imported inside the functions: ``humwatch --help`` must not pay for them.
onnx2tf runs as a subprocess (it calls ``onnxsim`` by name, so the venv's bin directory goes first on its PATH).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

import numpy as np

from firmware_export.errors import ExportError
from firmware_export.quiet import quiet

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ONNX2TF_TIMEOUT_S = 900


def onnx_to_saved_model(onnx_path: Path, out_dir: Path) -> None:
    """``python -m onnx2tf -i model.onnx -o saved_model -osd`` (float SavedModel; no onnx2tf int8 flags, which
    would try to download calibration data without ``-cind``)."""
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="-1")
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out_dir), "-osd"]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(out_dir.parent),
                           timeout=ONNX2TF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"onnx2tf did not finish within {ONNX2TF_TIMEOUT_S} s") from None
    if r.returncode != 0 or not (out_dir / "saved_model.pb").is_file():
        tail = " | ".join(ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip())[-800:]
        raise ExportError(f"onnx2tf failed (exit {r.returncode}): {tail or 'no output'}")


def convert(saved_model: Path, representative: np.ndarray) -> tuple[bytes, bytes]:
    """Float TFLite and full-integer int8 TFLite (int8 input and output) from a SavedModel.

    Args:
        saved_model: the onnx2tf SavedModel directory.
        representative: patches ``[n, T, M]`` as the model's float input takes them (normalised for the
            autoencoder, raw log-mel for the classifier) for the int8 calibration; fed as NHWC ``[1, T, M, 1]``, the
            same memory order as NCHW with one channel.

    Returns:
        ``(float_tflite, int8_tflite)`` flatbuffers.
    """
    import tensorflow as tf

    rep = np.ascontiguousarray(representative, np.float32)[..., None]

    def rep_data() -> Iterable[list[np.ndarray]]:
        for i in range(len(rep)):
            yield [rep[i:i + 1]]

    with quiet() as cap:
        try:
            float_bytes = tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
            conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = rep_data
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
            conv._experimental_disable_per_channel_quantization_for_dense_layers = True
            int8_bytes = conv.convert()
            err = None
        except Exception as e:  # the converter raises many kinds (ConverterError, ValueError, RuntimeError)
            err = e
    if err is not None:
        raise ExportError(f"TFLite conversion failed: {type(err).__name__}: {' '.join(str(err).split())[:400]} "
                          f"{cap.tail(5)}")
    return bytes(float_bytes), bytes(int8_bytes)


def squeeze_image(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape without the batch axis as the parity code uses it: an image ``(T, M, 1)`` → ``(T, M)``."""
    return tuple(shape[:-1]) if len(shape) == 3 and shape[-1] == 1 else tuple(shape)


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float → int8 exactly as the C reference does it: ``clamp(roundf(x / scale) + zp, -128, 127)``, with ``roundf``
    rounding halves away from zero (numpy's ``rint`` rounds them to even)."""
    v = np.asarray(x, np.float32) / np.float32(scale)
    t = np.trunc(v)
    r = np.where(np.abs(v - t) == 0.5, t + np.sign(v), np.rint(v))
    return np.clip(r + zero_point, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class TFLiteModel:
    """A TFLite model in LiteRT's interpreter with the builtin kernels only (no XNNPACK delegate), so that the op list
    is the model's real one and int8 arithmetic follows the reference kernels TFLM shares."""

    def __init__(self, content: bytes, what: str):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.what = what
        with quiet():
            self.it = Interpreter(model_content=content, num_threads=1,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.it.allocate_tensors()
        ins, outs = self.it.get_input_details(), self.it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ExportError(f"{what}: expected one input and one output, got {len(ins)} and {len(outs)}")
        self.inp, self.out = ins[0], outs[0]
        self.shape = tuple(int(s) for s in self.inp["shape"])
        self.out_shape = squeeze_image(tuple(int(s) for s in self.out["shape"])[1:])

    def check_io(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
        """Raise ExportError unless the input and output tensors have exactly these shapes (batch included)."""
        for d, name, want in ((self.inp, "input", tuple(input_shape)), (self.out, "output", tuple(output_shape))):
            got = tuple(int(s) for s in d["shape"])
            if got != want:
                raise ExportError(f"{self.what}: {name} shape {list(got)}, expected {list(want)} (onnx2tf "
                                  "changed the layout)")

    def check_shape(self, patch_frames: int, n_mels: int) -> None:
        """The autoencoder's check: NHWC ``[1, T, M, 1]`` in and out."""
        self.check_io((1, patch_frames, n_mels, 1), (1, patch_frames, n_mels, 1))

    @staticmethod
    def _quant(d) -> tuple[float, int] | None:
        if d["dtype"] != np.int8:
            return None
        scale, zp = d["quantization"]
        return float(scale), int(zp)

    @property
    def input_quant(self) -> tuple[float, int] | None:
        return self._quant(self.inp)

    @property
    def output_quant(self) -> tuple[float, int] | None:
        return self._quant(self.out)

    def ops(self) -> list[str]:
        return sorted({d["op_name"] for d in self.it._get_ops_details()} - {"DELEGATE"})

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One patch in the model's own input dtype ``[T, M]`` → raw output without the batch axis (``[T, M]`` for
        the autoencoder's image output, ``[n_classes]`` for the classifier)."""
        self.it.set_tensor(self.inp["index"], np.ascontiguousarray(x)[None, :, :, None])
        self.it.invoke()
        return self.it.get_tensor(self.out["index"])[0].reshape(self.out_shape).copy()

    def run(self, Xn: np.ndarray) -> np.ndarray:
        """Float patches ``[n, T, M]`` (as the model's float input expects them) → float outputs ``[n, *out_shape]``
        (quantised in, dequantised out for the int8 model)."""
        iq, oq = self.input_quant, self.output_quant
        out = np.empty((len(Xn), *self.out_shape), np.float32)
        for i in range(len(Xn)):
            x = quantize(Xn[i], *iq) if iq else Xn[i].astype(np.float32)
            y = self.run_raw(x)
            out[i] = dequantize(y, *oq) if oq else y
        return out


def tflm_check(int8_bytes: bytes, Xq: np.ndarray, max_arena: int = 4 << 20) -> dict:
    """Run the int8 model in the TensorFlow Lite Micro interpreter (PyPI ``tflite-micro``).

    Finds the smallest tensor arena (16-byte resolution) in which the model allocates and runs, and returns the raw
    int8 outputs for ``Xq`` ``[n, T, M]`` (``[n, T, M]`` for the autoencoder, ``[n, n_classes]`` for the classifier;
    see :func:`squeeze_image`) so that they can be compared with LiteRT's.
    """
    try:
        from tflite_micro.python.tflite_micro import runtime as tflm
        ver = version("tflite_micro")
    except Exception as e:  # ImportError, or a wheel whose native part does not load
        return {"available": False, "reason": f"tflite_micro interpreter not usable: {type(e).__name__}: "
                                              f"{' '.join(str(e).split())[:200]}"}

    zero = np.zeros((1, *Xq.shape[1:], 1), np.int8)

    def make(arena: int):
        try:
            it = tflm.Interpreter.from_bytes(int8_bytes, arena_size=arena)
            it.set_input(zero, 0)
            it.invoke()
            return it
        except (RuntimeError, ValueError):
            return None

    with quiet() as cap:
        hi = 64 << 10
        while make(hi) is None and hi < max_arena:
            hi *= 2
        it = make(hi)
        if it is None:
            return {"available": True, "version": ver, "runs": False,
                    "reason": f"TFLM could not allocate or run the model with a {max_arena} B arena: {cap.tail(3)}"}
        lo = 0
        while hi - lo > 16:
            mid = (lo + hi) // 2 // 16 * 16
            if mid <= lo:
                break
            if make(mid) is None:
                lo = mid
            else:
                hi = mid
        it = make(hi)
        outs = []
        for i in range(len(Xq)):
            it.set_input(np.ascontiguousarray(Xq[i])[None, :, :, None], 0)
            it.invoke()
            y = np.asarray(it.get_output(0))[0]
            outs.append(y.reshape(squeeze_image(y.shape)).astype(np.int8))
        outs = np.stack(outs) if outs else np.zeros((0,), np.int8)
    return {"available": True, "version": ver, "runs": True, "arena_bytes": int(hi), "outputs": outs}
