"""Evaluation (anomaly.evaluate): the DCASE pAUC, labelled-file discovery and the metrics structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomaly.errors import DataError
from anomaly.evaluate import (
    Evaluation,
    LabelledFile,
    auc_pauc,
    chance_levels,
    definitions,
    evaluate,
    find_labelled,
    label_of,
    partial_area,
    pauc,
)

# --------------------------------------------------------------------------------------------------------------------
# partial_area: the area under the ROC curve over FPR in [0, p], divided by p (not standardised)
# pauc: the DCASE evaluator's standardised partial AUC (McClish; sklearn roc_auc_score max_fpr)


def mcclish(raw_over_p: float, p: float) -> float:
    a = raw_over_p * p
    return 0.5 * (1 + (a - p * p / 2) / (p - p * p / 2))


def test_partial_area_hand_computed_step_roc():
    # 20 normals, 2 anomalies. Descending: A(.95) N(.9) A(.5) then 19 normals below.
    # ROC: (0,0) -> (0,.5) -> (.05,.5) -> (.05,1) -> (1,1).
    # Area over FPR [0, .1]: .05 * .5 + .05 * 1 = .075; / .1 = .75. Full AUC: 1 - .05 * .5 = .975.
    normals = [0.9] + [i / 100 for i in range(19)]
    y = [0] * 20 + [1, 1]
    s = normals + [0.95, 0.5]
    assert partial_area(y, s) == pytest.approx(0.75)
    # standardised: 0.5 * (1 + (.075 - .005) / (.1 - .005)) = 0.868421...
    assert pauc(y, s) == pytest.approx(0.5 * (1 + 0.07 / 0.095))
    assert auc_pauc(y, s) == pytest.approx((0.975, 0.5 * (1 + 0.07 / 0.095)))
    # over [0, .05] only the .5 plateau counts
    assert partial_area(y, s, max_fpr=0.05) == pytest.approx(0.5)


def test_partial_area_hand_computed_tie_gives_a_diagonal_segment():
    # 5 normals, 1 anomaly tied with the top normal: ROC (0,0) -> (.2,1), a straight line tpr = 5 fpr.
    # Area over [0, .1] = 5 * .1^2 / 2 = .025; / .1 = .25.  Full AUC = .5 * .2 + .8 = .9.
    y = [1, 0, 0, 0, 0, 0]
    s = [0.5, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert partial_area(y, s) == pytest.approx(0.25)
    assert auc_pauc(y, s)[0] == pytest.approx(0.9)


def test_pauc_perfect_and_inverted():
    y = [0] * 50 + [1] * 10
    s = list(range(60))
    assert pauc(y, s) == pytest.approx(1.0) and partial_area(y, s) == pytest.approx(1.0)
    assert auc_pauc(y, s) == pytest.approx((1.0, 1.0))
    assert partial_area(y, [-v for v in s]) == pytest.approx(0.0)
    # the standardised floor: a raw area of 0 maps to 0.5 * (1 - p / (2 - p)) = 0.4737 at p = 0.1
    assert pauc(y, [-v for v in s]) == pytest.approx(0.5 * (1 - 0.1 / 1.9))


def test_chance_levels_pauc_half_raw_p_over_2():
    # Uninformative scores: AUC 0.5, standardised pAUC 0.5; the raw diagonal area p^2 / 2 over [0, p] is p / 2.
    assert chance_levels(0.1) == {"auc": 0.5, "pauc": 0.5, "pauc_raw": 0.05}
    assert chance_levels(0.2)["pauc_raw"] == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(20000, int), np.ones(20000, int)]
    s = rng.random(40000)
    assert pauc(y, s) == pytest.approx(0.5, abs=0.02)
    assert partial_area(y, s) == pytest.approx(0.05, abs=0.01)
    assert partial_area(y, s, max_fpr=0.2) == pytest.approx(0.1, abs=0.015)


def test_pauc_is_sklearn_mcclish_of_the_partial_area():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + 0.8 * y
    for p in (0.05, 0.1, 0.3):
        assert pauc(y, s, p) == pytest.approx(roc_auc_score(y, s, max_fpr=p), abs=1e-12)
        assert mcclish(partial_area(y, s, p), p) == pytest.approx(pauc(y, s, p), abs=1e-9)


def test_pauc_within_unit_interval():
    rng = np.random.default_rng(2)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = [0, 1]
        v = pauc(y, rng.normal(size=40))
        assert 0.0 <= v <= 1.0 and 0.0 <= partial_area(y, rng.normal(size=40)) <= 1.0


def test_definitions_say_standardised_and_chance():
    d = definitions(0.1)
    assert "standardised" in d["pauc"] and "max_fpr=0.1" in d["pauc"] and "chance 0.5" in d["pauc"]
    assert "chance 0.05" in d["pauc_raw"]


def test_auc_pauc_single_class_is_nan():
    a, p = auc_pauc([0, 0, 0], [0.1, 0.2, 0.3])
    assert np.isnan(a) and np.isnan(p)


# --------------------------------------------------------------------------------------------------------------------
# find_labelled


def touch(root: Path, *rels: str) -> None:
    for r in rels:
        p = root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_label_of():
    assert label_of(Path("normal_0001.wav")) == 0
    assert label_of(Path("anomaly_id_00_0001.flac")) == 1
    assert label_of(Path("Normal_x.WAV")) == 0
    assert label_of(Path("normal.wav")) is None
    assert label_of(Path("abnormal_1.wav")) is None
    assert label_of(Path("section_00_normal_1.wav")) == 0  # DCASE 2021+ naming
    assert label_of(Path("section_00_source_test_anomaly_0001.wav")) == 1
    assert label_of(Path("normal_vs_anomaly.wav")) == 0  # a leading label wins
    assert label_of(Path("x_normal_anomaly.wav")) is None  # ambiguous


def test_find_labelled_dcase_tree(tmp_path):
    touch(tmp_path, "dev/pump/test/normal_0.wav", "dev/pump/test/anomaly_0.wav", "dev/pump/train/normal_9.wav",
          "dev/fan/test/normal_0.flac", "dev/fan/test/anomaly_1.FLAC", "dev/fan/train/normal_1.wav",
          "dev/fan/test/notes.txt", "dev/fan/test/readme_1.wav")
    files = find_labelled(tmp_path)
    rel = {f.path.relative_to(tmp_path).as_posix(): (f.label, f.machine) for f in files}
    assert rel == {
        "dev/pump/test/normal_0.wav": (0, "pump"), "dev/pump/test/anomaly_0.wav": (1, "pump"),
        "dev/fan/test/normal_0.flac": (0, "fan"), "dev/fan/test/anomaly_1.FLAC": (1, "fan"),
    }
    assert [f.path for f in files] == sorted(f.path for f in files)
    # the machine dir itself as root: train/ skipped, machine named after the root
    files = find_labelled(tmp_path / "dev" / "pump")
    assert {(f.path.name, f.machine) for f in files} == {("normal_0.wav", "pump"), ("anomaly_0.wav", "pump")}


def test_find_labelled_flat_dir(tmp_path):
    root = tmp_path / "valve"
    touch(root, "normal_a.wav", "normal_b.wav", "anomaly_c.wav")
    files = find_labelled(root)
    assert [(f.path.name, f.label, f.machine) for f in files] == [
        ("anomaly_c.wav", 1, "valve"), ("normal_a.wav", 0, "valve"), ("normal_b.wav", 0, "valve")]


def test_find_labelled_parent_dir_names_the_machine(tmp_path):
    touch(tmp_path, "pump/normal_0.wav", "pump/anomaly_0.wav", "fan/normal_0.wav")
    assert sorted({f.machine for f in find_labelled(tmp_path)}) == ["fan", "pump"]


def test_find_labelled_skips_everything_under_train(tmp_path):
    touch(tmp_path, "train/normal_0.wav", "train/x/anomaly_0.wav", "test/normal_0.wav")
    with pytest.raises(DataError, match=r"no anomaly_\* files"):
        find_labelled(tmp_path)


def test_find_labelled_no_labelled_files(tmp_path):
    touch(tmp_path, "clip_0.wav", "other/rec.flac", "normal_0.mp3")
    with pytest.raises(DataError, match=r"no normal_\*/anomaly_\* \.wav/\.flac files.*labels come from file names"):
        find_labelled(tmp_path)


def test_find_labelled_only_normal(tmp_path):
    touch(tmp_path, "normal_0.wav", "normal_1.wav")
    with pytest.raises(DataError, match=r"no anomaly_\* files: AUC needs both"):
        find_labelled(tmp_path)


def test_find_labelled_only_anomalies(tmp_path):
    touch(tmp_path, "anomaly_0.wav")
    with pytest.raises(DataError, match=r"no normal_\* files"):
        find_labelled(tmp_path)


def test_find_labelled_missing_dir(tmp_path):
    with pytest.raises(DataError, match="test directory not found"):
        find_labelled(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


def test_metrics_structure(tmp_path):
    files = [LabelledFile(tmp_path / f"{m}_{lab}_{i}.wav", lab, m)
             for m in ("pump", "fan") for lab in (0, 1) for i in range(3)]
    rng = np.random.default_rng(0)
    scores = np.array([f.label + rng.normal(0, 0.6) for f in files])
    m = Evaluation(files, scores).metrics()
    assert isinstance(m["auc"], float) and isinstance(m["pauc"], float)
    assert 0 <= m["auc"] <= 1 and 0 <= m["pauc"] <= 1
    assert m["max_fpr"] == 0.1 and m["n_files"] == 12
    assert set(m["machines"]) == {"pump", "fan"}
    for name, r in m["machines"].items():
        assert set(r) == {"auc", "pauc", "pauc_raw", "n_normal", "n_anomaly"}
        assert isinstance(r["auc"], float) and isinstance(r["pauc"], float)
        assert 0 <= r["auc"] <= 1 and 0 <= r["pauc"] <= 1
        assert (r["n_normal"], r["n_anomaly"]) == (3, 3)
        idx = [f.machine == name for f in files]
        y = np.array([f.label for f in files])[idx]
        assert (r["auc"], r["pauc"]) == pytest.approx(auc_pauc(y, scores[idx]))
    assert (m["auc"], m["pauc"]) == pytest.approx(auc_pauc([f.label for f in files], scores))
    assert m["pauc_raw"] == pytest.approx(partial_area([f.label for f in files], scores))
    assert m["chance"] == chance_levels(0.1) and m["definitions"] == definitions(0.1)


def test_metrics_machine_with_one_class_is_none(tmp_path):
    files = [LabelledFile(tmp_path / "a.wav", 0, "pump"), LabelledFile(tmp_path / "b.wav", 1, "pump"),
             LabelledFile(tmp_path / "c.wav", 0, "fan")]
    m = Evaluation(files, np.array([0.1, 0.9, 0.2])).metrics()
    assert m["machines"]["fan"] == {"auc": None, "pauc": None, "pauc_raw": None, "n_normal": 1, "n_anomaly": 0}
    assert m["machines"]["pump"]["auc"] == 1.0


def test_evaluate_calls_score_file_per_file(tmp_path):
    touch(tmp_path, "m/test/normal_0.wav", "m/test/anomaly_0.wav", "m/test/anomaly_1.wav")
    seen, progress = [], []
    ev = evaluate(lambda p: seen.append(p.name) or float(p.name.startswith("anomaly")), tmp_path,
                  on_file=lambda i, n: progress.append((i, n)))
    assert sorted(seen) == ["anomaly_0.wav", "anomaly_1.wav", "normal_0.wav"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert ev.metrics()["auc"] == 1.0 and ev.metrics()["machines"]["m"]["n_anomaly"] == 2


def test_machine_when_root_is_the_test_dir(tmp_path):
    root = tmp_path / "pump" / "test"
    touch(root, "normal_0.wav", "anomaly_0.wav")
    assert {f.machine for f in find_labelled(root)} == {"pump"}


def test_chance_levels_follow_the_metric_definitions():
    from anomaly.evaluate import chance_levels

    # standardised pAUC: 0.5 whatever p; the raw partial area: p / 2
    assert chance_levels(0.1) == {"auc": 0.5, "pauc": 0.5, "pauc_raw": 0.05}
    assert chance_levels(0.2)["pauc"] == 0.5 and chance_levels(0.2)["pauc_raw"] == pytest.approx(0.1)
    rng = np.random.default_rng(0)  # uninformative scores come out near the stated chance levels
    y = rng.integers(0, 2, 20000)
    s = rng.random(20000)
    auc, pa = auc_pauc(y, s)
    assert auc == pytest.approx(0.5, abs=0.02) and pa == pytest.approx(chance_levels()["pauc"], abs=0.02)
    assert partial_area(y, s) == pytest.approx(chance_levels()["pauc_raw"], abs=0.01)
