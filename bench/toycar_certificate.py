"""The windowed-mean rule's certificate on real audio: ToyCar, with held-out normals as "later operation" (#14).

Usage: python bench/toycar_certificate.py --model DIR [--data DIR] [--out JSON]
       python bench/toycar_certificate.py --cache NPZ     (scores cached by an earlier run)

The 400 training normals of ToyCar_00 (../shared/data/dcase2025_toycar/ToyCar_00, sorted by name) are split
interleaved so every car/speed combination is in every part: clip i with i % 10 in 0..4 trains the model (pass a
model trained on exactly those, e.g. ``humwatch train`` on them), 5..7 (120 clips, 24 min) calibrate, 8..9 (80 clips)
plus the 50 test normals (26 min in all) are the later operation, and the 50 test anomalies follow it in the detection
stream. The site is calibrated by the product's code (``calibrate_mean_rule`` on the calibration scores in order,
states by ``fit_states``); then the later operation is replayed: alarms observed against the certificate at the
default limit and at fixed lower limits, novel-state share, and whether the anomalies are alarmed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, write_json  # noqa: E402

import anomaly  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)

DATA = ROOT.parent / "shared" / "data" / "dcase2025_toycar" / "ToyCar_00"
LIMITS = (0.5, 0.75, 1.0, 1.5, 2.0)


def split(data: Path) -> dict[str, list[Path]]:
    tr = sorted((data / "train").glob("normal_*.flac"))
    return {"train": [f for i, f in enumerate(tr) if i % 10 < 5],
            "cal": [f for i, f in enumerate(tr) if 5 <= i % 10 < 8],
            "later": [f for i, f in enumerate(tr) if i % 10 >= 8] + sorted((data / "test").glob("normal_*.flac")),
            "anomaly": sorted((data / "test").glob("anomaly_*.flac"))}


def score(model: Path, data: Path, out: Path) -> Path:
    """Score the calibration, later and anomaly clips (per patch: score and band levels) into ``out``."""
    import numpy as np
    import torch

    from anomaly.audio import load as load_audio
    from anomaly.detectors import load_detector
    from anomaly.features import log_mel, patches

    torch.set_num_threads(1)
    det = load_detector(model)
    P = det.params
    groups = split(data)
    res, index = {}, {}
    for g in ("cal", "later", "anomaly"):
        sc, lv = [], []
        for f in groups[g]:
            X = np.asarray(patches(log_mel(load_audio(f, P.sample_rate), P), P))
            sc.append(np.asarray(det.score_samples(X), np.float64))
            lv.append(X.mean(axis=1).astype(np.float32))
        res[f"{g}_score"], res[f"{g}_levels"] = np.concatenate(sc), np.concatenate(lv)
        index[g] = [f.name for f in groups[g]]
    res["meta"] = np.array(json.dumps({"groups": index, "model": str(model)}))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **res)
    return out


def replay(cache: Path) -> dict:
    import numpy as np
    from scipy import stats

    from anomaly.decision import DEFAULT_RULE
    from calibration.states import fit_states
    from calibration.threshold import calibrate_mean_rule
    from calibration.upcrossing import MeanTail, crossfit_z

    d = np.load(cache)
    patch_s = 0.96
    cal, later, anom = d["cal_score"], d["later_score"], d["anomaly_score"]
    rule, rep = calibrate_mean_rule(cal, DEFAULT_RULE, patch_s)
    days = later.size * patch_s / 86400
    tail = MeanTail.fit(DEFAULT_RULE, crossfit_z(cal), patch_s)
    rows = []
    for lim in sorted({*LIMITS, rule.limit}):
        r = rule.with_calibration(rule.centre, rule.scale, lim)
        st, lo, hi = tail.rate(lim)
        n = int(r.onsets(later).size)
        inside = bool(stats.poisson.sf(n - 1, hi * days) >= 0.05 and stats.poisson.cdf(n, lo * days) >= 0.05)
        stream = np.r_[later, anom]
        act = r.active_z(r.standardised(stream))[later.size:]
        rows.append({"limit": lim, "stated_per_day": st, "ci90": [lo, hi], "expected": st * days, "observed": n,
                     "inside": inside, "anomaly_patches_alarmed": float(act.mean()), "default": lim == rule.limit})
    states = fit_states(d["cal_levels"], patch_s)
    _, novel = states.novel(d["later_levels"])
    shift = float(np.mean(rule.standardised(anom)) - np.mean(rule.standardised(later)))
    return {"cache": str(cache), "model": json.loads(str(d["meta"]))["model"], "cal_minutes": cal.size * patch_s / 60,
            "later_minutes": later.size * patch_s / 60, "limit": rule.limit, "certificate": rep, "rows": rows,
            "states": states.describe(), "later_novel_share": float(novel.mean()), "anomaly_shift_sd": shift}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a detector trained on the 'train' part (clips i % 10 < 5)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, help="scores of an earlier run (skips scoring)")
    ap.add_argument("--out", type=Path, default=RESULTS / "toycar_certificate.json")
    args = ap.parse_args(argv)
    if not args.cache and not args.model:
        ap.error("give --model DIR (scores ToyCar) or --cache NPZ")
    t0 = time.time()
    cache = args.cache or score(args.model, args.data, RESULTS / "cache" / "toycar_certificate.npz")
    res = replay(cache)
    print(f"ToyCar: calibration {res['cal_minutes']:.0f} min, later operation {res['later_minutes']:.0f} min; model "
          f"{res['model']}")
    print(f"{'limit':>6} {'stated/day (90% CI)':>24} {'expected':>8} {'observed':>8} {'inside':>6} "
          f"{'anomaly alarmed':>15}")
    for r in res["rows"]:
        ci = f"{r['stated_per_day']:.2g} ({r['ci90'][0]:.2g}-{r['ci90'][1]:.2g})"
        print(f"{r['limit']:6.2f} {ci:>24} {r['expected']:8.2f} {r['observed']:8d} {'yes' if r['inside'] else 'no':>6} "
              f"{r['anomaly_patches_alarmed']:14.0%}" + ("  <- default limit" if r["default"] else ""))
    print(f"states: {'; '.join(res['states'])}; later operation {res['later_novel_share']:.0%} novel")
    print(f"the anomalies move the mean standardised log score by {res['anomaly_shift_sd']:+.2f} sds")
    res["seconds"] = round(time.time() - t0, 1)
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
