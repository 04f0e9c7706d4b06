"""The generated C model on a Cortex-M7 under QEMU: flash, RAM, stack and instructions per patch, measured.

Usage: python bench/firmware.py [--epochs 12] [--seconds 10] [--out JSON]

Two models, both the default architecture (ArchConfig()): "default" with its initial weights (torch seed 0) and
"demo", trained as `humwatch demo` trains it (6 min of simulated pump audio in a factory, seed 7, --epochs, default
12). Each is converted with the export's own chain (firmware_export.pipeline.convert_model, int8 calibrated on the
normalised training patches), turned into model.c (firmware_export.cmodel), and built with the C front end, score and
alarm rule (hw_device.c) into the reference firmware (firmware_export/firmware) for QEMU's mps2-an500 (Cortex-M7,
arm-none-eabi-gcc -O2, hard float), with and without the SMLAD kernels. Reported:

* flash and RAM of the *device image* (startup + hw_process + constants, no I/O library) from arm-none-eabi-size:
  flash = text + data, RAM = data + bss + the 2 KB reserved stack; peak stack of hw_process measured by painting;
* instructions per 0.96 s patch for the network, the front end (96 frames) and score + rule, counted under
  `qemu-system-arm -icount shift=0` (one virtual nanosecond per executed instruction, read from a 25 MHz timer):
  instructions, not cycles;
* bit-exactness on the target: every network output byte of every patch equals TFLite Micro's on the same input;
  the firmware's scores and alarms against Python's (golden audio: --seconds of simulated pump, half normal, half
  with a bearing fault, seed 3);
* beside them the TFLite Micro figures of the same model: flatbuffer size and the minimal arena of the TFLM Python
  interpreter (reference kernels). JSON: bench/results/firmware.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import RESULTS, write_json  # noqa: E402  (puts the project root on sys.path too)

import anomaly  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)
from anomaly.features import DEFAULT_PARAMS as P  # noqa: E402
from anomaly.features import log_mel, patches  # noqa: E402

GOALS = {"flash_bytes": 160 * 1024, "ram_bytes": 48 * 1024, "network_instructions": 12_000_000}


def golden_audio(seconds: float) -> np.ndarray:
    from anomaly.simulate import SimConfig, simulate

    a = simulate(SimConfig("pump", "none", 0.0, "factory", 3), seconds / 2)
    b = simulate(SimConfig("pump", "bearing-outer", 1.0, "factory", 3), seconds / 2, start_s=seconds / 2)
    return np.clip(np.round(np.concatenate([a, b]) * 32767.0), -32768, 32767).astype(np.int16)


def models(epochs: int) -> dict:
    import torch

    from anomaly.detectors import fit_detector
    from anomaly.model import ArchConfig, ConvAutoencoder
    from anomaly.simulate import SimConfig, simulate
    from anomaly.train import TrainConfig

    torch.set_num_threads(1)
    train = np.asarray(log_mel(simulate(SimConfig("pump", "none", 0.0, "factory", 7), 360.0), P))
    torch.manual_seed(0)
    default = ConvAutoencoder(ArchConfig()).eval()
    t = time.time()
    det = fit_detector("ae", [train], P, train_config=TrainConfig(epochs=epochs, threads=1))
    print(f"trained the demo model ({epochs} epochs) in {time.time() - t:.0f} s", flush=True)
    Pt = patches(train, P)
    mean, std = Pt.mean(axis=(0, 1)), Pt.std(axis=(0, 1)) + 1e-3
    return {"default": (default, mean, std, Pt, "ArchConfig() with its initial weights (torch seed 0); normalisation "
                                                "from 6 min of simulated pump audio (factory, seed 7)"),
            "demo": (det.model_.eval(), det.mean_, det.std_, Pt, f"ArchConfig() trained as the demo: 6 min simulated "
                                                                 f"pump (factory, seed 7), {epochs} epochs")}


def measure(name: str, module, mean, std, train_patches, what: str, audio: np.ndarray, work: Path) -> dict:
    from firmware_export import pipeline, tflite
    from firmware_export.c_arrays import frontend_header
    from firmware_export.firmware import build, golden
    from firmware_export.frontend_ref import DIR, SOURCES

    rep = ((train_patches[:: max(1, len(train_patches) // 200)] - mean) / std).astype(np.float32)
    conv = pipeline.convert_model(module, "model", work, work / "conv", P.patch_frames, P.n_mels, rep,
                                  (1, P.patch_frames, P.n_mels, 1), lambda *_: None, lambda *_: None)
    model = conv.int8_bytes
    from anomaly.decision import MOFN_RULE

    # the m-of-n rule over a threshold of the golden audio's median score (the windowed mean needs a calibration)
    spec = golden.DeviceSpec(P, np.asarray(mean, np.float32), np.asarray(std, np.float32), 0.0, MOFN_RULE)
    py = golden.expected(model, spec, audio)
    spec.threshold = float(np.median(py["scores"]))
    src = work / "src"
    src.mkdir()
    cm = golden.write_device_sources(src, model, f"bench {name}")
    (src / "humwatch_frontend.h").write_text(frontend_header(
        P, spec.mean, spec.std, None, cm.input_quant, cm.output_quant,
        {"threshold": spec.threshold, "k": 4.0, "rule": spec.rule, "site_threshold_float": None,
         "threshold_source": "bench: median of the golden audio's scores"}, {"model_hash": name}, f"bench {name}"))
    for s in SOURCES:
        (src / s).write_bytes((DIR / s).read_bytes())
    tc, why = build.toolchain()
    if tc is None or tc.qemu is None:
        raise SystemExit(f"error: {why or 'qemu-system-arm not found'} (run `make arm-toolchain`)")
    row = {"model": name, "what": what, "int8_tflite_bytes": len(model), "ops": cm.ops, "kernel_calls": cm.steps,
           "macs_per_patch": cm.macs, "model_scratch_bytes": cm.scratch_bytes, "model_const_bytes": cm.const_bytes}
    for dsp in (True, False):
        tag = "" if dsp else "_no_dsp"
        dev = build.image_size(tc, build.build(tc, src, work / f"device{tag}.elf", "device", dsp=dsp))
        t = time.time()
        run = build.run_test_image(tc, build.build(tc, src, work / f"test{tag}.elf", "test", dsp=dsp), audio,
                                   work / f"run{tag}")
        qemu_s = time.time() - t
        cmp = golden.compare(model, spec, audio, run)
        last = run["patches"][-1]
        row[f"device{tag}"] = dev
        row[f"run{tag}"] = {
            "network_instructions": last["network_instructions"], "frontend_instructions":
                last["frontend_instructions"], "score_rule_instructions": last["score_instructions"],
            "network_instructions_by_call": run["network_step_instructions"],
            "stack_peak_bytes": run["stack_peak"], "device_state_bytes": run["device_state_bytes"],
            "qemu_seconds": round(qemu_s, 2), "comparison": {k: v for k, v in cmp.items()
                                                             if k not in ("python_scores", "firmware_scores")}}
    tflm = tflite.tflm_check(model, tflite.quantize(rep[:2], *conv.qm.input_quant))
    row["tflm"] = {"arena_bytes": tflm.get("arena_bytes"), "version": tflm.get("version"),
                   "note": "TFLM Python interpreter, reference kernels: minimal arena; the TFLM runtime's own code "
                           "is not measured here"}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "firmware.json")
    args = ap.parse_args()
    t0 = time.time()
    audio = golden_audio(args.seconds)
    rows = []
    for name, (module, mean, std, tp, what) in models(args.epochs).items():
        with tempfile.TemporaryDirectory(prefix=f"bench-fw-{name}-") as d:
            rows.append(measure(name, module, mean, std, tp, what, audio, Path(d)))
    print(f"\n{'model':<8} {'flash B':>8} {'RAM B':>7} {'stack B':>7} {'net instr':>11} {'net no-DSP':>11} "
          f"{'front end':>10} {'bit-exact':>9} {'alarms eq':>9} {'TFLM arena':>10} {'tflite B':>9}")
    for r in rows:
        d, run, nd = r["device"], r["run"], r["run_no_dsp"]
        print(f"{r['model']:<8} {d['flash_bytes']:>8,} {d['ram_bytes']:>7,} {run['stack_peak_bytes']:>7,} "
              f"{run['network_instructions']:>11,} {nd['network_instructions']:>11,} "
              f"{run['frontend_instructions']:>10,} {str(run['comparison']['network_bit_exact']):>9} "
              f"{str(run['comparison']['alarm_equal']):>9} {r['tflm']['arena_bytes'] or 0:>10,} "
              f"{r['int8_tflite_bytes']:>9,}")
    print("instructions per 0.96 s patch under qemu-system-arm -icount shift=0 (instructions, not cycles); goals: "
          f"flash <= {GOALS['flash_bytes']:,} B, RAM <= {GOALS['ram_bytes']:,} B, network <= "
          f"{GOALS['network_instructions']:,}")
    write_json(args.out, {"rows": rows, "goals": GOALS, "golden_audio": f"{args.seconds:g} s simulated pump "
                          "(factory, seed 3): first half normal, second half bearing-outer severity 1.0",
                          "toolchain": "Debian gcc-arm-none-eabi + newlib (nano, rdimon for the test image), "
                                       "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16 -O2; "
                                       "qemu-system-arm -M mps2-an500 -icount shift=0",
                          "seconds": round(time.time() - t0, 1)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
