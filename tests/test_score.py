"""The score owner (anomaly.score): the MSE and the Gaussian score of the log band errors, from band errors and from
a network's output, and the detector's scorer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from anomaly.errors import DataError
from anomaly.score import BAND_ERROR_EPS, KINDS, MSE, GaussianScore, band_errors, check_kind


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 96, 64)).astype(np.float32)
    y = (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)
    return x, y


def test_band_errors_are_the_time_mean_of_squared_errors(xy):
    x, y = xy
    e = band_errors(x, y)
    assert e.shape == (7, 64) and e.dtype == np.float64
    np.testing.assert_allclose(e, ((y.astype(float) - x.astype(float)) ** 2).mean(axis=1), rtol=1e-12)


def test_mse_from_output_and_from_bands_agree(xy):
    x, y = xy
    s = MSE.of_output(x, y)
    np.testing.assert_array_equal(s, np.square(y.astype(np.float64) - x.astype(np.float64)).mean(axis=(1, 2)))
    np.testing.assert_allclose(MSE.of_bands(band_errors(x, y)), s, rtol=1e-12)
    assert MSE.kind == "mse"


def test_gaussian_is_the_squared_mahalanobis_distance_of_log_band_errors(xy):
    x, y = xy
    rng = np.random.default_rng(1)
    mean = rng.normal(-2, 0.1, 64)
    a = rng.standard_normal((64, 64))
    prec = a @ a.T / 64 + np.eye(64)
    g = GaussianScore(mean, prec)
    e = band_errors(x, y)
    z = np.log(e + 1e-4) - mean
    want = np.array([zi @ prec @ zi for zi in z])
    np.testing.assert_allclose(g.of_bands(e), want, rtol=1e-10)
    np.testing.assert_allclose(g.of_output(x, y), want, rtol=1e-10)
    assert g.kind == "gaussian" and g.eps == BAND_ERROR_EPS == 1e-4


def test_gaussian_fit_is_ledoit_wolf_on_log_band_errors():
    e = np.random.default_rng(2).gamma(2.0, 0.1, (300, 64))
    g = GaussianScore.fit(e)
    lw = LedoitWolf().fit(np.log(e + BAND_ERROR_EPS))
    np.testing.assert_allclose(g.mean, lw.location_)
    np.testing.assert_allclose(g.precision, lw.precision_)
    assert np.median(g.of_bands(e)) == pytest.approx(64, rel=0.3)  # ~chi-square with 64 degrees of freedom


def test_kinds():
    assert KINDS == ("mse", "gaussian") and check_kind("gaussian") == "gaussian"
    with pytest.raises(DataError, match="score must be one of mse, gaussian, got 'mae'"):
        check_kind("mae")
