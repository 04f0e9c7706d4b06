"""The report's data: reading a site's score log and calibrations, and the analysis behind each section (periods,
timeline aggregation, drift per period, the most anomalous patches re-read and re-scored, alarm texts).

Nothing here draws or writes HTML (:mod:`calibration.report.charts`, :mod:`calibration.report.html`).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal

from anomaly.atomic import atomic_path
from anomaly.decision import DEFAULT_MIN_MINUTES
from anomaly.detectors import AutoencoderDetector
from anomaly.errors import AudioError, HumwatchError, shown
from anomaly.features import DEFAULT_PARAMS, FeatureParams, log_mel
from anomaly.features.functional import mel_band_edges
from anomaly.recording_time import UNCERTAIN
from anomaly.vocabulary import band_hint
from calibration.calibrate import site_classifier, site_detector
from calibration.errors import ReportError, SiteError
from calibration.monitoring.scorelog import NOVEL_STATE, connect, read_alarms, read_gaps, read_scores
from calibration.store import Site

MAX_POINTS = 5000  # timeline points (per-bin max beyond this)
PATCH_SPACING_S = 10.0  # top patches: at most one per this many seconds
FORMATS = ("html", "csv", "parquet")
QUANTILES = (0.5, 0.9, 0.99)

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


# -- reading the log and the calibrations ------------------------------------------------------------------------------
def iso(t: float, seconds: bool = True) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def score_log_path(site: Site) -> Path:
    return site.dir / "scores.sqlite"


def _log_or_raise(site: Site) -> Path:
    path = score_log_path(site)
    if not os.path.lexists(path):  # anything else there is checked (and refused) by the log's reader
        raise SiteError(f"site {site.name!r} has no scores logged yet: run `humwatch monitor --site {site.name} "
                        "--from AUDIO` (or --mic) first")
    return path


def _log_extent(path: Path) -> tuple[int, float | None, float | None]:
    con = connect(path, readonly=True)
    try:
        n, t0, t1 = con.execute("SELECT count(*), min(t_utc), max(t_utc) FROM scores").fetchone()
    finally:
        con.close()
    return int(n), t0, t1


def read_log(site: Site, since_utc: float | None = None, bands: bool = False):
    """The site's scores (and alarms) since ``since_utc``; SiteError/ReportError when there are none."""
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
        raise ReportError(f"no scores since {iso(since_utc)} UTC; the log of {site.name!r} holds {n} scores from "
                          f"{iso(t0)} to {iso(t1)} UTC (use an earlier --since)")
    return df, alarms


SILENT_AFTER_S = 300.0  # a device whose last patch is older than this (at report time) is shown as silent


def devices(df, log_path: Path, since_utc: float | None = None, now: float | None = None):
    """Devices that sent scores over MQTT (``humwatch ingest``) and their silences: ``(table, gaps)``.

    ``table``: one row per device (device, patches, first, last, silent_s: seconds since its last patch when that
    exceeds SILENT_AFTER_S, else 0); ``gaps``: the recorded gaps (:func:`calibration.monitoring.scorelog.read_gaps`).
    Both empty for a site monitored locally only."""
    now = time.time() if now is None else now
    dev = df[df["device"].notna()] if "device" in df else df.iloc[:0]
    g = dev.groupby("device")["t_utc"]
    table = pd.DataFrame({"patches": g.size(), "first": g.min(), "last": g.max()}).reset_index()
    table["silent_s"] = np.where(now - table["last"] > SILENT_AFTER_S, now - table["last"], 0.0)
    gaps = read_gaps(log_path, since_utc)
    return table.sort_values(["silent_s", "device"], ascending=[False, True]), gaps




def split_novel(alarms):
    """(anomaly and classifier alarms, novel-state notices) of the alarms table: a notice is its own kind of event,
    counted and shown apart from alarms."""
    if alarms is None or not len(alarms):
        return alarms, alarms
    novel = alarms["info"].map(lambda i: isinstance(i, dict) and i.get("kind") == NOVEL_STATE).to_numpy(bool)
    return alarms[~novel].reset_index(drop=True), alarms[novel].reset_index(drop=True)


def _logged_bands(path: Path, rows: list[tuple[float, float]]) -> list[np.ndarray | None]:
    """The per-band errors logged for the patches at (t_utc, score) (reading only those rows' blobs)."""
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


