"""``humwatch export`` end to end on a tiny trained and calibrated site, plus the C reference of the front end.

One module-scoped fixture trains a tiny model, calibrates a site on 2.6 min of simulated pump audio and runs the
whole export once through the CLI (~40 s on 2 cores); the tests share its output. A second full conversion checks
the size gate through the ``--model`` route. The C tests compile ``hw_frontend.c`` with the system gcc against the
generated header and compare it with the Python front end on golden vectors (tolerances below).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GCC, build_c, header_birth, invoke

from anomaly.features import DEFAULT_PARAMS, FeatureParams, log_mel, patches
from firmware_export.targets import TFLM_BUILTIN_OPS

GXX = shutil.which("g++")

# Tolerances of the C front end against anomaly.features.log_mel (float32 radix-2 FFT and sparse mel sums against
# torch's pocketfft and a dense matmul). Measured: ~2e-5 on log-mel for a tone + noise.
LOGMEL_TOL = 1e-4  # natural-log units, max abs difference per element
NORM_TOL = 1e-3  # normalised x (divided by per-band std, which amplifies)
INT8_MIN_IDENTICAL = 0.999  # share of identical int8 codes; the rest differ by 1 LSB (rounding at a boundary)
SCORE_REL_TOL = 1e-5




def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()] if result.stderr else \
        [ln for ln in result.output.splitlines() if ln.strip()]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errs = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errs) == 1, result.output
    return errs[0]




@pytest.fixture(scope="module")
def site_root(tmp_path_factory) -> Path:
    """A trained tiny model, and site ``pump-t`` calibrated (forced) on 2.6 min of audio."""
    from anomaly.audio import file_log_mel
    from anomaly.decision import DEFAULT_RULE
    from anomaly.detectors import fingerprint_files, fit_detector
    from anomaly.modeldir import model_hash
    from anomaly.simulate import SimConfig, write_audio
    from anomaly.train import TrainConfig
    from calibration.calibrate import CalibrationRequest, calibrate
    from calibration.store import SiteConfig, SiteStore

    root = tmp_path_factory.mktemp("export")
    train = root / "train" / "normal.flac"
    write_audio(train, SimConfig("pump", "none", 0.0, "factory", 11), 0.5)
    write_audio(root / "calib" / "site.flac", SimConfig("pump", "none", 0.0, "factory", 12), 2.6)
    det = fit_detector("ae", [file_log_mel(train, DEFAULT_PARAMS)], DEFAULT_PARAMS,
                       train_config=TrainConfig(epochs=2, samples_per_epoch=256, threads=1))
    det.save(root / "model", extra={"training_data": fingerprint_files([train])})
    store = SiteStore(root / "sites")
    store.create(SiteConfig(name="pump-t", model_path=str(root / "model"), model_hash=model_hash(root / "model"),
                            machine="pump"))
    calibrate(store.site("pump-t"), CalibrationRequest(files=[root / "calib" / "site.flac"], force=True))
    wm = SiteConfig(name="pump-w", model_path=str(root / "model"), model_hash=model_hash(root / "model"),
                    machine="pump")
    wm.with_rule(DEFAULT_RULE)  # the windowed-mean rule, on the same (forced, short) calibration audio
    store.create(wm)
    calibrate(store.site("pump-w"), CalibrationRequest(files=[root / "calib" / "site.flac"], force=True))
    store.create(SiteConfig(name="bare", model_path=str(root / "model"), model_hash=model_hash(root / "model")))
    for i in range(2):  # labelled recordings of the machine for --validate-with
        write_audio(root / "labelled" / f"normal_{i}.flac", SimConfig("pump", "none", 0.0, "factory", 13 + i), 0.25)
        write_audio(root / "labelled" / f"anomaly_{i}.flac", SimConfig("pump", "cavitation", 0.8, "factory", 15 + i),
                    0.25)
    return root


@pytest.fixture(scope="module")
def exported(site_root):
    """Run ``humwatch export --site pump-t --json --validate-with <labelled clips>`` once."""
    out = site_root / "fw"
    r = invoke("export", "--site", "pump-t", "--sites-dir", site_root / "sites", "--out", out, "--json",
               "--target", "esp32-s3", "--validate-with", site_root / "labelled")
    assert r.exit_code == 0, r.output[-3000:]
    return {"out": out, "stdout": r.stdout, "manifest": json.loads((out / "manifest.json").read_text()),
            "root": site_root}


@pytest.fixture(scope="module")
def hwref(exported, tmp_path_factory) -> Path:
    """The C reference front end and its harness, built against the generated header."""
    if GCC is None:
        pytest.skip("no gcc on this machine")
    return _build_hwref(exported["out"], tmp_path_factory.mktemp("cref") / "hwref")


def _build_hwref(include_dir: Path, exe: Path) -> Path:
    """The C reference front end (hw_frontend.c in ``include_dir``, beside its generated header) and its harness."""
    from firmware_export.frontend_ref import DIR, HARNESS

    return build_c(include_dir, [include_dir / "hw_frontend.c", DIR / HARNESS], exe)


# ---------------------------------------------------------------------------------------------------------------
# manifest and artifacts


def test_export_writes_every_artifact_and_a_consistent_manifest(exported):
    from anomaly.modeldir import file_sha256

    m, out = exported["manifest"], exported["out"]
    assert json.loads(exported["stdout"]) == m  # --json prints exactly the manifest
    assert m["status"] == "passed" and m["gates"]["passed"]
    assert {g["gate"] for g in m["gates"]["checks"]} == {"size", "ops", "float_parity", "correlation", "auc_drop",
                                                         "c_model", "labelled_auc_drop"}
    assert m["source"]["kind"] == "site" and m["source"]["site"] == "pump-t" and m["source"]["calibration_id"]
    for name, entry in m["outputs"].items():
        assert (out / name).stat().st_size == entry["bytes"] and file_sha256(out / name) == entry["sha256"], name
    assert set(m["outputs"]) | {"manifest.json"} == {p.name for p in out.iterdir()}
    assert m["inputs"]["model_hash"] == m["source"]["model_hash"]
    assert len(m["inputs"]["model_json_sha256"]) == 64 and len(m["inputs"]["calibration_record_sha256"]) == 64
    assert m["inputs"]["audio"][0]["role"] == "calibration" and len(m["inputs"]["audio"][0]["sha256"]) == 64
    assert m["feature_params"] == DEFAULT_PARAMS.to_dict() and m["feature_params_hash"] == DEFAULT_PARAMS.hash()
    assert m["model"]["macs_per_patch"] == sum(m["model"]["macs_by_kind"].values()) > 0
    assert m["model"]["onnx"]["opset"] == 18
    for t in ("cortex-m7", "esp32-s3"):
        est = m["latency_estimate"]["targets"][t]
        assert est["estimate"] is True and est["ms_per_patch"] > 0 and "assum" in est["source"]
    assert m["target"] == "esp32-s3"
    for tool in ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow-cpu", "ai-edge-litert", "humwatch"):
        assert m["tools"][tool], tool
    assert set(m["parity"]["runtimes"]) == {"pytorch", "onnxruntime", "tflite_float", "tflite_int8"}
    for rt in m["parity"]["runtimes"].values():
        assert 0.0 <= rt["auc"] <= 1.0 and set(rt["auc_by_fault"]) == {"cavitation", "bearing-outer",
                                                                       "electrical-arc"}
    assert m["parity"]["patches"]["normal_held_out"] > 0 and m["parity"]["patches"]["fault"] > 0
    assert m["classifier"] == {"included": False, "reason": "site pump-t has no classifier"}
    # every stage is timed (speed is measured in bench/export.py, not asserted: the machine is shared)
    t = m["timing_seconds"]
    assert {"c_model", "firmware", "total"} <= set(t) and t["total"] >= sum(v for k, v in t.items() if k != "total") - 1


def test_telemetry_birth_of_an_export_without_a_classifier_names_no_classes(exported):
    """The device sends no class probabilities, and its birth message (HW_TELEMETRY_BIRTH) announces none; its other
    fields are the export's (the classifier export's birth: tests/test_export_classifier.py)."""
    m = exported["manifest"]
    assert not m["classifier"]["included"]
    birth = header_birth(exported["out"] / "humwatch_telemetry.h")
    assert birth.classes == ()
    assert (birth.threshold, birth.runtime, birth.model_hash, birth.calibration) == (
        m["threshold"]["int8"], "int8", m["source"]["model_hash"], m["source"]["calibration_id"])


def test_the_network_as_plain_c_is_bit_exact_and_measured_on_the_target(exported):
    """hw_model.c equals TFLM on the export's own patches (the gate), and the reference firmware built from the export's
    files ran on the emulated Cortex-M7 with every network byte equal to TFLM and Python's decisions."""
    from firmware_export.firmware import build

    m, out = exported["manifest"], exported["out"]
    c = m["c_model"]["model"]
    assert c["check"]["checked"] and c["check"]["bit_exact"] and c["check"]["bytes_different"] == 0
    assert c["check"]["inputs"] > 4 and c["files"] == ["hw_model.c", "hw_model.h"]
    assert 0 < c["figures"]["scratch_bytes"] < m["tflm"]["arena_bytes"]
    assert next(g for g in m["gates"]["checks"] if g["gate"] == "c_model")["passed"]
    for name in ("hw_model.c", "hw_model.h", "hw_kernels.c", "hw_kernels.h", "hw_device.c", "hw_device.h"):
        assert (out / name).is_file() and name in m["outputs"], name
    assert f"#define HW_MODEL_SCRATCH_BYTES {c['figures']['scratch_bytes']}" in (out / "hw_model.h").read_text()
    fw = m["firmware"]
    tc, why = build.toolchain()
    if tc is None or tc.qemu is None:
        assert fw["measured"] is False and fw["reason"]
        pytest.skip(f"firmware not measured: {fw['reason']}")
    assert fw["measured"], fw
    assert fw["network_bit_exact_on_target"] and fw["alarms_equal_python"] and fw["golden_audio_patches"] >= 4
    assert fw["device_image"]["flash_bytes"] > m["model"]["sizes"]["tflite_int8"] // 2
    assert 0 < fw["stack_peak_bytes"] < fw["device_image"]["stack_reserved"]
    assert fw["instructions_per_patch"]["network"] > 1e6 and "not cycles" in fw["instructions_per_patch"]["note"]


