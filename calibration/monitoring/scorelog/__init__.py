"""The site's raw-score log: every scored patch, append-only, crash-safe, readable from pandas.

SQLite in WAL mode (``sites/<name>/scores.sqlite``). Why SQLite rather than daily Parquet files: a Parquet file is
only readable once it is closed, so a process killed mid-day would lose the day (or need many tiny files);
SQLite's write-ahead log makes every committed transaction survive a crash of the writer (SIGKILL included) with
``synchronous=NORMAL``, readers never block the writer, and ``pandas.read_sql`` reads it directly. The monitor
commits at least once a second, so a SIGKILL loses at most the last second of scores.

The API (what the monitor and any other writer, e.g. an ingest of device telemetry, use; nothing else writes it):

* ``ScoreLog(path)`` opens it for writing -- one writer at a time (a second gets SiteLockedError, exit 75);
  ``start_run(...)`` -> :class:`Run`; ``append(run, t_utc, scores, bands, file, offsets, class_probs, levels)``;
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
that may hold such duplicates, and the readers drop them (same file, offset and time: the first is kept). The
:class:`Resume` carries the last scores, class probabilities and novel-state levels of the file (as many patches as
the monitor asks for: its alarm rule's window, the novel-state tracker's memory), from which the monitor brings its
alarm rules and novel-state tracker to the state they had.

The ``file_times`` table records how each file's start time was found (:mod:`anomaly.recording_time`: metadata,
name, start-time, contiguous, mtime), so that the report can mark periods whose times are uncertain;
:func:`read_scores` gives it as ``time_source`` (``clock`` for live input).

Size: one row per 0.96 s patch -- time, score, a 64-band error vector as float16 (128 bytes), the logging time, and
small integer references to the run (calibration, model, threshold) and the source file -- about 200 bytes with
SQLite's overhead and the time index, i.e. ~18 MB per day and ~1 GB for the default retention of 8 weeks
(measured by ``bench/monitor.py``; ``tests/test_monitor.py`` checks the bytes per row). A site with a fault
classifier adds its per-class probabilities (float16, 2 bytes per class) to each row, and a calibration with
operating states (every one since #14) the novel-state tracker's 8 group levels (float32: ~240 bytes a row, ~20 MB
a day).

Layouts: 3 added the class probabilities and each run's classifier (and, later, ``file_times``); 4 the fleet's
devices: scores and alarms that came over MQTT carry their device and its sequence number (``boot << 32 | seq``),
unique per device, so that a redelivered message is never logged twice, and ``gaps`` records the periods a device
was silent; 5 added ``logged_utc``, ``events`` and ``recordings``; 6 ``scores.levels`` (the novel-state tracker's
input, for restarts; NULL in older rows, which a restart cannot resume the tracker from). Older layouts (2 to 5) are
upgraded in place (columns, tables and indexes added in one transaction, nothing rewritten) when a writer opens
them, and read as they are. A file that is not a humwatch score log (another program's database, a truncated copy,
not SQLite at all) or of a newer layout is refused with SiteDamagedError (exit 5) naming it; ``humwatch site repair
NAME`` moves a damaged one aside.

The package: :mod:`~calibration.monitoring.scorelog.schema` (the layout, its upgrades, opening and checking a log,
errors), :mod:`~calibration.monitoring.scorelog.writer` (:class:`ScoreLog`, the writer lock) and
:mod:`~calibration.monitoring.scorelog.readers` (DataFrames and aggregates); every public name is importable from
``calibration.monitoring.scorelog`` itself.
"""

from calibration.monitoring.scorelog.readers import (
    NOTICE_KINDS,
    NOVEL_STATE,
    logged_files,
    read_alarms,
    read_events,
    read_file_times,
    read_gaps,
    read_scores,
    summarize,
)
from calibration.monitoring.scorelog.schema import (
    LEVELS_DTYPE,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    SQLITE_MAGIC,
    T_MAX,
    ScoreLogWarning,
    check_log,
    connect,
    db_error,
)
from calibration.monitoring.scorelog.writer import (
    CHUNK_ROWS,
    DEFAULT_RETENTION_DAYS,
    MAX_BUFFER_ROWS,
    RETRY_SECONDS,
    Resume,
    Run,
    ScoreLog,
    writer_lock,
)

__all__ = [
    "CHUNK_ROWS", "DEFAULT_RETENTION_DAYS", "LEVELS_DTYPE", "MAX_BUFFER_ROWS", "NOTICE_KINDS", "NOVEL_STATE",
    "READABLE_VERSIONS", "RETRY_SECONDS", "SCHEMA_VERSION", "SQLITE_MAGIC", "T_MAX", "Resume", "Run", "ScoreLog",
    "ScoreLogWarning", "check_log", "connect", "db_error", "logged_files", "read_alarms", "read_events",
    "read_file_times", "read_gaps", "read_scores", "summarize", "writer_lock",
]
