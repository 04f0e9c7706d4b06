"""``humwatch report``: one self-contained HTML page about a site's monitoring, and exports of its score log.

The page (no network, no script: every plot is an inline PNG ``data:`` URI, and a Content-Security-Policy forbids
loading anything else) holds:

* a score timeline with the threshold of each monitoring run, calibration changes and alarms;
* the alarm table;
* a histogram of the period's scores against the calibration baseline;
* drift indicators: 50/90/99 % score quantiles per week (per day, hour or 10 min on shorter spans) against the
  baseline's, and the share of patches over the threshold against the certificate's exceedance;
* the top-N most anomalous patches (at most one per ``PATCH_SPACING_S``), each re-read from its source file and run
  through the site's model: input log-mel, reconstruction, squared-error map and per-band error against the
  calibration's mean band error, naming the bands that deviated most;
* the current calibration certificate, its findings, and the site's calibration history.

Every user-supplied string (site settings, file names, alarm contents, calibration records) is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import math
import re
import time
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import numpy as np

from anomaly import __version__
from anomaly.errors import HumwatchError
from calibration.errors import ReportError, SiteError
from calibration.store import Site

MAX_POINTS = 5000  # timeline points (per-bin max beyond this)
PATCH_SPACING_S = 10.0  # top patches: at most one per this many seconds
MAX_ALARM_ROWS = 300
FORMATS = ("html", "csv", "parquet")
DPI = 100

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhmw])\s*$", re.IGNORECASE)
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# -- arguments ---------------------------------------------------------------------------------------------------------
def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``7d``, ``12h``, ``90m``, ``2w`` before ``now``, or an ISO date/time (UTC unless it says otherwise) → epoch
    seconds; None or "" → None (everything)."""
    if text is None or not text.strip():
        return None
    m = _REL.match(text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"--since must be like 7d, 12h, 90m or an ISO date such as 2026-11-20 or "
                          f"2026-11-20T08:00:00Z, got {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


_SUFFIX_FORMAT = {".html": "html", ".htm": "html", ".csv": "csv", ".parquet": "parquet"}


def format_for(out: str | Path, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else from the file suffix (``.csv``, ``.parquet``), else html.
    A known suffix that contradicts ``fmt`` (``--format csv --out r.html``) is refused."""
    implied = _SUFFIX_FORMAT.get(Path(out).suffix.lower())
    if fmt is None:
        return implied or "html"
    f = fmt.lower().strip()
    if f not in FORMATS:
        raise ReportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if implied and implied != f:
        raise ReportError(f"--format {f} does not match the file name {Path(out).name} (a .{implied} name)")
    return f


# -- reading the log ---------------------------------------------------------------------------------------------------
def _iso(t: float, seconds: bool = True) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def score_log_path(site: Site) -> Path:
    return site.dir / "scores.sqlite"


def _log_or_raise(site: Site) -> Path:
    path = score_log_path(site)
    if not path.is_file():
        raise SiteError(f"site {site.name!r} has no scores logged yet: run `humwatch monitor --site {site.name} "
                        "--from AUDIO` (or --mic) first")
    return path


def _log_extent(path: Path) -> tuple[int, float | None, float | None]:
    from calibration.scorelog import connect

    con = connect(path, readonly=True)
    try:
        n, t0, t1 = con.execute("SELECT count(*), min(t_utc), max(t_utc) FROM scores").fetchone()
    finally:
        con.close()
    return int(n), t0, t1


def read_log(site: Site, since_utc: float | None = None, bands: bool = False):
    """The site's scores (and alarms) since ``since_utc``; SiteError/ReportError when there are none."""
    import sqlite3

    import pandas as pd

    from calibration.scorelog import read_alarms, read_scores

    path = _log_or_raise(site)
    try:
        df = read_scores(path, since_utc, bands=bands, classes=True)
        alarms = read_alarms(path, since_utc)
        n, t0, t1 = _log_extent(path) if df.empty else (len(df), None, None)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as e:
        why = str(e).rsplit("': ", 1)[-1] or type(e).__name__  # pandas prefixes the whole SQL query
        raise SiteError(f"{path}: cannot read the score log ({why}); was it written by another humwatch version, or "
                        "damaged?") from None
    if df.empty:
        if n == 0:
            raise SiteError(f"site {site.name!r} has no scores logged yet: run `humwatch monitor --site {site.name} "
                            "--from AUDIO` (or --mic) first")
        raise ReportError(f"no scores since {_iso(since_utc)} UTC; the log of {site.name!r} holds {n} scores from "
                          f"{_iso(t0)} to {_iso(t1)} UTC (use an earlier --since)")
    return df, alarms


def _logged_bands(path: Path, rows: list[tuple[float, float]]) -> list[np.ndarray | None]:
    """The per-band errors logged for the patches at (t_utc, score) (reading only those rows' blobs)."""
    from calibration.scorelog import connect

    con = connect(path, readonly=True)
    out: list[np.ndarray | None] = []
    try:
        for t, s in rows:
            r = con.execute("SELECT bands FROM scores WHERE t_utc = ? AND score = ? AND bands IS NOT NULL LIMIT 1",
                            (t, s)).fetchone()
            out.append(np.frombuffer(r[0], "<f2").astype(float) if r else None)
    finally:
        con.close()
    return out


# -- exports -----------------------------------------------------------------------------------------------------------
def export_log(site: Site, out: str | Path, fmt: str | None = None, since_utc: float | None = None,
               bands: bool | None = None) -> tuple[Path, int]:
    """Write the score log as CSV or Parquet (atomically). Per-band errors go into Parquet (``band_00`` …), not
    into CSV unless ``bands=True`` (64 more columns). Returns (path, rows)."""
    from anomaly.atomic import atomic_path

    out = Path(out)
    fmt = format_for(out, fmt)
    if fmt == "html":
        raise ReportError("export_log writes csv or parquet; use write_report for html")
    site.config()
    want = (fmt == "parquet") if bands is None else bands
    df, _ = read_log(site, since_utc, bands=want)
    with atomic_path(out, suffix=out.suffix or f".{fmt}") as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return out, len(df)


# -- plotting helpers ----------------------------------------------------------------------------------------------
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}


def _figure(w: float, h: float, layout: str | None = "constrained"):
    """A matplotlib Figure without pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout=layout)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str, id_: str | None = None, cls: str = "plot") -> str:
    idattr = f' id="{escape(id_)}"' if id_ else ""
    return f'<img{idattr} class="{escape(cls)}" alt="{escape(alt)}" src="{uri}">'


def _plain_log(axis) -> None:
    """Tick labels like 0.5, 1, 2, 5, 10 on a log axis (not 10^0, 2×10^0)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _finish_time_chart(fig, ax, ylabel: str, legend_cols: int) -> str:
    """Finish a chart over UTC time (labels, date ticks, grid, legend) and render it."""
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    _date_axis(ax)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=7, ncols=legend_cols, framealpha=0.85)
    return _png(fig)


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=UTC))


