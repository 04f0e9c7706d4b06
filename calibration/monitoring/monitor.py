"""Live monitoring: score every patch against the site's current calibration, apply the alarm rule, log everything.

Every raw score goes to the site's score log (:mod:`calibration.monitoring.scorelog`); alarms also go to
``sites/<name>/alarms.jsonl`` (one JSON object per line, flushed and fsynced) and, with ``on_alarm``, to a command
that receives the alarm JSON on its standard input.

With a fault classifier attached to the site (``humwatch site set-classifier``), every patch also gets the
classifier's calibrated per-class probabilities (logged with the score), each anomaly alarm carries a ``fault``
section naming the likely fault, and the classes listed in ``classifier_alarm`` raise alarms of their own (kind
``"classifier"``) under the same m-of-n rule, a patch counting when its probability reaches the class threshold:
the remedy for a fault whose sound the autoencoder reconstructs well.
"""

from __future__ import annotations

import json
import os
import shlex
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

from anomaly.audio import audio_info, iter_blocks
from anomaly.decision import hits_rule, over
from anomaly.errors import AudioError, HumwatchWarning
from anomaly.features import PatchStream, mel_centers
from anomaly.recording_time import FileTime, TimePolicy, assign_times, check_readable
from anomaly.vocabulary import band_hint
from calibration.calibrate import calibration_rule, site_classifier, site_detector
from calibration.errors import SiteError
from calibration.monitoring.scorelog import DEFAULT_RETENTION_DAYS, ScoreLog
from calibration.states import StateModel
from calibration.store import Site


class MonitorWarning(HumwatchWarning):
    """A skipped file or a failed --on-alarm command; monitoring goes on."""


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


