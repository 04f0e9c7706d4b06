"""``humwatch train / score / evaluate`` end to end on tiny simulated data (typer's CliRunner, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_one_error_line, invoke

from anomaly.audio import file_patches
from anomaly.features import DEFAULT_PARAMS
from anomaly.simulate import SimConfig, write_audio

FAST = ("--epochs", "1", "--samples-per-epoch", "128", "--threads", "1")








@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``<root>/pump/train``: 2 normal files of 20 s; ``<root>/pump/test``: 2 normal and 2 cavitation clips of 5 s."""
    root = tmp_path_factory.mktemp("site")
    for i in range(2):
        write_audio(root / "pump" / "train" / f"normal_{i}.flac", SimConfig("pump", "none", 0.0, "factory", 10 + i),
                    20 / 60)
        write_audio(root / "pump" / "test" / f"normal_{i}.flac", SimConfig("pump", "none", 0.0, "factory", 20 + i),
                    5 / 60)
        write_audio(root / "pump" / "test" / f"anomaly_cav_{i}.flac",
                    SimConfig("pump", "cavitation", 0.8, "factory", 30 + i), 5 / 60)
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "ae"
    r = invoke("train", "--normal", data / "pump" / "train", "--out", out, *FAST)
    return out, r


def n_patches(paths) -> int:
    return sum(len(file_patches(p, DEFAULT_PARAMS)[0]) for p in paths)


def test_train_writes_model_dir_and_prints_size(trained):
    out, r = trained
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.pt"]
    assert "2 normal recordings" in r.output
    assert f"saved ae model to {out}" in r.output
    assert "80,337 parameters, 2.48 M MACs/patch" in r.output
    assert "provisional threshold" in r.output
    # one epoch of at most 1 run: the limit ended training, with nothing to compare the loss with
    assert "reached the epoch limit 1 after a single epoch" in r.output and "try --epochs 10" in r.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["epochs"] == 1 and meta["training"]["samples_per_epoch"] == 128
    assert meta["training"]["threads"] == 1
    assert meta["training_data"]["n_files"] == 2 and len(meta["training_data"]["sha256"]) == 64


def test_score_csv(trained, data, tmp_path):
    model, _ = trained
    csv = tmp_path / "s.csv"
    r = invoke("score", data / "pump" / "test", "--model", model, "--out", csv)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(csv)
    assert list(df.columns) == ["file", "start_s", "score"]
    clips = sorted((data / "pump" / "test").iterdir())
    assert len(df) == n_patches(clips) == 20  # 5 s -> 5 patches of 0.96 s each
    assert sorted(set(df["file"])) == sorted(str(p) for p in clips)
    first = df[df["file"] == str(clips[0])]
    assert first["start_s"].tolist() == pytest.approx([0.0, 0.96, 1.92, 2.88, 3.84])
    assert (df["score"] > 0).all()
    assert "wrote 20 patch scores" in r.output and "threshold" in r.output


def test_score_parquet_has_band_errors(trained, data, tmp_path):
    model, _ = trained
    pq = tmp_path / "s.parquet"
    r = invoke("score", data / "pump" / "test", "--model", model, "--out", pq, "--reduce", "max")
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(pq)
    bands = [f"band_{i:02d}" for i in range(64)]
    assert list(df.columns) == ["file", "start_s", "score", *bands]
    assert len(df) == 20
    assert df[bands].mean(axis=1).to_numpy() == pytest.approx(df["score"].to_numpy(), rel=1e-5)  # default: MSE
    csv = tmp_path / "s.csv"
    assert invoke("score", data / "pump" / "test", "--model", model, "--out", csv).exit_code == 0
    assert pd.read_csv(csv)["score"].to_numpy() == pytest.approx(df["score"].to_numpy(), rel=1e-6)  # float32 rounding


