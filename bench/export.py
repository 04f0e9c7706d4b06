"""Firmware export benchmark: time, sizes, TFLM arena and parity of ``humwatch export`` for the default model and
the default fault classifier.

Usage: python bench/export.py [--train-minutes 3] [--calib-minutes 6] [--epochs 3] [--target cortex-m7]
                              [--classifier-per-class 10] [--classifier-epochs 10] [--no-classifier]
                              [--work DIR] [--out bench/results/export.json]

Simulates a pump (factory background), trains the default ArchConfig on ``--train-minutes`` of it, trains the
default scratch-CNN fault classifier on a simulated labelled set (``--classifier-per-class`` 10 s clips of each of
the six classes, ``--classifier-epochs`` epochs), creates and calibrates (forced) a site with that classifier on
``--calib-minutes`` of other audio, then runs the export exactly as ``humwatch export --site`` does
(:func:`firmware_export.export.run_export`) and reports: wall time per stage and in total (acceptance: < 2 min on 2
cores), model sizes (acceptance: int8 <= 200 KB, aim <= 100 KB; both models within the same budget), TFLM arena,
ops, int8-vs-PyTorch Pearson (acceptance: >= 0.99 on normal patches), AUC per runtime, the estimated latency per
target, and the classifier's logit parity and decision agreement. Prints a table and writes JSON; timings depend on
the machine and its load.
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

import common  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
RESULTS = PROJECT / "bench" / "results" / "export.json"


def train_classifier(work: Path, per_class: int, epochs: int) -> tuple[Path, float]:
    """The default scratch-CNN classifier on a simulated six-class set; returns its directory and training time."""
    from anomaly.audio import file_log_mel
    from anomaly.classify import ClassifyConfig, FaultClassifier
    from anomaly.dataset import load_dataset, write_sim_dataset
    from anomaly.features import DEFAULT_PARAMS

    data = work / "faults"
    if not data.is_dir():
        write_sim_dataset(data, per_class, seed=3)
    ds = load_dataset(data)
    recs = [file_log_mel(f, DEFAULT_PARAMS) for f in ds.files]
    t0 = time.perf_counter()
    clf = FaultClassifier(ds.classes, DEFAULT_PARAMS, ClassifyConfig(epochs=epochs, threads=2, seed=0))
    clf.fit(recs, ds.Y, 0.9).save(work / "classifier")
    return work / "classifier", time.perf_counter() - t0


def prepare(work: Path, train_minutes: float, calib_minutes: float, epochs: int,
            classifier: Path | None = None) -> tuple[Path, float, float]:
    """Simulated audio, a trained default model and a calibrated site ``bench-pump`` (with ``classifier``, if given)
    under ``work``."""
    from anomaly.audio import file_log_mel
    from anomaly.detectors import fingerprint_files, fit_detector
    from anomaly.features import DEFAULT_PARAMS
    from anomaly.modeldir import classifier_hash, model_hash
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
    clf = {"classifier_path": str(classifier), "classifier_hash": classifier_hash(classifier)} if classifier else {}
    store.create(SiteConfig(name="bench-pump", model_path=str(work / "model"), model_hash=model_hash(work / "model"),
                            machine="pump", **clf), exist_ok=True)
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
        "classifier": classifier_summary(m.get("classifier") or {}),
    }


def classifier_summary(c: dict) -> dict | None:
    """The classifier's figures (None when the export had none)."""
    if not c.get("included"):
        return None
    rts, tflm = c["parity"]["runtimes"], c["tflm"]
    return {
        "classes": c["source"]["classes"],
        "backbone": c["source"]["backbone"],
        "temperature": c["source"]["temperature"],
        "sizes_bytes": c["model"]["sizes"],
        "params": c["model"]["params"],
        "macs_per_patch": c["model"]["macs_per_patch"],
        "ops": c["model"]["tflite_ops"],
        "tflm_arena_bytes": tflm.get("arena_bytes"),
        "tflm_arena_recommended_bytes": tflm.get("arena_bytes_recommended"),
        "tflm_both_models": tflm.get("both_models"),
        "tflm_max_lsb_diff_vs_litert": tflm.get("max_lsb_diff_vs_litert"),
        "max_abs_logit_diff": {rt: rts[rt]["max_abs_logit_diff"] for rt in ("onnxruntime", "tflite_float",
                                                                            "tflite_int8")},
        "max_abs_logit_diff_int8_in_range": rts["tflite_int8"].get("max_abs_logit_diff_in_range"),
        "share_saturated_int8": rts["tflite_int8"].get("share_saturated"),
        "pearson_int8_logits": rts["tflite_int8"]["pearson"],
        "decision_agreement_int8": rts["tflite_int8"]["decision_agreement"],
        "decision_agreement_by_class": rts["tflite_int8"]["decision_agreement_by_class"],
        "fire_rate": {rt: rts[rt]["fire_rate"] for rt in ("pytorch", "tflite_int8")},
        "thresholds": c["thresholds"]["classes"],
        "latency_estimate_ms": {t: e["ms_per_patch"] for t, e in c["latency_estimate"]["targets"].items()},
        "patches": c["parity"]["patches"],
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
    ]
    c = s.get("classifier")
    if c:
        both = c["tflm_both_models"] or {}
        rows += [
            ("classifier_int8.tflite / float",
             f"{c['sizes_bytes']['tflite_int8']:,} B / {c['sizes_bytes']['tflite_float']:,} B (both int8 models "
             f"{s['sizes_bytes']['tflite_int8'] + c['sizes_bytes']['tflite_int8']:,} B, budget 204,800)"),
            ("classifier params / MACs per patch", f"{c['params']:,} / {c['macs_per_patch'] / 1e6:.2f} M"),
            ("classifier TFLM arena (measured / rec.)",
             f"{c['tflm_arena_bytes']:,} B / {c['tflm_arena_recommended_bytes']:,} B; both models "
             f"{both.get('separate_arenas_bytes', 0):,} B in two arenas" if c["tflm_arena_bytes"] else "n/a"),
            ("classifier ops", ", ".join(c["ops"])),
            ("classifier max |logit diff| ORT/float/int8",
             " / ".join(f"{c['max_abs_logit_diff'][rt]:.2e}" for rt in ("onnxruntime", "tflite_float",
                                                                        "tflite_int8"))
             + (f" ({c['max_abs_logit_diff_int8_in_range']:.2e} within the int8 range, "
                f"{c['share_saturated_int8']:.2%} saturated)" if c["share_saturated_int8"] is not None else "")),
            ("classifier int8 logit Pearson / decisions",
             f"{c['pearson_int8_logits']:.6f} / {c['decision_agreement_int8']:.2%} agree (gates 0.98 / 98%)"),
            ("classifier stages (onnx/onnx2tf/tflite/parity)",
             " / ".join(f"{s['stage_seconds'].get('classifier_' + k, 0):.1f}" for k in
                        ("onnx_export", "onnx2tf", "tflite_convert", "parity")) + " s"),
        ]
    rows.append(("gates", ", ".join(f"{g} {'pass' if ok else 'FAIL'}" for g, ok in s["gates"].items())))
    w = max(len(a) for a, _ in rows)
    print("humwatch export, default model" + (" + default fault classifier" if s.get("classifier") else ""))
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-minutes", type=float, default=3.0)
    ap.add_argument("--calib-minutes", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", default="cortex-m7")
    ap.add_argument("--classifier-per-class", type=int, default=10, help="simulated 10 s clips per class")
    ap.add_argument("--classifier-epochs", type=int, default=10)
    ap.add_argument("--no-classifier", action="store_true", help="benchmark the anomaly model alone")
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
        clf_dir, clf_s = (None, 0.0) if args.no_classifier else train_classifier(
            work, args.classifier_per_class, args.classifier_epochs)
        sites, train_s, calib_s = prepare(work, args.train_minutes, args.calib_minutes, args.epochs, clf_dir)
        t0 = time.perf_counter()
        m = run_export(ExportRequest(out=work / "fw", site="bench-pump", sites_dir=sites, target=args.target))
        wall = time.perf_counter() - t0
    s = summary(m, wall)
    print_table(s)
    result = {
        "benchmark": "export",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {"train_minutes": args.train_minutes, "calib_minutes": args.calib_minutes, "epochs": args.epochs,
                  "target": args.target, "train_seconds": round(train_s, 1), "calibrate_seconds": round(calib_s, 1),
                  "classifier": None if args.no_classifier else {
                      "per_class": args.classifier_per_class, "epochs": args.classifier_epochs,
                      "train_seconds": round(clf_s, 1)}},
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
