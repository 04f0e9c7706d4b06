"""Fleet jobs: one task per site on Ray (``humwatch fleet calibrate | recalibrate --due | score | export``).

A local Ray on this computer by default, a cluster with ``ray_address`` (every node needs humwatch installed and
the site store on a shared path); the same code either way, and ``workers=0`` runs the sites one at a time in this
process without Ray. Each site is one task that calls the single-site code (:func:`calibration.calibrate.calibrate`,
``recalibrate``, the :class:`~calibration.monitoring.monitor.Monitor`, the export), so the results land in the same
site store and the site lock keeps a fleet job and a technician from calibrating the same site at once.

A task's failure (a humwatch error, an exception, a crashed worker) is that site's result, never the job's. The job's
progress is saved after every site in ``<sites>/.fleet/<job>.json``; a re-run of the same job (same kind, sites and
options, the same UTC day) skips the sites already done and retries the others.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from anomaly.atomic import write_text
from anomaly.errors import HumwatchError, one_line
from calibration.store import SiteStore

JOB_DIR = ".fleet"
CONNECT_TIMEOUT_S = 5.0  # how long --ray-address may take to answer before the job gives up


class FleetError(HumwatchError):
    """A fleet job cannot run at all (e.g. its Ray cluster cannot be reached); a site's failure is its result."""


@dataclass(frozen=True)
class JobOptions:
    """What every task of a job gets (plain values: they travel to Ray workers)."""

    min_minutes: float = 30.0
    force: bool = False
    accept_shift: bool = False
    extra: tuple = ()  # (key, value) pairs of a task kind's own options (e.g. the export's)

    def get(self, key: str, default=None):
        return dict(self.extra).get(key, default)


@dataclass
class SiteResult:
    site: str
    status: str  # done | failed | skipped
    message: str
    seconds: float = 0.0


@dataclass
class JobState:
    """A job's progress file: per site, its last result."""

    path: Path
    job: str
    kind: str
    sites: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, job: str, kind: str, restart: bool) -> JobState:
        st = cls(path, job, kind)
        if path.is_file() and not restart:
            try:
                d = json.loads(path.read_text())
                if isinstance(d.get("sites"), dict):
                    st.sites = {k: v for k, v in d["sites"].items() if isinstance(v, dict)}
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                pass  # a damaged progress file: run every site again (each task is safe to repeat)
        return st

    def done(self, site: str) -> bool:
        return self.sites.get(site, {}).get("status") == "done"

    def record(self, r: SiteResult) -> None:
        self.sites[r.site] = {**asdict(r), "t_utc": time.time()}
        write_text(self.path, json.dumps({"job": self.job, "kind": self.kind, "sites": self.sites}, indent=1) + "\n")


def job_id(kind: str, sites: Sequence[str], opts: JobOptions, day: str | None = None) -> str:
    day = day or datetime.now(UTC).strftime("%Y%m%d")
    h = hashlib.sha256(json.dumps([kind, sorted(sites), asdict(opts)], default=str).encode()).hexdigest()[:10]
    return f"{kind}-{day}-{h}"


# -- the tasks (each: store root, site name, options -> one line saying what it did) ----------------------------------
def _source_files(site) -> list[Path]:
    from anomaly.audio import find_audio
    from calibration.errors import SiteError

    src = site.config().audio_source
    if src is None or src[0] != "dir":
        raise SiteError(f"site {site.name!r} has no audio directory as its source (site.toml source = a directory; "
                        "a fleet job cannot record from a sound card)")
    return find_audio([Path(src[1])])


def _request(site, opts: JobOptions):
    from calibration.calibrate import CalibrationRequest

    return CalibrationRequest(files=_source_files(site), min_minutes=opts.min_minutes, force=opts.force)


def task_calibrate(root: str, name: str, opts: JobOptions) -> str:
    from calibration.calibrate import calibrate

    site = SiteStore(root).site(name)
    rec = calibrate(site, _request(site, opts))
    th = rec["threshold"]
    return f"calibrated: threshold {th['threshold']:.4g}, {th['false_alarms_per_day']:.2g} false alarms/day expected"


def task_recalibrate(root: str, name: str, opts: JobOptions) -> str:
    from calibration.calibrate import recalibrate

    site = SiteStore(root).site(name)
    rec = recalibrate(site, _request(site, opts), accept_shift=opts.accept_shift)
    return f"recalibrated ({rec.get('status', 'adopted')}): threshold {rec['threshold']['threshold']:.4g}"


def task_score(root: str, name: str, opts: JobOptions) -> str:
    """Score the site's source files that its log does not hold yet (a re-run scores only new recordings)."""
    from calibration.monitoring.monitor import Monitor, MonitorConfig
    from calibration.monitoring.scorelog import logged_files

    site = SiteStore(root).site(name)
    files = _source_files(site)
    seen = logged_files(site.dir / "scores.sqlite")
    new = [f for f in files if str(Path(f).resolve()) not in seen]
    if not new:
        return f"nothing new to score ({len(files)} file(s) already logged)"
    with Monitor(site, MonitorConfig()) as mon:
        st = mon.process_files(new)
    return (f"scored {len(new) - len(st.skipped)} file(s), {st.patches} patches, {st.alarms} alarm(s)"
            + (f", {len(st.skipped)} skipped" if st.skipped else ""))


