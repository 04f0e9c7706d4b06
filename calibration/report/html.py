"""The report's HTML: one self-contained page (no network, no script: every plot is an inline PNG ``data:`` URI, and a
Content-Security-Policy forbids loading anything else). Every user-supplied string (site settings, file names, alarm
contents, calibration records) is HTML-escaped here.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import numpy as np

from anomaly import __version__
from anomaly.atomic import write_text
from anomaly.errors import shown
from anomaly.vocabulary import signature_text
from calibration.certificate import certificate_lines, labelled_summary, record_patch_seconds
from calibration.report import charts, data
from calibration.store import Site

MAX_ALARM_ROWS = 300

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
header{background:#1f3b57;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .sub{opacity:.85}
main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 8px}
img.plot,img.patch{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #e3e6ea;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td:first-child{white-space:nowrap}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde1e6;border-radius:6px;padding:8px 12px;min-width:150px;background:#fafbfc}
.card b{display:block;font-size:18px}
.warn{color:#9a5b00}.bad{color:#b30000}.ok{color:#1d7a1d}
td.hi{background:#fff1d6}td.vhi{background:#ffd9d9}
pre{background:#f6f8fa;border:1px solid #e3e6ea;padding:10px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
figure.patch{margin:14px 0;border-top:1px solid #e3e6ea;padding-top:8px}
figcaption{font-size:13px}
.note{color:#555;font-size:12.5px}
.scroll{overflow-x:auto;max-width:100%}
#verdict-section{border-width:2px}
#verdict-section.v-normal{border-color:#1d7a1d;background:#eef8ee}
#verdict-section.v-watch{border-color:#c77700;background:#fff6e0}
#verdict-section.v-act{border-color:#b30000;background:#ffecec}
#verdict h2{font-size:20px;margin:0 0 6px}
#verdict ul{margin:4px 0 6px 18px;padding:0}
#verdict .next{font-weight:600}
@media (max-width:700px){main{padding:4px 8px 24px}header{padding:12px 12px}section{padding:10px 10px}
.card{min-width:0;flex:1 1 140px}.card b{font-size:15px}}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(x) -> str:
    """HTML-escaped text of any value; undecodable bytes of a file name shown as ``\\xff`` escapes."""
    return escape("" if x is None else shown(x), quote=True)


def _img(uri: str, alt: str, id_: str | None = None, cls: str = "plot") -> str:
    idattr = f' id="{escape(id_)}"' if id_ else ""
    return f'<img{idattr} class="{escape(cls)}" alt="{escape(alt)}" src="{uri}">'


def _table(head: list[str], rows: list[list[str]], id_: str | None = None, num: set[int] = frozenset()) -> str:
    """An HTML table; ``head`` is escaped here, ``rows`` cells must already be escaped HTML."""
    idattr = f' id="{_e(id_)}"' if id_ else ""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = []
    for r in rows:
        cells = []
        for j, c in enumerate(r):
            if isinstance(c, tuple):  # (html, css class)
                cells.append(f'<td class="{_e(c[1])}">{c[0]}</td>')
            else:
                cells.append(f'<td class="num">{c}</td>' if j in num else f"<td>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table{idattr}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</div>")


def _fmt(x, spec: str = ".4g") -> str:
    try:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "–"
        return format(x, spec)
    except (TypeError, ValueError):
        return _e(x)


def _file(path: str | None) -> str:
    """A file's short name, with its full path on hover."""
    if not path:
        return "–"
    return f'<span class="file" title="{_e(path)}">{_e(data.short_name(path))}</span>'


def _verdict_section(v: data.Verdict) -> str:
    items = "".join(f"<li><b class='{_LEVEL_CLASS[r.level]}'>{_e(r.level)}</b>: {_e(r.what)}</li>"
                    for r in v.reasons)
    nxt = f"<p class='next'>Next step: {_e(v.next_step)}</p>" if v.next_step else ""
    return (f'<section id="verdict-section" class="v-{_e(v.level)}"><div id="verdict" data-level="{_e(v.level)}">'
            f"<h2>{_e(v.headline)}</h2><ul>{items}</ul>{nxt}</div></section>")


_LEVEL_CLASS = {"normal": "ok", "watch": "warn", "act": "bad"}


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{_e(id_)}-section"><h2>{_e(title)}</h2>{body}</section>'


