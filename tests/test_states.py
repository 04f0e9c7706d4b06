"""States the calibration heard (calibration.states), novel-state notices in monitoring, the windowed-mean rule in a
monitor, and recalibration refusing a new state that comes with a score shift (issue #14)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import small_model

from anomaly.atomic import FAILPOINT_ENV
from anomaly.audio import file_patches
from anomaly.decision import DEFAULT_RULE
from anomaly.features import DEFAULT_PARAMS
from anomaly.modeldir import model_hash
from anomaly.simulate import SimConfig, simulate, write_audio
from calibration.calibrate import CalibrationRequest, calibrate, calibration_rule, recalibrate
from calibration.errors import ShiftRefused
from calibration.monitoring.monitor import Monitor, MonitorConfig
from calibration.monitoring.scorelog import NOVEL_STATE, read_alarms
from calibration.report.data import split_novel
from calibration.states import DB, MIN_PATCHES, StateModel, fit_states, group_levels
from calibration.store import SiteConfig, SiteStore

PATCH_S = 0.96
ROOT = Path(__file__).resolve().parents[1]


def _levels(n: int, offset_db: np.ndarray | float = 0.0, seed: int = 0) -> np.ndarray:
    """[n, 64] band levels: a slowly wandering background plus patch noise, shifted by ``offset_db`` per group."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 0.002, (n, 1)), axis=0)
    base = np.linspace(-2.0, -6.0, 64)[None, :] + walk + rng.normal(0, 0.05, (n, 64))
    return base + np.repeat(np.broadcast_to(np.asarray(offset_db, float) / DB, (8,)), 8)[None, :]


LOUD_HIGH = np.array([0, 0, 0, 0, 4, 8, 12, 14], float)  # dB: a neighbouring machine's high-frequency noise


def test_one_steady_state_is_found_and_warned_about():
    m = fit_states(_levels(1800), PATCH_S)
    assert m.k == 1 and m.shares.tolist() == [1.0]
    assert m.describe() == [f"state A: 100% of the time ({1800 * PATCH_S / 60:.0f} min in 1 stretch)"]
    assert any("one steady state" in w for _, w in m.findings())


def test_two_states_are_described_with_their_shares_and_differences():
    lv = np.r_[_levels(900, seed=1), _levels(900, LOUD_HIGH, seed=2), _levels(900, seed=3)]
    m = fit_states(lv, PATCH_S)
    assert m.k == 2 and sorted(np.round(m.shares, 1).tolist()) == [0.3, 0.7]
    words = m.describe()
    assert words[0].startswith("state A: 67% of the time") and "in 2 stretches" in words[0]
    assert "state B: 33%" in words[1] and "+14 dB at 5-7.5 kHz, +12 dB at 3.4-5 kHz" in words[1]
    assert not m.findings()
    assert StateModel.from_dict(json.loads(json.dumps(m.to_dict()))).limit == pytest.approx(m.limit)


def test_a_state_heard_too_briefly_asks_for_more():
    lv = np.r_[_levels(1600, seed=4), _levels(200, LOUD_HIGH, seed=5)]
    m = fit_states(lv, PATCH_S)
    assert m.k == 2
    assert any("heard for only 3.2 min" in w and "record another 15 min while it is on" in w for _, w in m.findings())


def test_novelty_needs_a_sustained_new_sound_and_tracker_matches_batch():
    m = fit_states(_levels(1800, seed=6), PATCH_S)
    later = np.r_[_levels(300, seed=7), _levels(200, LOUD_HIGH, seed=8), _levels(300, seed=9)]
    later[100:110] += 1.0  # a 10-patch bang is not a state
    onsets, inside = m.novel(later)
    assert onsets.size == 1 and 300 <= onsets[0] <= 300 + MIN_PATCHES + 12 and not inside[:300].any()
    tr = m.tracker()
    assert [i for i, row in enumerate(later) if tr.update(row)] == onsets.tolist()
    assert "+14 dB at 5-7.5 kHz" in m.differs(group_levels(later[400:410]).mean(axis=0))


# -- in a monitor, and in recalibration --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("states")
    yield small_model(d, background="quiet"), d
    torch.set_num_threads(prev)


