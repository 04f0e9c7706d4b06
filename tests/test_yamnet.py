"""YAMNet embeddings (anomaly/yamnet.py) for the fault classifier and the embedding detectors.

The real YAMNet is never downloaded: a small stand-in with YAMNet's signature (log-mel patches ``[n, 96, 64]`` in;
class scores ``[n, 521]`` and embeddings ``[n, 1024]`` out) is built here with Keras 2 (``tf_keras``, which the real
YAMNet code needs too) and saved as a SavedModel directory and as a TFLite file. Its embedding is a fixed random
linear map of per-band statistics of the patch (mean, max and std over time, mean absolute frame-to-frame change),
so the simulated fault classes are separable in it, though less well than in the scratch CNN's features.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import assert_one_error_line, invoke

from anomaly.audio import file_log_mel
from anomaly.classify import ClassifyConfig, FaultClassifier, evaluate_classifier, load_classifier
from anomaly.dataset import load_dataset, write_sim_dataset
from anomaly.detectors import EmbeddingDetector, fit_detector, load_detector
from anomaly.errors import DataError, ModelError
from anomaly.features import DEFAULT_PARAMS
from anomaly.yamnet import load_embedder, path_sha256

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")


def _to_tflite(model, path):
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _standin():
    """A YAMNet-shaped stand-in: ``[n, 96, 64]`` → (scores ``[n, 521]``, embeddings ``[n, 1024]``)."""
    x = keras.Input((96, 64), name="features")
    stats = [keras.layers.GlobalAveragePooling1D()(x), keras.layers.GlobalMaxPooling1D()(x),
             keras.layers.Lambda(lambda v: tf.math.reduce_std(v, axis=1))(x),
             keras.layers.GlobalAveragePooling1D()(keras.layers.Lambda(lambda v: tf.abs(v[:, 1:] - v[:, :-1]))(x))]
    h = keras.layers.Concatenate()(stats)  # [n, 256]
    emb = keras.layers.Dense(1024, kernel_initializer=keras.initializers.RandomNormal(0, 0.1, seed=1),
                             bias_initializer=keras.initializers.RandomNormal(0, 1.0, seed=2), name="embeddings")(h)
    scores = keras.layers.Dense(521, activation="sigmoid", name="scores")(emb)
    return keras.Model(x, [scores, emb])  # the 1024-d output second: the embedder must find it


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The stand-in as a SavedModel and a TFLite file, and three models with a wrong signature (TFLite)."""
    d = tmp_path_factory.mktemp("yamnet")
    m = _standin()
    m.save(d / "saved_model", save_format="tf")
    out = {"saved_model": d / "saved_model", "tflite": _to_tflite(m, d / "yamnet.tflite"), "dir": d}
    x = keras.Input((96, 64))
    out["scores_only"] = _to_tflite(keras.Model(x, keras.layers.Dense(521)(keras.layers.Flatten()(x))),
                                    d / "scores_only.tflite")
    f = keras.layers.GlobalAveragePooling1D()(x)
    out["two_1024"] = _to_tflite(keras.Model(x, [keras.layers.Dense(1024)(f), keras.layers.Dense(1024)(f)]),
                                 d / "two_1024.tflite")
    t = keras.Input((64, 96))
    out["transposed"] = _to_tflite(keras.Model(t, keras.layers.Dense(1024)(keras.layers.GlobalAveragePooling1D()(t))),
                                   d / "transposed.tflite")
    # the stand-in with a fixed batch of 1, and with no batch dimension at all ([96, 64] → [1024])
    for name, shape, fn in (("batch1", [1, 96, 64], lambda v: m(v)[1]),
                            ("rank2", [96, 64], lambda v: m(v[None])[1][0])):
        f = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
        conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], m)
        (d / f"{name}.tflite").write_bytes(conv.convert())
        out[name] = d / f"{name}.tflite"
    return out


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """8 clips/class to train on, 5/class held out (other seeds), and their raw log-mels."""
    root = tmp_path_factory.mktemp("ysim")
    train = load_dataset(write_sim_dataset(root / "train", 8, seed=1, severity_range=(0.4, 0.8)))
    test = load_dataset(write_sim_dataset(root / "test", 5, seed=2, severity_range=(0.4, 0.8)))
    return {"root": root, "train": train, "test": test,
            "train_recs": [file_log_mel(f, DEFAULT_PARAMS) for f in train.files],
            "test_recs": [file_log_mel(f, DEFAULT_PARAMS) for f in test.files]}


# ---------------------------------------------------------------------------------------------------------------------
# The embedder


