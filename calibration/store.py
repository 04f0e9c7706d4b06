"""The site store: one folder per installation, and the one reader of each file in it.

Layout (root ``./sites`` unless ``--sites-dir`` or ``HUMWATCH_SITES`` says otherwise)::

    sites/<name>/site.toml                   settings: machine, model path + hash, microphone, k, alarm rule, interval
    sites/<name>/calibrations/<id>.json      one per calibration, versioned, never overwritten (calibration.records)
    sites/<name>/current                     the id of the calibration in force (empty: none)
    sites/<name>/current.log                 every switch of `current` (JSON lines): what makes a record "adopted"
    sites/<name>/settings.jsonl              every settings change (`humwatch site set`): time, old and new values
    sites/<name>/baseline/<id>/...           optional retained calibration audio
    sites/<name>/scores.sqlite, alarms.jsonl the monitor's score log and alarms (calibration.monitoring)
    sites/<name>/.lock                       held while a calibration, recalibration, repair or setting change runs
    sites/<name>/.tmp/                       work in progress of the lock holder (leftovers are removed under the lock)

Every write is atomic and durable (temp file, fsync, rename, fsync of the directory); calibration records are
created with O_EXCL so nothing is overwritten. A calibration is adopted in this order, each step durable before the
next: the retained audio (``baseline/<id>/``), the record (status ``pending``), ``current``, then the line in
``current.log``. A run killed anywhere before ``current`` moves leaves the site as it was (at most a record that
history shows as "not adopted", and temp files removed at the next run); killed after, the new calibration is in
force. Every file is read through one validating reader (:meth:`Site.config`, :meth:`Site.current_id`,
:meth:`Site.calibration`, :meth:`Site.switches`): damaged, foreign or newer content is refused as a whole with
:class:`~calibration.errors.SiteDamagedError` naming the file and what to do (``humwatch site repair NAME``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anomaly.atomic import STALE_SECONDS, failpoint, fsync_dir, write_text
from anomaly.decision import DEFAULT_K, MOFN_RULE, MOfN, check_k, parse_rule
from anomaly.errors import IO_ERRNOS, DecisionError, StorageError, shown
from calibration.errors import SiteDamagedError, SiteError, SiteLockedError
from calibration.records import ID_RE, RECORD_FORMAT, dumps, parse_record

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ENV_VAR = "HUMWATCH_SITES"
SITE_FORMAT = 1
SWITCH_LOG = "current.log"
MAX_TOML_BYTES = 1 << 20  # a site.toml is a few hundred bytes; anything this large is not one
MAX_RECORD_BYTES = 64 << 20
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab: no line breaks in a setting
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # notes may span lines
_TEXT_FIELDS = ("name", "model_path", "model_hash", "machine", "microphone", "response_curve", "source",
                "classifier_path", "classifier_hash", "created_utc", "notes")


def repair_hint(name: str) -> str:
    return f"run `humwatch site repair {name}`"


def read_small(path: Path, what: str, limit: int, name: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; SiteDamagedError for a directory, a device or FIFO,
    or a file too large to be what it should be; StorageError when the system refuses to read it."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SiteDamagedError(f"{path}: not a regular file (it should hold {what}); {repair_hint(name)}")
        if st.st_size > limit:
            raise SiteDamagedError(f"{path}: {st.st_size} bytes, too large to hold {what}; {repair_hint(name)}")
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as e:
        if e.errno in IO_ERRNOS:
            raise StorageError(f"{path}: cannot read {what} ({e.strerror})") from None
        raise SiteDamagedError(f"{path}: cannot read {what} ({e.strerror or e}); {repair_hint(name)}") from None


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid site name, else raise SiteError saying why."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SiteError(f"invalid site name {name!r}: use 1-64 characters a-z, 0-9, '-' or '_', starting with a "
                        "letter or digit (no paths)")
    return name


_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f]")  # new settings from the command line: tab too
MAX_TEXT = 200
MAX_INTERVAL_DAYS = 3650  # ten years: longer is a typo (and beyond what TOML's 64-bit integers hold)


def validate_text(what: str, value: str) -> str:
    """A free-text setting (machine, microphone): one line of at most ``MAX_TEXT`` characters."""
    if not isinstance(value, str) or _CONTROL_ANY.search(value) or len(value) > MAX_TEXT:
        raise SiteError(f"{what} must be one line of at most {MAX_TEXT} characters without control characters, got "
                        f"{value!r:.80}")
    return value.strip()


def validate_source(source: str) -> str:
    """Where scheduled recalibration takes its audio: ``""`` (none), ``mic``, ``mic:DEVICE`` or a directory path (one
    line, no ``%``: it goes into a cron line)."""
    validate_text("--source", source)
    if "%" in source:
        raise SiteError(f"--source may not contain '%' (cron reads it as a line break), got {source!r}")
    return source.strip()


def default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or "sites")


@dataclass
class SiteConfig:
    """What ``site.toml`` holds."""

    name: str
    model_path: str
    model_hash: str
    machine: str = ""
    microphone: str = ""
    response_curve: str = ""
    k: float = DEFAULT_K  # the defaults of the threshold and alarm rules are anomaly.decision's
    alarm_m: int = MOFN_RULE.m  # the m-of-n rule (sites made before #14 hold only these)
    alarm_n: int = MOFN_RULE.n
    alarm: str = ""  # the alarm rule as the CLI spells it ("mean/120", "3/5"); empty: alarm_m of alarm_n
    recalibration_days: int = 30
    source: str = ""  # where `recalibrate --due` takes audio from: a directory, or "mic" / "mic:<device>"
    classifier_path: str = ""  # optional fault classifier (`humwatch site set-classifier`)
    classifier_hash: str = ""
    classifier_alarm: list[str] = field(default_factory=list)  # classes whose hit alone raises an alarm
    created_utc: str = ""
    format_version: int = SITE_FORMAT
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name)
        self._check_text()
        for name, kind in (("k", (int, float)), ("alarm_m", int), ("alarm_n", int), ("recalibration_days", int)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, kind):
                raise SiteError(f"{name} must be a number{'' if kind is not int else ' (whole)'}, got {v!r}")
        try:
            check_k(self.k)
            MOfN(self.alarm_m, self.alarm_n)
            if not isinstance(self.alarm, str):
                raise DecisionError(f"alarm must be a rule spelling like 'mean/120' or '3/5', got {self.alarm!r}")
            if self.alarm:
                parse_rule(self.alarm)
        except DecisionError as e:
            raise SiteError(str(e)) from None
        if not isinstance(self.classifier_alarm, list) or not all(isinstance(c, str) for c in self.classifier_alarm):
            raise SiteError(f"classifier_alarm must be a list of class names, got {self.classifier_alarm!r}")
        if self.classifier_alarm and not self.classifier_path:
            raise SiteError("classifier_alarm is set but the site has no classifier (classifier_path)")
        if not 1 <= int(self.recalibration_days) <= MAX_INTERVAL_DAYS:
            raise SiteError(f"recalibration interval must be 1 to {MAX_INTERVAL_DAYS} days, got "
                            f"{self.recalibration_days:.6g}")
        if isinstance(self.format_version, bool) or not isinstance(self.format_version, int) \
                or not 1 <= self.format_version <= SITE_FORMAT:
            newer = isinstance(self.format_version, int) and self.format_version > SITE_FORMAT
            raise SiteError(f"format_version {self.format_version!r}: " + (
                f"written by a newer humwatch (this one reads {SITE_FORMAT}); upgrade humwatch" if newer else
                f"must be {SITE_FORMAT}"))
        if not isinstance(self.extra, dict):
            raise SiteError(f"[extra] must be a table, got {self.extra!r}")

    def _check_text(self) -> None:
        """Settings are one line of text without control characters but tab (they reach cron and systemd files, and
        the console); notes may span lines. Text that is not valid UTF-8 (undecodable bytes from a command line) is
        refused too."""
        for f in _TEXT_FIELDS:
            v = getattr(self, f)
            if not isinstance(v, str):
                raise SiteError(f"{f} must be text, got {v!r}")
            bad = (_CONTROL_BUT_LINES if f == "notes" else _CONTROL).search(v)
            if bad:
                raise SiteError(f"{f} must not contain control characters (found {bad.group()!r} in "
                                f"{shown(v)[:60]!r})")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise SiteError(f"{f} is not valid UTF-8 text: {shown(v)[:60]!r}") from None
        if not self.model_path:
            raise SiteError("model_path must name the site's model directory")

    @property
    def rule(self):
        """The site's alarm rule, uncalibrated (``alarm``, or ``alarm_m`` of ``alarm_n`` when that is empty); the
        calibration in force holds it with its calibration (:func:`calibration.calibrate.calibration_rule`)."""
        return parse_rule(self.alarm) if self.alarm else MOfN(self.alarm_m, self.alarm_n)

    def with_rule(self, rule) -> None:
        """Store an alarm rule (its spelling; an m-of-n rule also as ``alarm_m`` and ``alarm_n``)."""
        self.alarm = rule.spelling
        if isinstance(rule, MOfN):
            self.alarm_m, self.alarm_n = int(rule.m), int(rule.n)

    @property
    def alarm_rule(self) -> str:
        return self.rule.describe()

    @property
    def audio_source(self) -> tuple[str, str | None] | None:
        """Where scheduled recalibration takes its audio: ``("mic", device or None)`` for ``mic`` / ``mic:<device>``,
        ``("dir", path)`` for a directory, None when not set."""
        if not self.source:
            return None
        if self.source.startswith("mic"):
            return "mic", (self.source.split(":", 1)[1] if ":" in self.source else None)
        return "dir", self.source

    def to_toml(self) -> str:
        d = asdict(self)
        extra = d.pop("extra")
        lines = ["# humwatch site settings (edit with care; `humwatch site show` checks them)"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        if extra:
            lines.append("\n[extra]")
            lines += [f"{json.dumps(str(k), ensure_ascii=False)} = {_toml_value(v)}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, where: str) -> SiteConfig:
        """Parse and check ``site.toml``'s text. Raises SiteDamagedError (a SiteError) saying what is wrong."""
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SiteDamagedError(f"{where}: malformed TOML ({e})") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SiteDamagedError(f"{where}: unknown settings {unknown}")
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise SiteDamagedError(f"{where}: incomplete site settings (missing {', '.join(missing)})"
                                   + (": the file is empty" if not text.strip() else ""))
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise SiteDamagedError(f"{where}: bad or incomplete site settings ({e})") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string (no \uD83D surrogates) is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_id(t: datetime | None = None) -> str:
    """A calibration id: the UTC time, sortable and safe in file names (``20261125T093000.123456Z``)."""
    return (t or utc_now()).strftime("%Y%m%dT%H%M%S.%fZ")


