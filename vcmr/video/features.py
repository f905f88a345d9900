"""Per-second frame features: frames sampled at a fixed rate, encoded, averaged per second.

This is the one path from a video file to the ``[seconds, F]`` features the temporal
encoder of a stage-2 model reads; the dataset builder, the embedder and the clip library
all go through it, so a model sees at inference exactly what it was trained on.

Alignment (the builder's rule, see ``docs/dataset_builder.md``): frames are sampled at
``fps`` on the grid ``start + (i + 0.5) / fps`` of :mod:`vcmr.video.frames`; row ``k`` of
the features averages the frames whose sample time lies in ``[start + k, start + k + 1)``.
:func:`span_features` applies the same rule to any span ``[a, b)`` of already encoded
frames, so clips that start between two whole seconds (e.g. at a scene cut) get rows
aligned to their own start.

Frames are encoded in batches while the video is decoded (``batch_size`` frames held at a
time), so memory does not grow with the length of the video.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from vcmr.video.frames import FrameGrid, Sample, iter_samples
from vcmr.utils import open_container, progress_bar
from vcmr.video.probe import OPEN_FAILED, MediaError

#: Tolerance (seconds) when sample times are compared with second boundaries.
TIME_EPS = 1e-6


def average_per_second(emb: np.ndarray, rows: np.ndarray, n_rows: int, normalize: bool) -> np.ndarray:
    """Mean of frame embeddings ``[N, D]`` per row index ``rows`` ``[N]`` -> ``[n_rows, D]``.

    With ``normalize`` each frame embedding is L2-normalised before averaging.

    Raises:
        ValueError: a row in ``0 .. n_rows - 1`` has no frame.
    """
    if normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = np.zeros((n_rows, emb.shape[1]), np.float64)
    np.add.at(out, rows, emb)
    counts = np.bincount(rows, minlength=n_rows)
    if np.any(counts == 0):
        raise ValueError(f"feature rows without frames: {np.flatnonzero(counts == 0).tolist()}")
    return (out / counts[:, None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class VideoStreamInfo:
    """The first video stream of a file: ``duration`` (s), ``width``, ``height`` (pixels), ``fps``."""

    duration: float
    width: int
    height: int
    fps: float


def video_stream_info(path: str | os.PathLike) -> VideoStreamInfo:
    """Duration and size of the first video stream (an audio stream is not required).

    Raises:
        MediaError: missing/empty file, unreadable container, no video stream, or an
            unknown/zero duration.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    with open_container(path, MediaError, OPEN_FAILED) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        vs = container.streams.video[0]
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = float("nan")
        if not math.isfinite(duration) or duration <= 0:
            raise MediaError(path, f"zero or unknown video duration ({duration})")
        rate = vs.average_rate or vs.guessed_rate
        ctx = vs.codec_context
        return VideoStreamInfo(duration, int(ctx.width or 0), int(ctx.height or 0), float(rate) if rate else 0.0)


@dataclasses.dataclass
class FrameEmbeddings:
    """Encoded frames of a decoded span: ``emb`` ``[N, F]`` float32, ``times`` ``[N]`` float64
    sample times in seconds from the start of the file, the span ``start`` and ``duration``
    (seconds actually covered by the samples: shorter than asked when the stream ends early)."""

    emb: np.ndarray
    times: np.ndarray
    start: float
    duration: float


