"""The DCASE 2020 Task 2 baseline re-implementation used by bench/dcase.py (bench/dcase_baseline.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from torch import nn

pytest.importorskip("librosa")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import dcase_baseline as db  # noqa: E402

SR = 16000


def machine(seconds: float = 10.0, seed: int = 0, anomaly_db: float | None = None) -> np.ndarray:
    """Two steady tones over noise; ``anomaly_db`` adds a loud 3 kHz tone at that level (dB re full scale).

    The noise floor sits near 0 dB in the baseline's log-mel, where a barely trained network's output also starts,
    so the test clip's tone bins (about +20 dB) stand far out after only 2 epochs.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 1000 * t + seed) + 0.2 * rng.standard_normal(
        t.size)
    if anomaly_db is not None:
        x = x + 10 ** (anomaly_db / 20) * np.sin(2 * np.pi * 3000 * t)
    return x.astype(np.float32)


def write(path: Path, x: np.ndarray) -> Path:
    """32-bit float WAV (no clipping of the loud test tone), or 16-bit FLAC for a .flac name."""
    sf.write(str(path), x, SR, subtype="PCM_16" if path.suffix == ".flac" else "FLOAT")
    return path


def test_network_layer_sizes():
    net = db.build_network()
    linears = [m for m in net if isinstance(m, nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [(640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
                     (8, 128), (128, 128), (128, 128), (128, 128), (128, 640)]
    # Every hidden layer is Dense -> BatchNorm -> ReLU; the output layer is linear.
    layers = list(net)
    for i in range(9):
        lin, bn, act = layers[3 * i: 3 * i + 3]
        assert isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and isinstance(act, nn.ReLU)
        assert bn.num_features == lin.out_features
    assert len(layers) == 28 and isinstance(layers[-1], nn.Linear)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 9


def test_clip_vectors_shape_and_layout(tmp_path):
    import librosa

    x = machine()
    v = db.clip_vectors(write(tmp_path / "normal_0.flac", x))
    frames = 1 + len(x) // 512  # librosa's centred STFT
    assert v.shape == (frames - 4, 128 * 5) == (309, 640)
    assert v.dtype == np.float32 and np.isfinite(v).all()
    # Row i is frames i..i+4 one after the other, each the 128 log-mel bins in dB of power.
    y, _ = sf.read(str(tmp_path / "normal_0.flac"), dtype="float32")
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1024, hop_length=512, n_mels=128, power=2.0,
                                         pad_mode="reflect")
    lm = 10 * np.log10(mel + sys.float_info.epsilon)
    assert lm.shape == (128, frames)
    for i in (0, 100, 308):
        for t in range(5):
            np.testing.assert_allclose(v[i, 128 * t: 128 * (t + 1)], lm[:, i + t], rtol=1e-5, atol=1e-4)


def test_fit_and_score_clip(tmp_path):
    train = [write(tmp_path / f"normal_{i}.wav", machine(seed=i)) for i in range(3)]
    normal = write(tmp_path / "normal_test.wav", machine(seed=10))
    anomaly = write(tmp_path / "anomaly_test.wav", machine(seed=11, anomaly_db=-6))
    b = db.DcaseBaseline().fit(train, epochs=2, seed=0)
    assert len(b.history_["train_loss"]) == 2 and b.history_["n_val_vectors"] == math.ceil(3 * 309 * 0.1)
    s_norm, s_anom = b.score_clip(normal), b.score_clip(anomaly)
    assert isinstance(s_norm, float) and math.isfinite(s_norm) and math.isfinite(s_anom)
    assert s_anom > 1.2 * s_norm  # about 1.6x in practice
    # Deterministic for a seed.
    assert db.DcaseBaseline().fit(train, epochs=2, seed=0).score_clip(normal) == s_norm


def test_bench_state_labels_from_the_manifest_round_trip_through_the_cli_reader(tmp_path):
    import dcase

    from anomaly.states import read_states

    train = tmp_path / "toy" / "car" / "train"
    train.mkdir(parents=True)
    files = [train / f"normal_{i}.flac" for i in range(3)]
    for f in files:
        f.write_bytes(b"")
    rows = ["path\tlabel\toriginal_path"] + [
        f"toy/car/train/normal_{i}.flac\tnormal\tdev/ToyCar/train/section_00_source_train_normal_{i:04d}_car_B{i}_"
        f"spd_{31 if i else 40}V_mic_1.wav" for i in range(3)]
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    st = dcase.manifest_states(tmp_path, files)
    assert st == {"normal_0.flac": "car_B0_spd_40V", "normal_1.flac": "car_B1_spd_31V",
                  "normal_2.flac": "car_B2_spd_31V"}
    csv = dcase.states_csv(st, tmp_path / "states.csv")
    assert read_states(csv, files) == ["car_B0_spd_40V", "car_B1_spd_31V", "car_B2_spd_31V"]
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(rows[:2]) + "\n")  # a file without a row: no labels
    assert dcase.manifest_states(tmp_path, files) is None
