"""Decoding of every supported container, windows, resampling and error reporting."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vcmr.audio.io import AudioDecodeError, audio_info, load_audio, save_audio

SR = 22050


def sine(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(path: Path, x: np.ndarray, sr: int, codec: str, stereo: bool = True, with_video: bool = False) -> Path:
    """Write ``x`` with PyAV (optionally next to a short black video stream)."""
    layout = "stereo" if stereo else "mono"
    with av.open(str(path), "w") as out:
        if with_video:
            vs = out.add_stream("libx264", rate=10)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        st = out.add_stream(codec, rate=sr, layout=layout)
        fmt = st.codec_context.codec.audio_formats[0].name
        hop = 1024
        data = np.stack([x, x]) if stereo else x[None]
        for i in range(0, x.size, hop):
            chunk = data[:, i : i + hop]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            if fmt != "fltp":
                frame = av.AudioResampler(format=fmt, layout=layout, rate=sr).resample(frame)
                frame = frame[0] if isinstance(frame, list) else frame
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
        if with_video:
            for k in range(int(x.size / sr * 10)):
                vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                vf.pts = k
                for pkt in vs.encode(vf):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
    return path


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[spec.argmax()])


@pytest.mark.parametrize(
    "name,codec",
    [("a.mp3", "libmp3lame"), ("a.m4a", "aac"), ("a.ogg", "libopus"), ("a.webm", "libopus"), ("a.mkv", "flac")],
)
def test_compressed_formats_decode_to_mono_at_target_rate(tmp_path, name, codec):
    sr = 48000 if "opus" in codec else SR
    x = sine(440.0, 2.0, sr)
    path = encode(tmp_path / name, x, sr, codec)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size / 16000 - 2.0) < 0.1
    assert abs(peak_hz(y, 16000) - 440.0) < 3.0
    assert 0.2 < np.abs(y).max() <= 1.0


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_soundfile_formats_and_exact_window(tmp_path, ext):
    x = sine(300.0, 3.0)
    x[SR : SR + 10] = 0.9  # a marker at exactly 1 s
    path = tmp_path / f"a{ext}"
    save_audio(path, x, SR)
    full = load_audio(path, SR)
    assert full.size == x.size
    np.testing.assert_allclose(full, x, atol=1e-4)
    win = load_audio(path, SR, offset=1.0, duration=0.5)
    assert win.size == SR // 2
    np.testing.assert_allclose(win[:10], 0.9, atol=1e-3)


def test_window_of_compressed_file_matches_full_decode(tmp_path):
    x = sine(220.0, 6.0) * np.linspace(0.1, 1.0, int(6.0 * SR)).astype(np.float32)
    path = encode(tmp_path / "a.m4a", x, SR, "aac")
    full = load_audio(path, SR)
    win = load_audio(path, SR, offset=3.0, duration=1.0)
    assert win.size == SR
    ref = full[3 * SR : 4 * SR]
    # Same samples up to codec/priming alignment: compare envelopes and correlation.
    corr = np.corrcoef(win, ref)[0, 1]
    assert corr > 0.98, corr


def test_video_container_audio_track(tmp_path):
    x = sine(500.0, 2.0)
    path = encode(tmp_path / "v.mp4", x, SR, "aac", with_video=True)
    info = audio_info(path)
    assert info.sample_rate == SR and info.channels == 2 and abs(info.duration - 2.0) < 0.1
    y = load_audio(path, 16000)
    assert abs(peak_hz(y, 16000) - 500.0) < 3.0


def test_resampling_preserves_pitch(tmp_path):
    path = tmp_path / "a.wav"
    save_audio(path, sine(1000.0, 1.0, 44100), 44100)
    y = load_audio(path, 16000)
    assert y.size == 16000
    assert abs(peak_hz(y, 16000) - 1000.0) < 2.0


def test_errors_name_the_file_and_reason(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty\.wav: file is empty"):
        load_audio(empty, 16000)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all " * 100)
    with pytest.raises(AudioDecodeError, match=r"junk\.mp3"):
        load_audio(junk, 16000)
    with pytest.raises(AudioDecodeError, match="does not exist"):
        load_audio(tmp_path / "missing.flac", 16000)


def test_video_without_audio_track(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for k in range(10):
            vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            vf.pts = k
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(path, 16000)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "cut.wav"
    save_audio(path, sine(440.0, 4.0), SR)
    data = path.read_bytes()
    # Keep the header (which announces 4 s) but only ~1 s of samples.
    path.write_bytes(data[: 44 + SR * 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(path, 16000)


def test_window_past_end(tmp_path):
    path = tmp_path / "a.flac"
    save_audio(path, sine(440.0, 1.0), SR)
    with pytest.raises(AudioDecodeError, match="past the end"):
        load_audio(path, 16000, offset=0.8, duration=0.5)
