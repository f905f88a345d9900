"""Motion features: still and moving generated videos land in the expected flow bins."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest

from vcmr.video.motion import (
    FLOW_BACKENDS,
    MotionSettings,
    RaftFlow,
    build_flow_backend,
    load_raft,
    magnitude_bin,
    motion_from_frames,
    motion_tokens,
    video_motion,
)
from vcmr.video.probe import MediaError
from vcmr.video.writer import write_video

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2)
FPS = 8


def texture(seed: int = 0, size: int = 512) -> np.ndarray:
    """A smooth random colour texture (flow needs texture; flat areas carry no motion cue)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), (0, 0), 2)


def panning_frames(step: int, n: int, side: int = 128) -> list:
    """A window sliding right over the texture by ``step`` px per frame (camera pan)."""
    tex = texture()
    return [np.ascontiguousarray(tex[100 : 100 + side, 20 + i * step : 20 + i * step + side]) for i in range(n)]


def square_frames(step: int, n: int, side: int = 128) -> list:
    """A textured 32 px square moving ``step`` px per frame over a still grey background."""
    tex = texture(1)
    out = []
    for i in range(n):
        img = np.full((side, side, 3), 60, np.uint8)
        x = 8 + i * step
        img[48:80, x : x + 32] = tex[:32, :32]
        out.append(img)
    return out


def settings(**kw) -> MotionSettings:
    base = dict(fps=FPS, short_side=128, clip_seconds=1.0, bins=64, max_magnitude=32.0)
    base.update(kw)
    return MotionSettings(**base)


def timed(frames, fps=FPS):
    return [((i + 0.5) / fps, f) for i, f in enumerate(frames)]


def test_bin_edges_and_rule():
    s = settings()
    np.testing.assert_allclose(s.edges[:3], [0.0, 0.5, 1.0])
    assert s.edges[-1] == 32.0 and s.n_columns == 66
    assert list(magnitude_bin([0.0, 0.49, 0.5, 31.9, 32.0, 500.0], 64, 32.0)) == [0, 0, 1, 63, 63, 63]
    with pytest.raises(ValueError, match="two samples per clip"):
        settings(fps=1.0, clip_seconds=1.0)
    with pytest.raises(KeyError, match="unknown flow backend 'flo'"):
        build_flow_backend("flo", {})
    assert set(FLOW_BACKENDS) == {"farneback", "raft"}


def test_still_video_is_lowest_bin(tmp_path):
    path = write_video(tmp_path / "still.mp4", panning_frames(0, 3 * FPS), FPS, crf=12)
    feats = video_motion(path, settings(), build_flow_backend("farneback", FARNEBACK))
    assert feats.shape == (3, 66) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[:, :64].sum(1), 1.0, atol=1e-6)
    assert np.all(motion_tokens(feats) == 0)
    assert np.all(feats[:, 0] > 0.99) and np.all(feats[:, 64] < 0.25)


@pytest.mark.parametrize("step,expected", [(3, 4), (5, 7)])
def test_panning_video_lands_in_expected_bin(tmp_path, step, expected):
    # Frames of 128 px analysed at 96 px: a step of 3 px is 2.25 px, the centre of bin 4
    # ([2.0, 2.5)); 5 px is 3.75 px, the centre of bin 7.
    path = write_video(tmp_path / "pan.mp4", panning_frames(step, 2 * FPS), FPS, crf=12)
    feats = video_motion(path, settings(short_side=96), build_flow_backend("farneback", FARNEBACK))
    assert expected == int(step * 0.75 / 0.5)
    assert np.all(motion_tokens(feats) == expected)
    np.testing.assert_allclose(feats[:, 64], step * 0.75, rtol=0.06)
    assert np.all(np.argmax(feats[:, :64], axis=1) == expected)


@pytest.mark.parametrize("step", [3, 5])
def test_moving_square_histogram(tmp_path, step):
    # 16 bins over 32 px: 2 px per bin, so 3 px/frame is the centre of bin 1 and 5 of bin 2.
    s = settings(bins=16)
    path = write_video(tmp_path / "square.mp4", square_frames(step, 2 * FPS), FPS, crf=12)
    feats = video_motion(path, s, build_flow_backend("farneback", FARNEBACK))
    hist = feats[:, :16]
    moving = hist[:, 1:]
    # The background (most of the frame) is still; the square's pixels move by ``step``.
    assert np.all(hist[:, 0] > 0.7)
    assert np.all(np.argmax(moving, axis=1) + 1 == step // 2)
    assert np.all(moving.sum(1) > 0.03)


def test_pairs_go_to_the_clip_of_their_midpoint():
    # 2 s at 8 fps: the first second still, the second panning by 4 px per frame.
    frames = panning_frames(0, FPS) + [panning_frames(4, FPS + 1)[i + 1] for i in range(FPS)]
    # Re-anchor the moving half so the pan starts where the still half ends.
    tex_frames = panning_frames(4, FPS + 1)
    frames = [tex_frames[0]] * FPS + tex_frames[1:]
    feats = motion_from_frames(timed(frames), 2, settings(), build_flow_backend("farneback", FARNEBACK))
    # Clip 0 holds pairs 1..7 (still) and clip 1 pairs 8..15, the first of which (midpoint
    # exactly 1.0 s) steps 4 px like the rest.
    assert motion_tokens(feats)[0] == 0 and 6 <= motion_tokens(feats)[1] <= 8
    with pytest.raises(ValueError, match="clips \\[2\\]"):
        motion_from_frames(timed(frames), 3, settings(), build_flow_backend("farneback", FARNEBACK))


def test_raft_random_weights_shapes_and_sizes():
    backend = build_flow_backend(
        "raft", dict(model="raft_small", weights=None, device="cpu", batch_size=2, num_flow_updates=1)
    )
    seen = []

    def recording(prev, nxt):
        flow = backend(prev, nxt)
        seen.append(flow)
        return flow

    recording.batch_size = backend.batch_size
    frames = [f[:96, :100] for f in panning_frames(2, 3)]  # sides not multiples of 8, below 128
    feats = motion_from_frames(timed(frames, fps=4), 1, settings(fps=4), recording)
    assert len(seen) == 1
    assert seen[0].shape == (2, 96, 100, 2) and seen[0].dtype == np.float32 and np.isfinite(seen[0]).all()
    assert feats.shape == (1, 66) and 0 <= motion_tokens(feats)[0] < 64
    np.testing.assert_allclose(feats[0, :64].sum(), 1.0, atol=1e-6)


def test_raft_weights_offline_error_and_local_file(tmp_path, monkeypatch):
    import torch

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="motion.backends.raft.weights=/path/to/raft_small"):
        load_raft("raft_small", "default")
    torch.manual_seed(0)
    net = load_raft("raft_small", None)
    path = tmp_path / "raft_small.pth"
    torch.save(net.state_dict(), path)
    loaded = RaftFlow("raft_small", str(path), "cpu", 2, 2).net
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_raft("raft_small", str(tmp_path / "missing.pth"))
    with pytest.raises(KeyError, match="raft_tiny"):
        load_raft("raft_tiny", None)


def test_short_or_broken_video(tmp_path):
    path = write_video(tmp_path / "short.mp4", panning_frames(0, FPS // 2), FPS)
    with pytest.raises(MediaError, match="short.mp4.*shorter than one clip"):
        video_motion(path, settings(), build_flow_backend("farneback", FARNEBACK))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(MediaError, match="bad.mp4"):
        video_motion(bad, settings(), build_flow_backend("farneback", FARNEBACK))
