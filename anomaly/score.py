"""The anomaly score: how a patch and the network's output for it become one number (higher = more anomalous).

The one owner of the score formulas. The detectors (:mod:`anomaly.detectors`, and through them calibration and
monitoring) score band errors with it; the export scores every runtime's output with it (:mod:`firmware_export.parity`)
and writes its constants into ``humwatch_frontend.h`` (:mod:`firmware_export.c_arrays`), whose C reference
(``hw_score`` in ``frontend_ref/hw_frontend.c``) implements the same two formulas.

With ``x`` the normalised log-mel patch ``[T, M]`` and ``y`` the network's output (reconstruction, or for an
interpolation model the hidden blocks' predictions stitched together), the band errors are
``e[m] = mean over the T frames of (x − y)²``. Then:

* ``mse`` (:data:`MSE`, the default): the mean of ``(x − y)²`` over the patch (= the mean of ``e``);
* ``gaussian`` (:class:`GaussianScore`): the squared Mahalanobis distance of ``log(e + BAND_ERROR_EPS)`` from a
  Gaussian (mean, precision) fitted on normal patches' log band errors: two-sided, so a patch whose error spectrum is
  unusually *low* or differently shaped is anomalous too.

Every score object has ``kind``, ``of_bands(e [n, M])`` and ``of_output(x [n, T, M], y [n, T, M])``; both are
computed in float64 (the detectors average the frames in float32 on the way, which changes scores by ~1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from sklearn.covariance import LedoitWolf

from anomaly.errors import DataError

BAND_ERROR_EPS = 1e-4  # floor inside log(band error)
KINDS = ("mse", "gaussian")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise DataError(f"score must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def band_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``e [n, M]``: the mean over frames of ``(x − y)²`` for patches ``[n, T, M]``, in float64."""
    return np.square(y.astype(np.float64) - x.astype(np.float64)).mean(axis=1)


@dataclass(frozen=True)
class MSEScore:
    """The mean squared error of the patch."""

    kind: ClassVar[str] = "mse"
    description: ClassVar[str] = "mse"

    def of_bands(self, bands: np.ndarray) -> np.ndarray:
        return np.asarray(bands, np.float64).mean(axis=1)

    def of_output(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-patch MSE over all elements, accumulated in float64 (the C reference accumulates in float; the
        difference is ~1e-7)."""
        return np.square(y.astype(np.float64) - x.astype(np.float64)).mean(axis=(1, 2))


MSE = MSEScore()


@dataclass(frozen=True, eq=False)
class GaussianScore:
    """Squared Mahalanobis distance of ``log(e + eps)`` from ``mean [M]`` with ``precision [M, M]``."""

    mean: np.ndarray
    precision: np.ndarray
    eps: float = BAND_ERROR_EPS
    kind: ClassVar[str] = "gaussian"
    description: ClassVar[str] = "mahalanobis of log band errors"

    def log_bands(self, bands: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(bands, np.float64) + self.eps)

    def of_bands(self, bands: np.ndarray) -> np.ndarray:
        z = self.log_bands(bands) - self.mean
        return np.einsum("ij,jk,ik->i", z, self.precision, z)

    def of_output(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.of_bands(band_errors(x, y))

    @classmethod
    def fit(cls, bands: np.ndarray, eps: float = BAND_ERROR_EPS) -> GaussianScore:
        """Fit the Gaussian (Ledoit-Wolf shrinkage) on normal patches' band errors ``[n, M]``."""
        lw = LedoitWolf().fit(np.log(np.asarray(bands, np.float64) + eps))
        return cls(lw.location_.astype(np.float64), lw.precision_.astype(np.float64), eps)
