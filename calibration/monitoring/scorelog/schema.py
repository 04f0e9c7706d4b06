"""The score log's layout: the SQL schema, its version and the in-place upgrades of older layouts, opening a log
(checked: not SQLite, truncated, foreign or newer files are refused), sqlite3 errors as humwatch errors, and the
helpers the writer and the readers share (how a source path is stored, times as text). See the package doc."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from anomaly.errors import HumwatchWarning, StorageError
from calibration.errors import SiteDamagedError, SiteError, SiteLockedError

SCHEMA_VERSION = 6  # 2: source paths in their own table; 3: classifier outputs; 4: devices, sequence numbers, gaps;
# 5: logged_utc, events, recordings; 6: the novel-state tracker's input (levels)
READABLE_VERSIONS = (2, 3, 4, 5, 6)
LEVELS_DTYPE = "<f4"  # scores.levels: the novel-state tracker's group levels, float32 little-endian
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
    logged_utc INTEGER,           -- when the row was written (wall clock, whole seconds): what retention counts
    levels BLOB                   -- the novel-state tracker's input (calibration.states: group levels, float32
                                  -- little-endian), so that a restarted monitor resumes it; NULL without states
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
_V6_COLUMNS = (("scores", "levels BLOB"),)
_FILL_RECORDINGS = """
INSERT OR REPLACE INTO recordings (file_id, t0_utc, last_offset_s, patches)
SELECT file_id, round(t_utc - offset_s, 3), max(offset_s), count(*) FROM scores
WHERE file_id IS NOT NULL AND offset_s IS NOT NULL GROUP BY file_id, round(t_utc - offset_s, 3)
"""


class ScoreLogWarning(HumwatchWarning):
    """The score log cannot be written for now (scores held in memory), or can be again."""


def repair_hint(path: Path) -> str:
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
    return SiteDamagedError(f"{path}: not a readable humwatch score log ({text}); {repair_hint(path)}")


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
        raise SiteDamagedError(f"{path}: not a regular file (it should be the score log); {repair_hint(path)}")
    if st.st_size == 0:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as e:
        raise StorageError(f"{path}: cannot read the score log ({e.strerror})") from None
    if not head.startswith(SQLITE_MAGIC):
        raise SiteDamagedError(f"{path}: not a humwatch score log (not an SQLite file); {repair_hint(path)}")
    if len(head) < 100:
        raise SiteDamagedError(f"{path}: truncated score log ({st.st_size} bytes); {repair_hint(path)}")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    counter_ok = head[24:28] == head[92:96] and pages > 0
    if page < 512 or st.st_size % page or (counter_ok and pages * page > st.st_size):
        raise SiteDamagedError(f"{path}: truncated score log ({st.st_size} bytes where its header promises "
                               f"{pages * page}); {repair_hint(path)}")
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
            if check_version(con, path) is None:
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
        version = check_version(con, path)
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
    """SQL adding what layouts 3 to 6 added to a layout-``version`` log (run in one transaction)."""
    added = {3: _V3_COLUMNS, 4: _V4_COLUMNS, 5: _V5_COLUMNS, 6: _V6_COLUMNS}
    columns = [c for v, cols in added.items() if version < v for c in cols]
    fill = _FILL_RECORDINGS + ";" if version < 5 else ""  # layout 5's recordings, from the rows logged before
    return ("".join(f"ALTER TABLE {table} ADD COLUMN {column};" for table, column in columns) + _SCHEMA + fill
            + f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';")


def check_version(con: sqlite3.Connection, path: Path) -> int | None:
    """The log's layout (None for a new, empty database); SiteDamagedError for one this humwatch cannot use."""
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "meta" not in tables:
            raise SiteDamagedError(f"{path}: an SQLite database that is not a humwatch score log (tables: "
                                   f"{', '.join(sorted(tables))[:80]}); {repair_hint(path)}")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as e:
        raise db_error(e, path, "reading") from None
    if row is None or not str(row[0]).isdigit():
        raise SiteDamagedError(f"{path}: a database without a humwatch score-log layout version; {repair_hint(path)}")
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
        return f"{path}: damaged score log (SQLite's check: {'; '.join(bad)[:200]}); {repair_hint(path)}"
    return None


def path_key(file: str) -> str | bytes:
    """How a source path is stored: the text, or its raw bytes when it is not valid UTF-8."""
    try:
        file.encode("utf-8")
        return file
    except UnicodeEncodeError:
        return os.fsencode(file)


def path_text(v):
    return os.fsdecode(v) if isinstance(v, bytes) else v


def iso_utc(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"t={t:.0f}"