class Sink(Protocol):
    """Where a monitor also sends its scores and alarms (e.g. :class:`calibration.fleet.publish.TelemetrySink`,
    ``monitor --publish``): ``start`` once per run, ``patches`` returns the patches' sequence numbers."""

    def start(self, run_id: int, threshold: float, model_hash: str, calibration_id: str,
              classes: list[str]) -> None: ...

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
    audio_seconds: float = 0.0
    top_class: tuple[str, float] | None = None  # the most likely non-normal class of the last patch
    alarm_faults: dict[str, int] = field(default_factory=dict)  # alarms per likely fault ("unknown": none fired)
    time_sources: dict[str, int] = field(default_factory=dict)  # files per way their time was found
    time_problems: list[str] = field(default_factory=list)  # overlapping, out-of-order or guessed file times
    novel_states: int = 0  # novel-state notices (calibration.states): sounds the calibration never heard
    in_novel_state: bool = False
    last_novel: dict | None = None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class Monitor:
    """Scores a stream of sources for one site. Use as a context manager (closes the log)."""

    def __init__(self, site: Site, cfg: MonitorConfig, on_update: Callable[[MonitorState], None] | None = None,
                 sink: Sink | None = None):
        self.site, self.cfg, self.on_update, self.sink = site, cfg, on_update, sink
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
        self.log = ScoreLog(site.dir / "scores.sqlite")
        self.log.prune(cfg.retention_days)
        self.alarms_path = site.dir / "alarms.jsonl"
        self.run = None
        self._time: FileTime | None = None  # the time of the file being scored (None: live input, the clock)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.log.close()

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
                                list(self.clf.classes) if self.clf is not None else [])

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
        if self.cfg.on_alarm:
            try:
                r = subprocess.run(shlex.split(self.cfg.on_alarm), input=json.dumps(info), text=True, timeout=30,
                                   capture_output=True)
                if r.returncode:
                    warnings.warn(MonitorWarning(f"--on-alarm exited with {r.returncode}: "
                                                 f"{(r.stderr or '').strip()[:200]}"), stacklevel=2)
            except (OSError, subprocess.TimeoutExpired) as e:
                warnings.warn(MonitorWarning(f"--on-alarm failed: {e}"), stacklevel=2)

    def _log_event(self, t: float, score: float, info: dict) -> None:
        self.log.alarm(self.run, t, score, info)
        with open(self.alarms_path, "a") as fh:
            fh.write(json.dumps(info) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _raise_novel(self, t: float, score: float, file: str | None, offset: float) -> None:
        """A novel-state notice: the site sounds unlike every state the calibration heard. Its own event kind in the
        score log and alarms.jsonl (no --on-alarm command: it is a notice, and it never suppresses an alarm)."""
        info = {"t_utc": _iso(t), "site": self.site.name, "kind": "novel_state", "score": round(score, 6),
                "threshold": self.threshold, "calibration": self.calibration["id"], "model_hash": self.model_hash,
                "file": file, "offset_s": round(offset, 2),
                "time_source": self._time.source if self._time is not None else "clock",
                "differs": self.novelty.model.differs(self.novelty.feats),
                "advice": "the site sounds unlike anything the calibration heard: inspect it; if the machine is "
                          "healthy, recalibrate with this state included (a fault can sound like a new state)"}
        self._log_event(t, score, info)
        self.state.novel_states += 1
        self.state.last_novel = info
        if self.cfg.on_alarm_line:
            self.cfg.on_alarm_line(info)

    def process_blocks(self, blocks: Iterable[np.ndarray], t0: float, file: str | None) -> None:
        """Score a stream of 16 kHz blocks whose first sample is at ``t0`` (UTC seconds)."""
        p = self.det.params
        stream = PatchStream(p, self.offsets)
        self._start(file or "microphone")
        wall0 = time.monotonic()
        n_samples = 0
        for block in blocks:
            n_samples += block.size
            before = stream.patches_emitted
            X = stream.push(block)
            if len(X):
                sc, bands = self.det.score_with_bands(X)
                probs = None if self.clf is None else self.clf.probabilities_of_logits(self.clf.logits_of_patches(X))
                offs = np.arange(before, stream.patches_emitted) * p.patch_hop_samples / p.sample_rate
                ts = t0 + offs
                self.log.append(self.run, ts, sc, bands, file, offs, probs)
                exceeded = over(sc, self.threshold)
                seqs = self.sink.patches(ts, sc, exceeded, probs) if self.sink is not None else [None] * len(sc)
                levels = X.mean(axis=1) if self.novelty is not None else None  # band levels, for novel states
                for i, s in enumerate(sc):
                    self.state.recent.append(float(s))
                    self.state.patches += 1
                    b = None if bands is None else bands[i]
                    if probs is not None:
                        self.window.append((bool(exceeded[i]), probs[i]))
                        self._note_top_class(probs[i])
                    p_i = None if probs is None else probs[i]
                    if levels is not None:
                        if self.novelty.update(levels[i]):
                            self._raise_novel(float(ts[i]), float(s), file, float(offs[i]))
                        self.state.in_novel_state = self.novelty.active
                    if self.rule.update(s):
                        self._raise_alarm(float(ts[i]), float(s), b, file, float(offs[i]), seq=seqs[i], probs=p_i)
                    if probs is not None:
                        for c, (k, rule) in self.class_rules.items():
                            if rule.update(probs[i, k]):
                                self._raise_alarm(float(ts[i]), float(s), b, file, float(offs[i]), "classifier", c,
                                                  seqs[i], p_i)
                    self.state.in_alarm = self.rule.active or (
                        probs is not None and any(r.active for _, r in self.class_rules.values()))
            self.state.audio_seconds += block.size / p.sample_rate
            if self.on_update:
                self.on_update(self.state)
            if self.cfg.realtime:
                ahead = n_samples / p.sample_rate - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
        self.log.maybe_commit(force=True)

    def _note_top_class(self, p: np.ndarray) -> None:
        faults = [(float(p[j]), c) for j, c in enumerate(self.clf.classes) if c != "normal"]
        if faults:
            pr, c = max(faults)
            self.state.top_class = (c, pr)

    def process_files(self, files: list[Path]) -> MonitorState:
        """Score files in order, each placed in time by :mod:`anomaly.recording_time`; an unreadable file is skipped
        with a warning, and overlapping, out-of-order or guessed times are warned about (and kept in the state)."""
        p = self.det.params
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
            self.state.source = str(f)
            path = str(Path(f).resolve())  # absolute: the report re-reads top patches
            try:
                self._time = ft
                self._start(path)
                self.log.file_time(self.run, path, ft.t0_utc, ft.duration_s, ft.source, ft.detail)
                block_s = 1.0 if self.cfg.realtime else 30.0
                self.process_blocks(iter_blocks(f, p.sample_rate, block_seconds=block_s, min_samples=p.min_samples),
                                    ft.t0_utc, path)
            except AudioError as e:
                self.state.skipped.append(str(f))
                warnings.warn(MonitorWarning(f"skipped: {e}"), stacklevel=2)
            finally:
                self._time = None
        return self.state
