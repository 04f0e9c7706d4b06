"""Monitoring throughput on file input (target >= 500x real time on 2 cores), and score-log size per day.

Uses a copy of the shipped example site and simulated pump audio (cached in bench/results/cache/).
Prints a table and writes bench/results/monitor.json.

    python bench/monitor.py [--minutes 60] [--threads 2]
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cached_pump_audio, speed_args, write_results  # noqa: E402

from calibration.monitoring.monitor import Monitor, MonitorConfig  # noqa: E402
from calibration.store import SiteStore  # noqa: E402


def main() -> None:
    args = speed_args(__doc__, "monitor")
    audio = cached_pump_audio(args.minutes)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "sites" / "example-pump", Path(tmp) / "example-pump")
        site = SiteStore(tmp).site("example-pump")
        t0 = time.perf_counter()
        with Monitor(site, MonitorConfig(start_utc=1.7e9)) as mon:
            state = mon.process_files([audio])
        dt = time.perf_counter() - t0
        db = site.dir / "scores.sqlite"
        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        size = db.stat().st_size
    per_day_mb = size / state.patches * (86400 / 0.96) / 1e6
    row = {"audio_minutes": args.minutes, "patches": state.patches, "seconds": round(dt, 2),
           "x_real_time": round(args.minutes * 60 / dt, 1), "alarms": state.alarms,
           "log_bytes_per_patch": round(size / state.patches, 1), "log_mb_per_day": round(per_day_mb, 1),
           "log_gb_per_8_weeks": round(per_day_mb * 56 / 1000, 2)}
    print(f"{'minutes':>8} {'patches':>8} {'seconds':>8} {'x real time':>12} {'target 500x':>12} "
          f"{'log B/patch':>12} {'log MB/day':>11}")
    print(f"{args.minutes:>8g} {state.patches:>8} {dt:>8.1f} {row['x_real_time']:>12.0f} "
          f"{'PASS' if row['x_real_time'] >= 500 else 'BELOW':>12} {row['log_bytes_per_patch']:>12} "
          f"{row['log_mb_per_day']:>11}")
    write_results(args.out, [row], args.threads)


if __name__ == "__main__":
    main()
