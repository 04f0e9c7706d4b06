"""Score logs as older humwatch versions wrote them, for the tests of reading them as they are and upgrading them in
place: the one copy of each old layout's tables in the tests.

Written out here rather than taken from ``calibration.monitoring.scorelog`` (whose upgrade columns they mirror), so
that a change to the library's upgrade cannot silently change what the tests call an old log. Layout 1 is only its
version (a log of layout 1 is refused from the version alone).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_RUNS = ("run_id INTEGER PRIMARY KEY, started_utc REAL NOT NULL, calibration_id TEXT NOT NULL, model_hash TEXT NOT "
         "NULL, threshold REAL NOT NULL, alarm_m INTEGER NOT NULL, alarm_n INTEGER NOT NULL, source TEXT NOT NULL")
_SCORES = ("t_utc REAL NOT NULL, score REAL NOT NULL, over INTEGER NOT NULL, bands BLOB, run_id INTEGER NOT NULL, "
           "file_id INTEGER, offset_s REAL")
_ALARMS = "t_utc REAL NOT NULL, run_id INTEGER NOT NULL, score REAL NOT NULL, info TEXT NOT NULL"
# what each layout added to the one before, per table (columns) and as whole tables / indexes
_ADDED_COLUMNS = {
    3: {"runs": "classifier_hash TEXT, classes TEXT, class_thresholds TEXT", "scores": "classes BLOB"},
    4: {"scores": "device_id INTEGER, seq INTEGER", "alarms": "device_id INTEGER, seq INTEGER"},
    5: {"scores": "logged_utc INTEGER", "alarms": "logged_utc INTEGER"},
}
_ADDED_TABLES = {
    4: """
        CREATE TABLE devices (device_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        CREATE UNIQUE INDEX scores_device_seq ON scores(device_id, seq) WHERE seq IS NOT NULL;
        CREATE UNIQUE INDEX alarms_device_seq ON alarms(device_id, seq) WHERE seq IS NOT NULL;
        CREATE TABLE file_times (run_id INTEGER NOT NULL, file_id INTEGER NOT NULL, t0_utc REAL NOT NULL,
            duration_s REAL NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (run_id, file_id));
        CREATE TABLE gaps (device_id INTEGER NOT NULL, t_start REAL NOT NULL, t_end REAL, noted_utc REAL NOT NULL,
            PRIMARY KEY (device_id, t_start));
    """,
    5: """
        CREATE TABLE events (t_utc REAL NOT NULL, logged_utc INTEGER NOT NULL, run_id INTEGER, kind TEXT NOT NULL,
            info TEXT NOT NULL);
        CREATE TABLE recordings (file_id INTEGER NOT NULL, t0_utc REAL NOT NULL, last_offset_s REAL NOT NULL,
            patches INTEGER NOT NULL, PRIMARY KEY (file_id, t0_utc));
    """,
}
LAYOUTS = (1, 2, 3, 4, 5)


def layout_sql(version: int) -> str:
    """The SQL creating an empty score log of layout ``version`` (its ``meta`` row included)."""
    if version not in LAYOUTS:
        raise ValueError(f"no legacy score-log layout {version} (known: {LAYOUTS})")
    sql = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
    sql += f"INSERT INTO meta VALUES ('schema_version', '{version}');\n"
    if version == 1:
        return sql
    tables = {"runs": _RUNS, "scores": _SCORES, "alarms": _ALARMS}
    for v in range(3, version + 1):
        for table, columns in _ADDED_COLUMNS.get(v, {}).items():
            tables[table] += ", " + columns
    sql += "".join(f"CREATE TABLE {name} ({columns});\n" for name, columns in tables.items())
    sql += "CREATE TABLE files (file_id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);\n"
    return sql + "".join(_ADDED_TABLES.get(v, "") for v in range(3, version + 1))


def legacy_log(path: Path, version: int, rows_sql: str = "") -> Path:
    """Write a score log of layout ``version`` at ``path``, then run ``rows_sql`` (its rows) on it; returns ``path``."""
    con = sqlite3.connect(path)
    try:
        con.executescript(f"BEGIN;{layout_sql(version)}{rows_sql}COMMIT;")
    finally:
        con.close()
    return path
