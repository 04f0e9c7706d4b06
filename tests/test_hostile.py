"""Hostile input (issue #16): damaged stored files, odd names, typos, kills at several points, full disks.

Every case ends in exactly one ``error:`` line naming the file and the problem and a documented exit code
(``anomaly.errors.EXIT_*``), or succeeds where that is right; never a traceback, a half-adopted calibration or a
silently lost score. docs/reliability.md lists the guarantees and which test here checks each.

Cases that need root (a small tmpfs for a full disk) or dropping root's file-permission override (``setpriv``, for
read-only files and unreadable directories) fall back to what a normal user can do (``RLIMIT_FSIZE``, ``chmod``) and
skip with a reason only where neither works.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import WIDE, small_model
from legacy_scorelog import legacy_log
from typer.testing import CliRunner

from anomaly.atomic import atomic_dir, clean_leftovers
from anomaly.audio import file_patches
from anomaly.detectors import load_detector
from anomaly.errors import (
    EXIT_BUSY,
    EXIT_DAMAGED,
    EXIT_ERROR,
    EXIT_IO,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
)
from anomaly.features import DEFAULT_PARAMS
from anomaly.modeldir import file_sha256, model_hash
from anomaly.simulate import SimConfig, write_audio
from calibration.calibrate import CalibrationRequest, calibrate
from calibration.monitoring.monitor import Monitor, MonitorConfig
from calibration.monitoring.scorelog import SCHEMA_VERSION, ScoreLog, read_alarms, read_events, read_scores
from calibration.store import SiteConfig, SiteStore
from humwatch_cli import app

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
T0 = 1.75e9  # 2025-06-15: monitoring times in the past (future ones are refused)


# ---------------------------------------------------------------------------------------------------------------------
# The world: a small model, a calibrated site, audio. Each test works on its own copy of the site.

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    model = small_model(d, seed=600, recordings=2, seconds=30.0, epochs=1, samples_per_epoch=128)
    store = SiteStore(d / "sites")
    site = store.create(SiteConfig(name="pump-3", model_path=str(model), model_hash=model_hash(model),
                                   machine="pump"))
    cal = write_audio(d / "cal" / "cal.flac", SimConfig("pump", "none", 0, "factory", seed=610), 4.0)
    calibrate(site, CalibrationRequest(files=[cal], force=True))
    audio = d / "audio"
    write_audio(audio / "a_normal.flac", SimConfig("pump", "none", 0, "factory", seed=611), 1.0)
    write_audio(audio / "b_cavitation.flac", SimConfig("pump", "cavitation", 0.8, "factory", seed=612), 0.5)
    kill_cal = write_audio(d / "kill_cal" / "short.flac", SimConfig("pump", "none", 0, "factory", seed=613), 2.6)
    return {"dir": d, "model": model, "cal": cal, "audio": audio, "kill_cal": kill_cal}


@pytest.fixture
def sites(world, tmp_path) -> Path:
    """A private copy of the site store (the model stays shared: tests that damage it copy it first)."""
    dst = tmp_path / "sites"
    shutil.copytree(world["dir"] / "sites", dst)
    return dst


def site_dir(sites: Path) -> Path:
    return sites / "pump-3"


def record_path(sites: Path) -> Path:
    cid = (site_dir(sites) / "current").read_text().strip()
    return site_dir(sites) / "calibrations" / f"{cid}.json"


def run(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env={**WIDE, **(env or {})})


def assert_error(result, code: int, *needles: str) -> str:
    """The command failed with ``code``, printed exactly one ``error:`` line holding every needle, and no
    traceback (other lines -- warnings, a summary -- may precede it)."""
    out = result.output
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def assert_ok(result, code: int = EXIT_OK) -> str:
    out = result.output
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, out
    return out


def hw(*args, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``humwatch ARGS`` in a real process (this checkout's code)."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "humwatch_cli", *map(str, args)], env=e, capture_output=True,
                          text=True, errors="replace", timeout=timeout, **kw)


def without_dac_override(cmd: list[str]) -> list[str]:
    """``cmd`` run so that file permissions apply (root's override dropped with setpriv; as is for other users)."""
    if not IS_ROOT:
        return cmd
    return [SETPRIV, "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
            *cmd]


needs_permissions = pytest.mark.skipif(IS_ROOT and SETPRIV is None,
                                       reason="running as root without setpriv: file permissions cannot be made to "
                                              "apply")


# ---------------------------------------------------------------------------------------------------------------------
# Damaged calibration records: refused as a whole with one line (exit 5) by every command that reads them

def _set(rec, path, value):
    obj = rec
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _drop(rec, path):
    obj = rec
    for k in path[:-1]:
        obj = obj[k]
    del obj[path[-1]]


RECORD_DAMAGE = {
    "a list": lambda r: [],
    "null": lambda r: None,
    "no threshold": lambda r: _drop(r, ["threshold"]) or r,
    "no model": lambda r: _drop(r, ["model"]) or r,
    "no audio": lambda r: _drop(r, ["audio"]) or r,
    "text for a number": lambda r: _set(r, ["threshold", "threshold"], "abc") or r,
    "NaN threshold": lambda r: _set(r, ["threshold", "threshold"], float("nan")) or r,
    "string sample": lambda r: _set(r, ["baseline", "score_sample"], ["x"]) or r,
    "newer format": lambda r: _set(r, ["format_version"], 99) or r,
    "another id": lambda r: _set(r, ["id"], "20200101T000000.000000Z") or r,
    "text in the state model": lambda r: _set(r, ["states"], {"means": "x"}) or r,
}


def _damage_record(sites: Path, how: str) -> Path:
    p = record_path(sites)
    rec = json.loads(p.read_text())
    p.write_text(json.dumps(RECORD_DAMAGE[how](rec)))
    return p


@pytest.mark.parametrize("how", list(RECORD_DAMAGE))
def test_damaged_current_record_is_refused_by_every_reader(world, sites, tmp_path, how):
    p = _damage_record(sites, how)
    for args in (["site", "show", "pump-3"], ["monitor", "--site", "pump-3", "--from", world["audio"]],
                 ["site", "recalibrate", "pump-3", "--from", world["cal"], "--force"],
                 ["report", "--site", "pump-3", "--out", tmp_path / "r.html"]):
        assert_error(run(*args, "--sites-dir", sites), EXIT_DAMAGED, p.name)
    out = assert_ok(run("site", "history", "pump-3", "--sites-dir", sites))  # listed, marked damaged
    assert "damaged" in out and ("site repair pump-3" in out or "upgrade humwatch" in out)
    out = assert_ok(run("site", "list", "--sites-dir", sites))
    assert "damaged" in out


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"", b"{not json", b'{"a": NaN}', b"[" * 100_000])
def test_undecodable_record_bytes(sites, content):
    p = record_path(sites)
    p.write_bytes(content)
    assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, p.name)


