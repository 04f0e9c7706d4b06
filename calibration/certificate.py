"""The calibration certificate as the technician reads it.

A record calibrated for a windowed-mean rule (issue #14) opens in plain words (:func:`plain_words`): a verdict (ready /
not ready and why), the expected false alarms per week, the detection delay for a persistent fault and what to do
next; the statistics follow for the engineer. The expected rate is stated as a number only down to about one per
week (:data:`WEEKLY_FLOOR`): below that the estimate was measured to be optimistic (docs/calibration.md), so it says
"fewer than 1 per week for the sounds this recording held".
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from anomaly.decision import DEFAULT_MIN_MINUTES, rule_from_dict
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
WEEKLY_FLOOR = 1.0  # false alarms per week below which the certificate no longer states a number
NOT_READY_PER_DAY = 1.0  # a stated rate above this is not ready for a plant
RECOMMENDED_MINUTES = 60.0


def verdict(rec: dict) -> tuple[bool, list[str], list[str]]:
    """``(ready, reasons, next steps)`` of a calibration record, in plain words."""
    th, au = rec["threshold"], rec["audio"]
    reasons, steps = [], []
    problems = [f["what"] for f in rec.get("findings", []) if f.get("level") == "problem"]
    reasons += problems
    if au.get("forced"):
        reasons.append(f"the recording ({au['minutes']:.0f} min) is shorter than the minimum and was forced: the "
                       "figures below rest on too little audio")
    if th["false_alarms_per_day"] > NOT_READY_PER_DAY:
        reasons.append(f"about {th['false_alarms_per_day']:.2g} false alarms a day are expected")
    if rec.get("status") == "refused":
        reasons.append("the recalibration was refused: the sound shifted the way a developing fault does")
    if reasons:
        steps.append(f"record {max(30.0, au.get('min_minutes') or 30.0):.0f}-60 min of normal operation and calibrate "
                     "again" if (au.get("forced") or problems) else "inspect the machine, then calibrate again")
    for f in rec.get("findings", []):
        w = f["what"]
        if f.get("level") == "warning" and ("record another" in w or "one steady state" in w):
            steps.append(w[0].upper() + w[1:])
    if not reasons and au["minutes"] < RECOMMENDED_MINUTES:
        steps.append(f"optionally record up to {RECOMMENDED_MINUTES:.0f} min, covering every normal operating state")
    if not reasons:
        steps.append(f"start monitoring: humwatch monitor --site {rec['site']}")
    return not reasons, reasons, steps


def per_week_words(per_day: float, ci: tuple[float, float] | list[float]) -> str:
    """The expected false alarms in words: a number per week down to about one a week, below that a bound."""
    week = 7.0 * per_day
    if week >= WEEKLY_FLOOR:
        return f"about {week:.2g} per week (90 % interval {7 * ci[0]:.2g}-{7 * ci[1]:.2g})"
    return (f"fewer than 1 per week for the sounds this recording held (stated {week:.2g} per week; sounds it did "
            "not hold are reported as novel states)")


def delay_words(mr: dict) -> str:
    """``A persistent fault is alarmed about 58 s after it moves the score by 3 calibration sds ...``."""
    d = mr["delays_s"]
    parts = [f"{v:.0f} s after it moves the score by {k} sds" for k, v in d.items() if v is not None]
    lim = f"a shift of {mr['limit']:.2g} sds or less is not alarmed (window {mr['n']} patches)"
    if not parts:
        return f"A persistent fault is alarmed once it moves the score by more than {mr['limit']:.2g} sds; {lim}."
    return f"A persistent fault is alarmed about {', or '.join(parts)}; {lim}."


def _sentence(s: str) -> str:
    s = s[0].upper() + s[1:]
    return s if s.endswith(".") else s + "."


def plain_words(rec: dict) -> list[str]:
    """The certificate's opening for the technician (windowed-mean records)."""
    th = rec["threshold"]
    mr = th["alarm_rule"]
    ready, reasons, steps = verdict(rec)
    head = "READY" if ready else "NOT READY: " + "; ".join(reasons)
    return [head,
            "Expected false alarms: " + per_week_words(th["false_alarms_per_day"], th["false_alarms_per_day_ci"]),
            delay_words(mr),
            "Next: " + " ".join(_sentence(s) for s in steps)]


def _low(x: float) -> str:
    return "≈0" if x < 1e-3 else f"{x:.2g}"


def _mean_rule_lines(rec: dict) -> list[str]:
    th = rec["threshold"]
    mr = th["alarm_rule"]
    lo, hi = mr["ci90"]
    src = ("the floor" if mr["limit_source"] == "floor" else
           f"the limit the estimate states {mr['target_per_day']:g}/day at")
    return [
        f"alarm rule: {rule_words(th)}",
        f"  limit {mr['limit']:.3g} sds = max(floor {mr['limit_floor']:g}, {mr['target_limit']:.3g} where "
        f"{mr['target_per_day']:g}/day is stated): {src}",
        f"  standardised by the recording's log-score mean {th['rule']['centre']:.4g} and sd {th['rule']['scale']:.4g}",
        f"expected false alarms: {mr['false_alarms_per_day']:.2g} per day (90 % CI {_low(lo)}-{hi:.2g}; never stated "
        f"below {mr['floor_per_day']:g}); {mr['method']}",
        f"  {mr['values']} window means, {mr['n_eff']:.1f} effectively independent ({mr['block_patches']}-patch "
        f"blocks); cross-fitted replay: {mr['crossfit_alarms']} alarm(s) in {mr['crossfit_minutes']:.0f} min",
    ]


