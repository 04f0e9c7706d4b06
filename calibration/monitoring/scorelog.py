"""The site's raw-score log: every scored patch, append-only, crash-safe, readable from pandas.

SQLite in WAL mode (``sites/<name>/scores.sqlite``). Why SQLite rather than daily Parquet files: a Parquet file is
only readable once it is closed, so a process killed mid-day would lose the day (or need many tiny files);
SQLite's write-ahead log makes every committed transaction survive a crash of the writer (SIGKILL included) with
``synchronous=NORMAL``, readers never block the writer, and ``pandas.read_sql`` reads it directly. The monitor
commits at least once a second, so a SIGKILL loses at most the last second of scores.

The API (what the monitor and any other writer, e.g. an ingest of device telemetry, use; nothing else writes it):

* ``ScoreLog(path)`` opens it for writing -- one writer at a time (a second gets SiteLockedError, exit 75);
  ``start_run(...)`` -> :class:`Run`; ``append(run, t_utc, scores, bands, file, offsets, class_probs)``;
  ``alarm(run, t_utc, score, info)``; ``event(run, t_utc, kind, info)`` (typed events such as ``scores_dropped``;
  new kinds need no schema change); ``resume_point(file, t0)``; ``flush()``; ``prune(days)``; ``close()``.
* Devices over MQTT (``humwatch ingest``): ``append_device(run, device, seqs, t, scores, class_probs)`` and
  ``alarm_device(...)``, idempotent by (device, sequence number); ``last_seq()``, ``recent_device_scores(device,
  n)``, ``gap(device, t0, t1)``. These write at once (not held in memory): when the log cannot be written they raise
  StorageError, so that the ingest does not acknowledge what was not logged (the broker delivers it again).
* ``read_scores``, ``read_alarms``, ``read_events``, ``read_gaps``, ``read_file_times`` (pandas), ``summarize``,
  ``logged_files``, ``check_log`` (what is wrong with a file, for ``humwatch site repair``).

Durability: what :meth:`ScoreLog.flush` reports written is committed. When the log cannot be written (disk full,
read-only, an I/O error) nothing is lost silently: scores, alarms and events wait in memory (scores up to
``max_buffer`` rows, ~26 h of patches by default, the oldest dropped beyond that and recorded as a
``scores_dropped`` event), writing is retried every few seconds, the writer is told once when it stops and once
when it resumes (``on_notice``), and :meth:`close` raises StorageError naming what could not be written.

Retention (``prune``) counts from when a row was *logged* (``logged_utc``, wall clock), not from the audio's time,
so replaying last year's recordings does not delete them at the next start; rows logged before layout 5 count
from the start of their run.

Restarts: ``recordings`` holds, per source file and first-sample time, the last offset logged, so a restarted
monitor resumes a file where the log stops (``resume_point``) instead of scoring it again; logs written before
that may hold such duplicates, and the readers drop them (same file, offset and time: the first is kept).

The ``file_times`` table records how each file's start time was found (:mod:`anomaly.recording_time`: metadata,
name, start-time, contiguous, mtime), so that the report can mark periods whose times are uncertain;
:func:`read_scores` gives it as ``time_source`` (``clock`` for live input).

Size: one row per 0.96 s patch -- time, score, a 64-band error vector as float16 (128 bytes), the logging time, and
small integer references to the run (calibration, model, threshold) and the source file -- about 200 bytes with
SQLite's overhead and the time index, i.e. ~18 MB per day and ~1 GB for the default retention of 8 weeks
(measured by ``bench/monitor.py``; ``tests/test_monitor.py`` checks the bytes per row). A site with a fault
classifier adds its per-class probabilities (float16, 2 bytes per class) to each row.

Layouts: 3 added the class probabilities and each run's classifier (and, later, ``file_times``); 4 the fleet's
devices: scores and alarms that came over MQTT carry their device and its sequence number (``boot << 32 | seq``),
unique per device, so that a redelivered message is never logged twice, and ``gaps`` records the periods a device
was silent; 5 added ``logged_utc``, ``events`` and ``recordings``. Older layouts (2, 3, 4) are upgraded in place
(columns, tables and indexes added in one transaction, nothing rewritten) when a writer opens them, and read as they
are. A file that is not a
humwatch score log (another program's database, a truncated copy, not SQLite at all) or of a newer layout is refused
with SiteDamagedError (exit 5) naming it; ``humwatch site repair NAME`` moves a damaged one aside.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import urllib.parse
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly.decision import over
from anomaly.errors import HumwatchWarning, StorageError, shown
from calibration.errors import SiteDamagedError, SiteError, SiteLockedError

SCHEMA_VERSION = 5  # 2: source paths in their own table; 3: classifier outputs; 4: devices, sequence numbers, gaps;
# 5: logged_utc, events, recordings
READABLE_VERSIONS = (2, 3, 4, 5)
DEFAULT_RETENTION_DAYS = 56
MAX_BUFFER_ROWS = 100_000  # scores held in memory while the log cannot be written (~26 h of 0.96 s patches)
RETRY_SECONDS = 5.0  # how often writing is retried while the log cannot be written
CHUNK_ROWS = 5000  # rows per transaction when writing held rows
T_MAX = 9214646400.0  # 2262-01-01: times beyond cannot be dates in pandas; such rows are not read
SQLITE_MAGIC = b"SQLite format 3\x00"

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
    seq INTEGER,                  -- that device's sequence number (boot << 32 | counter), unique per device
    logged_utc INTEGER            -- when the row was written (wall clock, whole seconds): what retention counts
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
    seq INTEGER,
    logged_utc INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alarms_device_seq ON alarms(device_id, seq) WHERE seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS gaps (
    device_id INTEGER NOT NULL REFERENCES devices(device_id),
    t_start REAL NOT NULL,        -- the last patch heard before the silence (UTC seconds)
    t_end REAL,                   -- the first patch heard after it (NULL: still silent when noted)
    noted_utc REAL NOT NULL,
    PRIMARY KEY (device_id, t_start)
);
CREATE TABLE IF NOT EXISTS events (
    t_utc REAL NOT NULL,          -- when it happened (audio time)
    logged_utc INTEGER NOT NULL,
    run_id INTEGER,
    kind TEXT NOT NULL,           -- e.g. "scores_dropped"
    info TEXT NOT NULL            -- JSON
);
CREATE TABLE IF NOT EXISTS recordings (
    file_id INTEGER NOT NULL,
    t0_utc REAL NOT NULL,         -- time of the file's first sample (ms precision)
    last_offset_s REAL NOT NULL,  -- the last patch logged
    patches INTEGER NOT NULL,
    PRIMARY KEY (file_id, t0_utc)
);
"""

