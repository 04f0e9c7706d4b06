"""The fault classifier: data loading, calibration, thresholds, the model and the `humwatch classify` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_one_error_line, invoke

from anomaly.audio import file_log_mel
from anomaly.classify import (
    ClassifyConfig,
    FaultClassifier,
    choose_threshold,
    clip_probabilities,
    evaluate_classifier,
    evaluate_probs,
    expected_calibration_error,
    fit_temperature,
    load_classifier,
    stratified_split,
)
from anomaly.dataset import SIM_CLASSES, load_dataset, write_sim_dataset
from anomaly.errors import DataError, ModelError
from anomaly.features import DEFAULT_PARAMS

SEV = (0.4, 0.8)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """12 clips/class for training, 8/class held out (different seeds), and their log-mels."""
    root = tmp_path_factory.mktemp("cls")
    train = load_dataset(write_sim_dataset(root / "train", 12, seed=1, severity_range=SEV))
    test = load_dataset(write_sim_dataset(root / "test", 8, seed=2, severity_range=SEV))
    return {"root": root, "train": train, "test": test,
            "train_recs": [file_log_mel(f, DEFAULT_PARAMS) for f in train.files],
            "test_recs": [file_log_mel(f, DEFAULT_PARAMS) for f in test.files]}


@pytest.fixture(scope="module")
def fitted(sim):
    cfg = ClassifyConfig(epochs=20, steps_per_epoch=30, threads=1, seed=0)
    return FaultClassifier(sim["train"].classes, DEFAULT_PARAMS, cfg).fit(sim["train_recs"], sim["train"].Y, 0.9)


# ---------------------------------------------------------------------------------------------------------------------
# Data


def test_sim_dataset_layout_and_loading(sim):
    ds = sim["train"]
    assert sorted(ds.classes) == sorted(SIM_CLASSES) and ds.layout == "folders"
    assert len(ds.files) == 12 * 6 and (ds.Y.sum(1) == 1).all() and set(ds.counts().values()) == {12}
    meta = (sim["root"] / "train" / "simulation.csv").read_text().splitlines()
    assert meta[0].startswith("file,class,machine,background,severity") and len(meta) == 1 + 72
    rows = [r.split(",") for r in meta[1:]]
    assert len({r[2] for r in rows}) == 4 and len({r[3] for r in rows}) == 3  # machines and backgrounds varied
    sev = [float(r[4]) for r in rows if r[1] != "normal"]
    assert min(sev) >= SEV[0] and max(sev) <= SEV[1]
    assert all(float(r[4]) == 0 for r in rows if r[1] == "normal")
    assert abs(len(file_log_mel(ds.files[0], DEFAULT_PARAMS)) / 100 - 10) < 0.1  # 10 s clips


def test_sim_dataset_refuses_non_empty_dir(sim):
    with pytest.raises(DataError, match="not an empty directory"):
        write_sim_dataset(sim["root"] / "train", 1)
    with pytest.raises(DataError, match="severity-range"):
        write_sim_dataset(sim["root"] / "new", 1, severity_range=(0.8, 0.2))


def _clips(d, names):
    import shutil

    src = sorted((d.parent / "train" / "normal").glob("*.flac"))[0]
    for n in names:
        (d / n).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, d / n)


def test_labels_csv_multi_label(tmp_path, sim):
    d = sim["root"] / "csvset"
    _clips(d, ["a.flac", "b.flac", "sub/c.flac"])
    (d / "labels.csv").write_text("file,labels\na.flac,normal\nb.flac,cavitation; electrical-arc\n\n"
                                  "# comment\nsub/c.flac,cavitation\n")
    ds = load_dataset(d)
    assert ds.layout == "labels.csv" and ds.classes == ["cavitation", "electrical-arc", "normal"]
    assert ds.Y.tolist() == [[0, 0, 1], [1, 1, 0], [1, 0, 0]]


@pytest.mark.parametrize("text, needle", [
    ("a.flac,normal\nb.flac\n", "line 2: expected 2 fields"),
    ("a.flac,normal\nb.flac,\n", "line 2: empty label"),
    ("a.flac,normal\nzzz.flac,normal\n", "line 2: unknown file zzz.flac"),
    ("a.flac,normal\na.flac,cavitation\n", "line 2: a.flac is listed twice"),
    ("a.flac,normal\nb.flac,normal\n", "at least 2 classes"),
    ("a.flac,normal;;x\n", "line 1: empty label"),
])
def test_labels_csv_errors(sim, text, needle):
    d = sim["root"] / f"bad{abs(hash(text))}"
    _clips(d, ["a.flac", "b.flac"])
    (d / "labels.csv").write_text(text)
    with pytest.raises(DataError, match=needle.replace("(", r"\(")):
        load_dataset(d)


def test_folder_errors(tmp_path, sim):
    d = sim["root"] / "folders"
    _clips(d, ["normal/a.flac", "cavitation/b.flac"])
    (d / "bearing-outer").mkdir()
    with pytest.raises(DataError, match="class folder .*bearing-outer is empty"):
        load_dataset(d)
    (d / "bearing-outer").rmdir()
    assert load_dataset(d).classes == ["cavitation", "normal"]
    import shutil

    shutil.rmtree(d / "cavitation")
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset(d)
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")


def test_stratified_split_keeps_every_class_on_both_sides():
    Y = np.repeat(np.eye(4, dtype=np.uint8), [2, 3, 10, 20], axis=0)
    tr, va = stratified_split(Y, 0.25, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(Y)
    assert (Y[tr].sum(0) >= 1).all() and (Y[va].sum(0) >= 1).all()
    with pytest.raises(DataError, match="at least 2 clips"):
        stratified_split(np.eye(3, dtype=np.uint8), 0.25, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Calibration and thresholds


def test_ece_known_values():
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([[1, 0]])) == 0.0
    # all p = 0.8 with 50 % positives: |0.8 - 0.5|
    assert expected_calibration_error(np.full((4, 1), 0.8), np.array([[1], [0], [1], [0]])) == pytest.approx(0.3)


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, size=(400, 3))
    Y = (rng.random(true.shape) < 1 / (1 + np.exp(-true))).astype(np.uint8)
    zs = [3.0 * true[i:i + 1] for i in range(len(true))]  # logits 3x too confident, one patch per clip
    t = fit_temperature(zs, Y)
    assert 2.4 < t < 3.6
    assert expected_calibration_error(clip_probabilities(zs, t), Y) < \
        expected_calibration_error(clip_probabilities(zs, 1.0), Y)


def test_choose_threshold_precision_target_and_fallback():
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1])
    r = choose_threshold(p, y, 0.9)
    assert not r["fallback"] and r["val_precision"] == 1.0 and 0.6 < r["threshold"] <= 0.7  # between 0.6 and 0.7
    r = choose_threshold(p, y, 0.7)
    assert not r["fallback"] and 0.2 < r["threshold"] <= 0.3  # lowest: 3 of 4 from 0.3 up are positive (0.75)
    r = choose_threshold(np.array([0.9, 0.8, 0.1]), np.array([0, 1, 1]), 0.9)  # the top score is a negative
    assert r["fallback"] and r["val_recall"] > 0


def test_evaluate_probs_confusions_and_map():
    Y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    P = np.array([[0.9, 0.8], [0.8, 0.1], [0.2, 0.9], [0.1, 0.7]])
    m = evaluate_probs(P, Y, ["a", "b"], np.array([0.5, 0.5]), 0.9)
    assert m["map"] == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)  # a: AP 1; b: a negative ranks 2nd
    assert m["confusions"]["a"]["b"] == 0.5 and m["confusions"]["b"]["a"] == 0.0
    assert m["classes"]["b"]["precision"] == pytest.approx(2 / 3) and m["below_precision_target"] == ["b"]


# ---------------------------------------------------------------------------------------------------------------------
# The model (acceptance at small size: measured mAP 0.98-0.99 on this set; asserted with a margin)


def test_classifier_map_calibration_and_thresholds(fitted, sim):
    clf = fitted
    m = evaluate_classifier(clf, sim["test_recs"], sim["test"].Y, sim["test"].classes)
    assert m["map"] >= 0.8, m["classes"]
    # temperature scaling lowers the calibration error on the validation clips it was fitted on: the NLL it minimises
    # always (T = 1 is a candidate); the 15-bin ECE on this seed (0.0511 -> 0.0494). Not on every seed: with 18
    # validation clips, seed 2 measured 0.0426 -> 0.0508 while its NLL fell.
    assert clf.ece_["val_nll_after"] <= clf.ece_["val_nll_before"]
    assert clf.ece_["val_after"] < clf.ece_["val_before"]
    assert 0.05 <= clf.temperature_ <= 20
    # thresholds: every class met the target on validation or is listed as a fallback
    for c in clf.classes:
        r = clf.thresholds_[c]
        assert r["fallback"] == (c in clf.fallbacks())
        if not r["fallback"]:
            assert r["val_precision"] >= 0.9
    # held-out: each class either meets the precision target or is named
    for c, r in m["classes"].items():
        assert r["meets_precision_target"] in (True, None) or c in m["below_precision_target"]
    assert clf.pos_weight_ == pytest.approx([5.0] * 6, rel=0.3)  # negatives / positives, 5 of 6 classes negative


def test_save_load_roundtrip(fitted, sim, tmp_path):
    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    for k in ("classes", "thresholds", "temperature", "ece", "threshold_fallbacks", "feature_params",
              "feature_params_hash", "base_model_hash", "normalisation", "architecture", "files"):
        assert k in meta
    clf = load_classifier(tmp_path / "m")
    recs = sim["test_recs"][:5]
    assert np.allclose(clf.predict_clips(recs), fitted.predict_clips(recs), atol=1e-6)
    (tmp_path / "m" / "weights.pt").write_bytes(b"junk")
    with pytest.raises(ModelError, match="checksum"):
        load_classifier(tmp_path / "m")


@pytest.fixture(scope="module")
def base_ae(sim, tmp_path_factory):
    from anomaly.detectors import fit_detector
    from anomaly.train import TrainConfig

    normal = [r for r, y in zip(sim["train_recs"], sim["train"].Y, strict=True)
              if y[sim["train"].classes.index("normal")]]
    det = fit_detector("ae", normal, DEFAULT_PARAMS, train_config=TrainConfig(epochs=2, samples_per_epoch=128,
                                                                              threads=1))
    d = tmp_path_factory.mktemp("ae") / "ae"
    det.save(d)
    return d, det


def test_base_frozen_and_finetuned(sim, base_ae):
    from anomaly.modeldir import model_hash

    d, det = base_ae
    cfg = dict(epochs=2, steps_per_epoch=5, threads=1)
    frozen = FaultClassifier(sim["train"].classes, DEFAULT_PARAMS, ClassifyConfig(**cfg), base=det,
                             base_hash=model_hash(d)).fit(sim["train_recs"], sim["train"].Y)
    enc0 = det.model_.encoder.state_dict()
    for k, v in frozen.net_.backbone.encoder.state_dict().items():
        assert torch.equal(v, enc0[k]), k  # frozen: weights and BatchNorm statistics untouched
    assert frozen.meta()["base_model_hash"] == model_hash(d) and frozen.arch_["backbone"] == "ae"
    tuned = FaultClassifier(sim["train"].classes, DEFAULT_PARAMS, ClassifyConfig(**cfg, finetune_layers=1,
                                                                                 finetune_lr=1e-4),
                            base=det).fit(sim["train_recs"], sim["train"].Y)
    st = tuned.net_.backbone.encoder.state_dict()
    assert torch.equal(st["0.weight"], enc0["0.weight"])  # first block still frozen
    last = max(k for k in st if k.endswith(".weight") and st[k].dim() == 4)
    assert not torch.equal(st[last], enc0[last])  # last block trained
    with pytest.raises(DataError, match="learning rate"):
        ClassifyConfig(finetune_lr=1.0)


def test_exclusive_softmax(sim):
    clf = FaultClassifier(sim["train"].classes, DEFAULT_PARAMS,
                          ClassifyConfig(epochs=2, steps_per_epoch=5, threads=1, exclusive=True))
    clf.fit(sim["train_recs"], sim["train"].Y)
    P = clf.predict_clips(sim["test_recs"][:4])
    assert np.allclose(P.sum(1), 1.0)
    Y2 = sim["train"].Y.copy()
    Y2[0, :] = 1
    with pytest.raises(DataError, match="exactly one label"):
        FaultClassifier(sim["train"].classes, config=ClassifyConfig(exclusive=True)).fit(sim["train_recs"], Y2)


# ---------------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_simulate_dataset(tmp_path):
    r = invoke("simulate", "--dataset", tmp_path / "ds", "--per-class", 1, "--seed", 5, "--severity-range", 0.5, 0.6)
    assert r.exit_code == 0, r.output
    assert "wrote 6 clips" in r.output
    assert sorted(p.name for p in (tmp_path / "ds").iterdir() if p.is_dir()) == sorted(SIM_CLASSES)
    r = invoke("simulate", "--dataset", tmp_path / "ds2", "--per-class", 1, "--severity-range", 0.9, 0.1)
    assert_one_error_line(r, "--severity-range")
    assert_one_error_line(invoke("simulate"), "--out", "--dataset")


def test_cli_train_and_evaluate(sim, tmp_path):
    out = tmp_path / "m"
    r = invoke("classify", "train", "--data", sim["root"] / "train", "--out", out, "--epochs", 2, "--threads", 1)
    assert r.exit_code == 0, r.output
    assert "temperature" in r.output and "ECE" in r.output and "saved classifier" in r.output
    r = invoke("classify", "evaluate", "--model", out, "--data", sim["root"] / "test", "--json", tmp_path / "e.json",
               "--threads", 1)
    assert r.exit_code == 0, r.output
    assert "mAP" in r.output and "bearing-inner" in r.output
    assert "AP (chance)" in r.output and "(chance 0." in r.output and "the share of positives" in r.output
    m = json.loads((tmp_path / "e.json").read_text())
    assert 0 < m["map_chance"] < 1 and all(0 < c["ap_chance"] < 1 for c in m["classes"].values())
    assert 0 <= m["map"] <= 1 and set(m["classes"]) == set(SIM_CLASSES) and "confusions" in m


def test_cli_corrupt_labels_file(sim):
    d = sim["root"] / "clibad"
    _clips(d, ["a.flac"])
    (d / "labels.csv").write_text("a.flac,normal\n\"unclosed,x\nb,c,d\n")
    r = invoke("classify", "train", "--data", d, "--out", d / "m")
    assert_one_error_line(r, "labels.csv line", exit_code=1)


def test_cli_empty_class_folder(sim):
    d = sim["root"] / "cliempty"
    _clips(d, ["normal/a.flac", "cavitation/b.flac"])
    (d / "electrical-arc").mkdir()
    r = invoke("classify", "train", "--data", d, "--out", d / "m")
    assert_one_error_line(r, "electrical-arc is empty", exit_code=1)


def test_cli_evaluate_errors(sim, tmp_path):
    assert_one_error_line(invoke("classify", "evaluate", "--model", tmp_path / "nope", "--data", sim["root"] / "test"),
                          "not a humwatch classifier")
    r = invoke("classify", "train", "--data", sim["root"] / "train", "--out", tmp_path / "m",
               "--finetune-layers", 1)
    assert_one_error_line(r, "--finetune-layers needs --base")


def test_cli_class_with_one_clip(sim):
    d = sim["root"] / "clione"
    _clips(d, ["normal/a.flac", "cavitation/b.flac", "cavitation/c.flac"])
    r = invoke("classify", "train", "--data", d, "--out", d / "m")
    assert_one_error_line(r, "at least 2 clips", "normal (1)", exit_code=1)
