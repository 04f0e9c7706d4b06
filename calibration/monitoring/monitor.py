"""Live monitoring: score every patch against the site's current calibration, apply the alarm rule, log everything.

Every raw score goes to the site's score log (:mod:`calibration.monitoring.scorelog`); alarms also go to
``sites/<name>/alarms.jsonl`` (one JSON object per line, flushed and fsynced) and, with ``on_alarm``, to a command
that receives the alarm JSON on its standard input.

With a fault classifier attached to the site (``humwatch site set-classifier``), every patch also gets the
classifier's calibrated per-class probabilities (logged with the score), each anomaly alarm carries a ``fault``
section naming the likely fault, and the classes listed in ``classifier_alarm`` raise alarms of their own (kind
``"classifier"``) under the same m-of-n rule, a patch counting when its probability reaches the class threshold:
the remedy for a fault whose sound the autoencoder reconstructs well.

Start-up checks everything before any audio is read (:meth:`MonitorConfig.check`: the start time in a sane range,
the --on-alarm command parsed and found, the retention). A file that cannot be scored -- unreadable, not audio,
samples far outside full scale, a time that cannot be right -- is skipped with a warning naming it; the others are
scored. A file (same path and start time) the log already holds, in part or whole, is resumed where the log stops,
the alarm rules (over their whole window) and the novel-state tracker brought to the state they had there. When the
log or alarms.jsonl cannot be written (disk full), scoring goes on and both are held in memory
(:mod:`calibration.monitoring.scorelog`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from anomaly.atomic import failpoint
from anomaly.audio import audio_info, iter_blocks
from anomaly.decision import hits_rule, over
from anomaly.errors import AudioError, DataError, HumwatchWarning, shown
from anomaly.features import PatchStream, mel_centers
from anomaly.recording_time import FileTime, TimePolicy, assign_times, check_readable
from anomaly.vocabulary import band_hint
from calibration.calibrate import calibration_rule, site_classifier, site_detector
from calibration.errors import CalibrationError, SiteError
from calibration.monitoring.scorelog import DEFAULT_RETENTION_DAYS, LEVELS_DTYPE, NOVEL_STATE, Resume, ScoreLog
from calibration.states import GROUPS, MEMORY, StateModel, group_levels
from calibration.store import Site

EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC).timestamp()  # recordings before this are a typo
LATEST_AHEAD_S = 86400.0  # a recording may start at most a day after the clock (time zones, clock drift)
ON_ALARM_TIMEOUT_S = 30.0


class MonitorWarning(HumwatchWarning):
    """A skipped file or a failed --on-alarm command; monitoring goes on."""


def start_range(now: float | None = None) -> tuple[float, float]:
    """The recording start times monitoring accepts: 2000-01-01 to a day from now (UTC epoch seconds)."""
    return EARLIEST_START, (time.time() if now is None else now) + LATEST_AHEAD_S


def check_start(t: float, what: str = "--start-time") -> float:
    """``t`` if it is a plausible recording start (:func:`start_range`), else CalibrationError saying the range."""
    lo, hi = start_range()
    if not (isinstance(t, (int, float)) and math.isfinite(t) and lo <= t <= hi):
        raise CalibrationError(f"{what} {_when(t)} is outside the accepted range {_when(lo)} to {_when(hi)} (UTC; "
                               "a day ahead of this computer's clock at most)")
    return float(t)


def _when(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(t)


def parse_on_alarm(command: str) -> list[str]:
    """The --on-alarm command as an argument list (shell-like quoting, no shell): CalibrationError when it does not
    parse or its program is not found."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise CalibrationError(f"--on-alarm {shown(command)!r} does not parse: {e} (quote it as a shell would)") \
            from None
    if not argv:
        raise CalibrationError("--on-alarm is empty: give the command to run on each alarm")
    if "\x00" in command:
        raise CalibrationError("--on-alarm must not contain a NUL character")
    if shutil.which(argv[0]) is None:
        raise CalibrationError(f"--on-alarm: program {shown(argv[0])!r} not found (or not executable)")
    return argv


