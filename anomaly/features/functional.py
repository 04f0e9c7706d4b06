"""Pure functions of the log-mel front end (torchaudio's ``functional`` style).

Framing rule (YAMNet's): no centring and no padding. Frame ``i`` covers samples ``[i*hop, i*hop + window)``, so a
signal of ``N >= window`` samples gives ``1 + (N - window) // hop`` frames and a shorter one gives none; trailing
samples that do not fill a frame are dropped. The 400-sample periodic Hann window is zero-padded at its end to the
512-point FFT. Patch ``j`` holds frames ``[j*patch_hop, j*patch_hop + patch_frames)``; a trailing part shorter than a
patch is dropped. Patch ``j`` therefore starts at ``j * patch_hop * hop / sample_rate`` seconds.

Every function accepts numpy arrays or torch tensors and returns the same kind; both go through the same torch code,
so numpy and torch input give identical numbers (float32).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from anomaly.features.params import FeatureParams


def hz_to_mel(f):
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def fft_frequencies(params: FeatureParams) -> np.ndarray:
    """Centre frequency of each rFFT bin, Hz. Shape ``[n_fft // 2 + 1]``."""
    return np.linspace(0.0, params.sample_rate / 2, params.n_fft // 2 + 1)


def mel_band_edges(params: FeatureParams) -> np.ndarray:
    """Lower edge, centre and upper edge of each mel band, Hz. Shape ``[n_mels + 2]`` (band i: i, i+1, i+2)."""
    mels = np.linspace(hz_to_mel(params.f_min), hz_to_mel(params.f_max), params.n_mels + 2)
    return mel_to_hz(mels)


def mel_centers(params: FeatureParams) -> np.ndarray:
    """Centre frequency of each mel band, Hz. Shape ``[n_mels]``."""
    return mel_band_edges(params)[1:-1]


@functools.lru_cache(maxsize=8)
def _mel_filterbank_cached(params: FeatureParams) -> np.ndarray:
    freqs = fft_frequencies(params)
    edges = mel_band_edges(params)
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper)).T.astype(np.float32)
    fb.setflags(write=False)
    return fb


def mel_filterbank(params: FeatureParams) -> np.ndarray:
    """Triangular HTK-mel filterbank with unit peaks (no area normalisation), as ``librosa.filters.mel(htk=True,
    norm=None)`` builds it.

    Returns:
        float32 array ``[n_fft // 2 + 1, n_mels]`` (read-only), to right-multiply a magnitude spectrogram.
    """
    return _mel_filterbank_cached(params)


def hann_window(params: FeatureParams) -> np.ndarray:
    """Periodic Hann window, float32 ``[window_length]`` (as ``torch.hann_window(periodic=True)``)."""
    n = np.arange(params.window_length)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / params.window_length)).astype(np.float32)


def num_frames(n_samples: int, params: FeatureParams) -> int:
    """Frames produced from ``n_samples`` samples under the framing rule above."""
    if n_samples < params.window_length:
        return 0
    return 1 + (n_samples - params.window_length) // params.hop_length


def num_patches(n_frames: int, params: FeatureParams) -> int:
    """Patches produced from ``n_frames`` frames."""
    if n_frames < params.patch_frames:
        return 0
    return 1 + (n_frames - params.patch_frames) // params.patch_hop


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32), True
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), False


_CHUNK_FRAMES = 512


def log_mel_torch(
    waveform: torch.Tensor, window: torch.Tensor, mel_fb: torch.Tensor, params: FeatureParams,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Core computation on tensors; see :func:`log_mel`. ``waveform``: ``[..., samples]`` float32."""
    n = waveform.shape[-1]
    if num_frames(n, params) == 0:
        return waveform.new_zeros((*waveform.shape[:-1], 0, params.n_mels))
    frames = waveform.unfold(-1, params.window_length, params.hop_length)
    # Chunks of 512 frames keep the complex spectrum in cache (3-4x faster on long audio than one big FFT), and
    # re^2 + im^2 is cheaper than complex abs().
    outs = []
    for i in range(0, frames.shape[-2], _CHUNK_FRAMES):
        spec = torch.view_as_real(torch.fft.rfft(frames[..., i:i + _CHUNK_FRAMES, :] * window, n=params.n_fft))
        spec = spec.square().sum(-1)
        if params.power == 1.0:
            spec = spec.sqrt_()
        rows = spec.shape[-2]
        if rows < _CHUNK_FRAMES:
            # BLAS picks other kernels (other rounding) for few rows; a fixed row count keeps streamed frames
            # bit-identical to whole-signal frames.
            spec = torch.nn.functional.pad(spec, (0, 0, 0, _CHUNK_FRAMES - rows))
        outs.append(torch.log(spec @ mel_fb + params.log_offset)[..., :rows, :])
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)
    if offsets is not None:
        out = out + offsets
    return out


def log_mel(waveform, params: FeatureParams, offsets=None):
    """Log-mel spectrogram.

    Args:
        waveform: ``[samples]`` or ``[batch, samples]`` at ``params.sample_rate``, float (numpy or torch).
        params: front-end parameters.
        offsets: optional per-band additive log offsets ``[n_mels]`` (microphone response correction, see
            :class:`anomaly.features.response.MicResponse`).

    Returns:
        float32 ``[frames, n_mels]`` (or ``[batch, frames, n_mels]``), the same kind (numpy/torch) as ``waveform``.
    """
    x, is_torch = _as_tensor(waveform)
    window = torch.from_numpy(hann_window(params))
    fb = torch.from_numpy(mel_filterbank(params).copy())
    off = None if offsets is None else _as_tensor(offsets)[0]
    with torch.no_grad():
        out = log_mel_torch(x, window, fb, params, off)
    return out if is_torch else out.numpy()


def patches(log_mel_frames, params: FeatureParams):
    """Cut a log-mel spectrogram into patches.

    Args:
        log_mel_frames: ``[frames, n_mels]`` (numpy or torch).

    Returns:
        ``[n, patch_frames, n_mels]`` of the same kind; ``n = 0`` when there are fewer frames than a patch.
    """
    x, is_torch = _as_tensor(log_mel_frames)
    if x.ndim != 2:
        raise ValueError(f"expected log-mel frames [frames, n_mels], got shape {tuple(x.shape)}")
    if x.shape[0] < params.patch_frames:
        out = x.new_zeros((0, params.patch_frames, x.shape[1]))
    else:
        out = x.unfold(0, params.patch_frames, params.patch_hop).transpose(1, 2).contiguous()
    return out if is_torch else out.numpy()


def patch_starts(n_patches: int, params: FeatureParams) -> np.ndarray:
    """Start time of each patch, seconds. Shape ``[n_patches]``."""
    return np.arange(n_patches) * params.patch_hop * params.hop_length / params.sample_rate
