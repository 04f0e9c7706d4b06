"""False alarms, detection delays and the certificate on a simulated fleet (issue #14).

Usage: python bench/false_alarms.py [--sites 24] [--hours 8] [--cal-minutes 30] [--workers 2] [--model DIR]
                                    [--cache DIR] [--score VARIANT [--gaussian-model DIR]] [--out JSON]

The fleet (bench/sim_fleet.py): 24 simulated sites (16 pumps, 4 compressors, 4 fans; factory / hvac-cycling / quiet
backgrounds), each calibrated on the ``--cal-minutes`` right before monitoring and then monitored for ``--hours``
of the same unit's normal operation; one persistent fault per simulator fault type at severity 0.3 per site. Per
site the per-patch scores and band levels are cached (``--cache``, default bench/results/cache/fleet/<model hash>),
so rules are replayed without simulating again; ``--model DIR`` rescored the fleet with any detector (default: the
``mix`` autoencoders, trained once, see bench/sim_fleet.py). ``--score`` replays the rules on another score computed
from the same network's cached band errors (bench/score_variants.py).

Every site is calibrated by the product's own code on its scores in recording order: the windowed-mean rule
(``calibration.threshold.calibrate_mean_rule``, the default rule) and, for reference, today's ``mean + 4σ`` with 3 of
5 patches (``calibration.threshold.threshold_report`` on the 2-of-3-minutes threshold part, as calibrate sets it).
Reported per site: the promised false alarms (and 90 % interval), the observed ones, whether the count is consistent
with the interval, the detection delay per fault, and the novel-state notices of calibration.states; per fleet: the
issue's goals, and the certificate checked at fixed limits where counts are large (a reliability curve).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_json  # noqa: E402

import anomaly  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)

HORIZON_S = 180.0  # a fault counts as alarmed when the alarm comes within this long of its onset
CURVE_LIMITS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # fixed limits (calibration sds) for the certificate's reliability
DEFAULT_MODELS = RESULTS / "cache" / "fleet" / "models-mix"  # the mix detectors (and gaussian/<machine>), trained once


def default_cache() -> Path:
    """The cache of the default detectors (after a plain ``python bench/false_alarms.py``)."""
    from sim_fleet import MACHINES

    return RESULTS / "cache" / "fleet" / _model_tag(DEFAULT_MODELS, MACHINES)


def _model_tag(model: Path, machines) -> str:
    from sim_fleet import model_for

    from anomaly.modeldir import model_hash

    h = hashlib.sha256("".join(model_hash(model_for(model, m)) for m in machines).encode()).hexdigest()
    return h[:12]


def build(args, sites: list[dict]) -> Path:
    """Train the default detectors if needed and fill the cache; returns the cache directory."""
    from sim_fleet import MACHINES, build_site, model_for, train

    if args.cache and all((args.cache / f"site_{s['name']}.npz").exists() for s in sites):
        return args.cache
    model = args.model
    if model is None:
        model = DEFAULT_MODELS
        print(f"training the mix detectors (once) into {model} ...", flush=True)
        train(model)
    cache = args.cache or RESULTS / "cache" / "fleet" / _model_tag(model, MACHINES)
    jobs = [(s, model_for(model, s["machine"]), cache / f"site_{s['name']}.npz", args.hours) for s in sites]
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        for msg in ex.map(build_site, jobs):
            print(msg, flush=True)
    return cache


def _delay(active, offset: int, onset_s: float, patch_s: float) -> float | None:
    """Seconds from the fault onset to the end of the first patch (at or after it) in alarm; None: not within
    HORIZON_S."""
    import numpy as np

    j0 = int(onset_s // patch_s) - offset
    hit = np.flatnonzero(active[j0:])
    if hit.size == 0:
        return None
    d = (offset + j0 + hit[0] + 1) * patch_s - onset_s
    return float(d) if d <= HORIZON_S else None


def _mofn_active(scores, rule, threshold):
    import numpy as np

    from anomaly.decision import over

    x = over(scores, threshold).astype(int)
    return np.convolve(x, np.ones(rule.n, int))[: x.size] >= rule.m


def replay_site(args: tuple) -> dict:
    """Calibrate one cached site with the product's code and replay its monitoring and faults."""
    import numpy as np
    from scipy import stats
    from score_variants import rescore
    from sim_fleet import PATCH_S, load_site

    from anomaly.decision import DEFAULT_K, DEFAULT_RULE, MOFN_RULE
    from calibration.calibrate import split_masks
    from calibration.states import fit_states
    from calibration.threshold import calibrate_mean_rule, threshold_report
    from calibration.upcrossing import MeanTail, crossfit_z

    path, cal_minutes, floor, target, variant, gauss_dir = args
    s = load_site(path)
    s = rescore(s, variant, s.cal(cal_minutes), gauss_dir)
    cal = s.score[s.cal(cal_minutes)]
    mon = s.score[s.mon]
    days = mon.size * PATCH_S / 86400.0
    rule, rep = calibrate_mean_rule(cal, DEFAULT_RULE, PATCH_S, floor=floor, target=target)
    observed = int(rule.onsets(mon).size)
    lo, hi = rep["ci90"]
    inside = bool(stats.poisson.sf(observed - 1, hi * days) >= 0.05 and stats.poisson.cdf(observed, lo * days) >= 0.05)
    # today's rule for reference: mean + 4 sigma on the threshold part, 3 of 5 (what calibrate did before #14)
    thr_mask, _, _ = split_masks(cal.size)
    old = threshold_report(cal[thr_mask], DEFAULT_K, MOFN_RULE, PATCH_S, n_boot=20)
    old_observed = int(MOFN_RULE.onsets(mon, old.threshold).size)
    # the certificate at fixed limits (where counts are large enough to check it)
    tail = MeanTail.fit(DEFAULT_RULE, crossfit_z(cal), PATCH_S)
    curve = []
    for lim in CURVE_LIMITS:
        r = rule.with_calibration(rule.centre, rule.scale, lim)
        st, clo, chi = tail.rate(lim)
        n = int(r.onsets(mon).size)
        ok = bool(stats.poisson.sf(n - 1, chi * days) >= 0.05 and stats.poisson.cdf(n, clo * days) >= 0.05)
        curve.append({"limit": lim, "stated_per_day": st, "ci90": [clo, chi], "observed": n, "inside": ok})
    # states and novel-state notices
    states = fit_states(s.levels[s.cal(cal_minutes)], PATCH_S)
    nov_on, _ = states.novel(s.levels[s.mon])
    faults = []
    for f in s.faults:
        stream, off = s.fault_stream(f)
        d_new = _delay(rule.active_z(rule.standardised(stream)), off, f.onset_s, PATCH_S)
        d_old = _delay(_mofn_active(stream, MOFN_RULE, old.threshold), off, f.onset_s, PATCH_S)
        lv, _ = s.fault_stream(f, "levels")
        _, novel = states.novel(lv)
        d_nov = _delay(novel, off, f.onset_s, PATCH_S)
        shift = float(np.mean(rule.standardised(f.score[f.onset_patch - f.start_patch + 1:])))
        faults.append({"fault": f.kind, "delay_s": d_new, "mofn_delay_s": d_old, "novel_delay_s": d_nov,
                       "shift_sd": shift})
    return {"site": s.name, "machine": s.meta["machine"], "background": s.meta["background"],
            "seed": s.meta["seed"], "model": s.meta["model"], "hours": mon.size * PATCH_S / 3600.0,
            "limit": rule.limit, "limit_source": rep["limit_source"], "n_eff": rep["n_eff"],
            "promised_per_day": rep["false_alarms_per_day"], "ci90": [lo, hi], "observed": observed,
            "observed_per_day": observed / days, "inside": inside,
            "mofn": {"threshold": old.threshold, "promised_per_day": old.false_alarms_per_day,
                     "observed": old_observed, "observed_per_day": old_observed / days},
            "curve": curve, "states": states.k, "novel_events": int(nov_on.size),
            "novel_per_day": nov_on.size / days, "faults": faults}