@dataclass
class MonitorConfig:
    realtime: bool = False
    on_alarm: str | None = None
    retention_days: float = DEFAULT_RETENTION_DAYS
    start_utc: float | None = None  # the time of the first file without one of its own (anomaly.recording_time)
    time_policy: TimePolicy | None = None  # how files are placed in time (default: TimePolicy(start_utc=start_utc))
    on_alarm_line: Callable[[dict], None] | None = None  # called with every alarm (e.g. a log line per alarm)

    @property
    def policy(self) -> TimePolicy:
        return self.time_policy or TimePolicy(start_utc=self.start_utc)

    def check(self) -> list[str] | None:
        """Check every setting (before anything is read); returns the parsed --on-alarm command (or None)."""
        if self.start_utc is not None:
            check_start(self.start_utc)
        r = self.retention_days
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 1 <= r <= 36500:
            raise CalibrationError(f"--retention-days must be between 1 and 36500, got {r!r}")
        return None if self.on_alarm is None else parse_on_alarm(self.on_alarm)


class Sink(Protocol):
    """Where a monitor also sends its scores and alarms (e.g. :class:`calibration.fleet.publish.TelemetrySink`,
    ``monitor --publish``): ``start`` once per run (with the alarm rule the monitor applies), ``patches`` returns the
    patches' sequence numbers."""

    def start(self, run_id: int, threshold: float, model_hash: str, calibration_id: str,
              classes: list[str], rule=None) -> None: ...

    def patches(self, t_utc: np.ndarray, scores: np.ndarray, exceeded: np.ndarray,
                probs: np.ndarray | None) -> list[int]: ...

    def alarm(self, seq: int, t_utc: float, score: float, threshold: float, class_index: int | None,
              probs: np.ndarray | None) -> None: ...


@dataclass
class MonitorState:
    """What the live view shows."""

    threshold: float
    rule: str
    recent: deque = field(default_factory=lambda: deque(maxlen=60))
    patches: int = 0
    alarms: int = 0
    in_alarm: bool = False
    last_alarm: dict | None = None
    source: str = ""
    skipped: list[str] = field(default_factory=list)
    resumed: int = 0  # patches already in the log (a restarted run), not scored again
    audio_seconds: float = 0.0
    top_class: tuple[str, float] | None = None  # the most likely non-normal class of the last patch
    alarm_faults: dict[str, int] = field(default_factory=dict)  # alarms per likely fault ("unknown": none fired)
    time_sources: dict[str, int] = field(default_factory=dict)  # files per way their time was found
    time_problems: list[str] = field(default_factory=list)  # overlapping, out-of-order or guessed file times
    novel_states: int = 0  # novel-state notices (calibration.states): sounds the calibration never heard
    in_novel_state: bool = False
    last_novel: dict | None = None