def _site(model, d, name: str):
    cfg = SiteConfig(name=name, model_path=str(model), model_hash=model_hash(model), machine="pump")
    cfg.with_rule(DEFAULT_RULE)
    site = SiteStore(d / "sites").create(cfg)
    cal = write_audio(d / f"cal-{name}.flac", SimConfig("pump", "none", 0, "quiet", seed=310), 6.0)
    return site, calibrate(site, CalibrationRequest(files=[cal], force=True))


def test_monitor_raises_novel_state_notices_apart_from_alarms(model, tmp_path):
    site, rec = _site(model[0], tmp_path, "pump-q")
    assert calibration_rule(rec).kind == "window_mean" and rec["states"]["shares"] == [1.0]
    json.dumps(rec, allow_nan=False)  # a record is stored without NaN
    files = [write_audio(tmp_path / "mon" / "a_quiet.flac", SimConfig("pump", "none", 0, "quiet", seed=311), 2.5),
             write_audio(tmp_path / "mon" / "b_factory.flac", SimConfig("pump", "none", 0, "factory", seed=312), 2.0)]
    lines = []
    with Monitor(site, MonitorConfig(start_utc=1.7e9, on_alarm_line=lines.append)) as mon:
        state = mon.process_files(files)
    assert state.novel_states >= 1 and state.in_novel_state
    events = [json.loads(x) for x in (site.dir / "alarms.jsonl").read_text().splitlines()]
    novel = [e for e in events if e["kind"] == "novel_state"]
    assert novel and all(e["file"].endswith("b_factory.flac") for e in novel)
    assert "dB at" in novel[0]["differs"] and "recalibrate" in novel[0]["advice"]
    alarms, logged_novel = split_novel(read_alarms(site.dir / "scores.sqlite"))
    assert len(logged_novel) == len(novel) and len(alarms) == state.alarms == len(events) - len(novel)
    assert any(x.get("kind") == "novel_state" for x in lines)


def test_monitor_applies_the_calibrated_window_mean_rule(model, tmp_path):
    site, rec = _site(model[0], tmp_path, "pump-w")
    files = [write_audio(tmp_path / "w" / "a_normal.flac", SimConfig("pump", "none", 0, "quiet", seed=321), 2.5),
             write_audio(tmp_path / "w" / "b_cav.flac", SimConfig("pump", "cavitation", 0.8, "quiet", seed=322), 2.5)]
    with Monitor(site, MonitorConfig(start_utc=1.7e9)) as mon:
        state = mon.process_files(files)
    alarms = [json.loads(x) for x in (site.dir / "alarms.jsonl").read_text().splitlines()]
    alarms = [a for a in alarms if a["kind"] == "anomaly"]
    assert state.alarms == len(alarms) >= 1 and state.rule == "mean of 120"
    assert alarms[0]["file"].endswith("b_cav.flac") and abs(alarms[0]["window_mean_sd"]) > rec["threshold"]["rule"][
        "limit"]
    assert "in_novel_state" in alarms[0]


def test_recalibration_refuses_a_new_state_that_comes_with_a_score_shift(model, tmp_path):
    """A recording that sounds like a new state *and* scores higher (a developing bearing fault heard over a new
    background) is refused by the shift test: 'a new state' is how a fault would get into the threshold."""
    site, rec = _site(model[0], tmp_path, "pump-r")
    new = write_audio(tmp_path / "new.flac", SimConfig("pump", "bearing-outer", 0.8, "factory", seed=330), 6.0)
    states = fit_states(_band_levels(new), PATCH_S)
    assert StateModel.from_dict(rec["states"]).novel(_band_levels(new))[1].mean() > 0.5 and states.k >= 1
    with pytest.raises(ShiftRefused, match="refused"):
        recalibrate(site, CalibrationRequest(files=[new], force=True))
    assert site.current_id() == rec["id"]


def _band_levels(path) -> np.ndarray:
    return np.asarray(file_patches(path, DEFAULT_PARAMS)[1]).mean(axis=1)


