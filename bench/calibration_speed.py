"""Calibration speed: `calibrate` on 60 min of audio files (target < 30 s on 2 cores).

Uses the shipped example site's model and simulated pump audio (written once into bench/results/cache/).
Prints a table and writes bench/results/calibration.json.

    python bench/calibration_speed.py [--minutes 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anomaly.score import model_hash  # noqa: E402
from anomaly.simulate import SimConfig, write_audio  # noqa: E402
from calibration.calibrate import CalibrationRequest, calibrate  # noqa: E402
from calibration.store import SiteConfig, SiteStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "calibration.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = ROOT / "bench" / "results" / "cache"
    audio = cache / f"pump-factory-{args.minutes:g}min.flac"
    if not audio.exists():
        print(f"simulating {args.minutes:g} min of pump audio into {audio} ...", flush=True)
        write_audio(audio, SimConfig("pump", "none", 0.0, "factory", seed=42), args.minutes)
    model = ROOT / "sites" / "example-pump" / "model"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SiteStore(tmp)
        for inject in (False, True):
            name = f"bench-{int(inject)}"
            site = store.create(SiteConfig(name=name, model_path=str(model), model_hash=model_hash(model),
                                           machine="pump"))
            t0 = time.perf_counter()
            rec = calibrate(site, CalibrationRequest(files=[audio], inject=inject))
            dt = time.perf_counter() - t0
            rows.append({"minutes": args.minutes, "inject_faults": inject, "seconds": round(dt, 2),
                         "x_real_time": round(args.minutes * 60 / dt, 1), "patches": rec["audio"]["patches"],
                         "threshold": rec["threshold"]["threshold"],
                         "false_alarms_per_day": rec["threshold"]["false_alarms_per_day"]})
            shutil.rmtree(site.dir)
    print(f"{'minutes':>8} {'inject':>7} {'seconds':>8} {'x real time':>12} {'target':>8}")
    for r in rows:
        ok = "PASS" if r["seconds"] < 30 else "SLOW"
        print(f"{r['minutes']:>8g} {str(r['inject_faults']):>7} {r['seconds']:>8.1f} {r['x_real_time']:>12.0f} "
              f"{'<30 s ' + ok:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "threads": args.threads, "cpu_count": os.cpu_count(),
                                    "torch": torch.__version__, "platform": platform.platform(),
                                    "load_avg": os.getloadavg()}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