def test_evaluate_writes_json(trained, data, tmp_path):
    model, _ = trained
    js = tmp_path / "m.json"
    r = invoke("evaluate", "--model", model, "--test", data, "--json", js)  # pump/train/ is skipped
    assert r.exit_code == 0, r.output
    m = json.loads(js.read_text())
    assert isinstance(m["auc"], float) and isinstance(m["pauc"], float)
    assert 0 <= m["auc"] <= 1 and 0 <= m["pauc"] <= 1
    assert m["n_files"] == 4 and m["reduce"] == "mean" and m["model"] == str(model)
    assert set(m["machines"]) == {"pump"}
    assert m["machines"]["pump"]["n_normal"] == 2 and m["machines"]["pump"]["n_anomaly"] == 2
    assert f"wrote {js}" in r.output and "pump" in r.output
    # pAUC in the DCASE evaluator's convention, said so, with the chance levels printed and stored
    assert m["chance"] == {"auc": 0.5, "pauc": 0.5, "pauc_raw": 0.05} and "standardised" in m["definitions"]["pauc"]
    out = " ".join(r.output.split())
    assert "AUC (chance 0.5)" in out and "pAUC p=0.1 (chance 0.5)" in out and "(chance 0.05)" in out
    assert "standardised partial AUC" in out and "raw partial area" in out


def test_train_iforest_end_to_end(data, tmp_path):
    out = tmp_path / "if"
    r = invoke("train", "--normal", data / "pump" / "train", "--out", out, "--detector", "iforest", *FAST)
    assert r.exit_code == 0, r.output
    assert "saved iforest model" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "state.npz"]
    js = tmp_path / "m.json"
    r = invoke("evaluate", "--model", out, "--test", data / "pump" / "test", "--json", js, "--reduce", "max")
    assert r.exit_code == 0, r.output
    assert set(json.loads(js.read_text())) >= {"auc", "pauc", "machines"}
    pq = tmp_path / "s.parquet"
    r = invoke("score", data / "pump" / "test", "--model", out, "--out", pq)
    assert r.exit_code == 0, r.output
    assert list(pd.read_parquet(pq).columns) == ["file", "start_s", "score"]  # no band errors without an AE


# --------------------------------------------------------------------------------------------------------------------
# One error line, no traceback


def test_unknown_detector(data, tmp_path):
    r = invoke("train", "--normal", data / "pump" / "train", "--out", tmp_path / "m", "--detector", "foo", *FAST)
    line = assert_one_error_line(r, "unknown detector 'foo'")
    assert "ae, ocsvm, iforest" in line
    assert not (tmp_path / "m").exists()


def test_unknown_embedding(data, tmp_path):
    r = invoke("train", "--normal", data / "pump" / "train", "--out", tmp_path / "m", "--detector", "ocsvm",
               "--embedding", "mfcc", *FAST)
    assert_one_error_line(r, "unknown embedding 'mfcc'")


@pytest.mark.parametrize("widths, needle", [("1,x", "--widths must be comma-separated integers"),
                                            ("8,16", "3-4 encoder widths")])
def test_bad_widths(data, tmp_path, widths, needle):
    r = invoke("train", "--normal", data / "pump" / "train", "--out", tmp_path / "m", "--widths", widths, *FAST)
    assert_one_error_line(r, needle)


def test_bad_bottleneck(data, tmp_path):
    r = invoke("train", "--normal", data / "pump" / "train", "--out", tmp_path / "m", "--bottleneck", "4", *FAST)
    assert_one_error_line(r, "bottleneck must be in 8..128")


def test_train_on_missing_dir(tmp_path):
    r = invoke("train", "--normal", tmp_path / "nope", "--out", tmp_path / "m", *FAST)
    assert_one_error_line(r, "not found", "nope")


def test_train_on_dir_without_audio(tmp_path):
    (tmp_path / "empty").mkdir()
    r = invoke("train", "--normal", tmp_path / "empty", "--out", tmp_path / "m", *FAST)
    assert_one_error_line(r, "no .wav or .flac files")