def encode_video_frames(
    path: str | os.PathLike,
    encoder,
    fps: float,
    start: float,
    duration: float,
    batch_size: int,
    interpolation: str = "BILINEAR",
    threads: int = 0,
    end_tolerance: float = 0.5,
    extra_grids: Sequence[FrameGrid] = (),
    on_sample: Optional[Callable[[Sample], None]] = None,
    progress: bool = False,
) -> FrameEmbeddings:
    """Decode ``[start, start + duration)`` once; encode the frames of the ``fps`` grid in batches.

    Args:
        path: video file.
        encoder: a :class:`~vcmr.video.encoders.FrameEncoder` (``image_size``, ``encode_frames``).
        fps: frames per second fed to the encoder.
        start: span start, seconds from the start of the file.
        duration: span length in seconds.
        batch_size: frames per encoder batch (also the frames held in memory at a time).
        interpolation: swscale filter for the frame scaling.
        threads: decoder threads (0: FFmpeg chooses).
        end_tolerance: seconds the last decoded frame may cover past its timestamp.
        extra_grids: more sampling grids served from the same decoding pass (scene
            detection, thumbnails); their samples go to ``on_sample`` with ``grid`` 1, 2, ...
        on_sample: receives every sample of ``extra_grids``, in time order per grid.
        progress: show a progress bar over the encoder frames.

    Returns:
        :class:`FrameEmbeddings`; ``duration`` is cut to what the encoder grid covered.

    Raises:
        MediaError: the file cannot be decoded, or no encoder frame was decoded.
    """
    grid = FrameGrid(float(fps), int(encoder.image_size), True)
    times = grid.times(duration)
    size = int(encoder.image_size)
    buf = np.zeros((int(batch_size), size, size, 3), np.uint8)
    chunks = []
    n_buf = 0
    got = 0
    bar = progress_bar(total=len(times), desc=Path(path).name, unit="frame", disable=not progress, leave=False)
    for smp in iter_samples(path, start, duration, [grid, *extra_grids], interpolation, threads, end_tolerance):
        if smp.grid != 0:
            if on_sample is not None:
                on_sample(Sample(smp.grid, smp.index, smp.time, smp.image))
            continue
        buf[n_buf] = smp.image
        n_buf += 1
        got += 1
        if n_buf == len(buf):
            chunks.append(encoder.encode_frames(buf, int(batch_size)))
            n_buf = 0
            bar.update(len(buf))
    if n_buf:
        chunks.append(encoder.encode_frames(buf[:n_buf], int(batch_size)))
        bar.update(n_buf)
    bar.close()
    if got == 0:
        raise MediaError(path, f"no frames decoded in {start:.2f}-{start + duration:.2f} s")
    emb = np.concatenate(chunks).astype(np.float32, copy=False)
    covered = duration if got == len(times) else got / float(fps)
    return FrameEmbeddings(emb, start + times[:got], float(start), float(covered))


def span_features(frames: FrameEmbeddings, span_start: float, n_seconds: int, normalize: bool) -> np.ndarray:
    """Per-second features of the span ``[span_start, span_start + n_seconds)`` of encoded frames.

    Row ``k`` averages the frames whose time lies in ``[span_start + k, span_start + k + 1)``.

    Returns:
        ``[n_seconds, F]`` float32.

    Raises:
        ValueError: ``n_seconds < 1``, or a second of the span has no frame (it lies
            outside what was decoded).
    """
    if n_seconds < 1:
        raise ValueError(f"a span needs at least one second, got {n_seconds}")
    rel = frames.times - float(span_start)
    keep = (rel >= -TIME_EPS) & (rel < n_seconds - TIME_EPS)
    rows = np.clip(np.floor(rel[keep] + TIME_EPS).astype(np.int64), 0, n_seconds - 1)
    try:
        return average_per_second(frames.emb[keep], rows, int(n_seconds), normalize)
    except ValueError as exc:
        raise ValueError(
            f"span {span_start:.2f}+{n_seconds} s: {exc} (decoded {frames.start:.2f}-"
            f"{frames.start + frames.duration:.2f} s)"
        ) from None


def per_second_features(
    path: str | os.PathLike,
    encoder,
    fps: float,
    start: float = 0.0,
    duration: Optional[float] = None,
    normalize: bool = False,
    batch_size: int = 64,
    interpolation: str = "BILINEAR",
    threads: int = 0,
    end_tolerance: float = 0.5,
    progress: bool = False,
) -> np.ndarray:
    """Per-second frame features of a video, as the dataset builder computes them.

    Args:
        path: video file.
        encoder: frame encoder (see :mod:`vcmr.video.encoders`).
        fps: frames per second averaged into each row (the builder's ``frames.fps``).
        start: seconds from the start of the file.
        duration: seconds to cover; ``None``: to the end of the video stream. Only whole
            seconds are returned (``floor(duration)`` rows).
        normalize: L2-normalise each frame embedding before averaging (``frames.normalize``).
        batch_size: frames per encoder batch.
        interpolation, threads, end_tolerance: decoding settings (``frames.*`` of the builder).
        progress: show a progress bar.

    Returns:
        ``[n_seconds, F]`` float32; row ``k`` covers ``[start + k, start + k + 1)``.

    Raises:
        MediaError: unreadable file, no video stream, or a span with less than one
            decoded second.
    """
    if duration is None:
        duration = video_stream_info(path).duration - float(start)
    n = int(math.floor(float(duration) + TIME_EPS))
    if n < 1:
        raise MediaError(path, f"less than one second of video after {start:.2f} s ({duration:.2f} s)")
    frames = encode_video_frames(
        path, encoder, fps, float(start), float(n), batch_size, interpolation, threads, end_tolerance,
        progress=progress,
    )
    covered = int(math.floor(frames.duration + TIME_EPS))
    if covered < n:
        raise MediaError(path, f"truncated: video frames end about {start + frames.duration:.2f} s, "
                               f"asked for {start + n:.2f} s")
    return span_features(frames, float(start), n, normalize)


__all__ = [
    "FrameEmbeddings",
    "VideoStreamInfo",
    "average_per_second",
    "encode_video_frames",
    "per_second_features",
    "span_features",
    "video_stream_info",
]
