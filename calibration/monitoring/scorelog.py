"""The site's raw-score log: every scored patch, append-only, crash-safe, readable from pandas.

SQLite in WAL mode (``sites/<name>/scores.sqlite``). Why SQLite rather than daily Parquet files: a Parquet file is
only readable once it is closed, so a process killed mid-day would lose the day (or need many tiny files);
SQLite's write-ahead log makes every committed transaction survive a crash of the writer (SIGKILL included) with
``synchronous=NORMAL``, readers never block the writer, and ``pandas.read_sql`` reads it directly. The monitor
commits at least once a second, so a SIGKILL loses at most the last second of scores.

Size: one row per 0.96 s patch — time, score, a 64-band error vector as float16 (128 bytes), and small integer
references to the run (calibration, model, threshold) and the source file — about 200 bytes with SQLite's overhead
and the time index, i.e. ~18 MB per day and ~1 GB for the default retention of 8 weeks (measured by
``bench/monitor.py``; ``tests/test_monitor.py`` checks the bytes per row). A site with a fault classifier adds its
per-class probabilities (float16, 2 bytes per class) to each row: the classifier's outputs, kept so that the
per-class thresholds can be tuned on weeks of real data.

The ``file_times`` table (added to any layout-2/3 log when a monitor opens it; readers do without it) records how
each file's start time was found (:mod:`anomaly.recording_time`: metadata, name, start-time, contiguous, mtime), so
that the report can mark periods whose times are uncertain; :func:`read_scores` gives it as ``time_source`` (``clock``
for live input).

Layout 3 added the class probabilities (``scores.classes``) and the classifier of each run (``runs.classifier_hash``,
``runs.classes``, ``runs.class_thresholds``). Layout 4 added the fleet's devices: scores and alarms that came over
MQTT (``humwatch ingest``) carry their device and its sequence number (``boot << 32 | seq``), unique per device, so
that a redelivered message is never logged twice (:meth:`ScoreLog.append_device`); ``gaps`` records the periods a
device was silent. An older log is upgraded in place (columns, tables and indexes added, nothing rewritten) when a
writer opens it, and read as it is.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly.decision import over
from calibration.errors import SiteError

SCHEMA_VERSION = 4  # 2: source paths in their own table; 3: classifier outputs; 4: devices, sequence numbers, gaps
READABLE_VERSIONS = (2, 3, 4)
DEFAULT_RETENTION_DAYS = 56

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    started_utc REAL NOT NULL,
    calibration_id TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    threshold REAL NOT NULL,
    alarm_m INTEGER NOT NULL,
    alarm_n INTEGER NOT NULL,
    source TEXT NOT NULL,
    classifier_hash TEXT,         -- NULL when the run had no fault classifier
    classes TEXT,                 -- JSON list: the order of the values in scores.classes
    class_thresholds TEXT         -- JSON list: the per-class probability thresholds of the run
);
CREATE TABLE IF NOT EXISTS scores (
    t_utc REAL NOT NULL,          -- patch start, seconds since the Unix epoch (UTC)
    score REAL NOT NULL,
    over INTEGER NOT NULL,        -- 1 if score > the run's threshold
    bands BLOB,                   -- per-mel-band errors, float16 little-endian, n_mels values
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    file_id INTEGER REFERENCES files(file_id),  -- source file (NULL for live microphone input)
    offset_s REAL,                -- patch start within that file
    classes BLOB,                 -- fault-classifier probabilities, float16 little-endian, in runs.classes order
    device_id INTEGER REFERENCES devices(device_id),  -- the device that sent it over MQTT (NULL: local monitor)
    seq INTEGER                   -- that device's sequence number (boot << 32 | counter), unique per device
);
CREATE TABLE IF NOT EXISTS devices (device_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE UNIQUE INDEX IF NOT EXISTS scores_device_seq ON scores(device_id, seq) WHERE seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS files (file_id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS scores_t ON scores(t_utc);
CREATE TABLE IF NOT EXISTS file_times (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    file_id INTEGER NOT NULL REFERENCES files(file_id),
    t0_utc REAL NOT NULL,         -- the time given to the file's first sample
    duration_s REAL NOT NULL,
    source TEXT NOT NULL,         -- how that time was found: anomaly.recording_time.SOURCES
    detail TEXT NOT NULL,         -- e.g. "bext 2026-11-20 08:00:00", "name 20261120T080000"
    PRIMARY KEY (run_id, file_id)
);
CREATE TABLE IF NOT EXISTS alarms (
    t_utc REAL NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    score REAL NOT NULL,
    info TEXT NOT NULL,           -- the alarm as JSON (what --on-alarm receives)
    device_id INTEGER,            -- as in scores (layout 4)
    seq INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alarms_device_seq ON alarms(device_id, seq) WHERE seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS gaps (
    device_id INTEGER NOT NULL REFERENCES devices(device_id),
    t_start REAL NOT NULL,        -- the last patch heard before the silence (UTC seconds)
    t_end REAL,                   -- the first patch heard after it (NULL: still silent when noted)
    noted_utc REAL NOT NULL,
    PRIMARY KEY (device_id, t_start)
);
"""


