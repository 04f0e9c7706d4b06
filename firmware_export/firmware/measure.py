"""The reference firmware's figures for an export's manifest: build the device and test images from the export's
sources, run golden audio under QEMU, compare with Python (see :mod:`firmware_export.firmware.build`, ``golden``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from firmware_export.errors import ExportError
from firmware_export.firmware import build, golden

GOLDEN_SECONDS = 5.0  # golden audio the export runs on the emulated device (5 patches)


def golden_audio(path: Path, seconds: float = GOLDEN_SECONDS, sample_rate: int = 16000) -> np.ndarray:
    """The first ``seconds`` of an audio file as int16 PCM, the device's input."""
    from anomaly.audio import load

    x = np.asarray(load(path, sample_rate), np.float64)[: int(seconds * sample_rate)]
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def firmware_figures(src_dir: Path, model: bytes, spec: golden.DeviceSpec, audio: np.ndarray) -> dict:
    """Measured flash, RAM, stack and instructions per patch, and the on-target comparison; ``{"measured": False,
    "reason": ...}`` where the cross toolchain or QEMU is missing."""
    tc, why = build.toolchain()
    if tc is None or tc.qemu is None:
        return {"measured": False, "reason": why or "qemu-system-arm not found (Debian: apt-get install "
                                                    "qemu-system-arm)"}
    with tempfile.TemporaryDirectory(prefix="hw-firmware-") as d:
        work = Path(d)
        for f in src_dir.iterdir():
            if f.suffix in (".c", ".h"):
                shutil.copyfile(f, work / f.name)
        try:
            dev = build.image_size(tc, build.build(tc, work, work / "device.elf", "device"))
            run = build.run_test_image(tc, build.build(tc, work, work / "test.elf", "test"), audio, work / "run")
            cmp = golden.compare(model, spec, audio, run)
        except ExportError as e:
            return {"measured": False, "reason": str(e)}
    last = run["patches"][-1] if run["patches"] else {}
    return {
        "measured": True,
        "target": "QEMU mps2-an500 (Cortex-M7), arm-none-eabi-gcc -O2 -mcpu=cortex-m7 -mfloat-abi=hard "
                  "-mfpu=fpv5-d16, SMLAD kernels",
        "device_image": {**dev, "what": "startup + hw_process (front end, network, score, alarm rule) + constants, "
                                        "no I/O library; RAM = data + bss + reserved stack"},
        "stack_peak_bytes": run["stack_peak"],
        "instructions_per_patch": {"network": last.get("network_instructions"),
                                   "frontend": last.get("frontend_instructions"),
                                   "score_and_rule": last.get("score_instructions"),
                                   "network_by_kernel_call": run["network_step_instructions"],
                                   "note": "executed instructions (qemu -icount shift=0: 1 ns of virtual time per "
                                           "instruction, read from a 25 MHz timer), not cycles"},
        "golden_audio_patches": cmp["patches"],
        "network_bit_exact_on_target": cmp["network_bit_exact"],
        "network_bytes_compared": cmp["network_bytes_compared"],
        "score_max_rel_diff_vs_python": cmp["score_max_rel_diff_vs_python"],
        "alarms_equal_python": cmp["alarm_equal"] and cmp["over_equal"],
    }
