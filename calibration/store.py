"""The site store: one folder per installation.

Layout (root ``./sites`` unless ``--sites-dir`` or ``HUMWATCH_SITES`` says otherwise)::

    sites/<name>/site.toml                   settings: machine, model path + hash, microphone, k, alarm rule, interval
    sites/<name>/calibrations/<id>.json      one per calibration, versioned, never overwritten
    sites/<name>/current                     the id of the calibration in force
    sites/<name>/settings.jsonl              every settings change (`humwatch site set`): time, old and new values
    sites/<name>/baseline/<id>/...           optional retained calibration audio
    sites/<name>/.lock                       held while a calibration or recalibration runs

Every write is atomic (temp file + rename); calibration files are created with O_EXCL so nothing is overwritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anomaly.atomic import write_text
from anomaly.decision import DEFAULT_K, MOFN_RULE, MOfN, check_k, parse_rule
from anomaly.errors import DecisionError
from calibration.errors import SiteError, SiteLockedError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ENV_VAR = "HUMWATCH_SITES"
SITE_FORMAT = 1


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid site name, else raise SiteError saying why."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SiteError(f"invalid site name {name!r}: use 1-64 characters a-z, 0-9, '-' or '_', starting with a "
                        "letter or digit (no paths)")
    return name


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 200


def validate_text(what: str, value: str) -> str:
    """A free-text setting (machine, microphone): one line of at most ``MAX_TEXT`` characters."""
    if not isinstance(value, str) or _CONTROL.search(value) or len(value) > MAX_TEXT:
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
        if int(self.recalibration_days) < 1:
            raise SiteError(f"recalibration interval must be >= 1 day, got {self.recalibration_days}")

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
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SiteError(f"{where}: malformed TOML ({e})") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SiteError(f"{where}: unknown settings {unknown}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise SiteError(f"{where}: bad or incomplete site settings ({e})") from None


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

    def exists(self) -> bool:
        return self.toml_path.is_file()

    def config(self) -> SiteConfig:
        if not self.exists():
            raise SiteError(f"no site {self.name!r} in {self.dir.parent} (create it with `humwatch site create "
                            f"{self.name} --model DIR`)")
        return SiteConfig.from_toml(self.toml_path.read_text(), str(self.toml_path))

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
        return self.dir / "baseline" / f"mic-{utc_id()}.flac"

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
        if not self.calibrations_dir.is_dir():
            return []
        return sorted(p.stem for p in self.calibrations_dir.glob("*.json"))

    def add_calibration(self, record: dict, make_current: bool = True) -> str:
        """Store a new calibration record (never overwriting one) and optionally make it current."""
        self.calibrations_dir.mkdir(parents=True, exist_ok=True)
        while True:
            cid = utc_id()
            path = self.calibrations_dir / f"{cid}.json"
            record = {**record, "id": cid}
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n")
            try:
                os.link(tmp, path)  # fails if the id exists: calibrations are never overwritten
            except FileExistsError:
                tmp.unlink()
                continue
            tmp.unlink()
            break
        if make_current:
            write_text(self.dir / "current", cid + "\n")
        return cid

    def current_id(self) -> str | None:
        p = self.dir / "current"
        if not p.is_file():
            return None
        cid = p.read_text().strip()
        return cid or None

    def calibration(self, cid: str | None = None) -> dict:
        """A calibration record (the current one by default). Raises SiteError when there is none."""
        cid = cid or self.current_id()
        if cid is None:
            raise SiteError(f"site {self.name!r} is not calibrated yet (run `humwatch site calibrate {self.name} "
                            "--from AUDIO`)")
        path = self.calibrations_dir / f"{cid}.json"
        if not path.is_file():
            raise SiteError(f"site {self.name!r}: calibration {cid} is missing from {self.calibrations_dir}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SiteError(f"{path}: corrupt calibration record ({e})") from None

    def history(self) -> list[dict]:
        return [self.calibration(c) for c in self.calibration_ids()]

    # -- locking ----------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, what: str = "calibration") -> Iterator[None]:
        """Hold the site's lock; a second holder gets SiteLockedError at once (no waiting)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise SiteLockedError(f"site {self.name!r} is busy: {holder}; try again when it has finished") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} by pid {os.getpid()} since {utc_now():%Y-%m-%d %H:%M:%SZ}".encode(), 0)
            yield
        finally:
            os.close(fd)


class SiteStore:
    """All sites under one root."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def site(self, name: str) -> Site:
        return Site(self.root, name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if NAME_RE.fullmatch(p.name) and (p / "site.toml").is_file())

    def create(self, cfg: SiteConfig, exist_ok: bool = False) -> Site:
        site = self.site(cfg.name)
        if site.exists() and not exist_ok:
            raise SiteError(f"site {cfg.name!r} already exists in {self.root}")
        cfg.created_utc = cfg.created_utc or utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")
        site.dir.mkdir(parents=True, exist_ok=True)
        site.save_config(cfg)
        return site
