"""Fixtures of the video tests (plain functions live in ``media.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest

from .media import color_seconds
from vcmr.video.writer import write_video


@pytest.fixture
def make_color_video(tmp_path: Path) -> Callable[..., Path]:
    """Write a video whose colour is ``PALETTE[colors[k]]`` during second ``k`` (plus a tone)."""

    def make(colors: List[int], fps: int = 10, size: int = 32, name: str = "colors.mp4",
             audio: Optional[np.ndarray] = None, sample_rate: int = 16000, with_audio: bool = True) -> Path:
        if with_audio and audio is None:
            t = np.arange(int(len(colors) * sample_rate)) / sample_rate
            audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        return write_video(tmp_path / name, color_seconds(colors, fps, size), fps,
                           audio if with_audio else None, sample_rate, crf=10)

    return make