def rule_words(th: dict) -> str:
    """The record's alarm rule in words."""
    if isinstance(th.get("rule"), dict):
        return rule_from_dict(th["rule"]).describe()
    return f"{th['alarm_m']} of the last {th['alarm_n']} patches over the threshold"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.3%}"


def certificate_lines(rec: dict) -> list[str]:
    """The certificate's lines: plain words first (windowed-mean records), then the figures."""
    th, au, ck = rec["threshold"], rec["audio"], rec["check"]
    lo, hi = th["exceedance_ci"]
    flo, fhi = th["false_alarms_per_day_ci"]
    mean_rule = isinstance(th.get("alarm_rule"), dict)
    lines = plain_words(rec) + ["", "for the engineer:"] if mean_rule else []
    lines += [
        f"site {rec['site']}   calibration {rec.get('id', '(not stored)')}   {rec['kind']}, {rec['status']}",
        f"model {rec['model']['hash']} ({rec['model']['detector']}), front end {rec['model']['feature_params_hash']}",
        f"audio: {au['minutes']:.1f} min, {au['patches']} patches ({au['threshold_patches']} set the threshold, "
        f"{au['check_patches']} held out to check it)" + _minimum_mark(au),
    ]
    if mean_rule:
        lines += _mean_rule_lines(rec)
    lines += [
        f"{'patch ' if mean_rule else ''}threshold: {th['threshold']:.4g} = mean {th['mean']:.4g} + {th['k']:g} × σ "
        f"{th['std']:.4g}",
        f"  alternatives: median + {th['k']:g}·MAD {th['robust_threshold']:.4g};  99.9 % quantile "
        f"{th['quantile_999']:.4g};  max {th['max_score']:.4g}",
        f"per-patch exceedance: {_pct(th['exceedance'])} (90 % CI {_pct(lo)}–{_pct(hi)}; {th['exceedance_method']})",
    ]
    if not mean_rule:
        lines.append(f"expected false alarms: {th['false_alarms_per_day']:.2g} per day (90 % CI {flo:.2g}–{fhi:.2g}) "
                     f"with the rule {th['alarm_m']} of {th['alarm_n']} patches")
    lines.append(f"held-out check: {_pct(ck['observed_exceedance'])} of {ck['patches']} patches exceeded; "
                 f"{ck['observed_alarms']} alarm(s) in {ck['patches'] * record_patch_seconds(rec) / 60:.0f} min")
    st = rec.get("states")
    if isinstance(st, dict):
        lines.append(f"states the recording covered ({len(st['shares'])}; novel-state limit {st['limit']:.3g}):")
        lines += [f"  {d}" for d in st.get("describe", [])]
    return lines


def _delay_cell(row: dict) -> str:
    if "rule_delay_s" not in row:
        return ""
    return " (no alarm)" if row["rule_delay_s"] is None else f" ({row['rule_delay_s']:.0f} s)"


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
    _labelled_lines(rec.get("validation", {}).get("labelled"), console)
    inj = rec.get("validation", {}).get("injected")
    if inj:
        about = rec.get("validation", {}).get("injected_about") or {}
        sevs = [r["severity"] for r in next(iter(inj.values()))["by_severity"]]
        what = f"simulated {about['simulated_machine']} faults" if about else "simulated faults"
        t = Table("injected fault", *[f"sev {s:g}" for s in sevs], "lowest detected", title=f"{what}: detection rate "
                  "(share of patches over the threshold; in brackets the alarm rule's delay for a persistent fault "
                  "of that size)")
        for fault, v in inj.items():
            low = v["lowest_severity_detected"]
            t.add_row(fault, *[f"{r['detection_rate']:.0%}" + _delay_cell(r) for r in v["by_severity"]],
                      "not detected" if low is None else f"{low:g}")
        console.print(t)
        if about.get("warning"):
            console.print(f"[yellow]warning[/]: {escape(about['warning'])}")
    known = rec.get("validation", {}).get("known_faults")
    if known:
        t = Table("known fault recordings", "files", "detection rate", "files alarmed")
        for g, v in known.items():
            t.add_row(escape(g), str(len(v["files"])), f"{v['detection_rate']:.0%}",
                      f"{v['files_alarmed']}/{len(v['files'])}")
        console.print(t)


def labelled_summary(lab: dict) -> list[str]:
    """Detection on the labelled recordings of the machine, as lines (the certificate prints them first)."""
    st = lab["stream"]
    delay = "no alarm" if st["delay_s"] is None else f"alarm {st['delay_s']:.0f} s after the first anomalous clip"
    ch = lab["chance"]
    return [
        f"detection on labelled recordings of this machine ({lab['n_normal']} normal, {lab['n_anomaly']} anomalous "
        f"clips in {lab['directory']}):",
        f"  AUC {_num(lab['auc'])}, pAUC {_num(lab['pauc'])} (standardised, max FPR 0.1; chance {ch['auc']:g} and "
        f"{ch['pauc']:g}); patches over the threshold: normal {lab['over_threshold']['normal']:.1%}, anomalous "
        f"{lab['over_threshold']['anomaly']:.1%}",
        f"  clips raising an alarm: normal {lab['files_alarmed']['normal']}/{lab['n_normal']}, anomalous "
        f"{lab['files_alarmed']['anomaly']}/{lab['n_anomaly']}; as one stream (normal clips, then anomalous): "
        f"{st['false_alarms']} false alarm(s) in {st['normal_minutes']:.0f} min, {delay}",
    ]


def _num(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _labelled_lines(lab: dict | None, console: Console) -> None:
    if lab:
        for line in labelled_summary(lab):
            console.print(escape(line))