def _site_section(site: Site, cfg, current: dict) -> str:
    rows = [["machine", _e(cfg.machine or "–")], ["microphone", _e(cfg.microphone or "–")],
            ["microphone response", _e(cfg.response_curve or "none")],
            ["model", f"{_e(cfg.model_path)} (hash {_e(cfg.model_hash)})"],
            ["alarm rule", _e(cfg.alarm_rule)], ["threshold k", _e(f"{cfg.k:g}")],
            ["recalibration", f"every {_e(cfg.recalibration_days)} days; audio source {_e(cfg.source or '–')}"],
            ["current calibration", f"{_e(current.get('id'))} ({_e(current.get('created_utc'))})"]]
    if cfg.notes:
        rows.append(["notes", _e(cfg.notes)])
    return _section("site", "Site", _table(["setting", "value"], rows, id_="site-table"))


def _summary(df, alarms, current: dict) -> str:
    patch_s = record_patch_seconds(current)
    span = float(df["t_utc"].iloc[-1] - df["t_utc"].iloc[0]) + patch_s
    over = float(df["over"].mean())
    expected = current.get("threshold", {}).get("exceedance")
    worst = df.iloc[int(df["score"].to_numpy().argmax())]
    ratio = float(worst["score"] / worst["threshold"]) if worst["threshold"] else float("nan")
    cls = "bad" if len(alarms) else "ok"
    cards = [
        ("period (UTC)", f"{_e(data.iso(df['t_utc'].iloc[0], False))} – "
                         f"{_e(data.iso(df['t_utc'].iloc[-1], False))}", ""),
        ("patches scored", f"{len(df):,} ({_e(data.span(len(df) * patch_s))} of audio in {_e(data.span(span))})",
         ""),
        ("alarms", f"{len(alarms)}", cls),
        ("patches over the threshold", f"{over:.2%}" + (f" (certificate: {expected:.3%})" if expected is not None
                                                         else ""),
         "warn" if expected is not None and over > max(3 * expected, 1e-3) else ""),
        ("highest score", f"{worst['score']:.4g} ({ratio:.1f}× threshold) at {_e(data.iso(worst['t_utc']))}",
         "bad" if ratio > 1 else ""),
    ]
    named: dict[str, int] = {}
    for info in alarms["info"] if len(alarms) else []:
        label = data.fault_label(info) if isinstance(info, dict) else ""
        if label:
            key = label.split(" (", 1)[0].removeprefix("classifier hit: ")
            named[key] = named.get(key, 0) + 1
    if named:
        cards.insert(3, ("likely faults", _e(", ".join(f"{k} ×{v}" for k, v in sorted(named.items(),
                                                                                     key=lambda kv: -kv[1]))), "bad"))
    return '<div class="cards" id="summary">' + "".join(
        f'<div class="card"><span>{_e(k)}</span><b class="{c}">{v}</b></div>' for k, v, c in cards) + "</div>"


def _alarm_section(alarms, df) -> str:
    if alarms.empty:
        return _section("alarms", "Alarms", '<p id="alarm-table">No alarms in this period.</p>')
    shown = alarms.iloc[-MAX_ALARM_ROWS:]
    with_fault = any(isinstance(i, dict) and "fault" in i for i in shown["info"])  # a classifier named faults
    rows = []
    for _, a in shown.iterrows():
        info = a["info"] if isinstance(a["info"], dict) else {}
        thr = info.get("threshold")
        try:
            sev = data.alarm_severity(float(a["t_utc"]), float(a["score"]), float(thr), df) if thr else None
        except (TypeError, ValueError):
            sev = None
        tb = info.get("top_bands") or []
        bands = ", ".join(f"{_e(b.get('center_hz'))} Hz ×{_e(b.get('error_ratio'))}" for b in tb
                          if isinstance(b, dict))
        if tb and isinstance(tb[0], dict) and tb[0].get("hint"):
            bands += f"<br><span class='note'>{_e(tb[0]['hint'])}</span>"
        off = info.get("offset_s")
        when = _e(data.iso(a["t_utc"])) + (" <span class='warn' title='time from the file&#39;s modification "
                                           "time'>(time uncertain)</span>"
                                           if info.get("time_source") == "mtime" else "")
        serious = ((f"<b class='{'bad' if sev['level'] == 'strong' else 'warn'}'>{_e(sev['level'])}</b>: "
                    f"{_fmt(sev['ratio'], '.1f')}× threshold, {sev['sustained_share']:.0%} of the next minute over")
                   if sev else "–")
        where = (f"device {_e(info['device'])}" if info.get("device") and not info.get("file")
                 else _file(info.get("file")))
        row = [when] + ([_e(data.fault_label(info) or "–")] if with_fault else []) + [
            serious, _fmt(float(a["score"])), _fmt(thr), where,
            _fmt(off, ".2f") if isinstance(off, (int, float)) else _e(off if off is not None else "–"),
            bands or "–", _e(a["calibration_id"])]
        rows.append(row)
    note = (f'<p class="note">{len(alarms)} alarms; the last {MAX_ALARM_ROWS} are listed.</p>'
            if len(alarms) > MAX_ALARM_ROWS else "")
    expl = ("<p class='note'>How serious: <b>strong</b> when the score reached twice the threshold or at least half "
            "of the following minute stayed over it (a sustained change); <b>weak</b> otherwise (a brief, marginal "
            "excursion, as false alarms are). Hover over a file name for its full path.</p>")
    head = ["time (UTC)"] + (["likely fault"] if with_fault else []) + [
        "how serious", "score", "threshold", "file", "offset (s)", "bands deviating most", "calibration"]
    k = 1 if with_fault else 0
    return _section("alarms", f"Alarms ({len(alarms)})", note + expl + _table(
        head, rows, id_="alarm-table", num={2 + k, 3 + k, 5 + k}))