_V3_COLUMNS = (("runs", "classifier_hash TEXT"), ("runs", "classes TEXT"), ("runs", "class_thresholds TEXT"),
               ("scores", "classes BLOB"))
_V4_COLUMNS = (("scores", "device_id INTEGER"), ("scores", "seq INTEGER"), ("alarms", "device_id INTEGER"),
               ("alarms", "seq INTEGER"))
_UPGRADES = {2: _V3_COLUMNS + _V4_COLUMNS, 3: _V4_COLUMNS}


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    path = Path(path)
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        _check_version(con, path)
        return con
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    old = _check_version(con, path)
    if old in _UPGRADES:
        with con:  # one transaction: a crash leaves the old layout intact
            for table, column in _UPGRADES[old]:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    con.executescript(_SCHEMA)
    con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    con.commit()
    return con


def _check_version(con: sqlite3.Connection, path: Path) -> int | None:
    """The log's layout (None for a new database); refuse one this humwatch cannot read."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        if "no such table" in str(e):
            return None  # a new, empty database
        con.close()
        raise SiteError(f"{path}: cannot read the score log ({e})") from None
    if row is None:
        return None
    if int(row[0]) not in READABLE_VERSIONS:
        con.close()
        raise SiteError(f"{path}: score log layout {row[0]}, this humwatch writes layout {SCHEMA_VERSION} (and reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}); move the old log aside (it stays readable with "
                        "the humwatch that wrote it)")
    return int(row[0])


def _version(con: sqlite3.Connection) -> int:
    return int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


@dataclass
class Run:
    run_id: int
    threshold: float


class ScoreLog:
    """Appends scores and alarms; commits at most every ``commit_every`` seconds (and on close)."""

    def __init__(self, path: str | Path, commit_every: float = 1.0):
        self.path = Path(path)
        self.con = connect(self.path)
        self.commit_every = commit_every
        self._last_commit = time.monotonic()
        self.rows = 0
        self._file_ids: dict[str, int] = {}
        self._device_ids: dict[str, int] = {}

    def _file_id(self, file: str | None) -> int | None:
        if file is None:
            return None
        if file not in self._file_ids:
            self.con.execute("INSERT OR IGNORE INTO files (path) VALUES (?)", (file,))
            self._file_ids[file] = self.con.execute("SELECT file_id FROM files WHERE path = ?", (file,)).fetchone()[0]
        return self._file_ids[file]

    def start_run(self, calibration_id: str, model_hash: str, threshold: float, m: int, n: int, source: str,
                  classifier: dict | None = None) -> Run:
        """Open a monitoring run. ``classifier``: ``{"hash", "classes", "thresholds"}`` of the site's classifier."""
        c = classifier or {}
        cur = self.con.execute(
            "INSERT INTO runs (started_utc, calibration_id, model_hash, threshold, alarm_m, alarm_n, source, "
            "classifier_hash, classes, class_thresholds) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (time.time(), calibration_id, model_hash, threshold, m, n, source, c.get("hash"),
             json.dumps(list(c["classes"])) if c else None,
             json.dumps([float(x) for x in c["thresholds"]]) if c else None))
        self.con.commit()
        return Run(int(cur.lastrowid), threshold)

    def append(self, run: Run, t_utc: np.ndarray, scores: np.ndarray, bands: np.ndarray | None,
               file: str | None, offsets: np.ndarray, class_probs: np.ndarray | None = None) -> None:
        """Log patches: ``scores [n]``, ``bands [n, n_mels]`` or None, ``class_probs [n, n_classes]`` or None."""
        rows = []
        fid = self._file_id(file)
        exceeded = over(scores, run.threshold)
        for i in range(len(scores)):
            b = None if bands is None else np.asarray(bands[i], "<f2").tobytes()
            c = None if class_probs is None else np.asarray(class_probs[i], "<f2").tobytes()
            rows.append((float(t_utc[i]), float(scores[i]), int(exceeded[i]), b, run.run_id, fid,
                         float(offsets[i]), c))
        self.con.executemany("INSERT INTO scores (t_utc, score, over, bands, run_id, file_id, offset_s, classes) "
                             "VALUES (?,?,?,?,?,?,?,?)", rows)
        self.rows += len(rows)
        self.maybe_commit()

    def file_time(self, run: Run, file: str, t0_utc: float, duration_s: float, source: str, detail: str) -> None:
        """Record how ``file``'s start time was found in this run (:mod:`anomaly.recording_time`)."""
        self.con.execute("INSERT OR REPLACE INTO file_times VALUES (?,?,?,?,?,?)",
                         (run.run_id, self._file_id(file), t0_utc, duration_s, source, detail))

    # -- devices over MQTT (humwatch ingest): idempotent by (device, sequence number) ---------------------------------
    def device_id(self, device: str) -> int:
        if device not in self._device_ids:
            self.con.execute("INSERT OR IGNORE INTO devices (name) VALUES (?)", (device,))
            self._device_ids[device] = self.con.execute("SELECT device_id FROM devices WHERE name = ?",
                                                        (device,)).fetchone()[0]
        return self._device_ids[device]

    def append_device(self, run: Run, device: str, seqs, t_utc, scores, class_probs=None) -> int:
        """Log patches a device sent: a (device, seq) already in the log is skipped (a redelivered message).
        Returns how many rows were new. Committed with the next :meth:`maybe_commit`."""
        did = self.device_id(device)
        exceeded = over(np.asarray(scores, float), run.threshold)
        before = self.con.total_changes
        self.con.executemany(
            "INSERT OR IGNORE INTO scores (t_utc, score, over, run_id, device_id, seq, classes) VALUES (?,?,?,?,?,?,?)",
            [(float(t_utc[i]), float(scores[i]), int(exceeded[i]), run.run_id, did, int(seqs[i]),
              None if class_probs is None or class_probs[i] is None else np.asarray(class_probs[i], "<f2").tobytes())
             for i in range(len(scores))])
        new = self.con.total_changes - before
        self.rows += new
        return new

    def alarm_device(self, run: Run, device: str, seq: int, t_utc: float, score: float, info: dict) -> bool:
        """Log an alarm of a device (its onset patch's sequence number); False when it was already logged."""
        before = self.con.total_changes
        self.con.execute("INSERT OR IGNORE INTO alarms (t_utc, run_id, score, info, device_id, seq) "
                         "VALUES (?,?,?,?,?,?)", (t_utc, run.run_id, score, json.dumps(info),
                                                  self.device_id(device), int(seq)))
        return self.con.total_changes > before

    def last_seq(self) -> dict[str, tuple[int, float]]:
        """Per device: its highest logged sequence number and that patch's time (where a restarted ingest resumes)."""
        rows = self.con.execute("SELECT d.name, s.seq, s.t_utc FROM devices d JOIN scores s ON s.rowid = "
                                "(SELECT rowid FROM scores WHERE device_id = d.device_id AND seq IS NOT NULL "
                                "ORDER BY seq DESC LIMIT 1)").fetchall()
        return {name: (int(seq), float(t)) for name, seq, t in rows}

    def recent_device_scores(self, device: str, n: int) -> list[tuple[float, float]]:
        """The device's last ``n`` logged patches (by sequence number) as (score, threshold of its run), oldest first:
        what a restarted ingest replays through the alarm rule to continue where it stopped."""
        rows = self.con.execute("SELECT s.score, r.threshold FROM scores s JOIN runs r USING (run_id) WHERE "
                                "s.device_id = ? AND s.seq IS NOT NULL ORDER BY s.seq DESC LIMIT ?",
                                (self.device_id(device), n)).fetchall()
        return [(float(a), float(b)) for a, b in reversed(rows)]

    def gap(self, device: str, t_start: float, t_end: float | None) -> None:
        """Note that ``device`` was silent from ``t_start`` (its last patch) to ``t_end`` (None: still silent)."""
        self.con.execute("INSERT INTO gaps (device_id, t_start, t_end, noted_utc) VALUES (?,?,?,?) "
                         "ON CONFLICT (device_id, t_start) DO UPDATE SET t_end = excluded.t_end, "
                         "noted_utc = excluded.noted_utc", (self.device_id(device), t_start, t_end, time.time()))

    def alarm(self, run: Run, t_utc: float, score: float, info: dict) -> None:
        self.con.execute("INSERT INTO alarms (t_utc, run_id, score, info) VALUES (?,?,?,?)",
                         (t_utc, run.run_id, score, json.dumps(info)))
        self.con.commit()

    def maybe_commit(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_commit >= self.commit_every:
            self.con.commit()
            self._last_commit = time.monotonic()

    def prune(self, retention_days: float = DEFAULT_RETENTION_DAYS, now: float | None = None) -> int:
        """Delete scores and alarms older than the retention; returns the rows deleted."""
        cutoff = (now or time.time()) - retention_days * 86400
        n = self.con.execute("DELETE FROM scores WHERE t_utc < ?", (cutoff,)).rowcount
        self.con.execute("DELETE FROM alarms WHERE t_utc < ?", (cutoff,))
        self.con.execute("DELETE FROM gaps WHERE t_start < ?", (cutoff,))
        self.con.commit()
        return n

    def close(self) -> None:
        self.con.commit()
        self.con.close()


def read_scores(path: str | Path, since_utc: float | None = None, bands: bool = False, classes: bool = False):
    """Scores as a pandas DataFrame (columns t_utc, time, score, over, calibration_id, model_hash, threshold,
    file, offset_s, time_source [, band_00 … band_63] [, p_<class> …]), oldest first.

    With ``classes``, one ``p_<class>`` column per class any run's fault classifier had (NaN where a run had no
    classifier or not that class): the calibrated per-patch probabilities the monitor compared with the thresholds.
    """
    version, has_times = _log_layout(path)
    extra = ", s.classes, r.classes AS run_classes" if version >= 3 else ", NULL AS classes, NULL AS run_classes"
    if has_times:
        extra += (", COALESCE(ft.source, CASE WHEN s.file_id IS NULL THEN 'clock' END) AS time_source")
        join = " LEFT JOIN file_times ft ON ft.run_id = s.run_id AND ft.file_id = s.file_id"
    else:
        extra += ", CASE WHEN s.file_id IS NULL THEN 'clock' END AS time_source"
        join = ""
    dev = "d.name AS device, s.seq" if version >= 4 else "NULL AS device, NULL AS seq"
    join += " LEFT JOIN devices d USING (device_id)" if version >= 4 else ""
    df = _read(path, "SELECT s.t_utc, s.score, s.over, s.bands, f.path AS file, s.offset_s, r.calibration_id, "
                     f"r.model_hash, r.threshold, {dev}{extra} FROM scores s JOIN runs r USING (run_id) "
                     f"LEFT JOIN files f USING (file_id){join}", "s", since_utc)
    blobs, cblobs, run_classes = df.pop("bands"), df.pop("classes"), df.pop("run_classes")
    if bands and len(df):
        arr = np.stack([np.frombuffer(b, "<f2").astype(np.float32) if b is not None else
                        np.full(64, np.nan, np.float32) for b in blobs])
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
        return _version(con), has is not None
    finally:
        con.close()


def read_file_times(path: str | Path):
    """How each monitored file's time was found, per run (empty for a log without that table)."""
    if not _log_layout(path)[1]:
        return pd.DataFrame(columns=["run_id", "file", "t0_utc", "duration_s", "source", "detail"])
    con = connect(path, readonly=True)
    try:
        return pd.read_sql("SELECT ft.run_id, f.path AS file, ft.t0_utc, ft.duration_s, ft.source, ft.detail "
                           "FROM file_times ft JOIN files f USING (file_id) ORDER BY ft.t0_utc", con)
    finally:
        con.close()


def read_alarms(path: str | Path, since_utc: float | None = None):
    """Alarms as a DataFrame (t_utc, time, score, calibration_id, info as dicts)."""
    df = _read(path, "SELECT a.t_utc, a.score, a.info, r.calibration_id FROM alarms a JOIN runs r USING (run_id)",
               "a", since_utc)
    df["info"] = df["info"].map(json.loads)
    return df


def summarize(path: str | Path, since_utc: float, recent_utc: float) -> dict:
    """What the fleet view needs of a site's log, by SQL aggregates (no row is loaded): patches and the share over
    the threshold since ``since_utc``, alarms since then and since ``recent_utc`` (by kind), the last patch time, and
    per device its last patch time. Empty counts when there is no log."""
    out = {"patches": 0, "over_share": None, "mean_score": None, "alarms": 0, "recent_alarms": 0,
           "alarm_kinds": {}, "last_t": None, "devices": {}, "gaps": 0}
    if not Path(path).exists():
        return out
    con = connect(path, readonly=True)
    try:
        n, share, mean = con.execute("SELECT count(*), avg(over), avg(score) FROM scores WHERE t_utc >= ?",
                                     (since_utc,)).fetchone()
        out.update(patches=n, over_share=share, mean_score=mean,
                   last_t=con.execute("SELECT max(t_utc) FROM scores").fetchone()[0])
        kinds: dict[str, int] = {}
        for t, info in con.execute("SELECT t_utc, info FROM alarms WHERE t_utc >= ?", (since_utc,)):
            try:
                kind = str(json.loads(info).get("kind", "anomaly"))
            except (json.JSONDecodeError, AttributeError):
                kind = "anomaly"
            kinds[kind] = kinds.get(kind, 0) + 1
            out["alarms"] += 1
            out["recent_alarms"] += t >= recent_utc
        out["alarm_kinds"] = kinds
        if _version(con) >= 4:
            out["devices"] = dict(con.execute("SELECT d.name, max(s.t_utc) FROM devices d JOIN scores s USING "
                                              "(device_id) GROUP BY d.name").fetchall())
            out["gaps"] = con.execute("SELECT count(*) FROM gaps WHERE t_start >= ?", (since_utc,)).fetchone()[0]
    finally:
        con.close()
    return out


def logged_files(path: str | Path) -> set[str]:
    """The source files the log has scores of (empty when there is no log yet)."""
    if not Path(path).exists():
        return set()
    con = connect(path, readonly=True)
    try:
        return {r[0] for r in con.execute("SELECT path FROM files WHERE file_id IN (SELECT DISTINCT file_id FROM "
                                          "scores)")}
    finally:
        con.close()


def read_gaps(path: str | Path, since_utc: float | None = None):
    """Silent periods of the site's devices as a DataFrame (device, t_start, t_end, start, end, minutes), oldest
    first; empty for a log written before layout 4. ``t_end`` NaN: the device was still silent when noted."""
    cols = ["device", "t_start", "t_end", "noted_utc"]
    if _log_layout(path)[0] < 4:
        df = pd.DataFrame({c: pd.Series(dtype=object if c == "device" else float) for c in cols})
    else:
        con = connect(path, readonly=True)
        try:
            where, args = (" WHERE coalesce(g.t_end, g.noted_utc) >= ?", (since_utc,)) if since_utc is not None \
                else ("", ())
            df = pd.read_sql("SELECT d.name AS device, g.t_start, g.t_end, g.noted_utc FROM gaps g JOIN devices d "
                             f"USING (device_id){where} ORDER BY g.t_start", con, params=args)
        finally:
            con.close()
    end = df["t_end"].fillna(df["noted_utc"]).astype(float)
    df["start"] = pd.to_datetime(df["t_start"].astype(float), unit="s", utc=True)
    df["end"] = pd.to_datetime(end, unit="s", utc=True)
    df["minutes"] = (end - df["t_start"].astype(float)) / 60
    return df


def _read(path: str | Path, select: str, alias: str, since_utc: float | None):
    """Run ``select`` (rows of table ``alias``) from ``since_utc`` on, oldest first, adding a ``time`` column."""
    con = connect(path, readonly=True)
    try:
        where, args = (f" WHERE {alias}.t_utc >= ?", (since_utc,)) if since_utc is not None else ("", ())
        df = pd.read_sql(f"{select}{where} ORDER BY {alias}.t_utc", con, params=args)
    finally:
        con.close()
    df.insert(1, "time", pd.to_datetime(df["t_utc"], unit="s", utc=True))
    return df
