"""What the device should compute, in Python, and the comparison with what the firmware computed under QEMU.

Python side: the Python front end on the same int16 audio (samples / 32768), the model's normalisation and input
quantisation, the int8 network in the TensorFlow Lite Micro interpreter (one pass, or the interpolation model's
passes assembled), the score, the threshold and the m-of-n rule. Firmware side: ``build.run_test_image``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export.cmodel import DEVICE_SOURCES, DIR, check, codegen

NORM_TOL = 1e-3  # float x of the C front end vs Python's (as tests/test_export.py)
SCORE_REL_TOL = 2e-3  # end-to-end: the C front end's int8 codes differ from Python's in ~0.1 % of elements by 1 LSB
SCORE_SAME_OUTPUT_REL_TOL = 1e-5  # the firmware's score vs Python's score of the firmware's own x and network output


@dataclass
class DeviceSpec:
    """What the header of an export fixes: front end, normalisation, the score (an :mod:`anomaly.score` object), the
    threshold and the alarm rule (an :mod:`anomaly.decision` rule), and the passes per patch."""

    params: object  # FeatureParams
    mean: np.ndarray
    std: np.ndarray
    threshold: float
    rule: object  # anomaly.decision alarm rule (MOfN, or a calibrated WindowMean: the header's device rule)
    mask_frames: int = 0
    score: object = None  # anomaly.score.MSE when None
    mic_offsets: np.ndarray | None = None

    @property
    def scorer(self):
        from anomaly.score import MSE

        return self.score if self.score is not None else MSE

    def alarms(self, scores: np.ndarray) -> np.ndarray:
        """The alarm state after each patch (1 while the rule holds), as ``hw_alarm_update`` returns it."""
        state = self.rule.stream(self.threshold)
        out = []
        for s in scores:
            state.update(float(s))
            out.append(int(state.active))
        return np.array(out, int)


def write_device_sources(out_dir: Path, model: bytes, banner: str = "") -> codegen.CModel:
    """hw_model.c/.h for ``model`` plus the kernel library and hw_device.c/.h into ``out_dir`` (which holds, or will
    hold, humwatch_frontend.h and hw_frontend.c/.h)."""
    cm = codegen.generate(model, banner=banner)
    check.write_sources(cm, out_dir)
    for name in DEVICE_SOURCES:
        shutil.copyfile(DIR / name, out_dir / name)
    return cm


def expected(model: bytes, spec: DeviceSpec, audio: np.ndarray) -> dict:
    """Python's scores, over-threshold flags and alarm states per patch for int16 ``audio``."""
    from anomaly.features import log_mel, patches
    from firmware_export import parity, tflite

    p = spec.params
    lm = log_mel((np.asarray(audio, np.int16).astype(np.float32) / np.float32(32768.0)), p, spec.mic_offsets)
    P = patches(lm, p)
    Xn = ((P - spec.mean) / spec.std).astype(np.float32)
    iq, oq = _io_quant(model)

    def run(X: np.ndarray) -> np.ndarray:
        q = tflite.quantize(X, *iq)
        y = check.tflm_outputs(model, q).reshape(q.shape)
        return tflite.dequantize(y, *oq)

    from anomaly.decision import over

    y = parity.interpolated(run, Xn, spec.mask_frames)
    scores = spec.scorer.of_output(Xn, y)
    return {"x": Xn, "scores": scores, "over": over(scores, spec.threshold).astype(int),
            "alarm": spec.alarms(scores)}


def _io_quant(model: bytes) -> tuple[tuple[float, int], tuple[float, int]]:
    from firmware_export.cmodel.graph import read_graph

    g = read_graph(model)
    i, o = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    return (i.s, i.zp), (o.s, o.zp)


def compare(model: bytes, spec: DeviceSpec, audio: np.ndarray, run: dict) -> dict:
    """Firmware run vs Python: bit-exactness of every network invocation (TFLM on the firmware's own inputs), the
    front end, the scores and the alarms."""
    from firmware_export import tflite
    from firmware_export.firmware.build import read_io

    want = expected(model, spec, audio)
    n = len(run["patches"])
    passes = spec.params.patch_frames // spec.mask_frames if spec.mask_frames else 1
    elems = spec.params.patch_frames * spec.params.n_mels
    io = read_io(run["io"], n, passes, elems)
    tflm = check.tflm_outputs(model, io["inputs"].reshape(-1, spec.params.patch_frames, spec.params.n_mels))
    diff = tflm.astype(int) != io["outputs"].astype(int)
    fw_scores = np.array([p["score"] for p in run["patches"]])
    # the firmware's score of its own x and network output, recomputed in float64
    _, oq = _io_quant(model)
    y = io["outputs"].reshape(n, passes, spec.params.patch_frames, spec.params.n_mels)
    if passes > 1:
        w = spec.mask_frames
        y = np.stack([np.concatenate([y[k, j, j * w:(j + 1) * w] for j in range(passes)]) for k in range(n)])
    else:
        y = y[:, 0]
    x = io["x"].reshape(n, spec.params.patch_frames, spec.params.n_mels)
    own = spec.scorer.of_output(x, tflite.dequantize(y, *oq))
    rel = np.abs(fw_scores - want["scores"][:n]) / np.maximum(np.abs(want["scores"][:n]), 1e-12)
    return {
        "patches": n, "python_patches": int(len(want["scores"])),
        "network_invocations": int(len(io["inputs"])), "network_bytes_compared": int(diff.size),
        "network_bytes_different": int(diff.sum()), "network_bit_exact": bool(diff.size and not diff.any()),
        "frontend_max_abs_diff_x": float(np.abs(x - want["x"][:n]).max()),
        "score_max_rel_diff_vs_python": float(rel.max()),
        "score_max_rel_diff_own_output": float((np.abs(fw_scores - own) / np.maximum(np.abs(own), 1e-12)).max()),
        "over_equal": bool(np.array_equal([p["over"] for p in run["patches"]], want["over"][:n])),
        "alarm_equal": bool(np.array_equal([p["alarm"] for p in run["patches"]], want["alarm"][:n])),
        "alarms_raised": int(sum(p["alarm"] for p in run["patches"])),
        "python_scores": want["scores"][:n].tolist(), "firmware_scores": fw_scores.tolist(),
    }
