"""Where calibration audio comes from: files and directories, or a live sound card (sounddevice/PortAudio)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from anomaly.atomic import atomic_path
from calibration.errors import CalibrationError


def record_mic(path: str | Path, minutes: float, device: int | str | None = None, sample_rate: int = 16000,
               on_block: Callable[[float, float, bool], None] | None = None) -> Path:
    """Record mono audio from a sound card into a 16-bit FLAC, written atomically.

    Args:
        on_block: called per 0.1 s block as ``on_block(fraction_done, level_dbfs, overflowed)`` (level meter).

    Raises:
        CalibrationError: PortAudio missing, no such device, or the device failed mid-recording.
    """
    import soundfile as sf

    try:
        import sounddevice as sd
    except (OSError, ImportError):
        raise CalibrationError("microphone capture needs the sounddevice package and the PortAudio library "
                               "(Debian/Ubuntu: apt-get install libportaudio2), or record elsewhere and use --from "
                               "FILES") from None
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
        raise CalibrationError(f"sound card {device if device is not None else '(default)'}: {e}") from None
    return path


def list_devices() -> str:
    """The input devices PortAudio sees (for --device)."""
    try:
        import sounddevice as sd
    except (OSError, ImportError):
        raise CalibrationError("listing sound cards needs sounddevice and the PortAudio library "
                               "(apt-get install libportaudio2)") from None
    return str(sd.query_devices())
