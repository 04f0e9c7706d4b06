"""Fleet jobs on a local Ray with 2 workers (one Ray session for the module), and the fleet report: one site's failure
is reported without stopping the others, a re-run skips the completed sites, results land in the site store; the
page ranks the sites by what needs attention; the Parquet dataset is partitioned by site and day."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import invoke, small_model

from anomaly.modeldir import model_hash
from anomaly.simulate import SimConfig, write_audio
from calibration.fleet import jobs
from calibration.fleet.report import fleet_summaries, write_parquet
from calibration.store import SiteConfig, SiteStore

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Four sites sharing one small model, each with a source directory of 2.5 min of normal audio; site d's
    source directory does not exist (its job fails)."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("fleet")
    model = small_model(d, seed=400, recordings=2, seconds=40.0, epochs=1, samples_per_epoch=256)
    store = SiteStore(d / "sites")
    for i, name in enumerate("abcd"):
        src = d / "audio" / name
        if name != "d":
            write_audio(src / "normal.flac", SimConfig("pump", "none", 0, "factory", seed=410 + i), 2.5)
        store.create(SiteConfig(name=f"site-{name}", model_path=str(model), model_hash=model_hash(model),
                                machine="pump", source=str(src)))
    return store, d


def test_fleet_calibrate_on_ray_reports_a_failure_and_resumes(ray_session, fleet):
    store, d = fleet
    every = [a for n in "abcd" for a in ("--site", f"site-{n}")]
    r = invoke("fleet", "calibrate", "--force", *every, "--sites-dir", store.root)
    assert r.exit_code == 6, r.output  # one site failed: finished, some inputs failed (EXIT_PARTIAL)
    out = r.output
    assert "fleet calibrate: 4 site(s) on a local Ray" in out
    assert out.count(" done site-") == 3 and "failed site-d" in out
    for name in ("site-a", "site-b", "site-c"):
        assert store.site(name).current_id() is not None  # results in the same site store
    assert store.site("site-d").current_id() is None
    first = {n: store.site(n).current_id() for n in ("site-a", "site-b", "site-c")}

    # the same job again: the three done sites are skipped, site-d is retried (and now has audio)
    write_audio(d / "audio" / "d" / "normal.flac", SimConfig("pump", "none", 0, "factory", seed=419), 2.5)
    r = invoke("fleet", "calibrate", "--force", *every, "--sites-dir", store.root)
    assert r.exit_code == 0, r.output
    assert "[1/1] done site-d" in r.output and "3 done earlier in this job" in r.output
    assert {n: store.site(n).current_id() for n in first} == first  # not calibrated twice
    assert store.site("site-d").current_id() is not None
    states = list((store.root / jobs.JOB_DIR).glob("calibrate-*.json"))
    assert len(states) == 1
    r = invoke("fleet", "calibrate", "--force", "--sites-dir", store.root)  # every uncalibrated site: none left
    assert r.exit_code == 0 and "no site to calibrate" in r.output, r.output


def test_ray_and_serial_give_the_same_results(ray_session, fleet):
    """`fleet score` with Ray, then a new recording scored one site at a time (--workers 0): both land in the logs,
    and a re-run scores nothing twice."""
    store, d = fleet
    r = invoke("fleet", "score", "--sites-dir", store.root)
    assert r.exit_code == 0, r.output
    n1 = {n: _rows(store, n) for n in store.names()}
    assert all(v > 100 for v in n1.values())
    write_audio(d / "audio" / "a" / "z_more.flac", SimConfig("pump", "cavitation", 0.8, "factory", seed=430), 0.5)
    r = invoke("fleet", "score", "--workers", "0", "--restart", "--sites-dir", store.root)
    assert r.exit_code == 0, r.output
    assert "one site at a time" in r.output and "nothing new to score" in r.output
    n2 = {n: _rows(store, n) for n in store.names()}
    assert n2["site-a"] > n1["site-a"] and all(n2[n] == n1[n] for n in n1 if n != "site-a")


def test_ray_address_joins_a_running_cluster_and_a_dead_one_is_one_line(ray_session, fleet, tmp_path):
    """`--ray-address` is the same code on a cluster: a second humwatch process joins this module's running Ray by its
    address and runs one task per site there; an address where nothing answers is one error line, at once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mosquitto import free_port

    store, _ = fleet
    _calibrated(store, "site-b")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    humwatch = [str(Path(sys.executable).parent / "humwatch"), "fleet", "score", "--sites-dir", str(store.root)]
    addr = ray.get_runtime_context().gcs_address
    r = subprocess.run([*humwatch, "--ray-address", addr, "--restart", "--site", "site-b"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"1 site(s) on Ray at {addr}" in r.stdout and "[1/1] done site-b" in r.stdout, r.stdout
    dead = f"127.0.0.1:{free_port()}"
    r = subprocess.run([*humwatch, "--ray-address", dead, "--restart", "--site", "site-b"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr
    assert f"cannot reach a Ray cluster at {dead}" in r.stdout + r.stderr


def test_a_crashing_task_is_that_sites_failure(ray_session, fleet):
    store, _ = fleet
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    res = jobs.run_job("boom", store, ["site-a", "site-b"], task=_boom, restart=True)
    assert sorted((r.site, r.status) for r in res) == [("site-a", "failed"), ("site-b", "done")], res
    assert "ZeroDivisionError" in next(r.message for r in res if r.site == "site-a")


def _boom(root: str, name: str, opts) -> str:
    if name == "site-a":
        return str(1 / 0)
    return "fine"


def _calibrated(store, *names) -> None:
    """Calibrate these sites if the first test has not (when a test runs alone)."""
    from calibration.calibrate import CalibrationRequest, calibrate

    for name in names:
        if store.site(name).current_id() is None:
            calibrate(store.site(name), CalibrationRequest(files=jobs._source_files(store.site(name)), force=True))


def _rows(store, name) -> int:
    from calibration.monitoring.scorelog import read_scores

    return len(read_scores(store.site(name).dir / "scores.sqlite"))


def test_fleet_recalibrate_due_picks_only_the_due_sites(ray_session, fleet, tmp_path):
    """`fleet recalibrate --due` recalibrates the sites whose calibration is older than their interval (the rule of
    calibrate.is_due), on Ray, leaves the others alone, and finds nothing due afterwards."""
    from calibration.calibrate import due_sites

    _calibrated(fleet[0], "site-a", "site-b", "site-c")
    shutil.copytree(fleet[0].root, tmp_path / "sites")
    st = SiteStore(tmp_path / "sites")
    cur = st.site("site-b").calibration()
    path = st.site("site-b").calibrations_dir / f"{cur['id']}.json"
    path.write_text(path.read_text().replace(cur["created_utc"], "2020-01-01T00:00:00Z"))
    before = {n: st.site(n).current_id() for n in ("site-a", "site-c", "site-d")}
    assert [n for n, age in due_sites(st) if age is not None] == ["site-b"]
    r = invoke("fleet", "recalibrate", "--due", "--force", "--sites-dir", st.root)
    assert r.exit_code == 0, r.output
    assert "[1/1] done site-b" in r.output and "recalibrated" in r.output, r.output
    assert st.site("site-b").current_id() != cur["id"]
    assert {n: st.site(n).current_id() for n in before} == before
    r = invoke("fleet", "recalibrate", "--due", "--force", "--sites-dir", st.root)
    assert r.exit_code == 0 and "no site to recalibrate" in r.output, r.output
    r = invoke("fleet", "recalibrate", "--sites-dir", st.root)
    assert r.exit_code != 0 and "give --due or --site NAME" in r.output, r.output


def test_fleet_report_ranks_by_attention_and_links_site_reports(ray_session, fleet, tmp_path):
    store, d = fleet
    # site-b: an old calibration (due); site-c: damaged settings; site-a has the cavitation recording's alarms
    shutil.copytree(store.root, tmp_path / "sites")
    st = SiteStore(tmp_path / "sites")
    cur = st.site("site-b").calibration()
    path = st.site("site-b").calibrations_dir / f"{cur['id']}.json"
    path.write_text(path.read_text().replace(cur["created_utc"], "2020-01-01T00:00:00Z"))
    (st.site("site-c").dir / "site.toml").write_text("k = 'x'\n")
    rows = fleet_summaries(st)
    order = [s.name for s, _ in rows]
    reasons = {s.name: [a.reason for a in att] for s, att in rows}
    assert order[0] == "site-c" and "cannot be read" in reasons["site-c"][0]
    assert any("alarm" in x for x in reasons["site-a"]), reasons
    assert any("recalibration due" in x for x in reasons["site-b"])
    assert sorted(order) == ["site-a", "site-b", "site-c", "site-d"]

    out = tmp_path / "fleet.html"
    r = invoke("fleet", "report", "--out", out, "--sites-dir", st.root)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "<script" not in page and "site-c" in page and "recalibration due" in page
    assert "href='fleet-sites/site-a.html'" in page and (tmp_path / "fleet-sites" / "site-a.html").is_file()
    assert "no site report for site-c" in r.output


def test_parquet_dataset_partitioned_by_site_and_day(tmp_path):
    """Scores of two sites over two UTC days (one site's from a device over MQTT): one file per site and day,
    read back by pandas with the same values."""
    from calibration.monitoring.scorelog import ScoreLog, read_scores

    store = SiteStore(tmp_path / "sites")
    t0 = 1_790_035_200.0 - 3600  # an hour before a UTC midnight
    rng = np.random.default_rng(0)
    for name, n in (("p-1", 300), ("p-2", 200)):
        s = store.create(SiteConfig(name=name, model_path="m", model_hash="h"))
        log = ScoreLog(s.dir / "scores.sqlite")
        run = log.start_run("cal", "h", 1.0, 3, 5, "test")
        t = t0 + np.arange(n) * 24.0
        if name == "p-1":
            log.append(run, t, rng.random(n), None, "/rec/a.flac", t - t0)
        else:
            log.append_device(run, "dev-1", np.arange(n), t, rng.random(n))
        log.close()
    out, rows = write_parquet(store, tmp_path / "scores")
    parts = sorted(str(p.relative_to(out).parent) for p in out.rglob("*.parquet"))
    assert parts == ["site=p-1/day=2026-09-21", "site=p-1/day=2026-09-22", "site=p-2/day=2026-09-21",
                     "site=p-2/day=2026-09-22"]
    df = pd.read_parquet(out)
    assert len(df) == rows == 500 and set(df["site"].astype(str)) == {"p-1", "p-2"}
    for name in ("p-1", "p-2"):
        one = df[df["site"] == name].sort_values("t_utc")
        ref = read_scores(store.site(name).dir / "scores.sqlite")
        assert np.allclose(one["score"].to_numpy(), ref["score"].to_numpy())
        assert (one["time"].dt.tz is not None) and one["time"].iloc[0] == ref["time"].iloc[0]
    assert df.loc[df.site == "p-2", "device"].unique().tolist() == ["dev-1"]
    r = invoke("fleet", "report", "--format", "parquet", "--out", out, "--days", "36500", "--sites-dir", store.root)
    assert r.exit_code == 0 and "wrote 500 scores" in r.output, r.output
    assert len(pd.read_parquet(out)) == 500  # replaced, not appended


def test_novel_state_notices_rank_as_notices_not_alarms(tmp_path):
    """A novel-state notice (#14 logs it in the alarms table with kind "novel_state") is counted as a novel state on
    the fleet page, never as an alarm: a site with only notices is "watch", one with an alarm "act"."""
    import time

    from calibration.monitoring.scorelog import ScoreLog, summarize

    store = SiteStore(tmp_path / "sites")
    now = time.time()
    for name, kinds in (("p-notice", ["novel_state", "novel_state"]), ("p-alarm", ["anomaly", "novel_state"])):
        s = store.create(SiteConfig(name=name, model_path="m", model_hash="h"))
        log = ScoreLog(s.dir / "scores.sqlite")
        run = log.start_run("cal", "h", 1.0, 3, 5, "test")
        log.append(run, now - 600 + np.arange(10.0), np.full(10, 0.5), None, "/rec/a.flac", np.arange(10.0))
        for i, kind in enumerate(kinds):
            log.alarm(run, now - 300 + i, 2.0, {"kind": kind})
        log.close()
    summ = summarize(store.site("p-alarm").dir / "scores.sqlite", now - 86400, now - 3600)
    assert summ["alarms"] == summ["recent_alarms"] == 1
    assert summ["alarm_kinds"] == {"anomaly": 1, "novel_state": 1}
    rows = {s.name: att for s, att in fleet_summaries(store, now=now)}
    notice = [a.reason for a in rows["p-notice"]]
    assert "2 novel operating states this week" in notice and not any("alarm" in r for r in notice), notice
    assert {a.level for a in rows["p-notice"]} == {"watch"}
    assert rows["p-alarm"][0].level == "act" and rows["p-alarm"][0].reason == "1 alarm in the last 24 h"


@pytest.mark.slow
def test_fleet_export_writes_each_sites_firmware(fleet):
    """`fleet export` (one site at a time here: the export runs TensorFlow) writes sites/NAME/firmware/ with the
    telemetry encoder beside the model; a site that is not calibrated is skipped with a reason."""
    store, _ = fleet
    if store.site("site-a").current_id() is None:
        from calibration.calibrate import CalibrationRequest, calibrate
        from calibration.fleet.jobs import _source_files

        calibrate(store.site("site-a"), CalibrationRequest(files=_source_files(store.site("site-a")), force=True))
    r = invoke("fleet", "export", "--site", "site-a", "--workers", "0", "--no-classifier", "--sites-dir", store.root)
    assert r.exit_code == 0, r.output
    fw = store.site("site-a").dir / "firmware"
    assert "[1/1] done site-a" in r.output and (fw / "model_int8.tflite").is_file()
    for name in ("humwatch_telemetry.h", "hw_telemetry.c", "hw_telemetry.h"):
        assert (fw / name).is_file()
    assert '#define HW_TELEMETRY_SITE "site-a"' in (fw / "humwatch_telemetry.h").read_text()