def _days(t: np.ndarray) -> np.ndarray:
    """Epoch seconds → matplotlib date numbers (days since 1970-01-01)."""
    return np.asarray(t, float) / 86400.0


def _break_gaps(x: np.ndarray, ys: list[np.ndarray], gap: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Insert NaN where consecutive x differ by more than ``gap`` so lines do not bridge monitoring pauses."""
    if x.size < 2:
        return x, ys
    cut = np.flatnonzero(np.diff(x) > gap) + 1
    if cut.size == 0:
        return x, ys
    xn = np.insert(x, cut, np.nan)
    return xn, [np.insert(np.asarray(y, float), cut, np.nan) for y in ys]


def timeline_series(t: np.ndarray, score: np.ndarray, thr: np.ndarray, patch_s: float = 0.96,
                    max_points: int = MAX_POINTS) -> dict:
    """Timeline data, downsampled to at most ``max_points`` time bins (per-bin max and median score, max
    threshold); lines are broken over gaps."""
    t, score, thr = (np.asarray(a, float) for a in (t, score, thr))
    if t.size <= max_points:
        x, (smax, thr_b) = _break_gaps(t, [score, thr], max(5 * patch_s, 1.0))
        return {"t": x, "max": smax, "median": None, "threshold": thr_b, "bin_s": None}
    t0, t1 = float(t[0]), float(t[-1])
    width = (t1 - t0) / max_points
    idx = np.minimum(((t - t0) / width).astype(np.int64), max_points - 1)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    ends = np.r_[starts[1:], t.size]
    smax = np.maximum.reduceat(score, starts)
    tmax = np.maximum.reduceat(thr, starts)
    med = np.array([np.median(score[a:b]) for a, b in zip(starts, ends, strict=True)])
    x = t0 + (idx[starts] + 0.5) * width
    x, (smax, med, tmax) = _break_gaps(x, [smax, med, tmax], max(3 * width, 5 * patch_s))
    return {"t": x, "max": smax, "median": med, "threshold": tmax, "bin_s": width}


def _timeline_png(df, alarms, changes: list[tuple[float, str]], refused: list[tuple[float, str]]) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _figure(12, 3.8)
        ax = fig.add_subplot()
        ser = timeline_series(df["t_utc"].to_numpy(), df["score"].to_numpy(), df["threshold"].to_numpy())
        x = _days(ser["t"])
        if ser["median"] is not None:
            ax.plot(x, ser["max"], color="#4a7fb5", lw=0.7, label=f"score (max per {_dur(ser['bin_s'])} bin)")
            ax.plot(x, ser["median"], color="#1f3b57", lw=0.9, label="score (median per bin)")
        else:
            ax.plot(x, ser["max"], color="#4a7fb5", lw=0.7, label="score per patch")
        over = ser["max"] > ser["threshold"]
        ax.scatter(x[over], ser["max"][over], s=4, color="#d62728", zorder=3, label="over the threshold")
        ax.plot(x, ser["threshold"], color="#ff7f0e", lw=1.4, drawstyle="steps-post", label="threshold")
        lo, hi = float(np.nanmin(df["t_utc"])), float(np.nanmax(df["t_utc"]))
        first = True
        for t, cid in changes:
            ax.axvline(_days([t])[0], color="#2ca02c", lw=1.2, ls="--",
                       label="calibration change" if first else None)
            ax.annotate(cid[:15].replace("$", r"\$"), (_days([t])[0], 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, color="#2ca02c", ha="right", va="top")
            first = False
        first = True
        for t, _cid in refused:
            if lo <= t <= hi:
                ax.axvline(_days([t])[0], color="#999999", lw=1.0, ls=":",
                           label="recalibration refused" if first else None)
                first = False
        if len(alarms):
            ax.scatter(_days(alarms["t_utc"].to_numpy()), alarms["score"].to_numpy(), marker="v", s=46,
                       color="#b30000", edgecolor="white", lw=0.6, zorder=4, label="alarm")
        top = float(np.nanmax(df["score"]))
        if top > 8 * float(np.nanmedian(df["threshold"])):
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
        return _finish_time_chart(fig, ax, "anomaly score", legend_cols=4)


def _histogram_png(scores: np.ndarray, baseline: np.ndarray, thresholds: list[float]) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _figure(7, 3.4)
        ax = fig.add_subplot()
        allv = np.concatenate([scores, baseline]) if baseline.size else scores
        pos = allv[allv > 0]
        log_x = pos.size == allv.size and pos.size > 0 and pos.max() / pos.min() > 20
        bins = (np.geomspace(pos.min(), pos.max(), 80) if log_x else
                np.linspace(float(allv.min()), float(allv.max()) + 1e-12, 80))
        if baseline.size:
            ax.hist(baseline, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color="#2ca02c",
                    label=f"calibration baseline ({baseline.size} patches)")
        ax.hist(scores, bins=bins, density=True, histtype="step", lw=1.4, color="#1f77b4",
                label=f"this period ({scores.size} patches)")
        for i, th in enumerate(sorted(set(round(x, 9) for x in thresholds))):
            ax.axvline(th, color="#ff7f0e", lw=1.3, label="threshold" if i == 0 else None)
        if log_x:
            ax.set_xscale("log")
            _plain_log(ax.xaxis)
        ax.set_yscale("log")
        ax.set_xlabel("anomaly score")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.25)
        return _png(fig)


# -- drift -----------------------------------------------------------------------------------------------------------
QUANTILES = (0.5, 0.9, 0.99)


def drift_period(span_s: float) -> tuple[str, str]:
    """(pandas floor key, label): weekly from 2 weeks on, daily from 2 days, hourly from 6 h, else 10 min."""
    if span_s >= 14 * 86400:
        return "W", "week"
    if span_s >= 2 * 86400:
        return "D", "day"
    if span_s >= 6 * 3600:
        return "h", "hour"
    return "10min", "10 min"


def drift_table(df, calibrations: dict[str, dict], alarms=None):
    """Per period: patches, score quantiles, the baseline's quantiles (of the calibration in force for most of the
    period), the share over the threshold and the certificate's expected exceedance, alarms."""
    import pandas as pd

    key, label = drift_period(float(df["t_utc"].iloc[-1] - df["t_utc"].iloc[0]))
    tm = df["time"]
    if key == "W":
        start = tm.dt.normalize() - pd.to_timedelta(tm.dt.weekday, unit="D")
    else:
        start = tm.dt.floor(key)
    g = df.assign(_start=start).groupby("_start", sort=True)
    q = g["score"].quantile(list(QUANTILES)).unstack()
    rows = pd.DataFrame({"patches": g.size(), "over": g["over"].mean(),
                         "calibration_id": g["calibration_id"].agg(lambda s: s.value_counts().index[0])})
    for p in QUANTILES:
        rows[f"q{round(p * 100)}"] = q[p]
    base_q = {}
    for cid, rec in calibrations.items():
        sample = np.asarray(rec.get("baseline", {}).get("score_sample") or [], float)
        base_q[cid] = {p: (float(np.quantile(sample, p)) if sample.size else np.nan) for p in QUANTILES}
        base_q[cid]["exceedance"] = rec.get("threshold", {}).get("exceedance", np.nan)
    for p in QUANTILES:
        rows[f"base_q{round(p * 100)}"] = [base_q.get(c, {}).get(p, np.nan) for c in rows["calibration_id"]]
    rows["expected_over"] = [base_q.get(c, {}).get("exceedance", np.nan) for c in rows["calibration_id"]]
    if alarms is not None and len(alarms):
        at = alarms["time"]
        astart = (at.dt.normalize() - pd.to_timedelta(at.dt.weekday, unit="D")) if key == "W" else at.dt.floor(key)
        rows["alarms"] = astart.value_counts().reindex(rows.index, fill_value=0).astype(int)
    else:
        rows["alarms"] = 0
    rows.index.name = "start"
    return rows, label


