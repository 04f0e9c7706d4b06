"""Calibrating a site (calibration.calibrate) on simulator audio: the minimum length, the record, the held-out split,
training audio refused, injected and known faults, representativeness findings, recalibration and its safeguard,
due sites and the site lock."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import calibration.calibrate as cal_mod
from anomaly.audio import file_log_mel, file_patches
from anomaly.decision import MOfN
from anomaly.detectors import fingerprint_files, fit_detector, load_detector
from anomaly.features import DEFAULT_PARAMS
from anomaly.modeldir import model_hash
from anomaly.simulate import FAULTS, SimConfig, simulate, write_audio
from anomaly.train import TrainConfig
from calibration.calibrate import (
    CHUNK_PATCHES,
    INJECT_SEVERITIES,
    CalibrationRequest,
    calibrate,
    due_sites,
    injection_about,
    recalibrate,
    validate_labelled,
    validate_with,
)
from calibration.errors import CalibrationError, ShiftRefused, SiteError, SiteLockedError
from calibration.store import Site, SiteConfig, SiteStore, utc_now

FAST = TrainConfig(threads=1, epochs=2, samples_per_epoch=512)
SR = 16000




def pump(seed: int, fault: str = "none", severity: float = 0.0, background: str = "factory") -> SimConfig:
    return SimConfig("pump", fault, severity, background, seed)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("calib")


@pytest.fixture(scope="module")
def model(root) -> tuple[Path, list[Path]]:
    """A small AE on 3 x 60 s of normal pump audio in a factory, saved with the training files' fingerprint (like
    `humwatch train`)."""
    train = [write_audio(root / "train" / f"normal_{s}.flac", pump(s), 1.0) for s in (100, 101, 102)]
    det = fit_detector("ae", [file_log_mel(f, DEFAULT_PARAMS) for f in train], DEFAULT_PARAMS, train_config=FAST)
    return det.save(root / "model", extra={"training_data": fingerprint_files(train)}), train


def make_site(store_root: Path, model_dir: Path, name: str = "pump-3", **kw) -> Site:
    return SiteStore(store_root).create(SiteConfig(name=name, model_path=str(model_dir),
                                                   model_hash=model_hash(model_dir), machine="pump", **kw))


@pytest.fixture
def site(model, tmp_path) -> Site:
    return make_site(tmp_path / "sites", model[0])


@pytest.fixture(scope="module")
def cal_audio(root) -> Path:
    return write_audio(root / "audio" / "normal-200.flac", pump(200), 6.0)


@pytest.fixture(scope="module")
def fault_dir(root) -> Path:
    d = root / "known"
    for i in range(2):
        write_audio(d / f"anomaly_cavitation_{i:02d}.flac", pump(210 + i, "cavitation", 0.8), 0.5)
    write_audio(d / "anomaly_electrical-arc_00.flac", pump(212, "electrical-arc", 0.8), 0.5)
    return d


@pytest.fixture(scope="module")
def calibrated(model, root, cal_audio, fault_dir):
    """One forced calibration on 6 min with fault injection and known-fault validation, reused read-only."""
    site = make_site(root / "sites", model[0])
    progress, said = [], []
    rec = calibrate(site, CalibrationRequest(files=[cal_audio], force=True, inject=True, validate_dir=fault_dir),
                    on_progress=lambda f, name: progress.append((f, name)), say=said.append)
    return site, rec, progress, said


def copy_site(site: Site, tmp_path: Path) -> Site:
    """A private copy of a calibrated site (the model path is absolute, so it stays valid)."""
    shutil.copytree(site.dir, tmp_path / "copy" / site.name)
    return SiteStore(tmp_path / "copy").site(site.name)


# --------------------------------------------------------------------------------------------------------------------
# Minimum length, forced calibration, the record


def test_less_than_the_minimum_is_refused(site, cal_audio):
    with pytest.raises(CalibrationError) as e:
        calibrate(site, CalibrationRequest(files=[cal_audio], min_minutes=30))
    msg = str(e.value)
    assert "only 6.0 min of audio" in msg and "at least 30 min" in msg and "--force" in msg
    assert site.calibration_ids() == [] and site.current_id() is None


def test_no_files(site):
    with pytest.raises(CalibrationError, match="no calibration audio"):
        calibrate(site, CalibrationRequest(files=[], force=True))


def test_forced_calibration_record(calibrated, model, cal_audio):
    site, rec, progress, said = calibrated
    assert rec["kind"] == "calibration" and rec["status"] == "adopted" and rec["site"] == "pump-3"
    assert rec["previous"] is None
    assert rec["audio"]["forced"] is True
    assert rec["audio"]["files"] == [str(cal_audio)] and rec["audio"]["minutes"] == pytest.approx(6.0)
    assert rec["model"]["hash"] == model_hash(model[0]) == site.config().model_hash
    assert rec["model"]["feature_params_hash"] == DEFAULT_PARAMS.hash()
    assert rec["model"]["detector"] == "ae"
    th = rec["threshold"]
    assert th["k"] == 4.0 and (th["alarm_m"], th["alarm_n"]) == (3, 5)
    assert th["threshold"] == pytest.approx(th["mean"] + 4 * th["std"], rel=1e-12)
    assert 0 <= th["exceedance"] < 0.05 and th["false_alarms_per_day"] >= 0
    assert set(rec["check"]) >= {"patches", "observed_exceedance", "predicted_exceedance", "observed_alarms",
                                 "observed_alarms_per_day"}
    assert rec["findings"] and all(set(f) == {"level", "what"} for f in rec["findings"])
    assert any(f["level"] == "warning" and "6 min recorded, below the 30 min minimum" in f["what"]
               for f in rec["findings"])  # forced: a warning, not an "ok"
    b = rec["baseline"]
    assert len(b["score_sample"]) == rec["audio"]["threshold_patches"]  # fewer than 5000: all kept
    assert len(b["band_error_mean"]) == DEFAULT_PARAMS.n_mels
    assert set(b["score_quantiles"]) == {"0.5", "0.9", "0.99", "0.999"}
    # progress reached the end; the injection and the known faults were announced
    assert progress[-1] == (1.0, cal_audio.name)
    assert any("injecting" in s for s in said) and any("known fault" in s for s in said)


def test_stored_record_equals_returned(calibrated):
    site, rec, *_ = calibrated
    assert site.current_id() == rec["id"] and site.calibration_ids() == [rec["id"]]
    stored = json.loads((site.calibrations_dir / f"{rec['id']}.json").read_text())
    # the file says "pending": what adopted it is the switch of `current` (in current.log); the reader says so
    assert stored["status"] == "pending" and rec["status"] == "adopted" and rec["stored_status"] == "pending"
    returned = {k: v for k, v in json.loads(json.dumps(rec)).items() if k not in ("status", "stored_status")}
    assert {k: v for k, v in stored.items() if k != "status"} == returned  # tuples become lists; nothing else differs
    assert site.calibration() == rec
    log = [json.loads(x) for x in site.switch_log_path.read_text().splitlines()]
    assert log[-1]["current"] == rec["id"] and log[-1]["why"] == "calibration"


def test_held_out_split(calibrated, cal_audio):
    _, rec, *_ = calibrated
    a = rec["audio"]
    n = len(file_patches(cal_audio, DEFAULT_PARAMS)[0])
    assert a["patches"] == n
    assert a["threshold_patches"] + a["check_patches"] == n
    assert rec["threshold"]["n_patches"] == a["threshold_patches"]
    assert rec["check"]["patches"] == a["check_patches"]
    chunk = np.arange(n) // CHUNK_PATCHES
    assert a["check_patches"] == int(np.sum(chunk % 3 == 2))  # every third one-minute chunk is held out
    assert a["check_patches"] > 0.25 * n


def test_model_changed_since_site_creation(model, tmp_path, cal_audio):
    s = SiteStore(tmp_path).create(SiteConfig(name="p", model_path=str(model[0]), model_hash="0" * 16))
    with pytest.raises(SiteError, match=r"changed since the site was set up.*humwatch site set-model p"):
        calibrate(s, CalibrationRequest(files=[cal_audio], force=True))


# --------------------------------------------------------------------------------------------------------------------
# Training audio is refused


def test_training_file_is_refused(site, model, tmp_path, cal_audio):
    train = model[1]
    with pytest.raises(CalibrationError, match="used to train the site's model") as e:
        calibrate(site, CalibrationRequest(files=[train[0]], force=True))
    assert str(train[0]) in str(e.value)
    # a renamed copy among good audio is still recognised (by content)
    renamed = Path(shutil.copy(train[1], tmp_path / "site-recording-7.flac"))
    with pytest.raises(CalibrationError, match="site-recording-7.flac: used to train"):
        calibrate(site, CalibrationRequest(files=[cal_audio, renamed], force=True))
    assert site.calibration_ids() == []


# --------------------------------------------------------------------------------------------------------------------
# Validation: injected simulator faults, known fault recordings


def test_injected_faults(calibrated):
    _, rec, *_ = calibrated
    inj = rec["validation"]["injected"]
    assert set(inj) == set(FAULTS) - {"none"} and len(inj) == 5
    for fault, v in inj.items():
        rows = v["by_severity"]
        assert [r["severity"] for r in rows] == list(INJECT_SEVERITIES) and len(rows) == 6, fault
        assert all(r["patches"] > 0 and 0 <= r["detection_rate"] <= 1 for r in rows)
        detected = [r["severity"] for r in rows if r["detection_rate"] >= 0.5]
        assert v["lowest_severity_detected"] == (min(detected) if detected else None)
    cav = {r["severity"]: r["detection_rate"] for r in inj["cavitation"]["by_severity"]}
    assert cav[1.0] >= 0.9
    assert cav[1.0] >= cav[0.1]
    assert cav[0.5] >= cav[0.1]
    assert inj["cavitation"]["lowest_severity_detected"] <= 0.5


def test_injection_says_what_was_injected(calibrated):
    _, rec, _, said = calibrated
    about = rec["validation"]["injected_about"]
    assert about["simulated_machine"] == "pump" and about["machine_modelled"] and about["warning"] is None
    assert set(about["faults"]) == set(FAULTS) - {"none"}
    assert any("injecting simulated pump faults" in s for s in said)
    assert not any(s.startswith("warning") for s in said)


def test_injection_warns_when_the_simulator_does_not_model_the_machine(calibrated):
    from rich.console import Console

    from calibration.certificate import print_certificate

    about = injection_about("toycar")
    assert about["simulated_machine"] == "pump" and not about["machine_modelled"]
    assert "'toycar' is not one the simulator models" in about["warning"]
    rec = json.loads(json.dumps(calibrated[1]))
    rec["validation"]["injected_about"] = about
    con = Console(record=True, width=400)
    print_certificate(rec, con)
    text = con.export_text()
    assert "simulated pump faults: detection rate" in text and "warning: machine type 'toycar'" in text


@pytest.fixture(scope="module")
def labelled_dir(root) -> Path:
    d = root / "labelled"
    for i in range(3):
        write_audio(d / f"normal_{i:02d}.flac", pump(220 + i), 0.5)
        write_audio(d / f"anomaly_{i:02d}.flac", pump(230 + i, "cavitation", 0.8), 0.5)
    return d


def test_validate_labelled_reports_auc_false_alarms_and_delay(calibrated, model, labelled_dir):
    _, rec, *_ = calibrated
    det = load_detector(model[0])
    thr = rec["threshold"]["threshold"]
    lab = validate_labelled(det, labelled_dir, thr, MOfN(3, 5))
    assert (lab["n_normal"], lab["n_anomaly"]) == (3, 3)
    assert lab["auc"] == 1.0 and lab["pauc"] == 1.0 and lab["chance"]["pauc"] == 0.5
    assert lab["over_threshold"]["anomaly"] > 0.9 > lab["over_threshold"]["normal"]
    assert lab["files_alarmed"]["anomaly"] == 3
    st = lab["stream"]
    assert st["first_alarm_patch"] == 2 and st["delay_s"] == pytest.approx(3 * det.params.patch_seconds)
    assert st["normal_patches"] == 3 * 31 and st["fault_patches"] == 3 * 31


def test_labelled_recordings_are_preferred_in_calibration(model, root, cal_audio, labelled_dir, tmp_path):
    from rich.console import Console

    from calibration.certificate import print_certificate

    site = make_site(tmp_path / "sites", model[0])
    said = []
    rec = calibrate(site, CalibrationRequest(files=[cal_audio], force=True, validate_dir=labelled_dir),
                    say=said.append)
    assert "labelled" in rec["validation"] and "known_faults" not in rec["validation"]
    assert any("labelled recordings" in s for s in said)
    con = Console(record=True, width=200)
    print_certificate(rec, con)
    text = con.export_text()
    assert "detection on labelled recordings of this machine (3 normal, 3 anomalous" in text
    assert "AUC 1.000, pAUC 1.000 (standardised" in text and "anomalous 3/3" in text


def test_known_fault_recordings_via_calibration(calibrated, fault_dir):
    _, rec, *_ = calibrated
    known = rec["validation"]["known_faults"]
    assert set(known) == {"anomaly_cavitation", "anomaly_electrical-arc"}
    assert len(known["anomaly_cavitation"]["files"]) == 2 and len(known["anomaly_electrical-arc"]["files"]) == 1
    assert known["anomaly_cavitation"]["detection_rate"] > 0.5
    assert known["anomaly_cavitation"]["files_alarmed"] >= 1
    assert sorted(r["file"] for r in known["anomaly_cavitation"]["files"]) == sorted(
        str(p) for p in fault_dir.glob("anomaly_cavitation_*.flac"))


def test_validate_with_groups_by_folder(calibrated, model, tmp_path, fault_dir):
    _, rec, *_ = calibrated
    (tmp_path / "bearing").mkdir()
    shutil.copy(fault_dir / "anomaly_cavitation_00.flac", tmp_path / "bearing" / "rec1.flac")
    shutil.copy(fault_dir / "anomaly_cavitation_01.flac", tmp_path / "pump_cav_2026_01.flac")
    det = load_detector(model[0])
    res = validate_with(det, tmp_path, rec["threshold"]["threshold"], MOfN(3, 5))
    assert set(res) == {"bearing", "pump_cav"}
    assert res["bearing"]["detection_rate"] > 0.5


# --------------------------------------------------------------------------------------------------------------------
# Representativeness findings


def calibrate_array(x: np.ndarray, model_dir: Path, tmp_path: Path) -> list[dict]:
    path = tmp_path / "rec.flac"
    sf.write(path, x, SR, subtype="PCM_16")
    s = make_site(tmp_path / "sites", model_dir)
    return calibrate(s, CalibrationRequest(files=[path], force=True))["findings"]


def warnings_of(findings: list[dict]) -> str:
    return "\n".join(f["what"] for f in findings if f["level"] == "warning")


def test_normal_recording_is_not_called_quiet(calibrated):
    _, rec, *_ = calibrated
    text = warnings_of(rec["findings"])
    assert "quieter than the model's training audio" not in text
    assert "silence or dropouts" not in text


def test_quiet_recording_warned(model, tmp_path):
    x = simulate(pump(400), 300.0) * 0.05  # -26 dB: recorded at night, or with the gain down
    text = warnings_of(calibrate_array(x, model[0], tmp_path))
    assert "quieter than the model's training audio" in text
    assert "steady state" in text and "night" in text


def test_silence_warned(model, tmp_path):
    x = simulate(pump(401), 300.0)
    n = x.size
    for i in range(6):  # six dropouts of 5 % each: 30 % silence
        a = int(n * (i + 0.5) / 6.5)
        x[a: a + n // 20] = 0.0
    f = calibrate_array(x, model[0], tmp_path)
    w = [g["what"] for g in f if g["level"] == "warning" and "silence or dropouts" in g["what"]]
    assert len(w) == 1, warnings_of(f)
    share = float(w[0].split("%")[0])
    assert 25 <= share <= 35 and "20 dB or more below its typical level" in w[0]


def test_background_change_in_second_half_warned(model, tmp_path):
    x = np.concatenate([simulate(pump(402, background="quiet"), 150.0), simulate(pump(403), 150.0)])
    text = warnings_of(calibrate_array(x, model[0], tmp_path))
    assert "second half sounds different from the first" in text
    assert "changed operating state" in text


# --------------------------------------------------------------------------------------------------------------------
# Recalibration


@pytest.fixture(scope="module")
def normal_other_seed(root) -> Path:
    return write_audio(root / "audio" / "normal-300.flac", pump(300), 6.0)


@pytest.fixture(scope="module")
def bearing_audio(root) -> Path:
    return write_audio(root / "audio" / "bearing-outer-0.5.flac", pump(301, "bearing-outer", 0.5), 6.0)


def test_recalibration_of_normal_audio_is_adopted(calibrated, normal_other_seed, tmp_path):
    s = copy_site(calibrated[0], tmp_path)
    old = s.current_id()
    rec = recalibrate(s, CalibrationRequest(files=[normal_other_seed], force=True, keep_audio=True))
    assert rec["status"] == "adopted" and rec["kind"] == "recalibration"
    assert rec["shift_test"]["shifted"] is False and rec["shift_test"]["reasons"] == []
    assert rec["previous"] == old
    assert s.current_id() == rec["id"] != old
    assert s.calibration_ids() == [old, rec["id"]]
    assert (s.dir / "baseline" / rec["id"] / f"000_{normal_other_seed.name}").is_file()  # --keep-audio


def test_recalibration_on_a_developing_fault_is_refused(calibrated, bearing_audio, tmp_path):
    s = copy_site(calibrated[0], tmp_path)
    old = s.current_id()
    old_threshold = s.calibration()["threshold"]["threshold"]
    with pytest.raises(ShiftRefused) as e:
        recalibrate(s, CalibrationRequest(files=[bearing_audio], force=True))
    assert e.value.exit_code == 4
    msg = str(e.value)
    assert "refused" in msg and "the current threshold stays in force" in msg and "--accept-shift" in msg
    assert s.current_id() == old  # did NOT move
    assert s.calibration()["threshold"]["threshold"] == old_threshold
    ids = s.calibration_ids()
    assert len(ids) == 2 and ids[0] == old
    refused = s.calibration(ids[1])
    assert refused["status"] == "refused" and refused["previous"] == old
    assert refused["shift_test"]["shifted"] is True and refused["shift_test"]["reasons"]
    assert f"candidate kept as {ids[1]}" in msg

    rec = recalibrate(s, CalibrationRequest(files=[bearing_audio], force=True), accept_shift=True)
    assert rec["status"] == "adopted-with-shift"
    assert s.current_id() == rec["id"] and len(s.calibration_ids()) == 3
    assert s.calibration()["status"] == "adopted-with-shift"


def test_recalibrating_an_uncalibrated_site(site, normal_other_seed):
    with pytest.raises(SiteError, match="not calibrated yet"):
        recalibrate(site, CalibrationRequest(files=[normal_other_seed], force=True))
    assert site.calibration_ids() == []


# --------------------------------------------------------------------------------------------------------------------
# Due sites


def test_due_sites(calibrated, model, tmp_path, monkeypatch):
    s = copy_site(calibrated[0], tmp_path)
    store = SiteStore(s.dir.parent)
    assert due_sites(store) == []  # calibrated just now
    later = utc_now() + timedelta(days=31)
    monkeypatch.setattr(cal_mod, "utc_now", lambda: later)
    due = due_sites(store)
    assert [n for n, _ in due] == ["pump-3"]
    assert due[0][1] == pytest.approx(31.0, abs=0.05)
    assert due_sites(store, now=utc_now()) == []  # the `now` argument wins over the clock
    # another site with a longer interval is not due yet; an uncalibrated one is always due
    shutil.copytree(s.dir, s.dir.parent / "slow")
    cfg = store.site("slow").config()
    cfg.name, cfg.recalibration_days = "slow", 60
    store.site("slow").save_config(cfg)
    make_site(store.root, model[0], name="fresh")
    assert dict(due_sites(store)) == {"pump-3": pytest.approx(31.0, abs=0.05), "fresh": None}


# --------------------------------------------------------------------------------------------------------------------
# The site lock


def test_lock_blocks_a_concurrent_calibration(calibrated, cal_audio, normal_other_seed, tmp_path):
    s = copy_site(calibrated[0], tmp_path)
    before = s.calibration_ids()
    with s.lock("calibration"):
        with pytest.raises(SiteLockedError, match=r"is busy: calibration by pid \d+"):
            calibrate(s, CalibrationRequest(files=[cal_audio], force=True))
        with pytest.raises(SiteLockedError):
            recalibrate(s, CalibrationRequest(files=[normal_other_seed], force=True))
    assert s.calibration_ids() == before


def test_high_false_alarm_advice_depends_on_k():
    """At k = 5 (the maximum) the advice is a stricter rule, never "a larger k (up to 5)"."""
    from types import SimpleNamespace

    from anomaly.decision import MOfN
    from calibration.calibrate import threshold_findings

    def advice(k):
        rep = SimpleNamespace(k=k, false_alarms_per_day=12.0, extremal_index=0.5)
        [f] = threshold_findings(rep, MOfN(3, 5))
        return f.what

    assert "larger k (now 4, at most 5)" in advice(4.0) and "humwatch site set" in advice(4.0)
    assert "larger k" not in advice(5.0) and "already at its maximum 5" in advice(5.0)
    assert "stricter alarm rule than 3 of 5" in advice(5.0)
    assert threshold_findings(SimpleNamespace(k=4.0, false_alarms_per_day=0.5, extremal_index=1.0), MOfN(3, 5)) == []


def test_report_shows_labelled_detection_and_what_the_injected_faults_are(calibrated, model, labelled_dir):
    from calibration.report.html import _calibration_section

    site, rec, *_ = calibrated
    rec = json.loads(json.dumps(rec))
    rec["validation"]["injected_about"] = injection_about("toycar")
    rec["validation"]["labelled"] = validate_labelled(load_detector(model[0]), labelled_dir,
                                                      rec["threshold"]["threshold"], MOfN(3, 5))
    page = _calibration_section(site, rec, {rec["id"]: rec}, [])
    assert "Simulated pump faults (share of patches over the threshold)" in page
    assert "id='injected-warning'" in page and "is not one the simulator models" in page
    assert "detection on labelled recordings of this machine" in page and "id='labelled'" in page
