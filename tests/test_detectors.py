"""Detectors (anomaly.detectors): the simulator smoke test, the scikit-learn style API, model directories, the embedding
detectors against scikit-learn, and the train/validation split (anomaly.train.split_recordings)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly.detectors import AutoencoderDetector, EmbeddingDetector, fit_detector, load_detector, summary_stats
from anomaly.errors import DataError, ModelError, NotFittedError, ParamsMismatchError
from anomaly.evaluate import auc_pauc
from anomaly.features import DEFAULT_PARAMS, log_mel, patches
from anomaly.model import ArchConfig, ConvAutoencoder
from anomaly.modeldir import model_hash, read_detector_meta
from anomaly.simulate import SimConfig, simulate
from anomaly.train import TrainConfig, split_recordings

FAST = TrainConfig(threads=1, epochs=2, samples_per_epoch=512)
TINY = TrainConfig(threads=1, epochs=1, samples_per_epoch=256)




def frames_of(cfg: SimConfig, seconds: float) -> np.ndarray:
    return np.asarray(log_mel(simulate(cfg, seconds), DEFAULT_PARAMS))


def pump(seed: int, fault: str = "none", severity: float = 0.0) -> SimConfig:
    return SimConfig("pump", fault, severity, "factory", seed)


@pytest.fixture(scope="module")
def sim():
    """3 x 60 s of normal pump audio in a factory, plus 30 s of normal and 30 s of cavitation (new seeds)."""
    train = [frames_of(pump(s), 60.0) for s in (101, 102, 103)]
    normal = np.asarray(patches(frames_of(pump(201), 30.0), DEFAULT_PARAMS))
    faulty = np.asarray(patches(frames_of(pump(202, "cavitation", 0.5), 30.0), DEFAULT_PARAMS))
    return {"train": train, "normal": normal, "faulty": faulty}


@pytest.fixture(scope="module")
def ae(sim):
    return AutoencoderDetector(train_config=FAST).fit(sim["train"])


@pytest.fixture(scope="module")
def ae_dir(ae, tmp_path_factory):
    return ae.save(tmp_path_factory.mktemp("models") / "ae")


@pytest.fixture
def ae_copy(ae_dir, tmp_path):
    """A private copy of the saved model directory, free to be damaged."""
    return Path(shutil.copytree(ae_dir, tmp_path / "m"))


def edit_meta(d: Path, fn) -> None:
    meta = json.loads((d / "model.json").read_text())
    fn(meta)
    (d / "model.json").write_text(json.dumps(meta, indent=2))


# --------------------------------------------------------------------------------------------------------------------
# The acceptance test


def test_smoke_autoencoder_separates_cavitation(sim, ae):
    sn, sa = ae.score_samples(sim["normal"]), ae.score_samples(sim["faulty"])
    assert len(sn) == len(sa) == 31
    y = np.r_[np.zeros(len(sn)), np.ones(len(sa))]
    auc, pa = auc_pauc(y, np.r_[sn, sa])
    assert auc > 0.9, (auc, pa)
    assert ae.history_["epochs_run"] == 2 and len(ae.history_["train_loss"]) == 2
    assert "held out" in ae.history_["split"]


# --------------------------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_scores_other_seed_differs(sim):
    X = sim["normal"][:8]
    a = AutoencoderDetector(train_config=TINY).fit(sim["train"]).score_samples(X)
    b = AutoencoderDetector(train_config=TINY).fit(sim["train"]).score_samples(X)
    c = AutoencoderDetector(train_config=TrainConfig(**{**TINY.to_dict(), "seed": 1})).fit(sim["train"])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c.score_samples(X))


# --------------------------------------------------------------------------------------------------------------------
# scikit-learn style API


def test_unfitted_detectors_raise_not_fitted():
    X = np.zeros((2, 96, 64), np.float32)
    for det in (AutoencoderDetector(), EmbeddingDetector("ocsvm"), EmbeddingDetector("iforest")):
        for call in (det.score_samples, det.decision_function, det.predict, det.clip_score):
            with pytest.raises(NotFittedError, match=r"not fitted yet.*call fit\(\)"):
                call(X)
    for call in (AutoencoderDetector().band_errors, AutoencoderDetector().embed, AutoencoderDetector().reconstruct):
        with pytest.raises(NotFittedError, match="AutoencoderDetector is not fitted"):
            call(X)
    with pytest.raises(NotFittedError):
        AutoencoderDetector().save("/nonexistent/never-written")


def test_decision_predict_clip_score(sim, ae):
    X = np.concatenate([sim["normal"][:10], sim["faulty"][:10]])
    s = ae.score_samples(X)
    assert s.shape == (20,) and s.dtype == np.float64 and np.isfinite(s).all()
    np.testing.assert_allclose(ae.decision_function(X), s - ae.threshold_, rtol=0, atol=1e-12)
    p = ae.predict(X)
    assert set(np.unique(p)) <= {0, 1} and p.shape == (20,)
    np.testing.assert_array_equal(p, (s > ae.threshold_).astype(int))
    assert ae.clip_score(X) == pytest.approx(s.mean(), rel=1e-12)
    assert ae.clip_score(X, reduce="max") == pytest.approx(s.max(), rel=1e-12)
    with pytest.raises(ValueError, match="reduce"):
        ae.clip_score(X, reduce="median")
    # the provisional threshold is mean + 4 sigma of the validation scores
    v = ae.validation_
    assert ae.threshold_ == pytest.approx(v["score_mean"] + 4 * v["score_std"])


@pytest.mark.parametrize("shape", [(2, 96, 40), (2, 95, 64), (96, 64), (1, 2, 96, 64)])
def test_wrong_patch_shape_is_data_error(ae, shape):
    for call in (ae.score_samples, ae.band_errors, ae.reconstruct, ae.embed):
        with pytest.raises(DataError, match=r"expected patches \[n, 96, 64\]"):
            call(np.zeros(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_patches_are_data_error(sim, ae, bad):
    X = sim["normal"][:3].copy()
    X[1, 5, 7] = bad
    with pytest.raises(DataError, match="NaN or Inf"):
        ae.score_samples(X)


def test_fit_rejects_non_finite_features(sim):
    recs = [r.copy() for r in sim["train"]]
    recs[0][10, 3] = np.nan
    with pytest.raises(DataError, match="NaN or Inf"):
        AutoencoderDetector(train_config=TINY).fit(recs)


def test_band_errors_reconstruct_embed(sim, ae):
    X = sim["faulty"][:6]
    bands = ae.band_errors(X)
    assert bands.shape == (6, 64) and (bands >= 0).all()
    np.testing.assert_allclose(bands.mean(1), ae.score_samples(X), rtol=1e-6)  # the default score: MSE
    s2, b2 = ae.score_with_bands(X)
    np.testing.assert_allclose(s2, ae.score_samples(X), rtol=1e-6)
    np.testing.assert_allclose(b2, bands, rtol=1e-6)
    rec = ae.reconstruct(X)
    assert rec.shape == (6, 96, 64) and np.isfinite(rec).all()
    # the reconstruction is in the raw log-mel domain: its error, normalised, is the score
    norm_err = (((rec - X) / ae.std_) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(norm_err, ae.score_samples(X), rtol=1e-4)
    assert ae.embed(X).shape == (6, 32)
    assert ae.score_samples(np.zeros((0, 96, 64), np.float32)).shape == (0,)


# --------------------------------------------------------------------------------------------------------------------
# Model directories


def test_save_load_round_trip(sim, ae, ae_dir):
    assert sorted(p.name for p in ae_dir.iterdir()) == ["model.json", "weights.pt"]
    X = np.concatenate([sim["normal"][:5], sim["faulty"][:5]])
    det = load_detector(ae_dir)
    assert isinstance(det, AutoencoderDetector)
    np.testing.assert_array_equal(det.score_samples(X), ae.score_samples(X))
    np.testing.assert_array_equal(det.band_errors(X), ae.band_errors(X))
    assert det.threshold_ == ae.threshold_
    assert det.arch == ae.arch

    meta = json.loads((ae_dir / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["detector"] == "ae"
    assert meta["feature_params"] == DEFAULT_PARAMS.to_dict()
    assert meta["feature_params_hash"] == DEFAULT_PARAMS.hash()
    assert len(meta["normalisation"]["mean"]) == len(meta["normalisation"]["std"]) == 64
    arch = meta["architecture"]
    assert arch["widths"] == [8, 16, 32, 32] and arch["bottleneck"] == 32
    assert arch["params"] == 80337 and arch["macs_per_patch"] == 2_482_176
    assert arch["forward_passes_per_patch"] == 1 and meta["score"] == "mse"
    tr = meta["training"]
    assert isinstance(tr["train_loss"], list) and len(tr["train_loss"]) == 2
    assert len(tr["val_loss"]) == 2 and tr["epochs"] == 2 and tr["samples_per_epoch"] == 512 and tr["seed"] == 0
    assert {"best_epoch", "best_val_loss", "split"} <= set(tr)
    v = meta["validation"]
    assert v["n_patches"] >= 1 and v["score_std"] >= 0 and v["score_p99"] >= v["score_mean"] - 1e-12
    assert meta["threshold"] == pytest.approx(v["score_mean"] + 4 * v["score_std"])
    assert set(meta["files"]) == {"weights.pt"} and re.fullmatch(r"[0-9a-f]{64}", meta["files"]["weights.pt"])

    state = torch.load(ae_dir / "weights.pt", weights_only=True)  # a plain state dict, no pickled objects
    assert isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())
    assert set(state) == set(ae.model_.state_dict())

    h = model_hash(ae_dir)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    load_detector(ae_dir)
    assert model_hash(ae_dir) == h == model_hash(str(ae_dir))


def test_model_hash_changes_with_weights(ae_copy):
    h = model_hash(ae_copy)
    with open(ae_copy / "weights.pt", "r+b") as f:
        f.seek(-3, 2)
        f.write(b"\x00\x01\x02")
    assert model_hash(ae_copy) != h


def test_save_replaces_an_existing_dir(ae, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "stale.txt").write_text("old")
    ae.save(d)
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "weights.pt"]


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelError, match="model directory not found"):
        load_detector(tmp_path / "nope")


def test_dir_without_model_json(tmp_path):
    with pytest.raises(ModelError, match="no model.json; train one with `humwatch train`"):
        load_detector(tmp_path)


@pytest.mark.parametrize("text, needle", [
    ("{not json", "corrupt JSON"),
    ("", "corrupt JSON"),
    ("[1, 2]", "not a humwatch model description"),
    ('{"format_version": 1}', "not a humwatch model description"),
])
def test_corrupt_model_json(ae_copy, text, needle):
    (ae_copy / "model.json").write_text(text)
    with pytest.raises(ModelError, match=needle):
        load_detector(ae_copy)


def test_binary_garbage_model_json(ae_copy):
    (ae_copy / "model.json").write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ModelError, match="corrupt JSON"):
        load_detector(ae_copy)


def test_flipped_weight_bytes_give_checksum_mismatch(ae_copy):
    data = bytearray((ae_copy / "weights.pt").read_bytes())
    mid = len(data) // 2
    data[mid: mid + 4] = bytes(b ^ 0xFF for b in data[mid: mid + 4])
    (ae_copy / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights.pt: checksum mismatch"):
        load_detector(ae_copy)


def test_missing_weights_file(ae_copy):
    (ae_copy / "weights.pt").unlink()
    with pytest.raises(ModelError, match="missing weights file weights.pt"):
        load_detector(ae_copy)


def _replace_weights(d: Path, data: bytes) -> None:
    import hashlib

    (d / "weights.pt").write_bytes(data)
    edit_meta(d, lambda m: m["files"].update({"weights.pt": hashlib.sha256(data).hexdigest()}))


def test_garbage_weights_with_updated_checksum(ae_copy):
    _replace_weights(ae_copy, b"this is not a torch file" * 10)
    with pytest.raises(ModelError, match="weights.pt: corrupt or incompatible weights"):
        load_detector(ae_copy)


def test_weights_of_another_architecture(ae_copy, tmp_path):
    other = ConvAutoencoder(ArchConfig(widths=(8, 16, 32)))
    torch.save(other.state_dict(), tmp_path / "w.pt")
    _replace_weights(ae_copy, (tmp_path / "w.pt").read_bytes())
    with pytest.raises(ModelError, match="corrupt or incompatible weights"):
        load_detector(ae_copy)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_in_weights_is_refused(ae_copy, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _replace_weights(ae_copy, pickle.dumps({"x": Evil()}))
    with pytest.raises(ModelError, match="corrupt or incompatible weights"):
        load_detector(ae_copy)


def test_newer_format_version(ae_copy):
    edit_meta(ae_copy, lambda m: m.update(format_version=99))
    with pytest.raises(ModelError, match="model format 99 is newer.*upgrade humwatch"):
        load_detector(ae_copy)
    with pytest.raises(ModelError, match="newer"):
        read_detector_meta(ae_copy)


def test_unknown_detector_kind(ae_copy):
    edit_meta(ae_copy, lambda m: m.update(detector="knn"))
    with pytest.raises(ModelError, match="unknown detector 'knn'"):
        load_detector(ae_copy)


def test_incomplete_description(ae_copy):
    edit_meta(ae_copy, lambda m: m.pop("normalisation"))
    with pytest.raises(ModelError, match="incomplete model description"):
        load_detector(ae_copy)


def test_non_integer_format_version_is_model_error(ae_copy):
    edit_meta(ae_copy, lambda m: m.update(format_version="1"))
    with pytest.raises(ModelError):
        load_detector(ae_copy)


def test_missing_threshold_is_model_error(ae_copy):
    edit_meta(ae_copy, lambda m: m.pop("threshold"))
    with pytest.raises(ModelError):
        load_detector(ae_copy)


def test_files_not_a_mapping_is_model_error(ae_copy):
    edit_meta(ae_copy, lambda m: m.update(files=["weights.pt"]))
    with pytest.raises(ModelError):
        load_detector(ae_copy)


def test_params_mismatch_names_the_field(ae_copy):
    edit_meta(ae_copy, lambda m: m["feature_params"].update(n_mels=40))
    with pytest.raises(ParamsMismatchError, match=r"n_mels=40 \(expected 64\)") as e:
        load_detector(ae_copy)
    assert "patch_frames" not in str(e.value) and str(ae_copy) in str(e.value)
    assert read_detector_meta(ae_copy)["feature_params"]["n_mels"] == 40  # read_meta alone does not compare parameters


def test_unknown_feature_params_field(ae_copy):
    edit_meta(ae_copy, lambda m: m["feature_params"].update(pre_emphasis=0.97))
    with pytest.raises(ModelError, match=r"bad feature_params.*pre_emphasis.*newer humwatch"):
        load_detector(ae_copy)


# --------------------------------------------------------------------------------------------------------------------
# Embedding detectors against scikit-learn


def standardised_embeddings(recs, seed: int, val_fraction: float = 0.15):
    """Reproduce EmbeddingDetector.fit's data: grid patches, seeded permutation, stats of the training part."""
    P = np.concatenate([r[: r.shape[0] // 96 * 96].reshape(-1, 96, 64) for r in recs]).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(P))
    n_val = max(1, int(len(P) * val_fraction))
    E = summary_stats(P)
    mean = E[order[n_val:]].mean(0)
    std = np.maximum(E[order[n_val:]].std(0), 1e-6)
    return (E - mean) / std, order[n_val:], mean, std


@pytest.fixture(scope="module")
def ocsvm(sim):
    return EmbeddingDetector("ocsvm", "stats", seed=0).fit(sim["train"])


@pytest.fixture(scope="module")
def iforest(sim):
    return EmbeddingDetector("iforest", "stats", seed=3).fit(sim["train"])


def test_ocsvm_matches_sklearn(sim, ocsvm):
    from sklearn.svm import OneClassSVM

    Z, train_idx, mean, std = standardised_embeddings(sim["train"], seed=0)
    np.testing.assert_allclose(ocsvm.emb_mean_, mean, rtol=1e-6)
    np.testing.assert_allclose(ocsvm.emb_std_, std, rtol=1e-6)
    ref = OneClassSVM(gamma="scale", nu=0.05).fit(Z[train_idx])
    X = np.concatenate([sim["normal"], sim["faulty"]])
    Zx = (summary_stats(X) - mean) / std
    np.testing.assert_allclose(ocsvm.score_samples(X), -ref.decision_function(Zx), rtol=0, atol=1e-6)
    sn, sa = ocsvm.score_samples(sim["normal"]), ocsvm.score_samples(sim["faulty"])
    assert auc_pauc(np.r_[np.zeros(len(sn)), np.ones(len(sa))], np.r_[sn, sa])[0] > 0.8


def test_iforest_matches_sklearn(sim, iforest):
    from sklearn.ensemble import IsolationForest

    Z, train_idx, mean, std = standardised_embeddings(sim["train"], seed=3)
    ref = IsolationForest(n_estimators=200, random_state=3).fit(Z[train_idx])
    X = np.concatenate([sim["normal"], sim["faulty"]])
    Zx = (summary_stats(X) - mean) / std
    ours = iforest.score_samples(X)
    np.testing.assert_allclose(ours, -ref.score_samples(Zx), rtol=0, atol=1e-6)
    assert ((ours > 0) & (ours < 1)).all()


@pytest.mark.parametrize("name", ["ocsvm", "iforest"])
def test_embedding_round_trip(request, sim, tmp_path, name):
    det = request.getfixturevalue(name)
    d = det.save(tmp_path / name)
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "state.npz"]
    with np.load(d / "state.npz", allow_pickle=False) as z:
        assert "emb_mean" in z.files and all(z[k].dtype != object for k in z.files)
    meta = json.loads((d / "model.json").read_text())
    assert meta["detector"] == name and meta["embedding"] == "stats" and set(meta["files"]) == {"state.npz"}
    back = load_detector(d)
    assert isinstance(back, EmbeddingDetector) and back.kind == name
    X = np.concatenate([sim["normal"][:6], sim["faulty"][:6]])
    np.testing.assert_array_equal(back.score_samples(X), det.score_samples(X))
    assert back.threshold_ == det.threshold_
    with pytest.raises(DataError, match="expected patches"):
        back.score_samples(X[:, :, :40])


def test_corrupt_state_npz(ocsvm, tmp_path):
    import hashlib

    d = ocsvm.save(tmp_path / "o")
    data = b"PK\x03\x04 not really a zip"
    (d / "state.npz").write_bytes(data)
    edit_meta(d, lambda m: m["files"].update({"state.npz": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(ModelError, match="corrupt detector state"):
        load_detector(d)


def test_ae_embedding_fit_and_round_trip(sim, tmp_path):
    det = fit_detector("ocsvm", sim["train"], embedding="ae", train_config=TINY)
    assert isinstance(det, EmbeddingDetector) and det.embedding == "ae"
    assert isinstance(det.ae, AutoencoderDetector)
    X = np.concatenate([sim["normal"][:6], sim["faulty"][:6]])
    s = det.score_samples(X)
    assert s.shape == (12,) and np.isfinite(s).all()
    d = det.save(tmp_path / "oa")
    assert (d / "ae" / "model.json").is_file() and (d / "ae" / "weights.pt").is_file()
    meta = json.loads((d / "model.json").read_text())
    assert meta["ae_model"] == "ae" and set(meta["files"]) == {"state.npz", "ae/model.json", "ae/weights.pt"}
    back = load_detector(d)
    assert back.embedding == "ae" and isinstance(back.ae, AutoencoderDetector)
    np.testing.assert_array_equal(back.score_samples(X), s)
    # the encoder is covered by the checksums too
    with open(d / "ae" / "weights.pt", "r+b") as f:
        f.seek(-2, 2)
        f.write(b"\xaa\x55")
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_detector(d)


def test_embedding_detector_arguments():
    with pytest.raises(ValueError, match="kind"):
        EmbeddingDetector("knn")
    with pytest.raises(ValueError, match="embedding"):
        EmbeddingDetector("ocsvm", embedding="wav2vec")
    with pytest.raises(ValueError, match="needs a fitted AutoencoderDetector"):
        EmbeddingDetector("ocsvm", embedding="ae")
    with pytest.raises(DataError, match="unknown detector 'knn'"):
        fit_detector("knn", [np.zeros((200, 64), np.float32)])


def test_embedding_needs_four_patches():
    with pytest.raises(DataError, match="at least 4 normal patches"):
        EmbeddingDetector("ocsvm").fit([np.zeros((3 * 96 + 10, 64), np.float32)])


def test_embedding_fit_rejects_wrong_mel_count():
    rec = np.random.default_rng(0).normal(size=(768, 40)).astype(np.float32)
    with pytest.raises(DataError):
        EmbeddingDetector("ocsvm").fit([rec, rec, rec])


def test_autoencoder_fit_rejects_wrong_mel_count():
    rec = np.random.default_rng(0).normal(size=(768, 40)).astype(np.float32)
    with pytest.raises(DataError):
        AutoencoderDetector(train_config=TINY).fit([rec, rec, rec])


# --------------------------------------------------------------------------------------------------------------------
# split_recordings


def test_split_holds_out_whole_recordings_when_five_or_more():
    recs = [np.full((300 + 10 * i, 64), float(i), np.float32) for i in range(6)]
    sp = split_recordings(recs, 96, 0.2, seed=0)  # round(6 * 0.2) = 1 recording held out
    assert sp.how == "1 of 6 recordings held out"
    assert len(sp.train) == 5
    train_ids = {int(r[0, 0]) for r in sp.train}
    held = set(range(6)) - train_ids
    assert len(held) == 1
    (h,) = held
    assert all(r.shape[0] == 300 + 10 * int(r[0, 0]) for r in sp.train)  # whole recordings, not cut
    assert sp.val.shape == ((300 + 10 * h) // 96, 96, 64) and (sp.val == h).all()
    assert split_recordings(recs, 96, 0.2, seed=0).how == sp.how  # seeded


def test_split_takes_the_tail_with_few_recordings():
    recs = [np.arange(1000 * 64, dtype=np.float32).reshape(1000, 64) + 1e6 * i for i in range(3)]
    sp = split_recordings(recs, 96, 0.15, seed=0)
    assert sp.how == "last 15% of each recording held out"
    assert [r.shape[0] for r in sp.train] == [850, 850, 850]
    assert sp.val.shape == (3, 96, 64)  # 150 tail frames -> one patch each
    for i, r in enumerate(sp.train):
        np.testing.assert_array_equal(r, recs[i][:850])
    np.testing.assert_array_equal(sp.val[0], recs[0][850:946])


def test_split_keeps_short_recordings_for_training():
    recs = [np.zeros((1000, 64), np.float32), np.ones((300, 64), np.float32)]
    sp = split_recordings(recs, 96, 0.15, seed=0)
    assert [r.shape[0] for r in sp.train] == [850, 300]
    assert sp.val.shape == (1, 96, 64) and (sp.val == 0).all()


def test_split_too_little_audio():
    with pytest.raises(DataError, match="too little normal audio"):
        split_recordings([np.zeros((300, 64), np.float32)] * 3, 96, 0.15, seed=0)
    with pytest.raises(DataError, match="no recording holds one whole patch"):
        split_recordings([np.zeros((95, 64), np.float32)] * 8, 96, 0.15, seed=0)
    with pytest.raises(DataError, match="no recording holds one whole patch"):
        split_recordings([], 96, 0.15, seed=0)


def test_split_minimum_in_message_is_sufficient():
    with pytest.raises(DataError) as e:
        split_recordings([np.zeros((300, 64), np.float32)] * 3, 96, 0.15, seed=0)
    need_s = float(re.search(r"at least ([0-9.]+) s", str(e.value)).group(1))
    n = int(np.ceil(need_s * 100)) + 1  # 10 ms hop
    split_recordings([np.zeros((n, 64), np.float32)] * 3, 96, 0.15, seed=0)


def test_fit_on_patch_array(sim):
    """Patches [n, T, M] are accepted as well as recordings (each patch then counts as a recording)."""
    X = np.concatenate([sim["normal"][:20]])
    det = AutoencoderDetector(train_config=TrainConfig(threads=1, epochs=1, samples_per_epoch=128)).fit(X)
    assert det.history_["split"] == "3 of 20 recordings held out"
    assert det.score_samples(X[:2]).shape == (2,)


def test_resaving_a_loaded_model_keeps_its_metadata(ae_dir, tmp_path):
    det = load_detector(ae_dir)
    det.save(tmp_path / "again")
    a = json.loads((ae_dir / "model.json").read_text())
    b = json.loads((tmp_path / "again" / "model.json").read_text())
    assert b["validation"] == a["validation"]
    for key in ("epochs", "samples_per_epoch", "threads", "seed"):
        assert b["training"][key] == a["training"][key]
    assert b["threshold"] == a["threshold"] and b["normalisation"] == a["normalisation"]


# --------------------------------------------------------------------------------------------------------------------
# Opt-in: the interpolation objective and the Gaussian (Mahalanobis) score


@pytest.fixture(scope="module")
def interp(sim, tmp_path_factory):
    cfg = TrainConfig(**{**FAST.to_dict(), "mask_frames": 24, "score": "gaussian"})
    det = AutoencoderDetector(train_config=cfg).fit(sim["train"])
    return det, det.save(tmp_path_factory.mktemp("models") / "interp")


def test_gaussian_score_is_the_mahalanobis_distance_of_log_band_errors(sim, interp):
    det, _ = interp
    X = sim["faulty"][:6]
    bands = det.band_errors(X)
    z = np.log(bands + 1e-4) - det.gauss_mean_
    np.testing.assert_allclose(np.einsum("ij,jk,ik->i", z, det.gauss_prec_, z), det.score_samples(X), rtol=1e-6)
    s2, b2 = det.score_with_bands(X)
    np.testing.assert_allclose(s2, det.score_samples(X), rtol=1e-6)
    np.testing.assert_allclose(b2, bands, rtol=1e-6)
    # the stitched interpolations are in the raw log-mel domain; their normalised error gives the band errors
    rec = det.reconstruct(X)
    np.testing.assert_allclose((((rec - X) / det.std_) ** 2).mean(axis=1), bands, rtol=1e-4)
    # the simulator sanity check holds for this variant too
    sn, sa = det.score_samples(sim["normal"]), det.score_samples(sim["faulty"])
    assert auc_pauc(np.r_[np.zeros(len(sn)), np.ones(len(sa))], np.r_[sn, sa])[0] > 0.9


def test_gaussian_model_round_trip_and_cost(sim, interp):
    det, d = interp
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "scoring.npz", "weights.pt"]
    meta = json.loads((d / "model.json").read_text())
    assert meta["score"] == "mahalanobis of log band errors"
    assert meta["architecture"]["forward_passes_per_patch"] == 4
    assert meta["architecture"]["macs_per_patch"] == 4 * 2_482_176  # four masked passes, under the 10 M budget
    with np.load(d / "scoring.npz", allow_pickle=False) as z:  # plain arrays, no pickle
        assert z["mean"].shape == (64,) and z["precision"].shape == (64, 64)
    X = np.concatenate([sim["normal"][:4], sim["faulty"][:4]])
    np.testing.assert_allclose(load_detector(d).score_samples(X), det.score_samples(X), rtol=1e-6)


def test_gaussian_model_without_or_with_a_corrupt_scoring_file(interp, tmp_path):
    _, d = interp
    bad = Path(shutil.copytree(d, tmp_path / "m"))
    (bad / "scoring.npz").write_bytes(b"not an npz")
    with pytest.raises(ModelError, match="scoring.npz"):
        load_detector(bad)
    edit_meta(bad, lambda m: m["files"].pop("scoring.npz"))
    with pytest.raises(ModelError, match="without its scoring.npz"):
        load_detector(bad)


def test_mse_model_scores_the_mean_band_error(sim, tmp_path):
    det = AutoencoderDetector(train_config=TrainConfig(**{**TINY.to_dict(), "score": "mse"})).fit(sim["train"])
    d = det.save(tmp_path / "mse")
    assert json.loads((d / "model.json").read_text())["score"] == "mse"
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "weights.pt"]
    X = sim["normal"][:4]
    np.testing.assert_allclose(det.band_errors(X).mean(1), det.score_samples(X), rtol=1e-6)
    np.testing.assert_array_equal(load_detector(d).score_samples(X), det.score_samples(X))


def test_model_saved_before_the_score_option_loads_as_mse(sim, tmp_path):
    """model.json files written before `score` existed have no such key: they score the MSE they were made with."""
    det = AutoencoderDetector(train_config=TrainConfig(**{**TINY.to_dict(), "score": "mse"})).fit(sim["train"])
    d = det.save(tmp_path / "old")
    edit_meta(d, lambda m: (m["training"].pop("score"), m["training"].pop("mask_frames"), m.pop("score")))
    old = load_detector(d)
    assert old.train_config.score == "mse" and old.train_config.mask_frames == 0
    X = sim["normal"][:4]
    np.testing.assert_allclose(old.score_samples(X), old.band_errors(X).mean(1), rtol=1e-6)


def test_bad_score_option_is_a_data_error():
    with pytest.raises(DataError, match="score must be one of mse, gaussian"):
        TrainConfig(score="l1")
