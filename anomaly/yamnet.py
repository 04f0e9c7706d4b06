"""YAMNet embeddings from a model file the user supplies (humwatch downloads nothing).

YAMNet (tensorflow/models, research/audioset/yamnet; Apache-2.0) is a MobileNet-v1 audio-event network trained on
AudioSet. Its core, ``yamnet.yamnet(features, params)``, takes log-mel patches ``[n, 96, 64]`` computed exactly like
humwatch's front end (16 kHz, 25 ms Hann window, 10 ms hop, magnitude STFT, 64 HTK mel bands over 125-7500 Hz,
``ln(mel + 0.001)``, 96 frames) and returns class scores ``[n, 521]`` and the 1024-d embeddings ``[n, 1024]``
(the global average of its last convolution). So a *raw* (not standardised) humwatch patch is YAMNet's input.

:func:`load_embedder` opens a TFLite file or a SavedModel directory with that signature (how to make one from the
published weights: docs/classifier.md, "YAMNet embeddings"), checks it, and returns a :class:`YamnetEmbedder`
whose :meth:`~YamnetEmbedder.embed` maps patches to embeddings. TensorFlow / LiteRT are imported only here, inside
the functions, so ``humwatch --help`` never pays for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from anomaly.errors import DataError, ModelError, one_line
from anomaly.modeldir import file_sha256
from anomaly.quiet import captured_fds

EMBEDDING_DIM = 1024
PATCH_FRAMES, N_MELS = 96, 64
DOCS = "docs/classifier.md, section 'YAMNet embeddings'"
BATCH = 64  # patches per call when the model's batch dimension is dynamic


def path_sha256(path: str | Path) -> str:
    """sha256 of a model file, or of a SavedModel directory (over every file's relative path and sha256)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return h.hexdigest()


def _import_tf(what: Path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with captured_fds():
            import tensorflow as tf
    except ImportError:
        raise ModelError(f"reading {what} needs TensorFlow, which is not installed (pip install tensorflow-cpu; it is "
                         "part of humwatch's `export` extra)") from None

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return tf


def _shape_text(shape) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


class _TFLiteRunner:
    """A ``.tflite`` file in LiteRT's interpreter (``ai_edge_litert``, else ``tf.lite``)."""

    fmt = "tflite"

    def __init__(self, path: Path, threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = _import_tf(path).lite.Interpreter  # noqa: N806
        try:
            with captured_fds():
                self.it = Interpreter(model_path=str(path), num_threads=threads)
        except Exception as e:  # the interpreter raises ValueError / RuntimeError for files it cannot read
            raise ModelError(f"{path}: not a usable TFLite model ({one_line(e)})") from None
        ins, outs = self.it.get_input_details(), self.it.get_output_details()
        self.inputs = [(d["name"], [None if s < 0 else int(s) for s in d["shape_signature"]], np.dtype(d["dtype"]))
                       for d in ins]
        self.outputs = [(d["name"], [None if s < 0 else int(s) for s in d["shape_signature"]], np.dtype(d["dtype"]))
                        for d in outs]
        self._in_index = ins[0]["index"] if ins else None
        self._out_index = {d["name"]: d["index"] for d in outs}
        self._shape: tuple[int, ...] | None = None

    def select(self, out_name: str) -> None:
        self._out = self._out_index[out_name]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            if self._shape is not None or tuple(x.shape) != tuple(self.it.get_input_details()[0]["shape"]):
                self.it.resize_tensor_input(self._in_index, list(x.shape), strict=True)
            self.it.allocate_tensors()
            self._shape = x.shape
        self.it.set_tensor(self._in_index, x)
        self.it.invoke()
        return np.array(self.it.get_tensor(self._out))


class _SavedModelRunner:
    """A SavedModel directory's serving signature (``serving_default``, or its only signature)."""

    fmt = "saved_model"

    def __init__(self, path: Path, threads: int):
        tf = self.tf = _import_tf(path)
        with contextlib.suppress(RuntimeError):  # only possible before TensorFlow's runtime has started
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        try:
            with captured_fds():
                self.loaded = tf.saved_model.load(str(path))  # keep a reference: the signature needs its variables
        except Exception as e:  # TensorFlow raises many kinds (OSError, ValueError, its own errors)
            raise ModelError(f"{path}: not a loadable SavedModel ({one_line(e)})") from None
        sigs = dict(getattr(self.loaded, "signatures", {}) or {})
        if not sigs:
            raise ModelError(f"{path}: the SavedModel has no serving signature (save it with a Keras model or "
                             "`signatures=`, see the docs)")
        if "serving_default" in sigs:
            self.fn = sigs["serving_default"]
        elif len(sigs) == 1:
            self.fn = next(iter(sigs.values()))
        else:
            raise ModelError(f"{path}: several signatures ({', '.join(sorted(sigs))}) and none is serving_default")
        args, kwargs = self.fn.structured_input_signature
        specs = [(f"input_{i}", s) for i, s in enumerate(args)] + list(kwargs.items())
        self.inputs = [(n, s.shape.as_list() if s.shape.rank is not None else [], np.dtype(s.dtype.as_numpy_dtype))
                       for n, s in specs]
        outs = self.fn.structured_outputs
        if not isinstance(outs, dict):
            outs = {f"output_{i}": o for i, o in enumerate(outs if isinstance(outs, list | tuple) else [outs])}
        self.outputs = [(n, o.shape.as_list() if o.shape.rank is not None else [], np.dtype(o.dtype.as_numpy_dtype))
                        for n, o in outs.items()]
        self._in_name = specs[0][0] if specs else None

    def select(self, out_name: str) -> None:
        self._out = out_name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        r = self.fn(**{self._in_name: self.tf.constant(x)})
        return r[self._out].numpy() if isinstance(r, dict) else np.asarray(r)


class YamnetEmbedder:
    """YAMNet's 1024-d embeddings of raw log-mel patches.

    Attributes:
        path: the resolved path of the model file or directory.
        sha256: its sha256 (:func:`path_sha256`).
        fmt: ``"tflite"`` or ``"saved_model"``.
        input_shape, output, output_shape: the signature found (``None`` = dynamic dimension).
    """

    dim = EMBEDDING_DIM

    def __init__(self, runner, path: Path, sha256: str):
        self._run, self.path, self.sha256, self.fmt = runner, path, sha256, runner.fmt
        if len(runner.inputs) != 1:
            raise ModelError(f"{path}: expected one input (log-mel patches [n, 96, 64]), found {len(runner.inputs)}: "
                             + ", ".join(f"{n} {_shape_text(s)}" for n, s, _ in runner.inputs))
        name, shape, dtype = runner.inputs[0]
        self.input_shape = shape
        ok = (len(shape) == 3 and shape[1:] == [PATCH_FRAMES, N_MELS]) or shape == [PATCH_FRAMES, N_MELS]
        if not ok:
            hint = (" (a waveform input, like the TF Hub / Kaggle yamnet.tflite: build a patch-input model from the "
                    f"weights instead, see {DOCS})" if len(shape) <= 1 else "")
            raise ModelError(f"{path}: input {name} has shape {_shape_text(shape)}, expected YAMNet's log-mel patches "
                             f"[n, {PATCH_FRAMES}, {N_MELS}]{hint}")
        if dtype != np.float32:
            raise ModelError(f"{path}: input {name} is {dtype}, expected float32 (a quantised model cannot be used)")
        found = ", ".join(f"{n} {_shape_text(s)}" for n, s, _ in runner.outputs) or "none"
        cands = [(n, s, t) for n, s, t in runner.outputs if s and s[-1] == EMBEDDING_DIM and len(s) <= 2]
        if len(cands) != 1:
            what = "no" if not cands else f"{len(cands)}"
            raise ModelError(f"{path}: expected exactly one output [n, {EMBEDDING_DIM}] (the embeddings), found {what} "
                             f"among outputs {found}")
        self.output, self.output_shape, odt = cands[0]
        if odt != np.float32:
            raise ModelError(f"{path}: output {self.output} is {odt}, expected float32")
        runner.select(self.output)
        self._batch = None if len(shape) == 2 else shape[0]  # None: dynamic (or no batch dimension)
        self._rank2 = len(shape) == 2
        try:  # one small call now, so that a model that cannot run fails at load time
            with captured_fds():
                self.embed(np.zeros((2, PATCH_FRAMES, N_MELS), np.float32))
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"{path}: the model does not run on a patch batch ({one_line(e)})") from None

    def info(self) -> dict:
        """What model.json records: resolved path, sha256, format, signature."""
        return {"path": str(self.path), "sha256": self.sha256, "format": self.fmt, "embedding_dim": self.dim,
                "input_shape": self.input_shape, "output": self.output, "output_shape": self.output_shape}

    def _call(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(self._run(np.ascontiguousarray(x, np.float32)), np.float32)
        return y.reshape(-1, self.dim) if y.size % self.dim == 0 else y

    def embed(self, X) -> np.ndarray:
        """Embeddings ``[n, 1024]`` float32 of raw log-mel patches ``X [n, 96, 64]``.

        Raises:
            DataError: ``X`` is not ``[n, 96, 64]`` or holds NaN/Inf. ModelError: the model's output is not
                ``[n, 1024]`` or not finite.
        """
        X = np.asarray(X, np.float32)
        if X.ndim != 3 or X.shape[1:] != (PATCH_FRAMES, N_MELS):
            raise DataError(f"YAMNet expects raw log-mel patches [n, {PATCH_FRAMES}, {N_MELS}], got shape {X.shape}")
        if not np.isfinite(X).all():
            raise DataError("patches contain NaN or Inf")
        out = np.empty((len(X), self.dim), np.float32)
        if self._rank2:
            parts = [(i, self._call(X[i])) for i in range(len(X))]
        elif self._batch is None:
            parts = [(i, self._call(X[i:i + BATCH])) for i in range(0, len(X), BATCH)]
        else:
            b = self._batch
            parts = []
            for i in range(0, len(X), b):
                c = X[i:i + b]
                if len(c) < b:
                    c = np.concatenate([c, np.zeros((b - len(c), PATCH_FRAMES, N_MELS), np.float32)])
                parts.append((i, self._call(c)[: min(b, len(X) - i)]))
        for i, y in parts:
            if y.ndim != 2 or y.shape[1] != self.dim:
                raise ModelError(f"{self.path}: output {self.output} has shape {list(y.shape)} at run time, expected "
                                 f"[n, {self.dim}]")
            out[i:i + len(y)] = y
        if not np.isfinite(out).all():
            raise ModelError(f"{self.path}: the model produced NaN or Inf embeddings")
        return out


def load_embedder(path: str | Path, threads: int | None = None, sha256: str | None = None) -> YamnetEmbedder:
    """Open a YAMNet model: a ``.tflite`` file or a SavedModel directory.

    The model must take raw log-mel patches (one float32 input ``[n, 96, 64]``, a fixed batch of 1 or ``[96, 64]``
    also accepted and run patch by patch) and have exactly one output whose last dimension is 1024 (other outputs,
    such as the 521 class scores, are ignored).

    Args:
        threads: CPU threads for the interpreter (default: torch's current thread count).
        sha256: the file's digest when the caller has just computed it.

    Raises:
        ModelError: missing path, not a model, unreadable, or a signature other than YAMNet's (one line naming the
            path and what was found).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"YAMNet model not found: {p} (give a .tflite file or a SavedModel directory; how to make "
                         f"one from the published weights: {DOCS})")
    p = p.resolve()
    if p.is_file() and p.name == "saved_model.pb":
        p = p.parent
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    if p.is_dir():
        if not ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()):
            raise ModelError(f"{p}: not a SavedModel directory (no saved_model.pb); give a .tflite file or a "
                             f"SavedModel directory, see {DOCS}")
        runner = _SavedModelRunner(p, max(1, threads))
    else:
        with open(p, "rb") as f:
            head = f.read(8)
        if head[4:8] != b"TFL3":
            kind = (" (a Keras weights/model file: build a SavedModel or TFLite model from it"
                    if p.suffix.lower() in (".h5", ".hdf5", ".keras") else " (")
            raise ModelError(f"{p}: not a TFLite model (no TFL3 identifier) nor a SavedModel directory{kind}; "
                             f"see {DOCS})")
        runner = _TFLiteRunner(p, max(1, threads))
    return YamnetEmbedder(runner, p, sha256 or path_sha256(p))


def open_recorded(info: dict, what: str, threads: int | None = None) -> YamnetEmbedder:
    """Re-open the YAMNet model a saved model was trained with, from the path and sha256 in its model.json.

    Args:
        info: the recorded ``{"path", "sha256", ...}`` (:meth:`YamnetEmbedder.info`).
        what: the saved model, for messages (e.g. ``"classifier models/faults"``).

    Raises:
        ModelError: the file is missing or its sha256 differs (with the fix), or it no longer loads.
    """
    try:
        p, want = Path(info["path"]), str(info["sha256"])
    except (KeyError, TypeError):
        raise ModelError(f"{what}: model.json has no usable YAMNet path and sha256 ({info!r})") from None
    if not p.exists():
        raise ModelError(f"{what} was trained on the YAMNet model {p}, which is missing (moved or deleted): put it "
                         "back at that path, or retrain with --yamnet NEW_PATH")
    got = path_sha256(p)
    if got != want:
        raise ModelError(f"{what} was trained on the YAMNet model {p}, which has changed since (sha256 {got[:16]}..., "
                         f"recorded {want[:16]}...): restore the original file, or retrain with --yamnet {p}")
    return load_embedder(p, threads, sha256=got)


__all__ = ["EMBEDDING_DIM", "YamnetEmbedder", "load_embedder", "open_recorded", "path_sha256"]
