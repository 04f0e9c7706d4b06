"""The frozen front-end parameters shared by training, scoring, calibration and firmware."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from anomaly.errors import ParamsMismatchError


@dataclass(frozen=True)
class FeatureParams:
    """YAMNet-style log-mel front end.

    Defaults: 16 kHz mono, 25 ms periodic Hann window (400 samples) zero-padded to a 512-point FFT, 10 ms hop
    (160 samples), magnitude spectrogram, 64 HTK-mel bins over 125–7500 Hz, ``log(mel + 0.001)``, and patches of
    96 frames (0.96 s) taken every ``patch_hop`` frames.
    """

    sample_rate: int = 16000
    window_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    n_mels: int = 64
    f_min: float = 125.0
    f_max: float = 7500.0
    mel_scale: str = "htk"
    power: float = 1.0
    log_offset: float = 0.001
    patch_frames: int = 96
    patch_hop: int = 96

    def __post_init__(self) -> None:
        # Canonical types, so that FeatureParams(f_min=125) and the default hash alike.
        for f in dataclasses.fields(self):
            cast = {"int": int, "float": float, "str": str}[f.type]
            object.__setattr__(self, f.name, cast(getattr(self, f.name)))
        checks = [
            (self.sample_rate > 0, "sample_rate must be > 0"),
            (0 < self.window_length <= self.n_fft, "window_length must be in 1..n_fft"),
            (self.hop_length > 0, "hop_length must be > 0"),
            (self.n_mels > 0, "n_mels must be > 0"),
            (0 <= self.f_min < self.f_max <= self.sample_rate / 2, "need 0 <= f_min < f_max <= sample_rate/2"),
            (self.mel_scale == "htk", "only the HTK mel scale is implemented"),
            (self.power in (1.0, 2.0), "power must be 1 (magnitude) or 2 (power)"),
            (self.log_offset > 0, "log_offset must be > 0"),
            (self.patch_frames > 0 and self.patch_hop > 0, "patch_frames and patch_hop must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid FeatureParams: {msg} (got {self})")

    @property
    def patch_seconds(self) -> float:
        """Duration a patch covers, in seconds (frame hops, as YAMNet counts it: 0.96 s)."""
        return self.patch_frames * self.hop_length / self.sample_rate

    @property
    def patch_hop_samples(self) -> int:
        return self.patch_hop * self.hop_length

    @property
    def min_samples(self) -> int:
        """Fewest samples that yield one whole patch."""
        return self.window_length + (self.patch_frames - 1) * self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable 16-hex-digit identity of these parameters (sha256 of canonical JSON)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParamsMismatchError(f"unknown FeatureParams fields {unknown} (made by a newer humwatch?)")
        return cls(**d)

    def diff(self, other: FeatureParams) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as ``{name: (self_value, other_value)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

    def require_same(self, other: FeatureParams, what: str = "artifact") -> None:
        """Raise ParamsMismatchError naming the differing fields unless ``other`` equals ``self``."""
        d = self.diff(other)
        if d:
            fields = ", ".join(f"{k}={theirs!r} (expected {ours!r})" for k, (ours, theirs) in d.items())
            raise ParamsMismatchError(f"{what} was made with other front-end parameters: {fields}")


DEFAULT_PARAMS = FeatureParams()
