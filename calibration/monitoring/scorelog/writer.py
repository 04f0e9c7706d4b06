"""The score log's one writer, :class:`ScoreLog` (monitor and ingest), its writer lock and what it hands out
(:class:`Run`, :class:`Resume`). See the package doc for durability, retention and restarts."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anomaly.decision import over
from anomaly.errors import StorageError, shown
from calibration.errors import SiteError, SiteLockedError
from calibration.monitoring.scorelog.schema import LEVELS_DTYPE, ScoreLogWarning, connect, db_error, iso_utc, path_key

DEFAULT_RETENTION_DAYS = 56
MAX_BUFFER_ROWS = 100_000  # scores held in memory while the log cannot be written (~26 h of 0.96 s patches)
RETRY_SECONDS = 5.0  # how often writing is retried while the log cannot be written
CHUNK_ROWS = 5000  # rows per transaction when writing held rows


@dataclass
class Run:
    run_id: int
    threshold: float


@dataclass
class Resume:
    """Where a recording stops in the log: its last logged patch and, of the patches just before (oldest first),
    the scores, class probabilities and novel-state levels (blobs as logged), to bring the alarm rules and the
    novel-state tracker to the state they had."""

    last_offset_s: float
    patches: int
    recent_scores: list[float] = field(default_factory=list)
    recent_classes: list[bytes | None] = field(default_factory=list)
    recent_levels: list[bytes | None] = field(default_factory=list)


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
               file: str | None, offsets: np.ndarray, class_probs: np.ndarray | None = None,
               levels: np.ndarray | None = None, commit: bool = True) -> None:
        """Log patches: ``scores [n]``, ``bands [n, n_mels]`` or None, ``class_probs [n, n_classes]`` or None,
        ``levels [n, k]`` (the novel-state tracker's input, stored as float32) or None; ``t_utc`` and ``offsets``
        (seconds into ``file``) per patch. ``commit=False``: held until the next flush (e.g. with the alarm they
        raise). Never raises because the disk is full."""
        if not len(scores):
            return
        exceeded = over(scores, run.threshold)
        logged = int(time.time())
        key = None if file is None else path_key(file)
        t0 = round(float(t_utc[0] - offsets[0]), 3) if file is not None else None
        for i in range(len(scores)):
            b = None if bands is None else np.asarray(bands[i], "<f2").tobytes()
            c = None if class_probs is None else np.asarray(class_probs[i], "<f2").tobytes()
            lv = None if levels is None else np.asarray(levels[i], LEVELS_DTYPE).tobytes()
            self._rows.append((float(t_utc[i]), float(scores[i]), int(exceeded[i]), b, run.run_id, key,
                               float(offsets[i]), c, logged, t0, lv))
        self.rows += len(scores)
        while len(self._rows) > self.max_buffer:
            self._drop_oldest()
        if commit:
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
        self._file_times.append((run.run_id, path_key(file), float(t0_utc), float(duration_s), str(source),
                                 shown(detail)))
        self.maybe_commit()

    def alarm(self, run: Run, t_utc: float, score: float, info: dict) -> None:
        """Log an alarm (committed at once, in one transaction with the scores held, when the log can be written;
        else held, never dropped)."""
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
        """Write what is held: runs and file times, then the scores in chunks; alarms and events go into the
        transaction of the last chunk, so that an alarm and the patches it was decided on (:meth:`append` with
        ``commit=False``) are committed together or not at all."""
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
                                 json.dumps({"patches": n, "from_utc": iso_utc(a), "to_utc": iso_utc(b),
                                             "why": "the log could not be written and the memory buffer was full"})))
            self._drop = None
        while self._rows or self._alarms or self._events:
            chunk = [self._rows[i] for i in range(min(CHUNK_ROWS, len(self._rows)))]
            last = len(chunk) == len(self._rows)
            with con:
                self._insert_rows(chunk)
                if last:
                    con.executemany("INSERT INTO alarms (t_utc, run_id, score, info, logged_utc) VALUES (?,?,?,?,?)",
                                    self._alarms)
                    con.executemany("INSERT INTO events (t_utc, logged_utc, run_id, kind, info) VALUES (?,?,?,?,?)",
                                    self._events)
            for _ in chunk:
                self._rows.popleft()
            self.written += len(chunk)
            if last:
                self._alarms.clear()
                self._events.clear()
        if self._direct:
            con.commit()
            self._direct = False

    def _insert_rows(self, chunk: list[tuple]) -> None:
        """Insert held score rows and advance their recordings' progress (in the caller's transaction)."""
        progress: dict[tuple[int, float], list] = {}
        rows = []
        for r in chunk:
            key, fid = r[5], None
            if key is not None:
                fid = self._file_id(key)
                p = progress.setdefault((fid, r[9]), [r[6], 0])
                p[0], p[1] = max(p[0], r[6]), p[1] + 1
            rows.append((r[0], r[1], r[2], r[3], r[4], fid, r[6], r[7], r[8], r[10]))
        self.con.executemany("INSERT INTO scores (t_utc, score, over, bands, run_id, file_id, offset_s, classes, "
                             "logged_utc, levels) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        self.con.executemany("INSERT INTO recordings (file_id, t0_utc, last_offset_s, patches) VALUES (?,?,?,?) "
                             "ON CONFLICT (file_id, t0_utc) DO UPDATE SET last_offset_s = "
                             "max(last_offset_s, excluded.last_offset_s), patches = patches + excluded.patches",
                             [(f, t0, last, n) for (f, t0), (last, n) in progress.items()])

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
        another recording. The :class:`Resume` carries the last ``window`` patches (at most)."""
        key = path_key(file)
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
        logged = [] if row is None else self._recent(row[0], t0 + last + 1.0, window)
        # one row per (time, score): blobs are never compared
        by_time = {(r[0], r[1]): r for r in logged + [(r[0], r[1], r[7], r[10]) for r in held[-window:]]}
        recent = [by_time[k] for k in sorted(by_time)][-window:]
        return Resume(float(last), (best[1] if best else 0) + len(held), [r[1] for r in recent],
                      [r[2] for r in recent], [r[3] for r in recent])

    def _recent(self, file_id: int, hi: float, window: int) -> list[tuple]:
        """The last ``window`` logged patches of a file up to time ``hi``: (t_utc, score, classes, levels)."""
        try:
            return self.con.execute("SELECT t_utc, score, classes, levels FROM scores WHERE t_utc BETWEEN ? AND ? "
                                    "AND file_id = ? ORDER BY t_utc DESC LIMIT ?",
                                    (hi - 2.0 * (window + 2), hi, file_id, window)).fetchall()
        except sqlite3.Error as e:
            raise db_error(e, self.path, "reading") from None

    def close(self) -> None:
        """Write what is held and close. StorageError when some of it still cannot be written (what, and from
        when, is in the message; :attr:`unwritten_alarms` lists the alarms)."""
        if self._closed:
            return
        try:
            if not self.flush(force=True):
                times = [r[0] for r in self._rows]
                what = f"{len(self._rows)} score(s)" + (f" from {iso_utc(min(times))} to {iso_utc(max(times))} UTC"
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
