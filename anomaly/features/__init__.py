"""YAMNet-style log-mel front end: ``FeatureParams``, ``log_mel``, ``patches`` and friends."""

from anomaly.features.functional import (
    hann_window,
    log_mel,
    mel_centers,
    mel_filterbank,
    num_frames,
    num_patches,
    patch_starts,
    patches,
)
from anomaly.features.params import DEFAULT_PARAMS, FeatureParams
from anomaly.features.response import MicResponse
from anomaly.features.stream import FrameStream, PatchStream
from anomaly.features.transforms import LogMel, Patches

__all__ = [
    "DEFAULT_PARAMS", "FeatureParams", "FrameStream", "LogMel", "MicResponse", "PatchStream", "Patches",
    "hann_window", "log_mel", "mel_centers", "mel_filterbank", "num_frames", "num_patches", "patch_starts", "patches",
]