def _drift_png(rows, label: str) -> str:
    import matplotlib as mpl

    colors = {0.5: "#1f77b4", 0.9: "#9467bd", 0.99: "#d62728"}
    with mpl.rc_context(_RC):
        fig = _figure(12, 3.2)
        ax = fig.add_subplot()
        x = _days(np.array([t.timestamp() for t in rows.index]))
        width = np.diff(x).min() if x.size > 1 else {"week": 7, "day": 1, "hour": 1 / 24}.get(label, 1 / 144)
        xc = x + width / 2
        for p in QUANTILES:
            n = round(p * 100)
            ax.plot(xc, rows[f"q{n}"], marker="o", ms=4, color=colors[p], label=f"{n} % of this {label}")
            ax.hlines(rows[f"base_q{n}"], x, x + width, colors=colors[p], linestyles="--", lw=1.1,
                      label=f"{n} % baseline")
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_ylabel("anomaly score quantile")
        ax.set_xlim(x[0] - 0.02 * width, x[-1] + 1.02 * width)
        _date_axis(ax)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, ncols=3, loc="upper left")
        return _png(fig)


# -- top patches ---------------------------------------------------------------------------------------------------
def top_patches(df, n: int, spacing_s: float = PATCH_SPACING_S):
    """The ``n`` highest-scoring rows, at most one per ``spacing_s`` neighbourhood."""
    if n <= 0 or df.empty:
        return df.iloc[:0]
    order = np.argsort(-df["score"].to_numpy(), kind="stable")
    t = df["t_utc"].to_numpy()
    picked: list[int] = []
    for i in order:
        if all(abs(t[i] - t[j]) > spacing_s for j in picked):
            picked.append(int(i))
            if len(picked) == n:
                break
    return df.iloc[picked]