def test_detection_section_separates_real_recordings_from_injected_faults(exported):
    m = exported["manifest"]
    det = m["detection"]
    inj = det["injected"]
    assert inj["simulated_machine"] == "pump" and inj["site_machine"] == "pump" and inj["warning"] is None
    assert inj["faults"] == ["cavitation", "bearing-outer", "electrical-arc"] and inj["severity"] == 0.5
    assert inj["auc"]["pytorch"] == pytest.approx(m["parity"]["runtimes"]["pytorch"]["auc"], abs=1e-6)
    lab = det["labelled"]
    assert (lab["n_normal"], lab["n_anomaly"]) == (2, 2) and lab["directory"].endswith("labelled")
    assert lab["pytorch"]["auc"] == 1.0 and lab["tflite_int8"]["auc"] == 1.0  # cavitation at 0.8 is obvious
    assert lab["chance"]["pauc"] == 0.5 and "standardised" in lab["pauc_definition"]
    st = lab["int8_stream"]
    assert st["normal_patches"] == st["fault_patches"] == 2 * 15 and st["delay_s"] is not None
    gate = next(g for g in m["gates"]["checks"] if g["gate"] == "auc_drop")
    assert "pump faults (cavitation, bearing-outer, electrical-arc) simulated" in gate["detail"]
    assert "not this machine's detection quality" in gate["detail"]
    assert "the labelled recordings' figures are this machine's detection quality" in det["note"]


