"""Rendering: duration, soundtrack, cuts on the frame grid, crossfades, streaming."""

from __future__ import annotations

import av
import numpy as np
import pytest

from vcmr.assembly.render import (
    RenderError,
    RenderSettings,
    ShotSource,
    cover_short_side,
    frame_bounds,
    render_video,
)
from vcmr.audio.io import load_audio
from vcmr.video.scenes import SceneTracker

from .media import click_song, flat_library

FPS = 25


def settings(**kw) -> RenderSettings:
    base = dict(width=96, height=64, fps=FPS, crossfade=0.0, crf=18, preset="ultrafast", audio_bitrate=128000,
                audio_sample_rate=0, interpolation="BILINEAR", decoder_threads=1, thumb_height=32)
    base.update(kw)
    return RenderSettings(**base)


def decode_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def stream_durations(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return float(v.duration * v.time_base), float(a.duration * a.time_base), v.frames, a.codec_context.name, \
            v.codec_context.name, v.codec_context.pix_fmt, a.codec_context.channels


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return flat_library(tmp_path_factory.mktemp("lib"), 6, 3.0)


def make_shots(clips, bounds, in_points=None):
    return [ShotSource(str(clips[i % len(clips)]), (in_points or [0.3] * len(bounds))[i], a, b)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def test_frame_bounds_rounding():
    shots = [ShotSource("x", 0, 0.0, 0.519), ShotSource("x", 0, 0.519, 1.1), ShotSource("x", 0, 1.1, 1.49)]
    assert frame_bounds(shots, 25, 1.49) == [(0, 13), (13, 28), (28, 37)]
    with pytest.raises(ValueError, match="shorter than one frame"):
        frame_bounds([ShotSource("x", 0, 0.0, 0.01), ShotSource("x", 0, 0.01, 1.0)], 25, 1.0)


@pytest.mark.parametrize("size,out", [((1920, 1080), (1280, 720)), ((96, 96), (1280, 720)), ((640, 480), (96, 64)),
                                       ((480, 640), (1280, 720)), ((1000, 563), (1280, 720))])
def test_cover_short_side_covers(size, out):
    from vcmr.video.frames import scaled_size

    s = cover_short_side(*size, *out)
    w, h = scaled_size(*size, s)
    assert w >= out[0] and h >= out[1]
    assert min(w - out[0], h - out[1]) <= 2  # tight in the limiting direction


def test_render_duration_audio_and_cuts(tmp_path, library):
    song = click_song(tmp_path / "song.wav", 120.0, 5.13)
    duration = 5.13
    bounds = [0.0, 0.77, 1.5, 2.0, 2.87, 3.5, 4.25, duration]
    shots = make_shots(library, bounds, [0.0, 0.5, 1.0, 0.2, 0.9, 1.7, 0.4])
    out = tmp_path / "out" / "video.mp4"
    res = render_video(song, shots, out, duration, settings(), thumbs_dir=tmp_path / "thumbs", progress=False)
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))
    vdur, adur, nframes, acodec, vcodec, pix, ch = stream_durations(out)
    assert (acodec, vcodec, pix, ch) == ("aac", "h264", "yuv420p", 1)
    assert abs(vdur - duration) <= 1 / FPS and abs(adur - duration) <= 1 / FPS
    assert res.n_frames == round(duration * FPS)
    # The soundtrack is the song.
    sr = 16000
    a = load_audio(song, sr)
    b = load_audio(out, sr)
    n = min(a.size, b.size)
    assert abs(a.size - b.size) <= sr // FPS
    assert np.corrcoef(a[:n], b[:n])[0, 1] >= 0.99
    # Every cut that scene detection finds is within one frame of a shot boundary, and all are found.
    frames = decode_frames(out)
    assert len(frames) == res.n_frames
    tr = SceneTracker(FPS, threshold=20.0, min_scene_len=0.2)
    for i, f in enumerate(frames):
        tr.add(i, f)
    cuts = [s for s, _ in tr.finish(len(frames) / FPS).scenes[1:]]
    assert len(cuts) == len(bounds) - 2
    for c, bnd in zip(cuts, bounds[1:-1]):
        assert abs(c - bnd) <= 1 / FPS + 1e-9
    # Each shot shows its own clip's colour (frame centre vs the first frame of the clip).
    for sh, (f0, f1) in zip(shots, res.frame_bounds):
        want = decode_frames(sh.path)[0][30, 30].astype(int)
        got = frames[(f0 + f1) // 2][40, 48].astype(int)
        assert np.abs(want - got).max() < 24
    assert [p.name for p in res.thumbnails] == [f"shot_{i:04d}.jpg" for i in range(len(shots))]
    assert all(p.stat().st_size > 0 for p in res.thumbnails)


def test_crossfade_blends_after_the_cut(tmp_path, library):
    song = click_song(tmp_path / "song.wav", 120.0, 3.0, stereo=True)
    shots = make_shots(library[:2], [0.0, 1.6, 3.0], [0.0, 0.0])
    seen = {}
    res = render_video(song, shots, tmp_path / "x.mp4", 3.0, settings(crossfade=0.2), progress=False,
                       on_frame=lambda i, img: seen.__setitem__(i, img[40, 48].astype(int)))
    a0 = seen[10]
    b0 = seen[res.n_frames - 3]
    cut = res.frame_bounds[1][0]
    k = settings(crossfade=0.2).crossfade_frames  # 5 frames
    for j in range(k):
        w = (j + 1) / (k + 1)
        np.testing.assert_allclose(seen[cut + j], (1 - w) * a0 + w * b0, atol=3)
    np.testing.assert_allclose(seen[cut + k], b0, atol=2)
    np.testing.assert_allclose(seen[cut - 1], a0, atol=2)
    assert stream_durations(tmp_path / "x.mp4")[-1] == 2  # stereo song keeps its two channels


def test_audio_resampled_to_the_configured_rate(tmp_path, library):
    song = click_song(tmp_path / "song.wav", 120.0, 3.0, sr=22050)
    out = render_video(song, make_shots(library, [0.0, 1.5, 3.0]), tmp_path / "r.mp4", 3.0,
                       settings(audio_sample_rate=48000), progress=False).path
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 48000
    a, b = load_audio(song, 16000), load_audio(out, 16000)
    n = min(a.size, b.size)
    assert np.corrcoef(a[:n], b[:n])[0, 1] >= 0.99


def test_streaming_never_collects_frames(tmp_path, library, monkeypatch):
    """Frames reach the encoder one at a time: the renderer holds no list of frames."""
    import vcmr.assembly.render as R

    song = click_song(tmp_path / "song.wav", 120.0, 4.0)
    alive = []
    real = R.shot_frames

    def counting(src, n, s):
        for img in real(src, n, s):
            alive.append(1)
            yield img
            alive.pop()

    monkeypatch.setattr(R, "shot_frames", counting)
    peak = []
    render_video(song, make_shots(library, [0, 1, 2, 3, 4.0]), tmp_path / "y.mp4", 4.0, settings(),
                 progress=False, on_frame=lambda i, img: peak.append(len(alive)))
    assert max(peak) == 1


def test_errors_name_the_file(tmp_path, library):
    song = click_song(tmp_path / "song.wav", 120.0, 2.0)
    missing = tmp_path / "nope.mp4"
    with pytest.raises(RenderError, match="nope.mp4"):
        render_video(song, [ShotSource(str(missing), 0.0, 0.0, 2.0)], tmp_path / "z.mp4", 2.0, settings(),
                     progress=False)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(RenderError, match="bad.wav"):
        render_video(bad, [ShotSource(str(library[0]), 0.0, 0.0, 2.0)], tmp_path / "z.mp4", 2.0, settings(),
                     progress=False)
    assert not (tmp_path / "z.mp4").exists()
    with pytest.raises(ValueError, match="render.width"):
        render_video(song, [ShotSource(str(library[0]), 0.0, 0.0, 2.0)], tmp_path / "z.mp4", 2.0,
                     settings(width=95), progress=False)
