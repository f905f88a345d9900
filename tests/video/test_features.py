"""Per-second frame features: the builder's averaging rule, span alignment, one decoding pass."""

from __future__ import annotations

import numpy as np
import pytest

from vcmr.config import load_config
from vcmr.data.manifest import read_manifest
from vcmr.preprocess.builder import PreprocessConfig, build, encoder_args
from vcmr.video.encoders import build_frame_encoder
from vcmr.video.features import (
    average_per_second,
    encode_video_frames,
    per_second_features,
    span_features,
    video_stream_info,
)
from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.probe import MediaError
from vcmr.video.writer import write_video

from .media import PALETTE

TINY_BUILDER = [
    "num_workers=0", "progress=false", "window.seconds=4", "window.short_rule=reject",
    "audio.segment_seconds=2", "audio.n_segments=2", "scenes.max_scene_seconds=3.5", "scenes.short_side=32",
    "frames.batch_size=16", "frames.device=cpu", "frames.encoder=tiny_clip",
    "frames.encoders.tiny_clip.embed_dim=16", "frames.encoders.tiny_clip.image_size=32",
    "frames.encoders.tiny_clip.patch_size=8", "frames.encoders.tiny_clip.width=32",
    "frames.encoders.tiny_clip.layers=1", "frames.encoders.tiny_clip.head_width=16",
]


class MeanColour:
    """A stand-in frame encoder whose embedding is the frame's mean RGB (values we can check)."""

    image_size = 8
    embed_dim = 3

    def encode_frames(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        return frames.reshape(len(frames), -1, 3).mean(axis=1).astype(np.float32)


def test_average_per_second_against_a_loop():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((11, 4)).astype(np.float32)
    rows = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3])
    for normalize in (False, True):
        e = emb / np.linalg.norm(emb, axis=1, keepdims=True) if normalize else emb
        ref = np.stack([e[rows == r].mean(0) for r in range(4)])
        np.testing.assert_allclose(average_per_second(emb, rows, 4, normalize), ref, rtol=1e-6)
    with pytest.raises(ValueError, match=r"rows without frames: \[4\]"):
        average_per_second(emb, rows, 5, False)


def test_per_second_features_equal_the_builder(make_color_video, tmp_path):
    """The same video through the dataset builder and through per_second_features: same array."""
    path = make_color_video([0, 1, 1, 2, 2, 2, 3, 3], name="clip.mp4")
    cfg = load_config("preprocess.yaml", [*TINY_BUILDER, f"input={path.parent}", f"output={tmp_path / 'ds'}"],
                      schema=PreprocessConfig)
    build(cfg)
    (rec,) = read_manifest(tmp_path / "ds")
    built = np.load(tmp_path / "ds" / rec.feature_path)
    encoder = build_frame_encoder("tiny_clip", encoder_args(cfg), device="cpu")
    mine = per_second_features(path, encoder, 5.0, start=rec.window_start, duration=rec.window_duration,
                               normalize=False, batch_size=16)
    assert mine.shape == built.shape == (4, 16)
    np.testing.assert_array_equal(mine, built)


def test_rows_follow_the_colour_of_each_second(make_color_video):
    colours = [0, 1, 2, 3, 4]
    path = make_color_video(colours, fps=10)
    feats = per_second_features(path, MeanColour(), 5.0)  # duration None: the whole video stream
    assert feats.shape == (5, 3)
    np.testing.assert_allclose(feats, PALETTE[colours].astype(np.float32), atol=6)
    mid = per_second_features(path, MeanColour(), 5.0, start=2.0, duration=2.5)  # whole seconds only
    np.testing.assert_allclose(mid, PALETTE[[2, 3]].astype(np.float32), atol=6)


def test_span_features_are_aligned_to_the_span_start(make_color_video):
    path = make_color_video([0, 1, 2, 3], fps=10)
    frames = encode_video_frames(path, MeanColour(), 5.0, 0.0, 4.0, batch_size=3)
    assert frames.emb.shape == (20, 3) and frames.duration == 4.0
    np.testing.assert_allclose(frames.times, (np.arange(20) + 0.5) / 5)
    got = span_features(frames, 0.5, 2, normalize=False)
    # [0.5, 1.5): samples 0.5, 0.7, 0.9 (colour 0) and 1.1, 1.3 (colour 1); [1.5, 2.5) likewise.
    p = PALETTE.astype(np.float64)
    ref = np.stack([(3 * p[0] + 2 * p[1]) / 5, (3 * p[1] + 2 * p[2]) / 5])
    np.testing.assert_allclose(got, ref, atol=6)
    with pytest.raises(ValueError, match="rows without frames"):
        span_features(frames, 3.0, 2, normalize=False)  # second [4, 5) was never decoded


def test_extra_grids_come_from_the_same_pass(make_color_video):
    path = make_color_video([0, 1, 2], fps=10)
    seen = []
    frames = encode_video_frames(path, MeanColour(), 5.0, 0.0, 3.0, batch_size=4,
                                 extra_grids=[FrameGrid(2.0, 16, False)], on_sample=seen.append)
    assert len(frames.emb) == 15
    assert [s.grid for s in seen] == [1] * 6 and [s.index for s in seen] == list(range(6))
    assert seen[0].image.shape == (16, 16, 3)
    np.testing.assert_allclose(seen[-1].image.reshape(-1, 3).mean(0), PALETTE[2], atol=40)  # bar included


def test_stream_info_without_audio_and_errors(make_color_video, tmp_path):
    path = make_color_video([0, 1, 2], with_audio=False, name="silent.mp4")
    info = video_stream_info(path)
    assert info.duration == pytest.approx(3.0, abs=0.05) and (info.width, info.height) == (32, 32)
    with pytest.raises(MediaError, match="missing.mp4: file does not exist"):
        video_stream_info(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(MediaError, match="bad.mp4: cannot open container"):
        per_second_features(bad, MeanColour(), 5.0)
    with pytest.raises(MediaError, match="less than one second"):
        per_second_features(path, MeanColour(), 5.0, start=2.5)


def test_samples_on_frame_timestamps_do_not_depend_on_the_decoding_start(tmp_path):
    """At 10 fps the 5 fps sample times 0.1, 0.3, ... equal frame timestamps; each must take
    that frame (not its predecessor through float rounding), whether decoding starts at 0 or later."""
    frames = []
    for i in range(50):  # a bar moving one step per frame: every frame differs
        img = np.zeros((32, 32, 3), np.uint8)
        img[:, (i % 16) * 2 : (i % 16) * 2 + 2] = 255
        frames.append(img)
    path = write_video(tmp_path / "moving.mp4", frames, 10, crf=10)
    grid = FrameGrid(5.0, 0, False)
    from_zero = [s.image for s in iter_samples(path, 0.0, 5.0, [grid])]
    from_one = [s.image for s in iter_samples(path, 1.0, 3.0, [grid])]
    for i, img in enumerate(from_one):
        np.testing.assert_array_equal(img, from_zero[5 + i])
    feats = per_second_features(path, MeanColour(), 5.0)
    np.testing.assert_array_equal(per_second_features(path, MeanColour(), 5.0, start=1.0, duration=3.0), feats[1:4])