_V3_COLUMNS = (("runs", "classifier_hash TEXT"), ("runs", "classes TEXT"), ("runs", "class_thresholds TEXT"),
               ("scores", "classes BLOB"))
_V4_COLUMNS = (("scores", "device_id INTEGER"), ("scores", "seq INTEGER"), ("alarms", "device_id INTEGER"),
               ("alarms", "seq INTEGER"))
_V5_COLUMNS = (("scores", "logged_utc INTEGER"), ("alarms", "logged_utc INTEGER"))
_FILL_RECORDINGS = """
INSERT OR REPLACE INTO recordings (file_id, t0_utc, last_offset_s, patches)
SELECT file_id, round(t_utc - offset_s, 3), max(offset_s), count(*) FROM scores
WHERE file_id IS NOT NULL AND offset_s IS NOT NULL GROUP BY file_id, round(t_utc - offset_s, 3)
"""


class ScoreLogWarning(HumwatchWarning):
    """The score log cannot be written for now (scores held in memory), or can be again."""


def _hint(path: Path) -> str:
    if path.name == "scores.sqlite" and path.parent.name:
        return f"run `humwatch site repair {path.parent.name}` (it moves the log aside; a new one starts)"
    return "move it aside (a new one starts)"


def db_error(e: sqlite3.Error, path: Path, doing: str = "using") -> Exception:
    """An sqlite3 error as the humwatch error it means: StorageError (disk full, read-only, I/O), SiteLockedError
    (busy), else SiteDamagedError (not a database, malformed)."""
    name = getattr(e, "sqlite_errorname", "") or ""
    text = str(e)
    if name.startswith("SQLITE_FULL") or "disk is full" in text or _no_space(path):
        return StorageError(f"{path}: disk full {doing} the score log")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StorageError(f"{path}: the score log is read-only (check its and its folder's permissions, or a "
                            f"read-only file system); {doing} it needs write access")
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "disk I/O error" in text \
            or "unable to open" in text:
        return StorageError(f"{path}: the system refused {doing} the score log ({text})")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return SiteLockedError(f"{path}: the score log is busy ({text}); try again")
    return SiteDamagedError(f"{path}: not a readable humwatch score log ({text}); {_hint(path)}")


