"""``humwatch site repair NAME``: find what is damaged in a site and apply the safe fix.

:func:`diagnose` checks every file through its one reader (site.toml, the model it names, each calibration record,
``current`` and ``current.log``, the score log with SQLite's integrity check, leftovers of killed runs) and returns
:class:`Problem` s, each with the fix it would apply; :func:`repair` applies the fixes under the site lock (and the
score log's writer lock, so a running monitor is never pulled from under its feet). Fixes never delete data: a
damaged record goes to ``calibrations/damaged/``, a damaged log or current.log is renamed ``*.damaged-<UTC time>``.
What cannot be fixed safely here (damaged settings, a changed model) is named with what to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from anomaly.atomic import fsync_dir, write_text
from anomaly.errors import HumwatchError
from calibration.errors import SiteDamagedError, SiteError
from calibration.monitoring.scorelog import check_log, writer_lock
from calibration.records import ID_RE
from calibration.store import Site, utc_id

DAMAGED_DIR = "damaged"


@dataclass
class Problem:
    what: str  # the damage, naming the file
    fix: str  # what repair does about it (or, when not fixable, what the user should do)
    kind: str  # tidy | record | switch_log | current | score_log | settings | model
    fixable: bool = True
    target: str = ""  # the record id, when kind is "record"


def _log_path(site: Site) -> Path:
    return site.dir / "scores.sqlite"


def diagnose(site: Site) -> list[Problem]:
    """Everything damaged in ``site`` (empty: nothing). SiteError when there is no such site."""
    if not site.dir.is_dir():
        raise SiteError(f"no site {site.name!r} in {site.dir.parent}")
    out: list[Problem] = []
    cfg = None
    try:
        cfg = site.config()
    except SiteError as e:
        out.append(Problem(str(e), "edit site.toml (the message names the setting), or move the site folder aside "
                                   f"and create it again with `humwatch site create {site.name} --model DIR`",
                           "settings", fixable=False))
    if cfg is not None:
        try:
            from calibration.calibrate import site_detector

            site_detector(site)
        except HumwatchError as e:
            out.append(Problem(f"model: {e}", f"point the site at a usable model: `humwatch site set-model "
                                              f"{site.name} --model DIR` (then calibrate again)", "model",
                               fixable=False))
    leftovers = _leftovers(site)
    if leftovers:
        out.append(Problem(f"{len(leftovers)} leftover(s) of interrupted runs ({', '.join(leftovers[:3])}"
                           f"{' …' if len(leftovers) > 3 else ''})", "remove them", "tidy"))
    for cid, _, err in site.records(statuses=False):
        if err is not None:
            out.append(Problem(err, f"move it to {site.calibrations_dir / DAMAGED_DIR / (cid + '.json')}", "record",
                               target=cid))
    try:
        site.switches()
    except SiteDamagedError as e:
        out.append(Problem(str(e), f"rewrite {site.switch_log_path.name} without its damaged lines (the old file is "
                                   "kept beside it)", "switch_log"))
    current_problem = _current_problem(site)
    if current_problem:
        target = _newest_intact(site, cfg, skip_damaged=True)
        out.append(Problem(current_problem, f"re-point current to {target}, the newest intact calibration that was "
                           "in force" if target else "clear current (no intact calibration was in force): calibrate "
                           f"again with `humwatch site calibrate {site.name} --from AUDIO`", "current"))
    log_problem = check_log(_log_path(site))
    if log_problem:
        out.append(Problem(log_problem, "move it aside as scores.sqlite.damaged-<time> (kept for inspection); the "
                                        "next monitor starts a new log", "score_log"))
    return out


def _leftovers(site: Site) -> list[str]:
    names = []
    if site.tmp_dir.is_dir():
        names += [p.name for p in site.tmp_dir.iterdir()]
    ids = set(site.calibration_ids())
    if site.baseline_dir.is_dir():
        names += [f"baseline/{p.name}" for p in site.baseline_dir.iterdir()
                  if p.name.startswith(".") or (ID_RE.fullmatch(p.name) and p.name not in ids and p.is_dir())]
    return names


def _current_problem(site: Site) -> str | None:
    """What is wrong with ``current`` itself (its text, the record it names), or None."""
    try:
        cid = site.current_id()
        if cid is None:
            return None
        rec = site._record(cid)
    except SiteDamagedError as e:
        return str(e)
    except SiteError:
        return f"{site.current_path}: names calibration {cid}, which is missing from {site.calibrations_dir}"
    if rec["status"] == "refused":
        return f"{site.current_path}: names calibration {cid}, a refused recalibration"
    return None


def _newest_intact(site: Site, cfg, skip_damaged: bool) -> str | None:
    """The calibration ``current`` should name: walking back from the last switch, the first intact, not refused
    record of the site's model (None when the last switch cleared ``current``, e.g. after a model change)."""
    try:
        switches = site.switches()
    except SiteDamagedError:
        switches = _good_switches(site)
    model_hash = getattr(cfg, "model_hash", None)
    for e in reversed(switches):
        cid = e.get("current")
        if cid is None:
            return None
        try:
            rec = site._record(cid)
        except SiteError:
            continue
        if rec["status"] == "refused" or (model_hash and rec["model"]["hash"] != model_hash):
            continue
        return cid
    return None


