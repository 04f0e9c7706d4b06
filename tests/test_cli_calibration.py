"""``humwatch site ...`` (create, list, show, history, calibrate, recalibrate, schedule; and the root aliases
``calibrate / recalibrate / schedule``) end to end on simulated audio (typer's CliRunner)."""

from __future__ import annotations

import builtins
import ctypes.util
import json
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import WIDE, assert_one_error_line, invoke
from typer.testing import CliRunner

from anomaly.errors import EXIT_ERROR
from anomaly.simulate import SimConfig, write_audio
from calibration.store import SiteStore
from humwatch_cli import app

FAST = ("--epochs", "2", "--samples-per-epoch", "512", "--threads", "1")




def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return [ln for ln in result.output.splitlines() if ln.startswith("error:")]




def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output




def pump(seed: int, fault: str = "none", severity: float = 0.0) -> SimConfig:
    return SimConfig("pump", fault, severity, "factory", seed)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clical")


@pytest.fixture(scope="module")
def model(root) -> Path:
    for s in (100, 101, 102):
        write_audio(root / "train" / f"normal_{s}.flac", pump(s), 1.0)
    ok(invoke("train", "--normal", root / "train", "--out", root / "model", *FAST))
    return root / "model"


@pytest.fixture(scope="module")
def cal_audio(root) -> Path:
    return write_audio(root / "cal" / "normal-200.flac", pump(200), 6.0)


@pytest.fixture(scope="module")
def bearing_audio(root) -> Path:
    return write_audio(root / "recal" / "bearing.flac", pump(301, "bearing-outer", 0.5), 6.0)


@pytest.fixture(scope="module")
def calibrated(root, model, cal_audio):
    """``site create pump-3`` + ``calibrate --force --inject-faults`` in a module-wide store (read-only)."""
    sites = root / "sites"
    ok(invoke("site", "create", "pump-3", "--model", model, "--machine", "pump", "--sites-dir", sites))
    r = invoke("calibrate", "--site", "pump-3", "--from", cal_audio.parent, "--force", "--inject-faults",
               "--sites-dir", sites)
    ok(r)
    return sites, r


@pytest.fixture
def sites_copy(calibrated, tmp_path) -> Path:
    """A private copy of the calibrated store."""
    return Path(shutil.copytree(calibrated[0], tmp_path / "sites"))


# --------------------------------------------------------------------------------------------------------------------
# site create / list


def test_site_create_and_list(model, tmp_path):
    sites = tmp_path / "sites"
    out = ok(invoke("site", "create", "pump-3", "--model", model, "--machine", "pump", "--k", "3.5", "--alarm",
                    "2/4", "--interval-days", "14", "--sites-dir", sites))
    assert "created site pump-3" in out and "humwatch site calibrate pump-3" in out
    cfg = SiteStore(sites).site("pump-3").config()
    assert (cfg.k, cfg.alarm_m, cfg.alarm_n, cfg.recalibration_days, cfg.machine) == (3.5, 2, 4, 14, "pump")
    assert Path(cfg.model_path) == model.resolve()
    out = ok(invoke("site", "list", "--sites-dir", sites))
    assert "pump-3" in out and "not calibrated" in out and "now" in out


def test_site_list_of_the_default_store_before_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./sites, the default store, is created with the first site
    monkeypatch.delenv("HUMWATCH_SITES", raising=False)
    out = ok(invoke("site", "list"))
    assert "no sites in sites" in out and "humwatch site create" in out
    (tmp_path / "sites").mkdir()
    assert "no sites in" in ok(invoke("site", "list", "--sites-dir", tmp_path / "sites"))  # named, empty


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "no such site store"),
    (lambda p: p.write_text("x"), "not a folder"),
])
def test_site_list_of_a_named_store_that_is_not_a_folder_is_an_error(tmp_path, make, needle):
    """A --sites-dir (or HUMWATCH_SITES) that does not exist or is a file is most likely a typo: one error line,
    exit 1, not 'no sites'."""
    bad = tmp_path / "sites.toml"
    make(bad)
    line = assert_one_error_line(invoke("site", "list", "--sites-dir", bad), needle, str(bad),
                                 exit_code=EXIT_ERROR)
    assert "no sites" not in line
    r = CliRunner().invoke(app, ["site", "list"], env={**WIDE, "HUMWATCH_SITES": str(bad)})
    assert_one_error_line(r, needle, str(bad), exit_code=EXIT_ERROR)


