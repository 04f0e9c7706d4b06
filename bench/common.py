"""Shared pieces of the benches that run the product on simulated site audio."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

# Before any bench loads torch (import this module first): OpenMP threads sleep instead of spinning while they wait,
# which on a shared 2-core machine is the difference between 4 s and 40 s an epoch (as anomaly/__init__.py does).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def speed_args(doc: str, name: str) -> argparse.Namespace:
    """``--minutes`` of audio, torch ``--threads`` and the JSON ``--out`` path; sets the thread count."""
    import torch

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def cached_pump_audio(minutes: float) -> Path:
    """Simulated pump audio in a factory (seed 42), written once into bench/results/cache/."""
    from anomaly.simulate import SimConfig, write_audio

    audio = RESULTS / "cache" / f"pump-factory-{minutes:g}min.flac"
    if not audio.exists():
        print(f"simulating {minutes:g} min of pump audio into {audio} ...", flush=True)
        write_audio(audio, SimConfig("pump", "none", 0.0, "factory", seed=42), minutes)
    return audio


def write_results(out: Path, rows: list[dict], threads: int) -> None:
    """The rows plus what the figures depend on: cores, torch, platform and the machine's load."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "threads": threads, "cpu_count": os.cpu_count(),
                               "torch": torch.__version__, "platform": platform.platform(),
                               "load_avg": os.getloadavg()}, indent=2) + "\n")
    print(f"wrote {out}")


def write_json(out: Path, res: dict) -> None:
    """Write a bench's result dict (which carries its own ``seconds``) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"{res['seconds']:.0f} s; JSON in {out}")