def summarise_faults(rows: list[dict]) -> dict:
    """The share of fault events alarmed within HORIZON_S and their delays, over all and per fault type."""
    import numpy as np

    delays = [f["delay_s"] for r in rows for f in r["faults"]]
    hit = [d for d in delays if d is not None]
    per_fault = {}
    for kind in dict.fromkeys(f["fault"] for r in rows for f in r["faults"]):
        ds = [f["delay_s"] for r in rows for f in r["faults"] if f["fault"] == kind]
        got = [d for d in ds if d is not None]
        per_fault[kind] = {"alarmed": len(got), "events": len(ds),
                           "median_delay_s": float(np.median(got)) if got else None,
                           "worst_delay_s": float(max(got)) if got else None}
    return {"alarmed": {"events": len(delays), "alarmed": len(hit), "share": len(hit) / len(delays),
                        "median_delay_s": float(np.median(hit)) if hit else None,
                        "worst_delay_s": float(max(hit)) if hit else None},
            "per_fault": per_fault}


def summarise(rows: list[dict]) -> dict:
    import numpy as np
    from scipy import stats

    days = sum(r["hours"] for r in rows) / 24.0
    fa = np.array([r["observed_per_day"] for r in rows])
    obs = sum(r["observed"] for r in rows)
    promised = sum(r["promised_per_day"] * r["hours"] / 24.0 for r in rows)
    lo = stats.chi2.ppf(0.05, 2 * obs) / 2 if obs else 0.0
    hi = stats.chi2.ppf(0.95, 2 * obs + 2) / 2
    delays = [f["delay_s"] for r in rows for f in r["faults"]]
    old_delays = [f["mofn_delay_s"] for r in rows for f in r["faults"]]
    either = [f for r in rows for f in r["faults"] if f["delay_s"] is not None or f["novel_delay_s"] is not None]
    curve = []
    for i, lim in enumerate(CURVE_LIMITS):
        o = sum(r["curve"][i]["observed"] for r in rows)
        p = sum(r["curve"][i]["stated_per_day"] * r["hours"] / 24.0 for r in rows)
        curve.append({"limit": lim, "observed": o, "promised": p, "ratio": o / p if p else None,
                      "sites_inside": sum(r["curve"][i]["inside"] for r in rows)})
    old_fa = np.array([r["mofn"]["observed_per_day"] for r in rows])
    return {
        "sites": len(rows), "site_days": days,
        "fa_per_site_day": {"mean": float(fa.mean()), "median": float(np.median(fa)), "worst": float(fa.max()),
                            "sites_with_alarms": int((fa > 0).sum())},
        **summarise_faults(rows),
        "alarm_or_novel_share": len(either) / len(delays),
        "certificate": {"observed": obs, "promised": promised, "ratio": obs / promised if promised else None,
                        "ratio_ci90": [lo / promised, hi / promised] if promised else None,
                        "sites_inside": sum(r["inside"] for r in rows)},
        "curve": curve,
        "novel_per_site_day": sum(r["novel_events"] for r in rows) / days,
        "sites_with_novel": sum(r["novel_events"] > 0 for r in rows),
        "one_state_sites": sum(r["states"] == 1 for r in rows),
        "mofn": {"fa_mean": float(old_fa.mean()), "fa_median": float(np.median(old_fa)),
                 "fa_worst": float(old_fa.max()),
                 "alarmed_share": sum(d is not None for d in old_delays) / len(old_delays),
                 "median_delay_s": float(np.median([d for d in old_delays if d is not None] or [np.nan])),
                 "promised_per_site_day": float(np.mean([r["mofn"]["promised_per_day"] for r in rows]))},
    }