def band_hint(center_hz: float) -> str:
    """What a band's deviation typically means (the simulator's and common machine fault signatures)."""
    if center_hz < 300:
        return "low band: hum, shaft or structure-borne rumble"
    if center_hz < 1000:
        return "mid band: blade-pass and flow tones"
    if center_hz < 2500:
        return "upper-mid band: valve clicks, impacts"
    if center_hz < 4000:
        return "bearing-resonance-like band (impacts ring near 3 kHz)"
    return "cavitation/arc-like high band"


def _khz(f: float) -> str:
    return f"{f / 1000:.1f}" if f >= 1000 else f"{f / 1000:.2f}"


def top_bands(bands: np.ndarray, baseline: np.ndarray | None, params, k: int = 3) -> list[dict]:
    """The ``k`` bands with the largest error ratio to the baseline (plain error without a baseline)."""
    from anomaly.features.functional import mel_band_edges

    edges = mel_band_edges(params)
    ref = baseline if baseline is not None and baseline.size == bands.size else np.ones_like(bands)
    ratio = bands / np.maximum(ref, 1e-9)
    order = [i for i in np.argsort(-np.nan_to_num(ratio, nan=-np.inf)) if np.isfinite(ratio[i])][:k]
    out = []
    for i in order:
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        out.append({"band": int(i), "lo_hz": float(lo), "center_hz": float(c), "hi_hz": float(hi),
                    "ratio": float(ratio[i]), "error": float(bands[i]),
                    "label": f"{_khz(lo)}–{_khz(hi)} kHz", "hint": band_hint(c)})
    return out


def band_groups(top: list[dict]) -> list[dict]:
    """``top_bands`` merged into ranges of adjacent bands (largest ratio first), for a readable caption:
    three neighbouring bands at 6.4-7.5 kHz read as one region, not three."""
    runs: list[list[dict]] = []
    for d in sorted(top, key=lambda d: d["band"]):
        if runs and d["band"] == runs[-1][-1]["band"] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    out = []
    for r in runs:
        best = max(r, key=lambda d: d["ratio"])
        lo, hi = r[0]["lo_hz"], r[-1]["hi_hz"]
        ratios = sorted(d["ratio"] for d in r)
        out.append({"label": f"{_khz(lo)}–{_khz(hi)} kHz", "hint": best["hint"], "bands": len(r),
                    "ratio": (f"×{ratios[0]:.1f}" if len(r) == 1 else f"×{ratios[0]:.1f}–{ratios[-1]:.1f}"),
                    "max_ratio": best["ratio"]})
    return sorted(out, key=lambda g: -g["max_ratio"])


def _resolve_audio(file: str | None, site: Site) -> Path | None:
    """The patch's source file if it still exists. The monitor logs paths as it was given them, so a relative path is
    tried against the working directory, then against each directory above the site (the monitor usually ran from
    one of them: ``demo-out/audio/...`` from the directory holding ``demo-out/sites/...``)."""
    if not file:
        return None
    p = Path(file)
    if p.is_absolute():
        cands = [p]
    else:
        cands = [Path.cwd() / p] + [a / p for a in site.dir.resolve().parents]
    for c in cands:
        try:
            if c.is_file():
                return c
        except OSError:
            continue
    return None


def read_patch(path: Path, offset_s: float, params, offsets=None) -> np.ndarray:
    """The log-mel patch ``[patch_frames, n_mels]`` starting ``offset_s`` into ``path`` (as the monitor made it)."""
    import soundfile as sf
    from scipy import signal

    from anomaly.errors import AudioError
    from anomaly.features import log_mel

    need = params.min_samples
    try:
        info = sf.info(str(path))
        sr = int(info.samplerate)
        if sr == params.sample_rate:
            x = sf.read(str(path), frames=need, start=int(round(offset_s * sr)), dtype="float32", always_2d=True)[0]
            x = x.mean(axis=1)
        else:
            pad = int(0.05 * sr)
            a = max(0, int(round(offset_s * sr)) - pad)
            n_in = int(math.ceil(need * sr / params.sample_rate)) + 2 * pad
            x = sf.read(str(path), frames=n_in, start=a, dtype="float32", always_2d=True)[0].mean(axis=1)
            g = math.gcd(sr, params.sample_rate)
            y = signal.resample_poly(x, params.sample_rate // g, sr // g).astype(np.float32)
            skip = int(round((offset_s * sr - a) * params.sample_rate / sr))
            x = y[skip: skip + need]
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"{path}: cannot re-read the patch ({e})") from None
    if x.size < need:
        raise AudioError(f"{path}: shorter than the logged offset {offset_s:.2f} s (the file changed)")
    return log_mel(x[:need], params, offsets)[: params.patch_frames]