def test_evaluate_on_dir_without_labelled_files(trained, data, tmp_path):
    model, _ = trained
    r = invoke("evaluate", "--model", model, "--test", data / "pump" / "train" / "..", "--json", tmp_path / "x.json")
    assert r.exit_code == 0, r.output  # sanity: the full tree works
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "rec_0.flac").write_bytes((data / "pump" / "test" / "normal_0.flac").read_bytes())
    r = invoke("evaluate", "--model", model, "--test", bare, "--json", tmp_path / "m.json")
    assert_one_error_line(r, "no normal_*/anomaly_*")
    assert not (tmp_path / "m.json").exists()


def test_evaluate_only_train_files(trained, data):
    model, _ = trained
    r = invoke("evaluate", "--model", model, "--test", data / "pump" / "train")
    assert_one_error_line(r, "no anomaly_* files")


def test_score_with_missing_model(data, tmp_path):
    r = invoke("score", data / "pump" / "test", "--model", tmp_path / "nomodel")
    assert_one_error_line(r, "model directory not found", "nomodel")


def test_score_with_other_feature_params(trained, data, tmp_path):
    import shutil

    model = Path(shutil.copytree(trained[0], tmp_path / "m40"))
    meta = json.loads((model / "model.json").read_text())
    meta["feature_params"]["n_mels"] = 40
    (model / "model.json").write_text(json.dumps(meta))
    r = invoke("score", data / "pump" / "test", "--model", model)
    assert_one_error_line(r, "other front-end parameters", "n_mels=40 (expected 64)")
    r = invoke("evaluate", "--model", model, "--test", data)
    assert_one_error_line(r, "n_mels=40")


def test_score_with_corrupt_weights(trained, data, tmp_path):
    import shutil

    model = Path(shutil.copytree(trained[0], tmp_path / "bad"))
    with open(model / "weights.pt", "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 8)
    r = invoke("score", data / "pump" / "test", "--model", model)
    assert_one_error_line(r, "checksum mismatch")


def test_score_out_with_bad_suffix(trained, data, tmp_path):
    model, _ = trained
    r = invoke("score", data / "pump" / "test", "--model", model, "--out", tmp_path / "x.txt")
    assert_one_error_line(r, "--out must end in .csv or .parquet", "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_score_bad_reduce(trained, data):
    r = invoke("score", data / "pump" / "test", "--model", trained[0], "--reduce", "median")
    assert_one_error_line(r, "--reduce must be mean or max")


def test_score_missing_audio(trained, tmp_path):
    r = invoke("score", tmp_path / "nothing.wav", "--model", trained[0])
    assert_one_error_line(r, "not found", "nothing.wav")


def test_train_interpolating_gaussian_model(data, tmp_path):
    out = tmp_path / "interp"
    r = invoke("train", "--normal", data / "pump" / "train", "--out", out, *FAST, "--score", "gaussian",
               "--mask-frames", "24")
    assert r.exit_code == 0, r.output
    assert "9.93 M MACs/patch (4 passes)" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "scoring.npz", "weights.pt"]
    ev = tmp_path / "ev.json"
    assert invoke("evaluate", "--model", out, "--test", data / "pump" / "test", "--json", ev).exit_code == 0
    assert json.loads(ev.read_text())["auc"] > 0.9


@pytest.mark.parametrize("args, needle", [
    (["--score", "l1"], "score must be one of mse, gaussian"),
    (["--mask-frames", "25"], "--mask-frames must divide the patch length 96"),
    (["--detector", "ocsvm", "--score", "gaussian"], "options of the autoencoder"),
])
def test_bad_score_options(data, tmp_path, args, needle):
    r = invoke("train", "--normal", data / "pump" / "train", "--out", tmp_path / "m", *FAST, *args)
    assert_one_error_line(r, needle)
    assert not (tmp_path / "m").exists()