def _lo(x: float) -> str:
    return "0" if x < 1e-3 else f"{x:.2g}"


def _fmt_delay(d) -> str:
    return "miss" if d is None else f"{d:.0f}"


def print_tables(rows: list[dict], tot: dict) -> None:
    print(f"\n{'site':8} {'bg':13} {'limit':>5} {'promised/d (90% CI)':>22} {'obs':>4} {'in':>3} "
          f"{'novel':>5}  delays s: cav b-out b-in leak arc")
    for r in rows:
        ci = f"{r['promised_per_day']:.2g} ({_lo(r['ci90'][0])}-{r['ci90'][1]:.2g})"
        print(f"{r['site']:8} {r['background']:13} {r['limit']:5.2f} {ci:>22} {r['observed']:4d} "
              f"{'y' if r['inside'] else 'n':>3} {r['novel_events']:5d}  "
              + " ".join(f"{_fmt_delay(f['delay_s']):>4}" for f in r["faults"]))
    fa, al, ce = tot["fa_per_site_day"], tot["alarmed"], tot["certificate"]
    print(f"\nfalse alarms per site-day: mean {fa['mean']:.2f}, median {fa['median']:.2f}, worst {fa['worst']:.2f} "
          f"({fa['sites_with_alarms']} of {tot['sites']} sites alarmed; {tot['site_days']:.1f} site-days)")
    print(f"faults alarmed within {HORIZON_S:.0f} s: {al['alarmed']}/{al['events']} ({al['share']:.0%}); median delay "
          f"{_fmt_delay(al['median_delay_s'])} s, worst {_fmt_delay(al['worst_delay_s'])} s; alarmed or novel "
          f"state: {tot['alarm_or_novel_share']:.0%}")
    for k, v in tot["per_fault"].items():
        print(f"  {k:22} {v['alarmed']:2d}/{v['events']} alarmed, median {_fmt_delay(v['median_delay_s'])} s, worst "
              f"{_fmt_delay(v['worst_delay_s'])} s")
    rci = ce["ratio_ci90"] or [float("nan")] * 2
    print(f"certificate: {ce['observed']} observed against {ce['promised']:.2f} promised (ratio "
          f"{(ce['ratio'] or 0):.2f}, 90 % CI {rci[0]:.2f}-{rci[1]:.2f}); {ce['sites_inside']}/{tot['sites']} sites "
          "inside their interval")
    for c in tot["curve"]:
        print(f"  at limit {c['limit']:4.2f}: {c['observed']:5d} observed, {c['promised']:8.2f} promised, ratio "
              f"{(c['ratio'] or 0):.2f}, {c['sites_inside']}/{tot['sites']} inside")
    print(f"novel-state notices: {tot['novel_per_site_day']:.2f} per site-day ({tot['sites_with_novel']} sites); "
          f"{tot['one_state_sites']}/{tot['sites']} calibrations heard one state")
    m = tot["mofn"]
    print(f"reference, mean + 4 sigma with 3 of 5: {m['fa_mean']:.2f} false alarms per site-day (median "
          f"{m['fa_median']:.2f}, worst {m['fa_worst']:.2f}; promised {m['promised_per_site_day']:.2f}), "
          f"{m['alarmed_share']:.0%} of faults alarmed, median delay {m['median_delay_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    from score_variants import VARIANTS
    from sim_fleet import site_list

    from anomaly.decision import MEAN_LIMIT_FLOOR, TARGET_PER_DAY

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=24)
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--cal-minutes", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None, help="a detector directory, or one per machine type under it "
                    "(DIR/pump, DIR/compressor, DIR/fan); default: the mix autoencoders")
    ap.add_argument("--cache", type=Path, default=None, help="per-patch score cache of this model (filled if empty)")
    ap.add_argument("--floor", type=float, default=MEAN_LIMIT_FLOOR, help="the limit's floor (calibration sds)")
    ap.add_argument("--target", type=float, default=TARGET_PER_DAY, help="false alarms per day the limit is set for")
    ap.add_argument("--score", choices=VARIANTS, default="model", help="the patch score the rules see (default: the "
                    "detector's own; others from its cached band errors, see bench/score_variants.py)")
    ap.add_argument("--gaussian-model", type=Path, default=None, help="for --score gaussian: the same network with "
                    "its error Gaussian (DIR or DIR/<machine>)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not 1 <= args.cal_minutes <= 60:
        ap.error("--cal-minutes must be within the 60-min calibration hour")
    t0 = time.time()
    sites = site_list(args.sites)
    cache = build(args, sites)
    paths = [cache / f"site_{s['name']}.npz" for s in sites]
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        rows = list(ex.map(replay_site, [(p, args.cal_minutes, args.floor, args.target, args.score,
                                          args.gaussian_model) for p in paths]))
    tot = summarise(rows)
    print(f"{len(rows)} sites x {rows[0]['hours']:g} h after a {args.cal_minutes:g}-min calibration; cache {cache}; "
          f"score {args.score}")
    print_tables(rows, tot)
    default = (args.floor, args.target) == (MEAN_LIMIT_FLOOR, TARGET_PER_DAY)
    tag = ("" if default else f"_floor{args.floor:g}_t{args.target:g}") + (
        "" if args.score == "model" else f"_{args.score}")
    out = args.out or RESULTS / f"false_alarms_fleet_cal{args.cal_minutes:g}{tag}.json"
    write_json(out, {"benchmark": "false_alarms_fleet", "cache": str(cache), "model": rows[0]["model"],
                     "score": args.score, "gaussian_model": str(args.gaussian_model or ""),
                     "calibration_minutes": args.cal_minutes, "floor": args.floor, "target_per_day": args.target,
                     "horizon_s": HORIZON_S, "sites": rows, "total": tot,
                     "seconds": round(time.time() - t0, 1), "cpu_count": os.cpu_count(),
                     "load_avg": os.getloadavg()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
