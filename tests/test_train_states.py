"""Operating-state labels (anomaly.states, ``humwatch train --states``): the CSV reader's checks, state-balanced
sampling, and training with and without labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_error_line, invoke

from anomaly.errors import DataError
from anomaly.features import DEFAULT_PARAMS
from anomaly.simulate import SimConfig, write_audio
from anomaly.states import describe_states, read_states
from anomaly.train import TrainConfig, _Sampler, split_recordings, state_weights

FAST = ("--epochs", "1", "--samples-per-epoch", "128", "--threads", "1")


def files(root: Path, *names: str) -> list[Path]:
    out = []
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        out.append(p)
    return out


def csv(root: Path, text: str) -> Path:
    p = root / "states.csv"
    p.write_text(text)
    return p


# --------------------------------------------------------------------------------------------------------------------
# read_states


def test_reads_by_name_and_by_path_with_or_without_header(tmp_path):
    fs = files(tmp_path, "a/normal_0.flac", "a/normal_1.flac", "b/normal_0.flac")
    # header, a path relative to the CSV's folder for the ambiguous name, a unique name for the other
    got = read_states(csv(tmp_path, "file,state\na/normal_0.flac,31V\nnormal_1.flac, 40V \nb/normal_0.flac,31V\n"),
                      fs)
    assert got == ["31V", "40V", "31V"]
    assert read_states(csv(tmp_path, f"{fs[0]},x\n{fs[1]},y\n\n{fs[2]},y\n"), fs) == ["x", "y", "y"]  # absolute


@pytest.mark.parametrize("text, needle", [
    ("normal_0.flac,31V\nnormal_1.flac,31V\n", r"every recording has the state '31V'; --states needs at least two"),
    ("normal_0.flac,31V\n", r"1 of 2 training recording\(s\) have no state: .*normal_1.flac"),
    ("normal_0.flac,31V\nnormal_1.flac,40V\nnormal_9.flac,40V\n", r"1 row\(s\) name no training recording: "
                                                                  r"normal_9.flac \(line 3\)"),
    ("normal_0.flac,31V\nnormal_0.flac,40V\nnormal_1.flac,40V\n", r"line 2: normal_0.flac is given two states, "
                                                                  r"'31V' and '40V'"),
    ("normal_0.flac;31V\n", r"line 1: expected two columns 'file,state', got 1"),
    ("normal_0.flac,31V,x\n", r"line 1: expected two columns 'file,state', got 3"),
    ("normal_0.flac,\nnormal_1.flac,40V\n", r"line 1: empty state"),
    ("file,state\n", r"no 'file,state' rows"),
])
def test_bad_labels_are_refused_naming_what_is_wrong(tmp_path, text, needle):
    fs = files(tmp_path, "normal_0.flac", "normal_1.flac")
    with pytest.raises(DataError, match=needle):
        read_states(csv(tmp_path, text), fs)


def test_ambiguous_name_is_not_guessed_and_missing_file_is_named(tmp_path):
    fs = files(tmp_path, "a/normal_0.flac", "b/normal_0.flac")
    with pytest.raises(DataError, match=r"name no training recording: normal_0.flac \(line 1\)"):
        read_states(csv(tmp_path, "normal_0.flac,x\na/normal_0.flac,y\n"), fs)
    with pytest.raises(DataError, match="states file not found"):
        read_states(tmp_path / "nope.csv", fs)


def test_describe_states():
    d = describe_states(["b", "a", "b"])
    assert d["counts"] == {"a": 1, "b": 2} and d["n_states"] == 2 and "same share" in d["use"]


# --------------------------------------------------------------------------------------------------------------------
# state-balanced sampling


def test_state_weights_give_every_state_the_same_share():
    w = state_weights(["a", "a", "a", "b"], [10, 10, 20, 5])
    assert w.sum() == pytest.approx(1.0)
    assert w[:3].sum() == pytest.approx(0.5) and w[3] == pytest.approx(0.5)
    assert w[2] == pytest.approx(2 * w[0])  # within a state: by length


def test_sampler_draws_states_equally_and_is_unchanged_without_labels():
    T = DEFAULT_PARAMS.patch_frames
    rng = np.random.default_rng(0)
    train = [rng.normal(size=(T * 4, 64)).astype(np.float32) + i for i in range(4)]  # recording i has mean i
    cfg = TrainConfig(gain_db=0.0, noise_std=0.0, spec_masks=False)
    s = _Sampler(train, T, cfg, np.random.default_rng(1), ["common", "common", "common", "rare"])
    x, _, _ = s.batch(4000)
    share_rare = np.mean(np.round(x.mean(axis=(1, 2))) == 3)
    assert share_rare == pytest.approx(0.5, abs=0.04)
    plain = _Sampler(train, T, cfg, np.random.default_rng(1))
    assert np.array_equal(plain.p, np.full(4, 0.25))


def test_split_tracks_which_recording_each_training_sequence_is():
    T = DEFAULT_PARAMS.patch_frames
    recs = [np.full((T * 2, 64), i, np.float32) for i in range(8)]
    recs.insert(3, np.zeros((T - 1, 64), np.float32))  # too short: dropped
    sp = split_recordings(recs, T, 0.25, 0)
    assert len(sp.train_index) == len(sp.train) == 6
    assert all(r[0, 0] == recs[i][0, 0] for r, i in zip(sp.train, sp.train_index, strict=True))
    assert 3 not in sp.train_index


# --------------------------------------------------------------------------------------------------------------------
# training with and without labels (CLI)


@pytest.fixture(scope="module")
def two_speeds(tmp_path_factory) -> Path:
    """4 normal pump recordings of 10 s: two at the default shaft rate, two faster."""
    root = tmp_path_factory.mktemp("states")
    for i in range(4):
        cfg = SimConfig("pump", "none", 0.0, "quiet", 40 + i, shaft_hz=29.5 if i < 2 else 35.0)
        write_audio(root / "train" / f"normal_{i}.flac", cfg, 10 / 60)
    (root / "states.csv").write_text("file,state\n" + "".join(f"normal_{i}.flac,{'slow' if i < 2 else 'fast'}\n"
                                                              for i in range(4)))
    return root


def test_train_with_states_stores_them_and_scores_like_any_model(two_speeds, tmp_path):
    out = tmp_path / "m"
    r = invoke("train", "--normal", two_speeds / "train", "--states", two_speeds / "states.csv", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "4 normal recordings" in r.output and "2 operating states" in r.output
    assert "fast (2), slow (2)" in r.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["states"]["counts"] == {"fast": 2, "slow": 2}
    from anomaly.detectors import load_detector

    det = load_detector(out)
    assert det.states_["n_states"] == 2
    r = invoke("score", two_speeds / "train" / "normal_0.flac", "--model", out)  # scoring needs no labels
    assert r.exit_code == 0, r.output


def test_train_without_states_has_no_states_section(two_speeds, tmp_path):
    out = tmp_path / "m"
    assert invoke("train", "--normal", two_speeds / "train", "--out", out, *FAST).exit_code == 0
    assert "states" not in json.loads((out / "model.json").read_text())


def test_train_refuses_bad_states_before_reading_audio(two_speeds, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("normal_0.flac,slow\nnormal_1.flac,slow\n")
    r = invoke("train", "--normal", two_speeds / "train", "--states", bad, "--out", tmp_path / "m", *FAST)
    assert r.exit_code != 0
    assert "2 of 4 training recording(s) have no state" in assert_one_error_line(r)
    assert not (tmp_path / "m").exists()
    r = invoke("train", "--normal", two_speeds / "train", "--states", two_speeds / "states.csv", "--detector",
               "iforest", "--out", tmp_path / "m")
    assert "--states is an option of the autoencoder" in assert_one_error_line(r)
