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
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import WIDE
from typer.testing import CliRunner

from anomaly.detectors import fingerprint_files, fit_detector
from anomaly.errors import (
    EXIT_BUSY,
    EXIT_DAMAGED,
    EXIT_ERROR,
    EXIT_IO,
    EXIT_OK,
)
from anomaly.features import DEFAULT_PARAMS, log_mel
from anomaly.modeldir import model_hash
from anomaly.simulate import SimConfig, simulate, write_audio
from anomaly.train import TrainConfig
from calibration.calibrate import CalibrationRequest, calibrate
from calibration.monitoring.scorelog import ScoreLog, read_alarms, read_events, read_scores
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
    recs = [log_mel(simulate(SimConfig("pump", "none", 0, "factory", seed=600 + i), 30.0), DEFAULT_PARAMS)
            for i in range(2)]
    det = fit_detector("ae", recs, train_config=TrainConfig(threads=1, epochs=1, samples_per_epoch=128))
    model = det.save(d / "model", extra={"training_data": fingerprint_files([])})
    store = SiteStore(d / "sites")
    site = store.create(SiteConfig(name="pump-3", model_path=str(model), model_hash=model_hash(model),
                                   machine="pump"))
    cal = write_audio(d / "cal" / "cal.flac", SimConfig("pump", "none", 0, "factory", seed=610), 4.0)
    calibrate(site, CalibrationRequest(files=[cal], force=True))
    audio = d / "audio"
    write_audio(audio / "a_normal.flac", SimConfig("pump", "none", 0, "factory", seed=611), 1.0)
    write_audio(audio / "b_cavitation.flac", SimConfig("pump", "cavitation", 0.8, "factory", seed=612), 0.5)
    return {"dir": d, "model": model, "cal": cal, "audio": audio}


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
    path = tmp_path / "scores.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '3');
        CREATE TABLE runs (run_id INTEGER PRIMARY KEY, started_utc REAL NOT NULL, calibration_id TEXT NOT NULL,
            model_hash TEXT NOT NULL, threshold REAL NOT NULL, alarm_m INTEGER NOT NULL, alarm_n INTEGER NOT NULL,
            source TEXT NOT NULL, classifier_hash TEXT, classes TEXT, class_thresholds TEXT);
        CREATE TABLE scores (t_utc REAL NOT NULL, score REAL NOT NULL, over INTEGER NOT NULL, bands BLOB,
            run_id INTEGER NOT NULL, file_id INTEGER, offset_s REAL, classes BLOB);
        CREATE TABLE files (file_id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
        CREATE TABLE alarms (t_utc REAL NOT NULL, run_id INTEGER NOT NULL, score REAL NOT NULL, info TEXT NOT NULL);
        INSERT INTO files VALUES (1, '/rec/a.flac');
        INSERT INTO runs VALUES (1, 1.75e9, 'c', 'm', 1.0, 3, 5, 'a', NULL, NULL, NULL);
        INSERT INTO runs VALUES (2, 1.75e9, 'c', 'm', 1.0, 3, 5, 'a', NULL, NULL, NULL);
    """)
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


def test_close_with_a_log_that_stays_unwritable_says_what_was_lost(tmp_path, monkeypatch):
    log = ScoreLog(tmp_path / "scores.sqlite", commit_every=0.0, on_notice=lambda m: None)
    run_ = log.start_run("c", "m", 1.0, 3, 5, "test")
    monkeypatch.setattr(ScoreLog, "_write", lambda self: (_ for _ in ()).throw(
        sqlite3.OperationalError("database or disk is full")))
    log.append(run_, T0 + np.arange(5) * 0.96, np.ones(5), None, None, np.zeros(5))
    with pytest.raises(Exception, match=r"disk full .* 5 score\(s\) from 2025-06-15 .* could not be logged") as e:
        log.close()
    assert e.value.exit_code == EXIT_IO