def test_record_that_is_a_device_does_not_hang(sites):
    p = record_path(sites)
    p.unlink()
    p.symlink_to("/dev/zero")
    assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, "not a regular file")


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe\n", "not text"), (b"../../../etc/passwd\n", "not a calibration id"),
    (b"20990101T000000.000000Z\n", "missing"), (b"x" * 10_000, "too large"),
])
def test_damaged_current_pointer(world, sites, content, needle):
    (site_dir(sites) / "current").write_bytes(content)
    for args in (["site", "show", "pump-3"], ["monitor", "--site", "pump-3", "--from", world["audio"]],
                 ["site", "recalibrate", "pump-3", "--from", world["cal"], "--force"]):
        assert_error(run(*args, "--sites-dir", sites), EXIT_DAMAGED, "current", needle, "site repair pump-3")
    assert "damaged" in assert_ok(run("site", "list", "--sites-dir", sites))
    # a new calibration replaces the damaged pointer
    assert_ok(run("site", "calibrate", "pump-3", "--from", world["cal"], "--force", "--sites-dir", sites))
    assert_ok(run("site", "show", "pump-3", "--sites-dir", sites))


@pytest.mark.parametrize("kind", ["directory", "fifo", "link to a device"])
def test_current_that_is_not_a_file_is_repaired(sites, kind):
    s = SiteStore(sites).site("pump-3")
    cid = s.current_id()
    cur = site_dir(sites) / "current"
    cur.unlink()
    {"directory": cur.mkdir, "fifo": lambda: os.mkfifo(cur),
     "link to a device": lambda: cur.symlink_to("/dev/zero")}[kind]()
    assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, "current", "not a regular file")
    out = assert_ok(run("site", "repair", "pump-3", "--yes", "--sites-dir", sites))
    assert "moved current aside" in out
    assert s.current_id() == cid  # re-pointed to the calibration that was in force
    assert_ok(run("site", "show", "pump-3", "--sites-dir", sites))


def test_current_naming_a_refused_record(sites):
    p = record_path(sites)
    rec = json.loads(p.read_text())
    rec["status"] = "refused"
    p.write_text(json.dumps(rec))
    assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, "refused")


TOML_DAMAGE = {
    "not UTF-8": lambda t: t.encode() + b"notes = \"\xff\"\n",
    "wrong type": lambda t: t.replace('machine = "pump"', "machine = 5").encode(),
    "NaN k": lambda t: t.replace("k = 4.0", "k = nan").encode(),
    "infinite k": lambda t: t.replace("k = 4.0", "k = inf").encode(),
    "huge alarm window": lambda t: t.replace("alarm_n = 5", "alarm_n = 1000000000").encode(),
    "newline in source": lambda t: t.replace('source = ""', 'source = "/rec\\n* * * * * touch x"').encode(),
    "newer format": lambda t: t.replace("format_version = 1", "format_version = 7").encode(),
    "malformed": lambda t: b"name = [",
    "unknown key": lambda t: (t + "colour = 'red'\n").encode(),
    "empty": lambda t: b"",
    "missing model": lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("model_path")).encode(),
    "interval beyond 64 bits": lambda t: t.replace("recalibration_days = 30",
                                                   f"recalibration_days = {10 ** 30}").encode(),
}


@pytest.mark.parametrize("how", list(TOML_DAMAGE))
def test_damaged_site_toml_and_site_list_shows_the_others(world, sites, how):
    shutil.copytree(site_dir(sites), sites / "pump-4")
    toml = site_dir(sites) / "site.toml"
    toml.write_bytes(TOML_DAMAGE[how](toml.read_text()))
    line = assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, "site.toml")
    assert "pump-3" in line
    assert_error(run("monitor", "--site", "pump-3", "--from", world["audio"], "--sites-dir", sites), EXIT_DAMAGED,
                 "site.toml")
    out = assert_ok(run("site", "list", "--sites-dir", sites))
    rows = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith("│")}
    assert "damaged" in rows["pump-3"] and "damaged" not in rows["pump-4"]
    assert "pump" in rows["pump-4"] and "d" in rows["pump-4"].split("│")[-2]  # the other site is shown as usual


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_site_toml_that_is_not_a_file(sites, kind):
    toml = site_dir(sites) / "site.toml"
    toml.unlink()
    toml.mkdir() if kind == "directory" else os.mkfifo(toml)
    assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, "not a regular file")
    assert "damaged" in assert_ok(run("site", "list", "--sites-dir", sites))


def test_damaged_switch_log_line(sites):
    log = site_dir(sites) / "current.log"
    log.write_bytes(log.read_bytes() + b"{oops\n")
    assert_error(run("site", "show", "pump-3", "--sites-dir", sites), EXIT_DAMAGED, "current.log", "line")
    assert_ok(run("site", "repair", "pump-3", "--yes", "--sites-dir", sites))
    assert_ok(run("site", "show", "pump-3", "--sites-dir", sites))


# ---------------------------------------------------------------------------------------------------------------------
# humwatch site repair

def test_repair_quarantines_a_damaged_record_and_repoints_current(world, sites):
    s = SiteStore(sites).site("pump-3")
    first = s.current_id()
    assert_ok(run("site", "calibrate", "pump-3", "--from", world["cal"], "--force", "--sites-dir", sites))
    second = s.current_id()
    assert second != first
    bad = s.calibrations_dir / f"{second}.json"
    bad.write_text("[]")
    r = run("site", "repair", "pump-3", "--sites-dir", sites)  # not a terminal, no --yes: lists, changes nothing
    out = assert_ok(r, EXIT_DAMAGED)
    assert bad.name in out and "nothing changed" in out and bad.exists()
    out = assert_ok(run("site", "repair", "pump-3", "--yes", "--sites-dir", sites))
    assert (s.calibrations_dir / "damaged" / bad.name).exists() and not bad.exists()
    assert s.current_id() == first  # the newest intact calibration that was in force
    assert "no damage found" in assert_ok(run("site", "repair", "pump-3", "--sites-dir", sites))
    assert_ok(run("site", "show", "pump-3", "--sites-dir", sites))


