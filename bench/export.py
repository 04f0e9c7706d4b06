"""Firmware export benchmark: time, sizes, TFLM arena and parity of ``humwatch export`` for the default model.

Usage: python bench/export.py [--train-minutes 3] [--calib-minutes 6] [--epochs 3] [--target cortex-m7]
                              [--work DIR] [--out bench/results/export.json]

Simulates a pump (factory background), trains the default ArchConfig on ``--train-minutes`` of it, creates and
calibrates (forced) a site on ``--calib-minutes`` of other audio, then runs the export exactly as
``humwatch export --site`` does (:func:`firmware_export.export.run_export`) and reports: wall time per stage and in
total (acceptance: < 2 min on 2 cores), model sizes (acceptance: int8 <= 200 KB, aim <= 100 KB), TFLM arena, ops,
int8-vs-PyTorch Pearson (acceptance: >= 0.99 on normal patches), AUC per runtime and the estimated latency per
target. Prints a table and writes JSON; timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
RESULTS = PROJECT / "bench" / "results" / "export.json"


def prepare(work: Path, train_minutes: float, calib_minutes: float, epochs: int) -> tuple[Path, float, float]:
    """Simulated audio, a trained default model and a calibrated site ``bench-pump`` under ``work``."""
    from anomaly.audio import file_log_mel
    from anomaly.features import DEFAULT_PARAMS
    from anomaly.score import fingerprint_files, fit_detector, model_hash
    from anomaly.simulate import SimConfig, write_audio
    from anomaly.train import TrainConfig
    from calibration.calibrate import CalibrationRequest, calibrate
    from calibration.store import SiteConfig, SiteStore

    train = work / "train" / "normal.flac"
    calib = work / "calib" / "site.flac"
    write_audio(train, SimConfig("pump", "none", 0.0, "factory", 1), train_minutes)
    write_audio(calib, SimConfig("pump", "none", 0.0, "factory", 2), calib_minutes)
    t0 = time.perf_counter()
    det = fit_detector("ae", [file_log_mel(train, DEFAULT_PARAMS)], DEFAULT_PARAMS,
                       train_config=TrainConfig(epochs=epochs, threads=2))
    det.save(work / "model", extra={"training_data": fingerprint_files([train])})
    train_s = time.perf_counter() - t0
    store = SiteStore(work / "sites")
    store.create(SiteConfig(name="bench-pump", model_path=str(work / "model"), model_hash=model_hash(work / "model"),
                            machine="pump"), exist_ok=True)
    t0 = time.perf_counter()
    calibrate(store.site("bench-pump"), CalibrationRequest(files=[calib], force=True))
    return work / "sites", train_s, time.perf_counter() - t0


def summary(m: dict, wall_s: float) -> dict:
    par = m["parity"]["runtimes"]
    return {
        "export_wall_seconds": round(wall_s, 1),
        "stage_seconds": m["timing_seconds"],
        "sizes_bytes": m["model"]["sizes"],
        "params": m["model"]["params"],
        "macs_per_patch": m["model"]["macs_per_patch"],
        "ops": m["model"]["tflite_ops"],
        "tflm_arena_bytes": m["tflm"].get("arena_bytes"),
        "tflm_arena_recommended_bytes": m["tflm"].get("arena_bytes_recommended"),
        "tflm_max_lsb_diff_vs_litert": m["tflm"].get("max_lsb_diff_vs_litert"),
        "pearson_int8_vs_pytorch_normal": par["tflite_int8"]["normal"]["pearson"],
        "pearson_int8_vs_pytorch_all": par["tflite_int8"]["all"]["pearson"],
        "max_rel_error_int8_normal": par["tflite_int8"]["normal"]["max_rel_error"],
        "auc": {rt: r["auc"] for rt, r in par.items()},
        "auc_by_fault": {rt: r["auc_by_fault"] for rt, r in par.items()},
        "threshold": {k: m["threshold"][k] for k in ("int8", "pytorch_reproduced", "site_pytorch",
                                                     "decision_agreement")},
        "latency_estimate_ms": {t: e["ms_per_patch"] for t, e in m["latency_estimate"]["targets"].items()},
        "gates": {g["gate"]: g["passed"] for g in m["gates"]["checks"]},
        "patches": m["parity"]["patches"],
    }


def print_table(s: dict) -> None:
    rows = [
        ("export wall time", f"{s['export_wall_seconds']:.1f} s (target < 120 s on 2 cores)"),
        ("model_int8.tflite", f"{s['sizes_bytes']['tflite_int8']:,} B (limit 204,800; aim 102,400)"),
        ("model_float.tflite / model.onnx", f"{s['sizes_bytes']['tflite_float']:,} B / {s['sizes_bytes']['onnx']:,} B"),
        ("params / MACs per patch", f"{s['params']:,} / {s['macs_per_patch'] / 1e6:.2f} M"),
        ("TFLM arena (measured / recommended)",
         f"{s['tflm_arena_bytes']:,} B / {s['tflm_arena_recommended_bytes']:,} B" if s["tflm_arena_bytes"] else "n/a"),
        ("ops", ", ".join(s["ops"])),
        ("Pearson int8 vs PyTorch (normal / all)",
         f"{s['pearson_int8_vs_pytorch_normal']:.6f} / {s['pearson_int8_vs_pytorch_all']:.6f} (target >= 0.99)"),
        ("AUC pytorch / onnxruntime / float / int8",
         " / ".join(f"{s['auc'][rt]:.4f}" for rt in ("pytorch", "onnxruntime", "tflite_float", "tflite_int8"))),
        ("threshold int8 / float (site)",
         f"{s['threshold']['int8']:.5g} / {s['threshold']['pytorch_reproduced']:.5g} "
         f"({s['threshold']['site_pytorch']:.5g}); decisions agree {s['threshold']['decision_agreement']:.1%}"),
        ("estimated latency (ESTIMATE)", ", ".join(f"{t} {v:.1f} ms" for t, v in s["latency_estimate_ms"].items())),
        ("gates", ", ".join(f"{g} {'pass' if ok else 'FAIL'}" for g, ok in s["gates"].items())),
    ]
    w = max(len(a) for a, _ in rows)
    print("humwatch export, default model")
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-minutes", type=float, default=3.0)
    ap.add_argument("--calib-minutes", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", default="cortex-m7")
    ap.add_argument("--work", type=Path, default=None, help="keep the audio, model, site and export here")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = ap.parse_args(argv)

    from firmware_export.export import ExportRequest, run_export

    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="hw-bench-export-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"preparing: {args.train_minutes:g} min training audio, {args.epochs} epochs, "
              f"{args.calib_minutes:g} min calibration audio in {work}")
        sites, train_s, calib_s = prepare(work, args.train_minutes, args.calib_minutes, args.epochs)
        t0 = time.perf_counter()
        m = run_export(ExportRequest(out=work / "fw", site="bench-pump", sites_dir=sites, target=args.target))
        wall = time.perf_counter() - t0
    s = summary(m, wall)
    print_table(s)
    result = {
        "benchmark": "export",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {"train_minutes": args.train_minutes, "calib_minutes": args.calib_minutes, "epochs": args.epochs,
                  "target": args.target, "train_seconds": round(train_s, 1), "calibrate_seconds": round(calib_s, 1)},
        "machine": {"cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "load_average_at_start": load, "platform": platform.platform(),
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "results": s,
        "tools": m["tools"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
