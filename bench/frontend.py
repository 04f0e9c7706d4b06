"""Front-end speed: log-mel + patches on an hour of audio, whole-signal and streamed, on 1 and 2 torch threads.

Usage: python bench/frontend.py [--minutes 60] [--repeat 1]

Writes bench/results/frontend.json. The target (>= 2000x real time on one core, i.e. an hour of 16 kHz audio in
under 1.8 s) is reported as PASS / BELOW TARGET, never asserted: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import common  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import numpy as np
import torch

from anomaly.features import DEFAULT_PARAMS, PatchStream, log_mel, num_frames, num_patches, patches

TARGET_X_REALTIME = 2000.0
BLOCK_SECONDS = 60.0
RESULTS = Path(__file__).resolve().parent / "results" / "frontend.json"


def make_audio(minutes: float, sr: int, seed: int = 0) -> np.ndarray:
    """White noise plus three steady tones and a slow 50 Hz-ish hum, float32, built a minute at a time."""
    n = int(round(minutes * 60 * sr))
    rng = np.random.default_rng(seed)
    x = np.empty(n, np.float32)
    step = 60 * sr
    for start in range(0, n, step):
        stop = min(n, start + step)
        t = np.arange(start, stop, dtype=np.float64) / sr
        tones = 0.2 * np.sin(2 * np.pi * 1000 * t) + 0.1 * np.sin(2 * np.pi * 3150 * t) + 0.05 * np.sin(
            2 * np.pi * 120 * t)
        x[start:stop] = 0.05 * rng.standard_normal(stop - start, dtype=np.float32) + tones.astype(np.float32)
    return x


def run_whole(x: np.ndarray) -> np.ndarray:
    return patches(log_mel(x, DEFAULT_PARAMS), DEFAULT_PARAMS)


def run_stream(x: np.ndarray, block: int) -> int:
    s = PatchStream(DEFAULT_PARAMS)
    for i in range(0, len(x), block):
        s.push(x[i:i + block])
    return s.patches_emitted


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": cpu_model(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def print_table(rows: list[dict], audio_s: float) -> None:
    title = f"front end on {audio_s / 60:g} min of 16 kHz audio (log-mel + patches)"
    header = ("threads", "path", "seconds", "x real time", "patches")
    cells = [(str(r["threads"]), r["path"], f"{r['seconds']:.3f}", f"{r['x_realtime']:,.0f}", str(r["patches"]))
             for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(*header, title=title)
        for c in cells:
            t.add_row(*c)
        Console().print(t)
    except ImportError:  # pragma: no cover - rich is a dependency, but keep the bench usable without it
        print(title)
        for c in (header, *cells):
            print("  ".join(f"{v:>14}" for v in c))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the synthetic recording (default 60)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case; the fastest is reported")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = ap.parse_args(argv)

    machine = machine_info()  # before the runs, so the load average says how busy the machine was
    p = DEFAULT_PARAMS
    x = make_audio(args.minutes, p.sample_rate)
    audio_s = len(x) / p.sample_rate
    expected = num_patches(num_frames(len(x), p), p)
    block = int(BLOCK_SECONDS * p.sample_rate)
    print(f"{audio_s:.0f} s of audio ({x.nbytes / 1e6:.0f} MB float32), {expected} patches expected; "
          f"streaming in {BLOCK_SECONDS:g} s blocks")

    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        run_whole(x[: 10 * p.sample_rate])  # warm-up: allocator, FFT plans, thread pool
        secs, out = timed(lambda: run_whole(x), args.repeat)
        assert len(out) == expected
        del out
        rows.append({"threads": threads, "path": "log_mel + patches", "seconds": secs, "x_realtime": audio_s / secs,
                     "patches": expected})
        secs, n = timed(lambda: run_stream(x, block), args.repeat)
        assert n == expected
        rows.append({"threads": threads, "path": f"PatchStream ({BLOCK_SECONDS:g} s blocks)", "seconds": secs,
                     "x_realtime": audio_s / secs, "patches": n})

    print_table(rows, audio_s)
    if machine["load_average_at_start"] and machine["load_average_at_start"][0] > 0.5:
        print(f"note: 1-min load average was {machine['load_average_at_start'][0]:.1f} at start on "
              f"{machine['cpus_usable']} CPUs; other processes slow these figures down")
    one_core = rows[0]["x_realtime"]
    verdict = "PASS" if one_core >= TARGET_X_REALTIME else "BELOW TARGET"
    print(f"target: >= {TARGET_X_REALTIME:,.0f}x real time on one core (log_mel + patches): "
          f"{one_core:,.0f}x -> {verdict}")

    result = {
        "benchmark": "frontend",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "audio_seconds": audio_s,
        "block_seconds": BLOCK_SECONDS,
        "params_hash": p.hash(),
        "repeat": args.repeat,
        "target_x_realtime_one_core": TARGET_X_REALTIME,
        "verdict": verdict,
        "results": rows,
        "machine": {**machine, "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