def _band_ticks(ax, params, axis: str = "y") -> None:
    from anomaly.features import mel_centers

    c = mel_centers(params)
    want = [f for f in (125, 250, 500, 1000, 2000, 4000, 7000) if c[0] * 0.9 <= f <= c[-1] * 1.05]
    pos = [int(np.argmin(np.abs(c - f))) for f in want]
    labels = [f"{f // 1000}k" if f >= 1000 else str(f) for f in want]
    (ax.set_yticks if axis == "y" else ax.set_xticks)(pos, labels)


def _patch_png(x: np.ndarray | None, recon: np.ndarray | None, err: np.ndarray | None, bands: np.ndarray | None,
               baseline: np.ndarray | None, params, top: list[dict]) -> str:
    """Input log-mel, reconstruction and squared-error map (when the audio could be re-read) and the per-band
    error against the calibration's mean band error."""
    import matplotlib as mpl

    panels = []
    if x is not None:
        vmin, vmax = float(np.percentile(x, 1)), float(x.max())
        panels.append((x, "input log-mel", "magma", vmin, vmax))
        if recon is not None and err is not None:
            panels.append((recon, "reconstruction", "magma", vmin, vmax))
            panels.append((err, "squared error (normalised)", "viridis", 0.0, float(err.max()) or 1.0))
    with mpl.rc_context(_RC):
        # A fixed layout: the constrained one takes ~4x longer to draw with six colorbars.
        fig = _figure(12 if panels else 7, 2.9, layout=None)
        gs = fig.add_gridspec(1, len(panels) + 1, width_ratios=[1] * len(panels) + [1.7],
                              left=0.045 if panels else 0.09, right=0.99, bottom=0.17, top=0.9, wspace=0.45)
        ext = [0, params.patch_seconds, -0.5, params.n_mels - 0.5]
        for j, (img, title, cmap, lo, hi) in enumerate(panels):
            ax = fig.add_subplot(gs[0, j])
            im = ax.imshow(img.T, origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi, extent=ext,
                           interpolation="nearest")
            ax.set_title(title)
            ax.set_xlabel("s")
            _band_ticks(ax, params)
            if j == 0:
                ax.set_ylabel("Hz")
            fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
        axb = fig.add_subplot(gs[0, len(panels)])
        if bands is not None and np.isfinite(bands).any():
            idx = np.arange(bands.size)
            hot = {d["band"] for d in top}
            axb.bar(idx, bands, width=0.9, color=["#d62728" if i in hot else "#7f9fbf" for i in idx],
                    label="this patch")
            if baseline is not None and baseline.size == bands.size:
                axb.step(idx, baseline, where="mid", color="#2ca02c", lw=1.3, label="calibration mean")
            axb.set_yscale("log")
            _plain_log(axb.yaxis)
            axb.set_title("per-band error vs calibration")
            axb.set_xlabel("mel band centre (Hz)")
            _band_ticks(axb, params, "x")
            axb.legend(fontsize=7, loc="upper left")
        else:
            axb.text(0.5, 0.5, "no per-band errors: only autoencoder models give them", ha="center", va="center",
                     transform=axb.transAxes)
            axb.set_axis_off()
        return _png(fig)


def analyse_patches(site: Site, df, n: int, calibrations: dict[str, dict], log_path: Path) -> list[dict]:
    """The top-``n`` patches with their images, band errors and notes (what could not be shown, and why)."""
    from anomaly.detectors import AutoencoderDetector
    from anomaly.features import FeatureParams
    from calibration.calibrate import site_detector

    picked = top_patches(df, n)
    if picked.empty:
        return []
    logged = _logged_bands(log_path, list(zip(picked["t_utc"].tolist(), picked["score"].tolist(), strict=True)))
    det = offsets = mh = None
    model_err = None
    try:
        det, offsets, mh = site_detector(site)
    except HumwatchError as e:
        model_err = str(e)
    out = []
    for (_, row), lb in zip(picked.iterrows(), logged, strict=True):
        rec = calibrations.get(row["calibration_id"]) or {}
        base = rec.get("baseline", {}).get("band_error_mean")
        base = np.asarray(base, float) if base else None
        if det is not None:
            params = det.params
        else:
            fp = rec.get("model", {}).get("feature_params")
            params = FeatureParams.from_dict(fp) if fp else FeatureParams()
        file = row["file"] if isinstance(row["file"], str) else None
        notes: list[str] = []
        x = recon = err = None
        path = _resolve_audio(file, site)
        if file is None:
            notes.append("live microphone input (no audio kept): the logged per-band errors only")
        elif path is None:
            notes.append(f"the source file {file} no longer exists (or is not reachable from here): the logged "
                         "per-band errors only")
        elif det is None:
            notes.append(f"the site's model cannot be loaded ({model_err}): the logged per-band errors only")
        else:
            try:
                x = read_patch(path, float(row["offset_s"]), params, offsets)
                if isinstance(det, AutoencoderDetector):
                    recon = det.reconstruct(x[None])[0]
                    err = np.square((recon - x) / det.std_)
                    again = float(det.scorer.of_bands(err.mean(axis=0)[None])[0])  # the model's own score
                else:
                    again = float(det.score_samples(x[None])[0])
                logged_s = float(row["score"])
                if abs(again - logged_s) > 0.05 * abs(logged_s) + 1e-6:
                    notes.append(f"re-scored now: {again:.4g} against {logged_s:.4g} logged, so the file or the model "
                                 "changed since; the images show the file as it is now")
                if row["model_hash"] != mh:
                    notes.append(f"scored with model {row['model_hash']}; the site now uses {mh} (images from the "
                                 "current model)")
            except HumwatchError as e:
                notes.append(f"cannot re-read the patch ({e}): the logged per-band errors only")
                x = recon = err = None
        bands = lb if lb is not None else (err.mean(axis=0) if err is not None else None)
        if bands is not None and not np.isfinite(bands).any():
            bands = None
        top = top_bands(bands, base, params) if bands is not None else []
        if base is None and bands is not None:
            notes.append("the calibration has no per-band baseline: bands ranked by their plain error")
        out.append({"t_utc": float(row["t_utc"]), "score": float(row["score"]), "threshold": float(row["threshold"]),
                    "file": file, "offset_s": float(row["offset_s"]) if row["offset_s"] == row["offset_s"] else None,
                    "calibration_id": row["calibration_id"], "top": top, "notes": notes, "has_maps": x is not None,
                    "png": _patch_png(x, recon, err, bands, base, params, top)})
    return out