def test_sites_dir_from_env(model, tmp_path):
    r = CliRunner().invoke(app, ["site", "create", "envsite", "--model", str(model)],
                           env={**WIDE, "HUMWATCH_SITES": str(tmp_path / "env-sites")})
    ok(r)
    assert (tmp_path / "env-sites" / "envsite" / "site.toml").is_file()


@pytest.mark.parametrize("name", ["../etc", "<script>", "/abs", "Pump", "a b", "[bold]x"])
def test_site_create_bad_name(model, tmp_path, name):
    line = assert_one_error_line(invoke("site", "create", name, "--model", model, "--sites-dir", tmp_path / "s"),
                                 "invalid site name", repr(name))
    assert line.startswith("error: invalid site name")
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("site.toml"))
    assert not (tmp_path / "etc").exists()


def test_site_create_missing_model(tmp_path):
    assert_one_error_line(invoke("site", "create", "p", "--model", tmp_path / "nomodel", "--sites-dir", tmp_path),
                          "model directory not found", "nomodel")
    assert not (tmp_path / "p").exists()


def test_site_create_duplicate(model, tmp_path):
    ok(invoke("site", "create", "p", "--model", model, "--sites-dir", tmp_path))
    assert_one_error_line(invoke("site", "create", "p", "--model", model, "--sites-dir", tmp_path),
                          "site 'p' already exists")


@pytest.mark.parametrize("args, needle", [(("--alarm", "3-5"), "--alarm must look like 3/5"),
                                          (("--alarm", "6/5"), "alarm rule needs"),
                                          (("--k", "6"), "k must be between 3 and 5")])
def test_site_create_bad_settings(model, tmp_path, args, needle):
    assert_one_error_line(invoke("site", "create", "p", "--model", model, *args, "--sites-dir", tmp_path), needle)


def test_markup_in_free_text_settings(model, tmp_path):
    ok(invoke("site", "create", "p", "--model", model, "--machine", "[/] pump [red]", "--sites-dir", tmp_path))
    assert "[/] pump [red]" in ok(invoke("site", "list", "--sites-dir", tmp_path))
    assert "[/] pump [red]" in ok(invoke("site", "show", "p", "--sites-dir", tmp_path))


def test_emoji_in_free_text_settings(model, tmp_path):
    ok(invoke("site", "create", "p", "--model", model, "--microphone", "mic 🎤", "--sites-dir", tmp_path))
    assert "p" in ok(invoke("site", "list", "--sites-dir", tmp_path))


# --------------------------------------------------------------------------------------------------------------------
# site set


def test_site_set_changes_validates_and_records(sites_copy, cal_audio):
    site = SiteStore(sites_copy).site("pump-3")
    before = site.calibration()
    out = ok(invoke("site", "set", "pump-3", "--k", "5", "--alarm", "4/8", "--machine", "toy car", "--source",
                    str(cal_audio.parent), "--sites-dir", sites_copy))
    assert "k: 4.0 → 5.0; takes effect at the next calibration" in out
    assert "alarm: 'mean/120' → '4/8'; takes effect at the next calibration" in out
    assert "machine: 'pump' → 'toy car'; takes effect now" in out
    assert "source: '' →" in out and "humwatch site schedule" in out
    assert "next: humwatch site recalibrate pump-3" in out
    cfg = site.config()
    assert (cfg.k, cfg.alarm_m, cfg.alarm_n, cfg.machine, cfg.source) == (5.0, 4, 8, "toy car", str(cal_audio.parent))
    # the calibration in force is untouched, and monitoring keeps its rule until the next calibration
    assert site.calibration() == before
    from calibration.calibrate import calibration_rule

    assert calibration_rule(site.calibration()).spelling == "mean/120"
    hist = ok(invoke("site", "history", "pump-3", "--sites-dir", sites_copy))
    assert "alarm" in hist and "'4/8'" in hist and "toy car" in hist
    [entry] = site.settings_history()
    assert entry["changes"]["k"] == {"old": 4.0, "new": 5.0} and "next calibration" in entry["effects"]["k"]
    # the next calibration uses the new k and rule
    ok(invoke("site", "calibrate", "pump-3", "--from", cal_audio, "--force", "--sites-dir", sites_copy))
    th = site.calibration()["threshold"]
    assert (th["k"], th["alarm_m"], th["alarm_n"]) == (5.0, 4, 8)
    assert "nothing changed" in ok(invoke("site", "set", "pump-3", "--k", "5", "--sites-dir", sites_copy))