def export_log(site: Site, out: str | Path, fmt: str | None = None, since_utc: float | None = None,
               bands: bool | None = None) -> tuple[Path, int]:
    """Write the score log as CSV or Parquet (atomically). Per-band errors go into Parquet (``band_00`` …), not
    into CSV unless ``bands=True`` (64 more columns). Returns (path, rows)."""
    out = Path(out)
    fmt = format_for(out, fmt)
    if fmt == "html":
        raise ReportError("export_log writes csv or parquet; use write_report for html")
    site.config()
    want = (fmt == "parquet") if bands is None else bands
    df, _ = read_log(site, since_utc, bands=want)
    df["file"] = df["file"].map(lambda f: shown(f) if isinstance(f, str) else f)  # CSV/Parquet text is UTF-8
    with atomic_path(out, suffix=out.suffix or f".{fmt}") as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return out, len(df)


def read_calibrations(site: Site) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Every readable calibration record by id, and the unreadable ones with the reason."""
    recs, bad = {}, []
    for cid in site.calibration_ids():
        try:
            recs[cid] = site.calibration(cid)
        except SiteError as e:
            bad.append((cid, str(e)))
    return recs, bad


def calibration_changes(df) -> list[tuple[float, str]]:
    """``(t_utc, calibration id)`` where the calibration in force changes within the scores."""
    cids = df["calibration_id"].to_numpy()
    change = np.flatnonzero(cids[1:] != cids[:-1]) + 1
    return [(float(df["t_utc"].iloc[i]), str(cids[i])) for i in change]


def refused_recalibrations(recs: dict[str, dict]) -> list[tuple[float, str]]:
    """``(t_utc, calibration id)`` of the refused recalibrations among ``recs``."""
    refused = []
    for cid, r in recs.items():
        if r.get("status") == "refused" and r.get("created_utc"):
            try:
                refused.append((datetime.strptime(r["created_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                                .timestamp(), cid))
            except ValueError:
                pass
    return refused


# -- timeline and drift ------------------------------------------------------------------------------------------------
def dur(seconds: float) -> str:
    """A bin width: 1.4 s, 2 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.2g} s"
    if seconds < 5400:
        return f"{seconds / 60:.2g} min"
    return f"{seconds / 3600:.2g} h"