# -- HTML ----------------------------------------------------------------------------------------------------------
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
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(x) -> str:
    return escape("" if x is None else str(x), quote=True)


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
    return f"<table{idattr}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(x, spec: str = ".4g") -> str:
    try:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "–"
        return format(x, spec)
    except (TypeError, ValueError):
        return _e(x)


def _dur(seconds: float) -> str:
    """A bin width: 1.4 s, 2 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.2g} s"
    if seconds < 5400:
        return f"{seconds / 60:.2g} min"
    return f"{seconds / 3600:.2g} h"


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def _calibrations(site: Site) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Every readable calibration record by id, and the unreadable ones with the reason."""
    recs, bad = {}, []
    for cid in site.calibration_ids():
        try:
            recs[cid] = site.calibration(cid)
        except SiteError as e:
            bad.append((cid, str(e)))
    return recs, bad


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
    span = float(df["t_utc"].iloc[-1] - df["t_utc"].iloc[0]) + 0.96
    over = float(df["over"].mean())
    expected = current.get("threshold", {}).get("exceedance")
    worst = df.iloc[int(df["score"].to_numpy().argmax())]
    ratio = float(worst["score"] / worst["threshold"]) if worst["threshold"] else float("nan")
    cls = "bad" if len(alarms) else "ok"
    cards = [
        ("period (UTC)", f"{_e(_iso(df['t_utc'].iloc[0], False))} – {_e(_iso(df['t_utc'].iloc[-1], False))}", ""),
        ("patches scored", f"{len(df):,} ({_e(_span(len(df) * 0.96))} of audio in {_e(_span(span))})", ""),
        ("alarms", f"{len(alarms)}", cls),
        ("patches over the threshold", f"{over:.2%}" + (f" (certificate: {expected:.3%})" if expected is not None
                                                         else ""),
         "warn" if expected is not None and over > max(3 * expected, 1e-3) else ""),
        ("highest score", f"{worst['score']:.4g} ({ratio:.1f}× threshold) at {_e(_iso(worst['t_utc']))}",
         "bad" if ratio > 1 else ""),
    ]
    named: dict[str, int] = {}
    for info in alarms["info"] if len(alarms) else []:
        label = fault_label(info) if isinstance(info, dict) else ""
        if label:
            key = label.split(" (", 1)[0].removeprefix("classifier hit: ")
            named[key] = named.get(key, 0) + 1
    if named:
        cards.insert(3, ("likely faults", _e(", ".join(f"{k} ×{v}" for k, v in sorted(named.items(),
                                                                                     key=lambda kv: -kv[1]))), "bad"))
    return '<div class="cards" id="summary">' + "".join(
        f'<div class="card"><span>{_e(k)}</span><b class="{c}">{v}</b></div>' for k, v, c in cards) + "</div>"


def fault_label(info: dict) -> str:
    """Plain-text fault of an alarm: the classifier's likely fault (and its probability), or ''."""
    f = info.get("fault")
    if not isinstance(f, dict):
        return ""
    probs = f.get("probabilities") if isinstance(f.get("probabilities"), dict) else {}
    likely = f.get("likely")
    prefix = "classifier hit: " if info.get("kind") == "classifier" else ""
    if likely:
        p = probs.get(likely)
        if f.get("confident", True) is False:  # named, but under the class's precision threshold
            thr = (f.get("thresholds") or {}).get(likely)
            return (f"{likely}? (p = {p:.2f}" + (f", under its threshold {thr:.2f}" if isinstance(thr, (int, float))
                                                 else "") + ")") if isinstance(p, (int, float)) else f"{likely}?"
        return prefix + str(likely) + (f" (p = {p:.2f})" if isinstance(p, (int, float)) else "")
    faults = [(v, c) for c, v in probs.items() if c != "normal" and isinstance(v, (int, float))]
    if faults:
        v, c = max(faults)
        return f"unknown (no class over its threshold; closest {c}, p = {v:.2f})"
    return "unknown"


