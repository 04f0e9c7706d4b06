"""``nn.Module`` wrappers around :mod:`anomaly.features.functional` that hold the constants as buffers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from anomaly.features import functional as F
from anomaly.features.params import DEFAULT_PARAMS, FeatureParams


class LogMel(nn.Module):
    """Waveform ``[..., samples]`` → log-mel ``[..., frames, n_mels]`` (float32).

    Args:
        params: front-end parameters.
        offsets: optional per-band log offsets ``[n_mels]`` (microphone response correction).
    """

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS, offsets: np.ndarray | None = None):
        super().__init__()
        self.params = params
        self.register_buffer("window", torch.from_numpy(F.hann_window(params)))
        self.register_buffer("mel_fb", torch.from_numpy(F.mel_filterbank(params).copy()))
        off = np.zeros(params.n_mels, np.float32) if offsets is None else np.asarray(offsets, np.float32)
        if off.shape != (params.n_mels,):
            raise ValueError(f"expected {params.n_mels} mel offsets, got shape {off.shape}")
        self.register_buffer("offsets", torch.from_numpy(off.copy()))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return F.log_mel_torch(waveform.to(torch.float32), self.window, self.mel_fb, self.params, self.offsets)


class Patches(nn.Module):
    """Log-mel ``[frames, n_mels]`` → patches ``[n, patch_frames, n_mels]``."""

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS):
        super().__init__()
        self.params = params

    def forward(self, log_mel_frames: torch.Tensor) -> torch.Tensor:
        return F.patches(log_mel_frames, self.params)
