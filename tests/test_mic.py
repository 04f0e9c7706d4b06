"""Microphone paths with a stand-in `sounddevice` module (no sound card or PortAudio on CI machines)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import soundfile as sf

from calibration.errors import CalibrationError
from calibration.monitoring.mic import mic_blocks, record_mic


class _PortAudioError(Exception):
    pass


def fake_sounddevice(fail_after: int | None = None, freq: float = 1000.0) -> types.ModuleType:
    """A module with sounddevice's InputStream API producing a 0.25-amplitude sine."""
    mod = types.ModuleType("sounddevice")
    mod.PortAudioError = _PortAudioError

    class InputStream:
        def __init__(self, samplerate, channels, dtype, device=None, blocksize=0):
            if device == "missing":
                raise _PortAudioError("Error querying device missing")
            self.sr, self.pos, self.reads = samplerate, 0, 0

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self, n):
            self.reads += 1
            if fail_after is not None and self.reads > fail_after:
                raise _PortAudioError("device unplugged")
            t = (self.pos + np.arange(n)) / self.sr
            self.pos += n
            return (0.25 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None], False

    mod.InputStream = InputStream
    mod.query_devices = lambda: "0 fake mic"
    return mod


def test_record_mic_writes_the_recording_and_meters_the_level(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice())
    levels = []
    out = record_mic(tmp_path / "rec.flac", minutes=0.05, on_block=lambda f, db, ov: levels.append((f, db, ov)))
    x, sr = sf.read(out)
    assert sr == 16000 and x.shape == (48000,)
    assert levels[-1][0] == pytest.approx(1.0)
    assert all(abs(db - 20 * np.log10(0.25 / np.sqrt(2))) < 0.1 for _, db, _ in levels)  # a sine's RMS: -15.1 dBFS


def test_record_mic_device_failure_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(fail_after=5))
    with pytest.raises(CalibrationError, match="device unplugged"):
        record_mic(tmp_path / "rec.flac", minutes=0.05)
    assert list(tmp_path.iterdir()) == []  # the temp file was removed, nothing half-written


def test_missing_device_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice())
    with pytest.raises(CalibrationError, match="sound card missing"):
        record_mic(tmp_path / "rec.flac", minutes=0.01, device="missing")


def test_mic_blocks_for_monitoring(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice())
    blocks = list(mic_blocks(None, minutes=0.01))
    assert sum(len(b) for b in blocks) == 9600 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
