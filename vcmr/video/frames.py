"""Streaming frame sampling with PyAV.

A window ``[start, start + duration)`` of a video is decoded once, in order, and frames
are picked on one or more fixed-rate sampling grids. Sample ``i`` of a grid at ``fps``
sits at time ``start + (i + 0.5) / fps`` (the centre of its sampling interval), so with
an integer rate the samples of second ``k`` of the window are exactly those whose time
lies in ``[start + k, start + k + 1)``. Each sample takes the frame on screen at its time
(the last decoded frame whose timestamp is not after it).

Memory and work stay bounded: frames are decoded one at a time and never collected; a
decoded frame is converted to RGB (and scaled inside FFmpeg's swscale, never at full
resolution in numpy) only when a sample falls on it; frames before the window are
skipped after a keyframe seek.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from vcmr.utils import open_container
from vcmr.video.probe import OPEN_FAILED, MediaError

#: A sample whose time equals a frame's timestamp up to this many seconds (float rounding
#: of ``pts * time_base``) takes that frame, wherever decoding started.
TIME_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class FrameGrid:
    """One sampling grid.

    Attributes:
        fps: samples per second.
        short_side: frames are scaled (keeping aspect) so the shorter side has this many
            pixels; with ``crop_square`` the centre square is kept. ``0`` keeps the size.
        crop_square: keep only the centred ``short_side x short_side`` square.
    """

    fps: float
    short_side: int
    crop_square: bool

    def n_samples(self, duration: float) -> int:
        """Number of samples in a window of ``duration`` seconds."""
        return int(math.floor(duration * self.fps + 1e-6))

    def times(self, duration: float) -> np.ndarray:
        """``[n]`` float64 sample times in seconds relative to the window start."""
        return (np.arange(self.n_samples(duration)) + 0.5) / self.fps


def scaled_size(width: int, height: int, short_side: int) -> Tuple[int, int]:
    """Output ``(width, height)`` with the shorter side at ``short_side`` (even sizes)."""
    if short_side <= 0:
        return width, height
    scale = short_side / min(width, height)
    w = max(short_side, int(round(width * scale / 2)) * 2)
    h = max(short_side, int(round(height * scale / 2)) * 2)
    if width <= height:
        w = short_side
    if height <= width:
        h = short_side
    return w, h


def _convert(frame, grid: FrameGrid, interpolation: str) -> np.ndarray:
    w, h = scaled_size(frame.width, frame.height, grid.short_side)
    img = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation=interpolation)
    if grid.crop_square and grid.short_side > 0:
        s = grid.short_side
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    return np.ascontiguousarray(img)


@dataclasses.dataclass
class Sample:
    """One picked frame: ``grid`` index, ``index`` on that grid, ``time`` in seconds from
    the window start, ``image`` ``[H, W, 3]`` uint8 RGB."""

    grid: int
    index: int
    time: float
    image: np.ndarray


def iter_samples(
    path: str | os.PathLike,
    start: float,
    duration: float,
    grids: Sequence[FrameGrid],
    interpolation: str = "BILINEAR",
    threads: int = 0,
    end_tolerance: float = 0.5,
) -> Iterator[Sample]:
    """Decode ``[start, start + duration)`` once and yield the samples of every grid.

    Samples come in time order per grid. The last decoded frame also covers samples up to
    ``end_tolerance`` seconds past its own timestamp (the tail of the stream); samples
    beyond that are missing: callers compare the count with :meth:`FrameGrid.n_samples`.

    Args:
        path: video file.
        start: window start in seconds from the start of the stream.
        duration: window length in seconds.
        grids: sampling grids.
        interpolation: swscale interpolation name (``BILINEAR``, ``AREA``, ``BICUBIC``...).
        threads: decoder threads (0 lets FFmpeg choose).
        end_tolerance: seconds the last frame may be held past its timestamp.

    Raises:
        MediaError: the container cannot be opened, has no video stream, or decoding
            fails before any sample was produced.
    """
    import av

    path = Path(path)
    times = [g.times(duration) for g in grids]
    nxt = [0] * len(grids)
    with open_container(path, MediaError, OPEN_FAILED) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        vs.thread_count = int(threads)
        tb = float(vs.time_base)
        t0 = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        rate = float(vs.average_rate or vs.guessed_rate or 25)
        if start > 0:
            try:
                container.seek(int((start + t0) / tb), stream=vs, backward=True)
            except av.error.FFmpegError:
                container.seek(0)

        held = None  # (frame, time relative to window start)
        cache: Dict[int, np.ndarray] = {}
        produced = 0

        def emit(until: float) -> Iterator[Sample]:
            frame, _ = held
            for gi, grid in enumerate(grids):
                while nxt[gi] < len(times[gi]) and times[gi][nxt[gi]] < until - TIME_EPS:
                    if gi not in cache:  # convert once per frame and grid
                        cache[gi] = _convert(frame, grid, interpolation)
                    yield Sample(gi, nxt[gi], float(times[gi][nxt[gi]]), cache[gi])
                    nxt[gi] += 1

        def done() -> bool:
            return all(n >= len(t) for n, t in zip(nxt, times))

        last_t: Optional[float] = None
        try:
            for frame in container.decode(vs):
                if frame.pts is not None:
                    t = frame.pts * tb - t0 - start
                else:
                    t = (last_t + 1.0 / rate) if last_t is not None else 0.0
                last_t = t
                if held is not None:
                    for s in emit(t):
                        produced += 1
                        yield s
                held = (frame, t)
                cache = {}
                if done():
                    break
        except av.error.FFmpegError as exc:
            if produced == 0 and held is None:
                raise MediaError(path, f"video decoding failed: {exc}") from exc
            # A damaged tail: keep what decoded; missing samples are reported by the caller.
        if held is not None and not done():
            for s in emit(held[1] + 1.0 / rate + end_tolerance):
                yield s