def _alarm_section(alarms) -> str:
    if alarms.empty:
        return _section("alarms", "Alarms", '<p id="alarm-table">No alarms in this period.</p>')
    shown = alarms.iloc[-MAX_ALARM_ROWS:]
    rows = []
    for _, a in shown.iterrows():
        info = a["info"] if isinstance(a["info"], dict) else {}
        thr = info.get("threshold")
        try:
            ratio = f"{float(a['score']) / float(thr):.2f}×" if thr else "–"
        except (TypeError, ValueError, ZeroDivisionError):
            ratio = "–"
        tb = info.get("top_bands") or []
        bands = ", ".join(f"{_e(b.get('center_hz'))} Hz ×{_e(b.get('error_ratio'))}" for b in tb
                          if isinstance(b, dict))
        off = info.get("offset_s")
        rows.append([_e(_iso(a["t_utc"])), _e(fault_label(info) or "–"), _fmt(float(a["score"])), _fmt(thr), ratio,
                     _e(info.get("file") or "–"),
                     _fmt(off, ".2f") if isinstance(off, (int, float)) else _e(off if off is not None else "–"),
                     bands or "–", _e(a["calibration_id"])])
    note = (f'<p class="note">{len(alarms)} alarms; the last {MAX_ALARM_ROWS} are listed.</p>'
            if len(alarms) > MAX_ALARM_ROWS else "")
    return _section("alarms", f"Alarms ({len(alarms)})", note + _table(
        ["time (UTC)", "likely fault", "score", "threshold", "score/threshold", "file", "offset (s)",
         "bands deviating most", "calibration"], rows, id_="alarm-table", num={2, 3, 4, 6}))


def _class_columns(df) -> list[str]:
    return [c for c in df.columns if c.startswith("p_") and df[c].notna().any()]


def _fault_png(df, cols: list[str], thresholds: dict[str, float]) -> str:
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _figure(12, 3.0)
        ax = fig.add_subplot()
        colours = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#ff7f0e"]
        t = df["t_utc"].to_numpy()
        for i, c in enumerate(cols):
            ok = df[c].notna().to_numpy()
            ser = timeline_series(t[ok], df[c].to_numpy(float)[ok], np.zeros(int(ok.sum())))
            colour = colours[i % len(colours)]
            ax.plot(_days(ser["t"]), ser["max"], lw=0.8, color=colour, label=c[2:])
            thr = thresholds.get(c[2:])
            if thr is not None:
                ax.axhline(thr, color=colour, lw=0.7, ls=":")
        ax.set_ylim(-0.02, 1.02)
        return _finish_time_chart(fig, ax, "class probability", legend_cols=6)


