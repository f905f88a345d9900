from __future__ import annotations

import numpy as np
import pytest

from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.scenes import SceneTracker

from .media import PALETTE


def _textured(color: np.ndarray, shift: int, size: int = 48) -> np.ndarray:
    """A coloured frame with a small moving square (motion without a cut)."""
    img = np.broadcast_to(color, (size, size, 3)).copy()
    img[10:18, shift % (size - 8) : shift % (size - 8) + 8] = 255 - color
    return img


def test_cuts_at_known_times():
    fps = 10.0
    cut_samples = [23, 51, 77]  # cuts at 2.3 s, 5.1 s, 7.7 s
    tr = SceneTracker(fps, threshold=27.0, min_scene_len=0.6)
    shot = 0
    for i in range(100):
        if i in cut_samples:
            shot += 1
        tr.add(i, _textured(PALETTE[[0, 2, 6, 7][shot]], i))
    stats = tr.finish(10.0)
    assert stats.n_scenes == 4
    starts = [s for s, _ in stats.scenes]
    np.testing.assert_allclose(starts, [0.0, 2.3, 5.1, 7.7], atol=1e-6)
    assert stats.longest == pytest.approx(2.8)
    assert stats.scenes[-1][1] == 10.0


def test_no_cut_is_one_scene():
    tr = SceneTracker(10.0, threshold=27.0, min_scene_len=0.6)
    for i in range(50):
        tr.add(i, _textured(PALETTE[1], i))
    stats = tr.finish(5.0)
    assert stats.scenes == ((0.0, 5.0),)
    assert stats.longest == 5.0


def test_threshold_controls_sensitivity():
    # A mild colour change: a cut for a low threshold, none for a high one.
    a, b = np.array([100, 100, 100], np.uint8), np.array([120, 110, 100], np.uint8)
    found = {}
    for thr in (3.0, 60.0):
        tr = SceneTracker(10.0, threshold=thr, min_scene_len=0.6)
        for i in range(40):
            tr.add(i, _textured(a if i < 20 else b, 0))
        found[thr] = tr.finish(4.0).n_scenes
    assert found == {3.0: 2, 60.0: 1}


def test_on_decoded_video(make_color_video):
    # Colour changes every second -> a cut at every whole second of the window.
    path = make_color_video([0, 1, 2, 3, 4, 5], fps=10, size=48)
    tr = SceneTracker(10.0, threshold=27.0, min_scene_len=0.6)
    for s in iter_samples(path, 1.0, 4.0, [FrameGrid(10.0, 32, False)]):
        tr.add(s.index, s.image)
    stats = tr.finish(4.0)
    np.testing.assert_allclose([a for a, _ in stats.scenes], [0.0, 1.0, 2.0, 3.0], atol=1e-6)
