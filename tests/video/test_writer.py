from __future__ import annotations

import numpy as np
import pytest

from vcmr.audio.io import load_audio
from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.probe import probe
from vcmr.video.writer import write_video


def test_roundtrip_picture_and_sound(tmp_path):
    sr = 16000
    t = np.arange(2 * sr) / sr
    audio = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = [np.full((32, 48, 3), v, np.uint8) for v in np.linspace(20, 230, 20).astype(np.uint8)]
    path = write_video(tmp_path / "a.mp4", frames, 10, audio, sr, crf=10)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (48, 32, 10.0)
    assert info.video_duration == pytest.approx(2.0, abs=0.05)
    got = load_audio(path, sr, offset=0.5, duration=1.0)
    # AAC is lossy: compare against the source by correlation, not sample by sample.
    ref = audio[sr // 2 : sr // 2 + sr]
    assert np.corrcoef(got, ref)[0, 1] > 0.99
    grey = [float(s.image.mean()) for s in iter_samples(path, 0.0, 2.0, [FrameGrid(10.0, 0, False)])]
    np.testing.assert_allclose(grey, np.linspace(20, 230, 20).astype(np.uint8), atol=3)
    assert not [p for p in tmp_path.iterdir() if p.name != "a.mp4"]  # no temp files left


def test_fast_aac_coder_keeps_the_sound(tmp_path):
    sr = 8000
    t = np.arange(3 * sr) / sr
    audio = (0.4 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32)
    path = write_video(tmp_path / "a.mp4", None, 10, audio, sr, aac_coder="fast")
    got = load_audio(path, sr, offset=0.5, duration=2.0)
    assert np.corrcoef(got, audio[sr // 2 : sr // 2 + 2 * sr])[0, 1] > 0.99
    with pytest.raises(ValueError, match="aac_coder must be one of"):
        write_video(tmp_path / "b.mp4", None, 10, audio, sr, aac_coder="quick")
    assert not (tmp_path / "b.mp4").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="nothing to write"):
        write_video(tmp_path / "x.mp4", None, 10)
    with pytest.raises(ValueError, match="sample_rate"):
        write_video(tmp_path / "x.mp4", None, 10, np.zeros(10, np.float32), 0)
    assert not (tmp_path / "x.mp4").exists()
