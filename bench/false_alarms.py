"""Do the calibration certificate's false-alarm figures hold after calibration? MSE vs Gaussian score, many sites.

Usage: python bench/false_alarms.py [--sites 20] [--hours 2] [--cal-minutes 30] [--workers 2] [--out JSON]

One autoencoder is trained as the demo trains it (6 min of simulated pump audio from three units, 12 epochs, seed
7, ``score="gaussian"``) and saved twice: with its error Gaussian (``--score gaussian``) and without it (the default
MSE score of the same network). Every site is a *new* pump unit (its own simulator seed) in a factory, HVAC or
quiet background. Each site is calibrated with ``humwatch calibrate``'s own code (``calibration.calibrate``) on its
first ``--cal-minutes`` (default 30), once per score, and then "monitored" for the following ``--hours`` of the
same unit: patches over the site's threshold and alarm onsets under its rule (3 of the last 5 patches). The table
sets the observed alarms against what each certificate promised (``false_alarms_per_day`` × hours / 24). All audio
is normal: every alarm is false. This is the measurement behind the choice of the default score
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402

import anomaly  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)

BACKGROUNDS = ("factory", "factory", "hvac-cycling", "factory", "quiet")
CHUNK_MINUTES = 10.0
SCORES = ("mse", "gaussian")


def train(models: Path) -> dict:
    from anomaly.detectors import fit_detector
    from anomaly.features import DEFAULT_PARAMS as P
    from anomaly.features import log_mel
    from anomaly.simulate import SimConfig, simulate
    from anomaly.train import TrainConfig

    recs = [log_mel(simulate(SimConfig("pump", "none", 0.0, "factory", seed=7000 + i), 120.0), P) for i in range(3)]
    det = fit_detector("ae", recs, P, train_config=TrainConfig(epochs=12, seed=7, score="gaussian"))
    det.save(models / "gaussian")
    det.train_config = dataclasses.replace(det.train_config, score="mse")
    det.gauss_mean_ = det.gauss_prec_ = None
    det.save(models / "mse")
    return {"epochs_run": det.history_["epochs_run"], "best_epoch": det.history_["best_epoch"]}


def one_site(args: tuple) -> dict:
    import numpy as np
    import torch

    from anomaly.decision import MOfN
    from anomaly.detectors import load_detector
    from anomaly.features import DEFAULT_PARAMS as P
    from anomaly.features import log_mel, patches
    from anomaly.modeldir import model_hash
    from anomaly.simulate import SimConfig, simulate, write_audio
    from calibration.calibrate import CalibrationRequest, calibrate
    from calibration.store import SiteConfig, SiteStore

    torch.set_num_threads(1)
    models, seed, background, hours, cal_minutes = args
    cfg = SimConfig("pump", "none", 0.0, background, seed=seed)
    out = {"seed": seed, "background": background}
    with tempfile.TemporaryDirectory(prefix="hw-fa-") as td:
        td = Path(td)
        cal = write_audio(td / "cal.flac", cfg, cal_minutes)
        store = SiteStore(td / "sites")
        dets = {}
        for s in SCORES:
            d = models / s
            site = store.create(SiteConfig(name=f"s-{s}", model_path=str(d), model_hash=model_hash(d),
                                           machine="pump"))
            rec = calibrate(site, CalibrationRequest(files=[cal]))
            th = rec["threshold"]
            dets[s] = load_detector(d)
            out[s] = {"threshold": th["threshold"], "promised_per_day": th["false_alarms_per_day"],
                      "promised_per_day_ci": th["false_alarms_per_day_ci"], "k": th["k"],
                      "rule": [th["alarm_m"], th["alarm_n"]]}
        scores = {s: [] for s in SCORES}
        t = cal_minutes * 60.0
        while t < (cal_minutes + hours * 60.0) * 60.0 - 1e-6:
            X = np.asarray(patches(log_mel(simulate(cfg, CHUNK_MINUTES * 60.0, start_s=t), P), P))
            bands = dets["gaussian"].band_errors(X)  # one network, two scores of its band errors
            for s in SCORES:
                scores[s].append(dets[s].scorer.of_bands(bands))
            t += CHUNK_MINUTES * 60.0
    for s in SCORES:
        sc = np.concatenate(scores[s])
        over = sc > out[s]["threshold"]
        m, n = out[s]["rule"]
        alarms = int(MOfN(m, n).onsets(sc, out[s]["threshold"]).size)
        out[s].update(patches=int(sc.size), exceedance=float(over.mean()), alarms=alarms,
                      promised_alarms=out[s]["promised_per_day"] * hours / 24.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--cal-minutes", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or RESULTS / ("false_alarms.json" if args.cal_minutes == 30 else
                                 f"false_alarms_cal{args.cal_minutes:g}.json")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="hw-fa-models-") as md:
        models = Path(md)
        print("training the demo's autoencoder ...", flush=True)
        info = train(models)
        jobs = [(models, 9100 + i, BACKGROUNDS[i % len(BACKGROUNDS)], args.hours, args.cal_minutes)
                for i in range(args.sites)]
        rows = []
        with ProcessPoolExecutor(max_workers=args.workers) as ex:
            for r in ex.map(one_site, jobs):
                rows.append(r)
                print(f"site {r['seed']} ({r['background']}): " + ", ".join(
                    f"{s} {r[s]['alarms']} alarms ({r[s]['exceedance']:.2%} of patches over; certificate "
                    f"{r[s]['promised_alarms']:.2g})" for s in SCORES), flush=True)
    total = {s: {"alarms": sum(r[s]["alarms"] for r in rows),
                 "sites_with_alarms": sum(r[s]["alarms"] > 0 for r in rows),
                 "promised_alarms": sum(r[s]["promised_alarms"] for r in rows),
                 "mean_exceedance": sum(r[s]["exceedance"] for r in rows) / len(rows)} for s in SCORES}
    hours_total = args.hours * len(rows)
    print(f"\n{len(rows)} sites x {args.hours:g} h after a {args.cal_minutes:g}-min calibration (all audio normal)")
    print(f"{'score':10} {'alarms':>7} {'per day':>8} {'promised':>9} {'sites with alarms':>18} {'patches over':>13}")
    for s, v in total.items():
        print(f"{s:10} {v['alarms']:7d} {v['alarms'] / hours_total * 24:8.2f} "
              f"{v['promised_alarms'] / hours_total * 24:9.2f} {v['sites_with_alarms']:>13d} of {len(rows):<2d} "
              f"{v['mean_exceedance']:12.2%}")
    res = {"benchmark": "false_alarms", "sites": rows, "total": total, "hours_per_site": args.hours,
           "calibration_minutes": args.cal_minutes, "training": info, "seconds": round(time.time() - t0, 1),
           "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()}
    write_json(out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
