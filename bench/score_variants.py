"""Other patch scores from the same network's band errors, on the simulated fleet and on real ToyCar audio (#14).

The fleet's unalarmed faults (bench/false_alarms.py) change the error of a few mel bands; the default score, the
mean error over all 64 bands, dilutes that. This module rescores the cached band errors ``e [n, 64]`` (the same
network, nothing simulated again) so ``bench/false_alarms.py --score VARIANT`` replays the default rule on them:

* ``model``: the cached score (the detector's own; the default);
* ``gaussian``: the network's error Gaussian fitted on its training audio (``anomaly.score.GaussianScore``, what
  ``humwatch train --score gaussian`` gives; ``--gaussian-model DIR`` holds it, one per machine type);
* ``site-gaussian``: the same Gaussian fitted on the site's calibration recording;
* ``site-diag``: the mean over bands of ``z²``, ``z`` = the log band error standardised per band on the calibration;
* ``site-top4``: the mean of the 4 largest ``z²`` of the patch.

Site-fitted scores are fitted on the calibration recording; the calibration's own values are *cross-fitted* (each of
5 blocks scored by a fit on the other 4) so the rule's limit and certificate see how the score behaves on audio it
was not fitted on; monitoring and faults use the fit on the whole recording.

``python bench/score_variants.py toycar --model DIR [--model DIR ...]`` checks the same scores on real audio: the
clip score is the mean patch score, site-fitted scores are fitted on the unit's training normals, and AUC /
standardised pAUC are computed over the 50 + 50 test clips of ``dcase2025_toycar/ToyCar_00`` (results in
``bench/results/score_variants_toycar.json``). The per-band view is scored there too: the clip's largest per-band
mean ``z`` (what a rule per band would see).

``python bench/score_variants.py bands --cache DIR [--floor F]`` replays a rule per mel band instead of one rule on
one score: 64 windowed-mean rules (``anomaly.decision.DEFAULT_RULE``), each calibrated by the product's
``calibrate_mean_rule`` on that band's log error with 1/64 of the false-alarm target, and an alarm when any band's
rule is active. It is not a product rule (it needs 64 running windows and the band errors in the score log).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402

from anomaly.score import BAND_ERROR_EPS as EPS  # noqa: E402  (inside log(band error), as the product's scores)
from anomaly.score import GaussianScore  # noqa: E402

VARIANTS = ("model", "gaussian", "site-gaussian", "site-diag", "site-top4")
SITE_FITTED = ("site-gaussian", "site-diag", "site-top4")
CROSSFIT_BLOCKS = 5
TOP_K = 4


class BandZ:
    """Per-band standardisation of log band errors, fitted on normal patches."""

    def __init__(self, bands: np.ndarray, kind: str):
        lg = np.log(np.asarray(bands, np.float64) + EPS)
        self.mu, self.sd, self.kind = lg.mean(0), lg.std(0) + 1e-6, kind

    def of_bands(self, bands: np.ndarray) -> np.ndarray:
        z2 = np.square((np.log(np.asarray(bands, np.float64) + EPS) - self.mu) / self.sd)
        if self.kind == "site-diag":
            return z2.mean(axis=1)
        return np.sort(z2, axis=1)[:, -TOP_K:].mean(axis=1)


def fit_site_score(variant: str, bands: np.ndarray):
    """A site-fitted score object (``of_bands``) for ``variant``, fitted on normal band errors."""
    if variant == "site-gaussian":
        return GaussianScore.fit(bands)
    return BandZ(bands, variant)


def crossfit_scores(variant: str, bands: np.ndarray, blocks: int = CROSSFIT_BLOCKS) -> np.ndarray:
    """Each of ``blocks`` contiguous parts scored by a fit on the others (out-of-sample values)."""
    edges = np.linspace(0, len(bands), blocks + 1).astype(int)
    out = np.empty(len(bands))
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out[a:b] = fit_site_score(variant, np.r_[bands[:a], bands[b:]]).of_bands(bands[a:b])
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_gaussian(gauss_dir: Path, machine: str, cached_model: str):
    """The error Gaussian of ``gauss_dir`` (or ``gauss_dir/<machine>``), refused unless its network is the cache's."""
    from sim_fleet import model_for

    from anomaly.detectors import load_detector

    d = model_for(gauss_dir, machine)
    if not (d / "model.json").is_file():
        raise SystemExit(f"{d}: no detector there (bench/sim_fleet.py trains it beside the mix detectors as "
                         "gaussian/<machine>; detectors trained before that need training again)")
    det = load_detector(d)
    if det.train_config.score != "gaussian":
        raise SystemExit(f"{d}: its score is {det.train_config.score!r}, not an error Gaussian")
    src = Path(cached_model)
    if src.is_dir() and (src / "weights.pt").exists() and _sha(src / "weights.pt") != _sha(d / "weights.pt"):
        raise SystemExit(f"{d}: its network is not the cached scores' ({src})")
    return det.scorer


