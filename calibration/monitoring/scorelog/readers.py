"""Reading the score log (never writing it): scores, alarms, events, gaps and file times as pandas DataFrames, and
SQL aggregates (:func:`summarize`, :func:`logged_files`). Logs of every readable layout are read as they are."""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.errors import SiteDamagedError
from calibration.monitoring.scorelog.schema import (
    SCHEMA_VERSION,
    T_MAX,
    ScoreLogWarning,
    check_version,
    connect,
    db_error,
    path_text,
    repair_hint,
)


def read_scores(path: str | Path, since_utc: float | None = None, bands: bool = False, classes: bool = False,
                dedupe: bool = True):
    """Scores as a pandas DataFrame (columns t_utc, time, score, over, calibration_id, model_hash, threshold,
    file, offset_s, device, seq (None for local monitoring), time_source [, band_00 … band_63] [, p_<class> …]),
    oldest first.

    With ``classes``, one ``p_<class>`` column per class any run's fault classifier had (NaN where a run had no
    classifier or not that class): the calibrated per-patch probabilities the monitor compared with the thresholds.
    ``dedupe`` drops the repeats of a patch (same file, offset and time) that monitors restarted before layout 5
    logged. Rows with times that cannot be dates (a --start-time typo such as year 2626) are not read (a warning
    says how many). ``time_source`` says how each file's time was found (``clock`` for live input).
    """
    version, has_times = _log_layout(path)
    extra = ", s.classes, r.classes AS run_classes" if version >= 3 else ", NULL AS classes, NULL AS run_classes"
    if has_times:
        extra += ", COALESCE(ft.source, CASE WHEN s.file_id IS NULL THEN 'clock' END) AS time_source"
        join = " LEFT JOIN file_times ft ON ft.run_id = s.run_id AND ft.file_id = s.file_id"
    else:
        extra += ", CASE WHEN s.file_id IS NULL THEN 'clock' END AS time_source"
        join = ""
    dev = "d.name AS device, s.seq" if version >= 4 else "NULL AS device, NULL AS seq"
    join += " LEFT JOIN devices d USING (device_id)" if version >= 4 else ""
    df = _read(path, "SELECT s.t_utc, s.score, s.over, s.bands, f.path AS file, s.offset_s, r.calibration_id, "
                     f"r.model_hash, r.threshold, {dev}{extra} FROM scores s JOIN runs r USING (run_id) "
                     f"LEFT JOIN files f USING (file_id){join}", "s", since_utc)
    if dedupe and len(df):
        dup = df.duplicated(["file", "offset_s", "t_utc"]) & df["file"].notna()
        if dup.any():
            df = df[~dup].reset_index(drop=True)
    blobs, cblobs, run_classes = df.pop("bands"), df.pop("classes"), df.pop("run_classes")
    if bands and len(df):
        width = next((len(b) // 2 for b in blobs if b is not None), 64)
        arr = np.stack([np.frombuffer(b, "<f2").astype(np.float32) if b is not None and len(b) == 2 * width else
                        np.full(width, np.nan, np.float32) for b in blobs])
        df = pd.concat([df, pd.DataFrame(arr, columns=[f"band_{i:02d}" for i in range(arr.shape[1])])], axis=1)
    if classes and len(df):
        names: list[str] = []
        for rc in run_classes.dropna().unique():
            names += [c for c in json.loads(rc) if c not in names]
        cols = {c: np.full(len(df), np.nan, np.float32) for c in names}
        for rc in run_classes.dropna().unique():  # runs with the same classes decode together
            rows = np.flatnonzero((run_classes == rc).to_numpy() & cblobs.notna().to_numpy())
            if len(rows):
                arr = np.frombuffer(b"".join(cblobs.iloc[rows]), "<f2").reshape(len(rows), -1)
                for j, c in enumerate(json.loads(rc)):
                    cols[c][rows] = arr[:, j]
        df = pd.concat([df, pd.DataFrame({f"p_{c}": v for c, v in cols.items()})], axis=1)
    return df


def _log_layout(path: str | Path) -> tuple[int, bool]:
    """The log's layout version and whether it has the ``file_times`` table."""
    con = connect(path, readonly=True)
    try:
        has = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'file_times'").fetchone()
        return check_version(con, Path(path)) or SCHEMA_VERSION, has is not None
    except sqlite3.Error as e:
        raise db_error(e, Path(path), "reading") from None
    finally:
        con.close()


def _log_version(path: str | Path) -> int:
    return _log_layout(path)[0]


def read_file_times(path: str | Path):
    """How each monitored file's time was found, per run (empty for a log without that table)."""
    if not _log_layout(path)[1]:
        return pd.DataFrame(columns=["run_id", "file", "t0_utc", "duration_s", "source", "detail"])
    con = connect(path, readonly=True)
    try:
        df = pd.read_sql("SELECT ft.run_id, f.path AS file, ft.t0_utc, ft.duration_s, ft.source, ft.detail "
                         "FROM file_times ft JOIN files f USING (file_id) ORDER BY ft.t0_utc", con)
    except (sqlite3.Error, pd.errors.DatabaseError) as e:
        raise SiteDamagedError(f"{path}: cannot read the score log ({e}); {repair_hint(Path(path))}") from None
    finally:
        con.close()
    df["file"] = pd.Series([path_text(v) for v in df["file"]], index=df.index, dtype=object)
    return df


def read_alarms(path: str | Path, since_utc: float | None = None, dedupe: bool = True):
    """Alarms as a DataFrame (t_utc, time, score, calibration_id, info as dicts); ``dedupe`` drops the repeats a
    restarted monitor logged before layout 5 (same time, score and kind)."""
    df = _read(path, "SELECT a.t_utc, a.score, a.info, r.calibration_id FROM alarms a JOIN runs r USING (run_id)",
               "a", since_utc)
    df["info"] = df["info"].map(_json_or_note)
    if dedupe and len(df):
        kind = df["info"].map(lambda i: i.get("kind") if isinstance(i, dict) else None)
        device = df["info"].map(lambda i: i.get("device") if isinstance(i, dict) else None)
        df = df[~pd.DataFrame({"t": df["t_utc"], "s": df["score"], "k": kind, "d": device}).duplicated()]
        df = df.reset_index(drop=True)
    return df


def read_events(path: str | Path, since_utc: float | None = None):
    """Events as a DataFrame (t_utc, time, logged_utc, kind, info as dicts); empty for logs before layout 5."""
    if _log_version(path) < 5:
        return pd.DataFrame({"t_utc": [], "time": pd.to_datetime([], utc=True), "logged_utc": [], "kind": [],
                             "info": []})
    df = _read(path, "SELECT e.t_utc, e.logged_utc, e.kind, e.info FROM events e", "e", since_utc)
    df["info"] = df["info"].map(_json_or_note)
    return df


# Rows of the alarms table that are notices, not alarms (#14's novel operating states): summarize() counts them by
# kind but not as alarms, so a notice never ranks a site as "act" on the fleet page.
NOVEL_STATE = "novel_state"  # the alarms table's event kind of a novel-state notice (calibration.states)
NOTICE_KINDS = frozenset({NOVEL_STATE})


def summarize(path: str | Path, since_utc: float, recent_utc: float) -> dict:
    """What the fleet view needs of a site's log, by SQL aggregates (no row is loaded): patches and the share over
    the threshold since ``since_utc``, alarms since then and since ``recent_utc`` (every event of the alarms table by
    kind in ``alarm_kinds``; ``alarms`` and ``recent_alarms`` leave out NOTICE_KINDS), the last patch time, and per
    device its last patch time. Empty counts when there is no log."""
    out = {"patches": 0, "over_share": None, "mean_score": None, "alarms": 0, "recent_alarms": 0,
           "alarm_kinds": {}, "last_t": None, "devices": {}, "gaps": 0}
    if not Path(path).exists():
        return out
    con = connect(path, readonly=True)
    try:
        version = check_version(con, Path(path)) or SCHEMA_VERSION
        n, share, mean = con.execute("SELECT count(*), avg(over), avg(score) FROM scores WHERE t_utc >= ?",
                                     (since_utc,)).fetchone()
        out.update(patches=n, over_share=share, mean_score=mean,
                   last_t=con.execute("SELECT max(t_utc) FROM scores").fetchone()[0])
        kinds: dict[str, int] = {}
        for t, info in con.execute("SELECT t_utc, info FROM alarms WHERE t_utc >= ?", (since_utc,)):
            try:
                kind = str(json.loads(info).get("kind", "anomaly"))
            except (ValueError, TypeError, AttributeError, RecursionError):
                kind = "anomaly"
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind not in NOTICE_KINDS:
                out["alarms"] += 1
                out["recent_alarms"] += t >= recent_utc
        out["alarm_kinds"] = kinds
        if version >= 4:
            out["devices"] = dict(con.execute("SELECT d.name, max(s.t_utc) FROM devices d JOIN scores s USING "
                                              "(device_id) GROUP BY d.name").fetchall())
            out["gaps"] = con.execute("SELECT count(*) FROM gaps WHERE t_start >= ?", (since_utc,)).fetchone()[0]
    except sqlite3.Error as e:
        raise db_error(e, Path(path), "reading") from None
    finally:
        con.close()
    return out


def logged_files(path: str | Path) -> set[str]:
    """The source files the log has scores of (empty when there is no log yet)."""
    if not Path(path).exists():
        return set()
    con = connect(path, readonly=True)
    try:
        return {path_text(r[0]) for r in con.execute("SELECT path FROM files WHERE file_id IN (SELECT DISTINCT "
                                                      "file_id FROM scores)")}
    except sqlite3.Error as e:
        raise db_error(e, Path(path), "reading") from None
    finally:
        con.close()


def read_gaps(path: str | Path, since_utc: float | None = None):
    """Silent periods of the site's devices as a DataFrame (device, t_start, t_end, start, end, minutes), oldest
    first; empty for a log written before layout 4. ``t_end`` NaN: the device was still silent when noted."""
    cols = ["device", "t_start", "t_end", "noted_utc"]
    if _log_version(path) < 4:
        df = pd.DataFrame({c: pd.Series(dtype=object if c == "device" else float) for c in cols})
    else:
        con = connect(path, readonly=True)
        try:
            where, args = (" WHERE coalesce(g.t_end, g.noted_utc) >= ?", (since_utc,)) if since_utc is not None \
                else ("", ())
            df = pd.read_sql("SELECT d.name AS device, g.t_start, g.t_end, g.noted_utc FROM gaps g JOIN devices d "
                             f"USING (device_id){where} ORDER BY g.t_start", con, params=args)
        except (sqlite3.Error, pd.errors.DatabaseError) as e:
            raise SiteDamagedError(f"{path}: cannot read the score log ({e}); {repair_hint(Path(path))}") from None
        finally:
            con.close()
    end = df["t_end"].fillna(df["noted_utc"]).astype(float)
    df["start"] = pd.to_datetime(df["t_start"].astype(float).clip(upper=T_MAX), unit="s", utc=True)
    df["end"] = pd.to_datetime(end.clip(upper=T_MAX), unit="s", utc=True)
    df["minutes"] = (end - df["t_start"].astype(float)) / 60
    return df


def _json_or_note(text):
    try:
        v = json.loads(text)
        return v if isinstance(v, dict) else {"value": v}
    except (TypeError, ValueError, RecursionError):
        return {"unreadable": str(text)[:200]}


def _read(path: str | Path, select: str, alias: str, since_utc: float | None):
    """Run ``select`` (rows of table ``alias``) from ``since_utc`` on, oldest first, adding a ``time`` column. Rows
    whose time cannot be a date are left out, with a warning."""
    path = Path(path)
    con = connect(path, readonly=True)
    lo = max(0.0, since_utc) if since_utc is not None else 0.0
    try:
        df = pd.read_sql(f"{select} WHERE {alias}.t_utc >= ? AND {alias}.t_utc < ? ORDER BY {alias}.t_utc, "
                         f"{alias}.rowid", con, params=(lo, T_MAX))
        if since_utc is None or since_utc <= 0:
            table = {"s": "scores", "a": "alarms", "e": "events"}[alias]
            bad = con.execute(f"SELECT count(*) FROM {table} WHERE t_utc < 0 OR t_utc >= ? OR t_utc != t_utc",
                              (T_MAX,)).fetchone()[0]
            if bad:
                warnings.warn(ScoreLogWarning(f"{path}: {bad} {table} row(s) with impossible times (before 1970 or "
                                              "after 2262: a wrong --start-time?) are left out"), stacklevel=3)
    except (sqlite3.Error, pd.errors.DatabaseError) as e:
        cause = e if isinstance(e, sqlite3.Error) else (e.__cause__ or e.__context__)
        if isinstance(cause, sqlite3.Error):
            raise db_error(cause, path, "reading") from None
        why = str(e).rsplit("': ", 1)[-1] or type(e).__name__  # pandas prefixes the whole SQL query
        raise SiteDamagedError(f"{path}: cannot read the score log ({why}); {repair_hint(path)}") from None
    finally:
        con.close()
    if "file" in df:  # object dtype: an undecodable name stays the exact str Python opens (not arrow text)
        df["file"] = pd.Series([path_text(v) for v in df["file"]], index=df.index, dtype=object)
    df.insert(1, "time", pd.to_datetime(df["t_utc"], unit="s", utc=True))
    return df
