"""A site with a fault classifier: `site set-classifier`, class probabilities in the score log, alarms that name the
fault, alarms on a classifier hit alone, the report's fault section, and the score log's layout upgrade."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from helpers import assert_one_error_line, invoke, small_model
from legacy_scorelog import legacy_log

from anomaly.audio import file_log_mel, find_audio
from anomaly.classify import ClassifyConfig, FaultClassifier
from anomaly.dataset import load_dataset, write_sim_dataset
from anomaly.features import DEFAULT_PARAMS
from anomaly.modeldir import model_hash
from anomaly.simulate import SimConfig, write_audio
from calibration.calibrate import CalibrationRequest, calibrate, site_classifier
from calibration.errors import SiteError
from calibration.monitoring.monitor import Monitor, MonitorConfig
from calibration.monitoring.scorelog import SCHEMA_VERSION, ScoreLog, read_alarms, read_scores
from calibration.report import build_report, fault_label
from calibration.store import SiteConfig, SiteStore

T0 = 1.75e9


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An AE site (pump, calibrated), a fault classifier trained on simulated clips, and audio to monitor."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("monclf")
    model = small_model(d, fingerprint=False)
    classes = ("normal", "cavitation", "bearing-outer", "electrical-arc")
    ds = load_dataset(write_sim_dataset(d / "clips", 10, seed=5, severity_range=(0.6, 1.0), classes=classes))
    clf = FaultClassifier(ds.classes, DEFAULT_PARAMS, ClassifyConfig(epochs=15, steps_per_epoch=30, threads=1))
    clf.fit([file_log_mel(f, DEFAULT_PARAMS) for f in ds.files], ds.Y, 0.9)
    cdir = clf.save(d / "classifier")
    audio = d / "audio"
    write_audio(audio / "a_normal.flac", SimConfig("pump", "none", 0, "factory", seed=311), 1.0)
    write_audio(audio / "b_cavitation.flac", SimConfig("pump", "cavitation", 0.9, "factory", seed=312), 0.5)
    yield {"d": d, "model": model, "classifier": cdir, "audio": audio, "classes": list(ds.classes)}
    torch.set_num_threads(prev)


def _site(world, tmp_path, name="pump-2"):
    store = SiteStore(tmp_path / "sites")
    m = world["model"]
    s = store.create(SiteConfig(name=name, model_path=str(m), model_hash=model_hash(m), machine="pump"))
    cal = write_audio(tmp_path / "cal.flac", SimConfig("pump", "none", 0, "factory", seed=320), 6.0)
    calibrate(s, CalibrationRequest(files=[cal], force=True))
    return s


def _attach(s, world, *extra):
    r = invoke("site", "set-classifier", s.name, "--classifier", world["classifier"], "--sites-dir", s.dir.parent,
               *extra)
    assert r.exit_code == 0, r.output
    return r


def test_alarms_name_the_fault_and_probabilities_are_logged(world, tmp_path):
    s = _site(world, tmp_path)
    r = _attach(s, world)
    assert "cavitation" in r.output and "alarms on a classifier hit alone: none" in r.output
    assert s.config().classifier_hash and s.config().classifier_alarm == []
    with Monitor(s, MonitorConfig(start_utc=T0)) as mon:
        state = mon.process_files(find_audio([world["audio"]]))
    df = read_scores(s.dir / "scores.sqlite", classes=True)
    cols = [f"p_{c}" for c in world["classes"]]
    assert len(df) == state.patches == 62 + 31 and set(cols) <= set(df.columns)
    P = df[cols].to_numpy(float)
    assert np.isfinite(P).all() and ((P >= 0) & (P <= 1)).all()
    normal = df["file"].str.endswith("a_normal.flac").to_numpy()
    # the logged outputs are what the classifier computes (float16 in the log)
    assert df.loc[~normal, "p_cavitation"].mean() > df.loc[normal, "p_cavitation"].mean() + 0.3
    alarms = [json.loads(x) for x in (s.dir / "alarms.jsonl").read_text().splitlines()]
    cav = [a for a in alarms if a["file"].endswith("b_cavitation.flac")]
    assert cav and all(a["kind"] == "anomaly" for a in alarms)
    f = cav[0]["fault"]
    assert set(f["probabilities"]) == set(world["classes"]) and f["patches"] >= 3
    assert f["likely"] == "cavitation" and "cavitation" in f["fired"]
    assert state.alarm_faults.get("cavitation", 0) >= 1
    html = build_report(s)
    assert 'id="faults-section"' in html and 'id="fault-table"' in html and "cavitation (p = " in html
    assert "likely faults" in html


def test_monitor_cli_names_the_fault(world, tmp_path):
    s = _site(world, tmp_path)
    _attach(s, world)
    r = invoke("monitor", "--site", s.name, "--from", world["audio"], "--sites-dir", s.dir.parent,
               "--start-time", "2026-01-01T00:00:00Z")
    assert r.exit_code == 0, r.output
    assert "alarms by likely fault: cavitation" in r.output
    csv = tmp_path / "scores.csv"
    r = invoke("report", "--site", s.name, "--out", csv, "--sites-dir", s.dir.parent)
    assert r.exit_code == 0, r.output
    head = csv.read_text().splitlines()[0].split(",")
    assert "p_cavitation" in head and "p_normal" in head


def test_classifier_hit_alone_raises_its_own_alarm(world, tmp_path, monkeypatch):
    """A fault the autoencoder misses: scores stay under the threshold, the classifier fires."""
    s = _site(world, tmp_path)
    _attach(s, world, "--alarm-on", "electrical-arc")
    assert s.config().classifier_alarm == ["electrical-arc"]
    with Monitor(s, MonitorConfig(start_utc=T0)) as mon:
        k = mon.clf.classes.index("electrical-arc")
        orig = mon.clf.probabilities_of_logits

        def arc_everywhere(z):
            p = orig(z)
            p[:, k] = 0.99
            return p

        monkeypatch.setattr(mon.clf, "probabilities_of_logits", arc_everywhere)
        mon.threshold = 1e9  # nothing exceeds the anomaly threshold
        state = mon.process_files([world["audio"] / "a_normal.flac"])
    alarms = read_alarms(s.dir / "scores.sqlite")
    kinds = [a["kind"] for a in alarms["info"]]
    assert kinds == ["classifier"] and state.alarms == 1  # one onset: the rule stays active on the whole file
    info = alarms["info"].iloc[0]
    assert info["fault"]["likely"] == "electrical-arc" and info["fault"]["confident"]
    assert "p(electrical-arc)" in info["rule"]
    assert fault_label(info).startswith("classifier hit: electrical-arc")


def test_set_classifier_errors_and_remove(world, tmp_path):
    s = _site(world, tmp_path)
    sd = s.dir.parent
    r = invoke("site", "set-classifier", s.name, "--classifier", world["classifier"], "--alarm-on", "leak",
               "--sites-dir", sd)
    assert_one_error_line(r, "unknown class 'leak'")
    r = invoke("site", "set-classifier", s.name, "--classifier", world["classifier"], "--alarm-on", "normal",
               "--sites-dir", sd)
    assert_one_error_line(r, "normal")
    r = invoke("site", "set-classifier", s.name, "--classifier", world["model"], "--sites-dir", sd)
    assert_one_error_line(r, "not a fault classifier")
    r = invoke("site", "set-classifier", s.name, "--sites-dir", sd)
    assert_one_error_line(r, "--classifier DIR")
    assert s.config().classifier_path == ""  # nothing written by the failures
    _attach(s, world, "--alarm-on", "all")
    assert s.config().classifier_alarm == [c for c in world["classes"] if c != "normal"]
    r = invoke("site", "show", s.name, "--sites-dir", sd)
    assert r.exit_code == 0 and "fault classifier" in r.output
    r = invoke("site", "set-classifier", s.name, "--remove", "--sites-dir", sd)
    assert r.exit_code == 0, r.output
    cfg = s.config()
    assert (cfg.classifier_path, cfg.classifier_hash, cfg.classifier_alarm) == ("", "", [])
    assert site_classifier(s) == (None, None)


def test_a_changed_classifier_is_refused(world, tmp_path):
    import shutil

    s = _site(world, tmp_path)
    copy = tmp_path / "clf"
    shutil.copytree(world["classifier"], copy)
    r = invoke("site", "set-classifier", s.name, "--classifier", copy, "--sites-dir", s.dir.parent)
    assert r.exit_code == 0, r.output
    meta = json.loads((copy / "model.json").read_text())
    meta["thresholds"]["cavitation"]["threshold"] = 0.01
    (copy / "model.json").write_text(json.dumps(meta))
    r = invoke("monitor", "--site", s.name, "--from", world["audio"], "--sites-dir", s.dir.parent)
    assert_one_error_line(r, "changed since it was attached", "set-classifier")
    with pytest.raises(SiteError, match="changed since it was attached"):
        site_classifier(s)


def test_layout_2_log_is_upgraded_in_place(tmp_path):
    path = legacy_log(tmp_path / "scores.sqlite", 2, """
        INSERT INTO runs VALUES (1, 0, 'c1', 'm1', 1.0, 3, 5, 'old');
        INSERT INTO scores VALUES (100.0, 0.5, 0, NULL, 1, NULL, 0.0);
    """)
    old = read_scores(path, classes=True)  # a layout-2 log is read as it is
    assert len(old) == 1 and not any(c.startswith("p_") for c in old.columns)
    log = ScoreLog(path)
    run = log.start_run("c2", "m2", 2.0, 3, 5, "new", {"hash": "h", "classes": ["normal", "arc"],
                                                         "thresholds": [0.5, 0.7]})
    log.append(run, np.array([200.0, 201.0]), np.array([1.0, 3.0]), None, None, np.zeros(2),
               np.array([[0.9, 0.1], [0.2, 0.8]]))
    log.close()
    df = read_scores(path, classes=True)
    assert list(df["score"]) == [0.5, 1.0, 3.0]
    assert np.isnan(df["p_arc"].iloc[0]) and np.allclose(df["p_arc"].iloc[1:], [0.1, 0.8], atol=1e-3)
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def test_naming_below_the_class_threshold_is_marked_unconfident(world, tmp_path):
    s = _site(world, tmp_path)
    _attach(s, world)
    with Monitor(s, MonitorConfig(start_utc=T0)) as mon:
        names = mon.clf.classes
        mon.class_thr = np.full(len(names), 0.9)

        def window(p_cav, p_normal):
            p = np.zeros(len(names))
            p[names.index("cavitation")], p[names.index("normal")] = p_cav, p_normal
            mon.window.clear()
            for _ in range(5):
                mon.window.append((True, p))
            return mon._fault()

        f = window(0.95, 0.0)
        assert (f["likely"], f["confident"], f["fired"]) == ("cavitation", True, ["cavitation"])
        f = window(0.6, 0.1)
        assert (f["likely"], f["confident"], f["fired"]) == ("cavitation", False, [])
        assert fault_label({"fault": f}).startswith("cavitation? (p = 0.60, under its threshold 0.90")
        assert window(0.4, 0.1)["likely"] is None  # less probable than not
        assert window(0.6, 0.7)["likely"] is None  # "normal" is more probable
        assert fault_label({"fault": window(0.4, 0.1)}).startswith("unknown (no class over its threshold; closest "
                                                                   "cavitation")