def rescore(site, variant: str, cal: slice, gauss_dir: Path | None = None):
    """``site`` (a sim_fleet.Site) with every score replaced by ``variant``'s, computed from its band errors."""
    if variant == "model":
        return site
    if site.bands is None:
        raise SystemExit(f"site {site.name}: the cache holds no band errors (rebuild it with bench/sim_fleet.py)")
    if variant == "gaussian":
        if gauss_dir is None:
            raise SystemExit("--score gaussian needs --gaussian-model DIR")
        score = model_gaussian(gauss_dir, site.meta["machine"], site.meta.get("model", "")).of_bands
    elif variant in SITE_FITTED:
        score = fit_site_score(variant, site.bands[cal]).of_bands
    else:
        raise SystemExit(f"unknown score variant {variant!r}; one of {', '.join(VARIANTS)}")
    normal = score(site.bands)
    if variant in SITE_FITTED:
        normal[cal] = crossfit_scores(variant, site.bands[cal])
    faults = [dataclasses.replace(f, score=score(f.bands)) for f in site.faults]
    return dataclasses.replace(site, score=normal, faults=faults)


# -- real audio: ToyCar ------------------------------------------------------------------------------------------------
def _patch_bands(det, paths) -> list[np.ndarray]:
    from anomaly.audio import load
    from anomaly.features import log_mel, patches

    out = []
    for p in paths:
        X = np.asarray(patches(log_mel(load(p, det.params.sample_rate), det.params), det.params))
        out.append(np.asarray(det.score_with_bands(X)[1], np.float64))
    return out


def toycar(model_dirs: list[Path], root: Path) -> dict:
    """Clip AUC / standardised pAUC of every variant on ToyCar_00's test clips, per model (see the module text)."""
    from anomaly.detectors import load_detector
    from anomaly.evaluate import auc_pauc, find_labelled
    from anomaly.score import MSE

    labelled = find_labelled(root / "test")
    y = [f.label for f in labelled]
    train = sorted((root / "train").glob("normal_*"))
    rows = []
    for d in model_dirs:
        det = load_detector(d)
        print(f"{d}: scoring {len(train)} training and {len(labelled)} test clips ...", flush=True)
        tr = np.concatenate(_patch_bands(det, train))
        test = _patch_bands(det, [f.path for f in labelled])
        fitted = {v: fit_site_score(v, tr) for v in SITE_FITTED}
        scorers = {"mean error": MSE.of_bands, **{v: f.of_bands for v, f in fitted.items()}}
        if det.train_config.score == "gaussian":
            scorers["gaussian"] = det.scorer.of_bands
        clip = {name: [float(fn(b).mean()) for b in test] for name, fn in scorers.items()}
        band = fitted["site-diag"]  # its per-band mean and sd of the log error
        clip["per-band max z"] = [float(((np.log(b + EPS) - band.mu) / band.sd).mean(axis=0).max()) for b in test]
        for name, scores in clip.items():
            auc, pa = auc_pauc(y, scores)
            rows.append({"model": str(d), "seed": det.train_config.seed, "score": name, "auc": auc, "pauc": pa})
            print(f"  {name:14} AUC {auc:.3f}  pAUC {pa:.3f}", flush=True)
    return {"benchmark": "score_variants_toycar", "data": str(root), "clips": {"test": len(y), "train": len(train)},
            "rows": rows}