def _fault_section(site: Site, df, alarms) -> str:
    """Per-class probabilities over time, per-class hit rates and the alarms each class explains."""
    cols = [c for c in _class_columns(df) if c != "p_normal"]
    if not cols:
        return ""
    thresholds: dict[str, float] = {}
    for _, a in alarms.iterrows():  # the thresholds the monitor used, from the alarms that carry them
        f = a["info"].get("fault") if isinstance(a["info"], dict) else None
        if isinstance(f, dict) and isinstance(f.get("thresholds"), dict):
            thresholds.update({k: float(v) for k, v in f["thresholds"].items() if isinstance(v, (int, float))})
    if not thresholds:
        try:
            from calibration.calibrate import site_classifier

            clf, _ = site_classifier(site)
            if clf is not None:
                thresholds = dict(zip(clf.classes, map(float, clf.threshold_array), strict=True))
        except HumwatchError:  # a classifier since detached or changed: the figure does without threshold lines
            thresholds = {}
    named: dict[str, int] = {}
    for _, a in alarms.iterrows():
        f = a["info"].get("fault") if isinstance(a["info"], dict) else None
        if isinstance(f, dict):
            k = f.get("likely") or "unknown"
            named[k] = named.get(k, 0) + 1
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
    img = _img(_fault_png(df, cols, thresholds), "fault-classifier probabilities over time with their thresholds",
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
    rows, label = drift_table(df, calibrations, alarms)
    img = _img(_drift_png(rows, label), f"score quantiles per {label} against the calibration baseline", "drift")
    trs = []
    for start, r in rows.iterrows():
        cells = [_e(start.strftime("%Y-%m-%d" if label in ("week", "day") else "%Y-%m-%d %H:%M")),
                 f"{int(r['patches']):,}"]
        for p in QUANTILES:
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


def _patch_section(items: list[dict], n: int) -> str:
    if not items:
        return ""
    figs = []
    for k, it in enumerate(items, 1):
        ratio = it["score"] / it["threshold"] if it["threshold"] else float("nan")
        bands = "; ".join(f"<b>{_e(g['label'])}</b>: {_e(g['hint'])} (error {g['ratio']} the calibration mean"
                          + (f", {g['bands']} adjacent bands" if g["bands"] > 1 else "") + ")"
                          for g in band_groups(it["top"])) or "–"
        where = (f"{_e(it['file'])} at {_fmt(it['offset_s'], '.2f')} s" if it["file"] else "microphone")
        notes = "".join(f"<div class='note'>{_e(x)}</div>" for x in it["notes"])
        cls = "patch" if it["has_maps"] else "patch patch-bands-only"
        figs.append(
            f'<figure class="patch" id="patch-{k}">'
            f"<figcaption><b>#{k}</b> {_e(_iso(it['t_utc']))} UTC — score {it['score']:.4g} "
            f"({ratio:.2f}× threshold {it['threshold']:.4g}); {where}; calibration {_e(it['calibration_id'])}"
            f"<br>bands deviating most: {bands}{notes}</figcaption>"
            + _img(it["png"], f"patch {k}: input, reconstruction, error map and per-band error", None, cls)
            + "</figure>")
    expl = ("<p class='note'>The highest-scoring patches, at most one per "
            f"{PATCH_SPACING_S:g} s, re-read from their source files and run through the site's model. Left to right: "
            "the input log-mel spectrogram, the autoencoder's reconstruction, the squared reconstruction error "
            "(normalised per band) and the error per mel band against the calibration's mean (red: the three "
            "largest ratios). Typical signatures: cavitation is broadband hiss strongest above 3–4 kHz; "
            "an electric arc a 2–8 kHz buzz that comes and goes; bearing impacts ring a resonance near 3 kHz; a "
            "leaking valve hisses above 2 kHz; looseness and imbalance show at the low end.</p>")
    return _section("patches", f"Top {len(items)} anomalous patches", expl + "".join(figs))


def _calibration_section(site: Site, current: dict, recs: dict, bad: list) -> str:
    from calibration.certificate import certificate_lines

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
    inj = current.get("validation", {}).get("injected")
    if inj:
        sevs = [r["severity"] for r in next(iter(inj.values()))["by_severity"]]
        rows = []
        for fault, v in inj.items():
            low = v.get("lowest_severity_detected")
            rows.append([_e(fault)] + [f"{r['detection_rate']:.0%}" for r in v["by_severity"]]
                        + ["not detected" if low is None else _fmt(low, "g")])
        parts.append("<h3>Injected faults (share of patches over the threshold)</h3>" + _table(
            ["fault"] + [f"severity {s:g}" for s in sevs] + ["lowest detected"], rows, id_="injected",
            num=set(range(1, len(sevs) + 1))))
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
    return _section("calibration", "Calibration certificate and history", "".join(parts))


def build_report(site: Site, since_utc: float | None = None, top_n: int = 6, now: float | None = None) -> str:
    """The HTML report of a site (see the module docstring)."""
    cfg = site.config()
    current = site.calibration()  # SiteError when uncalibrated
    df, alarms = read_log(site, since_utc)
    recs, bad = _calibrations(site)
    recs.setdefault(current["id"], current)
    cids = df["calibration_id"].to_numpy()
    change = np.flatnonzero(cids[1:] != cids[:-1]) + 1
    changes = [(float(df["t_utc"].iloc[i]), str(cids[i])) for i in change]
    refused = []
    for cid, r in recs.items():
        if r.get("status") == "refused" and r.get("created_utc"):
            try:
                refused.append((datetime.strptime(r["created_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                                .timestamp(), cid))
            except ValueError:
                pass

    timeline = _img(_timeline_png(df, alarms, changes, refused), "anomaly score over time with the threshold, "
                    "calibration changes and alarms", "timeline")
    bin_s = (df["t_utc"].iloc[-1] - df["t_utc"].iloc[0]) / MAX_POINTS
    tl_note = (f"<p class='note'>{len(df):,} patches"
               + (f", drawn as the maximum (and median) per {_dur(bin_s)} bin" if len(df) > MAX_POINTS else "")
               + f"; {len(changes)} calibration change(s) in the period. Gaps are times nothing was monitored.</p>")
    used = [c for c in dict.fromkeys(cids.tolist()) if c in recs]
    base_rec = recs.get(used[-1]) if used else current
    sample = np.asarray(base_rec.get("baseline", {}).get("score_sample") or [], float)
    hist = _img(_histogram_png(df["score"].to_numpy(float), sample, df["threshold"].unique().tolist()),
                "histogram of this period's scores against the calibration baseline", "histogram")
    hist_note = (f"<p class='note'>Baseline: the held-in scores of calibration {_e(base_rec.get('id'))} (the latest "
                 "used in the period). Log scales; a fault shows as a second hump or a long tail right of the "
                 "threshold.</p>")
    patches = analyse_patches(site, df, top_n, recs, score_log_path(site))
    period = ("everything logged" if since_utc is None else f"since {_iso(since_utc)} UTC")
    made = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    title = f"humwatch report: {site.name}"
    body = [
        f"<header><h1>{_e(title)}</h1><div class='sub'>{_e(cfg.machine or 'machine not described')} · "
        f"{_e(period)} · made {_e(made)} UTC by humwatch {_e(__version__)}</div></header><main>",
        _section("summary", "At a glance", _summary(df, alarms, current)),
        _section("timeline", "Score timeline", timeline + tl_note),
        _alarm_section(alarms),
        _fault_section(site, df, alarms),
        _section("histogram", "Score distribution", hist + hist_note),
        _drift_section(df, recs, alarms),
        _patch_section(patches, top_n),
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
    from anomaly.atomic import write_text

    return write_text(out, build_report(site, since_utc, top_n))

