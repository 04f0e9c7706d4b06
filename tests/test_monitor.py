"""Monitoring: alarm rule, score log, alarms, skipped files, crash safety (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import small_model
from legacy_scorelog import legacy_log

from anomaly.audio import find_audio
from anomaly.modeldir import model_hash
from anomaly.simulate import SimConfig, simulate, write_audio
from calibration.calibrate import CalibrationRequest, calibrate
from calibration.errors import SiteError
from calibration.monitoring.monitor import Monitor, MonitorConfig, MonitorWarning
from calibration.monitoring.scorelog import SCHEMA_VERSION, ScoreLog, read_alarms, read_scores
from calibration.store import SiteConfig, SiteStore

ROOT = Path(__file__).resolve().parents[1]
HUMWATCH = Path(sys.executable).parent / "humwatch"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("mon")
    model = small_model(d, seed=200)
    store = SiteStore(d / "sites")
    s = store.create(SiteConfig(name="pump-1", model_path=str(model), model_hash=model_hash(model), machine="pump"))
    cal = write_audio(d / "cal.flac", SimConfig("pump", "none", 0, "factory", seed=210), 6.0)
    calibrate(s, CalibrationRequest(files=[cal], force=True))
    audio = d / "audio"
    write_audio(audio / "a_normal.flac", SimConfig("pump", "none", 0, "factory", seed=211), 1.0)
    write_audio(audio / "b_cavitation.flac", SimConfig("pump", "cavitation", 0.8, "factory", seed=212), 0.5)
    yield s, d
    torch.set_num_threads(prev)


def test_monitor_logs_every_patch_and_alarms_on_the_fault(site, tmp_path):
    s, d = site
    files = find_audio([d / "audio"])
    out = tmp_path / "alarm_stdin.jsonl"
    hook = f"{sys.executable} -c \"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + chr(10))\""
    with Monitor(s, MonitorConfig(start_utc=1.7e9, on_alarm=hook)) as mon:
        state = mon.process_files(files)
    df = read_scores(s.dir / "scores.sqlite", since_utc=1.7e9 - 1, bands=True)
    df = df[df["t_utc"] < 1.7e9 + 1000]
    assert len(df) == state.patches == 62 + 31
    assert {"score", "over", "calibration_id", "model_hash", "band_00", "band_63"} <= set(df.columns)
    fault = df[df["file"].str.endswith("b_cavitation.flac")]
    normal = df[df["file"].str.endswith("a_normal.flac")]
    assert fault["over"].mean() > 0.8 and normal["over"].mean() < 0.2
    assert state.alarms >= 1
    alarms = [json.loads(x) for x in (s.dir / "alarms.jsonl").read_text().splitlines()]
    assert any(a["file"].endswith("b_cavitation.flac") for a in alarms)
    a = alarms[-1]
    assert a["site"] == "pump-1" and a["threshold"] > 0 and len(a["top_bands"]) == 3
    hooked = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    assert len(hooked) == state.alarms and hooked[-1]["t_utc"] == a["t_utc"]
    assert len(read_alarms(s.dir / "scores.sqlite")) >= state.alarms
    # timestamps follow --start-time across files: the second file starts where the first ended
    assert fault["t_utc"].min() == pytest.approx(1.7e9 + 60.0, abs=0.01)


def test_unreadable_file_mid_directory_is_skipped(site, tmp_path):
    s, d = site
    (tmp_path / "b_bad.wav").write_text("not audio")
    sf.write(tmp_path / "a_good.wav", simulate(SimConfig("pump", seed=5), 5.0), 16000)
    sf.write(tmp_path / "c_good.wav", simulate(SimConfig("pump", seed=6), 5.0), 16000)
    with Monitor(s, MonitorConfig(start_utc=1.6e9)) as mon, pytest.warns(MonitorWarning, match="b_bad.wav"):
        state = mon.process_files(find_audio([tmp_path]))
    assert state.skipped == [str(tmp_path / "b_bad.wav")] and state.patches == 10


def test_uncalibrated_site_is_refused(site):
    s, d = site
    store = SiteStore(s.dir.parent)
    other = store.create(SiteConfig(name="fresh", model_path=str(d / "model"), model_hash=model_hash(d / "model")))
    with pytest.raises(SiteError, match="not calibrated"):
        Monitor(other, MonitorConfig())


def test_retention_counts_from_when_rows_were_logged(tmp_path):
    """Replayed recordings months old are not pruned at the next start: retention is by log (wall-clock) time."""
    log = ScoreLog(tmp_path / "s.sqlite")
    run = log.start_run("c", "m", 1.0, 3, 5, "x")
    now = time.time()
    log.append(run, np.array([now - 90 * 86400, now - 10]), np.array([0.5, 2.0]), np.zeros((2, 64)), "f",
               np.array([0.0, 0.96]))
    log.flush()
    assert log.prune(56, now=now) == 0  # both were logged just now
    assert log.prune(56, now=now + 55 * 86400) == 0
    assert log.prune(56, now=now + 57 * 86400) == 2  # 57 days after they were logged
    log.close()
    assert len(read_scores(tmp_path / "s.sqlite")) == 0


@pytest.mark.parametrize("states, most", [(False, 220), (True, 250)])
def test_bytes_per_row_supports_the_documented_size(tmp_path, states, most):
    """docs: ~200 bytes a row (~18 MB a day), ~240 with the novel-state tracker's levels (~20 MB a day)."""
    log = ScoreLog(tmp_path / "s.sqlite")
    run = log.start_run("c", "m", 1.0, 3, 5, "x")
    n = 20000
    rng = np.random.default_rng(0)
    log.append(run, 1.7e9 + np.arange(n) * 0.96, rng.random(n), rng.random((n, 64)), "/data/site/rec.flac",
               np.arange(n) * 0.96, levels=rng.normal(-3.0, 1.0, (n, 8)) if states else None)
    log.close()
    con = sqlite3.connect(tmp_path / "s.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    per_row = (tmp_path / "s.sqlite").stat().st_size / n
    assert most - 40 < per_row < most


@pytest.mark.skipif(not HUMWATCH.exists(), reason="humwatch console script not installed")
def test_sigkill_loses_at_most_the_last_second(site, tmp_path):
    s, d = site
    audio = write_audio(tmp_path / "long.flac", SimConfig("pump", seed=300), 0.5)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [str(HUMWATCH), "monitor", "--site", "pump-1", "--sites-dir", str(s.dir.parent), "--from", str(audio),
           "--realtime", "--start-time", "2025-06-01T00:00:00Z"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = 1748736000.0  # 2025-06-01T00:00:00Z
    deadline = time.time() + 60
    n_before = 0
    while time.time() < deadline:  # wait until some rows are committed, then note how many and kill
        time.sleep(0.5)
        try:
            n_before = len(read_scores(s.dir / "scores.sqlite", since_utc=t0))
        except Exception:
            n_before = 0
        if n_before >= 5:
            break
    time.sleep(1.5)
    killed_at = len(read_scores(s.dir / "scores.sqlite", since_utc=t0))
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    after = read_scores(s.dir / "scores.sqlite", since_utc=t0)
    # everything committed before the kill is still there, and the log is readable
    assert len(after) >= killed_at >= n_before >= 5
    # a restart works on the same log (another start time: another recording, scored in full)
    r = subprocess.run(cmd[:-3] + ["--start-time", "2026-01-01T00:00:00Z"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(read_scores(s.dir / "scores.sqlite", since_utc=t0)) >= len(after) + 31


def test_log_of_another_layout_is_refused_in_one_line(tmp_path):
    legacy_log(tmp_path / "old.sqlite", 1)
    for open_it in (lambda: ScoreLog(tmp_path / "old.sqlite"), lambda: read_scores(tmp_path / "old.sqlite")):
        with pytest.raises(SiteError, match=f"layout 1, this humwatch writes layout {SCHEMA_VERSION}"):
            open_it()


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_every_older_layout_is_read_as_it_is_and_upgraded_by_a_writer(tmp_path, version):
    progress = "INSERT INTO recordings VALUES (1, 1.75e9, 0.96, 2);" if version >= 5 else ""
    path = legacy_log(tmp_path / "scores.sqlite", version, f"""
        INSERT INTO files VALUES (1, '/rec/a.flac');
        INSERT INTO runs (run_id, started_utc, calibration_id, model_hash, threshold, alarm_m, alarm_n, source)
            VALUES (1, 1.75e9, 'c', 'm', 1.0, 3, 5, 'old');
        INSERT INTO scores (t_utc, score, over, run_id, file_id, offset_s) VALUES (1.75e9, 0.5, 0, 1, 1, 0.0),
            (1.75e9 + 0.96, 2.0, 1, 1, 1, 0.96);
        {progress}
    """)
    assert list(read_scores(path)["score"]) == [0.5, 2.0] and read_alarms(path).empty
    log = ScoreLog(path, on_notice=lambda m: None)
    resume = log.resume_point("/rec/a.flac", 1.75e9)  # before layout 5, the upgrade fills `recordings`
    assert resume is not None and resume.patches == 2 and resume.last_offset_s == pytest.approx(0.96)
    assert resume.recent_scores == [0.5, 2.0] and resume.recent_levels == [None, None]  # no levels before layout 6
    run = log.start_run("c", "m", 1.0, 3, 5, "new")
    log.append(run, 1.75e9 + np.array([1.92]), np.array([1.0]), None, "/rec/a.flac", np.array([1.92]),
               levels=np.full((1, 8), -3.0))
    resume = log.resume_point("/rec/a.flac", 1.75e9)
    log.close()
    assert resume.patches == 3 and np.frombuffer(resume.recent_levels[-1], "<f4").tolist() == [-3.0] * 8
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
    assert list(read_scores(path)["score"]) == [0.5, 2.0, 1.0]


def test_file_times_from_names_and_mtimes_are_logged_and_warned(site, tmp_path):
    """Copied recordings share one mtime: they are placed on top of each other, and the monitor says so; a time in
    the name places its file exactly; the score log keeps how each time was found."""
    s, d = site
    t_copy = 1.78e9  # 2026-05: a past time (a recording time over a day ahead of the clock is refused)
    named = tmp_path / "pump_20261120T080000.flac"
    write_audio(named, SimConfig("pump", "none", 0, "factory", seed=213), 0.25)
    copies = []
    for i in range(2):
        p = tmp_path / f"copy_{i}.flac"
        write_audio(p, SimConfig("pump", "none", 0, "factory", seed=214 + i), 0.25)
        os.utime(p, (t_copy, t_copy))
        copies.append(p)
    with pytest.warns(MonitorWarning) as caught, Monitor(s, MonitorConfig()) as mon:
        state = mon.process_files([named, *copies])
    msgs = [str(w.message) for w in caught]
    assert any("copy_1.flac overlaps copy_0.flac" in m for m in msgs), msgs
    assert any("2 file(s) have no recording time" in m for m in msgs), msgs
    assert state.time_sources == {"name": 1, "mtime": 2}
    df = read_scores(s.dir / "scores.sqlite")
    by_file = df.groupby(df["file"].map(lambda f: Path(f).name))
    assert set(by_file["time_source"].first().items()) >= {("pump_20261120T080000.flac", "name"),
                                                            ("copy_0.flac", "mtime"), ("copy_1.flac", "mtime")}
    assert by_file["t_utc"].min()["pump_20261120T080000.flac"] == pytest.approx(
        datetime(2026, 11, 20, 8, tzinfo=UTC).timestamp())
    from calibration.monitoring.scorelog import read_file_times

    ft = read_file_times(s.dir / "scores.sqlite")
    assert {"name", "mtime"} <= set(ft["source"]) and ft["detail"].str.contains("20261120T080000").any()


def test_monitor_prints_one_line_per_alarm_when_not_a_terminal(site):
    from helpers import invoke

    s, d = site
    r = invoke("monitor", "--site", "pump-1", "--from", d / "audio" / "b_cavitation.flac", "--start-time",
               "2026-11-21T08:00:00Z", "--sites-dir", s.dir.parent)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("ALARM ")]
    assert lines and "site pump-1" in lines[0] and "b_cavitation.flac at" in lines[0] and "× threshold" in lines[0]
    assert "2026-11-21T08:00" in lines[0]
    assert "recording times from --start-time (1 file(s))" in r.output


def test_monitor_publish_births_with_the_rule_it_applies(site, tmp_path):
    """`monitor --publish`: the birth message names the threshold and the alarm rule the monitor applies (the
    calibration's), and every patch says the monitor applies the rule itself."""
    import shutil

    from calibration.calibrate import calibration_rule
    from calibration.fleet import telemetry as tm
    from calibration.fleet.publish import TelemetrySink

    s, d = site
    copy = SiteStore(tmp_path / "sites")
    shutil.copytree(s.dir, copy.root / s.name, ignore=shutil.ignore_patterns("scores.sqlite*", "alarms.jsonl"))
    sent: list[tuple[str, bytes, bool]] = []

    class Pub:
        device = "edge-1"

        def publish(self, topic, payload, retain=False):
            sent.append((topic, payload, retain))
            return True

    with Monitor(copy.site(s.name), MonitorConfig(start_utc=1.7e9), sink=TelemetrySink(Pub(), s.name)) as mon:
        mon.process_files([d / "audio" / "a_normal.flac"])
    births = [(p, r) for t, p, r in sent if tm.parse_topic(t).suffix == tm.BIRTH_SUFFIX]
    assert len(births) == 1 and births[0][1] is True
    birth = tm.Birth.from_json(births[0][0])
    cal = copy.site(s.name).calibration()
    assert birth.rule == calibration_rule(cal) and birth.rule is not None
    assert (birth.threshold, birth.runtime, birth.calibration) == (cal["threshold"]["threshold"], "float", cal["id"])
    patches = [tm.decode(p) for t, p, _ in sent if tm.parse_topic(t).suffix == "p"]
    assert len(patches) == 62 and all(m.device_rule for m in patches)
