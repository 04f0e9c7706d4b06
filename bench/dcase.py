"""Real-data benchmark: humwatch's default detector and its variants against the DCASE 2020 Task 2 baseline, on the
same splits, side by side in one run.

Usage: python bench/dcase.py [--data ROOT] [--seeds 0 1 2] [--methods ours,ours-states,baseline]
                             [--machines GLOB] [--threads 1] [--epochs-ours N] [--epochs-baseline N]
                             [--no-int8] [--out bench/results/dcase.json]

For every ``<set>/<machine>`` under ROOT (default ``../shared/data`` from the project root) that has ``train/`` and
``test/`` (valve, fan and ToyCar there), every method is trained on ``train/`` and scores every labelled clip in
``test/``:

* ``ours``: ``fit_detector("ae", ...)`` with the defaults of ``humwatch train --normal DIR`` (seed overridable);
  clip score = mean of the patch scores, what ``humwatch score`` writes and monitoring sees (max as extra columns);
* ``ours-states``: the same with operating-state labels (``humwatch train --states FILE``), read from the data's
  MANIFEST.tsv (``original_path``: car model and speed for ToyCar) through the same CSV reader as the CLI; skipped on
  sets without state labels;
* ``ours-gaussian``: ``--score gaussian``;
* ``baseline``: the re-implementation in bench/dcase_baseline.py (clip score = mean vector MSE).

Every trained model (ours and the baseline) is kept in bench/results/cache/, keyed by its training code,
configuration, seed, state labels and training files, and reused by later runs (``--no-cache`` retrains): on a shared
2-core machine the baseline trains for 30-50 min per ToyCar seed. A reused model's training time is the one recorded
when it was trained (marked "cached", with that run's load average in the cache); its clips are scored, and its
scoring speed measured, in this run.

Figures: AUC and pAUC (the DCASE evaluator's standardised partial AUC, sklearn ``roc_auc_score(max_fpr=0.1)``,
chance 0.5; :func:`anomaly.evaluate.auc_pauc` for every method), mean ± std over seeds; training seconds (feature
extraction included, ``--threads`` torch threads); scoring speed in × real time on ONE torch thread (test audio
seconds / scoring wall seconds, feature extraction included, after one untimed warm-up clip); int8 size (ours:
``model_int8.tflite`` from the export's conversion chain, seed 0 of the first machine; the baseline is not
converted: its weight count, one byte each, is given as an estimate). Prints a table and writes JSON (with every
clip's score per seed); timings depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import common  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dcase_baseline import DEFAULT_CONFIG as BASELINE_CONFIG  # noqa: E402
from dcase_baseline import DcaseBaseline, build_network  # noqa: E402

from anomaly.audio import file_log_mel, file_patches, find_audio  # noqa: E402
from anomaly.detectors import fit_detector  # noqa: E402
from anomaly.evaluate import auc_pauc, chance_levels, definitions, find_labelled  # noqa: E402
from anomaly.features import DEFAULT_PARAMS  # noqa: E402
from anomaly.model import ArchConfig  # noqa: E402
from anomaly.train import TrainConfig  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("../shared/data")  # relative to the project root
RESULTS = PROJECT / "bench" / "results" / "dcase.json"
CACHE = PROJECT / "bench" / "results" / "cache"
METRICS = ("auc", "pauc", "auc_max", "pauc_max", "train_s", "x_realtime")
STATE_RE = re.compile(r"(car_[A-Za-z0-9]+)_(spd_[0-9]+V)")  # ToyCar's operating condition in MANIFEST original_path


@dataclass(frozen=True)
class Variant:
    """One of our rows: TrainConfig overrides and whether it is trained with state labels."""

    what: str
    train: dict = field(default_factory=dict)
    states: bool = False


VARIANTS = {
    "ours": Variant("default (humwatch train --normal DIR)"),
    "ours-states": Variant("default + --states (state-balanced sampling; labels from MANIFEST.tsv)", states=True),
    "ours-gaussian": Variant("--score gaussian", {"score": "gaussian"}),
}
METHODS = (*VARIANTS, "baseline")
DEFAULT_METHODS = ("ours", "ours-states", "baseline")


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


# -- state labels ------------------------------------------------------------------------------------------------------
def manifest_states(root: Path, files: list[Path]) -> dict[str, str] | None:
    """``{file name: state}`` for ``files`` from ``root/MANIFEST.tsv`` (car model and speed in ``original_path``), or
    None when the manifest is missing or does not give every file a state."""
    man = root / "MANIFEST.tsv"
    if not man.is_file():
        return None
    rows = [line.split("\t") for line in man.read_text().splitlines()]
    col = rows[0].index("original_path") if rows and "original_path" in rows[0] else None
    if col is None:
        return None
    by_path = {r[0]: r[col] for r in rows[1:] if len(r) > col}
    out = {}
    for f in files:
        m = STATE_RE.search(by_path.get(Path(f).resolve().relative_to(root.resolve()).as_posix(), ""))
        if m is None:
            return None
        out[Path(f).name] = f"{m.group(1)}_{m.group(2)}"
    return out


def states_csv(states: dict[str, str], path: Path) -> Path:
    """The labels as the CSV ``humwatch train --states`` reads."""
    path.write_text("file,state\n" + "".join(f"{f},{s}\n" for f, s in states.items()))
    return path


# -- ours --------------------------------------------------------------------------------------------------------------
TRAINING_CODE = ("anomaly/train.py", "anomaly/model.py", "anomaly/score.py", "anomaly/states.py",
                 "anomaly/detectors.py", "anomaly/features/params.py", "anomaly/features/functional.py",
                 "anomaly/audio.py")


def training_code_hash() -> str:
    """A hash of the code that trains our models (recorded with a cached model; a reused model whose code hash
    differs from the current one is reported, not silently trusted)."""
    h = hashlib.sha256()
    for f in TRAINING_CODE:
        h.update((PROJECT / f).read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def ours_key(train_files, cfg: TrainConfig, states_file: Path | None) -> str:
    """What a trained model of ours depends on: its configuration, the state labels and the training files (names,
    sizes and modification times). The training code is recorded beside it (:func:`training_code_hash`) rather than
    keyed, so that an unrelated change of those files (a rebase) does not force hours of retraining."""
    h = hashlib.sha256()
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(states_file.read_bytes() if states_file is not None else b"-")
    for f in train_files:
        st = Path(f).stat()
        h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def train_ours(train_files, variant: Variant, epochs: int, seed: int, threads: int, states_file: Path | None,
               cache: Path | None = None):
    """A trained model of ours, its training seconds and whether it came from ``cache`` (a model trained earlier on
    the same inputs by the same code: its training seconds are those of that run)."""
    from anomaly.detectors import load_detector
    from anomaly.states import read_states

    cfg = TrainConfig(**{**TrainConfig().to_dict(), "epochs": epochs, "seed": seed, "threads": threads,
                         **variant.train})
    states_file = states_file if variant.states else None
    where = cache / f"ours-{ours_key(train_files, cfg, states_file)}" if cache else None
    if where is not None and (where / "bench.json").is_file():
        meta = json.loads((where / "bench.json").read_text())
        same = meta.get("training_code") == training_code_hash()
        log(f"    loaded {where.name} (trained {meta['date_utc']} at commit {meta.get('commit')} in "
            f"{meta['train_s']:.0f} s at load {meta['load_average']}; training code "
            f"{'unchanged' if same else 'CHANGED since'})")
        return load_detector(where), meta["train_s"], {**meta, "training_code_unchanged": same}
    t0 = time.perf_counter()
    labels = read_states(states_file, train_files) if states_file is not None else None
    recs = [file_log_mel(f, DEFAULT_PARAMS) for f in train_files]
    det = fit_detector("ae", recs, DEFAULT_PARAMS, train_config=cfg, states=labels,
                       on_epoch=epoch_logger("ours", epochs, max(1, epochs // 8)))
    train_s = time.perf_counter() - t0
    if where is not None:
        det.save(where)
        (where / "bench.json").write_text(json.dumps({"train_s": train_s, "date_utc": now_utc(),
                                                      "load_average": list(os.getloadavg()), "commit": git_commit(),
                                                      "training_code": training_code_hash()}) + "\n")
    return det, train_s, None


def run_ours(det, train_s: float, test_paths, labels, cached: dict | None = None) -> dict:
    h = det.history_
    log(f"    trained in {train_s:.1f} s ({h['epochs_run']} epochs run, best epoch {h['best_epoch']}, val loss "
        f"{h['best_val_loss']:.4f}, {h['split']}); scoring {len(test_paths)} clips on one thread")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
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
            "score_s": score_s, "epochs_run": h["epochs_run"], "best_epoch": h["best_epoch"],
            "train_cached": cached, "clip_scores": [round(a, 6) for a, _ in pairs]}


def int8_size(det, train_files) -> dict:
    """``model_int8.tflite`` of ``det`` through the export's conversion chain (int8 calibrated on training patches)."""
    from firmware_export import pipeline

    X = np.concatenate([file_patches(f, DEFAULT_PARAMS)[1] for f in train_files[:20]])
    rep = ((X - det.mean_) / det.std_).astype(np.float32)[:200]
    p = DEFAULT_PARAMS
    with tempfile.TemporaryDirectory(prefix="dcase-int8-") as tmp:
        conv = pipeline.convert_model(det.model_.eval(), "model", Path(tmp), Path(tmp), p.patch_frames, p.n_mels, rep,
                                      (1, p.patch_frames, p.n_mels, 1), lambda *a: None, lambda *a: None)
        return {"bytes": len(conv.int8_bytes), "measured": True}