def test_embedder_picks_the_1024_output_and_formats_agree(models):
    rng = np.random.default_rng(0)
    X = rng.normal(-4, 2, (70, 96, 64)).astype(np.float32)  # more than one internal batch of 64
    a = load_embedder(models["tflite"], threads=1)
    b = load_embedder(models["saved_model"], threads=1)
    assert (a.fmt, b.fmt) == ("tflite", "saved_model")
    assert b.output == "embeddings" and a.output_shape == [None, 1024] and a.input_shape == [None, 96, 64]
    ea, eb = a.embed(X), b.embed(X)
    assert ea.shape == (70, 1024) and ea.dtype == np.float32 and eb.dtype == np.float32
    assert np.allclose(ea, eb, atol=1e-4 * np.abs(eb).max())
    assert np.allclose(a.embed(X[:3]), ea[:3], atol=1e-5 * np.abs(ea).max())  # batching does not change a row
    assert a.embed(X[:0]).shape == (0, 1024)
    info = a.info()
    assert info["sha256"] == path_sha256(models["tflite"]) and info["path"] == str(models["tflite"].resolve())
    assert b.sha256 == path_sha256(models["saved_model"]) and len(b.sha256) == 64
    with pytest.raises(DataError, match=r"\[n, 96, 64\]"):
        a.embed(X[:, :, :32])


@pytest.mark.parametrize("name, shape", [("batch1", [1, 96, 64]), ("rank2", [96, 64])])
def test_fixed_batch_and_unbatched_inputs_run_patch_by_patch(models, name, shape):
    X = np.random.default_rng(1).normal(-4, 2, (3, 96, 64)).astype(np.float32)
    e = load_embedder(models[name], threads=1)
    assert e.input_shape == shape
    ref = load_embedder(models["tflite"], threads=1).embed(X)
    assert np.allclose(e.embed(X), ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name, needles", [
    ("scores_only", ["exactly one output [n, 1024]", "found no", "[None, 521]"]),
    ("two_1024", ["found 2", "[None, 1024]"]),
    ("transposed", ["input", "[None, 64, 96]", "[n, 96, 64]"]),
])
def test_wrong_signature_is_a_model_error(models, name, needles):
    with pytest.raises(ModelError) as e:
        load_embedder(models[name], threads=1)
    msg = str(e.value)
    assert "\n" not in msg and str(models[name].resolve()) in msg
    for n in needles:
        assert n in msg, msg