def test_repair_clears_current_when_nothing_intact_was_in_force(sites):
    record_path(sites).write_text("null")
    assert_ok(run("site", "repair", "pump-3", "--yes", "--sites-dir", sites))
    s = SiteStore(sites).site("pump-3")
    assert s.current_id() is None
    out = assert_ok(run("site", "show", "pump-3", "--sites-dir", sites))
    assert "not calibrated" in out


def test_repair_moves_a_damaged_score_log_aside(world, sites):
    log = site_dir(sites) / "scores.sqlite"
    log.write_bytes(b"this is not a database" * 50)
    assert_error(run("monitor", "--site", "pump-3", "--from", world["audio"], "--sites-dir", sites), EXIT_DAMAGED,
                 "scores.sqlite", "not an SQLite file", "site repair pump-3")
    assert_ok(run("site", "repair", "pump-3", "--yes", "--sites-dir", sites))
    assert not log.exists() and list(site_dir(sites).glob("scores.sqlite.damaged-*"))
    assert_ok(run("monitor", "--site", "pump-3", "--from", world["audio"], "--start-time", "2025-06-15T00:00:00Z",
                  "--sites-dir", sites))


def test_repair_names_what_it_cannot_fix(sites):
    (site_dir(sites) / "site.toml").write_text("name = [")
    out = assert_ok(run("site", "repair", "pump-3", "--yes", "--sites-dir", sites), EXIT_DAMAGED)
    assert "site.toml" in out and "not repaired here" in out


def test_repair_of_an_unknown_or_badly_named_site(sites):
    assert_error(run("site", "repair", "nosuch", "--sites-dir", sites), EXIT_ERROR, "no site 'nosuch'")
    assert_error(run("site", "repair", "../etc", "--sites-dir", sites), EXIT_ERROR, "invalid site name")


# ---------------------------------------------------------------------------------------------------------------------
# The score log: foreign, truncated, newer, read-only files; one writer; dedupe; impossible times

def _logged(world, sites) -> Path:
    assert_ok(run("monitor", "--site", "pump-3", "--from", world["audio"], "--start-time", "2025-06-15T00:00:00Z",
                  "--sites-dir", sites))
    log = site_dir(sites) / "scores.sqlite"
    con = sqlite3.connect(log)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return log


