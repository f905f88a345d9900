"""Scene (shot) detection with PySceneDetect's ``ContentDetector``.

The detector is fed the frames of a fixed-rate sampling grid (see
:mod:`vcmr.video.frames`) while the same decoding pass collects the frames for the
encoder, so a video is decoded once. Cuts are reported as times relative to the window
start; a cut detected at grid sample ``i`` lies at ``i / fps`` seconds, the boundary
between samples ``i - 1`` and ``i``.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class SceneStats:
    """Scenes of a window. ``scenes`` holds ``(start, end)`` pairs in seconds."""

    scenes: Tuple[Tuple[float, float], ...]

    @property
    def n_scenes(self) -> int:
        return len(self.scenes)

    @property
    def longest(self) -> float:
        return max((e - s for s, e in self.scenes), default=0.0)


class SceneTracker:
    """Incremental content-based cut detection on frames sampled at ``fps``.

    Args:
        fps: rate of the frames passed to :meth:`add` (frames per second).
        threshold: ``ContentDetector`` threshold (mean HSV change, 0..255 scale).
        min_scene_len: minimum scene length in seconds (shorter flashes are merged).
    """

    def __init__(self, fps: float, threshold: float, min_scene_len: float):
        try:
            from scenedetect import ContentDetector, FrameTimecode
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "scene detection needs PySceneDetect: pip install 'vcmr[video]'"
            ) from exc
        self._timecode = FrameTimecode
        self._detector = ContentDetector(threshold=float(threshold), min_scene_len=float(min_scene_len))
        self.fps = float(fps)
        self._cuts: List[float] = []
        self._last_index = -1

    def add(self, index: int, image_rgb: np.ndarray) -> None:
        """Feed grid sample ``index`` (consecutive from 0), ``[H, W, 3]`` uint8 RGB."""
        bgr = np.ascontiguousarray(image_rgb[..., ::-1])
        tc = self._timecode(int(index), fps=self.fps)
        self._last_index = int(index)
        self._cuts.extend(c.seconds for c in self._detector.process_frame(tc, bgr))

    def finish(self, duration: float) -> SceneStats:
        """Flush pending cuts and split ``[0, duration)`` at them."""
        if self._last_index >= 0:
            tail = self._detector.post_process(self._timecode(self._last_index, fps=self.fps))
            self._cuts.extend(c.seconds for c in (tail or []))
        cuts = sorted(c for c in set(self._cuts) if 0.0 < c < duration)
        bounds = [0.0, *cuts, float(duration)]
        return SceneStats(tuple((bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)))