def _novel_section(novel) -> str:
    """Novel-state notices: when the site sounded unlike every state the calibration heard, and how."""
    expl = ("<p class='note'>A novel state is a notice, not an alarm: the sound left every operating state the "
            "calibration heard (band levels, not the anomaly score). Alarms in it are raised as usual. A fault can "
            "sound like a new state; a healthy new state (another shift, a neighbouring machine) is recalibrated "
            "with.</p>")
    if novel is None or not len(novel):
        return _section("novel", "Novel states", '<p id="novel-table">No novel-state notices in this period.</p>')
    rows = [[_e(data.iso(float(a["t_utc"]))), _e((a["info"] or {}).get("differs", "")),
             _e(Path((a["info"] or {}).get("file") or "live").name)] for _, a in novel.iterrows()]
    return _section("novel", f"Novel states ({len(novel)})", expl + _table(
        ["time (UTC)", "how it differed from the nearest calibration state", "file"], rows[-MAX_ALARM_ROWS:],
        id_="novel-table"))


def _fault_section(site: Site, df, alarms) -> str:
    """Per-class probabilities over time, per-class hit rates and the alarms each class explains."""
    cols = [c for c in data.class_columns(df) if c != "p_normal"]
    if not cols:
        return ""
    thresholds = data.class_thresholds(site, alarms)
    named = data.alarms_by_fault(alarms)
    rows = []
    for c in cols:
        v = df[c].to_numpy(float)
        v = v[np.isfinite(v)]
        thr = thresholds.get(c[2:])
        rows.append([_e(c[2:]), _fmt(thr, ".2f") if thr is not None else "–",
                     f"{(v >= thr).mean():.2%}" if thr is not None and v.size else "–",
                     _fmt(float(np.median(v)), ".3f") if v.size else "–", _fmt(float(v.max()), ".3f") if v.size
                     else "–", str(named.get(c[2:], 0))])
    if named.get("unknown"):
        rows.append(["unknown", "–", "–", "–", "–", str(named["unknown"])])
    img = _img(charts.fault_png(df, cols, thresholds), "fault-classifier probabilities over time with their thresholds",
               "fault-timeline")
    note = ("<p class='note'>The site's fault classifier scores every patch; the dotted lines are its per-class "
            "thresholds (chosen on validation for the precision target). An alarm's likely fault is the class over "
            "its threshold with the highest mean probability over the alarm's patches; 'unknown' means the "
            "autoencoder alarmed on a sound no known class matches. Per-patch probabilities are in the score log "
            "(<code>humwatch report --out scores.csv</code>) for tuning the thresholds.</p>")
    return _section("faults", "Fault classifier", img + note + _table(
        ["class", "threshold", "patches over", "median p", "max p", "alarms naming it"], rows, id_="fault-table",
        num={1, 2, 3, 4, 5}))