def _no_space(path: Path) -> bool:
    """Whether the file system holding ``path`` is (all but) full: SQLite reports a full disk while it opens a log
    (its -shm and -wal files) as an I/O error."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def _inspect_file(path: Path) -> bool:
    """Whether ``path`` holds a database (False: none yet, or an empty file). SiteDamagedError when it is not an
    SQLite file, or a truncated one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StorageError(f"{path}: cannot read the score log ({e.strerror})") from None
    if not os.path.isfile(path):
        raise SiteDamagedError(f"{path}: not a regular file (it should be the score log); {_hint(path)}")
    if st.st_size == 0:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as e:
        raise StorageError(f"{path}: cannot read the score log ({e.strerror})") from None
    if not head.startswith(SQLITE_MAGIC):
        raise SiteDamagedError(f"{path}: not a humwatch score log (not an SQLite file); {_hint(path)}")
    if len(head) < 100:
        raise SiteDamagedError(f"{path}: truncated score log ({st.st_size} bytes); {_hint(path)}")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    counter_ok = head[24:28] == head[92:96] and pages > 0
    if page < 512 or st.st_size % page or (counter_ok and pages * page > st.st_size):
        raise SiteDamagedError(f"{path}: truncated score log ({st.st_size} bytes where its header promises "
                               f"{pages * page}); {_hint(path)}")
    return True


def _uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(os.fsencode(path.resolve())) + "?mode=ro"


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the log, checked (and, for writing, created or upgraded to this layout).

    Raises:
        SiteDamagedError: not a humwatch score log, truncated, of an unknown or newer layout.
        StorageError: read-only, or the system refuses (disk full while creating it).
        SiteError: ``readonly`` and there is no log.
    """
    path = Path(path)
    exists = _inspect_file(path)
    if readonly:
        if not exists:
            raise SiteError(f"{path}: no scores logged yet")
        try:
            con = sqlite3.connect(_uri(path), uri=True)
        except sqlite3.Error as e:
            raise db_error(e, path, "reading") from None
        try:
            if _check_version(con, path) is None:
                raise SiteError(f"{path}: no scores logged yet")
        except BaseException:
            con.close()
            raise
        return con
    if exists and not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK) and path.parent.exists():
        raise StorageError(f"{path}: the score log is read-only (check its and its folder's permissions, or a "
                           "read-only file system); monitoring needs to write it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{path.parent}: cannot create the site folder ({e.strerror})") from None
    try:
        con = sqlite3.connect(path, timeout=10.0)
    except sqlite3.Error as e:
        raise db_error(e, path, "opening") from None
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        version = _check_version(con, path)
        if version is None:  # a new log: the whole layout in one transaction
            con.executescript(f"BEGIN;{_SCHEMA}INSERT OR IGNORE INTO meta VALUES ('schema_version', "
                              f"'{SCHEMA_VERSION}');COMMIT;")
        elif version < SCHEMA_VERSION:  # one transaction: a crash leaves the old layout intact
            con.executescript(f"BEGIN;{_upgrade_script(version)}COMMIT;")
    except sqlite3.Error as e:
        _close_quietly(con)
        raise db_error(e, path, "opening") from None
    except BaseException:
        _close_quietly(con)
        raise
    return con


def _close_quietly(con: sqlite3.Connection) -> None:
    try:
        con.rollback()
        con.close()
    except sqlite3.Error:
        pass


def _upgrade_script(version: int) -> str:
    """SQL adding what layouts 3 to 5 added to a layout-``version`` log (run in one transaction)."""
    columns = (_V3_COLUMNS if version < 3 else ()) + (_V4_COLUMNS if version < 4 else ()) + _V5_COLUMNS
    return ("".join(f"ALTER TABLE {table} ADD COLUMN {column};" for table, column in columns) + _SCHEMA
            + _FILL_RECORDINGS + f";UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';")


def _check_version(con: sqlite3.Connection, path: Path) -> int | None:
    """The log's layout (None for a new, empty database); SiteDamagedError for one this humwatch cannot use."""
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "meta" not in tables:
            raise SiteDamagedError(f"{path}: an SQLite database that is not a humwatch score log (tables: "
                                   f"{', '.join(sorted(tables))[:80]}); {_hint(path)}")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as e:
        raise db_error(e, path, "reading") from None
    if row is None or not str(row[0]).isdigit():
        raise SiteDamagedError(f"{path}: a database without a humwatch score-log layout version; {_hint(path)}")
    v = int(row[0])
    if v > SCHEMA_VERSION:
        raise SiteDamagedError(f"{path}: score log layout {v} is newer than this humwatch (layout {SCHEMA_VERSION}); "
                               "upgrade humwatch")
    if v not in READABLE_VERSIONS:
        raise SiteDamagedError(f"{path}: score log layout {v}, this humwatch writes layout {SCHEMA_VERSION} (and reads "
                               f"{', '.join(map(str, READABLE_VERSIONS))}); move the old log aside (it stays readable "
                               "with the humwatch that wrote it)")
    return v


