"""Audio input (anomaly.audio) and atomic writes (anomaly.atomic)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from anomaly import atomic
from anomaly.audio import (
    AudioWarning,
    ReadStats,
    StreamResampler,
    audio_info,
    file_patches,
    find_audio,
    iter_blocks,
    iter_patches,
    load,
)
from anomaly.errors import AudioError
from anomaly.features import DEFAULT_PARAMS, log_mel, patches

SR = 16000
P = DEFAULT_PARAMS


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def write(path: Path, data, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


@pytest.fixture
def no_audio_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        yield


# --------------------------------------------------------------------------------------------------------------------
# Resampling


@pytest.mark.parametrize("ext", ["wav", "flac"])
@pytest.mark.parametrize("sr", [44100, 48000, 8000])
def test_tone_is_resampled_to_16k(tmp_path, sr, ext, no_audio_warnings):
    path = write(tmp_path / f"tone{sr}.{ext}", sine(1000.0, 2.0, sr), sr)
    y = load(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 2 * SR) <= 1
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    bin_hz = SR / len(y)
    assert abs(np.argmax(spec) * bin_hz - 1000.0) <= bin_hz
    # level is kept (0.5 peak) away from the filter's edge effects
    assert np.abs(y[SR // 2: -SR // 2]).max() == pytest.approx(0.5, abs=0.01)


@settings(max_examples=25, deadline=None, database=None)
@given(
    sr_in=st.sampled_from([44100, 48000, 8000, 22050, 11025, 32000, 16000]),
    n=st.integers(1, 30000),
    sizes=st.lists(st.integers(0, 7000), max_size=30),
    seed=st.integers(0, 1000),
)
def test_stream_resampler_equals_resample_poly(sr_in, n, sizes, seed):
    x = noise(n, seed)
    rs = StreamResampler(sr_in, SR)
    out, i = [], 0
    for b in sizes:
        out.append(rs.push(x[i:i + b]))
        i += b
    out.append(rs.push(x[i:]))
    out.append(rs.flush())
    got = np.concatenate(out)
    ref = x if rs.identity else signal.resample_poly(x, rs.up, rs.down).astype(np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_stream_resampler_one_sample_blocks():
    x = noise(3000, seed=3)
    rs = StreamResampler(44100, SR)
    got = np.concatenate([rs.push(x[i:i + 1]) for i in range(len(x))] + [rs.flush()])
    np.testing.assert_array_equal(got, signal.resample_poly(x, 160, 441).astype(np.float32))


# --------------------------------------------------------------------------------------------------------------------
# Sample formats and channels


@pytest.mark.parametrize("subtype,dtype,full", [("PCM_16", np.int16, 2**15), ("PCM_32", np.int32, 2**31)])
def test_integer_pcm_is_scaled_to_unit_range(tmp_path, subtype, dtype, full):
    info = np.iinfo(dtype)
    ramp = np.linspace(info.min, info.max, 20000).astype(dtype)
    ramp[:3] = [info.min, info.max, full // 2]
    path = write(tmp_path / "int.wav", ramp, subtype=subtype)
    assert audio_info(path).subtype == subtype
    with pytest.warns(AudioWarning, match="clipped"):  # full-scale samples count as clipped
        y = load(path)
    assert y.dtype == np.float32
    assert y.min() == -1.0 and y.max() == np.float32(info.max / full) and y.max() > 0.9999
    assert y[2] == 0.5
    np.testing.assert_allclose(y, ramp / full, atol=1e-6)


def test_float32_pcm_values_are_kept(tmp_path, no_audio_warnings):
    x = sine(440.0, 1.0, SR, amp=0.75)
    y = load(write(tmp_path / "f.wav", x, subtype="FLOAT"))
    np.testing.assert_array_equal(y, x)
    assert -1.0 <= y.min() and y.max() <= 1.0


@pytest.fixture
def stereo(tmp_path):
    left, right = sine(440.0, 1.5, SR, 0.5), sine(1000.0, 1.5, SR, 0.25)
    return write(tmp_path / "st.wav", np.stack([left, right], 1), subtype="FLOAT"), left, right


def test_stereo_is_mixed_to_mean_by_default(stereo):
    path, left, right = stereo
    assert audio_info(path).channels == 2
    np.testing.assert_allclose(load(path), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("channel", [0, 1])
def test_stereo_channel_pick(stereo, channel):
    path, left, right = stereo
    np.testing.assert_array_equal(load(path, channel=channel), (left, right)[channel])


@pytest.mark.parametrize("channel", [5, 2, -1, "left"])
def test_missing_channel_is_an_audio_error(stereo, channel):
    path = stereo[0]
    with pytest.raises(AudioError, match=rf"channel .*{re.escape(repr(channel))}.* 2 channels") as e:
        load(path, channel=channel)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as e:
        load(path)
    assert str(path) in str(e.value)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(AudioError, match="directory") as e:
        audio_info(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 100)
    for fn in (audio_info, load):
        with pytest.raises(AudioError, match="not a readable WAV/FLAC") as e:
            fn(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_empty_wav(tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert audio_info(path).frames == 0
    with pytest.raises(AudioError, match="empty") as e:
        load(path)
    assert str(path) in str(e.value)


def test_file_shorter_than_one_patch(tmp_path):
    short = write(tmp_path / "short.wav", noise(P.min_samples - 1))
    with pytest.raises(AudioError, match="shorter than one patch") as e:
        file_patches(short, P)
    assert str(short) in str(e.value) and "0.975 s needed" in str(e.value)
    with pytest.raises(AudioError, match="shorter than one patch"):
        load(short, min_samples=P.min_samples)
    # the same length at 48 kHz is counted after resampling
    with pytest.raises(AudioError, match="shorter than one patch"):
        load(write(tmp_path / "short48.wav", noise(3 * (P.min_samples - 1)), 48000), min_samples=P.min_samples)
    starts, pt = file_patches(write(tmp_path / "ok.wav", noise(P.min_samples)), P)
    assert pt.shape == (1, 96, 64) and starts.tolist() == [0.0]


@pytest.mark.parametrize("bad,at_s,sr", [(np.nan, 0.5, SR), (np.inf, 1.25, 44100), (-np.inf, 2.0, SR)])
def test_nan_or_inf_sample_names_the_time(tmp_path, bad, at_s, sr):
    x = noise(3 * sr)
    x[int(at_s * sr)] = bad
    path = write(tmp_path / "bad.wav", x, sr, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf") as e:
        load(path)
    assert f"{at_s:.3f} s" in str(e.value) and str(path) in str(e.value)
    # the same time when the bad sample is in a later block
    with pytest.raises(AudioError, match=re.escape(f"{at_s:.3f} s")):
        list(iter_blocks(path, block_seconds=0.3))


@pytest.mark.parametrize("ext", ["flac", "wav"])
def test_truncated_file_loads_less_or_raises_audio_error(tmp_path, ext):
    full = write(tmp_path / f"full.{ext}", noise(3 * SR, seed=5))
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    for read in (lambda: len(load(cut)), lambda: file_patches(cut, P)[1].shape[0] * P.patch_hop_samples,
                 lambda: sum(map(len, iter_blocks(cut, block_seconds=0.4)))):
        try:
            n = read()
        except AudioError as e:
            assert str(cut) in str(e)
        else:
            assert 0 < n < 3 * SR


# --------------------------------------------------------------------------------------------------------------------
# Warnings


def test_all_zero_file_warns(tmp_path):
    path = write(tmp_path / "zeros.wav", np.zeros(2 * SR, np.float32))
    with pytest.warns(AudioWarning, match="zero") as rec:
        y = load(path)
    assert len(rec) == 1 and str(path) in str(rec[0].message)
    assert len(y) == 2 * SR and not y.any()


def test_clipping_share_warns(tmp_path):
    x = noise(2 * SR, seed=6, scale=0.1)
    x[: len(x) // 20] = 1.0  # 5 % at full scale
    path = write(tmp_path / "clip.wav", x, subtype="PCM_16")
    stats = ReadStats()
    with pytest.warns(AudioWarning, match=r"5\.00% of samples are clipped") as rec:
        list(iter_blocks(path, stats=stats))
    assert len(rec) == 1
    assert stats.clipped_share == pytest.approx(0.05, abs=1e-4) and stats.samples == 2 * SR


def test_clean_file_emits_no_warning(tmp_path, no_audio_warnings):
    stats = ReadStats()
    y = np.concatenate(list(iter_blocks(write(tmp_path / "ok.flac", noise(SR, seed=7)), stats=stats)))
    assert len(y) == SR and stats.clipped == 0 and stats.nonzero


# --------------------------------------------------------------------------------------------------------------------
# Block-wise reading


def test_iter_patches_small_blocks_equal_file_patches(tmp_path, no_audio_warnings):
    x = noise(180 * SR, seed=8) + sine(1000.0, 180.0, SR, 0.2)
    path = write(tmp_path / "3min.wav", x, subtype="PCM_16")
    starts_ref, ref = file_patches(path, P)
    assert ref.shape == (187, 96, 64)
    parts = list(iter_patches(path, P, block_seconds=7.3))
    assert len(parts) > 20
    starts = np.concatenate([s for s, _ in parts])
    got = np.concatenate([p for _, p in parts])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(starts, starts_ref)
    np.testing.assert_allclose(starts, np.arange(187) * 0.96, atol=1e-9)


def test_streamed_patches_equal_whole_signal_after_resampling(tmp_path, no_audio_warnings):
    path = write(tmp_path / "48k.flac", noise(20 * 48000, seed=9), 48000)
    y = load(path)
    starts, got = file_patches(path, P)
    ref = patches(log_mel(y, P), P)
    assert got.shape == ref.shape == (20, 96, 64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    _, small = zip(*iter_patches(path, P, block_seconds=1.7), strict=True)
    np.testing.assert_array_equal(np.concatenate(small), got)


def test_iter_blocks_on_20_minute_file_never_exceeds_block(tmp_path, no_audio_warnings):
    path = tmp_path / "20min.wav"
    chunk = noise(60 * SR, seed=10, scale=0.05)
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for _ in range(20):
            f.write(chunk)
    block_seconds = 45.0
    sizes = [len(b) for b in iter_blocks(path, block_seconds=block_seconds)]
    path.unlink()
    assert sum(sizes) == 20 * 60 * SR
    assert max(sizes) <= block_seconds * SR
    assert len(sizes) == 27


@pytest.mark.parametrize("sr", [44100, 8000])
def test_iter_blocks_resampled_never_exceeds_block(tmp_path, sr, no_audio_warnings):
    path = write(tmp_path / "x.wav", noise(30 * sr, seed=11), sr)
    sizes = [len(b) for b in iter_blocks(path, block_seconds=2.5)]
    assert max(sizes) <= 2.5 * SR
    assert abs(sum(sizes) - 30 * SR) <= 1


# --------------------------------------------------------------------------------------------------------------------
# find_audio


def test_find_audio_nested(tmp_path):
    for rel in ["a/b/c/deep.wav", "a/one.flac", "a/b/Loud.WAV", "top.wav", "a/readme.txt", "a/b/x.mp3"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "dir.wav").mkdir()  # a directory with an audio suffix is not a file
    found = find_audio([tmp_path / "a"])
    assert found == sorted(found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/b/Loud.WAV", "a/b/c/deep.wav", "a/one.flac"]
    both = find_audio([tmp_path / "top.wav", str(tmp_path / "a" / "b")])
    assert [p.name for p in both] == ["top.wav", "Loud.WAV", "deep.wav"]


def test_find_audio_empty_or_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    for d in ("empty", "txt"):
        with pytest.raises(AudioError, match="no .wav or .flac") as e:
            find_audio([tmp_path / d])
        assert str(tmp_path / d) in str(e.value)
    with pytest.raises(AudioError, match="not found"):
        find_audio([tmp_path / "missing"])


# --------------------------------------------------------------------------------------------------------------------
# anomaly.atomic


def leftovers(d: Path, name: str) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(f".{name}."))


def test_write_bytes_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "model.bin"
    atomic.write_bytes(target, b"one")
    atomic.write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]
    atomic.write_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 1\n}\n'
    assert leftovers(tmp_path, "m.json") == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_error_keeps_old_content(tmp_path, exc):
    target = tmp_path / "scores.csv"
    target.write_text("old")
    with pytest.raises(exc):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise exc()
    assert target.read_text() == "old"
    assert leftovers(tmp_path, "scores.csv") == []
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_error_keeps_old_directory(tmp_path, exc):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.pt").write_text("old")
    with pytest.raises(exc):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "weights.pt").write_text("new, incomplete")
            (tmp / "sub").mkdir()
            raise exc()
    assert [p.name for p in target.iterdir()] == ["weights.pt"]
    assert (target / "weights.pt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_replaces_on_success(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic.atomic_dir(target) as tmp:
        (tmp / "weights.pt").write_text("new")
        assert not (target / "weights.pt").exists()  # nothing visible until the block ends
    assert [p.name for p in target.iterdir()] == ["weights.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with pytest.raises(FileExistsError):
        with atomic.atomic_dir(target, overwrite=False):
            pass
    assert (target / "weights.pt").read_text() == "new"