def _drift_section(df, calibrations: dict, alarms) -> str:
    rows, label = data.drift_table(df, calibrations, alarms)
    img = _img(charts.drift_png(rows, label), f"score quantiles per {label} against the calibration baseline", "drift")
    trs = []
    for start, r in rows.iterrows():
        cells = [_e(start.strftime("%Y-%m-%d" if label in ("week", "day") else "%Y-%m-%d %H:%M")),
                 f"{int(r['patches']):,}"]
        for p in data.QUANTILES:
            n = round(p * 100)
            q, b = r[f"q{n}"], r[f"base_q{n}"]
            rel = q / b if b and b == b else float("nan")
            cls = "vhi" if rel >= 2 else "hi" if rel >= 1.25 else ""
            cells.append((f"{_fmt(q)} <span class='note'>({_fmt(rel, '.2f')}×)</span>", f"num {cls}".strip()))
        exp = r["expected_over"]
        over_cls = "vhi" if exp == exp and r["over"] > 10 * exp else "hi" if exp == exp and r["over"] > 3 * exp \
            else ""
        cells.append((f"{r['over']:.2%}", f"num {over_cls}".strip()))
        cells.append(_fmt(exp, ".3%"))
        cells.append(str(int(r["alarms"])))
        cells.append(_e(r["calibration_id"]))
        trs.append(cells)
    table = _table([label, "patches", "median (× baseline)", "90 % (× baseline)", "99 % (× baseline)",
                    "over threshold", "certificate exceedance", "alarms", "calibration"], trs, id_="drift-table",
                   num={1, 7})
    expl = ("<p class='note'>Score quantiles of each " + _e(label) + " against those of the calibration baseline "
            "(dashed; the calibration in force for most of the period). A machine that slowly degrades shows the "
            "median and the 90 % quantile creeping up before alarms start; a rising share over the threshold "
            "against the certificate's expected exceedance says the same. Cells at 1.25× and 2× the baseline are "
            "shaded.</p>")
    return _section("drift", "Drift", img + expl + table)


def _devices_section(table, gaps) -> str:
    """The devices that report over MQTT (:func:`data.devices`): last patch, silent now, and the gaps the ingest
    recorded."""
    if table.empty and gaps.empty:
        return ""
    rows = [[_e(r.device), f"{int(r.patches):,}", _e(data.iso(r.first)), _e(data.iso(r.last)),
             (f"<b>silent for {_e(data.dur(r.silent_s))}</b>" if r.silent_s > 0 else "reporting")]
            for r in table.itertuples()]
    body = _table(["device", "patches", "first (UTC)", "last (UTC)", "now"], rows, id_="device-table", num={1})
    if gaps.empty:
        body += "<p class='note' id='gap-table'>No gaps: no device was silent for longer than the ingest's limit.</p>"
    else:
        body += _table(["device", "silent from (UTC)", "to (UTC)", "minutes"],
                       [[_e(g.device), _e(data.iso(g.t_start)),
                         _e(data.iso(g.t_end)) if g.t_end == g.t_end else "still silent", _fmt(g.minutes, ".1f")]
                        for g in gaps.itertuples()], id_="gap-table", num={3})
    n_silent = int((table["silent_s"] > 0).sum())
    return _section("devices", f"Devices ({len(table)}; {n_silent} silent, {len(gaps)} gap(s))", body)


def _patch_section(items: list[dict], n: int, machine: str = "") -> str:
    if not items:
        return ""
    figs = []
    for k, it in enumerate(items, 1):
        ratio = it["score"] / it["threshold"] if it["threshold"] else float("nan")
        normal = ratio <= 1  # below the threshold: ordinary variation, no fault words
        bands = "; ".join(f"<b>{_e(g['label'])}</b>" + ("" if normal else f": {_e(g['hint'])}")
                          + f" (error {g['ratio']} the calibration mean"
                          + (f", {g['bands']} adjacent bands" if g["bands"] > 1 else "") + ")"
                          for g in data.band_groups(it["top"])) or "–"
        lead = ("below the threshold (normal variation); largest band differences" if normal else
                "bands deviating most")
        where = (f"{_file(it['file'])} at {_fmt(it['offset_s'], '.2f')} s" if it["file"] else "microphone")
        notes = "".join(f"<div class='note'>{_e(x)}</div>" for x in it["notes"])
        cls = "patch" if it["has_maps"] else "patch patch-bands-only"
        figs.append(
            f'<figure class="patch" id="patch-{k}">'
            f"<figcaption><b>#{k}</b> {_e(data.iso(it['t_utc']))} UTC — score {it['score']:.4g} "
            f"({ratio:.2f}× threshold {it['threshold']:.4g}); {where}; calibration {_e(it['calibration_id'])}"
            f"<br>{lead}: {bands}{notes}</figcaption>"
            + _img(charts.patch_png(it["x"], it["recon"], it["err"], it["bands"], it["baseline"], it["params"],
                                    it["top"]), f"patch {k}: input, reconstruction, error map and per-band error", None,
                   cls)
            + "</figure>")
    expl = ("<p class='note'>The highest-scoring patches, at most one per "
            f"{data.PATCH_SPACING_S:g} s, re-read from their source files and run through the site's model. Left to "
            "right: "
            "the input log-mel spectrogram, the autoencoder's reconstruction, the squared reconstruction error "
            "(normalised per band) and the error per mel band against the calibration's mean (red: the three "
            "largest ratios). " + _e(signature_text(machine)) + "</p>")
    return _section("patches", f"Top {len(items)} anomalous patches", expl + "".join(figs))