def baseline_size() -> dict:
    n = sum(t.numel() for t in build_network(BASELINE_CONFIG).parameters())
    return {"bytes": int(n), "measured": False, "note": "not converted: one byte per weight, an estimate"}


def baseline_key(train_files, epochs: int, seed: int) -> str:
    """What a trained baseline depends on: its code, configuration, epochs, seed and the training files (names,
    sizes and modification times)."""
    h = hashlib.sha256()
    h.update((PROJECT / "bench" / "dcase_baseline.py").read_bytes())
    h.update(json.dumps({**BASELINE_CONFIG.to_dict(), "epochs": epochs, "seed": seed}, sort_keys=True).encode())
    for f in train_files:
        st = Path(f).stat()
        h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class NotCached(Exception):
    """``--cached-baseline-only`` and no cached baseline for this machine and seed."""


def fit_baseline(train_files, epochs: int, seed: int, threads: int, cache: Path | None,
                 cached_only: bool = False) -> tuple:
    """A trained baseline and its training seconds; with ``cache``, a baseline trained earlier on the same inputs is
    loaded from there (its training seconds and load average are those of the run that trained it)."""
    key = baseline_key(train_files, epochs, seed)
    wfile, mfile = (cache / f"baseline-{key}.pt", cache / f"baseline-{key}.json") if cache else (None, None)
    b = DcaseBaseline(threads=threads)
    if mfile is not None and mfile.is_file() and wfile.is_file():
        meta = json.loads(mfile.read_text())
        net = build_network(BASELINE_CONFIG)
        net.load_state_dict(torch.load(wfile, weights_only=True))
        b.model_, b.history_ = net.eval(), meta["history"]
        log(f"    baseline: loaded from {wfile.name} (trained {meta['date_utc']} in {meta['train_s']:.0f} s at load "
            f"{meta['load_average']})")
        return b, meta["train_s"], {k: v for k, v in meta.items() if k != "history"}
    if cached_only:
        raise NotCached(f"no cached baseline for seed {seed}")
    t0 = time.perf_counter()
    b.fit(train_files, epochs=epochs, seed=seed, on_epoch=epoch_logger("baseline", epochs, max(1, epochs // 10)))
    train_s = time.perf_counter() - t0
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(b.model_.state_dict(), wfile)
        mfile.write_text(json.dumps({"history": b.history_, "train_s": train_s, "date_utc": now_utc(),
                                     "load_average": list(os.getloadavg()), "commit": git_commit()}) + "\n")
    return b, train_s, None


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_baseline(train_files, test_paths, labels, epochs: int, seed: int, threads: int,
                 cache: Path | None = None, cached_only: bool = False) -> dict:
    b, train_s, cached = fit_baseline(train_files, epochs, seed, threads, cache, cached_only)
    h = b.history_
    log(f"    baseline: trained in {train_s:.1f} s ({epochs} epochs, {h['n_train_vectors']} train / "
        f"{h['n_val_vectors']} val vectors, final loss {h['train_loss'][-1]:.2f} / val {h['val_loss'][-1]:.2f}); "
        f"scoring {len(test_paths)} clips")
    scores, score_s = timed_scores(b.score_clip, test_paths)
    auc, pauc = auc_pauc(labels, scores)
    return {"auc": auc, "pauc": pauc, "auc_max": None, "pauc_max": None, "train_s": train_s, "score_s": score_s,
            "epochs_run": epochs, "train_cached": cached}


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


def print_table(results: dict, sizes: dict, settings: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    seeds = settings["seeds"]
    t = Table(title=f"DCASE-style benchmark: humwatch vs the DCASE 2020 baseline (seeds {seeds}"
                    f"{', mean ± std' if len(seeds) > 1 else ''})",
              caption=f"pAUC: standardised, max FPR 0.1 (sklearn roc_auc_score max_fpr; chance 0.5); ours scored by "
                      f"the mean patch score (max in the last columns); Δ = method − baseline per seed, in points; "
                      f"training on {settings['threads']} torch thread(s), scoring on one")
    for col in ("machine", "method", "AUC", "pAUC", "Δ AUC", "Δ pAUC", "train s", "× real time", "int8 KB",
                "AUC (max)", "pAUC (max)"):
        t.add_column(col, justify="left" if col in ("machine", "method") else "right")
    for name, r in results.items():
        for i, method in enumerate(r["methods"]):
            s, d = r["methods"][method], r["diff"].get(method, {})
            size = sizes.get(method)
            cached = (" (cached" + (", code changed" if s.get("training_code_changed") else "") + ")"
                      if s.get("train_cached") else "")
            t.add_row(name if i == 0 else "", method, fmt(s["auc"]), fmt(s["pauc"]),
                      fmt(d.get("auc"), 1, 100, "+"), fmt(d.get("pauc"), 1, 100, "+"), fmt(s["train_s"], 0) + cached,
                      fmt(s["x_realtime"], 0), f"{'≈' if size and not size['measured'] else ''}"
                      f"{size['bytes'] / 1024:.0f}" if size else "-", fmt(s["auc_max"]), fmt(s["pauc_max"]),
                      end_section=i == len(r["methods"]) - 1)
    Console(width=max(170, Console().width)).print(t)


def markdown_table(out: dict) -> str:
    """The results as the Markdown table docs/benchmarks.md holds (``--markdown JSON`` prints it again)."""
    sizes = out.get("int8_bytes", {})
    lines = ["| set / machine | method | AUC | pAUC | Δ AUC | Δ pAUC | train s | × real time (1 thread) | int8 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in out["results"].items():
        for i, (method, s) in enumerate(r["methods"].items()):
            d = r["diff"].get(method, {})
            size = sizes.get(method)
            kb = "-" if not size else f"{'≈ ' if not size['measured'] else ''}{size['bytes'] / 1024:.0f} KB"
            seeds = s.get("seeds", out["settings"]["seeds"])
            label = method if seeds == out["settings"]["seeds"] else f"{method} (seeds {', '.join(map(str, seeds))})"
            cells = [name if i == 0 else "", label, fmt(s["auc"]), fmt(s["pauc"]), fmt(d.get("auc"), 1, 100, "+"),
                     fmt(d.get("pauc"), 1, 100, "+"), fmt(s["train_s"], 0) + (" (cached)" if s.get("train_cached")
                                                                                else ""),
                     fmt(s["x_realtime"], 0), kb]
            lines.append("| " + " | ".join("" if c == "-" else c for c in cells) + " |")
    return "\n".join(lines)


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


def parse_methods(text: str) -> list[str]:
    out = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(bad) or '(none)'}; known: {', '.join(METHODS)}")
    return out


def run_machine(name: str, d: Path, root: Path, methods: list[str], seeds: list[int], args, sizes: dict) -> dict:
    """Every method and seed on one machine: per-seed rows, mean ± std, differences from the baseline."""
    train_files = find_audio([d / "train"])
    test = find_labelled(d / "test")
    test_paths, labels = [f.path for f in test], [f.label for f in test]
    test_s = audio_seconds(test_paths)
    states = manifest_states(root, train_files)
    log(f"{name}: {len(train_files)} train clips, {len(test)} test clips ({labels.count(0)} normal, "
        f"{labels.count(1)} anomalous, {test_s:.0f} s); state labels: "
        + (f"{len(set(states.values()))} states from MANIFEST.tsv" if states else "none"))
    raw: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="dcase-states-") as tmp:
        csv = states_csv(states, Path(tmp) / "states.csv") if states else None
        for method in methods:
            if method in VARIANTS and VARIANTS[method].states and csv is None:
                log(f"  {method}: skipped (no state labels for {name})")
                continue
            raw[method] = []
            for seed in seeds:
                log(f"  {method}, seed {seed}")
                if method == "baseline":
                    try:
                        r = run_baseline(train_files, test_paths, labels, args.epochs_baseline, seed, args.threads,
                                         None if args.no_cache else CACHE,
                                         args.cached_baseline_only is not None
                                         and fnmatch.fnmatch(name, args.cached_baseline_only))
                    except NotCached as e:
                        log(f"    baseline: skipped ({e}; --cached-baseline-only)")
                        continue
                else:
                    det, train_s, cached = train_ours(train_files, VARIANTS[method], args.epochs_ours, seed,
                                                      args.threads, csv, None if args.no_cache else CACHE)
                    r = run_ours(det, train_s, test_paths, labels, cached)
                    if method not in sizes and not args.no_int8:
                        sizes[method] = int8_size(det, train_files)
                        log(f"    int8 model: {sizes[method]['bytes']:,} B")
                raw[method].append({"seed": seed, **r})
                log(f"    {method}: AUC {r['auc']:.3f} pAUC {r['pauc']:.3f}, {test_s / r['score_s']:.0f}x real time")
    raw = {m: rows for m, rows in raw.items() if rows}
    summary = {m: {**summarise(rows, test_s), "seeds": [r["seed"] for r in rows],
                   "train_cached": any(r.get("train_cached") for r in rows),
                   "training_code_changed": any(not (r.get("train_cached") or {}).get("training_code_unchanged", True)
                                                for r in rows)}
               for m, rows in raw.items()}
    diff = {}
    if raw.get("baseline"):
        base = {r["seed"]: r for r in raw["baseline"]}
        for m in raw:
            if m != "baseline":
                diff[m] = {k: mean_std([o[k] - base[o["seed"]][k] for o in raw[m] if o["seed"] in base])
                           for k in ("auc", "pauc")}
    return {"methods": summary, "diff": diff, "per_seed": raw, "n_train": len(train_files),
            "n_test_normal": labels.count(0), "n_test_anomaly": labels.count(1), "test_audio_s": test_s,
            "test_files": [str(p) for p in test_paths], "test_labels": labels,
            "states": sorted(set(states.values())) if states else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help=f"data root holding <set>/<machine>/{{train,test}} (default {DEFAULT_DATA} from the "
                         "project root)")
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="seeds, space- or comma-separated "
                                                                         "(default 0 1 2)")
    ap.add_argument("--methods", type=parse_methods, default=list(DEFAULT_METHODS),
                    help=f"comma-separated, from {', '.join(METHODS)} (default {','.join(DEFAULT_METHODS)})")
    ap.add_argument("--epochs-ours", type=int, default=TrainConfig().epochs,
                    help=f"max epochs for ours (default {TrainConfig().epochs}; early stopping may end sooner)")
    ap.add_argument("--epochs-baseline", type=int, default=100, help="baseline epochs (default 100, its own)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(PROJECT)})")
    ap.add_argument("--machines", default="*", help="only <set>/<machine> names matching this glob (default *)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1; scoring always 1)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 conversion of ours (size column empty)")
    ap.add_argument("--no-cache", action="store_true", help="train every model even when a cached one matches")
    ap.add_argument("--cached-baseline-only", nargs="?", const="*", default=None, metavar="GLOB",
                    help="on machines matching GLOB (default: all), use cached baselines only: a seed without one is "
                         "left out of the baseline row (and of Δ) instead of training it")
    ap.add_argument("--markdown", type=Path, default=None, metavar="JSON",
                    help="only print the Markdown table of an earlier run's JSON (for docs/benchmarks.md)")
    args = ap.parse_args(argv)
    if args.markdown is not None:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return 0
    seeds = parse_seeds(args.seeds)
    methods = args.methods

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
        "data_root": str(root.resolve()), "machines_glob": args.machines, "seeds": seeds, "methods": methods,
        "variants": {m: {"what": VARIANTS[m].what, **VARIANTS[m].train} for m in methods if m in VARIANTS},
        "epochs_ours": args.epochs_ours, "epochs_baseline": args.epochs_baseline, "threads": args.threads,
        "cached_baseline_only": args.cached_baseline_only,
        "feature_params": DEFAULT_PARAMS.to_dict(), "feature_params_hash": DEFAULT_PARAMS.hash(),
        "arch_config": ArchConfig(patch_frames=DEFAULT_PARAMS.patch_frames, n_mels=DEFAULT_PARAMS.n_mels).to_dict(),
        "train_config": TrainConfig(epochs=args.epochs_ours).to_dict(),
        "baseline_config": {**BASELINE_CONFIG.to_dict(), "epochs": args.epochs_baseline},
        "clip_score": {"ours": "mean of patch scores (max as extra columns)", "baseline": "mean of vector MSEs"},
        "pauc": definitions()["pauc"], "chance": chance_levels(),
        "x_realtime": "test audio seconds / scoring wall seconds on one torch thread, incl. feature extraction, "
                      "after 1 warm-up clip",
        "train_s": f"wall seconds incl. feature extraction of the training clips, {args.threads} torch thread(s)",
    }
    log(f"{len(machines)} machine(s) under {root}: {', '.join(n for n, _ in machines)}; methods {', '.join(methods)}; "
        f"seeds {seeds}; {args.threads} torch thread(s) for training, load {os.getloadavg()[0]:.1f}")
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    sizes: dict = {"baseline": baseline_size()} if "baseline" in methods else {}
    results = {name: run_machine(name, d, root, methods, seeds, args, sizes) for name, d in machines}
    wall = time.perf_counter() - t_start
    print_table(results, sizes, settings)
    print(f"total wall time {wall:.0f} s; load average at start {load_at_start}, at end {list(os.getloadavg())}")
    out = {
        "benchmark": "dcase",
        "date_utc": now_utc(),
        "wall_seconds": round(wall, 1),
        "settings": settings,
        "machine": machine_info(load_at_start),
        "int8_bytes": sizes,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(markdown_table(out))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