@pytest.mark.parametrize("args, needle", [(("--k", "7"), "k must be between 3 and 5"),
                                          (("--alarm", "6/5"), "alarm rule needs"),
                                          (("--alarm", "often"), "--alarm must look like 3/5"),
                                          (("--source", "/rec\n* * * * * touch x"), "--source must be one line"),
                                          (("--source", "/rec/%d"), "'%'"),
                                          (("--machine", "x" * 300), "at most 200 characters"),
                                          ((), "nothing to set")])
def test_site_set_refuses_bad_values_and_writes_nothing(sites_copy, args, needle):
    site = SiteStore(sites_copy).site("pump-3")
    toml = site.toml_path.read_text()
    assert_one_error_line(invoke("site", "set", "pump-3", *args, "--sites-dir", sites_copy), needle)
    assert site.toml_path.read_text() == toml and site.settings_history() == []


def test_site_set_unknown_site(tmp_path):
    assert_one_error_line(invoke("site", "set", "nope", "--k", "4", "--sites-dir", tmp_path), "no site 'nope'")


# --------------------------------------------------------------------------------------------------------------------
# calibrate


def test_calibrate_prints_the_certificate(calibrated):
    sites, r = calibrated
    out = r.output
    assert "humwatch calibration certificate" in out
    assert "threshold: " in out and "= mean " in out
    assert "expected false alarms" in out and "per day" in out
    assert "held-out check" in out
    assert "[FORCED below the minimum of 30 min]" in out
    assert "injected fault" in out and "cavitation" in out and "lowest detected" in out
    site = SiteStore(sites).site("pump-3")
    rec = site.calibration()
    assert f"stored as {site.calibrations_dir / (rec['id'] + '.json')} (current)" in out
    assert f"{rec['threshold']['threshold']:.4g}" in out
    assert rec["audio"]["forced"] is True and "injected" in rec["validation"]


def test_calibrate_too_short_without_force(calibrated, cal_audio):
    sites, _ = calibrated
    before = SiteStore(sites).site("pump-3").calibration_ids()
    r = invoke("calibrate", "--site", "pump-3", "--from", cal_audio, "--sites-dir", sites)
    assert r.exit_code == 1
    assert_one_error_line(r, "only 6.0 min of audio", "at least 30 min", "--force", "--min-minutes",
                          "marked on the certificate")
    assert SiteStore(sites).site("pump-3").calibration_ids() == before


def test_calibrate_min_minutes_option(sites_copy, cal_audio):
    r = invoke("calibrate", "--site", "pump-3", "--from", cal_audio, "--min-minutes", "10", "--sites-dir", sites_copy)
    assert_one_error_line(r, "at least 10 min")
    # a lowered minimum is accepted, and marked on the certificate like --force
    out = ok(invoke("calibrate", "--site", "pump-3", "--from", cal_audio, "--min-minutes", "5", "--sites-dir",
                    sites_copy))
    assert "[--min-minutes 5, below the 30 min default]" in out and "FORCED" not in out
    assert SiteStore(sites_copy).site("pump-3").calibration()["audio"]["min_minutes"] == 5


def test_calibrate_unknown_site(tmp_path, cal_audio):
    assert_one_error_line(invoke("calibrate", "--site", "nosuch", "--from", cal_audio, "--force", "--sites-dir",
                                 tmp_path), "no site 'nosuch'", "humwatch site create nosuch")
    assert not (tmp_path / "nosuch").exists()


def test_calibrate_bad_site_name(tmp_path, cal_audio):
    assert_one_error_line(invoke("calibrate", "--site", "<script>", "--from", cal_audio, "--sites-dir", tmp_path),
                          "invalid site name '<script>'")