def _calibration_section(site: Site, current: dict, recs: dict, bad: list) -> str:
    try:
        cert = "\n".join(certificate_lines(current))
    except (KeyError, TypeError, ValueError) as e:
        cert = f"(certificate incomplete: {e!r})"
    parts = [f'<pre id="certificate">{_e(cert)}</pre>']
    fs = current.get("findings") or []
    if fs:
        cls = {"ok": "ok", "warning": "warn", "problem": "bad"}
        parts.append("<h3>Findings</h3><ul id='findings'>" + "".join(
            f"<li><b class='{cls.get(f.get('level'), '')}'>{_e(f.get('level'))}</b>: {_e(f.get('what'))}</li>"
            for f in fs if isinstance(f, dict)) + "</ul>")
    st = current.get("shift_test")
    if st:
        parts.append("<p>" + ("<b class='bad'>shift accepted</b>: " + _e("; ".join(st.get("reasons", [])))
                              if st.get("shifted") else
                              f"<b class='ok'>no shift</b> against the previous calibration (superiority "
                              f"{_fmt(st.get('superiority'), '.2f')})") + "</p>")
    lab = current.get("validation", {}).get("labelled")
    if lab:
        lines = labelled_summary(lab)
        parts.append(f"<h3>{_e(lines[0].rstrip(':'))}</h3><p id='labelled'>" + "<br>".join(_e(x.strip())
                                                                                        for x in lines[1:]) + "</p>")
    inj = current.get("validation", {}).get("injected")
    if inj:
        about = current.get("validation", {}).get("injected_about") or {}
        sevs = [r["severity"] for r in next(iter(inj.values()))["by_severity"]]
        rows = []
        for fault, v in inj.items():
            low = v.get("lowest_severity_detected")
            rows.append([_e(fault)] + [f"{r['detection_rate']:.0%}" for r in v["by_severity"]]
                        + ["not detected" if low is None else _fmt(low, "g")])
        what = f"simulated {about['simulated_machine']} faults" if about else "Injected faults"
        parts.append(f"<h3>{_e(what[0].upper() + what[1:])} (share of patches over the threshold)</h3>" + _table(
            ["fault"] + [f"severity {s:g}" for s in sevs] + ["lowest detected"], rows, id_="injected",
            num=set(range(1, len(sevs) + 1))))
        if about.get("warning"):
            parts.append(f"<p class='warn' id='injected-warning'>{_e(about['warning'])}</p>")
    known = current.get("validation", {}).get("known_faults")
    if known:
        rows = [[_e(g), str(len(v.get("files", []))), f"{v.get('detection_rate', 0):.0%}",
                 f"{_e(v.get('files_alarmed'))}/{len(v.get('files', []))}"] for g, v in known.items()]
        parts.append("<h3>Known fault recordings</h3>" + _table(["group", "files", "detection rate", "alarmed"], rows,
                                                                 num={1, 2}))
    cur = site.current_id()
    rows = []
    for cid, r in recs.items():
        th = r.get("threshold", {})
        status = _e(r.get("status"))
        status = f"<b class='bad'>{status}</b>" if r.get("status") == "refused" else status
        rows.append([_e(cid), _e(r.get("created_utc")), _e(r.get("kind")), status,
                     _fmt(r.get("audio", {}).get("minutes"), ".0f"), _fmt(th.get("threshold")),
                     _fmt(th.get("false_alarms_per_day"), ".2g"), "●" if cid == cur else ""])
    for cid, why in bad:
        rows.append([_e(cid), "", "", f"<b class='bad'>unreadable</b>: {_e(why)}", "", "", "", ""])
    parts.append("<h3>History</h3>" + _table(["id", "created (UTC)", "kind", "status", "minutes", "threshold",
                                              "false alarms/day", "current"], rows, id_="history", num={4, 5, 6}))
    parts.append(_settings_changes(site))
    return _section("calibration", "Calibration certificate and history", "".join(parts))


