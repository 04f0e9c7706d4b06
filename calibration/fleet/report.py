"""``humwatch fleet report``: every site on one self-contained page, ranked by what needs attention, each linking to
its own site report; or (``--format parquet``) the fleet's scores as a Parquet dataset partitioned by site and day.

What needs attention is a list of *signals* (``SIGNALS``): functions of a site's :class:`SiteSummary` that return an
:class:`Attention` (points, level, reason) or None. A site's rank is the sum of its points. The signals today: recent
alarms, drift against the calibration (the share of patches over the threshold against the certificate's predicted
share), silent devices, calibration age and due date, and novel operating states. To add one (e.g. #14's richer
"novel state" events), write a function and append it to ``SIGNALS``; the page shows its reason in the site's row.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from anomaly import __version__
from anomaly.atomic import write_text
from anomaly.errors import HumwatchError, one_line
from calibration.monitoring.scorelog import NOTICE_KINDS, summarize
from calibration.store import SiteStore

RECENT_S = 86400.0  # "recent" alarms: the last 24 h
DEFAULT_WINDOW_S = 7 * 86400.0  # drift and counts over the last week
SILENT_S = 300.0  # a device whose last patch is older than this is silent
DRIFT_WATCH, DRIFT_ACT = 2.0, 5.0  # share over the threshold vs the certificate's prediction (at most 100 points:
# a recent alarm, 110 and more, always ranks above drift alone)


@dataclass
class SiteSummary:
    name: str
    machine: str = ""
    error: str = ""  # a site that cannot be read: its one-line error
    calibration_id: str | None = None
    calibration_age_days: float | None = None
    due: bool = False  # calibrate.is_due
    recalibration_days: int = 30
    predicted_exceedance: float | None = None
    threshold: float | None = None
    log: dict = field(default_factory=dict)  # calibration.monitoring.scorelog.summarize
    now: float = 0.0
    report_href: str | None = None


@dataclass(frozen=True)
class Attention:
    points: float
    level: str  # "act" | "watch" | "note"
    reason: str


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def alarms_signal(s: SiteSummary) -> Attention | None:
    recent, week = s.log.get("recent_alarms", 0), s.log.get("alarms", 0)
    if recent:
        return Attention(100 + 10 * min(recent, 10), "act", f"{_plural(recent, 'alarm')} in the last 24 h")
    if week:
        return Attention(20 + min(week, 10), "watch", f"{_plural(week, 'alarm')} this week, none in the last 24 h")
    return None


def drift_signal(s: SiteSummary) -> Attention | None:
    share, pred = s.log.get("over_share"), s.predicted_exceedance
    if share is None or not pred or s.log.get("patches", 0) < 100:
        return None
    ratio = share / pred
    if ratio >= DRIFT_WATCH:
        level = "act" if ratio >= DRIFT_ACT else "watch"
        return Attention(10 * min(ratio, 10), level, f"drift: {share:.2%} of patches over the threshold, "
                                                     f"{ratio:.1f}× the certificate's {pred:.2%}")
    return None


def silent_signal(s: SiteSummary) -> Attention | None:
    devices = s.log.get("devices") or {}
    silent = {d: s.now - t for d, t in devices.items() if s.now - t > SILENT_S}
    if silent:
        worst = max(silent.values())
        return Attention(30 + min(len(silent), 10), "watch", f"{_plural(len(silent), 'silent device')} ("
                         + ", ".join(sorted(silent)[:5]) + ("…" if len(silent) > 5 else "")
                         + f"; longest {worst / 3600:.1f} h)")
    if not devices and s.log.get("last_t") and s.now - s.log["last_t"] > RECENT_S:
        return Attention(15, "watch", f"no score for {(s.now - s.log['last_t']) / 86400:.1f} days")
    return None


def calibration_signal(s: SiteSummary) -> Attention | None:
    if s.calibration_id is None:
        return Attention(40, "watch", "not calibrated")
    age = s.calibration_age_days or 0.0
    if s.due:
        return Attention(10 + min(age - s.recalibration_days, 30), "watch",
                         f"recalibration due: calibrated {age:.0f} days ago (interval {s.recalibration_days} d)")
    return None


def novel_state_signal(s: SiteSummary) -> Attention | None:
    """Novel operating states (#14 logs them as events of kind scorelog.NOVEL_STATE; counted from the alarm kinds)."""
    n = sum(v for k, v in (s.log.get("alarm_kinds") or {}).items() if k in NOTICE_KINDS)
    return Attention(25 + min(n, 10), "watch", f"{_plural(n, 'novel operating state')} this week") if n else None


def error_signal(s: SiteSummary) -> Attention | None:
    return Attention(200, "act", f"cannot be read: {s.error}") if s.error else None


SIGNALS: list[Callable[[SiteSummary], Attention | None]] = [
    error_signal, alarms_signal, drift_signal, silent_signal, calibration_signal, novel_state_signal]


def attention(s: SiteSummary) -> list[Attention]:
    return sorted((a for f in SIGNALS if (a := f(s)) is not None), key=lambda a: -a.points)


def summarize_site(store: SiteStore, name: str, now: float, window_s: float = DEFAULT_WINDOW_S) -> SiteSummary:
    from calibration.calibrate import calibration_age_days, is_due

    s = SiteSummary(name, now=now)
    try:
        site = store.site(name)
        cfg = site.config()
        s.machine, s.recalibration_days = cfg.machine, cfg.recalibration_days
        if site.current_id():
            cur = site.calibration()
            s.calibration_id = cur["id"]
            at = datetime.fromtimestamp(now, UTC)
            s.calibration_age_days, s.due = calibration_age_days(cur, at), is_due(cfg, cur, at)
            s.predicted_exceedance = cur.get("threshold", {}).get("exceedance")
            s.threshold = cur.get("threshold", {}).get("threshold")
        s.log = summarize(site.dir / "scores.sqlite", now - window_s, now - RECENT_S)
    except HumwatchError as e:
        s.error = one_line(e)
    except Exception as e:  # noqa: BLE001 - one damaged site must not hide the fleet
        s.error = f"{type(e).__name__}: {one_line(e)}"
    return s


def fleet_summaries(store: SiteStore, now: float | None = None, window_s: float = DEFAULT_WINDOW_S):
    """Every site's summary and its attention list, most urgent first."""
    now = time.time() if now is None else now
    rows = [(s, attention(s)) for s in (summarize_site(store, n, now, window_s) for n in store.names())]
    rows.sort(key=lambda r: (-sum(a.points for a in r[1]), r[0].name))
    return rows


# -- the page ------------------------------------------------------------------------------------------------------
_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
header{background:#1d2329;color:#fff;padding:14px 24px}h1{margin:0;font-size:20px}.sub{opacity:.8}
main{padding:16px 24px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:6px 8px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef0f3;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.act{border-left:6px solid #c62828}.watch{border-left:6px solid #f9a825}.ok{border-left:6px solid #2e7d32}
.lvl{font-weight:600;text-transform:uppercase;font-size:12px}.reasons{margin:0;padding-left:16px}
.cards{display:flex;gap:12px;margin-bottom:14px;flex-wrap:wrap}.card{background:#fff;padding:10px 14px;
border-radius:6px;min-width:120px}.card b{font-size:22px;display:block}
@media (max-width:700px){td:nth-child(n+5),th:nth-child(n+5){display:none}main{padding:8px}}"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _age(days: float | None) -> str:
    return "–" if days is None else (f"{days:.0f} d" if days >= 1 else f"{days * 24:.0f} h")


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    d = now - t
    return "just now" if d < 60 else (f"{d / 60:.0f} min ago" if d < 3600 else
                                      (f"{d / 3600:.1f} h ago" if d < 86400 else f"{d / 86400:.1f} d ago"))


def build_page(rows, now: float, window_s: float = DEFAULT_WINDOW_S) -> str:
    levels = [(a[0].level if a else "ok") for _, a in rows]
    cards = "".join(f"<div class='card {lvl}'><b>{levels.count(lvl)}</b>{label}</div>" for lvl, label in
                    (("act", "act now"), ("watch", "watch"), ("ok", "all normal")))
    body = []
    for s, att in rows:
        lvl = att[0].level if att else "ok"
        name = (f"<a href='{_e(s.report_href)}'>{_e(s.name)}</a>" if s.report_href else _e(s.name))
        reasons = ("<ul class='reasons'>" + "".join(f"<li>{_e(a.reason)}</li>" for a in att) + "</ul>") if att else \
            "all normal"
        log = s.log or {}
        share = log.get("over_share")
        body.append(
            f"<tr class='{lvl}' id='site-{_e(s.name)}'><td><span class='lvl'>{_e(lvl)}</span></td><td>{name}<br>"
            f"<small>{_e(s.machine or '')}</small></td><td>{reasons}</td>"
            f"<td class='num'>{log.get('recent_alarms', 0)} / {log.get('alarms', 0)}</td>"
            f"<td class='num'>{'–' if share is None else f'{share:.2%}'}"
            f"{'' if not s.predicted_exceedance else f' <small>(cert. {s.predicted_exceedance:.2%})</small>'}</td>"
            f"<td class='num'>{len(log.get('devices') or {})}</td><td>{_e(_when(log.get('last_t'), now))}</td>"
            f"<td class='num'>{_e(_age(s.calibration_age_days))} <small>/ {s.recalibration_days} d</small></td>"
            f"<td class='num'>{log.get('patches', 0):,}</td></tr>")
    made = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    head = ("<tr><th>status</th><th>site</th><th>needs attention because</th><th>alarms 24 h / "
            f"{window_s / 86400:.0f} d</th><th>over the threshold</th><th>devices</th><th>last score</th>"
            "<th>calibration age</th><th>patches</th></tr>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>humwatch fleet</title>"
            f"<style>{_CSS}</style></head><body><header><h1>humwatch fleet: {len(rows)} sites</h1><div class='sub'>"
            f"ranked by what needs attention · counts over the last {window_s / 86400:.0f} days · made {made} UTC by "
            f"humwatch {_e(__version__)}</div></header><main><div class='cards'>{cards}</div>"
            f"<table id='fleet-table'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table></main></body>"
            "</html>\n")


def site_report_task(root: str, name: str, opts) -> str:
    """A fleet task: one site's HTML report into the directory named by the option ``dir``."""
    from calibration.report import write_report

    site = SiteStore(root).site(name)
    out = Path(opts.get("dir")) / f"{name}.html"
    write_report(site, out, opts.get("since"))
    return f"report {out}"


def write_fleet_report(store: SiteStore, out: Path, window_s: float = DEFAULT_WINDOW_S, hrefs: dict | None = None,
                       now: float | None = None) -> tuple[Path, list]:
    now = time.time() if now is None else now
    rows = fleet_summaries(store, now, window_s)
    for s, _ in rows:
        s.report_href = (hrefs or {}).get(s.name)
    return write_text(out, build_page(rows, now, window_s)), rows


# -- Parquet -------------------------------------------------------------------------------------------------------
COLUMNS = ("t_utc", "time", "score", "over", "threshold", "calibration_id", "model_hash", "device", "seq", "file",
           "offset_s")
_TYPES = {"t_utc": "float64", "score": "float64", "over": "bool", "threshold": "float64", "calibration_id": "string",
          "model_hash": "string", "device": "string", "seq": "int64", "file": "string", "offset_s": "float64"}


def write_parquet(store: SiteStore, out: Path, since_utc: float | None = None) -> tuple[Path, int]:
    """The fleet's scores as a Parquet dataset ``out/site=<name>/day=<YYYY-MM-DD>/part-0.parquet`` (Hive
    partitioning: ``pandas.read_parquet(out)``, DuckDB ``read_parquet('out/**/*.parquet', hive_partitioning=1)``,
    Spark ``spark.read.parquet(out)``). Written beside ``out`` and renamed into place as a whole."""
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.dataset as ds

    from calibration.monitoring.scorelog import read_scores

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    rows = 0
    try:
        for name in store.names():
            path = store.site(name).dir / "scores.sqlite"
            if not path.exists():
                continue
            df = read_scores(path, since_utc)
            if df.empty:
                continue
            day = df["time"].dt.strftime("%Y-%m-%d")
            df = df[[c for c in COLUMNS if c != "time"]].copy()
            df["over"] = df["over"].astype(bool)
            df["seq"] = df["seq"].astype("Int64")
            schema = pa.schema([(c, pa.type_for_alias(_TYPES[c])) for c in df.columns])
            table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
            us = pa.array((df["t_utc"].to_numpy() * 1e6).round().astype("int64")).cast(pa.timestamp("us", "UTC"))
            table = (table.add_column(1, "time", us).append_column("site", pa.array([name] * len(df)))
                     .append_column("day", pa.array(day.to_numpy(dtype=str))))
            ds.write_dataset(table, tmp, format="parquet",
                             partitioning=["site", "day"], partitioning_flavor="hive",
                             basename_template="part-{i}.parquet", existing_data_behavior="overwrite_or_ignore")
            rows += len(df)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time())}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, rows
