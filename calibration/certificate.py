"""The calibration certificate as the technician reads it."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from anomaly.decision import DEFAULT_MIN_MINUTES
from anomaly.features import DEFAULT_PARAMS, FeatureParams


def record_patch_seconds(rec: dict) -> float:
    """Seconds per patch of the front end a calibration record was made with (the default one for a record without
    its parameters)."""
    fp = rec.get("model", {}).get("feature_params")
    return (FeatureParams.from_dict(fp) if fp else DEFAULT_PARAMS).patch_seconds


def _minimum_mark(au: dict) -> str:
    """How the recording stood against the minimum: forced below it, or the minimum itself lowered."""
    marks = []
    if au.get("forced"):
        marks.append(f"FORCED below the minimum of {au.get('min_minutes', DEFAULT_MIN_MINUTES):g} min")
    mm = au.get("min_minutes")
    if isinstance(mm, (int, float)) and mm < DEFAULT_MIN_MINUTES:
        marks.append(f"--min-minutes {mm:g}, below the {DEFAULT_MIN_MINUTES:g} min default")
    return "".join(f"  [{m}]" for m in marks)


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.3%}"


def certificate_lines(rec: dict) -> list[str]:
    th, au, ck = rec["threshold"], rec["audio"], rec["check"]
    lo, hi = th["exceedance_ci"]
    flo, fhi = th["false_alarms_per_day_ci"]
    lines = [
        f"site {rec['site']}   calibration {rec.get('id', '(not stored)')}   {rec['kind']}, {rec['status']}",
        f"model {rec['model']['hash']} ({rec['model']['detector']}), front end {rec['model']['feature_params_hash']}",
        f"audio: {au['minutes']:.1f} min, {au['patches']} patches ({au['threshold_patches']} set the threshold, "
        f"{au['check_patches']} held out to check it)" + _minimum_mark(au),
        f"threshold: {th['threshold']:.4g} = mean {th['mean']:.4g} + {th['k']:g} × σ {th['std']:.4g}",
        f"  alternatives: median + {th['k']:g}·MAD {th['robust_threshold']:.4g};  99.9 % quantile "
        f"{th['quantile_999']:.4g};  max {th['max_score']:.4g}",
        f"per-patch exceedance: {_pct(th['exceedance'])} (90 % CI {_pct(lo)}–{_pct(hi)}; {th['exceedance_method']})",
        f"expected false alarms: {th['false_alarms_per_day']:.2g} per day (90 % CI {flo:.2g}–{fhi:.2g}) with the "
        f"rule {th['alarm_m']} of {th['alarm_n']} patches",
        f"held-out check: {_pct(ck['observed_exceedance'])} of {ck['patches']} patches exceeded; "
        f"{ck['observed_alarms']} alarm(s) in {ck['patches'] * record_patch_seconds(rec) / 60:.0f} min",
    ]
    return lines


def print_certificate(rec: dict, console: Console) -> None:
    body = "\n".join(escape(x) for x in certificate_lines(rec))
    console.print(Panel(body, title="humwatch calibration certificate", expand=False))
    fs = rec.get("findings", [])
    if fs:
        colour = {"ok": "green", "warning": "yellow", "problem": "red"}
        for f in fs:
            console.print(f"[{colour.get(f['level'], 'white')}]{f['level']}[/]: {escape(f['what'])}")
    st = rec.get("shift_test")
    if st:
        console.print(("[red]shift detected[/]: " + escape("; ".join(st["reasons"]))) if st["shifted"] else
                      f"[green]no shift[/] against the previous calibration (superiority {st['superiority']:.2f}, "
                      f"exceedances {st['exceed_count']}/{st['patches']})")
    inj = rec.get("validation", {}).get("injected")
    if inj:
        sevs = [r["severity"] for r in next(iter(inj.values()))["by_severity"]]
        t = Table("injected fault", *[f"sev {s:g}" for s in sevs], "lowest detected", title="detection rate "
                  "(share of patches over the threshold)")
        for fault, v in inj.items():
            low = v["lowest_severity_detected"]
            t.add_row(fault, *[f"{r['detection_rate']:.0%}" for r in v["by_severity"]],
                      "not detected" if low is None else f"{low:g}")
        console.print(t)
    known = rec.get("validation", {}).get("known_faults")
    if known:
        t = Table("known fault recordings", "files", "detection rate", "files alarmed")
        for g, v in known.items():
            t.add_row(escape(g), str(len(v["files"])), f"{v['detection_rate']:.0%}",
                      f"{v['files_alarmed']}/{len(v['files'])}")
        console.print(t)
