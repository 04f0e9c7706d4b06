"""The reference firmware on a Cortex-M7 under QEMU (mps2-an500): golden audio through the C front end, the generated
C model (SMLAD kernels), the score and the alarm rule, compared with Python.

Needs Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (`make test` installs them as it
installs Chromium); skipped with the reason where they are missing. One int8 autoencoder (default architecture,
random weights: bit-exactness does not need a trained model) is converted once through the export's chain (~15 s);
each firmware build + run takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly.features import DEFAULT_PARAMS, log_mel, patches

SECONDS_NORMAL, SECONDS_FAULT = 4.0, 4.0


@pytest.fixture(scope="module")
def tc():
    from firmware_export.firmware import build

    t, why = build.toolchain()
    if t is None or t.qemu is None:
        pytest.skip(why or "qemu-system-arm not found (Debian: apt-get install qemu-system-arm; `make arm-toolchain`)")
    return t


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """int16 audio: simulated pump, normal then with a strong bearing fault (so that alarms are raised)."""
    from anomaly.simulate import SimConfig, simulate

    a = simulate(SimConfig("pump", "none", 0.0, "factory", 3), SECONDS_NORMAL)
    b = simulate(SimConfig("pump", "bearing-outer", 1.0, "factory", 3), SECONDS_FAULT, start_s=SECONDS_NORMAL)
    x = np.concatenate([a, b])
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def ae_int8(audio, tmp_path_factory) -> dict:
    from anomaly.model import ArchConfig, ConvAutoencoder
    from firmware_export import pipeline

    torch.manual_seed(0)
    model = ConvAutoencoder(ArchConfig()).eval()
    P = patches(log_mel(audio.astype(np.float32) / 32768.0, DEFAULT_PARAMS), DEFAULT_PARAMS)
    mean, std = P.mean(axis=(0, 1)), P.std(axis=(0, 1)) + 1e-3
    rep = ((P - mean) / std).astype(np.float32)
    d = tmp_path_factory.mktemp("fw-model")
    conv = pipeline.convert_model(model, "model", d, d / "work", 96, 64, rep, (1, 96, 64, 1), lambda *_: None,
                                  lambda *_: None)
    return {"model": conv.int8_bytes, "mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def _spec(ae, mask_frames=0, score=None, threshold=0.0):
    from anomaly.decision import MOfN
    from firmware_export.firmware.golden import DeviceSpec

    return DeviceSpec(DEFAULT_PARAMS, ae["mean"], ae["std"], threshold, MOfN(2, 3), mask_frames, score)


def _decision(spec) -> dict:
    return {"threshold": spec.threshold, "k": 4.0, "rule": spec.rule, "site_threshold_float": None,
            "threshold_source": "test"}


def _firmware(tc, ae, spec, out):
    """Export-like directory (generated header, C front end, C model, device layer) and the two images."""
    import shutil

    from firmware_export.c_arrays import frontend_header
    from firmware_export.firmware import build, golden
    from firmware_export.frontend_ref import DIR, SOURCES

    out.mkdir(parents=True, exist_ok=True)
    cm = golden.write_device_sources(out, ae["model"], "test")
    hdr = frontend_header(DEFAULT_PARAMS, spec.mean, spec.std, None, cm.input_quant, cm.output_quant, _decision(spec),
                          {"model_hash": "test"}, "test", score=spec.scorer, mask_frames=spec.mask_frames)
    (out / "humwatch_frontend.h").write_text(hdr)
    for name in SOURCES:
        shutil.copyfile(DIR / name, out / name)
    return build.build(tc, out, out / "fw_test.elf", "test"), build.build(tc, out, out / "fw_device.elf", "device")


def _run_and_compare(tc, ae, audio, tmp_path, mask_frames=0, score=None):
    from firmware_export.firmware import build, golden

    py = golden.expected(ae["model"], _spec(ae, mask_frames, score), audio)
    spec = _spec(ae, mask_frames, score, threshold=float(np.median(py["scores"])))
    test_elf, device_elf = _firmware(tc, ae, spec, tmp_path / "fw")
    run = build.run_test_image(tc, test_elf, audio, tmp_path / "run")
    return run, golden.compare(ae["model"], spec, audio, run), build.image_size(tc, device_elf)


def test_firmware_under_qemu_matches_python(tc, ae_int8, audio, tmp_path):
    from firmware_export.firmware import build, golden

    run, cmp, size = _run_and_compare(tc, ae_int8, audio, tmp_path)
    n = len(run["patches"])
    assert n == cmp["python_patches"] == int(SECONDS_NORMAL + SECONDS_FAULT)  # 0.96 s patches, the last one cut
    # every byte of every network invocation on the M7 (SMLAD kernels) equals TFLite Micro's on the same input
    assert cmp["network_bit_exact"] and cmp["network_invocations"] == n, cmp
    assert cmp["frontend_max_abs_diff_x"] <= golden.NORM_TOL
    assert cmp["score_max_rel_diff_own_output"] <= golden.SCORE_SAME_OUTPUT_REL_TOL
    assert cmp["score_max_rel_diff_vs_python"] <= golden.SCORE_REL_TOL, cmp
    assert cmp["over_equal"] and cmp["alarm_equal"] and cmp["alarms_raised"] > 0, cmp
    # measured figures are there and plausible (the goals themselves are reported by bench/firmware.py)
    assert run["instructions_per_tick"] == pytest.approx(1e9 / build.TIMER_HZ, rel=1e-3)  # 1 instruction per ns
    p = run["patches"][-1]
    assert p["network_instructions"] > 2_000_000 and p["frontend_instructions"] > 1_000_000
    assert 0 < run["stack_peak"] < build.DEVICE_STACK
    assert size["flash_bytes"] > len(ae_int8["model"]) // 2 and size["ram_bytes"] > size["stack_reserved"]


def test_interpolation_model_with_gaussian_score_under_qemu(tc, ae_int8, audio, tmp_path):
    """Four passes per patch (hw_pass_input / hw_pass_collect) and the Gaussian score, on the target."""
    from anomaly.score import GaussianScore

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64)) * 0.1
    gauss = GaussianScore(np.full(64, -3.0), np.eye(64) + a @ a.T)
    run, cmp, _ = _run_and_compare(tc, ae_int8, audio, tmp_path, mask_frames=24, score=gauss)
    assert cmp["network_invocations"] == 4 * len(run["patches"]) and cmp["network_bit_exact"], cmp
    assert cmp["score_max_rel_diff_own_output"] <= 1e-5
    assert cmp["over_equal"] and cmp["alarm_equal"], cmp


def test_hw_process_does_not_depend_on_how_the_audio_is_chunked(ae_int8, audio, tmp_path):
    """hw_process() on the host: 1, 160, 1000 and 15360 samples per call give the same patches, scores and alarms."""
    import shutil
    import subprocess

    from firmware_export.c_arrays import frontend_header
    from firmware_export.cmodel import DIR as CDIR
    from firmware_export.firmware import golden
    from firmware_export.frontend_ref import DIR, SOURCES

    if shutil.which("gcc") is None:
        pytest.skip("no gcc on this machine")
    spec = _spec(ae_int8, threshold=0.5)
    cm = golden.write_device_sources(tmp_path, ae_int8["model"], "test")
    (tmp_path / "humwatch_frontend.h").write_text(frontend_header(
        DEFAULT_PARAMS, spec.mean, spec.std, None, cm.input_quant, cm.output_quant, _decision(spec),
        {"model_hash": "test"}, "test"))
    for name in SOURCES:
        shutil.copyfile(DIR / name, tmp_path / name)
    exe = tmp_path / "hwdevice"
    r = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{tmp_path}",
                        *[str(tmp_path / s) for s in ("hw_device.c", "hw_frontend.c", "hw_model.c", "hw_kernels.c")],
                        str(CDIR / "hw_device_main.c"), "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    audio.astype("<i2").tofile(tmp_path / "a.s16")
    outs = [subprocess.run([str(exe), str(tmp_path / "a.s16"), str(c)], capture_output=True, text=True,
                           check=True).stdout for c in (1, 160, 1000, 15360)]
    assert outs[0] and all(o == outs[0] for o in outs), outs
    assert len(outs[0].splitlines()) == int(SECONDS_NORMAL + SECONDS_FAULT)


REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CLIPS = ("dcase2025_toycar/ToyCar_00/train/normal_0000.flac", "dcase2025_toycar/ToyCar_00/test/anomaly_0000.flac")


def test_firmware_on_real_recordings_matches_python(tc, ae_int8, tmp_path):
    """Real machine sound (DCASE 2025 ToyCar: 4 s of a normal and 4 s of an anomalous clip, from ../shared/data) through
    the firmware. The model was quantised on simulated pump audio: about 7 % of these inputs lie outside that range
    and clip at the int8 edge. Every network byte equals TFLM's; scores and decisions equal Python's."""
    from anomaly.audio import load
    from firmware_export.firmware import golden

    paths = [REAL_DATA / c for c in REAL_CLIPS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"real recordings not found: {', '.join(missing)} (the project's shared data set)")
    x = np.concatenate([np.asarray(load(p, 16000), np.float64)[: 4 * 16000] for p in paths])
    audio = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    run, cmp, _ = _run_and_compare(tc, ae_int8, audio, tmp_path)
    assert cmp["network_bit_exact"] and cmp["network_invocations"] == len(run["patches"]) == 8, cmp
    assert cmp["frontend_max_abs_diff_x"] <= golden.NORM_TOL
    assert cmp["score_max_rel_diff_vs_python"] <= golden.SCORE_REL_TOL, cmp
    assert cmp["over_equal"] and cmp["alarm_equal"], cmp
