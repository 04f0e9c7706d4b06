"""The reference firmware for a Cortex-M7: build it with Debian's ``gcc-arm-none-eabi`` + newlib, run it under
``qemu-system-arm -M mps2-an500 -semihosting``, and measure it.

Two images from the same device sources (the export's ``humwatch_frontend.h`` + ``hw_frontend.c`` + ``hw_model.c`` +
``hw_kernels.c`` + ``hw_device.c``):

* the *device* image (``fw_size_main.c``: startup + ``hw_process`` on a synthetic tone, no I/O library): its flash
  (text + data) and RAM (data + bss + the reserved stack) are what a product firmware needs for the model;
* the *test* image (``fw_main.c``, semihosting through newlib's rdimon): reads golden audio, prints each patch's
  score and alarm, the instructions spent in the front end, the network and the score + rule (from a timer under
  ``-icount shift=0``: 1 ns of virtual time per executed instruction), the peak stack of ``hw_process`` (painted
  before each call, checked after), and writes every network input and output for the host to compare with TFLM.

Nothing here is an estimate: the figures come from the linker's sections and from the emulator. Instructions are
not cycles (a Cortex-M7 dual-issues some pairs and stalls on memory; QEMU models neither).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export.errors import ExportError

DIR = Path(__file__).resolve().parent
CC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"
MACHINE = "mps2-an500"
CPU_FLAGS = ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16")
C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections")
DEVICE_SOURCES = ("hw_frontend.c", "hw_model.c", "hw_kernels.c", "hw_device.c")
DEVICE_STACK = 2048  # bytes reserved for the stack in the device image (the test image measures the peak: ~1.5 KB)
TEST_STACK, TEST_HEAP = 16384, 16384
TIMER_HZ = 25_000_000  # CMSDK APB timer clock of mps2-an500 (the calibration loop checks it)
QEMU_TIMEOUT_S = 300


@dataclass
class Toolchain:
    cc: str
    size: str
    qemu: str | None


def toolchain() -> tuple[Toolchain | None, str]:
    """The cross compiler and emulator, or ``(None, reason)``."""
    cc, size, qemu = shutil.which(CC), shutil.which(SIZE), shutil.which(QEMU)
    if not cc or not size:
        return None, (f"{CC} not found (Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi; "
                      "`make arm-toolchain` does it)")
    r = subprocess.run([cc, *CPU_FLAGS, "-print-file-name=librdimon.a"], capture_output=True, text=True)
    if r.returncode != 0 or not Path(r.stdout.strip()).is_file():
        return None, "newlib for arm-none-eabi not found (Debian: apt-get install libnewlib-arm-none-eabi)"
    return Toolchain(cc, size, qemu), ""


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 300) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if r.returncode != 0:
        raise ExportError(f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}")
    return r.stdout


def build(tc: Toolchain, src_dir: Path, out: Path, kind: str = "test", dsp: bool = True) -> Path:
    """Compile and link one image (``kind`` "test" or "device") from the device sources in ``src_dir``.

    ``dsp=False`` builds the kernels without the SMLAD path (``-DHWK_NO_DSP``), for comparison.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    main = DIR / ("fw_main.c" if kind == "test" else "fw_size_main.c")
    defs = ["-DHW_PROFILE_HOOKS", "-DHW_MODEL_STEP_DONE(k)=hw_fw_step_done(k)",
            "-include", str(DIR / "fw_hooks.h")] if kind == "test" else []
    if not dsp:
        defs.append("-DHWK_NO_DSP")
    stack, heap = (TEST_STACK, TEST_HEAP) if kind == "test" else (DEVICE_STACK, 0)
    specs = (["--specs=nano.specs", "--specs=rdimon.specs", "-u", "_printf_float"] if kind == "test"
             else ["--specs=nano.specs", "--specs=nosys.specs"])
    cmd = [tc.cc, *CPU_FLAGS, *C_FLAGS, *defs, f"-I{src_dir}", *[str(src_dir / s) for s in DEVICE_SOURCES],
           str(main), str(DIR / "startup.c"), "-nostartfiles", *specs, "-T", str(DIR / "mps2_an500.ld"),
           f"-Wl,--defsym=STACK_SIZE={stack}", f"-Wl,--defsym=HEAP_SIZE={heap}", "-Wl,--gc-sections",
           f"-Wl,-Map={out.with_suffix('.map')}", "-o", str(out), "-lm"]
    _run(cmd, f"building the {kind} firmware")
    return out


def build_model_only(tc: Toolchain, src_dir: Path, out: Path) -> Path:
    """The generated network alone (hw_model.c + hw_kernels.c + fw_model_main.c): for kernel tests on the target."""
    cmd = [tc.cc, *CPU_FLAGS, *C_FLAGS, f"-I{src_dir}", str(src_dir / "hw_model.c"), str(src_dir / "hw_kernels.c"),
           str(DIR / "fw_model_main.c"), str(DIR / "startup.c"), "-nostartfiles", "--specs=nano.specs",
           "--specs=rdimon.specs", "-T", str(DIR / "mps2_an500.ld"), f"-Wl,--defsym=STACK_SIZE={TEST_STACK}",
           f"-Wl,--defsym=HEAP_SIZE={TEST_HEAP}", "-Wl,--gc-sections", "-o", str(out), "-lm"]
    _run(cmd, "building the model-only firmware")
    return out


