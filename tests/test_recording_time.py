"""Recording times (anomaly.recording_time): WAV bext and LIST/ICRD chunks, FLAC tags, file names, --start-time,
modification times, and the overlaps and reversals between files. Every file is written here."""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from anomaly.recording_time import (
    TimeError,
    TimePolicy,
    assign_times,
    metadata_time,
    name_time,
    parse_stamp,
    parse_tz,
    sequence_problems,
)

SR = 16000


def utc(*a) -> float:
    return datetime(*a, tzinfo=UTC).timestamp()


def wav_bytes(seconds: float = 1.0) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * SR), np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def add_chunks(wav: bytes, *chunks: tuple[bytes, bytes], before_data: bool = True) -> bytes:
    """Insert RIFF chunks (id, body) before (or after) the data chunk and fix the RIFF size."""
    body = b"".join(cid + struct.pack("<I", len(b)) + b + (b"\0" if len(b) & 1 else b"") for cid, b in chunks)
    i = wav.index(b"data")
    out = wav[:i] + body + wav[i:] if before_data else wav + body
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


def bext(date: str, tod: str) -> bytes:
    b = bytearray(602)  # version 1 bext: 602 bytes before the coding history
    b[320:330] = date.encode()
    b[330:338] = tod.encode()
    return bytes(b)


def info_list(**tags: str) -> bytes:
    body = b"INFO"
    for k, v in tags.items():
        raw = v.encode() + b"\0"
        body += k.encode() + struct.pack("<I", len(raw)) + raw + (b"\0" if len(raw) & 1 else b"")
    return body


def test_wav_bext_origination_time(tmp_path):
    p = tmp_path / "a.wav"
    p.write_bytes(add_chunks(wav_bytes(), (b"bext", bext("2026-11-20", "08:15:30"))))
    dt, where = metadata_time(p)
    assert dt == datetime(2026, 11, 20, 8, 15, 30) and where.startswith("bext")
    assert sf.info(str(p)).frames == SR  # still a valid WAV for the audio reader


def test_wav_bext_colon_separated_date_and_bext_wins_over_icrd(tmp_path):
    p = tmp_path / "a.wav"
    p.write_bytes(add_chunks(wav_bytes(), (b"LIST", info_list(ICRD="2025-01-01 00:00:00")),
                             (b"bext", bext("2026:11:20", "08-15-30"))))
    assert metadata_time(p)[0] == datetime(2026, 11, 20, 8, 15, 30)


def test_wav_list_icrd_after_the_data(tmp_path):
    p = tmp_path / "a.wav"
    p.write_bytes(add_chunks(wav_bytes(), (b"LIST", info_list(INAM="x", ICRD="2026-11-20T09:00:05Z")),
                             before_data=False))
    dt, where = metadata_time(p)
    assert dt == datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC) and "ICRD" in where


def test_wav_icrd_written_by_libsndfile(tmp_path):
    p = tmp_path / "a.wav"
    with sf.SoundFile(p, "w", SR, 1, "PCM_16", format="WAV") as f:
        f.date = "2026-11-20 10:11:12"
        f.write(np.zeros(SR, np.float32))
    assert metadata_time(p)[0] == datetime(2026, 11, 20, 10, 11, 12)


def test_a_date_without_time_of_day_is_no_time(tmp_path):
    p = tmp_path / "a.wav"
    p.write_bytes(add_chunks(wav_bytes(), (b"LIST", info_list(ICRD="2026-11-20"))))
    assert metadata_time(p) is None
    p.write_bytes(add_chunks(wav_bytes(), (b"bext", bext("\0" * 10, "\0" * 8))))
    assert metadata_time(p) is None


def test_flac_date_tag(tmp_path):
    p = tmp_path / "a.flac"
    with sf.SoundFile(p, "w", SR, 1, "PCM_16", format="FLAC") as f:
        f.date = "2026-11-20T07:30:00+01:00"
        f.write(np.zeros(SR, np.float32))
    dt, where = metadata_time(p)
    assert dt.timestamp() == utc(2026, 11, 20, 6, 30) and where.startswith("DATE")


def test_flac_without_tags_and_other_files(tmp_path):
    p = tmp_path / "a.flac"
    sf.write(p, np.zeros(SR, np.float32), SR)
    assert metadata_time(p) is None
    (tmp_path / "junk.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEjunk")
    assert metadata_time(tmp_path / "junk.wav") is None
    assert metadata_time(tmp_path / "missing.wav") is None


