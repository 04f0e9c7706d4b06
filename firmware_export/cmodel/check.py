"""Bit-exactness of a generated C model: build it with the host's C compiler, run it on int8 inputs and compare
every output byte with the TensorFlow Lite Micro interpreter (the Python ``tflite_micro`` package: the reference
kernels)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from firmware_export.cmodel import DIR, HARNESS, KERNEL_SOURCES
from firmware_export.cmodel.codegen import CModel
from firmware_export.errors import ExportError

C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def write_sources(cm: CModel, out_dir: Path) -> None:
    (out_dir / f"{cm.prefix}.c").write_text(cm.source)
    (out_dir / f"{cm.prefix}.h").write_text(cm.header)
    for name in KERNEL_SOURCES:
        shutil.copyfile(DIR / name, out_dir / name)


def build_host(cm: CModel, work: Path, cc: str | None = None, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the model, the kernels and the harness into ``work / "hwmodel"``.

    Raises:
        ExportError: no C compiler, or the generated code does not compile (the compiler's message).
    """
    cc = cc or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ExportError("no C compiler (gcc) found to check the generated C model")
    write_sources(cm, work)
    exe = work / "hwmodel"
    p, up = cm.prefix, cm.prefix.upper()
    names = [f"-DHWM_HEADER=\"{p}.h\"", f"-DHWM_INPUT_BYTES={up}_INPUT_BYTES", f"-DHWM_OUTPUT_BYTES={up}_OUTPUT_BYTES",
             f"-DHWM_INPUT={p}_input", f"-DHWM_OUTPUT={p}_output", f"-DHWM_INVOKE={p}_invoke"]
    r = subprocess.run([cc, *C_FLAGS, *extra_flags, *names, f"-I{work}", str(work / f"{p}.c"),
                        str(work / "hw_kernels.c"), str(DIR / HARNESS), "-o", str(exe)], capture_output=True, text=True)
    if r.returncode != 0:
        raise ExportError(f"the generated C model does not compile: {r.stderr.strip()[-600:]}")
    return exe


def run_host(exe: Path, X: np.ndarray, out_bytes: int) -> np.ndarray:
    """Run the harness on int8 inputs ``X [n, ...]``; return the raw outputs ``[n, out_bytes]``."""
    with tempfile.TemporaryDirectory(prefix="hwmodel-") as d:
        np.ascontiguousarray(X, np.int8).tofile(Path(d) / "in.i8")
        r = subprocess.run([str(exe), str(Path(d) / "in.i8"), str(Path(d) / "out.i8")], capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise ExportError(f"the C model harness failed (exit {r.returncode}): {r.stderr.strip()[-300:]}")
        return np.fromfile(Path(d) / "out.i8", np.int8).reshape(len(X), out_bytes)


def tflm_outputs(model: bytes, X: np.ndarray, arena: int = 1 << 20) -> np.ndarray:
    """Raw int8 outputs ``[n, out_bytes]`` of the TFLM interpreter (reference kernels) for int8 inputs ``X``."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    from firmware_export.quiet import quiet

    with quiet():
        it = tflm.Interpreter.from_bytes(model, arena_size=arena)
        shape = tuple(it.get_input_details(0)["shape"])
        outs = []
        for x in X:
            it.set_input(np.ascontiguousarray(x, np.int8).reshape(shape), 0)
            it.invoke()
            outs.append(np.asarray(it.get_output(0)).astype(np.int8).ravel())
    return np.stack(outs) if outs else np.zeros((0, 0), np.int8)


def compare(model: bytes, cm: CModel, X: np.ndarray, work: Path | None = None) -> dict:
    """Build the C model on this host, run it and TFLM on the int8 inputs ``X``, and count differing bytes."""
    with tempfile.TemporaryDirectory(prefix="hwmodel-build-") as d:
        exe = build_host(cm, Path(work or d))
        got = run_host(exe, X, int(np.prod(cm.output_shape)))
    want = tflm_outputs(model, X)
    diff = got.astype(int) != want.astype(int)
    return {"inputs": int(len(X)), "bytes_compared": int(diff.size), "bytes_different": int(diff.sum()),
            "max_lsb_diff": int(np.abs(got.astype(int) - want.astype(int)).max()) if diff.size else 0,
            "bit_exact": bool(diff.size and not diff.any())}