# -- a restarted monitor: the rule and the novel-state tracker resume where the log stops ---------------------------
def _events(site) -> list[tuple[str, float]]:
    df = read_alarms(site.dir / "scores.sqlite")
    return [(i.get("kind"), round(t, 3)) for t, i in zip(df["t_utc"], df["info"], strict=True)]


@pytest.fixture(scope="module")
def restart_world(model, tmp_path_factory):
    """A calibrated site (quiet pump), audio that turns into an unheard state after a minute (the factory), and the
    notices and alarms of one uninterrupted run over it."""
    d = tmp_path_factory.mktemp("restart")
    site, _ = _site(model[0], d, "pump-k")
    shutil.copytree(site.dir.parent, d / "fresh")  # the calibrated site before any monitoring, for each case
    audio = np.r_[simulate(SimConfig("pump", "none", 0, "quiet", seed=341), 60.0),
                  simulate(SimConfig("pump", "none", 0, "factory", seed=342), 150.0, start_s=60.0)]
    full = d / "rec.flac"
    sf.write(full, audio, 16000, subtype="PCM_16")
    with Monitor(site, MonitorConfig(start_utc=1.7e9)) as mon:
        mon.process_files([full])
    reference = _events(site)
    return d, audio, reference


@pytest.mark.parametrize("case", ["during the run-up", "after the notice", "in an alarm"])
def test_a_restarted_monitor_neither_repeats_nor_misses_notices_and_alarms(restart_world, tmp_path, case):
    """A monitor stopped after patch K (the log holds patches 0..K; emulated by monitoring the first K patches of the
    recording) and started again on the whole recording resumes it where the log stops: the alarm rule and the
    novel-state tracker are brought to their state there, so the log ends with exactly the notices and alarms of an
    uninterrupted run (no repeat of one raised before the stop, none missed that was building up across it)."""
    d, audio, reference = restart_world
    notice = next(t for k, t in reference if k == NOVEL_STATE)
    alarms = [t for k, t in reference if k == "anomaly"]
    assert alarms and alarms[0] > notice + 20 * PATCH_S  # the recording gives a notice, then an alarm
    at = {"during the run-up": notice - 12 * PATCH_S, "after the notice": notice + 20 * PATCH_S,
          "in an alarm": alarms[0] + 5 * PATCH_S}[case]
    store = tmp_path / "sites"
    shutil.copytree(d / "fresh", store)
    site = SiteStore(store).site("pump-k")
    rec = tmp_path / "rec.flac"
    cut = int(round((at - 1.7e9) * 16000)) + 16000  # the patch at `at` and the second after it
    sf.write(rec, audio[:cut], 16000, subtype="PCM_16")
    with Monitor(site, MonitorConfig(start_utc=1.7e9)) as mon:
        mon.process_files([rec])
    sf.write(rec, audio, 16000, subtype="PCM_16")
    with Monitor(site, MonitorConfig(start_utc=1.7e9)) as mon:
        state = mon.process_files([rec])
    assert state.resumed > 0 and state.patches > 0
    assert _events(site) == reference


def test_a_monitor_killed_after_a_notice_does_not_repeat_it(restart_world, tmp_path):
    """SIGKILL right after a novel-state notice is logged (HUMWATCH_FAILPOINT); the restarted `humwatch monitor`
    resumes the recording without a second notice, and the log and alarms.jsonl end as an uninterrupted run's."""
    d, _, reference = restart_world
    store = tmp_path / "sites"
    shutil.copytree(d / "fresh", store)
    args = ["monitor", "--site", "pump-k", "--from", d / "rec.flac", "--start-time", "2023-11-14T22:13:20Z",
            "--sites-dir", store]  # 1.7e9, the reference run's start
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "humwatch_cli", *map(str, args)]
    r = subprocess.run(cmd, env={**env, FAILPOINT_ENV: "monitor:novel-state-logged"}, capture_output=True,
                       timeout=300)
    site = SiteStore(store).site("pump-k")
    assert r.returncode == -signal.SIGKILL and [k for k, _ in _events(site)] == [NOVEL_STATE]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already in the log" in r.stdout and _events(site) == reference
    lines = [json.loads(x) for x in (site.dir / "alarms.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == [k for k, _ in reference]
