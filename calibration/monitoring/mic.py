"""Sound-card input (sounddevice/PortAudio, an optional dependency imported when used): a live stream of blocks for
the monitor, and a recording into a FLAC file for calibration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from anomaly.atomic import atomic_path
from calibration.errors import CalibrationError

INSTALL = "the sounddevice package and the PortAudio library (Debian/Ubuntu: apt-get install libportaudio2)"


def _sounddevice(what: str, alternative: str = ""):
    try:
        import sounddevice as sd
    except (OSError, ImportError):
        raise CalibrationError(f"{what} needs {INSTALL}{alternative}") from None
    return sd


def _card(device) -> str:
    return str(device) if device is not None else "(default)"


def mic_blocks(device: int | str | None, minutes: float | None, sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """Blocks of 0.1 s from a sound card, until ``minutes`` (None: until interrupted)."""
    sd = _sounddevice("microphone input")
    total = None if minutes is None else int(minutes * 60 * sample_rate)
    done = 0
    try:
        with sd.InputStream(samplerate=sample_rate, channels=1, dtype="float32", device=device,
                            blocksize=sample_rate // 10) as stream:
            while total is None or done < total:
                data, _ = stream.read(sample_rate // 10)
                done += len(data)
                yield data[:, 0].copy()
    except sd.PortAudioError as e:
        raise CalibrationError(f"sound card {_card(device)}: {e}") from None


def record_mic(path: str | Path, minutes: float, device: int | str | None = None, sample_rate: int = 16000,
               on_block: Callable[[float, float, bool], None] | None = None) -> Path:
    """Record mono audio from a sound card into a 16-bit FLAC, written atomically.

    Args:
        on_block: called per 0.1 s block as ``on_block(fraction_done, level_dbfs, overflowed)`` (level meter).

    Raises:
        CalibrationError: PortAudio missing, no such device, or the device failed mid-recording.
    """
    sd = _sounddevice("microphone capture", ", or record elsewhere and use --from FILES")
    total = int(minutes * 60 * sample_rate)
    block = sample_rate // 10
    path = Path(path)
    try:
        with atomic_path(path, suffix=".flac") as tmp, \
                sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=1, format="FLAC", subtype="PCM_16") as out, \
                sd.InputStream(samplerate=sample_rate, channels=1, dtype="float32", device=device,
                               blocksize=block) as stream:
            done = 0
            while done < total:
                data, overflowed = stream.read(min(block, total - done))
                out.write(data)
                done += len(data)
                if on_block:
                    rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64)))) if len(data) else 0.0
                    on_block(done / total, 20 * np.log10(rms + 1e-12), bool(overflowed))
    except (sd.PortAudioError, ValueError) as e:
        raise CalibrationError(f"sound card {_card(device)}: {e}") from None
    return path
