"""When a recording started: the one owner of that decision for monitoring, calibration and the report.

A file's start time (UTC) comes from, in this order:

1. ``metadata``: the file's own record of it: a WAV's Broadcast-WAV ``bext`` chunk (OriginationDate and
   OriginationTime), else its ``LIST``/``INFO`` ``ICRD`` (creation date) when it holds a time of day; a FLAC's Vorbis
   comments (``CREATION_TIME``, ``DATETIME``, ``DATE`` with a time of day, or ``ORIGINATION_DATE`` +
   ``ORIGINATION_TIME``). Read by the small chunk readers below (no tag library);
2. ``name``: a time in the file name (defaults :data:`NAME_FORMATS`, e.g. ``pump3_20261120T080000.flac``,
   ``rec-2026-11-20_08-00-00.wav``; other strftime-like formats with :attr:`TimePolicy.name_formats`);
3. ``start-time`` / ``contiguous``: the time the user gave for the first such file, each further one following the
   previous file's end;
4. ``mtime``: the file's modification time minus its duration. Uncertain: copying sets every copy's mtime to the
   time of the copy, so the recordings pile up on top of each other. :func:`assign_times` says so.

Times without a zone (bext, most tags and names) are read in :attr:`TimePolicy.tz` (UTC unless told otherwise).
:func:`sequence_problems` finds files that overlap or go back in time. The source of each time is logged with the
scores (``calibration.monitoring.scorelog``) so that the report can mark periods whose times are uncertain.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anomaly.errors import AudioError, HumwatchError

SOURCES = ("metadata", "name", "start-time", "contiguous", "clock", "mtime")
UNCERTAIN = frozenset({"mtime"})  # sources whose times the report marks as uncertain
NAME_FORMATS = ("%Y%m%dT%H%M%S", "%Y%m%d_%H%M%S", "%Y%m%d-%H%M%S", "%Y-%m-%dT%H-%M-%S", "%Y-%m-%d_%H-%M-%S",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H-%M-%S", "%Y-%m-%d %H.%M.%S")
OVERLAP_TOLERANCE_S = 1.0  # clocks of separate recordings disagree by this much without anything being wrong
YEARS = (1990, 2200)  # times outside are read as garbage, not as a time
_MAX_CHUNK_SCAN = 64  # chunks/blocks looked at before giving up on a file's metadata


class TimeError(HumwatchError, ValueError):
    """A time setting that cannot be used (a malformed name format or time zone)."""


@dataclass(frozen=True)
class TimePolicy:
    """How to find the start times of a list of files."""

    name_formats: tuple[str, ...] = NAME_FORMATS
    tz: tzinfo = UTC  # for times that carry no zone
    start_utc: float | None = None  # the time of the first file without a time of its own
    use_metadata: bool = True

    def __post_init__(self) -> None:
        for f in self.name_formats:
            _format_regex(f)  # fail early on a malformed format


@dataclass
class FileTime:
    path: Path
    t0_utc: float
    duration_s: float
    source: str  # one of SOURCES
    detail: str = ""  # e.g. "bext 2026-11-20 08:00:00", "name 20261120T080000"

    @property
    def end_utc(self) -> float:
        return self.t0_utc + self.duration_s

    @property
    def uncertain(self) -> bool:
        return self.source in UNCERTAIN


@dataclass
class Timing:
    """The times of a list of files, the files whose duration could not be read, and what looks wrong."""

    files: list[FileTime]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def by_source(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.source] = out.get(f.source, 0) + 1
        return out


# -- settings ---------------------------------------------------------------------------------------------------------
def parse_tz(text: str | None) -> tzinfo:
    """``UTC``, ``Z``, an offset like ``+01:00`` / ``-0530``, or an IANA zone like ``Europe/Berlin``."""
    if text is None or not text.strip() or text.strip().upper() in ("UTC", "Z"):
        return UTC
    t = text.strip()
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})?", t)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        if minutes > 14 * 60:
            raise TimeError(f"time zone offset must be within ±14:00, got {text!r}")
        return timezone((1 if m.group(1) == "+" else -1) * timedelta(minutes=minutes))
    try:
        return ZoneInfo(t)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimeError(f"unknown time zone {text!r}: use UTC, an offset like +01:00, or a name like "
                        "Europe/Berlin") from None


_DIRECTIVES = {"Y": r"\d{4}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}", "S": r"\d{2}",
               "y": r"\d{2}", "j": r"\d{3}"}


def _format_regex(fmt: str) -> re.Pattern:
    """A strftime-like format (``%Y %m %d %H %M %S %y %j``, ``%%``, other characters literal) as a regex."""
    if not isinstance(fmt, str) or "%" not in fmt:
        raise TimeError(f"a file-name time format needs strftime directives like %Y%m%d_%H%M%S, got {fmt!r}")
    out, i = [], 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            d = fmt[i + 1: i + 2]
            if d == "%":
                out.append("%")
            elif d in _DIRECTIVES:
                out.append(_DIRECTIVES[d])
            else:
                raise TimeError(f"file-name time format {fmt!r}: %{d} is not supported (use %Y %m %d %H %M %S %y "
                                "%j)")
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    if not all(f"%{d}" in fmt for d in "HM"):
        raise TimeError(f"file-name time format {fmt!r} needs at least the hour and minute (%H and %M)")
    return re.compile(r"(?<!\d)" + "".join(out) + r"(?!\d)")


# -- parsing times ----------------------------------------------------------------------------------------------------
def _sane(dt: datetime) -> datetime | None:
    return dt if YEARS[0] <= dt.year < YEARS[1] else None


def _to_utc(dt: datetime, tz: tzinfo) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def parse_stamp(text: str) -> datetime | None:
    """A date *with a time of day* from free text (ISO 8601 and close variants); None for a date alone or junk."""
    t = text.strip().strip("\x00").strip()
    if not re.search(r"\d{1,2}[:.\-]\d{2}", t[10:]) and not re.search(r"T\d{4}", t):
        return None  # a date alone places a recording nowhere within its day
    t = re.sub(r"^(\d{4})[:/.](\d{2})[:/.](\d{2})", r"\1-\2-\3", t)  # 2026:11:20 (bext, EXIF style) → 2026-11-20
    t = t.replace(" ", "T", 1)
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        return _sane(datetime.fromisoformat(t))
    except ValueError:
        return None


def name_time(name: str, formats: Sequence[str] = NAME_FORMATS) -> tuple[datetime, str] | None:
    """The first time in a file name matching one of ``formats``, with the matched text; a ``Z`` right after the
    match means UTC."""
    stem = Path(name).name
    for fmt in formats:
        for m in _format_regex(fmt).finditer(stem):
            try:
                dt = datetime.strptime(m.group(0), fmt)
            except ValueError:
                continue
            if _sane(dt) is None:
                continue
            if stem[m.end(): m.end() + 1] in ("Z", "z"):
                dt = dt.replace(tzinfo=UTC)
            return dt, m.group(0)
    return None


# -- metadata readers -------------------------------------------------------------------------------------------------
def _riff_chunks(fh) -> dict[bytes, bytes]:
    """The small chunks of a RIFF/RF64 WAVE file (``bext``, ``LIST``) by id; the audio data is skipped, not read."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return {}
    out: dict[bytes, bytes] = {}
    data_size64 = None
    for _ in range(_MAX_CHUNK_SCAN):
        h = fh.read(8)
        if len(h) < 8:
            break
        cid, size = h[:4], struct.unpack("<I", h[4:])[0]
        if cid == b"ds64":
            body = fh.read(size)
            if len(body) >= 16:
                data_size64 = struct.unpack("<Q", body[8:16])[0]
        elif cid == b"data":
            if size == 0xFFFFFFFF:
                if data_size64 is None:
                    break
                size = data_size64
            fh.seek(size + (size & 1), os.SEEK_CUR)
            continue
        elif cid in (b"bext", b"LIST") and size <= 1 << 20:
            body = fh.read(size)
            if cid == b"bext":
                out[cid] = body
            elif body[:4] == b"INFO":
                out[b"INFO"] = body[4:]
        else:
            fh.seek(size, os.SEEK_CUR)
        if size & 1:
            fh.seek(1, os.SEEK_CUR)
    return out


