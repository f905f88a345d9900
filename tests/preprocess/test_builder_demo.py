"""Demo music videos: real mp4 files whose picture follows the planted music attributes."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

from vcmr.config import load_config
from vcmr.demo.videos import (
    DemoVideoSettings,
    draw_frames,
    ensure_demo_dataset,
    make_demo_videos,
    read_specs,
)
from vcmr.demo.synth import SongSpec
from vcmr.preprocess.builder import PreprocessConfig
from vcmr.data.manifest import read_manifest
from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.probe import probe

SMALL = DemoVideoSettings(n_videos=3, seed=1, duration=6.0, size=48, fps=8, sample_rate=16000,
                          min_shot=1.5, max_shot=2.5, oneshot_fraction=0.0, crf=23, aac_coder="fast")
DEMO_OVERRIDES = [
    "progress=false", "num_workers=0", "demo.n_videos=6", "demo.duration=8", "demo.size=48", "demo.fps=8",
    "demo.min_shot=1.5", "demo.max_shot=3", "demo.oneshot_fraction=0.34", "window.seconds=6",
    "audio.segment_seconds=3", "audio.n_segments=2", "scenes.max_scene_seconds=4",
    "frames.encoders.tiny_clip.image_size=32", "frames.encoders.tiny_clip.patch_size=8",
    "frames.encoders.tiny_clip.embed_dim=32", "frames.encoders.tiny_clip.layers=1",
]


def _background_hue(img: np.ndarray) -> float:
    r, g, b = img[1, 1].astype(float) / 255  # the corner is background
    return colorsys.rgb_to_hsv(r, g, b)[0]


def test_picture_follows_key_and_drums():
    rng = np.random.default_rng(0)
    for key in (0, 4, 8):
        spec = SongSpec("sine", "none", 120.0, key, "major", 0)
        frame = next(iter(draw_frames(spec, [], SMALL, rng)))
        assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8
        hue = _background_hue(frame)
        assert min(abs(hue - key / 12), 1 - abs(hue - key / 12)) < 0.02
    # More drum layers -> more objects -> more foreground pixels.
    areas = []
    for drums in ("none", "rock", "four_on_floor", "breakbeat"):
        spec = SongSpec("square", drums, 120.0, 0, "major", 0)
        f = next(iter(draw_frames(spec, [], SMALL, np.random.default_rng(1)))).astype(int)
        areas.append(int((np.abs(f - f[1, 1]).sum(-1) > 60).sum()))
    assert areas == sorted(areas) and areas[0] < areas[-1]


def test_motion_speed_follows_tempo():
    def motion(tempo: float) -> float:
        spec = SongSpec("sine", "none", tempo, 3, "major", 0)
        frames = np.stack(list(draw_frames(spec, [], SMALL, np.random.default_rng(2)))).astype(float)
        return float(np.abs(np.diff(frames, axis=0)).mean())

    assert motion(160.0) > 1.5 * motion(70.0)


def test_make_demo_videos_writes_real_mp4s_and_specs(tmp_path):
    folder = make_demo_videos(tmp_path / "videos", SMALL, progress=False)
    specs = read_specs(folder)
    assert sorted(specs) == ["demo_0000", "demo_0001", "demo_0002"]
    for vid, rec in specs.items():
        assert set(rec) >= {"timbre", "drums", "tempo", "key", "mode", "seed", "cuts", "oneshot"}
        SongSpec(**{k: rec[k] for k in ("timbre", "drums", "tempo", "key", "mode", "seed")})
        info = probe(folder / f"{vid}.mp4")
        assert (info.video_codec, info.audio_codec, info.width, info.fps) == ("h264", "aac", 48, 8.0)
        assert info.duration == pytest.approx(6.0, abs=0.1)
        assert all(1.5 <= b - a <= 2.5 + 1e-6 for a, b in zip([0.0, *rec["cuts"]], rec["cuts"]))
        # The decoded background hue matches the key.
        s = next(iter(iter_samples(folder / f"{vid}.mp4", 0.0, 1.0, [FrameGrid(5.0, 0, False)])))
        hue = _background_hue(s.image)
        assert min(abs(hue - rec["key"] / 12), 1 - abs(hue - rec["key"] / 12)) < 0.04
    # Same settings -> same specs; a complete folder is reused as is.
    mtime = (folder / "demo_0001.mp4").stat().st_mtime_ns
    make_demo_videos(folder, SMALL, progress=False)
    assert (folder / "demo_0001.mp4").stat().st_mtime_ns == mtime
    again = read_specs(make_demo_videos(tmp_path / "other", SMALL, progress=False))
    assert json.dumps(again, sort_keys=True) == json.dumps(specs, sort_keys=True)


def test_ensure_demo_dataset_builds_then_reuses(tmp_path):
    root = ensure_demo_dataset(DEMO_OVERRIDES, root=tmp_path)
    recs = read_manifest(root)
    specs = read_specs(root)
    assert len(recs) == 6 and set(specs) == {r.video_id for r in recs}
    ok = [r for r in recs if r.status == "ok"]
    assert len(ok) >= 3
    for r in recs:
        if specs[r.video_id]["oneshot"]:
            assert r.status == "rejected" and r.reason.startswith("scene too long")
        else:
            assert r.status == "ok", r.reason
            assert r.feature_shape == (6, 32) and len(r.audio_paths) == 2
            # Shots last 1.5-3 s, so every kept window has cuts and no scene over 4 s.
            assert r.n_scenes >= 2 and r.longest_scene <= 4.0
    cfg = load_config(root / "preprocess_config.yaml", schema=PreprocessConfig)
    assert cfg.frames.encoder == "tiny_clip" and cfg.audio.segment_seconds == 3.0
    stamp = (root / "manifest.csv").stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in (root / "records").iterdir())
    assert ensure_demo_dataset(DEMO_OVERRIDES, root=tmp_path) == root
    assert sorted(p.stat().st_mtime_ns for p in (root / "records").iterdir()) == stamp[1]


def test_demo_config_is_the_script_default():
    cfg = load_config("preprocess_demo.yaml", schema=PreprocessConfig)
    assert cfg.demo.enabled and cfg.frames.encoder == "tiny_clip"
    assert cfg.audio.n_segments * cfg.audio.segment_seconds <= cfg.window.seconds <= cfg.demo.duration
    main = load_config("preprocess.yaml", schema=PreprocessConfig)
    assert not main.demo.enabled and main.frames.encoder == "open_clip"
    assert (main.audio.sample_rate, main.audio.segment_seconds, main.audio.n_segments) == (16000, 15.0, 8)
    assert (main.window.seconds, main.scenes.max_scene_seconds, main.frames.fps) == (120, 30.0, 5.0)
    assert main.frames.encoders.open_clip == {"model_name": "ViT-B-32", "pretrained": "openai"}
