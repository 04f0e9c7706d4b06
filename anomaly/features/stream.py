"""Block-wise front end: feed sample blocks of any size, get the same frames and patches as the whole-signal
computation."""

from __future__ import annotations

import numpy as np

from anomaly.features import functional as F
from anomaly.features.params import FeatureParams


class FrameStream:
    """Turns a stream of sample blocks into log-mel frames ``[k, n_mels]``.

    Frames are independent of each other, so carrying the unused tail of samples across blocks gives exactly the
    frames :func:`~anomaly.features.functional.log_mel` gives on the concatenated signal.
    """

    def __init__(self, params: FeatureParams, offsets: np.ndarray | None = None):
        self.params = params
        self.offsets = offsets
        self._samples = np.zeros(0, np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        p = self.params
        buf = np.concatenate([self._samples, np.asarray(block, np.float32)])
        n = F.num_frames(buf.size, p)
        if n == 0:
            self._samples = buf
            return np.zeros((0, p.n_mels), np.float32)
        frames = F.log_mel(buf[: (n - 1) * p.hop_length + p.window_length], p, self.offsets)
        self._samples = buf[n * p.hop_length:]
        return frames


class PatchStream:
    """Turns a stream of sample blocks into log-mel patches without holding the whole signal.

    Carrying the unused frames across blocks gives exactly the patches
    :func:`~anomaly.features.functional.patches` gives on the whole signal's frames.
    """

    def __init__(self, params: FeatureParams, offsets: np.ndarray | None = None):
        self.params = params
        self._frame_stream = FrameStream(params, offsets)
        self._frames = np.zeros((0, params.n_mels), np.float32)
        self._skip_frames = 0
        self.patches_emitted = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add samples ``[n]``; return the patches completed by them, ``[k, patch_frames, n_mels]``."""
        p = self.params
        frames = self._frame_stream.push(block)
        if self._skip_frames:
            drop = min(self._skip_frames, len(frames))
            frames = frames[drop:]
            self._skip_frames -= drop
        self._frames = np.concatenate([self._frames, frames]) if len(self._frames) else frames
        k = F.num_patches(self._frames.shape[0], p)
        if k == 0:
            return np.zeros((0, p.patch_frames, p.n_mels), np.float32)
        out = F.patches(self._frames, p)
        used = k * p.patch_hop
        self._skip_frames += max(0, used - self._frames.shape[0])
        self._frames = self._frames[used:]
        self.patches_emitted += k
        return out
