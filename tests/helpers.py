"""Helpers for CLI tests (CliRunner on the real `humwatch` app)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from humwatch_cli import app

WIDE = {"COLUMNS": "250"}  # a wide terminal, so table cells are never cut


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env or WIDE)


def assert_one_error_line(result, *needles: str, exit_code: int | None = None) -> str:
    """The command failed (with ``exit_code`` if given) and printed exactly one line, ``error: ...``, containing
    every needle, and no traceback."""
    out = result.output
    assert result.exit_code != 0, out
    if exit_code is not None:
        assert result.exit_code == exit_code, out
    assert "Traceback" not in out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


GCC = shutil.which("gcc")
C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def build_c(include_dir: Path, sources, exe: Path) -> Path:
    """Compile C sources (a reference implementation and its test harness) against the generated headers in
    ``include_dir``, warnings as errors; assert that it builds."""
    r = subprocess.run([GCC, *C_FLAGS, f"-I{include_dir}", *map(str, sources), "-lm", "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def header_birth_payload(path: Path) -> bytes:
    """The bytes a device publishes as its birth message: the ``HW_TELEMETRY_BIRTH`` string of a generated
    ``humwatch_telemetry.h``."""
    line = next(ln for ln in Path(path).read_text().splitlines() if ln.startswith("#define HW_TELEMETRY_BIRTH "))
    return json.loads(line.split(" ", 2)[2]).encode()


def header_birth(path: Path):
    """The birth message of a generated ``humwatch_telemetry.h``, parsed
    (:meth:`calibration.fleet.telemetry.Birth.from_json`)."""
    from calibration.fleet.telemetry import Birth

    return Birth.from_json(header_birth_payload(path))


def valid_record(threshold: float = 1.0, **changes) -> dict:
    """A complete calibration record (as calibration.calibrate writes one, before the store adds id and format):
    what the store's checked reader accepts."""
    rec = {
        "kind": "calibration", "status": "pending", "created_utc": "2026-01-01T00:00:00Z", "site": "pump-3",
        "previous": None,
        "model": {"path": "/models/ae", "hash": "0123456789abcdef", "detector": "ae",
                  "feature_params_hash": "4cdef92d4437da2e", "feature_params": {}},
        "audio": {"files": ["/audio/normal.flac"], "file_sha256": ["0" * 64], "minutes": 31.0, "patches": 1937,
                  "threshold_patches": 1300, "check_patches": 637, "clipped_share": 0.0, "forced": False},
        "threshold": {"k": 4.0, "threshold": threshold, "mean": threshold / 2, "std": threshold / 8,
                      "n_patches": 1300, "robust_threshold": threshold, "quantile_999": threshold * 0.9,
                      "max_score": threshold * 0.95, "exceedance": 1e-4, "exceedance_ci": [1e-5, 1e-3],
                      "exceedance_method": "test", "false_alarms_per_day": 0.5, "false_alarms_per_day_ci": [0.1, 2.0],
                      "extremal_index": 1.0, "alarm_cluster_share": 0.1, "cluster_level": 1.0, "alarm_m": 3,
                      "alarm_n": 5, "tail": None},
        "check": {"patches": 637, "observed_exceedance": 0.0, "predicted_exceedance": 1e-4, "observed_alarms": 0,
                  "observed_alarms_per_day": 0.0},
        "findings": [{"level": "ok", "what": "fine"}],
        "baseline": {"score_sample": [threshold / 2, threshold / 3], "band_error_mean": None, "level_median": -3.0,
                     "score_quantiles": {"0.5": threshold / 2}},
        "validation": {},
    }
    for key, value in changes.items():
        rec[key] = value
    return rec


def small_model(directory: Path, *, background: str = "factory", seed: int = 300, recordings: int = 3,
                seconds: float = 60.0, epochs: int = 2, samples_per_epoch: int = 512, fingerprint: bool = True) -> Path:
    """A small autoencoder trained quickly on one thread: ``recordings`` simulated healthy pumps (unit seeds from
    ``seed``) of ``seconds`` each in ``background``; saved (with an empty training-data fingerprint unless
    ``fingerprint`` is False) as ``directory/model``, whose path is returned."""
    from anomaly.detectors import fingerprint_files, fit_detector
    from anomaly.features import DEFAULT_PARAMS, log_mel
    from anomaly.simulate import SimConfig, simulate
    from anomaly.train import TrainConfig

    recs = [log_mel(simulate(SimConfig("pump", "none", 0, background, seed=seed + i), seconds), DEFAULT_PARAMS)
            for i in range(recordings)]
    det = fit_detector("ae", recs, train_config=TrainConfig(threads=1, epochs=epochs,
                                                            samples_per_epoch=samples_per_epoch))
    return det.save(Path(directory) / "model", extra={"training_data": fingerprint_files([])} if fingerprint else None)