TASKS: dict[str, Callable[[str, str, JobOptions], str]] = {
    "calibrate": task_calibrate, "recalibrate": task_recalibrate, "score": task_score}


def run_site(task: Callable[[str, str, JobOptions], str], root: str, name: str, opts: JobOptions) -> SiteResult:
    """One site's task, in a Ray worker or in this process: a result, never an exception."""
    import torch

    torch.set_num_threads(1)
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            msg = task(root, name, opts)
            status = "done"
        except HumwatchError as e:
            msg, status = one_line(e), "failed"
        except Exception as e:  # noqa: BLE001 - one site's bug must not stop the fleet; it is reported
            msg, status = f"{type(e).__name__}: {one_line(e)}", "failed"
    notes = sorted({one_line(w.message) for w in caught if isinstance(w.message, Warning)})
    if notes:
        msg += " (warnings: " + "; ".join(notes)[:300] + ")"
    return SiteResult(name, status, msg, time.monotonic() - t0)


# -- site selection ---------------------------------------------------------------------------------------------------
def select_sites(store: SiteStore, kind: str, names: Sequence[str] | None) -> tuple[list[str], list[SiteResult]]:
    """The sites a job runs on, and those it skips (with why). ``names``: the user's list, else every site (for
    ``recalibrate``: every *due* site; for ``score`` and ``export``: every calibrated one)."""
    from calibration.calibrate import is_due

    chosen, skipped = [], []
    for name in (names or store.names()):
        try:
            site = store.site(name)
            cfg = site.config()
            cur = site.calibration() if site.current_id() else None
        except HumwatchError as e:
            skipped.append(SiteResult(name, "skipped", one_line(e)))
            continue
        if kind == "recalibrate" and cur is None:
            skipped.append(SiteResult(name, "skipped", "not calibrated yet (use fleet calibrate)"))
        elif kind == "recalibrate" and not names and not is_due(cfg, cur):
            continue  # not due
        elif kind in ("score", "export") and cur is None:
            skipped.append(SiteResult(name, "skipped", "not calibrated yet"))
        elif kind == "calibrate" and cur is not None and not names:
            continue  # already calibrated; name it explicitly to calibrate again
        else:
            chosen.append(name)
    return chosen, skipped


# -- running a job -----------------------------------------------------------------------------------------------
def check_address(address: str) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``; ``auto`` is Ray's own search) that does not answer within
    CONNECT_TIMEOUT_S: Ray itself would retry for minutes, printing warnings, before it gives up."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]\s/]+?)\]?:(\d{1,5})", address.strip())
    if not m:
        raise FleetError(f"--ray-address must be HOST:PORT (a Ray cluster's head) or ray://HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise FleetError(f"cannot reach a Ray cluster at {address}: {e.strerror or e} (is `ray start --head` running "
                         "there, and is the port open?)") from None


def _ray(address: str | None, workers: int | None):
    if address and address != "auto":
        check_address(address)  # before importing Ray (a second): a wrong address is said at once
    import ray

    if not ray.is_initialized():
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise FleetError(f"cannot join the Ray cluster at {address}: {one_line(e, 200)}") from None
        else:
            ray.init(num_cpus=workers, **kw)
    return ray


def run_job(kind: str, store: SiteStore, sites: Sequence[str], opts: JobOptions = JobOptions(),
            task: Callable[[str, str, JobOptions], str] | None = None, ray_address: str | None = None,
            workers: int | None = None, restart: bool = False,
            on_result: Callable[[SiteResult, int, int], None] | None = None) -> list[SiteResult]:
    """Run ``task`` (default ``TASKS[kind]``) for every site in ``sites``; results in completion order.

    ``workers=0``: one site at a time in this process, without Ray. Sites the job's progress file marks done are
    skipped (``restart`` ignores the file).
    """
    task = task or TASKS[kind]
    root = str(Path(store.root).resolve())
    jid = job_id(kind, sites, opts)
    state = JobState.load(Path(root) / JOB_DIR / f"{jid}.json", jid, kind, restart)
    results = [SiteResult(n, "skipped", "done earlier in this job") for n in sites if state.done(n)]
    todo = [n for n in sites if not state.done(n)]
    total = len(todo)

    def finish(r: SiteResult) -> None:
        state.record(r)
        results.append(r)
        if on_result:
            on_result(r, len(results) - (len(sites) - total), total)

    if workers == 0 or not todo:
        for n in todo:
            finish(run_site(task, root, n, opts))
        return results
    ray = _ray(ray_address, workers)
    remote = ray.remote(num_cpus=1, max_retries=0)(run_site)
    pending = {remote.remote(task, root, n, opts): n for n in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            name = pending.pop(ref)
            try:
                r = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a crashed worker or a lost node is this site's failure
                r = SiteResult(name, "failed", f"the Ray task failed: {one_line(e, 200)}")
            finish(r)
    return results
