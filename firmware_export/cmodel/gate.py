"""The C model in an export: generate it, prove it byte for byte against TFLite Micro on the export's own int8 patches,
and describe it for the manifest."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from firmware_export.cmodel import check, codegen
from firmware_export.errors import ExportError


def c_model(model: bytes, Xq: np.ndarray, prefix: str = "hw_model",
            banner: str = "") -> tuple[codegen.CModel | None, dict]:
    """Generate the C model of ``model`` and compare it with TFLM on int8 inputs ``Xq`` (real patches: golden
    vectors, held-out and fault patches).

    Returns ``(CModel, manifest section)``; the section's ``bit_exact`` is the gate's value. A graph the generator
    cannot build (an op or tensor it does not support, e.g. a new detector's) gives ``(None, section)`` with
    ``check.unsupported`` naming it: the gate fails with that message, it does not raise.
    """
    try:
        cm = codegen.generate(model, prefix=prefix, banner=banner)
    except ExportError as e:
        return None, {"figures": None, "ops": None,
                      "check": {"checked": True, "bit_exact": False, "unsupported": str(e)}}
    section = {"figures": cm.figures(), "ops": cm.ops,
               "scratch_note": "static scratch buffer of the generated model (liveness-planned activations and kernel "
                               "columns); weights, biases and requantisation constants are const (flash)"}
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        section["check"] = {"checked": False, "reason": "no host C compiler (gcc) to build the C model"}
        return cm, section
    with tempfile.TemporaryDirectory(prefix="hw-cmodel-") as d:
        try:
            res = check.compare(model, cm, Xq, Path(d))
        except ExportError as e:
            res = {"bit_exact": False, "error": str(e)}
    section["check"] = {"checked": True, "reference": "TensorFlow Lite Micro interpreter (Python tflite_micro, "
                                                      "reference kernels)", "build": "host gcc " +
                                                                                   " ".join(check.C_FLAGS), **res}
    return cm, section


def gate_entry(name: str, section: dict) -> dict:
    """The manifest gate: every output byte of the C model equals TFLM's (passes without a check only where no host
    compiler exists, and says so)."""
    from firmware_export.parity import gate

    c = section["check"]
    if not c.get("checked"):
        return gate(name, True, None, 0, f"not checked: {c['reason']}")
    ok = bool(c.get("bit_exact"))
    if ok:
        detail = f"generated C equals TFLite Micro on {c['inputs']} patches ({c['bytes_compared']:,} output bytes)"
    elif c.get("unsupported"):
        detail = f"the network cannot be generated as plain C: {c['unsupported']}"
    elif c.get("error"):
        detail = f"generated C could not be checked: {c['error']}"
    else:
        detail = (f"generated C differs from TFLite Micro in {c['bytes_different']:,} of {c['bytes_compared']:,} "
                  "output bytes")
    return gate(name, ok, c.get("bytes_different"), 0, detail)


def golden_inputs(Xq: np.ndarray, zero_point: int, max_real: int = 24, seed: int = 0) -> np.ndarray:
    """The inputs the gate compares on: up to ``max_real`` real int8 patches (evenly spaced), plus golden vectors that
    reach the extremes of every kernel's arithmetic: all -128, all 127, all zero point, and uniform random codes."""
    Xq = np.asarray(Xq, np.int8)
    idx = np.linspace(0, len(Xq) - 1, min(max_real, len(Xq))).round().astype(int) if len(Xq) else []
    shape = Xq.shape[1:]
    rng = np.random.default_rng(seed)
    golden = np.stack([np.full(shape, -128, np.int8), np.full(shape, 127, np.int8),
                       np.full(shape, zero_point, np.int8), rng.integers(-128, 128, shape).astype(np.int8)])
    return np.concatenate([Xq[idx], golden]) if len(idx) else golden