@dataclass
class _Batch:
    """One block's scored patches while the rules decide on them; ``logged``: how many are in the log's hands."""

    file: str | None
    ts: np.ndarray
    offs: np.ndarray
    scores: np.ndarray
    bands: np.ndarray | None
    probs: np.ndarray | None
    levels: np.ndarray | None
    seqs: list
    at: int = 0  # the patch being decided
    logged: int = 0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class Monitor:
    """Scores a stream of sources for one site. Use as a context manager (closes the log)."""

    def __init__(self, site: Site, cfg: MonitorConfig, on_update: Callable[[MonitorState], None] | None = None,
                 sink: Sink | None = None):
        self.site, self.cfg, self.on_update, self.sink = site, cfg, on_update, sink
        self.on_alarm_argv = cfg.check()
        sc = site.config()
        self.machine = sc.machine  # the words of alarms' bands follow its type (anomaly.vocabulary)
        self.calibration = site.calibration()  # raises SiteError when uncalibrated
        self.det, self.offsets, self.model_hash = site_detector(site)
        if self.calibration["model"]["hash"] != self.model_hash:
            made_with = self.calibration["model"]["hash"]
            raise SiteError(f"site {site.name!r}: the current calibration was made with model {made_with}, the site "
                            f"now uses {self.model_hash}; calibrate again")
        th = self.calibration["threshold"]
        self.threshold = float(th["threshold"])
        self.alarm_rule = calibration_rule(self.calibration)  # the rule the certificate was made for
        self.rule = self.alarm_rule.stream(self.threshold)
        self.state = MonitorState(self.threshold, self.alarm_rule.short)
        base = self.calibration.get("baseline", {}).get("band_error_mean")
        self.band_baseline = np.asarray(base, float) if base else None
        self.centers = mel_centers(self.det.params)
        self.clf, self.clf_hash = site_classifier(site, self.det.params)
        if self.clf is not None:
            self.class_thr = self.clf.threshold_array
            # class name -> (its column in the probabilities, the site's rule on it); the index is looked up once here
            self.class_rules = {}
            for c in sc.classifier_alarm:
                k = self.clf.classes.index(c)
                self.class_rules[c] = (k, hits_rule(self.alarm_rule).stream(self.class_thr[k], inclusive=True))
            self.window: deque[tuple[bool, np.ndarray]] = deque(maxlen=self.alarm_rule.n)
        states = self.calibration.get("states")
        # novel-state notices (a calibration made before #14 has no states: none are raised)
        self.novelty = StateModel.from_dict(states).tracker() if isinstance(states, dict) else None
        # how many of a resumed file's last patches bring the rules and the tracker to their state
        self.resume_window = max(self.alarm_rule.n, MEMORY if self.novelty is not None else 0)
        self.log = ScoreLog(site.dir / "scores.sqlite", on_notice=self._notice)
        try:
            self.log.prune(cfg.retention_days)
        except BaseException:
            self.log.abandon()
            raise
        self.alarms_path = site.dir / "alarms.jsonl"
        self._alarm_lines: list[str] = []  # alarms.jsonl lines not written yet (disk full)
        self._alarm_file_blocked: str | None = None
        self.run = None
        self._batch: _Batch | None = None  # the patches being decided (logged once decided)
        self._time: FileTime | None = None  # the time of the file being scored (None: live input, the clock)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._flush_alarm_lines()
        if self._alarm_lines:
            self._notice(f"{self.alarms_path}: {len(self._alarm_lines)} alarm(s) could not be written to it "
                         f"({self._alarm_file_blocked}); they are in the score log")
        if exc_type is not None:
            self.log.abandon()  # the error in flight is what the user must see
            return
        self.log.close()

    @staticmethod
    def _notice(msg: str) -> None:
        warnings.warn(MonitorWarning(msg), stacklevel=3)

    def _start(self, source: str) -> None:
        if self.run is None:
            c = None if self.clf is None else {"hash": self.clf_hash, "classes": self.clf.classes,
                                               "thresholds": self.class_thr}
            # runs.alarm_m = 0 marks a windowed-mean rule over alarm_n patches (its calibration is the record's)
            r = self.alarm_rule
            self.run = self.log.start_run(self.calibration["id"], self.model_hash, self.threshold,
                                          int(getattr(r, "m", 0)), int(r.n), source, c)
            if self.sink is not None:
                self.sink.start(self.run.run_id, self.threshold, self.model_hash, self.calibration["id"],
                                list(self.clf.classes) if self.clf is not None else [], rule=r)

    def _top_bands(self, bands: np.ndarray) -> list[dict]:
        ref = self.band_baseline if self.band_baseline is not None else np.ones_like(bands)
        ratio = bands / np.maximum(ref, 1e-9)
        top = np.argsort(ratio)[::-1][:3]
        return [{"band": int(i), "center_hz": round(float(self.centers[i])), "error_ratio": round(float(ratio[i]), 2),
                 "hint": band_hint(float(self.centers[i]), self.machine)} for i in top]

    def _fault(self, only: str | None = None) -> dict:
        """What the classifier says about the alarm window: mean probabilities over its evidence patches.

        Evidence: the window's patches over the anomaly threshold (``only=None``) or, for a classifier alarm, those
        where class ``only`` reached its threshold.
        """
        k = None if only is None else self.clf.classes.index(only)
        hits = [p for over, p in self.window if (over if k is None else p[k] >= self.class_thr[k])]
        P = np.mean(hits or [p for _, p in self.window], axis=0)
        names = self.clf.classes
        fired = [c for j, c in enumerate(names) if P[j] >= self.class_thr[j] and c != "normal"]
        fired.sort(key=lambda c: -P[names.index(c)])
        likely = fired[0] if fired else None
        if likely is None:
            # The autoencoder already says "abnormal", so naming needs less than the precision-target threshold: the
            # most probable fault when it is more probable than not, and more probable than "normal". At the onset
            # of a developing fault the probabilities are still rising (measured in the demo: a mean of 0.61-0.67
            # for cavitation over the alarm's patches, 0.98 ten patches later, threshold 0.71).
            faults = [(P[j], c) for j, c in enumerate(names) if c != "normal"]
            p_normal = P[names.index("normal")] if "normal" in names else 0.0
            if faults and max(faults)[0] >= 0.5 and max(faults)[0] > p_normal:
                likely = max(faults)[1]
        return {"likely": likely, "confident": bool(fired), "fired": fired,
                "probabilities": {c: round(float(P[j]), 4) for j, c in enumerate(names)},
                "thresholds": {c: round(float(self.class_thr[j]), 4) for j, c in enumerate(names)},
                "patches": len(hits), "classifier_hash": self.clf_hash}

    def _raise_alarm(self, t: float, score: float, bands: np.ndarray | None, file: str | None, offset: float,
                     kind: str = "anomaly", fault_class: str | None = None, seq: int | None = None,
                     probs: np.ndarray | None = None) -> None:
        time_source = self._time.source if self._time is not None else "clock"
        if kind == "anomaly":
            rule = self.alarm_rule.describe()
        else:
            rule = hits_rule(self.alarm_rule).describe(f"with p({fault_class}) over its threshold")
        info = {"t_utc": _iso(t), "site": self.site.name, "kind": kind, "score": round(score, 6),
                "threshold": self.threshold, "rule": rule,
                "calibration": self.calibration["id"], "model_hash": self.model_hash, "file": file,
                "offset_s": round(offset, 2), "time_source": time_source,
                "top_bands": self._top_bands(bands) if bands is not None else []}
        if self.novelty is not None:  # an alarm in a state the calibration never heard: said, never suppressed
            info["in_novel_state"] = bool(self.novelty.active)
        stat = getattr(self.rule, "mean", None) if kind == "anomaly" else None
        if stat is not None:  # a windowed-mean rule: how far its window mean is (calibration sds)
            info["window_mean_sd"] = round(stat, 3)
        if self.clf is not None:
            info["fault"] = self._fault(fault_class)
            if fault_class is not None:  # the class's own m-of-n rule fired: it names the alarm
                info["fault"].update(likely=fault_class, confident=True)
            f = info["fault"]["likely"] or "unknown"
            self.state.alarm_faults[f] = self.state.alarm_faults.get(f, 0) + 1
        self._log_event(t, score, info)
        if self.sink is not None and seq is not None:
            k = None if fault_class is None else self.clf.classes.index(fault_class)
            self.sink.alarm(seq, t, score, self.threshold if k is None else float(self.class_thr[k]), k, probs)
        self.state.alarms += 1
        self.state.last_alarm = info
        if self.cfg.on_alarm_line:
            self.cfg.on_alarm_line(info)
        if self.on_alarm_argv:
            self._run_hook(info)

    def _log_event(self, t: float, score: float, info: dict) -> None:
        """An alarm or notice into the score log -- committed with the patches decided so far, its own included, so
        that a restart neither repeats nor loses it -- and alarms.jsonl (each held in memory while it cannot be
        written)."""
        if self._batch is not None:
            self._log_rows(self._batch.at + 1, commit=False)
        self.log.alarm(self.run, t, score, info)
        self._alarm_lines.append(json.dumps(info) + "\n")
        self._flush_alarm_lines()

    def _raise_novel(self, t: float, score: float, file: str | None, offset: float) -> None:
        """A novel-state notice: the site sounds unlike every state the calibration heard. Its own event kind in the
        score log and alarms.jsonl (no --on-alarm command: it is a notice, and it never suppresses an alarm)."""
        info = {"t_utc": _iso(t), "site": self.site.name, "kind": NOVEL_STATE, "score": round(score, 6),
                "threshold": self.threshold, "calibration": self.calibration["id"], "model_hash": self.model_hash,
                "file": file, "offset_s": round(offset, 2),
                "time_source": self._time.source if self._time is not None else "clock",
                "differs": self.novelty.model.differs(self.novelty.feats),
                "advice": "the site sounds unlike anything the calibration heard: inspect it; if the machine is "
                          "healthy, recalibrate with this state included (a fault can sound like a new state)"}
        self._log_event(t, score, info)
        failpoint("monitor:novel-state-logged")  # the crash tests kill here: a restart must not repeat it
        self.state.novel_states += 1
        self.state.last_novel = info
        if self.cfg.on_alarm_line:
            self.cfg.on_alarm_line(info)

    def _run_hook(self, info: dict) -> None:
        try:
            r = subprocess.run(self.on_alarm_argv, input=json.dumps(info), text=True, timeout=ON_ALARM_TIMEOUT_S,
                               capture_output=True, errors="replace")
            if r.returncode:
                warnings.warn(MonitorWarning(f"--on-alarm exited with {r.returncode}: "
                                             f"{' '.join((r.stderr or '').split())[:200]}"), stacklevel=3)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            warnings.warn(MonitorWarning(f"--on-alarm failed: {e}"), stacklevel=3)

    def _flush_alarm_lines(self) -> None:
        """Append the held alarm lines to alarms.jsonl, fsync'd; on failure (disk full) cut the file back to whole
        lines, keep them in memory and say so once."""
        if not self._alarm_lines:
            return
        data = "".join(self._alarm_lines).encode()
        try:
            fd = os.open(self.alarms_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            return self._alarm_file_failed(e)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:
                try:
                    os.ftruncate(fd, size)  # never a torn line
                except OSError:
                    pass
                return self._alarm_file_failed(e)
        finally:
            os.close(fd)
        self._alarm_lines.clear()
        if self._alarm_file_blocked:
            self._alarm_file_blocked = None
            self._notice(f"{self.alarms_path}: can be written again; the alarms held meanwhile are in it")

    def _alarm_file_failed(self, e: OSError) -> None:
        if self._alarm_file_blocked is None:
            self._alarm_file_blocked = e.strerror or str(e)
            self._notice(f"{self.alarms_path}: cannot be written ({self._alarm_file_blocked}); alarms are held in "
                         "memory (and in the score log) and written when it can be")

    @property
    def unwritten_alarms(self) -> list[dict]:
        """Alarms neither the score log nor alarms.jsonl could take (print them: they exist nowhere else)."""
        logged = {json.dumps(a) for a in self.log.unwritten_alarms}
        return [json.loads(x) for x in self._alarm_lines if x.strip() in logged]

    def process_blocks(self, blocks: Iterable[np.ndarray], t0: float, file: str | None,
                       resume: Resume | None = None) -> None:
        """Score a stream of 16 kHz blocks whose first sample is at ``t0`` (UTC seconds); with ``resume``, the
        patches up to its last logged offset are in the log already: the rule is brought to their state and they are
        not scored again."""
        p = self.det.params
        stream = PatchStream(p, self.offsets)
        self._start(file or "microphone")
        skip_upto = None
        if resume is not None:
            self._prime(resume)
            skip_upto = resume.last_offset_s + 1e-6
        wall0 = time.monotonic()
        n_samples = 0
        for block in blocks:
            n_samples += block.size
            before = stream.patches_emitted
            X = stream.push(block)
            offs = np.arange(before, stream.patches_emitted) * p.patch_hop_samples / p.sample_rate
            if len(X) and skip_upto is not None:
                new = offs > skip_upto
                self.state.resumed += int((~new).sum())
                X, offs = X[new], offs[new]
            if len(X):
                self._score_patches(X, t0 + offs, offs, file)
            self.state.audio_seconds += block.size / p.sample_rate
            if self.on_update:
                self.on_update(self.state)
            if self.cfg.realtime:
                ahead = n_samples / p.sample_rate - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
        self.log.maybe_commit(force=True)
        self._flush_alarm_lines()

    def _score_patches(self, X: np.ndarray, ts: np.ndarray, offs: np.ndarray, file: str | None) -> None:
        """Score patches, apply the rules and the novel-state tracker, log them. A patch is logged once the decisions
        on it are made, in one transaction with the first alarm or notice it raises (:meth:`_log_event`): a monitor
        killed at any point resumes with none of them repeated or lost (but for a second event on the same patch,
        committed right after the first)."""
        sc, bands = self.det.score_with_bands(X)
        if not np.isfinite(sc).all():
            at = float(offs[int(np.argmax(~np.isfinite(sc)))])
            raise AudioError(f"{shown(file or 'input')}: the model gives a NaN or infinite score at {at:.1f} s "
                             "(audio far outside what it was trained on)")
        probs = None if self.clf is None else self.clf.probabilities_of_logits(self.clf.logits_of_patches(X))
        # the novel-state tracker's input, as logged (float32), so that a restart replays the same values
        levels = None if self.novelty is None else group_levels(X.mean(axis=1)).astype(LEVELS_DTYPE)
        exceeded = over(sc, self.threshold)
        seqs = self.sink.patches(ts, sc, exceeded, probs) if self.sink is not None else [None] * len(sc)
        self._batch = _Batch(file, ts, offs, sc, bands, probs, levels, seqs)
        try:
            for i in range(len(sc)):
                self._batch.at = i
                self._decide(i, bool(exceeded[i]))
            self._log_rows(len(sc), commit=True)
        finally:
            self._batch = None

    def _decide(self, i: int, exceeded: bool) -> None:
        """The novel-state tracker and the alarm rules on patch ``i`` of the batch (raising what they start)."""
        b = self._batch
        s, t, off = float(b.scores[i]), float(b.ts[i]), float(b.offs[i])
        self.state.recent.append(s)
        self.state.patches += 1
        bands = None if b.bands is None else b.bands[i]
        p_i = None if b.probs is None else b.probs[i]
        if p_i is not None:
            self.window.append((exceeded, p_i))
            self._note_top_class(p_i)
        if b.levels is not None:
            if self.novelty.update_groups(b.levels[i]):
                self._raise_novel(t, s, b.file, off)
            self.state.in_novel_state = self.novelty.active
        if self.rule.update(s):
            self._raise_alarm(t, s, bands, b.file, off, seq=b.seqs[i], probs=p_i)
        if p_i is not None:
            for c, (k, rule) in self.class_rules.items():
                if rule.update(p_i[k]):
                    self._raise_alarm(t, s, bands, b.file, off, "classifier", c, b.seqs[i], p_i)
        self.state.in_alarm = self.rule.active or (
            p_i is not None and any(r.active for _, r in self.class_rules.values()))

    def _log_rows(self, upto: int, commit: bool) -> None:
        """Log the batch's patches not logged yet, up to ``upto`` (excluded); ``commit``: let the log commit them
        now (else they are committed with the next alarm or notice)."""
        b = self._batch
        if b is None or upto <= b.logged:
            return
        s = slice(b.logged, upto)
        self.log.append(self.run, b.ts[s], b.scores[s], None if b.bands is None else b.bands[s], b.file, b.offs[s],
                        None if b.probs is None else b.probs[s], None if b.levels is None else b.levels[s],
                        commit=commit)
        b.logged = upto

    def _prime(self, resume: Resume) -> None:
        """Bring the alarm rules and the novel-state tracker to their state at the end of what the log holds (the
        file's last scores, probabilities of a classifier of the same classes, group levels), raising nothing again."""
        self._prime_rules(resume)
        if self.novelty is not None:
            for blob in resume.recent_levels:  # rows logged before layout 6 have none: nothing to resume from
                if blob is not None and len(blob) == GROUPS * np.dtype(LEVELS_DTYPE).itemsize:
                    self.novelty.update_groups(np.frombuffer(blob, LEVELS_DTYPE))
            self.state.in_novel_state = self.novelty.active

    def _prime_rules(self, resume: Resume) -> None:
        n_classes = None if self.clf is None else len(self.clf.classes)
        for s, blob in zip(resume.recent_scores, resume.recent_classes, strict=True):
            self.rule.update(s)
            probs = None
            if n_classes and blob is not None and len(blob) == 2 * n_classes:
                probs = np.frombuffer(blob, "<f2").astype(np.float64)
            if n_classes:
                self.window.append((bool(s > self.threshold), probs if probs is not None else
                                    np.zeros(n_classes)))
                if probs is not None:
                    for k, rule in self.class_rules.values():
                        rule.update(probs[k])
        self.state.in_alarm = self.rule.active

    def _note_top_class(self, p: np.ndarray) -> None:
        faults = [(float(p[j]), c) for j, c in enumerate(self.clf.classes) if c != "normal"]
        if faults:
            pr, c = max(faults)
            self.state.top_class = (c, pr)

    def process_files(self, files: list[Path]) -> MonitorState:
        """Score files in order, each placed in time by :mod:`anomaly.recording_time`; a file that cannot be scored
        is skipped with a warning naming it, and overlapping, out-of-order or guessed times are warned about (and
        kept in the state)."""
        ok, durations, bad = check_readable(files, audio_info)
        for f, why in bad:
            self.state.skipped.append(str(f))
            warnings.warn(MonitorWarning(f"skipped: {why}"), stacklevel=2)
        timing = assign_times(ok, durations, self.cfg.policy)
        self.state.time_sources = timing.by_source()
        self.state.time_problems = timing.problems
        for problem in timing.problems:
            warnings.warn(MonitorWarning(f"recording times: {problem}"), stacklevel=2)
        for ft in timing.files:
            f = ft.path
            self.state.source = shown(f)
            try:
                self._time = ft
                self._process_file(f, ft)
            except (AudioError, DataError) as e:
                self.state.skipped.append(str(f))
                warnings.warn(MonitorWarning(f"skipped: {e}"), stacklevel=2)
            finally:
                self._time = None
        return self.state

    def _process_file(self, f: Path, ft: FileTime) -> None:
        p = self.det.params
        try:
            t0 = check_start(ft.t0_utc, "its start time")
        except CalibrationError as e:
            raise AudioError(f"{shown(f)}: {e}, found from {ft.source} ({shown(ft.detail)}); correct the file's time, "
                             "or give the start with --start-time") from None
        path = str(Path(f).resolve())  # absolute: the report re-reads top patches
        self._start(path)
        self.log.file_time(self.run, path, t0, ft.duration_s, ft.source, ft.detail)
        resume = self.log.resume_point(path, t0, self.resume_window)
        if resume is not None and self._complete(resume, audio_info(f)):
            self._prime(resume)
            self.state.resumed += resume.patches
            return
        block_s = 1.0 if self.cfg.realtime else 30.0
        self.process_blocks(iter_blocks(f, p.sample_rate, block_seconds=block_s, min_samples=p.min_samples), t0, path,
                            resume)

    def _complete(self, resume: Resume, info) -> bool:
        """Whether the log holds a file's last patch (no patch starts after ``resume.last_offset_s``)."""
        p = self.det.params
        n_out = -(-info.frames * p.sample_rate // info.sample_rate)
        last = int(round(resume.last_offset_s * p.sample_rate))
        return last + p.patch_hop_samples + p.min_samples > n_out