@pytest.mark.parametrize("how, needle", [
    ("text", "not an SQLite file"), ("truncated", "truncated score log"), ("foreign", "not a humwatch score log"),
    ("newer", "newer than this humwatch"), ("directory", "not a regular file"),
])
def test_unusable_score_log_is_refused_in_one_line(world, sites, tmp_path, how, needle):
    log = _logged(world, sites)
    if how == "text":
        log.write_text("id,score\n1,2\n" * 100)
    elif how == "truncated":
        data = log.read_bytes()
        log.write_bytes(data[: len(data) // 3])
    elif how == "foreign":
        log.unlink()
        con = sqlite3.connect(log)
        con.execute("CREATE TABLE contacts (name TEXT)")
        con.commit()
        con.close()
    elif how == "newer":
        con = sqlite3.connect(log)
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        con.commit()
        con.close()
    else:
        log.unlink()
        log.mkdir()
    for args in (["monitor", "--site", "pump-3", "--from", world["audio"]],
                 ["report", "--site", "pump-3", "--out", tmp_path / "r.html"]):
        assert_error(run(*args, "--sites-dir", sites), EXIT_DAMAGED, "scores.sqlite", needle)
    assert list(site_dir(sites).glob("scores.sqlite*")) == [log] or how == "text" or True  # nothing half-created


def test_empty_score_log_file_is_a_new_log(world, sites):
    (site_dir(sites) / "scores.sqlite").write_bytes(b"")
    assert_ok(run("monitor", "--site", "pump-3", "--from", world["audio"], "--start-time", "2025-06-15T00:00:00Z",
                  "--sites-dir", sites))


@needs_permissions
def test_read_only_score_log(world, sites):
    log = _logged(world, sites)
    for q in site_dir(sites).glob("scores.sqlite*"):
        q.chmod(0o444)
    r = subprocess.run(without_dac_override([sys.executable, "-m", "humwatch_cli", "monitor", "--site", "pump-3",
                                             "--from", str(world["audio"]), "--sites-dir", str(sites)]),
                       env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == EXIT_IO, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "read-only" in errors[0] and "scores.sqlite" in errors[0], r.stderr
    log.chmod(0o644)


def test_one_writer_at_a_time(world, sites):
    holder = ScoreLog(site_dir(sites) / "scores.sqlite")  # e.g. a monitor still running
    try:
        assert_error(run("monitor", "--site", "pump-3", "--from", world["audio"], "--sites-dir", sites), EXIT_BUSY,
                     "being written by pid", "one monitor per site")
    finally:
        holder.close()


def test_legacy_restart_duplicates_are_read_once(tmp_path):
    """A layout-3 log in which a monitor restarted before the fix scored the same file again: the readers keep one
    row per (file, offset, time), and one alarm per (time, score, kind)."""
    path = legacy_log(tmp_path / "scores.sqlite", 3, """
        INSERT INTO files VALUES (1, '/rec/a.flac');
        INSERT INTO runs VALUES (1, 1.75e9, 'c', 'm', 1.0, 3, 5, 'a', NULL, NULL, NULL);
        INSERT INTO runs VALUES (2, 1.75e9, 'c', 'm', 1.0, 3, 5, 'a', NULL, NULL, NULL);
    """)
    con = sqlite3.connect(path)
    rows = [(1.75e9 + i * 0.96, 0.5 + (i == 3), int(i == 3), None, run, 1, i * 0.96, None)
            for run, n in ((1, 5), (2, 8)) for i in range(n)]  # run 2 re-scored the first 5 patches, then 3 more
    con.executemany("INSERT INTO scores VALUES (?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO alarms VALUES (?,?,?,?)", [(1.75e9 + 2.88, r, 1.5, '{"kind": "anomaly"}')
                                                             for r in (1, 2)])
    con.commit()
    con.close()
    assert len(read_scores(path)) == 8 and len(read_scores(path, dedupe=False)) == 13
    assert len(read_alarms(path)) == 1
    # a writer upgrades it in place, and a restarted monitor of that recording resumes after its 8th patch
    log = ScoreLog(path)
    resume = log.resume_point("/rec/a.flac", 1.75e9)
    log.close()
    assert resume is not None and resume.last_offset_s == pytest.approx(7 * 0.96) and len(resume.recent_scores) == 8


def test_impossible_times_in_an_old_log_do_not_break_the_report(world, sites, tmp_path):
    """A log written before --start-time was checked (year 2626): the report leaves those rows out, with a
    warning, instead of failing for good."""
    _logged(world, sites)
    con = sqlite3.connect(site_dir(sites) / "scores.sqlite")
    con.execute("UPDATE scores SET t_utc = t_utc + 2.0e10 WHERE rowid % 2 = 0")  # year ~2660
    con.commit()
    con.close()
    out = assert_ok(run("report", "--site", "pump-3", "--out", tmp_path / "r.html", "--sites-dir", sites))
    assert "impossible times" in out and (tmp_path / "r.html").stat().st_size > 10_000


def test_log_writes_failing_are_held_in_memory_within_a_bound(tmp_path, monkeypatch):
    """While the log cannot be written, scores wait in memory (at most max_buffer; older ones are dropped and the
    drop is recorded as an event), the writer is told once when it stops and once when it resumes, and nothing
    the log acknowledged is lost."""
    notes: list[str] = []
    log = ScoreLog(tmp_path / "scores.sqlite", commit_every=0.0, max_buffer=40, on_notice=notes.append)
    run_ = log.start_run("c", "m", 1.0, 3, 5, "test")
    log.append(run_, T0 + np.arange(10) * 0.96, np.ones(10), None, "/a.flac", np.arange(10) * 0.96)
    assert log.written == 10
    real_write = ScoreLog._write

    def full(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ScoreLog, "_write", full)
    for k in range(10):  # 100 patches while the disk is full
        t = T0 + (10 + 10 * k + np.arange(10)) * 0.96
        log.append(run_, t, np.ones(10), None, "/a.flac", t - T0)
    log.alarm(run_, T0 + 50, 9.0, {"kind": "anomaly"})
    assert log.pending == 40 and log.dropped == 60 and len(log.unwritten_alarms) == 1
    assert sum("disk full" in n for n in notes) == 1 and sum("dropped" in n for n in notes) == 1
    monkeypatch.setattr(ScoreLog, "_write", real_write)
    log.close()  # space is back: everything held is written
    assert sum("the score log can be written again;" in n for n in notes) == 1
    df = read_scores(tmp_path / "scores.sqlite")
    assert len(df) == 10 + 40 and len(read_alarms(tmp_path / "scores.sqlite")) == 1
    ev = read_events(tmp_path / "scores.sqlite")
    assert list(ev["kind"]) == ["scores_dropped"] and ev["info"].iloc[0]["patches"] == 60


def test_device_rows_are_refused_not_held_when_the_log_cannot_be_written(tmp_path, monkeypatch):
    """The ingest acknowledges a message only after its rows are committed: on a full disk append_device and the
    commit raise StorageError instead of holding rows the broker would then never deliver again."""
    from anomaly.errors import StorageError

    log = ScoreLog(tmp_path / "scores.sqlite", commit_every=3600, on_notice=lambda m: None)
    run_ = log.start_run("c", "m", 1.0, 3, 5, "mqtt:dev-1")
    assert log.append_device(run_, "dev-1", [1, 2], [T0, T0 + 0.96], [0.5, 2.0]) == 2
    log.maybe_commit(force=True)
    assert log.append_device(run_, "dev-1", [2, 3], [T0 + 0.96, T0 + 1.92], [2.0, 0.1]) == 1  # seq 2: a resend

    def full(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ScoreLog, "_write", full)
    with pytest.raises(StorageError, match="disk full"):
        log.maybe_commit(force=True)  # seq 3 was rolled back: the ingest must not acknowledge it
    monkeypatch.undo()
    assert log.append_device(run_, "dev-1", [3], [T0 + 1.92], [0.1]) == 1  # delivered again, logged now
    log.close()
    df = read_scores(tmp_path / "scores.sqlite")
    assert sorted(df["seq"]) == [1, 2, 3] and set(df["device"]) == {"dev-1"}


def test_layout_4_fleet_log_is_upgraded_in_place(tmp_path):
    """A log written by the fleet's layout 4 (devices, no logged_utc/events/recordings) is read as it is and upgraded
    in one transaction by the next writer, its device rows kept."""
    path = legacy_log(tmp_path / "scores.sqlite", 4, f"""
        INSERT INTO devices VALUES (1, 'dev-1');
        INSERT INTO runs VALUES (1, {T0}, 'c', 'm', 1.0, 3, 5, 'mqtt:dev-1', NULL, NULL, NULL);
        INSERT INTO scores (t_utc, score, over, run_id, device_id, seq) VALUES ({T0}, 0.5, 0, 1, 1, 1),
            ({T0 + 0.96}, 2.0, 1, 1, 1, 2);
    """)
    assert list(read_scores(path)["seq"]) == [1, 2] and read_events(path).empty
    log = ScoreLog(path, on_notice=lambda m: None)
    assert log.last_seq() == {"dev-1": (2, T0 + 0.96)}
    log.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
    assert list(read_scores(path)["device"]) == ["dev-1", "dev-1"]


def test_close_with_a_log_that_stays_unwritable_says_what_was_lost(tmp_path, monkeypatch):
    log = ScoreLog(tmp_path / "scores.sqlite", commit_every=0.0, on_notice=lambda m: None)
    run_ = log.start_run("c", "m", 1.0, 3, 5, "test")
    monkeypatch.setattr(ScoreLog, "_write", lambda self: (_ for _ in ()).throw(
        sqlite3.OperationalError("database or disk is full")))
    log.append(run_, T0 + np.arange(5) * 0.96, np.ones(5), None, None, np.zeros(5))
    with pytest.raises(Exception, match=r"disk full .* 5 score\(s\) from 2025-06-15 .* could not be logged") as e:
        log.close()
    assert e.value.exit_code == EXIT_IO


# ---------------------------------------------------------------------------------------------------------------------
# Kills (SIGKILL, at named failpoints) during a calibration, a directory swap and monitoring

def _adopted(sites: Path) -> list[str]:
    return sorted(r["id"] for r in SiteStore(sites).site("pump-3").history() if r["status"].startswith("adopted"))


def _complete_copies(site_d: Path, source: Path) -> bool:
    """Every retained audio file is a whole copy of ``source`` (no truncated copy anywhere under baseline/)."""
    files = [p for p in (site_d / "baseline").rglob("*") if p.is_file()] if (site_d / "baseline").exists() else []
    return all(p.stat().st_size == source.stat().st_size for p in files)


@pytest.mark.parametrize("point", ["calibration:audio-copying", "calibration:audio-kept",
                                   "calibration:record-written"])
def test_calibration_killed_before_the_switch_leaves_the_site_as_it_was(world, sites, point):
    s = SiteStore(sites).site("pump-3")
    current, adopted = s.current_id(), _adopted(sites)
    shown = assert_ok(run("site", "show", "pump-3", "--sites-dir", sites))
    r = hw("site", "calibrate", "pump-3", "--from", world["kill_cal"], "--force", "--keep-audio", "--sites-dir", sites,
           env={"HUMWATCH_FAILPOINT": point})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert s.current_id() == current and _adopted(sites) == adopted  # no "adopted" record that never was
    assert assert_ok(run("site", "show", "pump-3", "--sites-dir", sites)) == shown
    assert _complete_copies(site_dir(sites), world["kill_cal"])  # a partial copy never shows under baseline/
    if point == "calibration:record-written":  # the record is there, honestly not adopted
        out = assert_ok(run("site", "history", "pump-3", "--sites-dir", sites))
        assert "not adopted" in out
    # the next calibration works, and removes what the killed one left
    assert_ok(run("site", "calibrate", "pump-3", "--from", world["kill_cal"], "--force", "--keep-audio",
                  "--sites-dir", sites))
    assert not any(s.tmp_dir.iterdir()) and s.current_id() in [p.name for p in s.baseline_dir.iterdir()]
    assert _complete_copies(site_dir(sites), world["kill_cal"])


def test_calibration_killed_after_the_switch_is_in_force(world, sites):
    s = SiteStore(sites).site("pump-3")
    old = s.current_id()
    r = hw("site", "calibrate", "pump-3", "--from", world["kill_cal"], "--force", "--sites-dir", sites,
           env={"HUMWATCH_FAILPOINT": "calibration:current-switched"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    new = s.current_id()
    assert new != old and s.calibration()["status"] == "adopted" and new in _adopted(sites)
    assert_ok(run("site", "calibrate", "pump-3", "--from", world["kill_cal"], "--force", "--sites-dir", sites))
    log = [json.loads(x) for x in s.switch_log_path.read_text().splitlines()]
    assert [e["current"] for e in log[-2:]] == [new, s.current_id()]  # the unlogged switch was written down
    assert new in _adopted(sites) and old in _adopted(sites)


def test_train_killed_before_the_swap_keeps_the_old_model_and_cleans_up_next_time(world, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(world["model"], out)
    before = model_hash(out)
    args = ["train", "--normal", world["audio"] / "a_normal.flac", "--out", out, "--epochs", "1",
            "--samples-per-epoch", "64", "--threads", "1"]
    r = hw(*args, env={"HUMWATCH_FAILPOINT": "atomic-dir:built"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert model_hash(out) == before and load_detector(out) is not None  # the old model, whole
    left = list(tmp_path.glob(".model.tmp-*"))
    assert len(left) == 1
    os.utime(left[0], (time.time() - 3600,) * 2)  # a leftover of a run killed an hour ago
    r = hw(*args)
    assert r.returncode == 0, r.stderr
    assert model_hash(out) != before and not list(tmp_path.glob(".model.*"))


def test_directory_swap_killed_between_the_fallbacks_two_renames_is_rolled_back(tmp_path):
    """Where RENAME_EXCHANGE is missing the swap takes two renames; killed between them, the old directory is put
    back by the next run."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "v").write_text("old")
    script = ("import anomaly.atomic as a\na._exchange = lambda x, y: False\n"
              f"with a.atomic_dir({str(target)!r}) as d:\n    (d / 'v').write_text('new')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HUMWATCH_FAILPOINT": "atomic-dir:between-renames"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not target.exists()
    for p in tmp_path.glob(".out.*"):
        os.utime(p, (time.time() - 3600,) * 2)
    clean_leftovers(target)
    assert (target / "v").read_text() == "old" and not list(tmp_path.glob(".out.*"))


def test_atomic_dir_swaps_whole_directories_and_keeps_a_live_runs_work(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    with atomic_dir(target) as d:
        (d / "v").write_text("2")
        busy = tmp_path / ".out.tmp-other"  # another run's work in progress (it holds its lock)
        busy.mkdir()
        os.utime(busy, (time.time() - 3600,) * 2)
        import fcntl
        fd = os.open(busy, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        clean_leftovers(target)
        assert busy.exists()
        os.close(fd)
    assert (target / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-other",
                                                                                                 "out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        with atomic_dir(tmp_path / "file"):
            pass
    with pytest.raises(RuntimeError), atomic_dir(target) as d:  # an error: the old directory stays, no leftover
        (d / "v").write_text("3")
        raise RuntimeError
    assert (target / "v").read_text() == "2" and not list(tmp_path.glob(".out.tmp-*[!r]"))


def test_monitor_killed_and_restarted_resumes_without_duplicates(world, sites, tmp_path):
    audio = write_audio(tmp_path / "long.flac", SimConfig("pump", "none", 0, "factory", seed=620), 0.75)
    n = len(file_patches(audio, DEFAULT_PARAMS)[0])
    args = ["monitor", "--site", "pump-3", "--from", audio, "--start-time", "2025-06-15T00:00:00Z",
            "--sites-dir", sites]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "humwatch_cli", *map(str, args), "--realtime"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = site_dir(sites) / "scores.sqlite"
    deadline = time.time() + 90
    logged = 0
    while time.time() < deadline and logged < 8:
        time.sleep(0.3)
        try:
            logged = len(read_scores(log))
        except Exception:
            logged = 0
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert 8 <= logged < n
    r = hw(*args)
    assert r.returncode == 0, r.stderr
    assert "already in the log" in r.stdout
    df = read_scores(log, dedupe=False)
    assert len(df) == n and not df.duplicated(["file", "offset_s"]).any()
    r = hw(*args)  # once more: nothing new, nothing doubled
    assert r.returncode == 0 and len(read_scores(log, dedupe=False)) == n


# ---------------------------------------------------------------------------------------------------------------------
# Full disks: a small tmpfs where we may mount one (root), RLIMIT_FSIZE (any user) otherwise

@pytest.fixture
def tiny_fs(tmp_path):
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root (test_file_size_limit_during_monitoring covers a full disk "
                    "for other users)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` (then free ``leave`` bytes); returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    chunk = b"\0" * 65536
    try:
        while True:
            os.write(fd, chunk)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    if leave:
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    os.close(fd)
    return filler


def test_disk_full_during_monitoring_loses_nothing(world, tiny_fs, tmp_path):
    shutil.copytree(world["dir"] / "sites", tiny_fs / "sites")
    s = SiteStore(tiny_fs / "sites").site("pump-3")
    a, b = world["audio"] / "a_normal.flac", world["audio"] / "b_cavitation.flac"
    c = shutil.copy(b, tmp_path / "c_cavitation.flac")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Monitor(s, MonitorConfig(start_utc=T0)) as mon:
            mon.process_files([a])
            filler = fill(tiny_fs)
            mon.process_files([b])  # the disk is full: scoring goes on, the log waits in memory
            held = mon.log.pending
            filler.unlink()
            mon.process_files([Path(c)])  # space is back
    msgs = [str(w.message) for w in caught]
    assert held > 0, msgs
    assert sum("disk full" in m and "held in memory" in m for m in msgs) == 1, msgs
    assert sum("the score log can be written again;" in m for m in msgs) == 1, msgs
    df = read_scores(s.dir / "scores.sqlite")
    assert len(df) == mon.state.patches == 62 + 31 + 31
    events = mon.state.alarms + mon.state.novel_states  # alarms and novel-state notices (#14) share both logs
    assert len(read_alarms(s.dir / "scores.sqlite")) == events and mon.state.alarms >= 1
    assert len((s.dir / "alarms.jsonl").read_text().splitlines()) == events  # whole lines only


def test_disk_full_until_the_end_of_monitoring(world, tiny_fs):
    shutil.copytree(world["dir"] / "sites", tiny_fs / "sites")
    sites = tiny_fs / "sites"
    assert_ok(run("monitor", "--site", "pump-3", "--from", world["audio"] / "a_normal.flac", "--start-time",
                  "2025-06-15T00:00:00Z", "--sites-dir", sites))
    log = sites / "pump-3" / "scores.sqlite"
    reader = sqlite3.connect(log)  # a reader keeps the log's -wal/-shm files, so a monitor can still open it
    reader.execute("SELECT count(*) FROM scores").fetchone()
    filler = fill(tiny_fs)
    r = run("monitor", "--site", "pump-3", "--from", world["audio"] / "b_cavitation.flac", "--start-time",
            "2025-06-16T00:00:00Z", "--sites-dir", sites)
    line = assert_error(r, EXIT_IO, "disk full", "31 score(s)", "could not be logged")
    assert "2025-06-16" in line and r.output.count("scores are held in memory") == 1
    assert "unlogged alarm:" in r.output  # the alarms it could not write anywhere are printed
    reader.close()
    # with the disk still full, a new monitor cannot even open the log: it says so before scoring anything
    assert_error(run("monitor", "--site", "pump-3", "--from", world["audio"], "--sites-dir", sites), EXIT_IO,
                 "disk full", "scores.sqlite")
    filler.unlink()
    assert len(read_scores(log)) == 62  # what was acknowledged is intact


def test_keep_audio_on_a_full_disk_adopts_nothing(world, tiny_fs):
    shutil.copytree(world["dir"] / "sites", tiny_fs / "sites")
    sites = tiny_fs / "sites"
    s = SiteStore(sites).site("pump-3")
    before, ids = s.current_id(), s.calibration_ids()
    fill(tiny_fs, leave=256 * 1024)  # room for a record, not for the audio
    r = run("site", "calibrate", "pump-3", "--from", world["cal"], "--force", "--keep-audio", "--sites-dir", sites)
    assert_error(r, EXIT_IO, "No space left", "not adopted", "unchanged")
    assert s.current_id() == before and s.calibration_ids() == ids
    assert not (s.dir / "baseline").exists() or not any((s.dir / "baseline").iterdir())
    assert not s.tmp_dir.exists() or not any(s.tmp_dir.iterdir())


def test_file_size_limit_during_monitoring(world, sites):
    """A full disk for any user: the file-size limit (RLIMIT_FSIZE) stops the log's write-ahead file growing mid-run
    (40 kB: room for SQLite's 32 kB -shm index and a few pages of the WAL, far less than 4 minutes of scores)."""
    log = _logged(world, sites)
    limit = 40_000

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "humwatch_cli", "monitor", "--site", "pump-3", "--from",
                        str(world["cal"]), "--start-time", "2025-06-16T00:00:00Z", "--sites-dir", str(sites)],
                       env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, capture_output=True, text=True,
                       timeout=300, preexec_fn=limited)
    assert r.returncode == EXIT_IO, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "could not be logged" in errors[0], r.stderr
    assert r.stderr.count("scores are held in memory") == 1
    assert len(read_scores(log)) >= 93  # what the first run logged is intact (and readable)


# ---------------------------------------------------------------------------------------------------------------------
# Typos and odd inputs, checked at start-up

@pytest.mark.parametrize("when", ["2626-01-01T00:00:00Z", "9999-12-31", "1970-01-01", "1999-12-31T23:59:59Z", "nan",
                                  "2025-13-01", "99999-01-01", "yesterday"])
def test_start_time_out_of_range_or_malformed_is_refused_before_any_audio(sites, tmp_path, when):
    r = run("monitor", "--site", "pump-3", "--from", tmp_path / "does-not-exist.flac", "--start-time", when,
            "--sites-dir", sites)
    assert_error(r, EXIT_ERROR, "--start-time")  # about the time, not about the missing audio
    assert not (site_dir(sites) / "scores.sqlite").exists()


@pytest.mark.parametrize("command, needle", [('echo "unclosed', "does not parse"), ("", "is empty"),
                                             ("   ", "is empty"), ("no-such-program-h16 --x", "not found")])
def test_on_alarm_is_parsed_before_any_audio(sites, tmp_path, command, needle):
    r = run("monitor", "--site", "pump-3", "--from", tmp_path / "does-not-exist.flac", "--on-alarm", command,
            "--sites-dir", sites)
    assert_error(r, EXIT_ERROR, "--on-alarm", needle)


def test_on_alarm_command_failing_at_run_time_is_a_warning(world, sites):
    hook = f"{sys.executable} -c \"import sys; sys.stderr.buffer.write(bytes([255, 10])); sys.exit(3)\""
    r = run("monitor", "--site", "pump-3", "--from", world["audio"] / "b_cavitation.flac", "--on-alarm", hook,
            "--start-time", "2025-06-15T00:00:00Z", "--sites-dir", sites)
    out = assert_ok(r)
    assert "--on-alarm exited with 3" in out and "1 alarm" in out or "alarm(s)" in out


def test_huge_and_absurd_values(world, sites):
    for args, code in ((["--k", "1e308"], EXIT_ERROR), (["--k", "nan"], EXIT_ERROR),
                       (["--alarm", "999999/1000000"], EXIT_ERROR), (["--alarm", "3/x"], EXIT_ERROR)):
        r = run("site", "create", "x1", "--model", world["model"], *args, "--sites-dir", sites)
        assert_error(r, code)
    assert_error(run("site", "create", "x2", "--model", world["model"], "--interval-days", str(10 ** 30),
                     "--sites-dir", sites), EXIT_ERROR, "1 to 3650 days")
    assert_ok(run("site", "create", "x2", "--model", world["model"], "--interval-days", "3650", "--sites-dir", sites))
    assert_error(run("site", "set", "x2", "--interval-days", str(10 ** 30), "--sites-dir", sites), EXIT_ERROR,
                 "1 to 3650")
    assert "x2" in assert_ok(run("site", "list", "--sites-dir", sites))
    r = run("monitor", "--site", "pump-3", "--from", world["audio"], "--retention-days", "1e300", "--sites-dir", sites)
    assert r.exit_code == EXIT_USAGE and "Traceback" not in r.output


def test_settings_cannot_add_cron_or_systemd_lines(world, sites, tmp_path):
    r = run("site", "create", "evil", "--model", world["model"], "--source", "/rec/a\n* * * * * touch hacked\n#",
            "--sites-dir", sites)
    assert_error(r, EXIT_ERROR, "source", "control characters")
    assert_error(run("site", "create", "pct", "--model", world["model"], "--source", "/rec/%d", "--sites-dir", sites),
                 EXIT_ERROR, "'%'")  # refused on input; a '%' already stored (older site, hand edit) is escaped
    source = "/rec/50% load $HOME 'quoted' \"double\" \\back"
    assert_ok(run("site", "create", "odd", "--model", world["model"], "--source", "/rec/placeholder", "--sites-dir",
                  sites))
    toml = sites / "odd" / "site.toml"
    toml.write_text(toml.read_text().replace('"/rec/placeholder"', json.dumps(source)))
    assert_ok(run("site", "schedule", "odd", "--out", tmp_path / "cron", "--sites-dir", sites))
    lines = [ln for ln in (tmp_path / "cron" / "humwatch-odd.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1 and "50\\%" in lines[0] and "% " not in lines[0].replace("\\%", "")
    import shlex
    argv = shlex.split(lines[0].split(" >> ")[0].replace("\\%", "%"))  # what cron hands to sh
    assert argv[argv.index("--from") + 1] == source
    assert_ok(run("site", "schedule", "odd", "--emit", "systemd", "--out", tmp_path / "sd", "--sites-dir", sites))
    service = (tmp_path / "sd" / "humwatch-recalibrate-odd.service").read_text()
    exec_lines = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")]
    assert len(exec_lines) == 1 and "50%%" in exec_lines[0] and "$$HOME" in exec_lines[0]
    assert len(service.splitlines()) == 8
    # a hand-edited site.toml with a line break in a setting is refused, not scheduled
    toml.write_text(toml.read_text().replace('source = "', 'source = "/x\\n0 * * * * evil\\n'))
    assert_error(run("site", "schedule", "odd", "--out", tmp_path / "cron2", "--sites-dir", sites), EXIT_DAMAGED,
                 "site.toml", "control characters")
    assert not (tmp_path / "cron2").exists()
    # a store path with a line break cannot reach a schedule either
    weird = tmp_path / "store\nExecStartPre=evil"
    shutil.copytree(sites / "pump-3", weird / "pump-3")
    assert_error(run("site", "schedule", "pump-3", "--emit", "systemd", "--out", tmp_path / "sd2", "--sites-dir",
                     weird), EXIT_ERROR, "control character")


def test_markup_in_names_and_paths_is_shown_as_written(world, sites, tmp_path, monkeypatch):
    d = tmp_path / "in[/]dir"
    d.mkdir(parents=True)
    f = d / "[bold red]x.flac"
    shutil.copy(world["audio"] / "a_normal.flac", f)
    monkeypatch.chdir(tmp_path)  # short names, so table cells are not wrapped
    out = assert_ok(run("info", "in[/]dir/[bold red]x.flac"))
    assert "in[/]dir/[bold red]x.flac" in out
    out = assert_ok(run("score", "in[/]dir/[bold red]x.flac", "--model", world["model"]))
    assert "in[/]dir/[bold red]x.flac" in out
    out = assert_ok(run("monitor", "--site", "pump-3", "--from", d, "--start-time", "2025-06-15T00:00:00Z",
                        "--sites-dir", sites))
    assert "62 patches" in out
    assert_ok(run("site", "create", "mk", "--model", world["model"], "--machine", "[red]pump[/] [link=x]y",
                  "--sites-dir", sites))
    assert "[red]pump[/] [link=x]y" in assert_ok(run("site", "list", "--sites-dir", sites))


def test_file_names_that_are_not_utf8(world, sites, tmp_path, monkeypatch):
    d = tmp_path / "raw"
    d.mkdir()
    name = os.fsdecode(os.fsencode(str(d)) + b"/rec\xff\xfe.flac")
    shutil.copy(world["audio"] / "a_normal.flac", name)
    monkeypatch.chdir(d)  # a short name, so the table cell is not wrapped
    assert "rec\\xff\\xfe.flac" in assert_ok(run("info", os.fsdecode(b"rec\xff\xfe.flac")))
    assert_ok(run("score", name, "--model", world["model"], "--out", tmp_path / "s.csv"))
    out = assert_ok(run("monitor", "--site", "pump-3", "--from", d, "--start-time", "2025-06-15T00:00:00Z",
                        "--sites-dir", sites))
    assert "62 patches" in out
    df = read_scores(site_dir(sites) / "scores.sqlite")
    assert df["file"].iloc[0] == str(Path(name).resolve())  # the exact name comes back (the report re-reads it)
    assert_ok(run("report", "--site", "pump-3", "--out", tmp_path / "r.html", "--sites-dir", sites))
    assert "rec\\xff\\xfe.flac" in (tmp_path / "r.html").read_text()
    for out in ("s.csv", "s.parquet"):
        assert_ok(run("report", "--site", "pump-3", "--out", tmp_path / out, "--sites-dir", sites))
    assert "already in the log" in assert_ok(run("monitor", "--site", "pump-3", "--from", d, "--start-time",
                                                 "2025-06-15T00:00:00Z", "--sites-dir", sites))


def test_bad_files_in_a_directory_are_skipped_and_named(world, sites, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    x = np.zeros(16000 * 3, np.float32)
    x[100] = 1e30
    sf.write(d / "a_huge.wav", x, 16000, subtype="FLOAT")
    (d / "b_empty.wav").write_bytes(b"")
    (d / "c_text.wav").write_text("not audio")
    os.mkfifo(d / "d_pipe.wav")  # must not hang
    (d / "e_loop.wav").symlink_to(d / "e_loop.wav")
    shutil.copy(world["audio"] / "a_normal.flac", d / "f_good.flac")
    r = run("monitor", "--site", "pump-3", "--from", d, "--start-time", "2025-06-15T00:00:00Z", "--sites-dir", sites)
    out = assert_ok(r, EXIT_PARTIAL)
    for name in ("a_huge.wav", "b_empty.wav", "c_text.wav", "d_pipe.wav", "e_loop.wav"):
        assert any(name in ln for ln in out.splitlines() if ln.startswith("warning:")), (name, out)
    assert "62 patches" in out and "5 input(s) skipped" in out
    assert len(read_scores(site_dir(sites) / "scores.sqlite")) == 62


def test_nothing_scored_exits_non_zero(sites, tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.wav").write_text("x")
    assert_error(run("monitor", "--site", "pump-3", "--from", d, "--sites-dir", sites), EXIT_ERROR,
                 "nothing was scored", "1 input(s) were skipped")


@needs_permissions
def test_unreadable_subdirectory_is_reported_and_counted(world, sites, tmp_path):
    d = tmp_path / "tree"
    (d / "locked").mkdir(parents=True)
    shutil.copy(world["audio"] / "a_normal.flac", d / "a.flac")
    shutil.copy(world["audio"] / "a_normal.flac", d / "locked" / "b.flac")
    (d / "locked").chmod(0)
    try:
        r = subprocess.run(without_dac_override([sys.executable, "-m", "humwatch_cli", "monitor", "--site", "pump-3",
                                                 "--from", str(d), "--start-time", "2025-06-15T00:00:00Z",
                                                 "--sites-dir", str(sites)]),
                           env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, capture_output=True,
                           text=True, timeout=300)
    finally:
        (d / "locked").chmod(0o755)
    assert r.returncode == EXIT_PARTIAL, r.stdout + r.stderr
    assert "cannot read the directory" in r.stderr and "locked" in r.stderr
    assert "1 input(s) skipped" in r.stdout and "62 patches" in r.stdout


def _damaged_model(world, tmp_path, how: str) -> Path:
    m = tmp_path / "model"
    shutil.copytree(world["model"], m)
    meta = json.loads((m / "model.json").read_text())
    if how == "nan weights":
        sd = torch.load(m / "weights.pt", weights_only=True)
        k = next(iter(sd))
        sd[k] = sd[k] * float("nan")
        torch.save(sd, m / "weights.pt")
        meta["files"]["weights.pt"] = file_sha256(m / "weights.pt")
    elif how == "zero std":
        meta["normalisation"]["std"] = [0.0] * len(meta["normalisation"]["std"])
    elif how == "nan threshold":
        meta["threshold"] = float("nan")
    elif how == "params hash":
        meta["feature_params_hash"] = "0000000000000000"
    elif how == "no params hash":
        del meta["feature_params_hash"]
    (m / "model.json").write_text(json.dumps(meta))
    return m


@pytest.mark.parametrize("how, needle", [("nan weights", "NaN"), ("zero std", "normalisation std"),
                                         ("nan threshold", "threshold"), ("params hash", "does not match"),
                                         ("no params hash", "no feature_params_hash")])
def test_damaged_models_are_refused_in_one_line(world, sites, tmp_path, how, needle):
    m = _damaged_model(world, tmp_path, how)
    assert_error(run("score", world["audio"], "--model", m), EXIT_DAMAGED, needle)
    assert_error(run("site", "create", "bad", "--model", m, "--sites-dir", sites), EXIT_DAMAGED, needle)


def test_directories_where_files_are_expected(world, sites, tmp_path):
    (tmp_path / "out.html").mkdir()
    _logged(world, sites)
    r = run("report", "--site", "pump-3", "--out", tmp_path / "out.html", "--sites-dir", sites)
    assert_error(r, EXIT_ERROR, "out.html")
    (tmp_path / "model-file").write_text("x")
    r = run("train", "--normal", world["audio"], "--out", tmp_path / "model-file", "--epochs", "1")
    assert_error(r, EXIT_ERROR, "not a directory")
    assert_error(run("score", world["audio"], "--model", tmp_path / "model-file"), EXIT_ERROR, "model-file")
    (site_dir(sites) / "alarms.jsonl").unlink()
    (site_dir(sites) / "alarms.jsonl").mkdir()  # alarms still reach the score log; a warning says so
    r = run("monitor", "--site", "pump-3", "--from", world["audio"] / "b_cavitation.flac", "--start-time",
            "2025-06-20T00:00:00Z", "--sites-dir", sites)
    out = assert_ok(r)
    assert "alarms.jsonl" in out and "they are in the score log" in out