# -- a rule per band on the simulated fleet ----------------------------------------------------------------------------
def replay_bands(args: tuple) -> dict:
    """One cached site: calibrate a windowed-mean rule per band on the calibration, replay monitoring and faults."""
    from false_alarms import _delay
    from sim_fleet import PATCH_S, load_site

    from anomaly.decision import DEFAULT_RULE, TARGET_PER_DAY, rising_edges
    from calibration.threshold import calibrate_mean_rule

    path, cal_minutes, floor = args
    s = load_site(path)
    if s.bands is None:
        raise SystemExit(f"{path}: the cache holds no band errors (rebuild it with bench/sim_fleet.py)")
    cal, nb = s.cal(cal_minutes), s.bands.shape[1]
    rules = [calibrate_mean_rule(s.bands[cal, j], DEFAULT_RULE, PATCH_S, floor=floor, target=TARGET_PER_DAY / nb)[0]
             for j in range(nb)]

    def active(bands: np.ndarray) -> np.ndarray:
        a = np.zeros(len(bands), bool)
        for j, r in enumerate(rules):
            a |= r.active_z(r.standardised(bands[:, j]))
        return a

    mon = active(s.bands[s.mon])
    onsets = int(rising_edges(mon).size)
    days = mon.size * PATCH_S / 86400.0
    faults = []
    for f in s.faults:
        stream, off = s.fault_stream(f, "bands")
        faults.append({"fault": f.kind, "delay_s": _delay(active(stream), off, f.onset_s, PATCH_S)})
    return {"site": s.name, "background": s.meta["background"], "observed": onsets, "observed_per_day": onsets / days,
            "faults": faults}


def bands(cache: Path, cal_minutes: float, floor: float, workers: int, n_sites: int) -> dict:
    from false_alarms import summarise_faults
    from sim_fleet import site_list

    paths = [cache / f"site_{s['name']}.npz" for s in site_list(n_sites)]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        rows = list(ex.map(replay_bands, [(p, cal_minutes, floor) for p in paths]))
    fa = np.array([r["observed_per_day"] for r in rows])
    tot = {"fa_per_site_day": {"mean": float(fa.mean()), "median": float(np.median(fa)), "worst": float(fa.max()),
                               "sites_with_alarms": int((fa > 0).sum())}, **summarise_faults(rows)}
    al = tot["alarmed"]
    print(f"a rule per band, floor {floor:g}: false alarms per site-day mean {fa.mean():.2f}, median "
          f"{np.median(fa):.2f}, worst {fa.max():.1f} ({int((fa > 0).sum())} of {len(rows)} sites); alarmed "
          f"{al['alarmed']}/{al['events']}, median delay {al['median_delay_s'] or float('nan'):.0f} s, worst "
          f"{al['worst_delay_s'] or float('nan'):.0f} s")
    for r in rows:
        missed = [f["fault"] for f in r["faults"] if f["delay_s"] is None]
        if r["observed"] or missed:
            print(f"  {r['site']:8} {r['background']:13} false alarms {r['observed']}, "
                  f"missed: {', '.join(missed) or '-'}")
    return {"benchmark": "score_variants_bands", "cache": str(cache), "calibration_minutes": cal_minutes,
            "floor": floor, "sites": rows, "total": tot}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("toycar", help="the score variants on ToyCar_00's test clips")
    t.add_argument("--model", type=Path, action="append", required=True, help="a trained ToyCar detector (repeat)")
    t.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/"
                   "dcase2025_toycar/ToyCar_00")
    t.add_argument("--out", type=Path, default=RESULTS / "score_variants_toycar.json")
    b = sub.add_parser("bands", help="a windowed-mean rule per mel band on the simulated fleet's cached band errors")
    b.add_argument("--cache", type=Path, default=None, help="a bench/false_alarms.py cache with band errors "
                   "(default: the default detectors' cache, after `python bench/false_alarms.py`)")
    b.add_argument("--cal-minutes", type=float, default=30.0)
    b.add_argument("--floor", type=float, default=None, help="each band rule's limit floor (default: the product's)")
    b.add_argument("--sites", type=int, default=24)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.cmd == "toycar":
        res, out = toycar(args.model, args.data.resolve()), args.out
    else:
        from false_alarms import default_cache

        from anomaly.decision import MEAN_LIMIT_FLOOR

        floor = MEAN_LIMIT_FLOOR if args.floor is None else args.floor
        res = bands(args.cache or default_cache(), args.cal_minutes, floor, args.workers, args.sites)
        out = args.out or RESULTS / f"score_variants_bands_floor{floor:g}.json"
    write_json(out, {**res, "seconds": round(time.time() - t0, 1), "cpu_count": os.cpu_count(),
                     "load_avg": os.getloadavg()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