def _settings_changes(site: Site) -> str:
    """The site's settings changes (``humwatch site set``), each with when it takes effect; nothing when none."""
    rows = [[_e(e.get("t_utc")), _e(what), _e(repr(v.get("old"))), _e(repr(v.get("new"))),
             _e((e.get("effects") or {}).get(what, ""))]
            for e in site.settings_history() for what, v in e["changes"].items() if isinstance(v, dict)]
    if not rows:
        return ""
    return "<h3>Settings changes</h3>" + _table(["changed (UTC)", "setting", "from", "to", "takes effect"], rows,
                                                id_="settings")


def build_report(site: Site, since_utc: float | None = None, top_n: int = 6, now: float | None = None) -> str:
    """The HTML report of a site (see the module docstring)."""
    cfg = site.config()
    current = site.calibration()  # SiteError when uncalibrated
    df, alarms = data.read_log(site, since_utc)
    alarms, novel = data.split_novel(alarms)
    recs, bad = data.read_calibrations(site)
    recs.setdefault(current["id"], current)
    cids = df["calibration_id"].to_numpy()
    changes = data.calibration_changes(df)
    refused = data.refused_recalibrations(recs)

    patch_s = record_patch_seconds(current)
    spans = data.uncertain_spans(df, patch_s)
    timeline = _img(charts.timeline_png(df, alarms, changes, refused, spans), "anomaly score over time with the "
                    "threshold, calibration changes and alarms", "timeline")
    drift_rows, _ = data.drift_table(df, recs, alarms)
    period_s = float(df["t_utc"].iloc[-1] - df["t_utc"].iloc[0]) + patch_s
    dev_table, gaps = data.devices(df, data.score_log_path(site), since_utc, now)
    v = data.verdict(data.ReportFacts(df, alarms, current, drift_rows, period_s, cfg.machine,
                                      extra={"novel_states": novel, "devices": dev_table}))
    bin_s = (df["t_utc"].iloc[-1] - df["t_utc"].iloc[0]) / data.MAX_POINTS
    tl_note = (f"<p class='note'>{len(df):,} patches"
               + (f", drawn as the maximum (and median) per {data.dur(bin_s)} bin" if len(df) > data.MAX_POINTS else "")
               + f"; {len(changes)} calibration change(s) in the period. Gaps are times nothing was monitored."
               + (f" Shaded: {sum(p for _, _, p in spans):,} patches whose times are uncertain (from files' "
                  "modification times)." if spans else "") + "</p>")
    used = [c for c in dict.fromkeys(cids.tolist()) if c in recs]
    base_rec = recs.get(used[-1]) if used else current
    sample = np.asarray(base_rec.get("baseline", {}).get("score_sample") or [], float)
    hist = _img(charts.histogram_png(df["score"].to_numpy(float), sample, df["threshold"].unique().tolist()),
                "histogram of this period's scores against the calibration baseline", "histogram")
    hist_note = (f"<p class='note'>Baseline: the held-in scores of calibration {_e(base_rec.get('id'))} (the latest "
                 "used in the period). Log scales; a fault shows as a second hump or a long tail right of the "
                 "threshold.</p>")
    patches = data.analyse_patches(site, df, top_n, recs, data.score_log_path(site))
    period = ("everything logged" if since_utc is None else f"since {data.iso(since_utc)} UTC")
    made = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    title = f"humwatch report: {site.name}"
    body = [
        f"<header><h1>{_e(title)}</h1><div class='sub'>{_e(cfg.machine or 'machine not described')} · "
        f"{_e(period)} · made {_e(made)} UTC by humwatch {_e(__version__)}</div></header><main>",
        _verdict_section(v),
        _section("summary", "At a glance", _summary(df, alarms, current)),
        _section("timeline", "Score timeline", timeline + tl_note),
        _alarm_section(alarms, df),
        _novel_section(novel),
        _fault_section(site, df, alarms),
        _devices_section(dev_table, gaps),
        _section("histogram", "Score distribution", hist + hist_note),
        _drift_section(df, recs, alarms),
        _patch_section(patches, top_n, cfg.machine),
        _calibration_section(site, current, recs, bad),
        _site_section(site, cfg, current),
        "</main>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write_report(site: Site, out: str | Path, since_utc: float | None = None, top_n: int = 6) -> Path:
    """Build the report and write it atomically."""
    return write_text(out, build_report(site, since_utc, top_n))
