"""Calibration records: their format and the one check every reader goes through (:func:`check_record`).

A record (``sites/<name>/calibrations/<id>.json``) is written once and never changed. Format 2 (this humwatch)
stores ``status`` ``pending`` for a calibration meant to be adopted, or ``refused``; whether it was adopted is not a
claim of the record but a fact of the site: the switch of ``current`` to it, logged in ``current.log``
(:mod:`calibration.store`). Format 1 records stored ``adopted`` before ``current`` moved, so a run killed in between
left "adopted" records that never were in force; they are still read, and their status is derived the same way.

Only what the code uses is required (forward-compatible: unknown keys are kept and ignored). A record that is not a
JSON object of this shape -- a list, ``null``, a missing ``threshold``, a string where a number belongs, NaN, a
newer format -- is refused as a whole with :class:`~calibration.errors.SiteDamagedError` naming the file and the
field. Adding a required field: add it to ``_SCHEMA`` (and bump ``RECORD_FORMAT`` if older records lack it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibration.errors import SiteDamagedError

RECORD_FORMAT = 2  # 1: status "adopted" written before the switch; 2: "pending" until `current` adopts it
READABLE_FORMATS = (1, 2)
KINDS = ("calibration", "recalibration")
STORED_STATUSES = ("pending", "adopted", "adopted-with-shift", "refused")
ID_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

Check = Callable[[Any, str], str | None]  # (value, where) -> None when fine, else "where: what is wrong"


def _leaf(test: Callable[[Any], str | None]) -> Check:
    def check(v: Any, where: str) -> str | None:
        why = test(v)
        return None if why is None else f"{where or 'the record'}: {why}"
    return check


def _num_why(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"expected a number, got {_short(v)}"
    if not math.isfinite(v):
        return f"expected a finite number, got {v!r}"
    return None


def _int_why(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"expected a whole number, got {_short(v)}"
    return f"expected >= 0, got {v}" if v < 0 else None


_num = _leaf(_num_why)
_num_or_none = _leaf(lambda v: None if v is None else _num_why(v))
_nonneg = _leaf(lambda v: _num_why(v) or (f"expected >= 0, got {v!r}" if v < 0 else None))
_share = _leaf(lambda v: _num_why(v) or (f"expected a share in [0, 1], got {v!r}" if not 0 <= v <= 1 else None))
_int = _leaf(_int_why)
_str = _leaf(lambda v: None if isinstance(v, str) else f"expected text, got {_short(v)}")
_bool = _leaf(lambda v: None if isinstance(v, bool) else f"expected true or false, got {_short(v)}")
_dict = _leaf(lambda v: None if isinstance(v, dict) else f"expected an object, got {_short(v)}")
_str_or_none = _leaf(lambda v: None if v is None or isinstance(v, str) else f"expected text or null, got {_short(v)}")
_pair = _leaf(lambda v: (f"expected [low, high], got {_short(v)}" if not isinstance(v, list) or len(v) != 2
                         else _num_why(v[0]) or _num_why(v[1])))


def _one_of(options: tuple[str, ...]) -> Check:
    return _leaf(lambda v: None if v in options else f"expected one of {', '.join(options)}, got {_short(v)}")


def _matches(rx: re.Pattern, like: str) -> Check:
    return _leaf(lambda v: None if isinstance(v, str) and rx.fullmatch(v) else f"expected {like}, got {_short(v)}")


def _list_of(item: Check | dict, min_len: int = 0) -> Check:
    def check(v: Any, where: str) -> str | None:
        if not isinstance(v, list):
            return f"{where}: expected a list, got {_short(v)}"
        if len(v) < min_len:
            return f"{where}: expected at least {min_len} value(s), got {len(v)}"
        return next((w for i, x in enumerate(v) if (w := _check(x, item, f"{where}[{i}]"))), None)
    return check


def _map_of(item: dict) -> Check:
    """An object whose values (any keys) all follow ``item``."""
    def check(v: Any, where: str) -> str | None:
        if not isinstance(v, dict):
            return f"{where}: expected an object, got {_short(v)}"
        return next((w for k, x in v.items() if (w := _check(x, item, f"{where}.{k}"))), None)
    return check


def _or_none(spec: Check) -> Check:
    return lambda v, where: None if v is None else spec(v, where)


def _optional(spec: Check | dict) -> tuple[str, Check | dict]:
    return ("optional", spec)


def _short(v: Any) -> str:
    s = repr(v) if isinstance(v, float) else json.dumps(v, ensure_ascii=True, default=str)
    return (s[:40] + "…") if len(s) > 41 else s


# The operating-state model of calibration.states (StateModel.to_dict); its shapes are checked by from_dict.
_STATES: dict = {"means": _list_of(_list_of(_num), 1), "covs": _list_of(_list_of(_list_of(_num)), 1),
                 "shares": _list_of(_share, 1), "stretches": _list_of(_int), "limit": _num, "minutes": _nonneg}

_SCHEMA: dict = {
    "format_version": _int,
    "id": _matches(ID_RE, "an id like 20261125T093000.123456Z"),
    "kind": _one_of(KINDS),
    "status": _one_of(STORED_STATUSES),
    "created_utc": _matches(TIME_RE, "a time like 2026-11-25T09:30:00Z"),
    "site": _str,
    "previous": _optional(_str_or_none),
    "model": {"path": _str, "hash": _str, "detector": _str, "feature_params_hash": _str, "feature_params": _dict},
    "audio": {"files": _list_of(_str), "minutes": _nonneg, "patches": _int, "threshold_patches": _int,
              "check_patches": _int, "forced": _optional(_bool)},
    "threshold": {"threshold": _num, "mean": _num, "std": _nonneg, "k": _num, "n_patches": _int,
                  "robust_threshold": _num, "quantile_999": _num, "max_score": _num, "exceedance": _share,
                  "exceedance_ci": _pair, "exceedance_method": _str, "false_alarms_per_day": _nonneg,
                  "false_alarms_per_day_ci": _pair, "alarm_m": _int, "alarm_n": _int},
    "check": {"patches": _int, "observed_exceedance": _num_or_none, "observed_alarms": _int},
    "findings": _list_of({"level": _str, "what": _str}),
    "baseline": {"score_sample": _list_of(_num, 1), "band_error_mean": _optional(_or_none(_list_of(_num)))},
    "validation": {
        "injected": _optional(_map_of({"by_severity": _list_of({"severity": _num, "detection_rate": _share}),
                                       "lowest_severity_detected": _num_or_none})),
        "known_faults": _optional(_map_of({"files": _list_of(_dict), "detection_rate": _share,
                                           "files_alarmed": _int})),
    },
    "states": _optional(lambda v, where: None if v is None else _check(v, _STATES, where)),
    "shift_test": _optional({"shifted": _bool, "reasons": _list_of(_str), "superiority": _num,
                             "exceed_count": _int, "patches": _int}),
}


def _check(value: Any, spec: Check | dict, where: str) -> str | None:
    """What is wrong with ``value`` (at ``where``) against ``spec`` -- a check, or a dict of key -> spec -- or None."""
    if not isinstance(spec, dict):
        return spec(value, where)
    if not isinstance(value, dict):
        return f"{where or 'the record'}: expected an object, got {_short(value)}"
    for key, sub in spec.items():
        optional = isinstance(sub, tuple)
        sub = sub[1] if optional else sub
        at = f"{where}.{key}" if where else key
        if key not in value:
            if optional:
                continue
            return f"{at}: missing"
        why = _check(value[key], sub, at)
        if why:
            return why
    return None


def check_record(obj: Any, path: Path, site_name: str) -> dict:
    """``obj`` (a parsed record from ``path``) if it is a complete calibration record this humwatch can use, else
    SiteDamagedError naming the file and the field, and what to do."""
    fix = f"run `humwatch site repair {site_name}` (it quarantines damaged records)"
    if isinstance(obj, dict):
        fv = obj.get("format_version")
        if isinstance(fv, int) and not isinstance(fv, bool) and fv > RECORD_FORMAT:
            raise SiteDamagedError(f"{path}: calibration record format {fv} is newer than this humwatch reads "
                                   f"({RECORD_FORMAT}); upgrade humwatch")
        if isinstance(fv, int) and fv not in READABLE_FORMATS:
            raise SiteDamagedError(f"{path}: unknown calibration record format {fv!r}; {fix}")
    why = _check(obj, _SCHEMA, "")
    if why:
        raise SiteDamagedError(f"{path}: damaged calibration record ({why}); {fix}")
    if obj["id"] != path.stem:
        raise SiteDamagedError(f"{path}: the record's id {obj['id']} is not its file name; {fix}")
    return obj


def parse_record(data: bytes, path: Path, site_name: str) -> dict:
    """Decode and check the bytes of a record file (UTF-8 JSON, no NaN)."""
    fix = f"run `humwatch site repair {site_name}` (it quarantines damaged records)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SiteDamagedError(f"{path}: damaged calibration record (not UTF-8 text: byte {data[e.start]:#04x} at "
                               f"{e.start}); {fix}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; RecursionError: [[[[... nesting
        raise SiteDamagedError(f"{path}: corrupt calibration record ({str(e)[:120]}); {fix}") from None
    return check_record(obj, path, site_name)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a record may hold")


def dumps(record: dict) -> str:
    """A record as stored: indented JSON, ASCII (undecodable file names kept as escapes), no NaN."""
    return json.dumps(record, indent=2, allow_nan=False) + "\n"