def test_calibrate_needs_from_or_mic(sites_copy, cal_audio):
    assert_one_error_line(invoke("calibrate", "--site", "pump-3", "--sites-dir", sites_copy),
                          "--from FILES/DIRS", "--mic", "one of the two")
    assert_one_error_line(invoke("calibrate", "--site", "pump-3", "--from", cal_audio, "--mic", "--sites-dir",
                                 sites_copy), "one of the two")


def test_calibrate_missing_audio(sites_copy, tmp_path):
    assert_one_error_line(invoke("calibrate", "--site", "pump-3", "--from", tmp_path / "nothing.flac", "--force",
                                 "--sites-dir", sites_copy), "not found", "nothing.flac")


def test_calibrate_mic_without_portaudio(sites_copy, monkeypatch):
    if ctypes.util.find_library("portaudio"):  # the library is here: make `import sounddevice` fail as without it
        real_import = builtins.__import__

        def fake_import(name, *a, **kw):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return real_import(name, *a, **kw)

        monkeypatch.delitem(__import__("sys").modules, "sounddevice", raising=False)
        monkeypatch.setattr(builtins, "__import__", fake_import)
    r = invoke("calibrate", "--site", "pump-3", "--mic", "--minutes", "1", "--sites-dir", sites_copy)
    assert r.exit_code == 1
    errs = error_lines(r)
    assert len(errs) == 1, r.output
    assert "libportaudio2" in errs[0] and "--from" in errs[0]
    assert not list((sites_copy / "pump-3").glob("baseline/*.flac"))