def test_summary_prints_real_detection_first_and_warns_about_simulated_faults(capsys):
    from anomaly.simulate import describe_injection
    from firmware_export.cli import _detection_summary

    lab = {"n_normal": 50, "n_anomaly": 50, "pytorch": {"auc": 0.646, "pauc": 0.497},
           "tflite_int8": {"auc": 0.644, "pauc": 0.496}, "int8_stream": {"false_alarms": 1, "delay_s": None}}
    _detection_summary({"labelled": lab, "injected": describe_injection("toycar", ["cavitation"], (0.5,))})
    out = " ".join(capsys.readouterr().out.split())
    assert "detection on 50 normal + 50 anomalous labelled clips of this machine: AUC 0.646 (int8 0.644)" in out
    assert "1 false alarm(s), no alarm" in out
    assert "injected for the parity check: simulated pump faults (cavitation) at severity 0.5" in out
    assert "warning: machine type 'toycar' is not one the simulator models" in out
    _detection_summary({"labelled": None, "injected": describe_injection("pump", ["cavitation"])})
    assert "no labelled recordings given (--validate-with DIR)" in " ".join(capsys.readouterr().out.split())


def test_int8_model_size_ops_and_tflm(exported):
    m = exported["manifest"]
    size = (exported["out"] / "model_int8.tflite").stat().st_size
    assert size == m["model"]["sizes"]["tflite_int8"] <= 200 * 1024
    assert m["model"]["input"]["dtype"] == m["model"]["output"]["dtype"] == "int8"
    ops = set(m["model"]["tflite_ops"])
    assert ops and ops <= TFLM_BUILTIN_OPS and "DELEGATE" not in ops
    tflm = m["tflm"]
    if not tflm["available"]:
        pytest.skip(f"TFLM interpreter unavailable: {tflm['reason']}")
    assert tflm["runs"] and 10_000 < tflm["arena_bytes"] <= tflm["arena_bytes_recommended"]
    assert tflm["max_lsb_diff_vs_litert"] <= 1


def test_float_runtimes_match_pytorch_and_int8_correlates(exported):
    m = exported["manifest"]["parity"]["runtimes"]
    assert m["onnxruntime"]["max_abs_recon_diff"] < 1e-4
    assert m["tflite_float"]["max_abs_recon_diff"] < 1e-3
    assert m["tflite_float"]["normal"]["pearson"] > 0.9999
    assert m["tflite_int8"]["normal"]["pearson"] >= 0.98
    assert abs(m["pytorch"]["auc"] - m["tflite_int8"]["auc"]) <= 0.02


