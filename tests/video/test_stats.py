"""VM-NET's video-level statistics against a naive per-dimension loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcmr.video.stats import stats_dim, video_level_stats, video_level_stats_torch


def naive(x: np.ndarray, k: int) -> np.ndarray:
    s, f = x.shape
    out = []
    for name in ("mean", "std"):
        for d in range(f):
            col = [float(x[t, d]) for t in range(s)]
            m = sum(col) / s
            out.append(m if name == "mean" else (sum((c - m) ** 2 for c in col) / s) ** 0.5)
    for i in range(k):
        for d in range(f):
            col = sorted((float(x[t, d]) for t in range(s)), reverse=True)
            out.append(col[min(i, s - 1)])
    return np.array(out)


@pytest.mark.parametrize("s,k", [(9, 5), (3, 5), (1, 2), (6, 0)])
def test_video_level_stats_matches_naive_loop(s: int, k: int) -> None:
    x = np.random.default_rng(s).standard_normal((s, 4)).astype(np.float32)
    got = video_level_stats(x, k)
    assert got.shape == (stats_dim(4, k),) and got.dtype == np.float32
    assert np.allclose(got, naive(x, k), atol=1e-6)
    assert np.array_equal(got, video_level_stats(x.copy(), k))
    t = video_level_stats_torch(torch.from_numpy(np.stack([x, x[::-1].copy()])), k)
    assert np.allclose(t[0].numpy(), got, atol=1e-6) and np.allclose(t[1].numpy(), got, atol=1e-6)


def test_clip_dimensions_and_errors() -> None:
    assert stats_dim(512, 5) == 3584
    with pytest.raises(ValueError, match=r"\[S >= 1, F\]"):
        video_level_stats(np.zeros((0, 3)), 5)
    with pytest.raises(ValueError, match="NaN"):
        video_level_stats(np.array([[np.nan, 1.0]]), 5)