def _bext_time(body: bytes) -> tuple[datetime, str] | None:
    """OriginationDate (10 chars at 320) and OriginationTime (8 chars at 330) of a ``bext`` chunk (EBU Tech 3285)."""
    if len(body) < 338:
        return None
    date = body[320:330].decode("ascii", "replace")
    tod = body[330:338].decode("ascii", "replace")
    m_d = re.fullmatch(r"(\d{4})[-_:. /](\d{2})[-_:. /](\d{2})", date)
    m_t = re.fullmatch(r"(\d{2})[-_:. ](\d{2})[-_:. ](\d{2})", tod)
    if not (m_d and m_t):
        return None
    try:
        dt = datetime(*map(int, m_d.groups()), *map(int, m_t.groups()))
    except ValueError:
        return None
    return (dt, f"bext {dt:%Y-%m-%d %H:%M:%S}") if _sane(dt) else None


def _info_time(body: bytes) -> tuple[datetime, str] | None:
    """The ``ICRD`` sub-chunk of a ``LIST``/``INFO`` chunk, when it holds a time of day."""
    i = 0
    while i + 8 <= len(body):
        sid, size = body[i: i + 4], struct.unpack("<I", body[i + 4: i + 8])[0]
        if sid == b"ICRD":
            text = body[i + 8: i + 8 + size].decode("latin-1")
            dt = parse_stamp(text)
            return (dt, f"ICRD {text.strip(chr(0)).strip()}") if dt else None
        i += 8 + size + (size & 1)
    return None


