"""Real-data benchmark: humwatch's default autoencoder against the DCASE 2020 Task 2 baseline on the same splits.

Usage: python bench/dcase.py [--data ROOT] [--seeds 0] [--epochs-ours N] [--epochs-baseline N]
                             [--out bench/results/dcase.json] [--machines GLOB] [--score mse|gaussian]
                             [--mask-frames N]

For every ``<set>/<machine>`` under ROOT (default ``../shared/data`` from the project root) that has ``train/`` and
``test/``: train (a) ``fit_detector("ae", ...)`` with the default ArchConfig/TrainConfig (epochs and seed
overridable) and (b) the baseline (bench/dcase_baseline.py) on ``train/``, score every labelled clip in ``test/``,
and record AUC, pAUC (max FPR 0.1, :func:`anomaly.evaluate.auc_pauc` for both), training seconds (feature
extraction included) and scoring speed in × real time (test audio seconds / scoring wall seconds, feature
extraction included, after one untimed warm-up clip). Ours is scored with the mean of its patch scores per clip;
the max is recorded as an extra column. With several seeds every number is reported as mean ± std over seeds.
Prints a table and writes JSON; timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import common  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dcase_baseline import DEFAULT_CONFIG as BASELINE_CONFIG  # noqa: E402
from dcase_baseline import DcaseBaseline  # noqa: E402

from anomaly.audio import file_log_mel, file_patches, find_audio  # noqa: E402
from anomaly.detectors import fit_detector  # noqa: E402
from anomaly.evaluate import auc_pauc, find_labelled  # noqa: E402
from anomaly.features import DEFAULT_PARAMS  # noqa: E402
from anomaly.model import ArchConfig  # noqa: E402
from anomaly.train import TrainConfig  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("../shared/data")  # relative to the project root
RESULTS = PROJECT / "bench" / "results" / "dcase.json"
METHODS = ("ours", "baseline")
METRICS = ("auc", "pauc", "auc_max", "pauc_max", "train_s", "x_realtime")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_machines(root: Path, pattern: str) -> list[tuple[str, Path]]:
    """``(set/machine, dir)`` for every ``root/<set>/<machine>`` holding ``train/`` and ``test/`` that matches."""
    out = []
    for d in sorted(p for p in root.glob("*/*") if p.is_dir()):
        name = f"{d.parent.name}/{d.name}"
        if (d / "train").is_dir() and (d / "test").is_dir() and fnmatch.fnmatch(name, pattern):
            out.append((name, d))
    return out


def audio_seconds(paths) -> float:
    total = 0.0
    for p in paths:
        i = sf.info(str(p))
        total += i.frames / i.samplerate
    return total


def timed_scores(score, paths) -> tuple[list, float]:
    """Score every path after one untimed warm-up call; return the scores and the wall seconds of the timed loop."""
    score(paths[0])
    t0 = time.perf_counter()
    out = [score(p) for p in paths]
    return out, time.perf_counter() - t0


def epoch_logger(who: str, epochs: int, every: int):
    t0 = time.perf_counter()

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch % every == 0 or epoch in (1, epochs):
            log(f"    {who}: epoch {epoch}/{epochs} train loss {train_loss:.4g} val loss {val_loss:.4g} "
                f"({time.perf_counter() - t0:.0f} s)")

    return on_epoch


def run_ours(train_files, test_paths, labels, epochs: int, seed: int, threads: int, score: str = "mse",
             mask_frames: int = 0) -> dict:
    cfg = TrainConfig(epochs=epochs, seed=seed, threads=threads, score=score, mask_frames=mask_frames)
    t0 = time.perf_counter()
    recs = [file_log_mel(f, DEFAULT_PARAMS) for f in train_files]
    det = fit_detector("ae", recs, DEFAULT_PARAMS, train_config=cfg,
                       on_epoch=epoch_logger("ours", epochs, max(1, epochs // 8)))
    train_s = time.perf_counter() - t0
    h = det.history_
    log(f"    ours: trained in {train_s:.1f} s ({h['epochs_run']} of {epochs} epochs run, best epoch "
        f"{h['best_epoch']}, val loss {h['best_val_loss']:.4f}, {h['split']}); scoring {len(test_paths)} clips")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)  # training restores the caller's thread count; score on the same budget
    try:
        def both(p):
            s = det.score_samples(file_patches(p, DEFAULT_PARAMS)[1])
            return float(s.mean()), float(s.max())

        pairs, score_s = timed_scores(both, test_paths)
    finally:
        torch.set_num_threads(prev)
    auc, pauc = auc_pauc(labels, [a for a, _ in pairs])
    auc_max, pauc_max = auc_pauc(labels, [b for _, b in pairs])
    return {"auc": auc, "pauc": pauc, "auc_max": auc_max, "pauc_max": pauc_max, "train_s": train_s,
            "score_s": score_s, "epochs_run": h["epochs_run"], "best_epoch": h["best_epoch"]}


def run_baseline(train_files, test_paths, labels, epochs: int, seed: int, threads: int) -> dict:
    t0 = time.perf_counter()
    b = DcaseBaseline(threads=threads).fit(train_files, epochs=epochs, seed=seed,
                                           on_epoch=epoch_logger("baseline", epochs, max(1, epochs // 10)))
    train_s = time.perf_counter() - t0
    h = b.history_
    log(f"    baseline: trained in {train_s:.1f} s ({epochs} epochs, {h['n_train_vectors']} train / "
        f"{h['n_val_vectors']} val vectors, final loss {h['train_loss'][-1]:.2f} / val {h['val_loss'][-1]:.2f}); "
        f"scoring {len(test_paths)} clips")
    scores, score_s = timed_scores(b.score_clip, test_paths)
    auc, pauc = auc_pauc(labels, scores)
    return {"auc": auc, "pauc": pauc, "auc_max": None, "pauc_max": None, "train_s": train_s, "score_s": score_s,
            "epochs_run": epochs}


def mean_std(xs: list) -> dict | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"mean": float(np.mean(xs)), "std": float(statistics.stdev(xs)) if len(xs) > 1 else 0.0,
            "values": [float(x) for x in xs]}


def summarise(per_seed: list[dict], test_audio_s: float) -> dict:
    for r in per_seed:
        r["x_realtime"] = test_audio_s / r["score_s"]
    return {m: mean_std([r[m] for r in per_seed]) for m in (*METRICS, "epochs_run")}


def fmt(s: dict | None, digits: int = 3, scale: float = 1.0, sign: str = "") -> str:
    if s is None:
        return "-"
    if len(s["values"]) > 1:
        return f"{s['mean'] * scale:{sign}.{digits}f} ± {s['std'] * scale:.{digits}f}"
    return f"{s['mean'] * scale:{sign}.{digits}f}"


def epochs_cell(method: str, s: dict, max_epochs: int) -> str:
    if method == "baseline":
        return str(max_epochs)
    runs = s["values"]
    ran = f"{min(runs):.0f}" if min(runs) == max(runs) else f"{min(runs):.0f}-{max(runs):.0f}"
    return f"{ran} of ≤{max_epochs}"


def print_table(results: dict, averages: dict, diff: dict, settings: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    seeds = settings["seeds"]
    t = Table(title=f"DCASE-style benchmark: humwatch AE vs DCASE 2020 baseline AE (seeds {seeds}"
                    f"{', mean ± std' if len(seeds) > 1 else ''})",
              caption=f"epochs: ours ≤{settings['epochs_ours']} (early stopping, patience "
                      f"{settings['train_config']['patience']}), baseline {settings['epochs_baseline']}; "
                      f"pAUC: max FPR 0.1; ours scored by mean patch score (max in the last columns); "
                      f"Δ AUC = ours − baseline in points; torch threads {settings['threads']}")
    for col, just in (("machine", "left"), ("method", "left"), ("epochs", "right"), ("AUC", "right"),
                      ("pAUC", "right"), ("train s", "right"), ("× real time", "right"), ("Δ AUC", "right"),
                      ("AUC (max)", "right"), ("pAUC (max)", "right")):
        t.add_column(col, justify=just)
    rows = [(name, r) for name, r in results.items()] + [("average", averages)]
    for name, r in rows:
        for method in METHODS:
            s = r[method]
            ep = settings["epochs_ours"] if method == "ours" else settings["epochs_baseline"]
            d = diff[name] if method == "ours" else None
            t.add_row(name if method == "ours" else "", method, epochs_cell(method, s["epochs_run"], ep),
                      fmt(s["auc"]), fmt(s["pauc"]), fmt(s["train_s"], 1), fmt(s["x_realtime"], 0),
                      fmt(d, 1, 100, "+") if d else "", fmt(s["auc_max"]), fmt(s["pauc_max"]),
                      end_section=method == "baseline")
    Console(width=max(160, Console().width)).print(t)


def machine_info(load_at_start: list | None) -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def parse_seeds(values: list[str]) -> list[int]:
    out = []
    for v in values:
        out += [int(x) for x in v.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError("need at least one seed")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help=f"data root holding <set>/<machine>/{{train,test}} (default {DEFAULT_DATA} from the "
                         "project root)")
    ap.add_argument("--seeds", nargs="+", default=["0"], help="seeds, space- or comma-separated (default 0)")
    ap.add_argument("--epochs-ours", type=int, default=TrainConfig().epochs,
                    help=f"max epochs for ours (default {TrainConfig().epochs}; early stopping may end sooner)")
    ap.add_argument("--epochs-baseline", type=int, default=100, help="baseline epochs (default 100, its own)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(PROJECT)})")
    ap.add_argument("--machines", default="*", help="only <set>/<machine> names matching this glob (default *)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both methods (default 2)")
    ap.add_argument("--score", choices=("mse", "gaussian"), default=TrainConfig().score,
                    help=f"ours: patch score (default {TrainConfig().score}, the humwatch default; gaussian = "
                         "Mahalanobis of log band errors, mse = mean squared error)")
    ap.add_argument("--mask-frames", type=int, default=0,
                    help="ours: 0 = plain autoencoder (default); 24 = interpolation objective")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)

    root = args.data if args.data is not None else (PROJECT / DEFAULT_DATA).resolve()
    if not root.is_dir():
        print(f"error: data root not found: {root} (expected <set>/<machine>/{{train,test}} folders; pass --data)",
              file=sys.stderr)
        return 2
    machines = find_machines(root, args.machines)
    if not machines:
        print(f"error: no <set>/<machine> with train/ and test/ under {root} matching {args.machines!r}",
              file=sys.stderr)
        return 2

    settings = {
        "data_root": str(root.resolve()), "machines_glob": args.machines, "seeds": seeds,
        "epochs_ours": args.epochs_ours, "epochs_baseline": args.epochs_baseline, "threads": args.threads,
        "feature_params": DEFAULT_PARAMS.to_dict(), "feature_params_hash": DEFAULT_PARAMS.hash(),
        "arch_config": ArchConfig(patch_frames=DEFAULT_PARAMS.patch_frames, n_mels=DEFAULT_PARAMS.n_mels).to_dict(),
        "train_config": TrainConfig(epochs=args.epochs_ours, score=args.score,
                                    mask_frames=args.mask_frames).to_dict(),
        "baseline_config": {**BASELINE_CONFIG.to_dict(), "epochs": args.epochs_baseline},
        "clip_score": {"ours": "mean of patch scores (max as extra columns)", "baseline": "mean of vector MSEs"},
        "x_realtime": "test audio seconds / scoring wall seconds incl. feature extraction, after 1 warm-up clip",
        "train_s": "wall seconds incl. feature extraction of the training clips",
    }
    log(f"{len(machines)} machine(s) under {root}: {', '.join(n for n, _ in machines)}; seeds {seeds}; "
        f"epochs ours ≤{args.epochs_ours}, baseline {args.epochs_baseline}; {args.threads} torch thread(s)")

    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    results, raw = {}, {}
    for k, (name, d) in enumerate(machines, 1):
        train_files = find_audio([d / "train"])
        test = find_labelled(d / "test")
        test_paths = [f.path for f in test]
        labels = [f.label for f in test]
        test_s = audio_seconds(test_paths)
        log(f"[{k}/{len(machines)}] {name}: {len(train_files)} train clips, {len(test)} test clips "
            f"({labels.count(0)} normal, {labels.count(1)} anomalous, {test_s:.0f} s)")
        raw[name] = {m: [] for m in METHODS}
        for seed in seeds:
            log(f"  seed {seed}: ours (training ≤{args.epochs_ours} epochs)")
            r = run_ours(train_files, test_paths, labels, args.epochs_ours, seed, args.threads, args.score,
                         args.mask_frames)
            raw[name]["ours"].append({"seed": seed, **r})
            log(f"    ours: AUC {r['auc']:.3f} pAUC {r['pauc']:.3f} (max: {r['auc_max']:.3f} / {r['pauc_max']:.3f}),"
                f" {test_s / r['score_s']:.0f}x real time")
            log(f"  seed {seed}: baseline (training {args.epochs_baseline} epochs)")
            r = run_baseline(train_files, test_paths, labels, args.epochs_baseline, seed, args.threads)
            raw[name]["baseline"].append({"seed": seed, **r})
            log(f"    baseline: AUC {r['auc']:.3f} pAUC {r['pauc']:.3f}, {test_s / r['score_s']:.0f}x real time")
        results[name] = {m: summarise(raw[name][m], test_s) for m in METHODS}
        results[name]["n_train"] = len(train_files)
        results[name]["n_test_normal"] = labels.count(0)
        results[name]["n_test_anomaly"] = labels.count(1)
        results[name]["test_audio_s"] = test_s

    # Averages over machines, per seed, then mean ± std over seeds.
    averages = {}
    for m in METHODS:
        averages[m] = {}
        for metric in (*METRICS, "epochs_run"):
            per_seed = []
            for i in range(len(seeds)):
                vals = [raw[n][m][i].get(metric) for n in results]
                per_seed.append(None if any(v is None for v in vals) else float(np.mean(vals)))
            averages[m][metric] = mean_std(per_seed)
    diff = {}
    for name in [*results, "average"]:
        if name == "average":
            per_seed = [float(np.mean([raw[n]["ours"][i]["auc"] - raw[n]["baseline"][i]["auc"] for n in results]))
                        for i in range(len(seeds))]
        else:
            per_seed = [o["auc"] - b["auc"] for o, b in zip(raw[name]["ours"], raw[name]["baseline"], strict=True)]
        diff[name] = mean_std(per_seed)

    wall = time.perf_counter() - t_start
    print_table(results, averages, diff, settings)
    d = diff["average"]
    print(f"average AUC difference (ours − baseline): {fmt(d, 1, 100, '+')} points; total wall time {wall:.0f} s")

    out = {
        "benchmark": "dcase",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "settings": settings,
        "machine": machine_info(load_at_start),
        "results": results,
        "average": averages,
        "auc_diff_ours_minus_baseline": diff,
        "per_seed": raw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