class Site:
    """One site folder."""

    def __init__(self, root: Path, name: str):
        self.name = validate_name(name)
        self.dir = Path(root) / name

    @property
    def toml_path(self) -> Path:
        return self.dir / "site.toml"

    @property
    def calibrations_dir(self) -> Path:
        return self.dir / "calibrations"

    @property
    def current_path(self) -> Path:
        return self.dir / "current"

    @property
    def switch_log_path(self) -> Path:
        return self.dir / SWITCH_LOG

    @property
    def baseline_dir(self) -> Path:
        return self.dir / "baseline"

    @property
    def tmp_dir(self) -> Path:
        return self.dir / ".tmp"

    def exists(self) -> bool:
        return os.path.lexists(self.toml_path)

    def _damaged(self, msg: str) -> SiteDamagedError:
        return SiteDamagedError(f"{msg}; {repair_hint(self.name)}")

    def config(self) -> SiteConfig:
        """``site.toml``, checked. SiteError when the site does not exist; SiteDamagedError when the file is not a
        readable UTF-8 TOML file of valid settings for this site."""
        if not self.exists():
            raise SiteError(f"no site {self.name!r} in {self.dir.parent} (create it with `humwatch site create "
                            f"{self.name} --model DIR`)")
        data = read_small(self.toml_path, "the site settings", MAX_TOML_BYTES, self.name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SiteDamagedError(f"{self.toml_path}: not UTF-8 text (byte {data[e.start]:#04x} at {e.start}); edit "
                                   f"it (or see `humwatch site repair {self.name}`)") from None
        cfg = SiteConfig.from_toml(text, str(self.toml_path))
        cfg.name = self.name  # the folder is the site's identity (a copied folder keeps the old name inside)
        return cfg

    def save_config(self, cfg: SiteConfig) -> None:
        write_text(self.toml_path, cfg.to_toml())

    def model_dir(self) -> Path:
        """The site's model directory (relative paths are relative to the site folder)."""
        p = Path(self.config().model_path)
        return p if p.is_absolute() else (self.dir / p).resolve()

    def classifier_dir(self) -> Path | None:
        """The site's fault-classifier directory, or None when the site has none."""
        cp = self.config().classifier_path
        if not cp:
            return None
        p = Path(cp)
        return p if p.is_absolute() else (self.dir / p).resolve()

    def new_recording_path(self) -> Path:
        """Where a calibration recorded from a sound card goes (``baseline/mic-<UTC time>.flac``)."""
        return self.baseline_dir / f"mic-{utc_id()}.flac"

    # -- settings history -------------------------------------------------------------------------------------
    @property
    def settings_log(self) -> Path:
        return self.dir / "settings.jsonl"

    def record_settings(self, changes: dict[str, tuple[Any, Any]], effects: dict[str, str]) -> dict:
        """Append a settings change (``{setting: (old, new)}``, and when each takes effect) to the site's history."""
        entry = {"t_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}, "effects": effects}
        with open(self.settings_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def settings_history(self) -> list[dict]:
        """Every recorded settings change, oldest first (unreadable lines are skipped)."""
        if not self.settings_log.is_file():
            return []
        out = []
        for line in self.settings_log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(e, dict) and isinstance(e.get("changes"), dict):
                out.append(e)
        return out

    # -- calibrations -----------------------------------------------------------------------------------------
    def calibration_ids(self) -> list[str]:
        """Ids of the calibration records (file names ``<id>.json``; other files are not records)."""
        if not self.calibrations_dir.is_dir():
            return []
        return sorted(p.stem for p in self.calibrations_dir.glob("*.json") if ID_RE.fullmatch(p.stem))

    def current_id(self) -> str | None:
        """The id in ``current`` (None: not calibrated). SiteDamagedError when it holds anything but an id."""
        p = self.current_path
        if not os.path.lexists(p):
            return None
        data = read_small(p, "the current-calibration pointer", 4096, self.name)
        try:
            cid = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._damaged(f"{p}: damaged (not text)") from None
        if not cid:
            return None
        if not ID_RE.fullmatch(cid):
            raise self._damaged(f"{p}: damaged (holds {shown(cid)[:40]!r}, not a calibration id)")
        return cid

    def _record(self, cid: str) -> dict:
        path = self.calibrations_dir / f"{cid}.json"
        if not os.path.lexists(path):
            raise SiteError(f"site {self.name!r}: calibration {cid} is missing from {self.calibrations_dir}")
        return parse_record(read_small(path, "a calibration record", MAX_RECORD_BYTES, self.name), path, self.name)

    def calibration(self, cid: str | None = None) -> dict:
        """A calibration record (the current one by default), checked, with ``status`` the effective one
        (:meth:`status_of`) and ``stored_status`` what the file says. Raises SiteError when there is none,
        SiteDamagedError when it is damaged (or ``current`` points to a record that is missing or refused)."""
        current = cid is None
        cid = cid or self.current_id()
        if cid is None:
            raise SiteError(f"site {self.name!r} is not calibrated yet (run `humwatch site calibrate {self.name} "
                            "--from AUDIO`)")
        if not ID_RE.fullmatch(cid):
            raise SiteError(f"site {self.name!r}: {shown(cid)[:40]!r} is not a calibration id")
        try:
            rec = self._record(cid)
        except SiteDamagedError:
            raise
        except SiteError as e:
            if current:
                raise self._damaged(f"{self.current_path}: names calibration {cid}, which is missing from "
                                    f"{self.calibrations_dir}") from None
            raise e from None
        if current and rec["status"] == "refused":
            raise self._damaged(f"{self.current_path}: names calibration {cid}, a refused recalibration")
        return self._with_status(rec)

    def _with_status(self, rec: dict) -> dict:
        return {**rec, "stored_status": rec["status"], "status": self.status_of(rec)}

    def status_of(self, rec: dict, adopted: set[str] | None = None) -> str:
        """The effective status of a record: ``adopted`` (or ``adopted-with-shift``) when ``current`` was ever
        switched to it, ``refused``, or ``not adopted`` (a run stopped before the switch; or, for a record written
        before current.log existed, no evidence that it was ever in force)."""
        if rec["status"] == "refused":
            return "refused"
        if rec["id"] in (self.adopted_ids() if adopted is None else adopted):
            shifted = isinstance(rec.get("shift_test"), dict) and rec["shift_test"].get("shifted") is True
            return "adopted-with-shift" if shifted else "adopted"
        return "not adopted"

    def records(self, statuses: bool = True) -> list[tuple[str, dict | None, str | None]]:
        """Every record: ``(id, checked record with its effective status, None)`` or ``(id, None, what is wrong)``
        (``statuses=False``: as stored, without reading current.log)."""
        out: list[tuple[str, dict | None, str | None]] = []
        adopted = self.adopted_ids() if statuses else set()
        for cid in self.calibration_ids():
            try:
                rec = self._record(cid)
                status = self.status_of(rec, adopted) if statuses else rec["status"]
                out.append((cid, {**rec, "stored_status": rec["status"], "status": status}, None))
            except SiteError as e:
                out.append((cid, None, str(e)))
        return out

    def history(self) -> list[dict]:
        """Every record, checked (SiteDamagedError at the first damaged one; :meth:`records` lists them all)."""
        adopted = self.adopted_ids()
        return [{**r, "stored_status": r["status"], "status": self.status_of(r, adopted)}
                for r in (self._record(c) for c in self.calibration_ids())]

    # -- the switch log: which records were adopted ---------------------------------------------------------
    def switches(self) -> list[dict]:
        """Every switch of ``current``, oldest first: ``{"t_utc", "current" (id or None), "previous", "why"}``.

        From ``current.log``; a site from before it (no log) gets one derived from its records: a record was in
        force if ``current`` names it or a later record names it as ``previous`` (``"why": "derived"``). A torn last
        line (a run killed while appending) is ignored; any other damaged line raises SiteDamagedError.
        """
        p = self.switch_log_path
        if not os.path.lexists(p):
            return self._derived_switches()
        data = read_small(p, "the log of calibration switches", MAX_RECORD_BYTES, self.name)
        lines = data.split(b"\n")[:-1]  # what follows the last newline is a torn append (or nothing)
        out = []
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                e = json.loads(raw.decode("utf-8"))
                ok = (isinstance(e, dict) and (e.get("current") is None or (isinstance(e["current"], str) and
                                                                             ID_RE.fullmatch(e["current"]))))
            except (ValueError, RecursionError):  # not UTF-8, not JSON, absurdly nested
                ok = False
            if not ok:
                raise self._damaged(f"{p}: line {i} is damaged")
            out.append(e)
        return out

    def _derived_switches(self) -> list[dict]:
        ids = set(self.calibration_ids())
        seen = set()
        for cid in ids:
            try:
                prev = self._record(cid).get("previous")
            except SiteError:
                continue
            if prev in ids:
                seen.add(prev)
        try:
            cur = self.current_id()
        except SiteDamagedError:
            cur = None
        if cur is not None:
            seen.add(cur)
        return [{"t_utc": None, "current": c, "previous": None, "why": "derived"} for c in sorted(seen)]

    def adopted_ids(self) -> set[str]:
        """Ids of every calibration that was ever in force (from :meth:`switches` and ``current``)."""
        ids = {e["current"] for e in self.switches() if e.get("current")}
        try:
            cur = self.current_id()
        except SiteDamagedError:  # a damaged pointer adopts nothing (the switch log still knows what it did)
            cur = None
        return ids | ({cur} if cur else set())

    def _append_switch(self, entry: dict) -> None:
        with open(self.switch_log_path, "ab") as fh:
            fh.write((json.dumps(entry) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())

    def adopt(self, cid: str | None, why: str) -> None:
        """Make ``cid`` the calibration in force (None: none), durably: ``current`` first, then its line in
        current.log. Call under :meth:`lock`."""
        log = self.switches()
        if not os.path.lexists(self.switch_log_path):  # a site from before the log: write down what it derives
            write_text(self.switch_log_path, "".join(json.dumps(e) + "\n" for e in log))
        try:
            cur = self.current_id()
        except SiteDamagedError:  # replaced now (a calibration, or repair)
            cur = None
        if cur and cur not in {e.get("current") for e in log}:
            # a run killed between the switch and its log line: record the switch it made
            self._append_switch({"t_utc": None, "current": cur, "previous": None, "why": "switch not logged"})
        write_text(self.current_path, (cid or "") + "\n")
        failpoint("calibration:current-switched")
        self._append_switch({"t_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "current": cid,
                             "previous": cur, "why": why})

    def add_calibration(self, record: dict, make_current: bool = True, keep=None) -> str:
        """Store a new calibration record (never overwriting one) and, with ``make_current``, adopt it.

        ``keep(cid, dest)``, if given, writes what goes with the record into the directory ``dest`` (retained
        audio), durably; it runs first and ends in ``baseline/<cid>/``, so a failure anywhere leaves nothing.
        Call under :meth:`lock` (except in tests).
        """
        self.calibrations_dir.mkdir(parents=True, exist_ok=True)
        while True:
            cid = utc_id()
            if not os.path.lexists(self.calibrations_dir / f"{cid}.json") and \
                    not os.path.lexists(self.baseline_dir / cid):
                break
        stored = dict(record, id=cid, format_version=RECORD_FORMAT)
        stored.pop("stored_status", None)
        stored["status"] = record.get("status", "pending") if not make_current else "pending"
        if stored["status"] not in ("pending", "refused"):
            stored["status"] = "pending"
        kept = None
        try:
            if keep is not None:
                kept = self._keep(cid, keep)
            self._write_record(cid, stored)
            failpoint("calibration:record-written")
        except BaseException:
            if kept is not None:
                shutil.rmtree(kept, ignore_errors=True)
            raise
        if make_current:
            try:
                self.adopt(cid, stored.get("kind", "calibration"))
            except OSError as e:
                raise _storage(e, f"calibration {cid} is stored but was not adopted: current is unchanged") from None
        return cid

    def _keep(self, cid: str, keep) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        work = self.tmp_dir / f"baseline-{cid}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            keep(cid, work)
            fsync_dir(work)
            failpoint("calibration:audio-kept")
            self.baseline_dir.mkdir(parents=True, exist_ok=True)
            dest = self.baseline_dir / cid
            os.rename(work, dest)
            fsync_dir(self.baseline_dir)
            return dest
        except BaseException as e:
            shutil.rmtree(work, ignore_errors=True)
            if isinstance(e, OSError):
                raise _storage(e, "while keeping the calibration audio: the calibration was not adopted, the site "
                                  "is unchanged") from None
            raise

    def _write_record(self, cid: str, record: dict) -> None:
        path = self.calibrations_dir / f"{cid}.json"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{cid}.json"
        try:
            with open(tmp, "wb") as fh:
                fh.write(dumps(record).encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)  # fails if the id exists: calibrations are never overwritten
            fsync_dir(self.calibrations_dir)
        except FileExistsError:
            raise SiteError(f"site {self.name!r}: calibration {cid} already exists (another process writing "
                            "without the site lock?)") from None
        except OSError as e:
            raise _storage(e, "writing the calibration record: the calibration was not adopted, the site is "
                              "unchanged") from None
        finally:
            tmp.unlink(missing_ok=True)

    def tidy(self) -> list[str]:
        """Remove what killed runs left (work files in ``.tmp/``, retained audio of a calibration whose record was
        never written, stale temp files of a recording). Call under :meth:`lock`. Returns what was removed."""
        removed = []
        if self.tmp_dir.is_dir():
            for p in self.tmp_dir.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(str(p))
        ids = set(self.calibration_ids())
        if self.baseline_dir.is_dir():
            for p in self.baseline_dir.iterdir():
                orphan = ID_RE.fullmatch(p.name) and p.name not in ids and p.is_dir() and not p.is_symlink()
                stale_temp = p.name.startswith(".") and time.time() - p.lstat().st_mtime > STALE_SECONDS
                if orphan or stale_temp:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                    removed.append(str(p))
        return removed

    # -- locking ----------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, what: str = "calibration") -> Iterator[None]:
        """Hold the site's lock; a second holder gets SiteLockedError at once (no waiting)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno in IO_ERRNOS:
                raise StorageError(f"{self.dir / '.lock'}: cannot open the site's lock ({e.strerror})") from None
            raise self._damaged(f"{self.dir / '.lock'}: cannot open the site's lock ({e.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise SiteLockedError(f"site {self.name!r} is busy: {holder}; try again when it has finished") from None
            try:  # who holds it, for the next one's message (a full disk may refuse it: the lock holds anyway)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{what} by pid {os.getpid()} since {utc_now():%Y-%m-%d %H:%M:%SZ}".encode(), 0)
            except OSError:
                pass
            yield
        finally:
            os.close(fd)


def _storage(e: OSError, what: str) -> Exception:
    """An OSError of a store write as StorageError (disk full, read-only, permission) or SiteError, saying what
    state the site is left in."""
    msg = f"{e.strerror or e}{f' ({shown(e.filename)})' if e.filename else ''} {what}"
    return StorageError(msg) if e.errno in IO_ERRNOS else SiteError(msg)


class SiteStore:
    """All sites under one root."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def site(self, name: str) -> Site:
        return Site(self.root, name)

    def check_root(self, must_exist: bool = False) -> bool:
        """Whether the store's folder exists (a store is created with its first site). SiteError when its path is
        something other than a folder, or when nothing is there and ``must_exist`` (a store named explicitly);
        StorageError when the system refuses to look."""
        try:
            is_dir = stat.S_ISDIR(os.stat(self.root).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            if must_exist:
                raise SiteError(f"{shown(self.root)}: no such site store (no folder there; `humwatch site create NAME "
                                f"--model DIR --sites-dir {shown(self.root)}` creates it)") from None
            return False
        except OSError as e:
            raise StorageError(f"{shown(self.root)}: cannot read the site store ({e.strerror})") from None
        if not is_dir:
            raise SiteError(f"{shown(self.root)}: not a folder (the site store is a folder holding one folder per "
                            "site)")
        return True

    def names(self) -> list[str]:
        """Names of the site folders (a valid name and a ``site.toml`` in any state: damaged ones included); none
        when the store's folder does not exist yet (SiteError when its path is not a folder: :meth:`check_root`)."""
        if not self.check_root():
            return []
        try:
            entries = list(self.root.iterdir())
        except OSError as e:
            raise StorageError(f"{self.root}: cannot list the site store ({e.strerror})") from None
        return sorted(p.name for p in entries if NAME_RE.fullmatch(p.name) and p.is_dir()
                      and os.path.lexists(p / "site.toml"))

    def create(self, cfg: SiteConfig, exist_ok: bool = False) -> Site:
        site = self.site(cfg.name)
        if site.exists() and not exist_ok:
            raise SiteError(f"site {cfg.name!r} already exists in {self.root}")
        cfg.created_utc = cfg.created_utc or utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")
        site.dir.mkdir(parents=True, exist_ok=True)
        site.save_config(cfg)
        return site