@pytest.mark.parametrize("name,expected", [
    ("pump3_20261120T080000.flac", (2026, 11, 20, 8, 0, 0)),
    ("20261120_081530-mic2.wav", (2026, 11, 20, 8, 15, 30)),
    ("rec-2026-11-20_08-15-30.wav", (2026, 11, 20, 8, 15, 30)),
    ("2026-11-20 08.15.30.wav", (2026, 11, 20, 8, 15, 30)),
])
def test_times_in_names(name, expected):
    dt, text = name_time(name)
    assert dt == datetime(*expected) and text in name


@pytest.mark.parametrize("name", ["normal_0001.wav", "id_123456789012345.wav", "20261399_250000.wav",
                                  "x120261120T080000.wav"])
def test_names_without_a_time(name):
    assert name_time(name) is None


def test_name_time_z_suffix_and_custom_format():
    assert name_time("a_20261120T080000Z.wav")[0].tzinfo == UTC
    assert name_time("cam 20.11.2026 0815.wav", ["%d.%m.%Y %H%M"])[0] == datetime(2026, 11, 20, 8, 15)
    with pytest.raises(TimeError, match="%Q"):
        TimePolicy(name_formats=("%Y%Q",))
    with pytest.raises(TimeError, match="hour and minute"):
        TimePolicy(name_formats=("%Y%m%d",))


def test_parse_tz_and_stamp():
    assert parse_tz("UTC") is UTC and parse_tz("+01:00").utcoffset(None) == timedelta(hours=1)
    assert parse_tz("-0530").utcoffset(None) == -timedelta(hours=5, minutes=30)
    assert parse_tz("Europe/Berlin").key == "Europe/Berlin"
    with pytest.raises(TimeError, match="Mars/Base"):
        parse_tz("Mars/Base")
    assert parse_stamp("2026-11-20") is None and parse_stamp("yesterday") is None
    assert parse_stamp("1850-01-01 00:00:00") is None  # outside the sane years


def touch(p: Path, mtime: float, seconds: float = 10.0) -> Path:
    sf.write(p, np.zeros(int(seconds * SR), np.float32), SR)
    os.utime(p, (mtime, mtime))
    return p


def test_assign_times_in_order_of_preference(tmp_path):
    same_mtime = utc(2026, 12, 1, 12)
    a = tmp_path / "a.wav"
    a.write_bytes(add_chunks(wav_bytes(10), (b"bext", bext("2026-11-20", "08:00:00"))))
    os.utime(a, (same_mtime, same_mtime))
    b = touch(tmp_path / "b_20261120T080010.wav", same_mtime)
    c = touch(tmp_path / "c.wav", same_mtime)
    d = touch(tmp_path / "d.wav", same_mtime)
    files = [a, b, c, d]
    t = assign_times(files, [10.0] * 4, TimePolicy(start_utc=utc(2026, 11, 20, 8, 0, 20)))
    assert [f.source for f in t.files] == ["metadata", "name", "start-time", "contiguous"]
    assert [f.t0_utc - utc(2026, 11, 20, 8) for f in t.files] == [0, 10, 20, 30]
    assert t.problems == [] and not any(f.uncertain for f in t.files)

    t = assign_times(files, [10.0] * 4)  # no --start-time: c and d by mtime, on top of each other
    assert [f.source for f in t.files][2:] == ["mtime", "mtime"] and t.files[2].uncertain
    assert any("d.wav overlaps c.wav" in p for p in t.problems), t.problems
    assert any("2 file(s) have no recording time" in p and "--start-time" in p for p in t.problems)
    assert t.by_source() == {"metadata": 1, "name": 1, "mtime": 2}


def test_time_zone_for_naive_times(tmp_path):
    b = touch(tmp_path / "b_20261120T080000.wav", 0)
    t = assign_times([b], [10.0], TimePolicy(tz=parse_tz("+02:00")))
    assert t.files[0].t0_utc == utc(2026, 11, 20, 6)


def test_out_of_order_files_are_reported(tmp_path):
    later = touch(tmp_path / "a_20261120T090000.wav", 0)
    earlier = touch(tmp_path / "b_20261120T080000.wav", 0)
    t = assign_times([later, earlier], [10.0, 10.0])
    assert len(t.problems) == 1 and "out of order" in t.problems[0] and "60.0 min before" in t.problems[0]


def test_small_clock_differences_are_not_overlaps(tmp_path):
    from anomaly.recording_time import FileTime

    times = [FileTime(Path("a"), 0.0, 10.0, "name"), FileTime(Path("b"), 9.5, 10.0, "name")]
    assert sequence_problems(times) == []
    times[1] = FileTime(Path("b"), 5.0, 10.0, "name")
    assert "overlaps" in sequence_problems(times)[0]