def run_model_only(tc: Toolchain, elf: Path, X: np.ndarray, out_bytes: int, work: Path) -> np.ndarray:
    """Run the model-only image on int8 inputs ``X [n, ...]`` under QEMU; return the outputs ``[n, out_bytes]``."""
    work.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(X, np.int8).tofile(work / "in.i8")
    r = subprocess.run(qemu_command(tc, elf), cwd=work, capture_output=True, text=True, timeout=QEMU_TIMEOUT_S)
    if r.returncode != 0 or f"done {len(X)}" not in r.stdout:
        raise ExportError(f"the model-only firmware failed under QEMU (exit {r.returncode}): "
                          f"{(r.stdout + r.stderr).strip()[-400:]}")
    return np.fromfile(work / "out.i8", np.int8).reshape(len(X), out_bytes)


def sections(tc: Toolchain, elf: Path) -> dict[str, int]:
    """Section sizes (bytes) from ``arm-none-eabi-size -A``."""
    text = _run([tc.size, "-A", str(elf)], "arm-none-eabi-size")
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def image_size(tc: Toolchain, elf: Path) -> dict:
    """Flash (code + constants + initialised data) and RAM (data + bss + heap + reserved stack) of an image."""
    s = sections(tc, elf)
    flash_sections = (".text", ".ARM.exidx", ".init_array", ".preinit_array", ".fini_array", ".data")
    flash = sum(s.get(k, 0) for k in flash_sections)
    ram = s.get(".data", 0) + s.get(".bss", 0) + s.get(".heap", 0) + s.get(".stack", 0)
    return {"flash_bytes": flash, "ram_bytes": ram, "text": s.get(".text", 0), "data": s.get(".data", 0),
            "bss": s.get(".bss", 0), "stack_reserved": s.get(".stack", 0), "heap": s.get(".heap", 0)}


def symbol_sizes(tc: Toolchain, elf: Path) -> dict[str, int]:
    """Sizes of the biggest named parts, from ``arm-none-eabi-nm -S`` (model constants, scratch, device state)."""
    nm = shutil.which("arm-none-eabi-nm")
    if not nm:
        return {}
    out: dict[str, int] = {}
    for line in _run([nm, "-S", "--size-sort", str(elf)], "arm-none-eabi-nm").splitlines():
        parts = line.split()
        if len(parts) == 4:
            out[parts[3]] = int(parts[1], 16)
    return out


def qemu_command(tc: Toolchain, elf: Path) -> list[str]:
    return [tc.qemu, "-M", MACHINE, "-cpu", "cortex-m7", "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", "none", "-icount", "shift=0", "-semihosting-config", "enable=on,target=native",
            "-kernel", str(elf)]


def run_test_image(tc: Toolchain, elf: Path, audio: np.ndarray, work: Path, timeout: float = QEMU_TIMEOUT_S) -> dict:
    """Run the test image on int16 ``audio`` under QEMU; parse its report.

    Returns ``{"patches": [{score, over, alarm, frontend_instructions, network_instructions, score_instructions,
    stack}], "instructions_per_tick", "stack_peak", "io": Path}``.
    """
    if tc.qemu is None:
        raise ExportError(f"{QEMU} not found (Debian: apt-get install qemu-system-arm)")
    work.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(audio, "<i2").tofile(work / "audio.s16")
    env = dict(os.environ)
    r = subprocess.run(qemu_command(tc, elf), cwd=work, capture_output=True, text=True, timeout=timeout, env=env)
    text = r.stdout
    if r.returncode != 0 or "done stack_peak" not in text:
        raise ExportError(f"the firmware did not finish under QEMU (exit {r.returncode}): "
                          f"{(text + r.stderr).strip()[-600:]}")
    m = re.search(r"calibration instructions (\d+) ticks (\d+)", text)
    ipt = int(m.group(1)) / int(m.group(2))
    patches = []
    for m in re.finditer(r"patch (\d+) score (\S+) over (\d) alarm (\d) frontend (\d+) network (\d+) score_rule (\d+) "
                         r"stack (\d+)", text):
        patches.append({"patch": int(m.group(1)), "score": float(m.group(2)), "over": int(m.group(3)),
                        "alarm": int(m.group(4)), "frontend_instructions": round(int(m.group(5)) * ipt),
                        "network_instructions": round(int(m.group(6)) * ipt),
                        "score_instructions": round(int(m.group(7)) * ipt), "stack": int(m.group(8))})
    steps = [round(int(m.group(2)) * ipt / max(1, len(patches))) for m in re.finditer(r"step (\d+) ticks (\d+)", text)]
    peak = int(re.search(r"done stack_peak (\d+)", text).group(1))
    dev = re.search(r"device bytes (\d+) scratch (\d+)", text)
    return {"patches": patches, "instructions_per_tick": ipt, "stack_peak": peak, "io": work / "io.bin",
            "network_step_instructions": steps,
            "device_state_bytes": int(dev.group(1)), "model_scratch_bytes": int(dev.group(2))}


def read_io(path: Path, n_patches: int, passes: int, patch_elements: int) -> dict[str, np.ndarray]:
    """The test image's io.bin: per patch ``passes`` x (int8 input, int8 output), then the float patch x."""
    raw = path.read_bytes()
    per = passes * 2 * patch_elements + 4 * patch_elements
    if len(raw) != n_patches * per:
        raise ExportError(f"io.bin has {len(raw)} bytes, expected {n_patches} x {per}")
    ins, outs, xs = [], [], []
    for k in range(n_patches):
        block = raw[k * per:(k + 1) * per]
        for j in range(passes):
            o = j * 2 * patch_elements
            ins.append(np.frombuffer(block[o:o + patch_elements], np.int8))
            outs.append(np.frombuffer(block[o + patch_elements:o + 2 * patch_elements], np.int8))
        xs.append(np.frombuffer(block[passes * 2 * patch_elements:], "<f4"))
    return {"inputs": np.stack(ins), "outputs": np.stack(outs), "x": np.stack(xs)}
