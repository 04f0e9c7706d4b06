"""Microphone response correction as per-mel-band log offsets.

A response curve (CSV rows ``frequency_hz,gain_db``; a header line and ``#`` comments are allowed) says how much the
microphone amplifies each frequency. Undoing it exactly would need a per-FFT-bin division before the filterbank;
instead each mel band gets one additive offset applied after the log, ``-ln(g_band)``, where ``g_band`` is the
band's triangle-weighted mean linear gain. That costs 64 additions per frame on a microcontroller and is exact for a
gain that is flat inside each band (and close when it varies slowly across a band). Frequencies outside the curve
hold the nearest end value.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.errors import DataError
from anomaly.features import functional as F
from anomaly.features.params import FeatureParams


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class MicResponse:
    """A microphone's magnitude response: gains in dB at increasing frequencies in Hz."""

    freqs_hz: tuple[float, ...]
    gains_db: tuple[float, ...]

    def __post_init__(self) -> None:
        f = np.asarray(self.freqs_hz, float)
        g = np.asarray(self.gains_db, float)
        if f.ndim != 1 or f.size < 2 or f.shape != g.shape:
            raise DataError(f"a response curve needs >= 2 (frequency, gain) points, got {f.size}")
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(g))):
            raise DataError("response curve has non-finite values")
        if np.any(np.diff(f) <= 0) or f[0] < 0:
            raise DataError("response curve frequencies must be >= 0 and strictly increasing")

    @classmethod
    def from_csv(cls, path: str | Path) -> MicResponse:
        """Read ``frequency_hz,gain_db`` rows. Raises DataError naming the file and line on bad input."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"response curve file not found: {path}")
        freqs, gains = [], []
        first_row = True  # the first row that is not a comment may be a header
        with path.open(newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                try:
                    f, g = float(row[0]), float(row[1])
                    first_row = False
                except (ValueError, IndexError):
                    if first_row and not _is_number(row[0]):
                        first_row = False
                        continue  # header line
                    got = ",".join(row)
                    raise DataError(f"{path}:{lineno}: expected 'frequency_hz,gain_db', got {got!r}") from None
                freqs.append(f)
                gains.append(g)
        try:
            return cls(tuple(freqs), tuple(gains))
        except DataError as e:
            raise DataError(f"{path}: {e}") from None

    def band_gains_db(self, params: FeatureParams) -> np.ndarray:
        """Triangle-weighted mean gain of each mel band, dB. Shape ``[n_mels]``."""
        fb = F.mel_filterbank(params).astype(np.float64)  # [n_freqs, n_mels]
        lin = 10.0 ** (np.interp(F.fft_frequencies(params), self.freqs_hz, self.gains_db) / 20.0)
        band = (lin[:, None] * fb).sum(0) / fb.sum(0)
        return 20.0 * np.log10(band)

    def mel_offsets(self, params: FeatureParams) -> np.ndarray:
        """Additive offsets for ``log(mel)`` that undo the response. float32 ``[n_mels]``."""
        return (-self.band_gains_db(params) * np.log(10.0) / 20.0).astype(np.float32)