_FLAC_TAGS = ("CREATION_TIME", "DATETIME", "DATE", "RECORDED_DATE", "RECORDINGDATE")


def _flac_comments(fh) -> dict[str, str]:
    """The Vorbis comments of a FLAC file (upper-case keys), after an optional ID3v2 tag."""
    head = fh.read(4)
    if head[:3] == b"ID3":
        rest = fh.read(6)
        if len(rest) < 6:
            return {}
        size = 0
        for b in rest[2:6]:
            size = (size << 7) | (b & 0x7F)
        fh.seek(10 + size)
        head = fh.read(4)
    if head != b"fLaC":
        return {}
    for _ in range(_MAX_CHUNK_SCAN):
        h = fh.read(4)
        if len(h) < 4:
            return {}
        last, kind, size = h[0] & 0x80, h[0] & 0x7F, int.from_bytes(h[1:4], "big")
        if kind == 4:
            return _vorbis_comments(fh.read(size))
        fh.seek(size, os.SEEK_CUR)
        if last:
            return {}
    return {}


def _vorbis_comments(body: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        n = struct.unpack("<I", body[:4])[0]
        i = 4 + n
        count = struct.unpack("<I", body[i: i + 4])[0]
        i += 4
        for _ in range(min(count, 1000)):
            ln = struct.unpack("<I", body[i: i + 4])[0]
            text = body[i + 4: i + 4 + ln].decode("utf-8", "replace")
            i += 4 + ln
            if "=" in text:
                k, v = text.split("=", 1)
                out.setdefault(k.strip().upper(), v)
    except struct.error:
        pass
    return out


def _flac_time(tags: dict[str, str]) -> tuple[datetime, str] | None:
    for k in _FLAC_TAGS:
        if k in tags:
            dt = parse_stamp(tags[k])
            if dt:
                return dt, f"{k} {tags[k].strip()}"
    if "ORIGINATION_DATE" in tags and "ORIGINATION_TIME" in tags:
        text = f"{tags['ORIGINATION_DATE'].strip()} {tags['ORIGINATION_TIME'].strip()}"
        dt = parse_stamp(text)
        if dt:
            return dt, f"ORIGINATION_DATE/TIME {text}"
    return None


def metadata_time(path: str | Path) -> tuple[datetime, str] | None:
    """The recording time a file states about itself (naive unless the text carried a zone), with where it was
    found; None when the file has none (or cannot be opened: the audio reader reports that)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            fh.seek(0)
            if magic in (b"RIFF", b"RF64", b"BW64"):
                chunks = _riff_chunks(fh)
                return ((_bext_time(chunks[b"bext"]) if b"bext" in chunks else None)
                        or (_info_time(chunks[b"INFO"]) if b"INFO" in chunks else None))
            if magic == b"fLaC" or magic[:3] == b"ID3":
                return _flac_time(_flac_comments(fh))
    except (OSError, struct.error):
        return None
    return None


# -- assigning times ---------------------------------------------------------------------------------------------------
def own_time(path: Path, policy: TimePolicy) -> tuple[float, str, str] | None:
    """``(t0_utc, source, detail)`` from the file's metadata or name, or None."""
    if policy.use_metadata:
        got = metadata_time(path)
        if got:
            return _to_utc(got[0], policy.tz), "metadata", got[1]
    got = name_time(path.name, policy.name_formats)
    if got:
        return _to_utc(got[0], policy.tz), "name", f"name {got[1]}"
    return None


def assign_times(files: Sequence[Path], durations: Sequence[float], policy: TimePolicy | None = None) -> Timing:
    """Start times for ``files`` (with their ``durations`` in seconds), in the order given; see the module text."""
    policy = policy or TimePolicy()
    out: list[FileTime] = []
    for f, dur in zip(files, durations, strict=True):
        f = Path(f)
        own = own_time(f, policy)
        placed = [t for t in out if t.source in ("start-time", "contiguous")]
        if own is not None:
            out.append(FileTime(f, own[0], dur, own[1], own[2]))
        elif policy.start_utc is not None and not placed:
            out.append(FileTime(f, policy.start_utc, dur, "start-time", "--start-time"))
        elif policy.start_utc is not None:
            prev = out[-1]
            out.append(FileTime(f, prev.end_utc, dur, "contiguous", f"after {prev.path.name}"))
        else:
            mt = f.stat().st_mtime
            out.append(FileTime(f, mt - dur, dur, "mtime",
                                f"modified {datetime.fromtimestamp(mt, UTC):%Y-%m-%d %H:%M:%S} UTC"))
    return Timing(out, problems=sequence_problems(out))


def sequence_problems(times: Sequence[FileTime], tolerance_s: float = OVERLAP_TOLERANCE_S) -> list[str]:
    """Plain sentences about files that overlap the previous one or start before it, and about times guessed from
    modification times."""
    out = []
    for a, b in zip(times, times[1:], strict=False):
        if b.t0_utc < a.t0_utc - tolerance_s:
            out.append(f"{b.path.name} starts {_ago(a.t0_utc - b.t0_utc)} before {a.path.name}, which comes "
                       f"before it in the list (out of order: {b.source} {_hms(b.t0_utc)} vs {a.source} "
                       f"{_hms(a.t0_utc)})")
        elif b.t0_utc < a.end_utc - tolerance_s:
            out.append(f"{b.path.name} overlaps {a.path.name} by {_ago(a.end_utc - b.t0_utc)} (times from "
                       f"{b.source} and {a.source})")
    guessed = [t for t in times if t.uncertain]
    if guessed:
        names = ", ".join(t.path.name for t in guessed[:3]) + (f" and {len(guessed) - 3} more" if len(guessed) > 3
                                                               else "")
        out.append(f"{len(guessed)} file(s) have no recording time in their metadata or name ({names}): placed by "
                   "modification time, which copying changes; give --start-time (files then follow each other) or "
                   "a --name-time format")
    return out


def _hms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h" if s < 2 * 86400 else f"{s / 86400:.1f} days"


def check_readable(files: Sequence[Path], info) -> tuple[list[Path], list[float], list[tuple[Path, str]]]:
    """Durations of ``files`` through ``info(path).duration_s``; unreadable ones are returned apart with the
    reason."""
    ok, durs, bad = [], [], []
    for f in files:
        try:
            durs.append(float(info(f).duration_s))
            ok.append(Path(f))
        except AudioError as e:
            bad.append((Path(f), str(e)))
    return ok, durs, bad
