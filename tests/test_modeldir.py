"""The model-folder reader (anomaly.modeldir): reading and checking model.json, file hashes and identities, for
detector and classifier folders (built by hand here; the detectors' and classifier's own tests load real ones)."""

from __future__ import annotations

import json

import pytest

from anomaly.errors import ModelError, ParamsMismatchError
from anomaly.features import DEFAULT_PARAMS, FeatureParams
from anomaly.modeldir import (
    CLASSIFIER_FORMAT,
    DETECTOR_FORMAT,
    ModelDirError,
    check_files,
    classifier_hash,
    directory_hash,
    file_sha256,
    model_hash,
    model_params,
    read_classifier_meta,
    read_detector_meta,
)


def _folder(path, **meta):
    path.mkdir(parents=True)
    (path / "weights.pt").write_bytes(b"weights" * 10)
    base = {"format_version": 1, "feature_params": DEFAULT_PARAMS.to_dict(),
            "feature_params_hash": DEFAULT_PARAMS.hash(), "files": {"weights.pt": file_sha256(path / "weights.pt")}}
    (path / "model.json").write_text(json.dumps({**base, **meta}))
    return path


@pytest.fixture
def det_dir(tmp_path):
    return _folder(tmp_path / "det", detector="ae", threshold=1.5)


@pytest.fixture
def clf_dir(tmp_path):
    return _folder(tmp_path / "clf", kind="classifier")


def test_detector_folder_reads_checks_and_hashes(det_dir):
    meta = read_detector_meta(det_dir)
    assert meta["detector"] == "ae" and DETECTOR_FORMAT == 1
    assert model_params(meta, det_dir, DEFAULT_PARAMS) == DEFAULT_PARAMS
    check_files(meta, det_dir)
    h = model_hash(det_dir)
    assert h == directory_hash(det_dir, ["weights.pt"]) and len(h) == 16
    (det_dir / "weights.pt").write_bytes(b"other")
    assert model_hash(det_dir) != h
    with pytest.raises(ModelDirError, match="checksum mismatch") as e:
        check_files(meta, det_dir)
    assert e.value.problem == "files" and isinstance(e.value, ModelError)


def test_classifier_folder_reads_and_hashes(clf_dir, det_dir):
    meta = read_classifier_meta(clf_dir)
    assert meta["kind"] == "classifier" and CLASSIFIER_FORMAT == 1
    assert classifier_hash(clf_dir) == directory_hash(clf_dir, ["weights.pt"])
    with pytest.raises(ModelDirError, match="not a fault classifier") as e:
        read_classifier_meta(det_dir)
    assert e.value.problem == "wrong_kind" and e.value.meta["detector"] == "ae"  # the export words it itself


@pytest.mark.parametrize("reader, needle, problem", [
    (read_detector_meta, "model directory not found", "missing"),
    (read_classifier_meta, "not a humwatch classifier directory", "no_model_json"),
])
def test_missing_folder(tmp_path, reader, needle, problem):
    with pytest.raises(ModelDirError, match=needle) as e:
        reader(tmp_path / "nope")
    assert e.value.problem == problem


@pytest.mark.parametrize("text, problem", [("{not json", "corrupt_json"), ("[1]", "wrong_kind")])
def test_corrupt_or_foreign_model_json(clf_dir, text, problem):
    (clf_dir / "model.json").write_text(text)
    with pytest.raises(ModelDirError) as e:
        read_classifier_meta(clf_dir)
    assert e.value.problem == problem


@pytest.mark.parametrize("edit, needle", [({"format_version": "1"}, "format_version must be an integer, got '1'"),
                                          ({"format_version": 7}, "classifier format 7 is newer"),
                                          ({"files": ["weights.pt"]}, "'files' must map")])
def test_classifier_format_checks(tmp_path, edit, needle):
    d = _folder(tmp_path / "c", kind="classifier", **edit)
    with pytest.raises(ModelDirError, match=needle):
        read_classifier_meta(d)


def test_feature_params_hash_and_mismatch(tmp_path):
    other = FeatureParams(n_mels=40)
    d = _folder(tmp_path / "d", detector="ae", threshold=1.0, feature_params=other.to_dict())  # stale hash
    with pytest.raises(ModelDirError, match="feature_params_hash .* does not match"):
        model_params(read_detector_meta(d), d)
    with pytest.raises(ParamsMismatchError, match="n_mels=40"):  # other parameters than in use: named first
        model_params(read_detector_meta(d), d, DEFAULT_PARAMS)
    d2 = _folder(tmp_path / "d2", detector="ae", threshold=1.0, feature_params=other.to_dict(),
                 feature_params_hash=other.hash())
    assert model_params(read_detector_meta(d2), d2) == other
    with pytest.raises(ParamsMismatchError, match="n_mels=40"):
        model_params(read_detector_meta(d2), d2, DEFAULT_PARAMS)
    d3 = _folder(tmp_path / "d3", detector="ae", threshold=1.0, feature_params={"n_mels": 64, "wavelet": 1})
    with pytest.raises(ModelDirError, match="bad feature_params.*wavelet") as e:
        model_params(read_detector_meta(d3), d3)
    assert e.value.problem == "params" and "wavelet" in e.value.detail


def test_classifier_hash_names_a_missing_file(clf_dir):
    (clf_dir / "weights.pt").unlink()
    with pytest.raises(ModelDirError, match="the classifier's file weights.pt is missing"):
        classifier_hash(clf_dir)
