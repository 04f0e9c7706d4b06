"""Calibration speed: `calibrate` on 60 min of audio files (target < 30 s on 2 cores).

Uses the shipped example site's model and simulated pump audio (written once into bench/results/cache/).
Prints a table and writes bench/results/calibration.json.

    python bench/calibration_speed.py [--minutes 60] [--threads 2]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cached_pump_audio, speed_args, write_results  # noqa: E402

from anomaly.modeldir import model_hash
from calibration.calibrate import CalibrationRequest, calibrate  # noqa: E402
from calibration.store import SiteConfig, SiteStore  # noqa: E402


def main() -> None:
    args = speed_args(__doc__, "calibration")
    audio = cached_pump_audio(args.minutes)
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
    write_results(args.out, rows, args.threads)


if __name__ == "__main__":
    main()