def test_calibrate_mic_without_sounddevice_package(sites_copy, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sounddevice", None)  # import raises ModuleNotFoundError
    r = invoke("calibrate", "--site", "pump-3", "--mic", "--minutes", "1", "--sites-dir", sites_copy)
    assert r.exit_code == 1
    assert len(error_lines(r)) == 1, r.output


# --------------------------------------------------------------------------------------------------------------------
# site show / history / set-model


def test_site_show(calibrated):
    sites, _ = calibrated
    out = ok(invoke("site", "show", "pump-3", "--sites-dir", sites))
    assert 'name = "pump-3"' in out and 'machine = "pump"' in out
    assert "humwatch calibration certificate" in out and "held-out check" in out
    assert "not calibrated" not in out


def test_site_show_uncalibrated_and_missing(model, tmp_path):
    ok(invoke("site", "create", "p", "--model", model, "--sites-dir", tmp_path))
    out = ok(invoke("site", "show", "p", "--sites-dir", tmp_path))
    assert "not calibrated" in out and "humwatch site calibrate p" in out
    assert_one_error_line(invoke("site", "show", "nosuch", "--sites-dir", tmp_path), "no site 'nosuch'")
    assert_one_error_line(invoke("site", "history", "nosuch", "--sites-dir", tmp_path), "no site 'nosuch'")
    assert "has no calibrations yet" in ok(invoke("site", "history", "p", "--sites-dir", tmp_path))


def test_site_set_model_clears_the_calibration(sites_copy, model, tmp_path):
    other = Path(shutil.copytree(model, tmp_path / "model2"))
    assert "not calibrated" not in ok(invoke("site", "list", "--sites-dir", sites_copy))
    out = ok(invoke("site", "set-model", "pump-3", "--model", other, "--sites-dir", sites_copy))
    assert "calibrate it again" in out
    site = SiteStore(sites_copy).site("pump-3")
    assert site.current_id() is None and len(site.calibration_ids()) == 1  # history kept
    assert Path(site.config().model_path) == other.resolve()
    assert "not calibrated" in ok(invoke("site", "show", "pump-3", "--sites-dir", sites_copy))
    assert "not calibrated" in ok(invoke("site", "list", "--sites-dir", sites_copy))
    assert_one_error_line(invoke("site", "set-model", "pump-3", "--model", tmp_path / "nomodel", "--sites-dir",
                                 sites_copy), "model directory not found")


# --------------------------------------------------------------------------------------------------------------------
# recalibrate


def test_recalibrate_refused_then_history(sites_copy, bearing_audio):
    site = SiteStore(sites_copy).site("pump-3")
    old = site.current_id()
    r = invoke("recalibrate", "--site", "pump-3", "--from", bearing_audio, "--force", "--sites-dir", sites_copy)
    line = assert_one_error_line(r, "refused", "the current threshold stays in force", "--accept-shift",
                                 exit_code=4)
    assert "inspect the machine" in line
    assert site.current_id() == old
    out = ok(invoke("site", "history", "pump-3", "--sites-dir", sites_copy))
    rows = [ln for ln in out.splitlines() if ln.startswith("│")]
    assert len(rows) == 2, out
    assert "calibration" in rows[0] and "adopted" in rows[0] and "*" in rows[0]
    assert "recalibration" in rows[1] and "refused" in rows[1] and "*" not in rows[1]
    r = invoke("recalibrate", "--site", "pump-3", "--from", bearing_audio, "--force", "--accept-shift",
               "--sites-dir", sites_copy)
    out = ok(r)
    assert "shift detected" in out and "adopted-with-shift" in out
    assert site.current_id() != old and site.calibration()["status"] == "adopted-with-shift"


def test_site_group_spellings_do_what_the_root_aliases_do(sites_copy, bearing_audio, cal_audio, tmp_path):
    """`site recalibrate NAME`, `site calibrate NAME`, `site schedule NAME`: the command tree's spellings of the
    earlier root commands (which stay as hidden aliases, used by the other tests here)."""
    r = invoke("site", "recalibrate", "pump-3", "--from", bearing_audio, "--force", "--sites-dir", sites_copy)
    assert_one_error_line(r, "refused", "the current threshold stays in force", exit_code=4)
    out = ok(invoke("site", "calibrate", "pump-3", "--from", cal_audio.parent, "--force", "--sites-dir", sites_copy))
    assert "expected false alarms" in out and "(current)" in out
    ok(invoke("site", "schedule", "pump-3", "--emit", "cron", "--out", tmp_path, "--sites-dir", sites_copy))
    assert "site recalibrate pump-3" in (tmp_path / "humwatch-pump-3.cron").read_text()
    assert_one_error_line(invoke("site", "recalibrate", "--sites-dir", sites_copy), "or --due", "one of the two")


@pytest.mark.parametrize("args", [("--site", "pump-3", "--due"), ()])
def test_recalibrate_site_xor_due(sites_copy, args):
    assert_one_error_line(invoke("recalibrate", *args, "--sites-dir", sites_copy), "--site NAME or --due",
                          "one of the two")


def test_recalibrate_uncalibrated_site(model, tmp_path, bearing_audio):
    ok(invoke("site", "create", "p", "--model", model, "--sites-dir", tmp_path))
    assert_one_error_line(invoke("recalibrate", "--site", "p", "--from", bearing_audio, "--force", "--sites-dir",
                                 tmp_path), "not calibrated yet")


def test_recalibrate_due_skips_sites_without_source(sites_copy, model):
    ok(invoke("site", "create", "fresh", "--model", model, "--sites-dir", sites_copy))
    out = ok(invoke("recalibrate", "--due", "--sites-dir", sites_copy))
    assert "fresh" in out and "never calibrated" in out and "calibrate it first" in out
    assert "pump-3" not in out  # calibrated just now: not due


def test_recalibrate_while_locked(sites_copy, bearing_audio):
    site = SiteStore(sites_copy).site("pump-3")
    with site.lock("calibration"):
        r = invoke("recalibrate", "--site", "pump-3", "--from", bearing_audio, "--force", "--sites-dir", sites_copy)
    assert_one_error_line(r, "is busy", "calibration by pid", exit_code=75)


# --------------------------------------------------------------------------------------------------------------------
# schedule


def test_schedule_cron(sites_copy, tmp_path):
    out = ok(invoke("schedule", "--site", "pump-3", "--emit", "cron", "--out", tmp_path / "deploy", "--sites-dir",
                    sites_copy))
    f = tmp_path / "deploy" / "humwatch-pump-3.cron"
    assert f"wrote {f}" in out and "crontab" in out
    text = f.read_text()
    line = next(ln for ln in text.splitlines() if not ln.startswith("#"))
    assert line.startswith("0 3 1 * * ")
    assert "site recalibrate pump-3" in line
    assert f"--sites-dir {sites_copy.resolve()}" in line
    assert "recalibration.log" in line


def test_schedule_systemd(sites_copy, tmp_path):
    ok(invoke("schedule", "--site", "pump-3", "--emit", "systemd", "--out", tmp_path, "--sites-dir", sites_copy))
    service = (tmp_path / "humwatch-recalibrate-pump-3.service").read_text()
    timer = (tmp_path / "humwatch-recalibrate-pump-3.timer").read_text()
    assert "Type=oneshot" in service and '"site" "recalibrate" "pump-3"' in service
    assert "OnCalendar=monthly" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer


def test_schedule_bad_emit_and_site(sites_copy, tmp_path):
    assert_one_error_line(invoke("schedule", "--site", "pump-3", "--emit", "foo", "--out", tmp_path, "--sites-dir",
                                 sites_copy), "--emit must be cron or systemd", "'foo'")
    assert_one_error_line(invoke("schedule", "--site", "nosuch", "--out", tmp_path, "--sites-dir", sites_copy),
                          "no site 'nosuch'")
    assert list(tmp_path.iterdir()) == [sites_copy]


def test_scheduled_command_runs_for_a_site_with_a_source(model, tmp_path, cal_audio):
    sites = tmp_path / "sites"
    ok(invoke("site", "create", "p", "--model", model, "--source", cal_audio.parent, "--sites-dir", sites))
    ok(invoke("schedule", "--site", "p", "--emit", "cron", "--out", tmp_path, "--sites-dir", sites))
    line = next(ln for ln in (tmp_path / "humwatch-p.cron").read_text().splitlines() if ln.startswith("0 3"))
    argv = shlex.split(line.split(" >> ")[0])[6:]  # after "0 3 1 * * /path/to/humwatch"
    r = invoke(*argv)
    assert "give the audio with --from" not in r.output, r.output


# --------------------------------------------------------------------------------------------------------------------
# The acceptance test (slow): 40 min calibration, 2 h of further normal audio, cavitation at severity 0.5


@pytest.mark.slow
def test_acceptance(tmp_path):
    import numpy as np

    from anomaly.detectors import load_detector, score_file
    from calibration.calibrate import calibration_rule

    write_audio(tmp_path / "train" / "normal.flac", pump(1), 6.0)
    # like `humwatch train`'s defaults, with fewer epochs
    ok(invoke("train", "--normal", tmp_path / "train", "--out", tmp_path / "model", "--epochs", "12", "--threads",
              "1"))
    write_audio(tmp_path / "calibration" / "pump-normal-40min.flac", pump(2), 40.0)
    sites = tmp_path / "sites"
    ok(invoke("site", "create", "pump-3", "--model", tmp_path / "model", "--machine", "pump", "--sites-dir", sites))
    r = invoke("calibrate", "--site", "pump-3", "--from", tmp_path / "calibration", "--inject-faults",
               "--sites-dir", sites)
    out = ok(r)
    assert "expected false alarms" in out and "FORCED" not in out
    rec = SiteStore(sites).site("pump-3").calibration()
    th = rec["threshold"]

    later = write_audio(tmp_path / "later" / "normal-2h.flac", pump(3), 120.0)
    _, scores, _ = score_file(load_detector(tmp_path / "model"), later)
    over = scores > th["threshold"]
    onsets = int(calibration_rule(rec).onsets(scores, th["threshold"]).size)  # the rule the certificate is for
    observed_per_day = onsets / (scores.size * 0.96 / 86400.0)
    predicted = th["false_alarms_per_day"]
    summary = json.dumps({"predicted_per_day": predicted, "ci": th["false_alarms_per_day_ci"],
                          "observed_per_day": observed_per_day, "onsets": onsets,
                          "observed_exceedance": float(np.mean(over)), "predicted_exceedance": th["exceedance"]})
    assert observed_per_day <= 3 * predicted, summary  # within x3, or conservative
    inj = rec["validation"]["injected"]
    assert inj["cavitation"]["lowest_severity_detected"] is not None, inj["cavitation"]
    assert inj["cavitation"]["lowest_severity_detected"] <= 0.5, inj["cavitation"]
