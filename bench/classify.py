"""Fault classifier benchmark: mAP on held-out simulated clips and training time per training-set size.

Usage: python bench/classify.py [--sizes 10 50 200] [--test-per-class 20] [--severity 0.3 0.7] [--epochs 30]
                                [--threads 2] [--seed 0] [--base-sizes 50] [--out bench/results/classify.json]

For each size N, simulates N 10 s clips per class (normal + 5 faults, machines and backgrounds varied, severity
uniform in --severity, seed 1) and trains ``humwatch classify train``'s default model (small CNN from scratch,
stratified validation split, temperature scaling, per-class thresholds at precision 0.9) on them; then evaluates on
one held-out set (--test-per-class clips per class, seed 2, same severity range). Reports mAP (acceptance: >= 0.9 at
N = 50), validation ECE before/after temperature scaling, held-out ECE before/after, classes below the precision
target on held-out data, and the training wall time. Datasets are cached in bench/results/cache/. Timings depend on
the machine and its load.

``--base-sizes N ...`` adds, for those sizes, rows for the autoencoder backbone: an autoencoder trained
(``humwatch train`` defaults, 20 epochs) on the normal clips of that training set, then the classifier on its frozen
encoder embedding and with its last 2 encoder blocks fine-tuned at 1e-4 (the AE's training time is not included).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, write_results  # noqa: E402


def dataset(per_class: int, seed: int, sev: tuple[float, float]) -> Path:
    from anomaly.dataset import write_sim_dataset

    d = RESULTS / "cache" / f"classify-{per_class}pc-seed{seed}-sev{sev[0]:g}-{sev[1]:g}"
    if not (d / "simulation.csv").exists():
        import shutil

        shutil.rmtree(d, ignore_errors=True)
        print(f"simulating {per_class} clips/class into {d} ...", flush=True)
        write_sim_dataset(d, per_class, seed, sev)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--test-per-class", type=int, default=20)
    ap.add_argument("--severity", type=float, nargs=2, default=[0.3, 0.7])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-sizes", type=int, nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=RESULTS / "classify.json")
    args = ap.parse_args()

    import torch

    from anomaly.audio import file_log_mel
    from anomaly.classify import ClassifyConfig, FaultClassifier, evaluate_classifier
    from anomaly.dataset import load_dataset
    from anomaly.features import DEFAULT_PARAMS

    torch.set_num_threads(args.threads)
    sev = tuple(args.severity)
    test = load_dataset(dataset(args.test_per_class, 2, sev))
    test_recs = [file_log_mel(f, DEFAULT_PARAMS) for f in test.files]
    rows = []
    runs = [(n, "cnn") for n in args.sizes] + [(n, b) for n in args.base_sizes for b in ("ae-frozen", "ae-finetune2")]
    bases: dict[int, object] = {}
    for n, backbone in runs:
        ds = load_dataset(dataset(n, 1, sev))
        recs = [file_log_mel(f, DEFAULT_PARAMS) for f in ds.files]
        base = None
        if backbone != "cnn":
            if n not in bases:
                from anomaly.detectors import fit_detector
                from anomaly.train import TrainConfig

                normal = [r for r, y in zip(recs, ds.Y, strict=True) if y[ds.classes.index("normal")]]
                bases[n] = fit_detector("ae", normal, DEFAULT_PARAMS,
                                        train_config=TrainConfig(epochs=20, seed=args.seed, threads=args.threads))
            base = bases[n]
        cfg = ClassifyConfig(epochs=args.epochs, seed=args.seed, threads=args.threads,
                             finetune_layers=2 if backbone == "ae-finetune2" else 0)
        t0 = time.time()
        clf = FaultClassifier(ds.classes, DEFAULT_PARAMS, cfg, base=base).fit(recs, ds.Y, precision=0.9)
        secs = time.time() - t0
        m = evaluate_classifier(clf, test_recs, test.Y, test.classes)
        row = {"per_class": n, "backbone": backbone, "train_clips": len(ds.files), "test_clips": len(test.files),
               "map": round(m["map"], 4),
               "ap": {c: round(r["ap"], 4) for c, r in m["classes"].items()},
               "precision": {c: r["precision"] for c, r in m["classes"].items()},
               "recall": {c: r["recall"] for c, r in m["classes"].items()},
               "below_precision_target": m["below_precision_target"], "threshold_fallbacks": clf.fallbacks(),
               "temperature": round(clf.temperature_, 4),
               "val_ece_before": round(clf.ece_["val_before"], 4), "val_ece_after": round(clf.ece_["val_after"], 4),
               "test_ece_before": round(m["ece_uncalibrated"], 4), "test_ece_after": round(m["ece"], 4),
               "best_epoch": clf.history_["best_epoch"], "epochs_run": clf.history_["epochs_run"],
               "train_seconds": round(secs, 1), "severity": list(sev)}
        rows.append(row)
        print(f"N={n} {backbone}: mAP {row['map']:.3f}  "
              f"val ECE {row['val_ece_before']:.4f}->{row['val_ece_after']:.4f}  "
              f"held-out ECE {row['test_ece_before']:.4f}->{row['test_ece_after']:.4f}  "
              f"below target {row['below_precision_target']}  {secs:.0f} s", flush=True)
        write_results(args.out, rows, args.threads)  # after every size, so a cut-short run keeps what it measured

    print(f"\n| clips/class | backbone | train clips | mAP (held-out, {len(test.files)} clips) | "
          "val ECE before → after | "
          "held-out ECE before → after | below precision 0.9 (held-out) | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['per_class']} | {r['backbone']} | {r['train_clips']} | {r['map']:.3f} | "
              f"{r['val_ece_before']:.4f} → "
              f"{r['val_ece_after']:.4f} | {r['test_ece_before']:.4f} → {r['test_ece_after']:.4f} | "
              f"{', '.join(r['below_precision_target']) or '-'} | {r['train_seconds']:.0f} s |")


if __name__ == "__main__":
    main()
