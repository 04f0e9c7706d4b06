"""Property tests of the YAMNet-style log-mel front end (anomaly.features), torchaudio style."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from anomaly.errors import DataError, ParamsMismatchError
from anomaly.features import (
    DEFAULT_PARAMS,
    FeatureParams,
    LogMel,
    MicResponse,
    Patches,
    PatchStream,
    log_mel,
    mel_centers,
    mel_filterbank,
    num_frames,
    num_patches,
    patch_starts,
    patches,
)
from anomaly.features import functional as F

SR = 16000
P = DEFAULT_PARAMS
FAST = settings(max_examples=25, deadline=None, database=None)


def tone(freq: float, seconds: float = 1.0, amp: float = 0.5, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def loudest_band(y: np.ndarray) -> int:
    return int(np.argmax(np.exp(log_mel(y, P)).mean(axis=0)))


# --------------------------------------------------------------------------------------------------------------------
# Tones land in the right mel band


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0, 6000.0])
def test_tone_peaks_in_nearest_mel_band(freq):
    centres = mel_centers(P)
    assert loudest_band(tone(freq)) == int(np.argmin(np.abs(centres - freq)))


@FAST
@given(band=st.integers(0, P.n_mels - 1), frac=st.floats(-0.3, 0.3))
def test_tone_near_any_band_centre_peaks_there(band, frac):
    # Tones within 30 % of the spacing from a band centre; nearer the midpoint between two centres, Hann leakage over
    # 31.25 Hz FFT bins can legitimately tip the balance to the neighbour.
    c = mel_centers(P)
    assume(not (band == 0 and frac < 0) and not (band == P.n_mels - 1 and frac > 0))
    spacing = (c[band + 1] - c[band]) if frac > 0 else (c[band] - c[band - 1]) if band else 0.0
    assert loudest_band(tone(c[band] + frac * spacing)) == band


def test_mel_centers_are_htk_spaced_between_fmin_and_fmax():
    c = mel_centers(P)
    assert c.shape == (P.n_mels,)
    assert P.f_min < c[0] < c[-1] < P.f_max
    mels = 2595.0 * np.log10(1.0 + c / 700.0)
    np.testing.assert_allclose(np.diff(mels), np.diff(mels)[0], rtol=1e-9)


# --------------------------------------------------------------------------------------------------------------------
# Shapes, dtypes, numpy/torch parity, modules


def test_ten_seconds_gives_998_frames_and_10_patches():
    x = noise(10 * SR)
    lm = log_mel(x, P)
    assert lm.shape == (998, 64) and 998 <= lm.shape[0] <= 1001
    assert isinstance(lm, np.ndarray) and lm.dtype == np.float32
    pt = patches(lm, P)
    assert pt.shape == (10, 96, 64) and pt.dtype == np.float32
    np.testing.assert_allclose(patch_starts(10, P), np.arange(10) * 0.96, atol=1e-12)


def test_torch_input_gives_torch_output_identical_to_numpy():
    x = noise(3 * SR, seed=1)
    lm_np = log_mel(x, P)
    lm_t = log_mel(torch.from_numpy(x), P)
    assert isinstance(lm_t, torch.Tensor) and lm_t.dtype == torch.float32
    np.testing.assert_array_equal(lm_t.numpy(), lm_np)
    pt_t = patches(lm_t, P)
    assert isinstance(pt_t, torch.Tensor) and pt_t.dtype == torch.float32
    np.testing.assert_array_equal(pt_t.numpy(), patches(lm_np, P))


def test_float64_input_is_computed_in_float32():
    x = noise(2 * SR, seed=2)
    out = log_mel(x.astype(np.float64), P)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, log_mel(x, P))
    assert log_mel(torch.from_numpy(x).double(), P).dtype == torch.float32


@pytest.mark.parametrize("as_torch", [False, True])
def test_batch_input(as_torch):
    xb = np.stack([noise(2 * SR, seed=s) for s in range(3)])
    out = log_mel(torch.from_numpy(xb) if as_torch else xb, P)
    assert tuple(out.shape) == (3, num_frames(2 * SR, P), 64)
    out = out.numpy() if as_torch else out
    assert out.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(out[i], log_mel(xb[i], P), rtol=0, atol=1e-6)
    # different rows really are different signals
    assert not np.allclose(out[0], out[1])


def test_logmel_module_equals_functional():
    x = torch.from_numpy(noise(3 * SR, seed=3))
    torch.testing.assert_close(LogMel(P)(x), log_mel(x, P), rtol=0, atol=0)
    off = np.linspace(-0.5, 0.5, 64).astype(np.float32)
    torch.testing.assert_close(LogMel(P, off)(x), log_mel(x, P, off), rtol=0, atol=0)
    torch.testing.assert_close(LogMel(P, off)(x), log_mel(x, P) + torch.from_numpy(off), rtol=0, atol=1e-6)
    lm = LogMel(P)(x)
    torch.testing.assert_close(Patches(P)(lm), patches(lm, P), rtol=0, atol=0)


def test_logmel_module_holds_constants_as_buffers_and_checks_offsets():
    m = LogMel(P)
    names = dict(m.named_buffers())
    assert set(names) == {"window", "mel_fb", "offsets"}
    assert names["mel_fb"].shape == (257, 64) and names["window"].shape == (400,)
    with pytest.raises(ValueError, match="64 mel offsets"):
        LogMel(P, np.zeros(10, np.float32))


def test_short_input_gives_no_frames_and_no_patches():
    lm = log_mel(noise(399), P)
    assert lm.shape == (0, 64)
    assert patches(lm, P).shape == (0, 96, 64)
    assert patches(log_mel(noise(P.min_samples - 1), P), P).shape[0] == 0
    assert patches(log_mel(noise(P.min_samples), P), P).shape[0] == 1


def test_patches_rejects_wrong_rank():
    with pytest.raises(ValueError, match="frames, n_mels"):
        patches(np.zeros((2, 100, 64), np.float32), P)


@FAST
@given(n=st.integers(0, 40000), hop=st.integers(1, 150))
def test_num_frames_and_num_patches_match_shapes(n, hop):
    p = FeatureParams(patch_hop=hop)
    lm = log_mel(np.zeros(n, np.float32), p)
    assert lm.shape == (num_frames(n, p), 64)
    assert num_frames(n, p) == (0 if n < 400 else 1 + (n - 400) // 160)
    pt = patches(lm, p)
    assert pt.shape == (num_patches(lm.shape[0], p), 96, 64)
    assert (n >= p.min_samples) == (pt.shape[0] >= 1)


@pytest.mark.parametrize("hop,expected", [(48, 19), (96, 10), (120, 8), (32, 29)])
def test_patch_hop_controls_patch_count_and_content(hop, expected):
    p = FeatureParams(patch_hop=hop)
    lm = log_mel(noise(10 * SR, seed=4), p)
    pt = patches(lm, p)
    assert pt.shape == (expected, 96, 64) == (num_patches(998, p), 96, 64)
    for j in (0, 1, expected - 1):
        np.testing.assert_array_equal(pt[j], lm[j * hop: j * hop + 96])
    np.testing.assert_allclose(patch_starts(expected, p), np.arange(expected) * hop * 0.01, atol=1e-12)


def test_log_offset_floor_for_silence():
    lm = log_mel(np.zeros(SR, np.float32), P)
    np.testing.assert_allclose(lm, np.log(P.log_offset), rtol=1e-6)


def test_power_two_is_square_of_magnitude_mel():
    x = noise(SR, seed=5)
    p2 = FeatureParams(power=2.0)
    spec = np.abs(np.fft.rfft(F.hann_window(P) * x[:400], n=512))
    fb = mel_filterbank(P).astype(np.float64)
    np.testing.assert_allclose(log_mel(x, p2)[0], np.log(spec**2 @ fb + 1e-3), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# Independent references


def htk_mel_matrix(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangles from the HTK formula, built band by band with np.interp: [n_fft//2+1, n_mels]."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    return np.stack([np.interp(freqs, edges[i:i + 3], [0.0, 1.0, 0.0], left=0, right=0) for i in range(n_mels)], 1)


def numpy_log_mel(y: np.ndarray) -> np.ndarray:
    """Plain numpy front end: explicit framing, periodic Hann, zero-padded 512-point rFFT, magnitude, HTK mel, log."""
    y = np.asarray(y, np.float64)
    n_frames = 1 + (len(y) - 400) // 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([y[i * 160: i * 160 + 400] * window for i in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, n=512, axis=1))
    return np.log(mag @ htk_mel_matrix(16000, 512, 64, 125.0, 7500.0) + 0.001)


def test_filterbank_matches_numpy_htk_formula():
    fb = mel_filterbank(P)
    assert fb.shape == (257, 64) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, htk_mel_matrix(16000, 512, 64, 125.0, 7500.0), rtol=0, atol=1e-6)
    assert fb.max() <= 1.0 and (fb.sum(axis=0) > 0).all()  # unit peaks, no empty band


def test_front_end_matches_plain_numpy_reference():
    y = tone(440.0, 1.5, 0.3) + tone(2500.0, 1.5, 0.2) + noise(int(1.5 * SR), seed=6, scale=0.05)
    ours = log_mel(y, P)
    ref = numpy_log_mel(y)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None).T
    np.testing.assert_allclose(mel_filterbank(P), ref, rtol=0, atol=1e-6)


def test_front_end_matches_librosa_stft():
    librosa = pytest.importorskip("librosa")
    y = (tone(700.0, 2.0, 0.3) + tone(5100.0, 2.0, 0.1) + noise(2 * SR, seed=7, scale=0.05)).astype(np.float64)
    # librosa centres the 400-sample window in the 512-sample frame (56 zeros each side); ours starts the window at
    # the frame start and zero-pads the end. Same magnitudes once our input is shifted by 56 samples.
    spec = np.abs(librosa.stft(y, n_fft=512, hop_length=160, win_length=400, window="hann", center=False))
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None)
    ref = np.log(fb.astype(np.float64) @ spec + 0.001).T
    ours = log_mel(y[56:], P)
    n = min(len(ours), len(ref))
    assert abs(len(ours) - len(ref)) <= 1 and n > 190
    np.testing.assert_allclose(ours[:n], ref[:n], rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# FeatureParams

PINNED_DEFAULT_HASH = "4cdef92d4437da2e"

# A valid different value for every field that has one (mel_scale only allows "htk").
CHANGES = dict(sample_rate=22050, window_length=401, hop_length=161, n_fft=1024, n_mels=65, f_min=126.0,
               f_max=7600.0, power=2.0, log_offset=0.01, patch_frames=97, patch_hop=48)


def test_default_hash_is_pinned_16_hex():
    h = FeatureParams().hash()
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert h == PINNED_DEFAULT_HASH, "changing the front end invalidates every trained model; bump deliberately"
    assert FeatureParams().hash() == h == DEFAULT_PARAMS.hash()


def test_changes_cover_every_changeable_field():
    names = {f.name for f in dataclasses.fields(FeatureParams)}
    assert set(CHANGES) == names - {"mel_scale"}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_hash_differs_when_a_field_changes(field):
    other = dataclasses.replace(P, **{field: CHANGES[field]})
    assert other.hash() != P.hash()
    assert set(P.diff(other)) == {field}


def test_equal_params_have_equal_hash():
    same = FeatureParams(f_min=125, f_max=7500, power=1, log_offset=0.001)
    assert same == P
    assert same.hash() == P.hash()


def test_dict_round_trip():
    for p in (P, FeatureParams(n_mels=32, patch_hop=48, power=2.0)):
        d = p.to_dict()
        assert FeatureParams.from_dict(d) == p
        assert FeatureParams.from_dict(d).hash() == p.hash()
    with pytest.raises(ParamsMismatchError, match="bogus"):
        FeatureParams.from_dict({**P.to_dict(), "bogus": 1})


def test_require_same_names_field_and_both_values():
    P.require_same(FeatureParams())
    with pytest.raises(ParamsMismatchError) as e:
        P.require_same(FeatureParams(n_mels=32), what="model")
    msg = str(e.value)
    assert "model" in msg and "n_mels" in msg and "32" in msg and "64" in msg
    with pytest.raises(ParamsMismatchError) as e:
        P.require_same(FeatureParams(hop_length=200, patch_hop=48))
    msg = str(e.value)
    assert all(s in msg for s in ("hop_length", "200", "160", "patch_hop", "48", "96"))


@pytest.mark.parametrize(
    "kwargs",
    [dict(sample_rate=0), dict(window_length=0), dict(window_length=513), dict(hop_length=0), dict(n_mels=0),
     dict(f_min=-1.0), dict(f_max=9000.0), dict(f_min=7500.0), dict(mel_scale="slaney"), dict(power=3.0),
     dict(log_offset=0.0), dict(patch_frames=0), dict(patch_hop=0)],
    ids=lambda d: next(iter(d)) + "=" + str(next(iter(d.values()))),
)
def test_invalid_params_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="invalid FeatureParams"):
        FeatureParams(**kwargs)


def test_derived_durations():
    assert P.patch_seconds == pytest.approx(0.96)
    assert P.patch_hop_samples == 96 * 160
    assert P.min_samples == 400 + 95 * 160
    assert num_frames(P.min_samples, P) == 96


# --------------------------------------------------------------------------------------------------------------------
# PatchStream


def run_stream(x: np.ndarray, p: FeatureParams, sizes, offsets=None) -> tuple[np.ndarray, PatchStream]:
    s = PatchStream(p, offsets)
    out, i = [], 0
    for b in sizes:
        out.append(s.push(x[i:i + b]))
        i += b
    out.append(s.push(x[i:]))
    return np.concatenate(out), s


@settings(max_examples=20, deadline=None, database=None)
@given(
    n=st.integers(0, 60000),
    hop=st.sampled_from([96, 48, 120]),
    sizes=st.lists(st.integers(0, 12000), max_size=25),
    seed=st.integers(0, 2**16),
)
def test_stream_random_blocks_equal_whole_signal(n, hop, sizes, seed):
    p = FeatureParams(patch_hop=hop)
    x = noise(n, seed=seed)
    got, s = run_stream(x, p, sizes)
    ref = patches(log_mel(x, p), p)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert s.patches_emitted == len(ref)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("hop", [96, 48, 120])
def test_stream_equals_whole_signal_exactly_with_large_blocks(hop):
    p = FeatureParams(patch_hop=hop)
    x = noise(12 * SR, seed=8)
    # every push produces >= 12 frames, so each FFT/matmul chunk has the same kernel path as the whole-signal one
    got, s = run_stream(x, p, [4 * SR, 3 * SR + 77, 2 * SR + 5])
    ref = patches(log_mel(x, p), p)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_stream_applies_offsets():
    x = noise(4 * SR, seed=9)
    off = np.linspace(-1, 1, 64).astype(np.float32)
    got, _ = run_stream(x, P, [SR, SR, SR])
    got_off, _ = run_stream(x, P, [SR, SR, SR], off)
    np.testing.assert_allclose(got_off, got + off, rtol=0, atol=1e-6)


def test_stream_is_bit_exact_with_one_frame_blocks():
    x = noise(2 * SR, seed=10)
    got, _ = run_stream(x, P, [400] + [160] * 99)  # every push completes exactly one frame
    np.testing.assert_array_equal(got, patches(log_mel(x, P), P))


def test_stream_zero_and_tiny_blocks():
    x = noise(P.min_samples + 160 * 96, seed=11)  # exactly two patches (192 frames)
    s = PatchStream(P)
    assert s.push(np.zeros(0, np.float32)).shape == (0, 96, 64)
    assert s.push(x[:399]).shape == (0, 96, 64)
    out = [s.push(x[399:]), s.push(np.zeros(0, np.float32))]
    assert sum(len(o) for o in out) == 2 == s.patches_emitted


# --------------------------------------------------------------------------------------------------------------------
# MicResponse


def write(tmp_path, text: str, name: str = "resp.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_from_csv_with_header_and_comments(tmp_path):
    path = write(tmp_path, "# measured 2024-05-01\n\nfrequency_hz,gain_db\n# mid band\n100, -3\n1000,0\n8000,2.5\n")
    r = MicResponse.from_csv(path)
    assert r.freqs_hz == (100.0, 1000.0, 8000.0)
    assert r.gains_db == (-3.0, 0.0, 2.5)
    # no header at all is fine too
    assert MicResponse.from_csv(write(tmp_path, "100,-3\n1000,0\n", "b.csv")).freqs_hz == (100.0, 1000.0)


def test_flat_zero_db_gives_zero_offsets():
    off = MicResponse((20.0, 20000.0), (0.0, 0.0)).mel_offsets(P)
    assert off.shape == (64,) and off.dtype == np.float32
    np.testing.assert_allclose(off, 0.0, atol=1e-7)


def test_flat_plus_six_db_offsets():
    off = MicResponse((20.0, 20000.0), (6.0, 6.0)).mel_offsets(P)
    np.testing.assert_allclose(off, -np.log(10 ** (6 / 20)), rtol=1e-6)


def test_gain_outside_curve_holds_end_values():
    r = MicResponse((1000.0, 2000.0), (-4.0, 3.0))
    g = r.band_gains_db(P)
    c = mel_centers(P)
    np.testing.assert_allclose(g[c < 900], -4.0, atol=1e-9)
    np.testing.assert_allclose(g[c > 2300], 3.0, atol=1e-9)


def test_offsets_undo_a_simulated_microphone():
    resp = MicResponse((50.0, 150.0, 400.0, 2000.0, 5000.0, 7000.0, 8000.0), (-12.0, -6.0, 0.0, 1.0, 6.0, 8.0, 3.0))
    x = noise(5 * SR, seed=12, scale=0.2).astype(np.float64)
    spec = np.fft.rfft(x)
    gain = 10 ** (np.interp(np.fft.rfftfreq(len(x), 1 / SR), resp.freqs_hz, resp.gains_db) / 20)
    recorded = np.fft.irfft(spec * gain, n=len(x)).astype(np.float32)

    clean = log_mel(x.astype(np.float32), P)
    raw_err = np.abs((log_mel(recorded, P) - clean).mean(axis=0))
    fixed_err = np.abs((log_mel(recorded, P, resp.mel_offsets(P)) - clean).mean(axis=0))
    assert raw_err.max() > 0.5  # the simulated microphone really changes the features ...
    assert fixed_err.mean() < 0.1 * raw_err.mean()  # ... and the offsets take most of that away
    assert fixed_err.max() < 0.1


def test_bad_csv_line_names_file_and_line(tmp_path):
    path = write(tmp_path, "frequency_hz,gain_db\n100,-3\n1000,zero\n8000,2\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:3")):
        MicResponse.from_csv(path)
    path = write(tmp_path, "100,-3\n1000\n", "b.csv")
    with pytest.raises(DataError, match=re.escape(f"{path}:2")):
        MicResponse.from_csv(path)


def test_non_increasing_frequencies(tmp_path):
    with pytest.raises(DataError, match="increasing"):
        MicResponse.from_csv(write(tmp_path, "100,0\n1000,1\n1000,2\n"))
    with pytest.raises(DataError, match="increasing"):
        MicResponse((1000.0, 100.0), (0.0, 0.0))


def test_other_invalid_curves(tmp_path):
    with pytest.raises(DataError, match="not found"):
        MicResponse.from_csv(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=">= 2"):
        MicResponse.from_csv(write(tmp_path, "# only a header\nfrequency_hz,gain_db\n1000,0\n"))
    with pytest.raises(DataError, match="non-finite"):
        MicResponse((100.0, 1000.0), (0.0, float("nan")))


def test_example_response_file_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "mic_response_example.csv"
    r = MicResponse.from_csv(path)
    f, g = np.array(r.freqs_hz), np.array(r.gains_db)
    assert len(f) >= 10 and f[0] <= 50 and f[-1] >= 18000
    assert g[f <= 50].max() < -2  # low-frequency roll-off
    assert np.abs(g[(f >= 300) & (f <= 2000)]).max() <= 1.0  # flat mid band
    peak = int(np.argmax(g))
    assert 12000 <= f[peak] <= 17000 and 6 <= g[peak] <= 10  # resonance
    assert g[-1] < g[peak] - 3  # rolls off above it
    off = r.mel_offsets(P)
    assert off.shape == (64,) and np.isfinite(off).all() and np.abs(off).max() < 1.0