def span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def _break_gaps(x: np.ndarray, ys: list[np.ndarray], gap: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Insert NaN where consecutive x differ by more than ``gap`` so lines do not bridge monitoring pauses."""
    if x.size < 2:
        return x, ys
    cut = np.flatnonzero(np.diff(x) > gap) + 1
    if cut.size == 0:
        return x, ys
    xn = np.insert(x, cut, np.nan)
    return xn, [np.insert(np.asarray(y, float), cut, np.nan) for y in ys]


def timeline_series(t: np.ndarray, score: np.ndarray, thr: np.ndarray, patch_s: float = DEFAULT_PARAMS.patch_seconds,
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


# -- top patches -------------------------------------------------------------------------------------------------------
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


def _khz(f: float) -> str:
    return f"{f / 1000:.1f}" if f >= 1000 else f"{f / 1000:.2f}"


def top_bands(bands: np.ndarray, baseline: np.ndarray | None, params, k: int = 3,
              machine: str | None = None) -> list[dict]:
    """The ``k`` bands with the largest error ratio to the baseline (plain error without a baseline), each with
    the words of the site's ``machine`` type for it (:mod:`anomaly.vocabulary`)."""
    edges = mel_band_edges(params)
    ref = baseline if baseline is not None and baseline.size == bands.size else np.ones_like(bands)
    ratio = bands / np.maximum(ref, 1e-9)
    order = [i for i in np.argsort(-np.nan_to_num(ratio, nan=-np.inf)) if np.isfinite(ratio[i])][:k]
    out = []
    for i in order:
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        out.append({"band": int(i), "lo_hz": float(lo), "center_hz": float(c), "hi_hz": float(hi),
                    "ratio": float(ratio[i]), "error": float(bands[i]),
                    "label": f"{_khz(lo)}–{_khz(hi)} kHz", "hint": band_hint(c, machine)})
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


def resolve_audio(file: str | None, site: Site) -> Path | None:
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


def analyse_patches(site: Site, df, n: int, calibrations: dict[str, dict], log_path: Path) -> list[dict]:
    """The top-``n`` patches: each re-read from its source file and run through the site's model where possible
    (``x``, ``recon``, ``err``: input, reconstruction, squared-error map), its band errors against the calibration's
    (``bands``, ``baseline``, ``top``), and notes (what could not be shown, and why)."""
    picked = top_patches(df, n)
    if picked.empty:
        return []
    logged = _logged_bands(log_path, list(zip(picked["t_utc"].tolist(), picked["score"].tolist(), strict=True)))
    det = offsets = mh = None
    model_err = None
    machine = site.config().machine
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
        path = resolve_audio(file, site)
        if file is None:
            dev = row.get("device")
            notes.append(f"sent by device {dev} over MQTT (no audio kept): its score only" if isinstance(dev, str) else
                         "live microphone input (no audio kept): the logged per-band errors only")
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
        top = top_bands(bands, base, params, machine=machine) if bands is not None else []
        if base is None and bands is not None:
            notes.append("the calibration has no per-band baseline: bands ranked by their plain error")
        out.append({"t_utc": float(row["t_utc"]), "score": float(row["score"]), "threshold": float(row["threshold"]),
                    "file": file, "offset_s": float(row["offset_s"]) if pd.notna(row["offset_s"]) else None,
                    "calibration_id": row["calibration_id"], "top": top, "notes": notes, "has_maps": x is not None,
                    "x": x, "recon": recon, "err": err, "bands": bands, "baseline": base, "params": params})
    return out


# -- alarms and faults -------------------------------------------------------------------------------------------------
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


def class_thresholds(site: Site, alarms) -> dict[str, float]:
    """The per-class thresholds the monitor used, from the alarms that carry them; else the site's classifier's
    (none when it was since detached or changed: the figure does without threshold lines)."""
    thresholds: dict[str, float] = {}
    for _, a in alarms.iterrows():
        f = a["info"].get("fault") if isinstance(a["info"], dict) else None
        if isinstance(f, dict) and isinstance(f.get("thresholds"), dict):
            thresholds.update({k: float(v) for k, v in f["thresholds"].items() if isinstance(v, (int, float))})
    if not thresholds:
        try:
            clf, _ = site_classifier(site)
            if clf is not None:
                thresholds = dict(zip(clf.classes, map(float, clf.threshold_array), strict=True))
        except HumwatchError:
            thresholds = {}
    return thresholds


def alarms_by_fault(alarms) -> dict[str, int]:
    """How many alarms name each likely fault ("unknown": the classifier named none)."""
    named: dict[str, int] = {}
    for _, a in alarms.iterrows():
        f = a["info"].get("fault") if isinstance(a["info"], dict) else None
        if isinstance(f, dict):
            k = f.get("likely") or "unknown"
            named[k] = named.get(k, 0) + 1
    return named


def class_columns(df) -> list[str]:
    return [c for c in df.columns if c.startswith("p_") and df[c].notna().any()]


# -- recording times ---------------------------------------------------------------------------------------------------
def uncertain_spans(df, patch_s: float = DEFAULT_PARAMS.patch_seconds) -> list[tuple[float, float, int]]:
    """``(start, end, patches)`` of the stretches of scores whose times are uncertain (placed by a file's
    modification time, :data:`anomaly.recording_time.UNCERTAIN`)."""
    if "time_source" not in df.columns or df.empty:
        return []
    bad = df["time_source"].isin(sorted(UNCERTAIN)).to_numpy()
    if not bad.any():
        return []
    t = df["t_utc"].to_numpy(float)
    idx = np.flatnonzero(bad)
    cut = np.flatnonzero(np.diff(idx) > 1) + 1
    return [(float(t[g[0]]), float(t[g[-1]] + patch_s), int(g.size)) for g in np.split(idx, cut)]


def short_name(path: str | None, limit: int = 36) -> str:
    """A file's name without its folders, cut in the middle when longer than ``limit`` (the full path goes in a
    tooltip)."""
    if not path:
        return ""
    name = Path(str(path)).name
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep - keep // 2] + "…" + name[len(name) - keep // 2:]


# -- how serious the alarms are, and the verdict -----------------------------------------------------------------------
SEVERE_RATIO = 2.0  # an alarm whose score reaches twice the threshold is not a near miss
SUSTAINED_SHARE = 0.5  # ... nor one whose next minute is at least half over the threshold
SUSTAIN_S = 60.0


def alarm_severity(alarm_t: float, score: float, threshold: float, df) -> dict:
    """How serious one alarm is, in plain words: its score against the threshold and how much of the following
    minute stayed over it."""
    t = df["t_utc"].to_numpy(float)  # the log is read oldest first
    a, b = np.searchsorted(t, alarm_t, "left"), np.searchsorted(t, alarm_t + SUSTAIN_S, "left")
    share = float(df["over"].to_numpy()[a:b].mean()) if b > a else 0.0
    ratio = score / threshold if threshold else float("nan")
    strong = ratio >= SEVERE_RATIO or share >= SUSTAINED_SHARE
    level = "strong" if strong else "weak"
    words = (f"score {ratio:.1f}× the threshold, {share:.0%} of the next minute over it: "
             + ("a clear, sustained departure from the calibration's normal sound" if strong else
                "a brief, marginal excursion (the kind a false alarm makes)"))
    return {"level": level, "ratio": ratio, "sustained_share": share, "words": words}


@dataclass
class Reason:
    level: str  # "normal" | "watch" | "act"
    what: str
    next_step: str = ""


@dataclass
class ReportFacts:
    """What the verdict is judged on: the period's scores and alarms, the calibration in force, the drift table."""

    df: object
    alarms: object
    current: dict
    drift: object  # data.drift_table rows
    period_s: float
    machine: str = ""
    extra: dict = field(default_factory=dict)  # for later checks (e.g. novel operating states)


LEVELS = ("normal", "watch", "act")
HEADLINES = {"normal": "All normal", "watch": "Watch", "act": "Act: inspect the machine"}


@dataclass
class Verdict:
    level: str
    headline: str
    reasons: list[Reason]

    @property
    def next_step(self) -> str:
        top = [r for r in self.reasons if r.level == self.level and r.next_step]
        return top[0].next_step if top else ("Nothing to do: keep monitoring; recalibrate when due."
                                             if self.level == "normal" else "")


def _alarm_reason(f: ReportFacts) -> Reason | None:
    if f.alarms is None or not len(f.alarms):
        return None
    sev = [alarm_severity(float(a["t_utc"]), float(a["score"]), float((a["info"] or {}).get("threshold") or 0),
                          f.df) for _, a in f.alarms.iterrows()]
    strong = [s for s in sev if s["level"] == "strong"]
    per_day = float(f.current.get("threshold", {}).get("false_alarms_per_day") or 0.0)
    expected = per_day * f.period_s / 86400.0
    last = f.alarms.iloc[-1]
    when = iso(float(last["t_utc"]))
    worst = max(sev, key=lambda s: s["ratio"])
    n = len(f.alarms)
    chance = (f"; the certificate expects {expected:.2g} false alarm(s) in a period this long" if per_day else "")
    if strong or n > max(3.0 * expected, 1.0):
        return Reason("act", f"{n} alarm(s), the last at {when} UTC; {len(strong)} strong. Worst: {worst['words']}"
                             f"{chance}.",
                      "Inspect the machine now (listen, feel for vibration and heat, check the bands named below); "
                      "if it is healthy, note what changed and recalibrate.")
    return Reason("watch", f"{n} weak alarm(s), the last at {when} UTC: {worst['words']}{chance}.",
                  "Check the alarm's patches below; if more come, inspect the machine.")


def _drift_reason(f: ReportFacts) -> Reason | None:
    rows = f.drift
    if rows is None or not len(rows):
        return None
    last = rows.iloc[-1]
    med, base = float(last["q50"]), float(last["base_q50"])
    over, exp = float(last["over"]), float(last["expected_over"])
    if base == base and base > 0 and med >= 1.25 * base:
        return Reason("watch", f"the typical score of the last period is {med / base:.2f}× the calibration's: the "
                               "sound is drifting away from the calibration's normal",
                      "Compare with the machine's operating state; a rise over several periods is how a fault "
                      "develops: inspect it, and recalibrate only if it is healthy.")
    if exp == exp and exp > 0 and over > max(3.0 * exp, 1e-3):
        return Reason("watch", f"{over:.2%} of the last period's patches were over the threshold, against "
                               f"{exp:.3%} expected by the certificate",
                      "Watch the next periods; if the share keeps rising, inspect the machine.")
    return None


def _certificate_reason(f: ReportFacts) -> Reason | None:
    th, au = f.current.get("threshold", {}), f.current.get("audio", {})
    per_day = th.get("false_alarms_per_day")
    minutes = au.get("minutes")
    short = isinstance(minutes, (int, float)) and minutes < DEFAULT_MIN_MINUTES
    if au.get("forced") or short:
        how = "forced" if au.get("forced") else f"--min-minutes {au.get('min_minutes', minutes):g}"
        return Reason("watch", f"the calibration in force was made on {minutes or 0:.0f} min of audio, below the "
                               f"{DEFAULT_MIN_MINUTES:g} min minimum ({how}): its threshold and false-alarm figures "
                               "rest on few patches",
                      "Recalibrate on 30-60 min of normal audio (humwatch site calibrate).")
    if isinstance(per_day, (int, float)) and per_day > 1.0:
        return Reason("watch", f"the certificate expects {per_day:.2g} false alarms per day: expect some alarms "
                               "that are not faults",
                      "Use a stricter alarm rule or a larger k (humwatch site set), then recalibrate.")
    return None


def _time_reason(f: ReportFacts) -> Reason | None:
    spans = uncertain_spans(f.df)
    if not spans:
        return None
    n = sum(p for _, _, p in spans)
    return Reason("normal", f"the times of {n:,} patches are uncertain (taken from files' modification times; "
                            "shaded in the timeline)",
                  "Monitor with --start-time, or name files with their recording time, for exact times.")


def _novel_state_reason(f: ReportFacts) -> Reason | None:
    """Novel-state notices (issue #14): the site sounded unlike every state its calibration heard."""
    novel = f.extra.get("novel_states")
    if novel is None or not len(novel):
        return None
    last = novel.iloc[-1]
    differs = (last["info"] or {}).get("differs", "")
    return Reason("watch", f"{len(novel)} novel-state notice(s), the last at {iso(float(last['t_utc']))} UTC: the site "
                           f"sounded unlike anything the calibration heard ({differs}); alarms are not suppressed "
                           "there, and a fault can sound like a new state",
                  "Inspect the machine and its surroundings; if it is healthy and the state is a normal one (a shift, "
                  "a neighbouring machine, HVAC), recalibrate with it included.")


def _device_reason(f: ReportFacts) -> Reason | None:
    """Devices reporting over MQTT (``extra["devices"]``, :func:`devices`) that have gone silent: the machine is
    not monitored while they are."""
    table = f.extra.get("devices")
    if table is None or not len(table):
        return None
    silent = table[table["silent_s"] > 0]
    if not len(silent):
        return None
    names = ", ".join(f"{r.device} for {dur(float(r.silent_s))} (last patch {iso(float(r.last))} UTC)"
                      for r in silent.itertuples())
    return Reason("watch", f"{len(silent)} of {len(table)} device(s) silent: {names}; the machine is not monitored "
                           "while they are",
                  "Check the silent device's power, network and broker connection.")


VERDICT_CHECKS = [_alarm_reason, _drift_reason, _certificate_reason, _time_reason, _novel_state_reason,
                  _device_reason]
"""Each check reads the facts and returns a Reason or None; the verdict is the most serious level among them.
A new kind of evidence (e.g. novel operating states) is a check appended here."""


def verdict(facts: ReportFacts) -> Verdict:
    """The report's verdict: all normal, watch or act, with the reasons and the next step."""
    reasons = [r for check in VERDICT_CHECKS if (r := check(facts)) is not None]
    reasons.sort(key=lambda r: -LEVELS.index(r.level))
    level = reasons[0].level if reasons else "normal"
    if not any(r.level != "normal" for r in reasons):
        reasons.insert(0, Reason("normal", "no alarms, no drift against the calibration, and a certificate that "
                                           "holds"))
    return Verdict(level, HEADLINES[level], reasons)