def check_log(path: str | Path) -> str | None:
    """What is wrong with the score log at ``path`` (None: nothing, or no log), including SQLite's integrity check
    (reads the whole file: for ``humwatch site repair``, not for every start)."""
    path = Path(path)
    try:
        con = connect(path, readonly=True)
    except SiteError as e:
        return None if not isinstance(e, SiteDamagedError) else str(e)
    try:
        bad = [r[0] for r in con.execute("PRAGMA quick_check(3)")]
    except sqlite3.Error as e:
        return str(db_error(e, path, "checking"))
    finally:
        con.close()
    if bad != ["ok"]:
        return f"{path}: damaged score log (SQLite's check: {'; '.join(bad)[:200]}); {_hint(path)}"
    return None


def _path_key(file: str) -> str | bytes:
    """How a source path is stored: the text, or its raw bytes when it is not valid UTF-8."""
    try:
        file.encode("utf-8")
        return file
    except UnicodeEncodeError:
        return os.fsencode(file)


def _path_text(v):
    return os.fsdecode(v) if isinstance(v, bytes) else v


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"t={t:.0f}"


@dataclass
class Run:
    run_id: int
    threshold: float


@dataclass
class Resume:
    """Where a recording stops in the log: its last logged patch and the scores just before (oldest first), to
    bring the alarm rule to the state it had."""

    last_offset_s: float
    patches: int
    recent_scores: list[float] = field(default_factory=list)
    recent_classes: list[bytes | None] = field(default_factory=list)


def writer_lock(path: Path) -> int:
    """An fd holding the exclusive writer lock of the log at ``path`` (``<path>.lock``); SiteLockedError naming the
    holder when another process has it."""
    lock = path.with_name(path.name + ".lock")
    try:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except PermissionError:  # a read-only lock file still locks (flock needs no write access)
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if not path.parent.is_dir():
            raise SiteError(f"{path.parent}: no such site folder") from None
        raise StorageError(f"{lock}: cannot open the score log's lock ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SiteLockedError(f"{path}: the score log is being written by {holder}; one monitor per site at a time "
                              "(stop the other one, or wait until it has finished)") from None
    try:  # who holds it, for the next one's message (a full disk may refuse it: the lock holds anyway)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}".encode(), 0)
    except OSError:
        pass
    return fd


