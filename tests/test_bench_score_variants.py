"""The fleet bench's cache of band errors and the score variants replayed on it (bench/sim_fleet.py,
bench/score_variants.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import score_variants as sv  # noqa: E402
import sim_fleet  # noqa: E402

BANDS = 64
FAULT_BAND = 40
MON_PATCHES = 3000


def _bands(rng, n: int) -> np.ndarray:
    """Log-normal band errors whose level differs per band, like a network's (lower at high bands)."""
    level = np.linspace(-2.0, -5.0, BANDS)
    return np.exp(level + 0.3 * rng.standard_normal((n, BANDS))).astype(np.float32)


def _write_cache(path: Path, with_bands: bool = True, fault_gain: float = 3.0) -> None:
    """A cache file as sim_fleet.build_site writes it: the calibration hour, monitoring, one fault in one band."""
    rng = np.random.default_rng(0)
    n = sim_fleet.CAL_PATCHES + MON_PATCHES
    b = _bands(rng, n)
    start = sim_fleet.CAL_PATCHES + 1000
    fb = _bands(rng, 1250)
    fb[:, FAULT_BAND] *= fault_gain  # the fault raises one band's error from its onset on
    onset_s = (start + 100) * sim_fleet.PATCH_S
    fb[:100, FAULT_BAND] /= fault_gain
    meta = {"name": "s0", "machine": "pump", "background": "quiet", "seed": 1, "model": "",
            "faults": [{"fault": "bearing-outer", "chunk": 0, "onset_s": onset_s}]}
    data = {"score": b.mean(1).astype(np.float64), "levels": np.zeros((n, BANDS), np.float32),
            "fault0_score": fb.mean(1).astype(np.float64), "fault0_levels": np.zeros((1250, BANDS), np.float32),
            "fault0_start_patch": np.array(start), "meta": np.array(json.dumps(meta))}
    if with_bands:
        data.update(bands=b, fault0_bands=fb)
    np.savez(path, **data)


@pytest.fixture()
def cache(tmp_path) -> Path:
    _write_cache(tmp_path / "site_s0.npz")
    return tmp_path / "site_s0.npz"


def test_load_site_reads_band_errors_and_old_caches_without_them(cache, tmp_path):
    s = sim_fleet.load_site(cache)
    assert s.bands.shape == (sim_fleet.CAL_PATCHES + MON_PATCHES, BANDS) and s.faults[0].bands.shape == (1250, BANDS)
    stream, off = s.fault_stream(s.faults[0], "bands")
    assert stream.shape[1] == BANDS and off == s.faults[0].start_patch - sim_fleet.HISTORY
    np.testing.assert_array_equal(stream[s.faults[0].start_patch - off:], s.faults[0].bands)
    _write_cache(tmp_path / "old.npz", with_bands=False)
    old = sim_fleet.load_site(tmp_path / "old.npz")
    assert old.bands is None and old.faults[0].bands is None
    with pytest.raises(SystemExit, match="no band errors"):
        sv.rescore(old, "site-diag", old.cal(30))


def test_model_variant_is_the_cached_score(cache):
    s = sim_fleet.load_site(cache)
    assert sv.rescore(s, "model", s.cal(30)) is s


@pytest.mark.parametrize("variant", sv.SITE_FITTED)
def test_site_fitted_scores_are_cross_fitted_on_the_calibration(cache, variant):
    s = sim_fleet.load_site(cache)
    cal = s.cal(30)
    r = sv.rescore(s, variant, cal)
    fitted = sv.fit_site_score(variant, s.bands[cal])
    # monitoring: the fit on the whole calibration; calibration: each block scored by a fit on the other four
    np.testing.assert_allclose(r.score[s.mon], fitted.of_bands(s.bands[s.mon]))
    np.testing.assert_allclose(r.score[cal], sv.crossfit_scores(variant, s.bands[cal]))
    assert not np.allclose(r.score[cal], fitted.of_bands(s.bands[cal]))
    np.testing.assert_allclose(r.faults[0].score, fitted.of_bands(s.faults[0].bands))
    assert (r.score > 0).all()  # the windowed-mean rule works on log scores


def test_a_one_band_fault_stands_out_more_in_band_scores_than_in_the_mean_error(cache):
    s = sim_fleet.load_site(cache)
    cal, f = s.cal(30), s.faults[0]
    j = f.onset_patch - f.start_patch + 1

    def shift(score_normal, score_fault):
        lg = np.log(score_normal[cal])
        return (np.log(score_fault[j:]).mean() - lg.mean()) / lg.std()

    mse = shift(s.score, f.score)
    top4 = sv.rescore(s, "site-top4", cal)
    assert shift(top4.score, top4.faults[0].score) > 3 * mse > 0


def test_a_rule_per_band_alarms_on_a_one_band_fault_and_not_on_normal_operation(cache):
    r = sv.replay_bands((cache, 30.0, 1.5))
    assert r["observed"] == 0
    (f,) = r["faults"]
    assert f["fault"] == "bearing-outer" and f["delay_s"] is not None and 0 < f["delay_s"] <= 180


def test_the_gaussian_variant_needs_the_model(cache):
    s = sim_fleet.load_site(cache)
    with pytest.raises(SystemExit, match="--gaussian-model"):
        sv.rescore(s, "gaussian", s.cal(30))
