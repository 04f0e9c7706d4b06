"""``humwatch export`` with a fault classifier: the second int8 model, its gates, header, C reference and errors.

One module-scoped fixture simulates a pump, trains a tiny autoencoder and a tiny scratch-CNN classifier (4 classes,
4 clips of 5 s each), calibrates site ``pump-c`` (which names the classifier) on 2.6 min of audio and runs the whole
export once through the CLI (~60 s on a loaded 2-core machine); the tests share its output. Error cases stop before
any conversion. Two ``slow`` tests run further full exports (``--no-classifier``; a failing classifier gate with an
autoencoder-backbone classifier through the ``--model`` route).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import GCC, assert_one_error_line, build_c, header_birth, header_birth_payload, invoke

from anomaly.features import DEFAULT_PARAMS
from firmware_export.errors import ExportError
from firmware_export.targets import TFLM_BUILTIN_OPS

GXX = shutil.which("g++")
CLASSES = ("normal", "cavitation", "bearing-outer", "electrical-arc")
CLF_GATES = {"classifier_size", "classifier_ops", "classifier_float_parity", "classifier_correlation",
             "classifier_decisions", "classifier_range"}
CLF_FILES = {"classifier.onnx", "classifier_float.tflite", "classifier_int8.tflite", "classifier_data.cc",
             "classifier_data.h", "humwatch_classifier.h", "hw_classifier.h", "hw_classifier.c"}


def _train_classifier(root: Path, out: Path, base=None, base_hash=None):
    from anomaly.audio import file_log_mel
    from anomaly.classify import ClassifyConfig, FaultClassifier
    from anomaly.dataset import load_dataset, write_sim_dataset

    data = root / "clfdata"
    if not data.is_dir():
        write_sim_dataset(data, 4, seed=3, severity_range=(0.5, 0.9), seconds=5.0, classes=CLASSES)
    ds = load_dataset(data)
    recs = [file_log_mel(f, DEFAULT_PARAMS) for f in ds.files]
    cfg = ClassifyConfig(epochs=4, steps_per_epoch=15, threads=1, seed=0, widths=(8, 16, 16, 16), hidden=16)
    clf = FaultClassifier(ds.classes, DEFAULT_PARAMS, cfg, base=base, base_hash=base_hash).fit(recs, ds.Y, 0.9)
    clf.save(out)
    return clf


@pytest.fixture(scope="module")
def clf_root(tmp_path_factory) -> Path:
    """A tiny autoencoder, a tiny classifier and site ``pump-c`` (classifier set, electrical-arc an alarm class)
    calibrated (forced) on 2.6 min of audio."""
    from anomaly.audio import file_log_mel
    from anomaly.detectors import fingerprint_files, fit_detector
    from anomaly.modeldir import classifier_hash, model_hash
    from anomaly.simulate import SimConfig, write_audio
    from anomaly.train import TrainConfig
    from calibration.calibrate import CalibrationRequest, calibrate
    from calibration.store import SiteConfig, SiteStore

    root = tmp_path_factory.mktemp("export-clf")
    train = root / "train" / "normal.flac"
    write_audio(train, SimConfig("pump", "none", 0.0, "factory", 11), 0.5)
    write_audio(root / "calib" / "site.flac", SimConfig("pump", "none", 0.0, "factory", 12), 2.6)
    det = fit_detector("ae", [file_log_mel(train, DEFAULT_PARAMS)], DEFAULT_PARAMS,
                       train_config=TrainConfig(epochs=2, samples_per_epoch=256, threads=1))
    det.save(root / "model", extra={"training_data": fingerprint_files([train])})
    _train_classifier(root, root / "clf")
    store = SiteStore(root / "sites")
    store.create(SiteConfig(name="pump-c", model_path=str(root / "model"), model_hash=model_hash(root / "model"),
                            machine="pump", classifier_path=str(root / "clf"),
                            classifier_hash=classifier_hash(root / "clf"), classifier_alarm=["electrical-arc"]))
    calibrate(store.site("pump-c"), CalibrationRequest(files=[root / "calib" / "site.flac"], force=True))
    return root


@pytest.fixture(scope="module")
def exported(clf_root):
    """Run ``humwatch export --site pump-c --json`` once."""
    out = clf_root / "fw"
    r = invoke("export", "--site", "pump-c", "--sites-dir", clf_root / "sites", "--out", out, "--json")
    assert r.exit_code == 0, r.output[-3000:]
    return {"out": out, "manifest": json.loads((out / "manifest.json").read_text()), "root": clf_root}


def _clf():
    from anomaly.classify import load_classifier

    return load_classifier


def _defines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#define (HW_\w+) (.+?)\s*$", text, flags=re.M))


def _array(text: str, name: str) -> list[str]:
    body = re.search(rf"{name}\[\w+\] HW_UNUSED = \{{(.*?)\}};", text, flags=re.S).group(1)
    return [v.strip() for v in body.split(",") if v.strip()]


def _raw_patches(root: Path) -> np.ndarray:
    from anomaly.audio import file_patches

    _, P = file_patches(root / "calib" / "site.flac", DEFAULT_PARAMS)
    return P


# ---------------------------------------------------------------------------------------------------------------
# manifest and artifacts


def test_export_with_classifier_writes_its_files_and_manifest_section(exported):
    from anomaly.modeldir import classifier_hash, file_sha256

    m, out, root = exported["manifest"], exported["out"], exported["root"]
    assert m["status"] == "passed" and m["gates"]["passed"]
    names = {g["gate"] for g in m["gates"]["checks"]}
    assert names == {"size", "ops", "float_parity", "correlation", "auc_drop", "c_model",
                     "classifier_c_model"} | CLF_GATES
    assert m["c_model"]["classifier"]["check"]["bit_exact"] and m["c_model"]["model"]["check"]["bit_exact"]
    assert {"hw_clf_model.c", "hw_clf_model.h"} <= set(m["outputs"])
    assert CLF_FILES <= set(m["outputs"]) and set(m["outputs"]) | {"manifest.json"} == {p.name for p in
                                                                                        out.iterdir()}
    for name, entry in m["outputs"].items():
        assert (out / name).stat().st_size == entry["bytes"] and file_sha256(out / name) == entry["sha256"], name
    c = m["classifier"]
    assert c["included"] and set(c["files"]) == CLF_FILES and c["gates"]["passed"]
    src = c["source"]
    assert src["origin"] == "site pump-c" and src["hash"] == classifier_hash(root / "clf") == c["inputs"]["hash"]
    assert src["backbone"] == "cnn" and src["output"] == "sigmoid" and sorted(src["classes"]) == sorted(CLASSES)
    assert src["feature_params_hash"] == DEFAULT_PARAMS.hash() == m["feature_params_hash"]
    clf = _clf()(root / "clf")
    assert src["temperature"] == pytest.approx(clf.temperature_)
    mod = c["model"]
    assert mod["sizes"]["tflite_int8"] == (out / "classifier_int8.tflite").stat().st_size
    assert mod["input"]["shape"] == [1, 96, 64, 1] and mod["output"]["shape"] == [1, len(CLASSES)]
    assert mod["input"]["dtype"] == mod["output"]["dtype"] == "int8"
    assert mod["macs_per_patch"] == sum(mod["macs_by_kind"].values()) > 0 and mod["onnx"]["opset"] == 18
    ops = set(mod["tflite_ops"])
    assert ops and ops <= TFLM_BUILTIN_OPS and "DELEGATE" not in ops
    for k, cls in enumerate(clf.classes):
        t = c["thresholds"]["classes"][cls]
        assert t["probability"] == pytest.approx(clf.threshold_array[k])
        assert t["logit"] == pytest.approx(np.log(t["probability"] / (1 - t["probability"])))
        assert t["alarm"] == (cls == "electrical-arc")
    assert c["latency_estimate"]["targets"]["cortex-m7"]["ms_per_patch"] > 0
    assert m["timing_seconds"]["classifier_onnx2tf"] > 0 and m["timing_seconds"]["total"] > 0  # speed: bench/export.py


def test_classifier_parity_figures_are_within_the_gates(exported):
    from firmware_export import classifier as ce

    c = exported["manifest"]["classifier"]
    par, rts = c["parity"], c["parity"]["runtimes"]
    assert par["patches"]["normal_held_out"] > 0 and par["patches"]["fault"] > 0
    assert set(par["patches"]["faults"]) == {"cavitation", "bearing-outer", "electrical-arc"}
    assert sum(par["patches"]["representative_faults"].values()) > 0
    assert set(rts) == {"pytorch", "onnxruntime", "tflite_float", "tflite_int8"}
    assert par["folding_max_abs_diff"] < 1e-4  # the folded graph equals the classifier's own calibrated logits
    assert rts["onnxruntime"]["max_abs_logit_diff"] < 1e-4
    assert rts["tflite_float"]["max_abs_logit_diff"] <= ce.MAX_FLOAT_LOGIT_DIFF * par["logit_scale"]
    assert rts["tflite_float"]["decision_agreement"] == 1.0
    assert rts["tflite_int8"]["pearson"] >= ce.MIN_LOGIT_PEARSON
    assert 0.0 <= rts["tflite_int8"]["share_saturated"] < 0.5
    assert (rts["tflite_int8"]["max_abs_logit_diff_in_range"] or 0.0) <= rts["tflite_int8"]["max_abs_logit_diff"]
    assert rts["tflite_int8"]["decision_agreement"] >= ce.MIN_DECISION_AGREEMENT
    tflm = c["tflm"]
    if not tflm["available"]:
        pytest.skip(f"TFLM interpreter unavailable: {tflm['reason']}")
    assert tflm["runs"] and 1_000 < tflm["arena_bytes"] <= tflm["arena_bytes_recommended"]
    assert tflm["max_lsb_diff_vs_litert"] <= 1
    both = tflm["both_models"]
    ae = exported["manifest"]["tflm"]["arena_bytes_recommended"]
    assert both["separate_arenas_bytes"] == ae + tflm["arena_bytes_recommended"]
    assert both["one_arena_in_turn_bytes"] == max(ae, tflm["arena_bytes_recommended"])
    size = next(g for g in exported["manifest"]["gates"]["checks"] if g["gate"] == "classifier_size")
    assert size["value"] == (exported["manifest"]["model"]["sizes"]["tflite_int8"]
                             + c["model"]["sizes"]["tflite_int8"]) <= size["limit"]


def test_written_tflite_models_match_the_classifier_independently(exported):
    """Load the written files ourselves: float TFLite logits = the classifier's calibrated logits of RAW log-mel
    patches; the int8 model's decisions at the thresholds agree with PyTorch's."""
    from ai_edge_litert.interpreter import Interpreter

    from firmware_export.classifier import probabilities
    from firmware_export.tflite import dequantize, quantize

    root, out, m = exported["root"], exported["out"], exported["manifest"]["classifier"]
    clf = _clf()(root / "clf")
    P = _raw_patches(root)[::7]
    want = clf.logits_of_patches(P) / clf.temperature_
    got = {}
    for kind in ("float", "int8"):
        it = Interpreter(model_path=str(out / f"classifier_{kind}.tflite"))
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        z = []
        for x in P:
            xin = quantize(x, m["model"]["input"]["scale"], m["model"]["input"]["zero_point"]) if kind == "int8" else x
            it.set_tensor(i["index"], xin[None, :, :, None].astype(i["dtype"]))
            it.invoke()
            y = it.get_tensor(o["index"])[0]
            z.append(dequantize(y, m["model"]["output"]["scale"], m["model"]["output"]["zero_point"])
                     if kind == "int8" else y)
        got[kind] = np.array(z, np.float64)
    assert np.abs(got["float"] - want).max() < 1e-3
    thr = clf.threshold_array[None, :]
    agree = (probabilities(got["int8"], False) >= thr) == (probabilities(want, False) >= thr)
    assert agree.mean() >= 0.95


def test_summary_prints_the_classifier_lines(exported, capsys):
    from firmware_export.cli import _summary

    _summary(exported["manifest"], exported["out"], written=True)
    text = capsys.readouterr().out
    assert "classifier parity on" in text and "decisions agree on" in text and "int8 logit Pearson" in text
    assert "classifier thresholds (probability / logit)" in text and "electrical-arc" in text
    assert "(alarm class)" in text
    assert "pass classifier_decisions" in text


# ---------------------------------------------------------------------------------------------------------------
# C sources


def test_classifier_header_holds_names_thresholds_and_identity(exported):
    from firmware_export.c_arrays import c_float

    text = (exported["out"] / "humwatch_classifier.h").read_text()
    d = _defines(text)
    c = exported["manifest"]["classifier"]
    classes = c["source"]["classes"]
    assert int(d["HW_CLF_N_CLASSES"]) == len(classes) and int(d["HW_CLF_SOFTMAX"]) == 0
    assert [s.strip('"') for s in _array(text, "hw_clf_class_names")] == classes
    thr = c["thresholds"]["classes"]
    assert _array(text, "hw_clf_threshold_prob") == [c_float(thr[k]["probability"]) for k in classes]
    assert _array(text, "hw_clf_threshold_logit") == [c_float(thr[k]["logit"]) for k in classes]
    assert _array(text, "hw_clf_alarm") == [str(int(thr[k]["alarm"])) for k in classes]
    assert d["HW_CLF_MODEL_HASH"] == f'"{c["source"]["hash"]}"'
    assert d["HW_CLF_FEATURE_PARAMS_HASH"] == f'"{DEFAULT_PARAMS.hash()}"'
    assert d["HW_CLF_ANOMALY_MODEL_HASH"] == f'"{exported["manifest"]["source"]["model_hash"]}"'
    assert float(d["HW_CLF_TEMPERATURE"].rstrip("f")) == pytest.approx(c["source"]["temperature"], rel=1e-6)
    for k in ("input", "output"):
        assert float(d[f"HW_CLF_{k.upper()}_SCALE"].rstrip("f")) == pytest.approx(c["model"][k]["scale"], rel=1e-7)
        assert int(d[f"HW_CLF_{k.upper()}_ZERO_POINT"]) == c["model"][k]["zero_point"]
    h = _defines((exported["out"] / "classifier_data.h").read_text())
    assert int(h["HW_CLASSIFIER_DATA_LEN"]) == c["model"]["sizes"]["tflite_int8"]
    assert int(h["HW_CLASSIFIER_TFLM_ARENA_BYTES"]) == c["tflm"]["arena_bytes_recommended"]


def test_telemetry_birth_names_the_classifier_classes_in_the_order_of_its_outputs(exported):
    """HW_TELEMETRY_BIRTH announces the classes whose probabilities the device sends, in the order it computes them
    (hw_clf_class_names, the order of the int8 model's outputs): the ingest keeps a device's class bytes only when
    their count is its birth message's, and names them by its classes."""
    from anomaly.decision import rule_from_dict

    out, m = exported["out"], exported["manifest"]
    birth = header_birth(out / "humwatch_telemetry.h")
    names = [s.strip('"') for s in _array((out / "humwatch_classifier.h").read_text(), "hw_clf_class_names")]
    assert list(birth.classes) == names == m["classifier"]["source"]["classes"] == list(_clf()(exported["root"] /
                                                                                              "clf").classes)
    assert sorted(birth.classes) == sorted(CLASSES)
    assert (birth.threshold, birth.runtime, birth.model_hash, birth.calibration, birth.rule) == (
        m["threshold"]["int8"], "int8", m["source"]["model_hash"], m["source"]["calibration_id"],
        rule_from_dict(m["threshold"]["device_rule"]))


def test_ingest_logs_the_class_probabilities_of_a_device_born_from_the_exported_header(exported, tmp_path):
    """A device publishing the exported HW_TELEMETRY_BIRTH and patches with its class bytes: the ingest logs each
    class's probability under its name (a birth without classes, as exports wrote before, logs none of them)."""
    import dataclasses

    from ingest_driver import Driver, calibrated_store

    from anomaly.decision import MOfN
    from calibration.monitoring.scorelog import read_scores

    payload = header_birth_payload(exported["out"] / "humwatch_telemetry.h")
    birth = header_birth(exported["out"] / "humwatch_telemetry.h")
    assert sorted(birth.classes) == sorted(CLASSES)
    n, C = 12, len(birth.classes)
    probs = np.random.default_rng(5).integers(0, 256, (n, C)) / 255  # exact in the message's bytes
    scores = np.full(n, birth.threshold / 2)
    store = calibrated_store(tmp_path / "sites", MOfN(3, 5), site="pump-c")
    t0 = time.time() - 600
    drv = Driver(store, site="pump-c")
    try:
        drv.birth("mcu-1", payload)
        drv.patches("mcu-1", range(n), t0, scores, classes=probs, int8=True)
        drv.birth("mcu-0", dataclasses.replace(birth, classes=()))
        drv.patches("mcu-0", range(n), t0, scores, classes=probs, int8=True)
        assert drv.ing.counts["logged"] == 2 * n, drv.said
    finally:
        drv.close()
    df = read_scores(store.site("pump-c").dir / "scores.sqlite", classes=True)
    assert [c for c in df.columns if c.startswith("p_")] == [f"p_{c}" for c in birth.classes]
    cols = [f"p_{c}" for c in birth.classes]
    new, old = df[df["device"] == "mcu-1"], df[df["device"] == "mcu-0"]
    assert new["seq"].tolist() == list(range(n)) and len(old) == n
    np.testing.assert_allclose(new[cols].to_numpy(), probs, atol=1e-3)  # logged as float16
    assert old[cols].isna().all().all()


@pytest.mark.skipif(GCC is None or GXX is None, reason="needs gcc with C++ support")
def test_both_models_and_headers_compile_into_one_firmware(exported, tmp_path):
    """Both byte arrays (16-byte aligned, distinct symbols) link into one object set, and every generated header
    and C reference can be included together in C99 (pedantic) and C++."""
    out = exported["out"]
    objs = []
    for stem in ("model_data", "classifier_data"):
        obj = tmp_path / f"{stem}.o"
        r = subprocess.run([GXX, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-c", str(out / f"{stem}.cc"),
                            "-o", str(obj)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        objs.append(obj)
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, str(objs[1])], capture_output=True, text=True).stdout
        assert re.search(r" R g_humwatch_classifier_data$", syms, flags=re.M), syms
    assert "alignas(16) const unsigned char g_humwatch_classifier_data[]" in (out / "classifier_data.cc").read_text()
    main = tmp_path / "main.c"
    main.write_text('#include "humwatch_frontend.h"\n#include "humwatch_classifier.h"\n#include "model_data.h"\n'
                    '#include "classifier_data.h"\n#include "hw_frontend.h"\n#include "hw_classifier.h"\n'
                    "int main(void) { return (int)(g_humwatch_model_data_len + g_humwatch_classifier_data_len "
                    "+ HW_CLF_N_CLASSES) == 0; }\n")
    for cmd in ([GCC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"],
                [GXX, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c++"]):
        for src in (main, out / "hw_classifier.c"):
            r = subprocess.run([*cmd, f"-I{out}", str(src)], capture_output=True, text=True)
            assert r.returncode == 0, (cmd, src.name, r.stderr)


@pytest.fixture(scope="module")
def hwclf(exported, tmp_path_factory) -> Path:
    """The classifier's C reference and its harness, built against the generated header."""
    if GCC is None:
        pytest.skip("no gcc on this machine")
    from firmware_export.frontend_ref import CLASSIFIER_HARNESS, DIR

    out = exported["out"]
    exe = tmp_path_factory.mktemp("clfref") / "hwclf"
    return build_c(out, [out / "hw_classifier.c", DIR / CLASSIFIER_HARNESS], exe)


def test_c_classifier_reference_matches_python(exported, hwclf, tmp_path):
    """Raw log-mel → int8 codes identical to the export's quantisation; a real int8 output → the same logits,
    probabilities and decisions as the Python side computes from the header's constants."""
    from ai_edge_litert.interpreter import Interpreter

    from firmware_export.classifier import probabilities
    from firmware_export.tflite import dequantize, quantize

    c = exported["manifest"]["classifier"]
    (iscale, izp), (oscale, ozp) = ((c["model"][k]["scale"], c["model"][k]["zero_point"]) for k in ("input", "output"))
    P = _raw_patches(exported["root"]).copy()
    P[-1] += 1.5  # a louder patch, some values clipped at the int8 range
    P[-1, :10] -= 12
    sel = P[[0, len(P) // 2, -1]]
    sel.astype(np.float32).tofile(tmp_path / "lm.f32")
    r = subprocess.run([str(hwclf), "quantise", str(tmp_path / "lm.f32"), str(tmp_path / "q.i8")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    qc = np.fromfile(tmp_path / "q.i8", np.int8).reshape(sel.shape)
    assert np.array_equal(qc, quantize(sel, iscale, izp))
    it = Interpreter(model_path=str(exported["out"] / "classifier_int8.tflite"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    thr = {k: v for k, v in c["thresholds"]["classes"].items()}
    classes = c["source"]["classes"]
    for x in qc:
        it.set_tensor(i["index"], x[None, :, :, None])
        it.invoke()
        yq = it.get_tensor(o["index"])[0]
        yq.tofile(tmp_path / "y.i8")
        r = subprocess.run([str(hwclf), "decide", str(tmp_path / "y.i8")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split("\n")
        z = dequantize(yq, oscale, ozp)
        p = probabilities(z[None, :], False)[0]
        for k, cls in enumerate(classes):
            name, zc, pc, f, a = lines[k].split()
            assert name == cls and float(zc) == pytest.approx(z[k], abs=1e-6)
            assert float(pc) == pytest.approx(p[k], abs=1e-6)
            assert int(f) == int(np.float32(pc) >= np.float32(thr[cls]["probability"])) and int(a) == thr[cls]["alarm"]


def test_c_classifier_alarm_rule_is_m_of_n_per_alarm_class(exported, hwclf):
    """Only alarm classes (the site's classifier_alarm) alarm, each under the site's m-of-n rule, as the monitor."""
    m = exported["manifest"]
    d = _defines((exported["out"] / "humwatch_classifier.h").read_text())
    mm, n = m["threshold"]["alarm_m"], m["threshold"]["alarm_n"]
    assert (int(d["HW_CLF_ALARM_M"]), int(d["HW_CLF_ALARM_N"])) == (mm, n)
    classes = m["classifier"]["source"]["classes"]
    alarm = np.array([m["classifier"]["thresholds"]["classes"][c]["alarm"] for c in classes])
    rng = np.random.default_rng(4)
    fired = rng.random((40, len(classes))) < 0.55
    r = subprocess.run([str(hwclf), "alarm", *["".join("1" if f else "0" for f in row) for row in fired]],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.array([[ch == "1" for ch in ln] for ln in r.stdout.split()])
    want = np.array([[alarm[k] and fired[max(0, j - n + 1): j + 1, k].sum() >= mm for k in range(len(classes))]
                     for j in range(len(fired))])
    assert np.array_equal(got, want) and got[:, alarm].any() and not got[:, ~alarm].any()


# ---------------------------------------------------------------------------------------------------------------
# errors (all stop before any conversion)


def _edited_copy(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "model.json").read_text())
    for path, value in changes.items():
        node = meta
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    (dst / "model.json").write_text(json.dumps(meta, indent=2))
    return dst


def _model_route(root: Path, out: Path, *extra):
    return invoke("export", "--model", root / "model", "--representative", root / "calib", "--out", out, *extra)


def test_yamnet_backbone_is_refused_with_one_line(clf_root, tmp_path):
    fake = _edited_copy(clf_root / "clf", tmp_path / "yam", architecture__backbone="yamnet")
    r = _model_route(clf_root, tmp_path / "o", "--classifier", fake)
    line = assert_one_error_line(r, "'yamnet' backbone cannot be exported", "YAMNet", exit_code=1)
    assert "cnn" in line and not (tmp_path / "o").exists()


def test_classifier_with_other_feature_params_is_refused(clf_root, tmp_path):
    from anomaly.features import FeatureParams

    other = FeatureParams(n_mels=40, f_max=7000.0)
    fake = _edited_copy(clf_root / "clf", tmp_path / "fp", feature_params=other.to_dict(),
                        feature_params_hash=other.hash())
    r = _model_route(clf_root, tmp_path / "o", "--classifier", fake)
    line = assert_one_error_line(r, "FeatureParams hash", other.hash(), DEFAULT_PARAMS.hash(), "n_mels=40",
                                 exit_code=1)
    assert "retrain" in line


@pytest.mark.parametrize("case", ["missing", "autoencoder", "both-flags", "site-hash"])
def test_classifier_errors_are_one_line(clf_root, tmp_path, case):
    from calibration.store import SiteStore

    if case == "missing":
        r = _model_route(clf_root, tmp_path / "o", "--classifier", tmp_path / "nope")
        assert_one_error_line(r, "classifier directory not found", "nope", exit_code=1)
    elif case == "autoencoder":
        r = _model_route(clf_root, tmp_path / "o", "--classifier", clf_root / "model")
        assert_one_error_line(r, "is not a fault classifier", exit_code=1)
    elif case == "both-flags":
        r = _model_route(clf_root, tmp_path / "o", "--classifier", clf_root / "clf", "--no-classifier")
        assert_one_error_line(r, "--classifier DIR or --no-classifier, not both", exit_code=1)
    else:  # the site's classifier changed since it was set (classifier_hash no longer matches)
        sites = tmp_path / "sites"
        shutil.copytree(clf_root / "sites", sites)
        changed = _edited_copy(clf_root / "clf", tmp_path / "clf2", temperature=0.5)
        toml = sites / "pump-c" / "site.toml"
        toml.write_text(toml.read_text().replace(str(clf_root / "clf"), str(changed)))
        assert SiteStore(sites).site("pump-c").classifier_dir() == changed
        r = invoke("export", "--site", "pump-c", "--sites-dir", sites, "--out", tmp_path / "o")
        assert_one_error_line(r, "changed since it was set on the site", exit_code=1)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# pure helpers (fast, no conversion)


def test_device_classifier_folds_normalisation_offset_and_temperature(clf_root):
    import torch

    from firmware_export.classifier import DeviceClassifier

    clf = _clf()(clf_root / "clf")
    clf.temperature_ = 0.37  # a temperature far from 1 and a non-trivial offset: the folding must be exact
    clf.logit_offset_ = np.array([-1.2, 0.3, 0.0, 2.1])
    P = _raw_patches(clf_root)[:5]
    with torch.no_grad():
        got = DeviceClassifier(clf).eval()(torch.from_numpy(P).unsqueeze(1)).double().numpy()
    want = clf.logits_of_patches(P) / clf.temperature_
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_range_gate_names_classes_that_cannot_fire_or_always_fire():
    from firmware_export.classifier import gates, logit_thresholds

    par = {"logit_scale": 1.0, "runtimes": {
        rt: {"max_abs_logit_diff": 0.0, "pearson": 1.0, "decision_agreement": 1.0,
             "decision_agreement_by_class": {"a": 1.0, "b": 1.0, "c": 1.0}}
        for rt in ("onnxruntime", "tflite_float", "tflite_int8")}}
    thr = logit_thresholds(np.array([0.5, 0.999, 0.01]))  # logits 0, +6.9, -4.6
    gs = {g["gate"]: g for g in gates(par, {"tflite_int8": 10_000}, 90_000, 95_000, (0.02, 0), thr, ["a", "b", "c"])}
    assert not gs["classifier_size"]["passed"] and "over by 5,000 B" in gs["classifier_size"]["detail"]
    rng = gs["classifier_range"]
    assert not rng["passed"] and rng["value"] == ["b", "c"]
    assert "b never fires" in rng["detail"] and "c always fires" in rng["detail"]
    assert all(gs[g]["passed"] for g in ("classifier_float_parity", "classifier_correlation", "classifier_decisions"))


def test_softmax_header_has_no_logit_thresholds_and_compiles(tmp_path):
    from firmware_export.c_arrays import classifier_header

    hdr = classifier_header(DEFAULT_PARAMS, ['a "quoted"', "b"], [0.4, 0.6], None, [True, False], (0.07, 38),
                            (0.1, -5), {"model_hash": "x", "temperature": 1.5, "softmax": True,
                                        "precision_target": 0.9, "backbone": "cnn"}, "test")
    assert "#define HW_CLF_SOFTMAX 1" in hdr and "hw_clf_threshold_logit" not in hdr.split("*/", 1)[1]
    (tmp_path / "humwatch_classifier.h").write_text(hdr)
    if GCC is None:
        pytest.skip("no gcc")
    from firmware_export.frontend_ref import CLASSIFIER_SOURCES, DIR

    for name in CLASSIFIER_SOURCES:
        shutil.copyfile(DIR / name, tmp_path / name)
    r = subprocess.run([GCC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
                        f"-I{tmp_path}", str(tmp_path / "hw_classifier.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_patch_sets_alternate_faults_between_calibration_and_parity():
    from firmware_export.classifier import patch_sets

    rep, check = np.zeros((5, 2, 2), np.float32), np.ones((7, 2, 2), np.float32)
    faults = np.arange(6 * 4, dtype=np.float32).reshape(6, 2, 2)
    extra = -np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2)
    s = patch_sets(rep, check, faults, ["x"] * 3 + ["y"] * 3, extra, ["z", "z"])
    assert len(s.representative) == 5 + 4 and len(s.faults) == 4 and len(s.normal) == 7
    assert s.fault_names == ["x", "y", "y", "z"] and s.calibration_faults == {"x": 2, "y": 1, "z": 1}
    assert not {tuple(f.ravel()) for f in s.faults} & {tuple(f.ravel()) for f in s.representative}


# ---------------------------------------------------------------------------------------------------------------
# further full exports


@pytest.mark.slow
def test_no_classifier_exports_the_anomaly_model_only(exported, tmp_path):
    root = exported["root"]
    out = tmp_path / "fw"
    r = invoke("export", "--site", "pump-c", "--sites-dir", root / "sites", "--out", out, "--no-classifier", "--json")
    assert r.exit_code == 0, r.output[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["classifier"] == {"included": False, "reason": "--no-classifier"}
    assert not {g["gate"] for g in m["gates"]["checks"]} & CLF_GATES
    assert not CLF_FILES & {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_failing_classifier_gate_writes_nothing_ae_backbone_via_model_route(exported, tmp_path):
    """An autoencoder-backbone classifier with ``--model --classifier`` and a budget that holds the autoencoder but
    not both models: the export runs (the AE-backbone classifier converts within the float gate), only
    ``classifier_size`` fails, exit 3, and the previous export in ``--out`` is left as it was."""
    from anomaly.detectors import load_detector
    from anomaly.modeldir import model_hash

    root = exported["root"]
    det = load_detector(root / "model")
    _train_classifier(root, tmp_path / "clf-ae", base=det, base_hash=model_hash(root / "model"))
    out = tmp_path / "fw"
    shutil.copytree(exported["out"], out)
    before = (out / "manifest.json").read_text()
    budget = exported["manifest"]["model"]["sizes"]["tflite_int8"] + 1000
    r = _model_route(root, out, "--classifier", tmp_path / "clf-ae", "--max-model-bytes", budget, "--json")
    assert r.exit_code == 3, r.output[-3000:]
    m = json.loads(r.stdout)
    assert m["status"] == "failed" and m["classifier"]["source"]["backbone"] == "ae"
    assert m["classifier"]["source"]["origin"] == "--classifier"
    failed = [g["gate"] for g in m["gates"]["checks"] if not g["passed"]]
    assert failed == ["classifier_size"], m["gates"]["checks"]
    assert "classifier_size" in r.stderr and "over by" in r.stderr
    assert m["classifier"]["parity"]["runtimes"]["tflite_float"]["max_abs_logit_diff"] < 1e-3
    assert not any(m["classifier"]["thresholds"]["classes"][c]["alarm"] for c in CLASSES)  # no site: no alarm classes
    assert (out / "manifest.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fw.")]


def test_classifier_with_more_classes_than_telemetry_carries_is_refused(clf_root, monkeypatch):
    from anomaly.modeldir import model_hash
    from calibration.fleet.telemetry import MAX_CLASSES
    from firmware_export import classifier as clf_export

    real = clf_export.load_classifier

    def many_classes(d, params):
        clf = real(d, params)
        clf.classes = [f"fault-{i}" for i in range(MAX_CLASSES + 1)]
        return clf

    monkeypatch.setattr(clf_export, "load_classifier", many_classes)
    with pytest.raises(ExportError, match=f"has {MAX_CLASSES + 1} classes.*at most {MAX_CLASSES} class"):
        clf_export.load_for_export(clf_root / "clf", DEFAULT_PARAMS, model_hash(clf_root / "model"), "--classifier")