class ScoreLog:
    """Appends scores, alarms and events; commits at most every ``commit_every`` seconds (alarms at once), and on
    :meth:`flush` / :meth:`close`. While the log cannot be written, holds them in memory (see the module doc)."""

    def __init__(self, path: str | Path, commit_every: float = 1.0, max_buffer: int = MAX_BUFFER_ROWS,
                 on_notice=None):
        self.path = Path(path)
        self.commit_every, self.max_buffer = commit_every, max(1, int(max_buffer))
        self.on_notice = on_notice or (lambda msg: warnings.warn(ScoreLogWarning(msg), stacklevel=3))
        self._lock_fd = writer_lock(self.path)
        try:
            self.con = connect(self.path)
            self._next_run = int(self.con.execute("SELECT coalesce(max(run_id), 0) FROM runs").fetchone()[0]) + 1
        except sqlite3.Error as e:
            os.close(self._lock_fd)
            raise db_error(e, self.path, "opening") from None
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._last_flush = time.monotonic()
        self.rows = 0  # patches appended
        self.written = 0  # patches committed
        self.dropped = 0  # patches dropped from a full memory buffer (recorded as scores_dropped events)
        self._runs: list[tuple] = []
        self._file_times: list[tuple] = []
        self._rows: deque[tuple] = deque()
        self._alarms: list[tuple] = []
        self._events: list[tuple] = []
        self._drop: list | None = None  # [count, first t_utc, last t_utc, run_id] not yet recorded
        self._file_ids: dict[str | bytes, int] = {}
        self._device_ids: dict[str, int] = {}
        self._direct = False  # device rows written directly, not committed yet
        self.blocked: str | None = None  # why the log cannot be written now (None: it can)
        self._retry_at = 0.0
        self._closed = False

    # -- writing ---------------------------------------------------------------------------------------------
    def start_run(self, calibration_id: str, model_hash: str, threshold: float, m: int, n: int, source: str,
                  classifier: dict | None = None) -> Run:
        """Open a monitoring run. ``classifier``: ``{"hash", "classes", "thresholds"}`` of the site's classifier."""
        c = classifier or {}
        run_id, self._next_run = self._next_run, self._next_run + 1
        self._runs.append((run_id, time.time(), calibration_id, model_hash, float(threshold), int(m), int(n),
                           shown(source), c.get("hash"), json.dumps(list(c["classes"])) if c else None,
                           json.dumps([float(x) for x in c["thresholds"]]) if c else None))
        self.flush(force=True)
        return Run(run_id, float(threshold))

    def append(self, run: Run, t_utc: np.ndarray, scores: np.ndarray, bands: np.ndarray | None,
               file: str | None, offsets: np.ndarray, class_probs: np.ndarray | None = None) -> None:
        """Log patches: ``scores [n]``, ``bands [n, n_mels]`` or None, ``class_probs [n, n_classes]`` or None;
        ``t_utc`` and ``offsets`` (seconds into ``file``) per patch. Never raises because the disk is full."""
        if not len(scores):
            return
        exceeded = over(scores, run.threshold)
        logged = int(time.time())
        key = None if file is None else _path_key(file)
        t0 = round(float(t_utc[0] - offsets[0]), 3) if file is not None else None
        for i in range(len(scores)):
            b = None if bands is None else np.asarray(bands[i], "<f2").tobytes()
            c = None if class_probs is None else np.asarray(class_probs[i], "<f2").tobytes()
            self._rows.append((float(t_utc[i]), float(scores[i]), int(exceeded[i]), b, run.run_id, key,
                               float(offsets[i]), c, logged, t0))
        self.rows += len(scores)
        while len(self._rows) > self.max_buffer:
            self._drop_oldest()
        self.maybe_commit()

    def _drop_oldest(self) -> None:
        row = self._rows.popleft()
        self.dropped += 1
        if self._drop is None:
            self._drop = [0, row[0], row[0], row[4]]
            self.on_notice(f"{self.path}: {self.max_buffer} scores held in memory, the most it keeps: the oldest "
                           "are being dropped (recorded as a gap in the log) until the log can be written again")
        self._drop[0] += 1
        self._drop[2] = row[0]

    def file_time(self, run: Run, file: str, t0_utc: float, duration_s: float, source: str, detail: str) -> None:
        """Record how ``file``'s start time was found in this run (:mod:`anomaly.recording_time`)."""
        self._file_times.append((run.run_id, _path_key(file), float(t0_utc), float(duration_s), str(source),
                                 shown(detail)))
        self.maybe_commit()

    def alarm(self, run: Run, t_utc: float, score: float, info: dict) -> None:
        """Log an alarm (committed at once when the log can be written; else held, never dropped)."""
        self._alarms.append((float(t_utc), run.run_id, float(score), json.dumps(info), int(time.time())))
        self.flush(force=True)

    def event(self, run: Run | None, t_utc: float, kind: str, info: dict) -> None:
        """Log an event of ``kind`` (held like an alarm when the log cannot be written)."""
        self._events.append((float(t_utc), int(time.time()), None if run is None else run.run_id, str(kind),
                             json.dumps(info)))
        self.maybe_commit()

    # -- devices over MQTT (humwatch ingest): idempotent by (device, sequence number), written at once ----------------
    def device_id(self, device: str) -> int:
        if device not in self._device_ids:
            self.con.execute("INSERT OR IGNORE INTO devices (name) VALUES (?)", (device,))
            self._device_ids[device] = self.con.execute("SELECT device_id FROM devices WHERE name = ?",
                                                        (device,)).fetchone()[0]
        return self._device_ids[device]

    def _direct_write(self, fn):
        """Run ``fn`` (statements of a device write) in the open transaction; StorageError etc. when it fails (the
        transaction is rolled back: nothing of it is logged, and the caller must not acknowledge it)."""
        if not self.flush(force=True):  # the runs and rows held in memory first; a blocked log refuses at once
            raise StorageError(f"{self.blocked}: device scores not logged (they are delivered again)")
        try:
            out = fn()
        except sqlite3.Error as e:
            self._rollback()
            raise db_error(e, self.path, "writing") from None
        self._direct = True
        return out

    def append_device(self, run: Run, device: str, seqs, t_utc, scores, class_probs=None) -> int:
        """Log patches a device sent: a (device, seq) already in the log is skipped (a redelivered message).
        Returns how many rows were new. Committed with the next :meth:`maybe_commit` / :meth:`flush`, which raise
        StorageError when the commit fails."""
        exceeded = over(np.asarray(scores, float), run.threshold)
        logged = int(time.time())

        def write() -> int:
            did = self.device_id(device)
            before = self.con.total_changes
            self.con.executemany(
                "INSERT OR IGNORE INTO scores (t_utc, score, over, run_id, device_id, seq, classes, logged_utc) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(float(t_utc[i]), float(scores[i]), int(exceeded[i]), run.run_id, did, int(seqs[i]),
                  None if class_probs is None or class_probs[i] is None
                  else np.asarray(class_probs[i], "<f2").tobytes(), logged) for i in range(len(scores))])
            return self.con.total_changes - before

        new = self._direct_write(write)
        self.rows += new
        return new

    def alarm_device(self, run: Run, device: str, seq: int, t_utc: float, score: float, info: dict) -> bool:
        """Log an alarm of a device (its onset patch's sequence number); False when it was already logged."""
        def write() -> bool:
            before = self.con.total_changes
            self.con.execute("INSERT OR IGNORE INTO alarms (t_utc, run_id, score, info, device_id, seq, logged_utc) "
                             "VALUES (?,?,?,?,?,?,?)", (t_utc, run.run_id, score, json.dumps(info),
                                                        self.device_id(device), int(seq), int(time.time())))
            return self.con.total_changes > before

        return self._direct_write(write)

    def last_seq(self) -> dict[str, tuple[int, float]]:
        """Per device: its highest logged sequence number and that patch's time (where a restarted ingest resumes)."""
        rows = self.con.execute("SELECT d.name, s.seq, s.t_utc FROM devices d JOIN scores s ON s.rowid = "
                                "(SELECT rowid FROM scores WHERE device_id = d.device_id AND seq IS NOT NULL "
                                "ORDER BY seq DESC LIMIT 1)").fetchall()
        return {name: (int(seq), float(t)) for name, seq, t in rows}

    def recent_device_scores(self, device: str, n: int) -> list[tuple[float, float]]:
        """The device's last ``n`` logged patches (by sequence number) as (score, threshold of its run), oldest first:
        what a restarted ingest replays through the alarm rule to continue where it stopped."""
        row = self.con.execute("SELECT device_id FROM devices WHERE name = ?", (device,)).fetchone()
        if row is None:
            return []
        rows = self.con.execute("SELECT s.score, r.threshold FROM scores s JOIN runs r USING (run_id) WHERE "
                                "s.device_id = ? AND s.seq IS NOT NULL ORDER BY s.seq DESC LIMIT ?",
                                (row[0], n)).fetchall()
        return [(float(a), float(b)) for a, b in reversed(rows)]

    def gap(self, device: str, t_start: float, t_end: float | None) -> None:
        """Note that ``device`` was silent from ``t_start`` (its last patch) to ``t_end`` (None: still silent)."""
        self._direct_write(lambda: self.con.execute(
            "INSERT INTO gaps (device_id, t_start, t_end, noted_utc) VALUES (?,?,?,?) ON CONFLICT (device_id, "
            "t_start) DO UPDATE SET t_end = excluded.t_end, noted_utc = excluded.noted_utc",
            (self.device_id(device), t_start, t_end, time.time())))

    def maybe_commit(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_flush >= self.commit_every:
            self.flush(force)

    @property
    def pending(self) -> int:
        """Patches appended but not written yet."""
        return len(self._rows)

    @property
    def unwritten_alarms(self) -> list[dict]:
        return [json.loads(a[3]) for a in self._alarms]

    def flush(self, force: bool = False) -> bool:
        """Write what is held; True when nothing is left. While the log cannot be written, retries at most every
        RETRY_SECONDS (``force``: now)."""
        if not (self._runs or self._rows or self._alarms or self._events or self._drop or self._file_times
                or self._direct):
            return True
        now = time.monotonic()
        if self.blocked is not None and now < self._retry_at and not force:
            return False
        try:
            self._write()
        except sqlite3.Error as e:
            lost_direct, self._direct = self._direct, False
            self._rollback()
            err = db_error(e, self.path, "writing")
            if not isinstance(err, StorageError) or lost_direct:  # device rows are not held: the caller must know
                raise err from None
            self._retry_at = now + RETRY_SECONDS
            if self.blocked is None:
                self.blocked = str(err)
                self.on_notice(f"{err}: scoring goes on; scores are held in memory (up to {self.max_buffer}, "
                               f"{self.max_buffer * 0.96 / 3600:.0f} h of patches) and written when it can be "
                               "written again")
            return False
        self._last_flush = now
        if self.blocked is not None:
            self.blocked = None
            self.on_notice(f"{self.path}: the score log can be written again; the scores held meanwhile are in it")
        return True

    def _rollback(self) -> None:
        self._file_ids.clear()  # ids handed out in the failed transaction may not exist
        self._device_ids.clear()
        try:
            self.con.rollback()
        except sqlite3.Error:
            pass

    def _write(self) -> None:
        con = self.con
        if self._runs:
            with con:
                con.executemany("INSERT INTO runs (run_id, started_utc, calibration_id, model_hash, threshold, "
                                "alarm_m, alarm_n, source, classifier_hash, classes, class_thresholds) "
                                "VALUES (?,?,?,?,?,?,?,?,?,?,?)", self._runs)
            self._runs.clear()
        if self._file_times:
            with con:
                con.executemany("INSERT OR REPLACE INTO file_times VALUES (?,?,?,?,?,?)",
                                [(r[0], self._file_id(r[1]), *r[2:]) for r in self._file_times])
            self._file_times.clear()
        if self._drop is not None:
            n, a, b, run_id = self._drop
            self._events.append((a, int(time.time()), run_id, "scores_dropped",
                                 json.dumps({"patches": n, "from_utc": _iso(a), "to_utc": _iso(b),
                                             "why": "the log could not be written and the memory buffer was full"})))
            self._drop = None
        if self._alarms or self._events:
            with con:
                con.executemany("INSERT INTO alarms (t_utc, run_id, score, info, logged_utc) VALUES (?,?,?,?,?)",
                                self._alarms)
                con.executemany("INSERT INTO events (t_utc, logged_utc, run_id, kind, info) VALUES (?,?,?,?,?)",
                                self._events)
            self._alarms.clear()
            self._events.clear()
        while self._rows:
            chunk = [self._rows[i] for i in range(min(CHUNK_ROWS, len(self._rows)))]
            progress: dict[tuple[int, float], list] = {}
            rows = []
            with con:
                for r in chunk:
                    key, fid = r[5], None
                    if key is not None:
                        fid = self._file_id(key)
                        p = progress.setdefault((fid, r[9]), [r[6], 0])
                        p[0], p[1] = max(p[0], r[6]), p[1] + 1
                    rows.append((r[0], r[1], r[2], r[3], r[4], fid, r[6], r[7], r[8]))
                con.executemany("INSERT INTO scores (t_utc, score, over, bands, run_id, file_id, offset_s, classes, "
                                "logged_utc) VALUES (?,?,?,?,?,?,?,?,?)", rows)
                con.executemany("INSERT INTO recordings (file_id, t0_utc, last_offset_s, patches) VALUES (?,?,?,?) "
                                "ON CONFLICT (file_id, t0_utc) DO UPDATE SET last_offset_s = "
                                "max(last_offset_s, excluded.last_offset_s), patches = patches + excluded.patches",
                                [(f, t0, last, n) for (f, t0), (last, n) in progress.items()])
            for _ in chunk:
                self._rows.popleft()
            self.written += len(chunk)
        if self._direct:
            con.commit()
            self._direct = False

    def _file_id(self, key: str | bytes) -> int:
        """The id of a source path (inserted when new; within the caller's transaction)."""
        fid = self._file_ids.get(key)
        if fid is None:
            self.con.execute("INSERT OR IGNORE INTO files (path) VALUES (?)", (key,))
            fid = self._file_ids[key] = self.con.execute("SELECT file_id FROM files WHERE path = ?",
                                                         (key,)).fetchone()[0]
        return fid

    def prune(self, retention_days: float = DEFAULT_RETENTION_DAYS, now: float | None = None) -> int:
        """Delete scores, alarms and events *logged* more than ``retention_days`` ago (rows from before layout 5:
        their run's start); returns the scores deleted. When the log cannot be written, nothing is deleted (and
        the writer is told)."""
        cutoff = (time.time() if now is None else now) - retention_days * 86400
        old_runs = "SELECT run_id FROM runs WHERE started_utc < ?"
        try:
            with self.con:
                n = self.con.execute("DELETE FROM scores WHERE logged_utc < ?", (cutoff,)).rowcount
                n += self.con.execute(f"DELETE FROM scores WHERE logged_utc IS NULL AND run_id IN ({old_runs})",
                                      (cutoff,)).rowcount
                self.con.execute("DELETE FROM alarms WHERE logged_utc < ?", (cutoff,))
                self.con.execute(f"DELETE FROM alarms WHERE logged_utc IS NULL AND run_id IN ({old_runs})",
                                 (cutoff,))
                self.con.execute("DELETE FROM events WHERE logged_utc < ?", (cutoff,))
                self.con.execute("DELETE FROM gaps WHERE noted_utc < ?", (cutoff,))
        except sqlite3.Error as e:
            self._rollback()
            err = db_error(e, self.path, "pruning")
            if not isinstance(err, StorageError):
                raise err from None
            self.on_notice(f"{err}: old scores not pruned this time")
            return 0
        return n

    # -- restarts --------------------------------------------------------------------------------------------
    def resume_point(self, file: str, t0_utc: float, window: int = 60) -> Resume | None:
        """Where the recording ``file`` whose first sample is at ``t0_utc`` stops in the log (also counting what is
        held in memory), or None when none of it is logged. A file of the same path but another start time is
        another recording."""
        key = _path_key(file)
        t0 = round(float(t0_utc), 3)
        held = [r for r in self._rows if r[5] == key and r[9] is not None and abs(r[9] - t0) < 0.5]
        best = None
        try:
            row = self.con.execute("SELECT file_id FROM files WHERE path = ?", (key,)).fetchone()
            if row is not None:
                best = self.con.execute("SELECT last_offset_s, patches FROM recordings WHERE file_id = ? AND "
                                        "abs(t0_utc - ?) < 0.5 ORDER BY last_offset_s DESC LIMIT 1",
                                        (row[0], t0)).fetchone()
        except sqlite3.Error as e:
            raise db_error(e, self.path, "reading") from None
        if best is None and not held:
            return None
        last = max(([best[0]] if best else []) + [r[6] for r in held])
        recent: list[tuple[float, float, bytes | None]] = []
        if row is not None:
            hi = t0 + last + 1.0
            recent = self.con.execute("SELECT t_utc, score, classes FROM scores WHERE t_utc BETWEEN ? AND ? AND "
                                      "file_id = ? ORDER BY t_utc DESC LIMIT ?",
                                      (hi - 2.0 * (window + 2), hi, row[0], window)).fetchall()
        recent = sorted(set(recent) | {(r[0], r[1], r[7]) for r in held[-window:]})[-window:]
        return Resume(float(last), (best[1] if best else 0) + len(held), [r[1] for r in recent],
                      [r[2] for r in recent])

    def close(self) -> None:
        """Write what is held and close. StorageError when some of it still cannot be written (what, and from
        when, is in the message; :attr:`unwritten_alarms` lists the alarms)."""
        if self._closed:
            return
        try:
            if not self.flush(force=True):
                times = [r[0] for r in self._rows]
                what = f"{len(self._rows)} score(s)" + (f" from {_iso(min(times))} to {_iso(max(times))} UTC"
                                                        if times else "")
                raise StorageError(f"{self.blocked}: {what} and {len(self._alarms)} alarm(s) could not be logged "
                                   "(alarms are also in alarms.jsonl when that could be written)")
        finally:
            self._closed = True
            try:
                self.con.close()
            finally:
                os.close(self._lock_fd)

    def abandon(self) -> None:
        """Close after an error: try once to write what is held, never raise."""
        try:
            self.close()
        except Exception:
            pass


# -- reading -----------------------------------------------------------------------------------------------------------
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
        return _check_version(con, Path(path)) or SCHEMA_VERSION, has is not None
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
        raise SiteDamagedError(f"{path}: cannot read the score log ({e}); {_hint(Path(path))}") from None
    finally:
        con.close()
    df["file"] = pd.Series([_path_text(v) for v in df["file"]], index=df.index, dtype=object)
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
        version = _check_version(con, Path(path)) or SCHEMA_VERSION
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
        return {_path_text(r[0]) for r in con.execute("SELECT path FROM files WHERE file_id IN (SELECT DISTINCT "
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
            raise SiteDamagedError(f"{path}: cannot read the score log ({e}); {_hint(Path(path))}") from None
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
        raise SiteDamagedError(f"{path}: cannot read the score log ({why}); {_hint(path)}") from None
    finally:
        con.close()
    if "file" in df:  # object dtype: an undecodable name stays the exact str Python opens (not arrow text)
        df["file"] = pd.Series([_path_text(v) for v in df["file"]], index=df.index, dtype=object)
    df.insert(1, "time", pd.to_datetime(df["t_utc"], unit="s", utc=True))
    return df
