"""The ``humwatch`` command line: in-process with typer's CliRunner, plus one real subprocess for start-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from anomaly import __version__
from humwatch_cli import app

SR = 16000
WIDE = {"COLUMNS": "250"}  # a wide terminal, so table cells are never cut


def sine(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env or WIDE)


def assert_one_error_line(result, *needles: str, any_failure: bool = False) -> str:
    assert result.exit_code != 0 if any_failure else result.exit_code == 1, result.output
    out = result.output
    assert "Traceback" not in out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for n in needles:
        assert n in lines[0]
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------------------------------------------------
# Real subprocess: installed entry point and start-up cost


def test_installed_script_help_version_and_no_torch_at_import():
    exe = Path(sys.executable).with_name("humwatch")
    if not exe.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "info" in r.stdout and "simulate" in r.stdout
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"humwatch {__version__}"

    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import humwatch_cli"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    modules = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert "humwatch_cli" in modules and "typer" in modules  # the parse really saw the module list
    heavy = sorted(m for m in modules if m.split(".")[0] in {"torch", "scipy", "sklearn", "pandas", "soundfile",
                                                             "tensorflow", "ai_edge_litert", "keras", "tf_keras",
                                                             "paho", "ray", "pyarrow"})
    assert heavy == [], f"`import humwatch_cli` pulls in heavy modules: {heavy[:10]}"


def test_help_is_one_command_tree_grouped_by_task():
    out = invoke("--help").output
    panels = [ln.strip("╭─ ").split(" ─")[0] for ln in out.splitlines() if ln.startswith("╭─")]
    assert panels == ["Options", "Start here", "Data", "Model", "Site", "Firmware", "Fleet"], panels
    cells = [ln.split("│")[1].strip() for ln in out.splitlines() if ln.startswith("│ ")]
    commands = {c.split()[0] for c in cells if c and not c.startswith("-")}
    assert {"demo", "simulate", "info", "train", "score", "evaluate", "classify", "site", "monitor", "report",
            "export", "ingest", "fleet"} <= commands
    assert not {"calibrate", "recalibrate", "schedule"} & commands  # hidden aliases of `site calibrate` etc.
    site = invoke("site", "--help").output
    for sub in ("create", "list", "show", "history", "set-model", "set-classifier", "calibrate", "recalibrate",
                "schedule"):
        assert f"│ {sub} " in site, sub
    assert invoke("calibrate", "--help").exit_code == 0  # the earlier spelling still works


def test_version_and_help_in_process():
    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"humwatch {__version__}"
    r = invoke("info", "--help")
    assert r.exit_code == 0 and "WAV/FLAC" in r.output


# --------------------------------------------------------------------------------------------------------------------
# info


def table_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for ln in output.splitlines():
        if ln.startswith("│"):
            cells = [c.strip() for c in ln.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def test_info_prints_a_row_per_file(in_tmp):
    sf.write("tone.wav", sine(1000.0, 2.0), SR, subtype="PCM_16")
    sf.write("st.flac", np.stack([sine(3000.0, 3.0), sine(3000.0, 3.0)], 1), SR)
    r = invoke("info", "tone.wav", "st.flac")
    assert r.exit_code == 0, r.output
    rows = table_rows(r.output)
    assert set(rows) == {"tone.wav", "st.flac"}
    # file, rate, ch, seconds, patches, level dBFS, clipped, loudest mel band
    assert rows["tone.wav"] == ["tone.wav", "16000", "1", "2.0", "2", "-9.0", "0.00%", "972 Hz"]
    assert rows["st.flac"] == ["st.flac", "16000", "2", "3.0", "3", "-9.0", "0.00%", "2938 Hz"]


def test_info_on_directory(in_tmp):
    (in_tmp / "d" / "e").mkdir(parents=True)
    sf.write("d/a.wav", sine(500.0, 1.0), SR)
    sf.write("d/e/b.flac", sine(500.0, 1.0), SR)
    r = invoke("info", "d")
    assert r.exit_code == 0, r.output
    assert set(table_rows(r.output)) == {"d/a.wav", "d/e/b.flac"}


def test_info_level_does_not_depend_on_sample_rate(in_tmp):
    sf.write("t44.wav", sine(1000.0, 2.0, 44100), 44100, subtype="PCM_16")
    r = invoke("info", "t44.wav")
    assert r.exit_code == 0, r.output
    assert table_rows(r.output)["t44.wav"][5] == "-9.0"  # a 0.5-peak sine is -9.0 dBFS at any rate


def test_info_missing_file(in_tmp):
    assert_one_error_line(invoke("info", "nope.wav"), "not found", "nope.wav")


def test_info_corrupt_file(in_tmp):
    Path("bad.wav").write_text("not audio at all\n" * 50)
    assert_one_error_line(invoke("info", "bad.wav"), "bad.wav", "not a readable WAV/FLAC")


def test_info_too_short_file(in_tmp):
    sf.write("short.wav", sine(1000.0, 0.5), SR)
    assert_one_error_line(invoke("info", "short.wav"), "short.wav", "shorter than one patch")


def test_info_warns_on_silence_in_one_line(in_tmp):
    sf.write("mute.wav", np.zeros(2 * SR, np.float32), SR)
    r = invoke("info", "mute.wav")
    assert r.exit_code == 0, r.output
    warn = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "zero" in warn[0] and "mute.wav" in warn[0]
    assert "Traceback" not in r.output and "mute.wav" in table_rows(r.output)


def test_error_stays_one_line_when_piped(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 40) / "missing-recording.wav"
    assert_one_error_line(invoke("info", str(deep), env={"COLUMNS": None}), str(deep))


# --------------------------------------------------------------------------------------------------------------------
# simulate (anomaly/simulate/)


def test_simulate_writes_16k_mono_flac(in_tmp):
    pytest.importorskip("anomaly.simulate")
    r = invoke("simulate", "--machine", "pump", "--fault", "cavitation", "--minutes", "0.05", "--seed", "1",
               "--out", "x.flac")
    assert r.exit_code == 0, r.output
    info = sf.info("x.flac")
    assert info.format == "FLAC" and info.samplerate == SR and info.channels == 1
    assert info.duration == pytest.approx(3.0, abs=0.01)
    y, _ = sf.read("x.flac", dtype="float32")
    assert np.isfinite(y).all() and 0 < np.abs(y).max() <= 1.0 and y.std() > 1e-4
    assert "wrote x.flac" in r.output


def test_simulate_unknown_machine(in_tmp):
    pytest.importorskip("anomaly.simulate")
    r = invoke("simulate", "--machine", "toaster", "--out", "y.flac")
    line = assert_one_error_line(r, "toaster", any_failure=True)
    assert "pump" in line  # says what is allowed
    assert not Path("y.flac").exists()


def _commands(cmd, path=()):
    """Every visible command of the tree, as argument lists."""
    yield list(path)
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, (*path, name))


def test_help_reads_at_80_columns(monkeypatch, capsys):
    """Every command's --help at 80 columns: no cut option names or words, no value column wider than it needs, and
    no text eaten by markup (`--sites-dir` read "Site store root ." when "[default: ./sites]" vanished)."""
    from humwatch_cli import command

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    root = command()
    checked = 0
    for args in _commands(root):
        with pytest.raises(SystemExit) as e:
            command().main([*args, "--help"], prog_name="humwatch")
        assert e.value.code == 0, args
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert max(len(x) for x in lines) <= 80, (args, max(lines, key=len))
        assert "…" not in out, (args, [x for x in lines if "…" in x])
        stray = [x for x in lines if re.search(r"\w [.,;:](\s|$)", x)]
        assert not stray, (args, stray)
        assert "<bool>" not in out and "<list[" not in out, args
        checked += 1
    assert checked >= 20
    out = subprocess.run([sys.executable, "-m", "humwatch_cli", "site", "calibrate", "--help"], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "80"}, cwd=Path(__file__).resolve().parents[1]).stdout
    assert "Site store root [default: ./sites]." in out and "--inject-faults" in out and "--no-inject" not in out