def _good_switches(site: Site) -> list[dict]:
    """The readable lines of a damaged current.log."""
    out = []
    try:
        data = site.switch_log_path.read_bytes()
    except OSError:
        return out
    for raw in data.split(b"\n")[:-1]:
        try:
            e = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            continue
        if isinstance(e, dict) and (e.get("current") is None or isinstance(e.get("current"), str)):
            out.append(e)
    return out


def _aside(path: Path) -> Path:
    dest = path.with_name(f"{path.name}.damaged-{utc_id()}")
    os.rename(path, dest)
    return dest


def repair(site: Site) -> list[str]:
    """Apply every fixable repair (under the site's lock); returns what was done."""
    done: list[str] = []
    with site.lock("repair"):
        problems = diagnose(site)
        kinds = {p.kind for p in problems}
        if "tidy" in kinds:
            done += [f"removed {p}" for p in site.tidy()]
        for p in problems:
            if p.kind == "record":
                src = site.calibrations_dir / f"{p.target}.json"
                dest_dir = site.calibrations_dir / DAMAGED_DIR
                dest_dir.mkdir(exist_ok=True)
                os.rename(src, dest_dir / src.name)
                fsync_dir(site.calibrations_dir)
                done.append(f"moved {src.name} to {dest_dir}")
        if "switch_log" in kinds:
            good = _good_switches(site)
            kept = _aside(site.switch_log_path)
            write_text(site.switch_log_path, "".join(json.dumps(e) + "\n" for e in good))
            done.append(f"rewrote {site.switch_log_path.name} with its {len(good)} readable line(s) (the old one is "
                        f"{kept.name})")
        if "current" in kinds or _current_problem(site):
            cfg = None
            try:
                cfg = site.config()
            except SiteError:
                pass
            target = _newest_intact(site, cfg, skip_damaged=True)
            cur = site.current_path
            if os.path.lexists(cur) and (cur.is_symlink() or not cur.is_file()):  # a directory, FIFO, link
                done.append(f"moved {cur.name} aside ({_aside(cur).name}: not a regular file)")
            write_text(cur, (target or "") + "\n")
            site._append_switch({"t_utc": None, "current": target, "previous": None, "why": "repair"})
            done.append(f"current now names {target}" if target else "cleared current: calibrate the site again")
        if "score_log" in kinds:
            path = _log_path(site)
            fd = writer_lock(path)  # SiteLockedError while a monitor writes it
            try:
                moved = [_aside(q) for q in (path, path.with_name(path.name + "-wal"),
                                             path.with_name(path.name + "-shm")) if q.exists()]
                fsync_dir(site.dir)
            finally:
                os.close(fd)
            done.append(f"moved the damaged score log aside ({', '.join(m.name for m in moved)})")
    return done