def test_float_tflite_matches_pytorch_independently(exported):
    """Load the written files ourselves (not the export's own parity code) and compare with PyTorch."""
    from ai_edge_litert.interpreter import Interpreter

    from anomaly.detectors import load_detector

    det = load_detector(exported["root"] / "model")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 96, 64)).astype(np.float32)
    with torch.no_grad():
        ref = det.model_(torch.from_numpy(X).unsqueeze(1)).squeeze(1).numpy()
    it = Interpreter(model_path=str(exported["out"] / "model_float.tflite"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    for k in range(len(X)):
        it.set_tensor(i["index"], X[k][None, :, :, None])
        it.invoke()
        assert np.abs(it.get_tensor(o["index"])[0, :, :, 0] - ref[k]).max() < 1e-3


def test_threshold_is_rederived_on_int8_scores(exported):
    m = exported["manifest"]
    thr = m["threshold"]
    rec = json.loads(next((exported["root"] / "sites" / "pump-t" / "calibrations").glob("*.json")).read_text())
    assert thr["k"] == rec["threshold"]["k"] and thr["alarm_m"] == rec["threshold"]["alarm_m"]
    assert thr["site_pytorch"] == pytest.approx(rec["threshold"]["threshold"])
    assert thr["site_reproduction_rel_diff"] < 1e-4  # same patches, same split, same rule as calibration
    assert thr["int8"] == pytest.approx(thr["int8_mean"] + thr["k"] * thr["int8_std"])
    assert thr["int8"] == pytest.approx(thr["pytorch_reproduced"], rel=0.05)
    assert thr["threshold_patches"] == rec["audio"]["threshold_patches"]
    assert thr["decision_agreement"] >= 0.95


# ---------------------------------------------------------------------------------------------------------------
# The stages of run_export, each on its own (no conversion: fake runtimes stand in for the converted models)


def _stage_inputs(site_root, tmp_path):
    from firmware_export.export import ExportRequest, audio_stage, load_stage

    req = ExportRequest(out=tmp_path / "o", site="pump-t", sites_dir=site_root / "sites")
    loaded = load_stage(req)
    return req, loaded, audio_stage(req, loaded.src, loaded.classifier)


def test_load_and_audio_stages_follow_the_site_and_its_calibration(site_root, tmp_path):
    from anomaly.decision import MOfN

    _, loaded, patches = _stage_inputs(site_root, tmp_path)
    src = loaded.src
    rec = json.loads(next((site_root / "sites" / "pump-t" / "calibrations").glob("*.json")).read_text())
    th = rec["threshold"]
    assert (src.kind, src.site, src.calibration_id) == ("site", "pump-t", rec["id"])
    assert src.rule == MOfN(th["alarm_m"], th["alarm_n"]) and src.k == th["k"]
    assert src.reference_threshold == th["threshold"] and src.files == [site_root / "calib" / "site.flac"]
    assert loaded.classifier is None and loaded.no_classifier_reason == "site pump-t has no classifier"
    assert not (tmp_path / "o").exists()  # loading writes nothing
    assert len(patches.threshold) == rec["audio"]["threshold_patches"]
    assert len(patches.check) == rec["audio"]["check_patches"] and len(patches.faults) == 3 * 64
    assert patches.threshold.dtype == np.float32 and abs(float(patches.threshold.mean())) < 1.0  # normalised
    assert len(patches.fault_names) == len(patches.faults) and patches.classifier is None


def test_threshold_stage_applies_the_site_rule_to_the_int8_scores(site_root, tmp_path):
    from anomaly.decision import fit_threshold
    from firmware_export.export import Parity, threshold_stage

    _, loaded, patches = _stage_inputs(site_root, tmp_path)
    src = loaded.src
    runs = {"pytorch": lambda X: 0.9 * X, "tflite_int8": lambda X: 0.8 * X}  # stand-ins for the two runtimes
    scores = {rt: {k: src.det.scorer.of_output(X, runs[rt](X)) for k, X in (("normal", patches.check),
                                                                           ("fault", patches.faults))}
              for rt in runs}
    t = threshold_stage(src, patches, Parity(runs, scores, {}, {}))
    q = fit_threshold(src.det.scorer.of_output(patches.threshold, 0.8 * patches.threshold), src.k)
    assert (t["int8"], t["int8_mean"], t["int8_std"]) == (q.value, q.mean, q.std)
    assert t["pytorch_reproduced"] == fit_threshold(src.det.scorer.of_output(patches.threshold,
                                                                             0.9 * patches.threshold), src.k).value
    assert (t["alarm_m"], t["alarm_n"]) == (src.rule.m, src.rule.n) and t["alarm_rule"] == src.rule.describe()
    assert t["held_out_exceedance"]["int8"] == float(np.mean(scores["tflite_int8"]["normal"] > q.value))
    assert t["int8_report"] is None or t["int8_report"]["threshold"] == q.value


def test_gate_and_write_stages_refuse_a_failed_gate_and_write_nothing(tmp_path):
    from types import SimpleNamespace

    from firmware_export.errors import GateFailed
    from firmware_export.export import Parity, gate_stage, write_stage
    from firmware_export.pipeline import Clock

    conv = SimpleNamespace(int8_bytes=b"\0" * 300, ops=["CONV_2D", "RELU"])
    summary = {"pytorch": {"auc": 0.99}, "tflite_int8": {"auc": 0.985, "normal": {"pearson": 0.999}}}
    par = Parity({}, {}, {"onnxruntime": 1e-6, "tflite_float": 2e-6}, summary)
    gates = {g["gate"]: g for g in gate_stage(100, conv, par, {"runs": True})}
    assert not gates["size"]["passed"] and "over by 200 B" in gates["size"]["detail"]
    assert all(gates[g]["passed"] for g in ("ops", "float_parity", "correlation", "auc_drop"))
    clock = Clock()
    out = tmp_path / "o"
    out.mkdir()
    manifest = {"gates": {"passed": False, "checks": list(gates.values())}, "timing_seconds": clock.timings}
    with pytest.raises(GateFailed, match="size: model_int8.tflite is 300 B") as e:
        write_stage(out, None, conv, {}, {}, None, manifest, clock)
    assert e.value.manifest["timing_seconds"].keys() == {"gates", "total"} and not any(out.iterdir())


def test_clock_scales_the_autoencoder_share_and_times_laps():
    from firmware_export.pipeline import Clock

    seen = []
    clock = Clock(lambda what, f: seen.append((what, f)))
    clock.share = 0.6
    clock.step("a", 0.5)
    clock.report("b", 0.9)
    clock.lap("first")
    clock.total()
    assert seen == [("a", 0.3), ("b", 0.9)] and list(clock.timings) == ["first", "total"]


# ---------------------------------------------------------------------------------------------------------------
# C sources


def _defines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#define (HW_\w+) (.+?)\s*$", text, flags=re.M))


def test_frontend_header_holds_every_feature_param_and_the_decision(exported):
    import dataclasses

    text = (exported["out"] / "humwatch_frontend.h").read_text()
    d = _defines(text)
    p = DEFAULT_PARAMS
    for f in dataclasses.fields(FeatureParams):
        v = getattr(p, f.name)
        raw = d[f"HW_{f.name.upper()}"]
        if isinstance(v, str):
            assert raw == f'"{v}"'
        elif isinstance(v, float):
            assert float(raw.rstrip("f")) == pytest.approx(v, rel=1e-7), f.name
        else:
            assert int(raw) == v, f.name
    m = exported["manifest"]
    assert float(d["HW_INPUT_SCALE"].rstrip("f")) == pytest.approx(m["model"]["input"]["scale"], rel=1e-7)
    assert int(d["HW_INPUT_ZERO_POINT"]) == m["model"]["input"]["zero_point"]
    assert float(d["HW_OUTPUT_SCALE"].rstrip("f")) == pytest.approx(m["model"]["output"]["scale"], rel=1e-7)
    assert int(d["HW_OUTPUT_ZERO_POINT"]) == m["model"]["output"]["zero_point"]
    assert float(d["HW_SCORE_THRESHOLD"].rstrip("f")) == pytest.approx(m["threshold"]["int8"], rel=1e-7)
    assert int(d["HW_ALARM_M"]) == m["threshold"]["alarm_m"] and int(d["HW_ALARM_N"]) == m["threshold"]["alarm_n"]
    assert d["HW_FEATURE_PARAMS_HASH"] == f'"{p.hash()}"' and d["HW_MODEL_HASH"] == f'"{m["source"]["model_hash"]}"'
    for arr in ("hw_window", "hw_mel_weights", "hw_mel_first_bin", "hw_norm_mean", "hw_norm_std", "hw_norm_inv_std",
                "hw_mic_offsets"):
        assert re.search(rf"static const \w+( \w+)? {arr}\[", text), arr


def test_header_arrays_round_trip_exactly(exported):
    """Window, normalisation and the sparse filterbank in the header equal the Python values bit for bit."""
    from anomaly.detectors import load_detector
    from anomaly.features import hann_window, mel_filterbank

    text = (exported["out"] / "humwatch_frontend.h").read_text()

    def arr(name, dtype=np.float32):
        body = re.search(rf"{name}\[\w+\] HW_UNUSED = \{{(.*?)\}};", text, flags=re.S).group(1)
        return np.array([float(v.strip().rstrip("f")) for v in body.split(",") if v.strip()]).astype(dtype)

    det = load_detector(exported["root"] / "model")
    assert np.array_equal(arr("hw_window"), hann_window(DEFAULT_PARAMS))
    assert np.array_equal(arr("hw_norm_mean"), det.mean_) and np.array_equal(arr("hw_norm_std"), det.std_)
    fb = np.zeros_like(mel_filterbank(DEFAULT_PARAMS))
    first, count, start, w = (arr("hw_mel_first_bin", int), arr("hw_mel_bin_count", int),
                              arr("hw_mel_weight_start", int), arr("hw_mel_weights"))
    for m in range(fb.shape[1]):
        fb[first[m]:first[m] + count[m], m] = w[start[m]:start[m] + count[m]]
    assert np.array_equal(fb, mel_filterbank(DEFAULT_PARAMS))


@pytest.mark.skipif(GCC is None or GXX is None, reason="needs gcc with C++ support")
def test_model_data_cc_compiles(exported, tmp_path):
    out = exported["out"]
    obj = tmp_path / "model_data.o"
    r = subprocess.run([GCC, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-c", str(out / "model_data.cc"), "-o",
                        str(obj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, str(obj)], capture_output=True, text=True).stdout
        assert re.search(r" R g_humwatch_model_data$", syms, flags=re.M), syms  # global, read-only
    d = _defines((out / "model_data.h").read_text())
    assert int(d["HW_MODEL_DATA_LEN"]) == exported["manifest"]["model"]["sizes"]["tflite_int8"]


@pytest.mark.skipif(GXX is None, reason="needs g++")
def test_frontend_sources_compile_as_cpp(exported):
    out = exported["out"]
    r = subprocess.run([GXX, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c++",
                        f"-I{out}", str(out / "hw_frontend.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _golden_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    tone_noise = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.05 * np.sin(2 * np.pi * 3150.7 * t) + \
        0.01 * rng.standard_normal(t.size)
    return {"tone+noise": tone_noise.astype(np.float32),
            "white": np.clip(0.3 * rng.standard_normal(16000), -1, 1).astype(np.float32),
            "silence": np.zeros(8000, np.float32)}


def test_c_frontend_matches_python_on_golden_vectors(exported, hwref, tmp_path):
    from anomaly.detectors import load_detector
    from firmware_export.tflite import quantize

    det = load_detector(exported["root"] / "model")
    m = exported["manifest"]
    scale, zp = m["model"]["input"]["scale"], m["model"]["input"]["zero_point"]
    for name, sig in _golden_signals().items():
        sig.tofile(tmp_path / "s.f32")
        r = subprocess.run([str(hwref), "frontend", str(tmp_path / "s.f32"), str(tmp_path / "o")], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        ref = log_mel(sig, DEFAULT_PARAMS)
        assert int(r.stdout) == ref.shape[0] > 0, name
        lm = np.fromfile(tmp_path / "o.logmel.f32", np.float32).reshape(-1, 64)
        assert np.abs(lm - ref).max() <= LOGMEL_TOL, (name, np.abs(lm - ref).max())
        xn = (ref - det.mean_) / det.std_
        x = np.fromfile(tmp_path / "o.x.f32", np.float32).reshape(-1, 64)
        assert np.abs(x - xn).max() <= NORM_TOL, name
        q = np.fromfile(tmp_path / "o.q.i8", np.int8).reshape(-1, 64).astype(int)
        dq = np.abs(q - quantize(xn, scale, zp))
        assert dq.max() <= 1 and np.mean(dq == 0) >= INT8_MIN_IDENTICAL, name


@pytest.mark.skipif(GCC is None, reason="needs gcc")
@pytest.mark.parametrize("params", [
    FeatureParams(n_mels=40, f_min=50.0, f_max=8000.0, power=2.0, log_offset=1e-6),
    FeatureParams(sample_rate=22050, window_length=1024, hop_length=512, n_fft=1024, n_mels=96, f_max=11025.0),
], ids=["power2-40mels", "22k-1024fft"])
def test_c_frontend_follows_the_header_for_other_params_and_mic_offsets(params, tmp_path):
    """The header alone drives the C code: other FeatureParams and a microphone-response correction, no model
    conversion needed (header written directly by c_arrays.frontend_header)."""
    from anomaly.decision import MOfN
    from firmware_export.c_arrays import frontend_header
    from firmware_export.frontend_ref import DIR, SOURCES

    rng = np.random.default_rng(5)
    mean = rng.normal(-2, 1, params.n_mels).astype(np.float32)
    std = rng.uniform(0.5, 2, params.n_mels).astype(np.float32)
    offsets = rng.normal(0, 0.3, params.n_mels).astype(np.float32)
    hdr = frontend_header(params, mean, std, offsets, (0.05, -3), (0.01, 4),
                          {"threshold": 1.0, "k": 4.0, "rule": MOfN(2, 4), "site_threshold_float": None,
                           "threshold_source": "test"}, {"model_hash": "x"}, "test")
    (tmp_path / "humwatch_frontend.h").write_text(hdr)
    for name in SOURCES:
        shutil.copyfile(DIR / name, tmp_path / name)
    exe = tmp_path / "hwref"
    _build_hwref(tmp_path, exe)
    t = np.arange(2 * params.sample_rate) / params.sample_rate
    sig = (0.2 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    sig.tofile(tmp_path / "s.f32")
    r = subprocess.run([str(exe), "frontend", str(tmp_path / "s.f32"), str(tmp_path / "o")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    ref = log_mel(sig, params, offsets)
    lm = np.fromfile(tmp_path / "o.logmel.f32", np.float32).reshape(-1, params.n_mels)
    assert lm.shape == ref.shape and np.abs(lm - ref).max() <= LOGMEL_TOL
    x = np.fromfile(tmp_path / "o.x.f32", np.float32).reshape(-1, params.n_mels)
    assert np.abs(x - (ref - mean) / std).max() <= NORM_TOL


def test_c_score_and_decision_match_the_int8_model(exported, hwref, tmp_path):
    """A real patch through the int8 model: the C score (header quantisation, float accumulation) equals the
    Python score the threshold was derived from, and the over/under decision agrees."""
    from ai_edge_litert.interpreter import Interpreter

    from anomaly.audio import file_patches
    from anomaly.detectors import load_detector
    from firmware_export.tflite import dequantize, quantize

    det = load_detector(exported["root"] / "model")
    m = exported["manifest"]
    (iscale, izp), (oscale, ozp) = ((m["model"][k]["scale"], m["model"][k]["zero_point"]) for k in ("input", "output"))
    it = Interpreter(model_path=str(exported["out"] / "model_int8.tflite"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    _, P = file_patches(exported["root"] / "calib" / "site.flac", DEFAULT_PARAMS)
    rng = np.random.default_rng(1)
    loud = P[:1] + 2.0 * rng.standard_normal(P[:1].shape).astype(np.float32)  # an "anomalous" patch
    for X in (P[0], P[len(P) // 2], loud[0]):
        xn = ((X - det.mean_) / det.std_).astype(np.float32)
        it.set_tensor(i["index"], quantize(xn, iscale, izp)[None, :, :, None])
        it.invoke()
        yq = it.get_tensor(o["index"])[0, :, :, 0]
        want = float(det.scorer.of_output(xn[None], dequantize(yq, oscale, ozp)[None])[0])
        xn.tofile(tmp_path / "x.f32")
        yq.tofile(tmp_path / "y.i8")
        r = subprocess.run([str(hwref), "score", str(tmp_path / "x.f32"), str(tmp_path / "y.i8")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        got, over = r.stdout.split()
        assert float(got) == pytest.approx(want, rel=SCORE_REL_TOL)
        assert int(over) == int(want > m["threshold"]["int8"])


def test_c_alarm_rule_is_m_of_n(exported, hwref):
    from anomaly.decision import MOfN

    thr = exported["manifest"]["threshold"]
    mm, n, t = thr["alarm_m"], thr["alarm_n"], thr["int8"]
    over = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1], bool)
    scores = np.where(over, t * 2, t / 2)
    r = subprocess.run([str(hwref), "alarm", *[f"{s:.9g}" for s in scores]], capture_output=True, text=True)
    state = np.array(r.stdout.split(), int)
    want = np.array([over[max(0, j - n + 1): j + 1].sum() >= mm for j in range(over.size)], int)
    assert np.array_equal(state, want)
    assert int(state[0] + np.sum(state[1:] & ~state[:-1] & 1)) == MOfN(mm, n).onsets(scores, t).size


def test_export_of_a_window_mean_site_mirrors_its_rule_in_c(site_root, tmp_path):
    """What calibrate produces with the default rule exports: the device rule keeps the site's limit, takes its
    centre and scale from the int8 model's scores, and the C harness alarms where Python's rule does."""
    from anomaly.decision import rule_from_dict
    from calibration.calibrate import calibration_rule
    from calibration.store import SiteStore

    out = tmp_path / "fw"
    r = invoke("export", "--site", "pump-w", "--sites-dir", site_root / "sites", "--out", out, "--json")
    assert r.exit_code == 0, r.output[-3000:]
    thr = json.loads((out / "manifest.json").read_text())["threshold"]
    rule = rule_from_dict(thr["device_rule"])
    site_rule = calibration_rule(SiteStore(site_root / "sites").site("pump-w").calibration())
    assert rule.kind == site_rule.kind == "window_mean" and rule.limit == site_rule.limit
    assert thr["alarm_m"] is None and "int8" in thr["device_rule_source"]
    header = (out / "humwatch_frontend.h").read_text()
    assert rule.c_defines("HW_ALARM") in header
    # the device's birth message carries the same rule, so the ingest judges its scores by it (docs/fleet.md)
    birth = header_birth(out / "humwatch_telemetry.h")
    assert (birth.threshold, birth.runtime, birth.rule) == (thr["int8"], "int8", rule) and rule != site_rule
    if GCC is None:
        pytest.skip("no gcc on this machine")
    exe = _build_hwref(out, tmp_path / "hwref")
    rng = np.random.default_rng(3)
    z = np.r_[rng.normal(0, 1, 200), rng.normal(rule.limit + 2, 1, 150), rng.normal(0, 1, 150)]
    scores = np.exp(rule.centre + rule.scale * z).astype(np.float32).astype(np.float64)
    res = subprocess.run([str(exe), "alarm", *[f"{s:.9g}" for s in scores]], capture_output=True, text=True)
    state = np.array(res.stdout.split(), int)
    onsets = np.flatnonzero(state & ~np.r_[0, state[:-1]]).tolist()
    assert onsets == rule.onsets(scores).tolist() and onsets


def test_c_pass_loop_of_a_plain_model_is_one_unmasked_pass(exported, hwref, tmp_path):
    header = (exported["out"] / "humwatch_frontend.h").read_text()
    assert "#define HW_MASK_FRAMES 0" in header and "#define HW_FORWARD_PASSES 1" in header
    assert exported["manifest"]["model"]["forward_passes_per_patch"] == 1
    q = np.random.default_rng(3).integers(-128, 128, 96 * 64).astype(np.int8)
    q.tofile(tmp_path / "q.i8")
    r = subprocess.run([str(hwref), "passes", str(tmp_path / "q.i8"), str(tmp_path / "p")], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    assert np.array_equal(np.fromfile(tmp_path / "p.inputs.i8", np.int8), q)
    r = subprocess.run([str(hwref), "assemble", str(tmp_path / "q.i8"), str(tmp_path / "p")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.fromfile(tmp_path / "p.y.i8", np.int8), q)


# ---------------------------------------------------------------------------------------------------------------
# errors and gates


def test_missing_model_dir_is_exit_1(tmp_path):
    r = invoke("export", "--model", tmp_path / "nope", "--representative", tmp_path, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "model directory not found" in one_error_line(r)


def test_uncalibrated_site_is_exit_1(site_root, tmp_path):
    r = invoke("export", "--site", "bare", "--sites-dir", site_root / "sites", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "not calibrated" in one_error_line(r)
    assert not (tmp_path / "o").exists()


def test_model_without_representative_is_exit_1(site_root, tmp_path):
    r = invoke("export", "--model", site_root / "model", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "--representative" in one_error_line(r)


def test_site_and_model_together_or_neither_is_exit_1(site_root, tmp_path):
    r = invoke("export", "--site", "pump-t", "--model", site_root / "model", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "one of the two" in one_error_line(r)
    r = invoke("export", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "one of the two" in one_error_line(r)


def test_refuses_to_replace_a_directory_that_is_not_an_export(site_root, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "main.c").write_text("int main(void) { return 0; }\n")
    r = invoke("export", "--site", "pump-t", "--sites-dir", site_root / "sites", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "not a humwatch export" in one_error_line(r)
    assert (tmp_path / "o" / "main.c").is_file()


def test_size_gate_fails_with_exit_3_through_the_model_route(exported, tmp_path):
    """``--model`` + ``--representative`` with a 1000 B budget: the export runs, the size gate fails, exit 3, the
    manifest (on stdout with --json) says by how much, and an existing export in --out is left alone."""
    out = tmp_path / "fw"
    shutil.copytree(exported["out"], out)
    before = (out / "manifest.json").read_text()
    root = exported["root"]
    r = invoke("export", "--model", root / "model", "--representative", root / "calib", "--out", out,
               "--max-model-bytes", 1000, "--json")
    assert r.exit_code == 3, r.output[-3000:]
    line = one_error_line(r)
    assert "size" in line and "over by" in line and "budget 1,000 B" in line
    m = json.loads(r.stdout)
    assert m["status"] == "failed" and m["source"]["kind"] == "model"
    size = next(g for g in m["gates"]["checks"] if g["gate"] == "size")
    assert not size["passed"] and size["limit"] == 1000 and size["value"] > 1000
    assert all(g["passed"] for g in m["gates"]["checks"] if g["gate"] != "size")
    assert "provisional" in m["threshold"]["source"] and m["threshold"]["site_pytorch"] is None
    assert m["classifier"] == {"included": False, "reason": "no --classifier given"}
    # without a site the machine is unknown: the injected faults are a pump's, and the manifest says what they are not
    inj = m["detection"]["injected"]
    assert inj["site_machine"] is None and inj["simulated_machine"] == "pump" and "unknown machine" in inj["warning"]
    assert m["detection"]["labelled"] is None and "not this machine's detection quality" in m["detection"]["note"]
    assert (out / "manifest.json").read_text() == before  # untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fw.")]  # no temp dir left behind


def test_export_cli_imports_nothing_heavy():
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import firmware_export.cli, firmware_export.errors"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mods = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    heavy = sorted(m for m in mods if m.split(".")[0] in {"torch", "tensorflow", "onnx", "onnx2tf", "onnxruntime",
                                                          "ai_edge_litert", "tflite_micro", "scipy"})
    assert heavy == []


def test_help_lists_export():
    r = invoke("--help")
    assert r.exit_code == 0 and "export" in r.output


# ---------------------------------------------------------------------------------------------------------------
# pure helpers (fast)


def test_quantize_rounds_half_away_from_zero_like_roundf():
    from firmware_export.tflite import quantize

    q = quantize(np.array([0.5, -0.5, 1.5, -1.5, 0.49, 200.0, -200.0], np.float32), 1.0, 0)
    assert q.tolist() == [1, -1, 2, -2, 0, 127, -128]


def test_auc_and_split_helpers():
    from firmware_export.data import split_masks
    from firmware_export.parity import auc

    assert auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    thr, chk, _ = split_masks(200, 64)
    assert chk.sum() == 64 and chk[128:192].all() and thr[:128].all()
    thr, chk, how = split_masks(100, 64)
    assert chk[1::3].all() and chk.sum() == 33 and "third" in how


def test_c_float_literals_round_trip():
    from firmware_export.c_arrays import c_float

    for v in np.random.default_rng(0).standard_normal(200).astype(np.float32):
        assert np.float32(float(c_float(v).rstrip("f"))) == v


def test_patches_of_injected_pieces_cover_the_run():
    """A held-out run of r patches cut as [j0*H, j1*H + W) gives exactly r patches again."""
    from firmware_export.data import _runs

    p = DEFAULT_PARAMS
    r = 5
    sig = np.zeros((r - 1) * p.patch_hop_samples + p.min_samples, np.float32)
    assert patches(log_mel(sig, p), p).shape[0] == r
    assert _runs(np.array([1, 2, 3, 7, 9, 10])) == [(1, 3), (7, 7), (9, 10)]


def _export_tiny_model(site_root: Path, tmp_path: Path, **train: object) -> tuple[Path, dict, object]:
    """Train a 2-epoch model with TrainConfig fields ``train`` on the fixture's training audio and export it through
    the --model route. Returns ``(export dir, manifest, the detector as saved)``."""
    from anomaly.audio import file_log_mel
    from anomaly.detectors import fit_detector, load_detector
    from anomaly.train import TrainConfig

    det = fit_detector("ae", [file_log_mel(site_root / "train" / "normal.flac", DEFAULT_PARAMS)], DEFAULT_PARAMS,
                       train_config=TrainConfig(epochs=2, samples_per_epoch=256, threads=1, **train))
    det.save(tmp_path / "model")
    out = tmp_path / "fw"
    r = invoke("export", "--model", tmp_path / "model", "--representative", site_root / "calib", "--out", out,
               "--json")
    assert r.exit_code == 0, r.output[-3000:]
    return out, json.loads((out / "manifest.json").read_text()), load_detector(tmp_path / "model")


class _Int8Model:
    """The export's model_int8.tflite in LiteRT, with the manifest's input/output quantisation."""

    def __init__(self, out: Path, manifest: dict):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(out / "model_int8.tflite"))
        self.it.allocate_tensors()
        self.i, self.o = self.it.get_input_details()[0]["index"], self.it.get_output_details()[0]["index"]
        self.iq, self.oq = ((manifest["model"][k]["scale"], manifest["model"][k]["zero_point"])
                            for k in ("input", "output"))

    def run_q(self, q: np.ndarray) -> np.ndarray:
        """int8 input patch ``[T, M]`` -> int8 output ``[T, M]``."""
        self.it.set_tensor(self.i, q[None, :, :, None])
        self.it.invoke()
        return self.it.get_tensor(self.o)[0, :, :, 0]

    def run(self, Xn: np.ndarray) -> np.ndarray:
        """Float normalised patches ``[n, T, M]`` -> dequantised outputs ``[n, T, M]``."""
        from firmware_export.tflite import dequantize, quantize

        return np.stack([dequantize(self.run_q(quantize(x, *self.iq)), *self.oq) for x in Xn])


def _hwref(out: Path, tmp_path: Path, *args) -> str:
    """Build the C harness against the export's header (once per test) and run it; returns stdout."""
    exe = tmp_path / "hwref"
    if not exe.exists():
        _build_hwref(out, exe)
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_gaussian_score_model_exports_and_the_c_score_matches(site_root, tmp_path):
    """A --score gaussian model through the --model route: the header carries the error Gaussian, and the C score
    equals the Python score of the int8 output."""
    from anomaly.audio import file_patches
    from anomaly.score import GaussianScore
    from firmware_export.tflite import dequantize, quantize

    out, m, det = _export_tiny_model(site_root, tmp_path, score="gaussian")
    assert "Mahalanobis" in m["model"]["score"] and m["gates"]["passed"]
    header = (out / "humwatch_frontend.h").read_text()
    assert "#define HW_SCORE_KIND HW_SCORE_GAUSSIAN" in header and "hw_score_precision[HW_N_MELS * HW_N_MELS]" in header
    if GCC is None:
        pytest.skip("no gcc on this machine")
    q8 = _Int8Model(out, m)
    _, P = file_patches(site_root / "calib" / "site.flac", DEFAULT_PARAMS)
    gauss = GaussianScore(det.gauss_mean_, det.gauss_prec_, 1e-4)
    for X in (P[0], P[len(P) // 2]):
        xn = ((X - det.mean_) / det.std_).astype(np.float32)
        yq = q8.run_q(quantize(xn, *q8.iq))
        want = float(gauss.of_output(xn[None], dequantize(yq, *q8.oq)[None])[0])
        xn.tofile(tmp_path / "x.f32")
        yq.tofile(tmp_path / "y.i8")
        got = _hwref(out, tmp_path, "score", tmp_path / "x.f32", tmp_path / "y.i8")
        assert float(got.split()[0]) == pytest.approx(want, rel=SCORE_REL_TOL)


def test_interpolating_model_exports_and_the_c_pass_loop_matches(site_root, tmp_path):
    """A --mask-frames 24 --score gaussian model: four passes per patch. The C pass loop (hw_pass_input, the int8
    model, hw_pass_collect, hw_score) reproduces Python's assembled int8 score, which tracks PyTorch's."""
    from anomaly.audio import file_patches
    from anomaly.score import GaussianScore
    from firmware_export.parity import interpolated
    from firmware_export.tflite import quantize

    out, m, det = _export_tiny_model(site_root, tmp_path, score="gaussian", mask_frames=24)
    assert m["gates"]["passed"]
    c = m["c_model"]["model"]["check"]  # the plain-C network, on the block-hidden inputs it sees, equals TFLM
    assert GCC is None or (c["checked"] and c["bit_exact"] and c["bytes_different"] == 0)
    fw = m["firmware"]  # four passes + the Gaussian score on the emulated Cortex-M7, where the toolchain exists
    assert not fw["measured"] or (fw["network_bit_exact_on_target"] and fw["alarms_equal_python"])
    assert m["model"]["forward_passes_per_patch"] == 4 and m["model"]["mask_frames"] == 24
    assert m["model"]["macs_per_patch"] == 4 * 2_482_176
    assert sum(m["model"]["macs_by_kind"].values()) == m["model"]["macs_per_patch"]
    header = (out / "humwatch_frontend.h").read_text()
    assert "#define HW_MASK_FRAMES 24" in header and "#define HW_FORWARD_PASSES 4" in header
    if GCC is None:
        pytest.skip("no gcc on this machine")
    q8 = _Int8Model(out, m)
    _, P = file_patches(site_root / "calib" / "site.flac", DEFAULT_PARAMS)
    gauss = GaussianScore(det.gauss_mean_, det.gauss_prec_, 1e-4)
    Xn = ((P - det.mean_) / det.std_).astype(np.float32)
    # Python: the int8 output assembled from the four passes gives scores that track the detector's own
    py = gauss.of_output(Xn, interpolated(q8.run, Xn, 24))
    assert np.corrcoef(py, det.score_samples(P))[0, 1] > 0.9
    for k in (0, len(P) // 2):
        xn = Xn[k]
        q = quantize(xn, *q8.iq)
        q.tofile(tmp_path / "q.i8")
        assert _hwref(out, tmp_path, "passes", tmp_path / "q.i8", tmp_path / "p").strip() == "4"
        inputs = np.fromfile(tmp_path / "p.inputs.i8", np.int8).reshape(4, *xn.shape)
        for b in range(4):  # block b hidden at the input zero point, the rest untouched
            hidden = np.zeros(len(q), bool)
            hidden[24 * b: 24 * b + 24] = True
            assert (inputs[b][hidden] == q8.iq[1]).all() and (inputs[b][~hidden] == q[~hidden]).all()
        np.stack([q8.run_q(inputs[b]) for b in range(4)]).astype(np.int8).tofile(tmp_path / "outs.i8")
        _hwref(out, tmp_path, "assemble", tmp_path / "outs.i8", tmp_path / "p")
        xn.tofile(tmp_path / "x.f32")
        got = _hwref(out, tmp_path, "score", tmp_path / "x.f32", tmp_path / "p.y.i8")
        assert float(got.split()[0]) == pytest.approx(py[k], rel=SCORE_REL_TOL)