def test_not_a_model(models, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_embedder(tmp_path / "nope.tflite")
    (tmp_path / "x.tflite").write_text("not a model at all")
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_embedder(tmp_path / "x.tflite")
    (tmp_path / "yamnet.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ModelError, match="Keras weights"):
        load_embedder(tmp_path / "yamnet.h5")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ModelError, match="no saved_model.pb"):
        load_embedder(tmp_path / "empty_dir")


# ---------------------------------------------------------------------------------------------------------------------
# Fault classifier on YAMNet embeddings


@pytest.fixture(scope="module")
def fitted(sim, models):
    emb = load_embedder(models["tflite"], threads=1)
    cfg = ClassifyConfig(threads=1, seed=0)
    return FaultClassifier(sim["train"].classes, DEFAULT_PARAMS, cfg, yamnet=emb).fit(sim["train_recs"],
                                                                                      sim["train"].Y)


def test_classifier_map_api_and_roundtrip(fitted, sim, tmp_path):
    clf = fitted
    assert clf.arch_["backbone"] == "yamnet" and clf.arch_["embedding_dim"] == 1024
    assert clf.arch_["train_crop_offsets"] == [0, 24, 48, 72]
    assert clf.mean_.shape == (1024,) and clf.ece_["val_nll_after"] <= clf.ece_["val_nll_before"]
    m = evaluate_classifier(clf, sim["test_recs"], sim["test"].Y, sim["test"].classes)
    # the stand-in's features are cruder than the scratch CNN's: measured mAP 0.85-0.89 for seeds 0/1/2
    assert m["map"] >= 0.7, {c: r["ap"] for c, r in m["classes"].items()}
    X = np.stack([sim["test_recs"][0][:96], sim["test_recs"][1][96:192]])
    z = clf.logits_of_patches(X)
    assert z.shape == (2, 6) and np.allclose(clf.patch_logits(sim["test_recs"][0])[0], z[0])
    p = clf.probabilities_of_logits(z)
    assert p.shape == (2, 6) and ((p > 0) & (p < 1)).all()

    clf.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    y = meta["architecture"]["yamnet"]
    assert y["sha256"] == clf.yamnet.sha256 and y["format"] == "tflite" and y["output_shape"] == [None, 1024]
    assert meta["normalisation"]["input"] == "yamnet_embedding" and len(meta["normalisation"]["mean"]) == 1024
    back = load_classifier(tmp_path / "m")
    assert back.yamnet.path == clf.yamnet.path
    recs = sim["test_recs"][:6]
    assert np.allclose(back.predict_clips(recs), clf.predict_clips(recs), atol=1e-6)
    assert np.allclose(back.logits_of_patches(X), z, atol=1e-6)


def test_base_and_yamnet_are_exclusive(sim, models):
    emb = load_embedder(models["tflite"], threads=1)
    with pytest.raises(DataError, match="mutually exclusive"):
        FaultClassifier(sim["train"].classes, yamnet=emb, base=object())


def test_cli_classify_yamnet_train_evaluate_and_moved_file(sim, models, tmp_path):
    y = tmp_path / "yamnet.tflite"
    shutil.copy(models["tflite"], y)
    out = tmp_path / "m"
    r = invoke("classify", "train", "--data", sim["root"] / "train", "--out", out, "--embeddings", "yamnet",
               "--yamnet", y, "--threads", 1)
    assert r.exit_code == 0, r.output
    assert "YAMNet embeddings" in r.output and "saved classifier" in r.output
    r = invoke("classify", "evaluate", "--model", out, "--data", sim["root"] / "test", "--json", tmp_path / "e.json",
               "--threads", 1)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["map"] >= 0.7

    with y.open("ab") as f:  # modified
        f.write(b"\0")
    assert_one_error_line(invoke("classify", "evaluate", "--model", out, "--data", sim["root"] / "test"),
                          "has changed since", str(y.resolve()), "retrain with --yamnet", exit_code=1)
    y.rename(tmp_path / "elsewhere.tflite")  # moved
    assert_one_error_line(invoke("classify", "evaluate", "--model", out, "--data", sim["root"] / "test"),
                          "is missing", "put it back", exit_code=1)


def test_cli_yamnet_option_errors(sim, models, tmp_path):
    data = sim["root"] / "train"
    assert_one_error_line(invoke("classify", "train", "--data", data, "--out", tmp_path / "m", "--embeddings",
                                 "yamnet"), "--embeddings yamnet needs --yamnet PATH", "docs/classifier.md")
    assert_one_error_line(invoke("classify", "train", "--data", data, "--out", tmp_path / "m", "--yamnet",
                                 models["tflite"]), "--yamnet is only used with --embeddings yamnet")
    assert_one_error_line(invoke("classify", "train", "--data", data, "--out", tmp_path / "m", "--embeddings",
                                 "yamnet", "--yamnet", models["tflite"], "--base", tmp_path / "ae"),
                          "mutually exclusive")
    assert_one_error_line(invoke("classify", "train", "--data", data, "--out", tmp_path / "m", "--embeddings",
                                 "yamnet", "--yamnet", models["scores_only"]), "exactly one output [n, 1024]")
    assert_one_error_line(invoke("train", "--normal", data / "normal", "--out", tmp_path / "d", "--detector", "ocsvm",
                                 "--embeddings", "yamnet"), "--embeddings yamnet needs --yamnet PATH")
    assert_one_error_line(invoke("train", "--normal", data / "normal", "--out", tmp_path / "d", "--embeddings",
                                 "yamnet", "--yamnet", models["tflite"]), "for --detector ocsvm or iforest")
    assert_one_error_line(invoke("train", "--normal", data / "normal", "--out", tmp_path / "d", "--detector", "ocsvm",
                                 "--yamnet", tmp_path / "nope.tflite"), "--yamnet is only used")
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()
    r = invoke("classify", "train", "--help")
    assert r.exit_code == 0 and "--yamnet" in r.output and "docs/classifier.md" in r.output


# ---------------------------------------------------------------------------------------------------------------------
# Anomaly detectors on YAMNet embeddings


def test_cli_ocsvm_on_yamnet_then_score(sim, models, tmp_path):
    normal = sim["root"] / "train" / "normal"
    out = tmp_path / "det"
    r = invoke("train", "--normal", normal, "--out", out, "--detector", "ocsvm", "--embeddings", "yamnet",
               "--yamnet", models["saved_model"], "--threads", 1)
    assert r.exit_code == 0, r.output
    assert "YAMNet embeddings" in r.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["embedding"] == "yamnet" and meta["yamnet"]["sha256"] == path_sha256(models["saved_model"])
    assert meta["yamnet"]["format"] == "saved_model"
    files = [sim["test"].files[0], sim["test"].files[-1]]
    r = invoke("score", "--model", out, *files, "--out", tmp_path / "s.csv", "--threads", 1)
    assert r.exit_code == 0, r.output
    import pandas as pd

    s = pd.read_csv(tmp_path / "s.csv")
    assert len(s) == 20 and np.isfinite(s["score"]).all()


def test_iforest_on_yamnet_roundtrip_and_changed_model(sim, models, tmp_path):
    y = tmp_path / "y.tflite"
    shutil.copy(models["tflite"], y)
    normal = [r for r, c in zip(sim["train_recs"], sim["train"].Y, strict=True)
              if c[sim["train"].classes.index("normal")]]
    det = fit_detector("iforest", normal, embedding="yamnet", yamnet=y)
    assert isinstance(det, EmbeddingDetector) and det.yamnet.fmt == "tflite"
    det.save(tmp_path / "d")
    back = load_detector(tmp_path / "d")
    X = np.stack([sim["test_recs"][0][:96], sim["test_recs"][-1][:96]])
    assert np.allclose(back.score_samples(X), det.score_samples(X))
    y.write_bytes(models["scores_only"].read_bytes())
    with pytest.raises(ModelError, match="has changed since"):
        load_detector(tmp_path / "d")
    with pytest.raises(DataError, match="YAMNet embeddings need"):
        fit_detector("ocsvm", normal, embedding="yamnet")
