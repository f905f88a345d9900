"""The per-video work of the music-video builder that runs in decode worker processes.

One call of :func:`analyse` downloads (if needed), probes, picks the kept window, decodes
the window once (frames for the encoder and for scene detection together), applies the
scene rule and writes the audio segments. The encoder frames, already scaled to the
encoder's input size by the decoder, are streamed into a raw frame file in the run's
spool folder (``JobSettings.spool_dir``) as they are decoded; the parent process reads
that file back one batch at a time (:func:`read_frame_batches`), encodes the batches on
its device and removes the file. Neither process ever holds a whole window of frames,
and nothing large is pickled between them. This module imports no torch, so spawned
workers start quickly.

Alignment: with ``W`` the whole-second window length, audio segment ``j`` holds samples
``[j * L * sr, (j + 1) * L * sr)`` of the window (``L = audio.segment_seconds``) and
feature row ``k`` averages the frames sampled at times ``window_start + k + (i + 0.5) /
fps``, ``i = 0..fps-1``, i.e. the frames shown during audio samples ``[k * sr, (k + 1) * sr)``
of the window.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from vcmr.audio.io import AudioDecodeError, load_audio, save_audio
from vcmr.preprocess.download import DownloadError, DownloadSettings, VideoSource
from vcmr.data.manifest import VideoRecord, failed
from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.probe import MediaError, MediaInfo, probe
from vcmr.video.scenes import SceneTracker

SHORT_RULES = ("keep_whole", "reject")


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """Plain, picklable copy of the config keys a worker needs (see ``config/preprocess.yaml``)."""

    window_seconds: float
    short_rule: str
    scene_threshold: float
    scene_min_len: float
    scene_max_seconds: float
    scene_fps: float
    scene_short_side: int
    sample_rate: int
    segment_seconds: float
    n_segments: int
    audio_format: str
    frame_fps: float
    frame_size: int
    interpolation: str
    decoder_threads: int
    end_tolerance: float
    download: DownloadSettings
    spool_dir: str


@dataclasses.dataclass
class Analysis:
    """Worker result. ``record`` is set for rejected/failed videos; otherwise
    ``frames_path`` (a raw frame file of ``n_frames`` frames ``[S, S, 3]`` uint8, ``S =
    frame_size``, in sample order; see :func:`read_frame_batches`) and ``rows`` ``[N]``
    (feature row of each frame) are set and ``facts`` holds the ok record's fields except
    the feature ones. The receiver of an ok result removes ``frames_path``."""

    video_id: str
    record: Optional[VideoRecord] = None
    frames_path: Optional[str] = None
    n_frames: int = 0
    frame_size: int = 0
    rows: Optional[np.ndarray] = None
    facts: Dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    audio_offset: float = 0.0


@dataclasses.dataclass(frozen=True)
class Window:
    """Kept window: ``start`` (s), ``duration`` (whole seconds), audio ``n_segments``."""

    start: float
    duration: float
    n_segments: int


def choose_window(duration: float, s: JobSettings) -> Tuple[Optional[Window], str]:
    """Middle ``window_seconds`` of the file, or the short-video rule. Returns the window
    or ``(None, reason)`` for a rejection."""
    if duration >= s.window_seconds:
        start = round((duration - s.window_seconds) / 2.0, 3)
        return Window(start, float(s.window_seconds), s.n_segments), ""
    if s.short_rule == "reject":
        return None, f"too short: {duration:.2f} s < {s.window_seconds:g} s window"
    whole = float(math.floor(duration))
    n_seg = min(s.n_segments, int(math.floor(whole / s.segment_seconds + 1e-9)))
    if n_seg == 0:
        return None, f"too short: {duration:.2f} s < one {s.segment_seconds:g} s audio segment"
    return Window(0.0, whole, n_seg), ""


def audio_relpath(video_id: str, j: int, fmt: str) -> str:
    """Deterministic segment path relative to the dataset dir."""
    return f"audio/{video_id}/{video_id}_{j:02d}.{fmt}"


def feature_relpath(video_id: str) -> str:
    return f"features/{video_id}.npy"


def read_frame_batches(path: str | os.PathLike, n_frames: int, size: int, batch_size: int) -> Iterator[np.ndarray]:
    """Read a raw frame file back: ``[b, size, size, 3]`` uint8 batches of at most
    ``batch_size`` frames, in order. Each batch is a view of one reused buffer, valid
    until the next one is read.

    Raises:
        MediaError: the file holds fewer than ``n_frames`` frames.
    """
    buf = np.empty((int(batch_size), int(size), int(size), 3), np.uint8)
    with open(path, "rb", buffering=0) as fh:
        for i in range(0, int(n_frames), int(batch_size)):
            view = buf[: min(int(batch_size), int(n_frames) - i)]
            want = view.nbytes
            got = fh.readinto(memoryview(view).cast("B"))
            while got and got < want:  # a raw read may return less than asked
                more = fh.readinto(memoryview(view).cast("B")[got:])
                if not more:
                    break
                got += more
            if got != want:
                raise MediaError(Path(path), f"frame file ends after {i + got // (size * size * 3)} of {n_frames} frames")
            yield view


def _decode_window(path: Path, win: Window, s: JobSettings, sink: BinaryIO) -> Tuple[int, np.ndarray, Any]:
    """Decode the window once: encoder frames are appended to ``sink`` in sample order
    (``[S, S, 3]`` uint8 each), scene frames go to the scene tracker. Returns the number
    of frames written, their feature rows and the scene summary."""
    clip = FrameGrid(s.frame_fps, s.frame_size, True)
    scene = FrameGrid(s.scene_fps, s.scene_short_side, False)
    tracker = SceneTracker(s.scene_fps, s.scene_threshold, s.scene_min_len)
    n_clip, n_scene = clip.n_samples(win.duration), scene.n_samples(win.duration)
    times = clip.times(win.duration)
    got = [0, 0]
    for smp in iter_samples(
        path, win.start, win.duration, [clip, scene], s.interpolation, s.decoder_threads, s.end_tolerance
    ):
        if smp.grid == 0:
            if smp.index != got[0] or smp.image.shape != (s.frame_size, s.frame_size, 3):
                raise RuntimeError(f"frame sampler gave sample {smp.index} of shape {smp.image.shape}, "
                                   f"expected sample {got[0]} of shape {(s.frame_size, s.frame_size, 3)}")
            sink.write(memoryview(np.ascontiguousarray(smp.image)).cast("B"))
        else:
            tracker.add(smp.index, smp.image)
        got[smp.grid] += 1
    if got[0] < n_clip or got[1] < n_scene:
        end = min(got[0] / s.frame_fps, got[1] / s.scene_fps)  # window time covered by both grids
        raise MediaError(
            path, f"truncated: video frames end about {win.start + end:.2f} s, window ends {win.start + win.duration:.2f} s"
        )
    rows = np.floor(times + 1e-9).astype(np.int64)
    return got[0], rows, tracker.finish(win.duration)


def _write_audio(root: Path, video_id: str, path: Path, win: Window, s: JobSettings, audio_offset: float) -> List[str]:
    """Write the window's audio segments; ``audio_offset`` (s) maps the picture's clock to the audio stream's."""
    seg_len = int(round(s.segment_seconds * s.sample_rate))
    total = win.n_segments * s.segment_seconds
    x = load_audio(path, s.sample_rate, offset=max(0.0, win.start - audio_offset), duration=total)
    rels = []
    for j in range(win.n_segments):
        rel = audio_relpath(video_id, j, s.audio_format)
        save_audio(root / rel, x[j * seg_len : (j + 1) * seg_len], s.sample_rate)
        rels.append(rel)
    return rels


def analyse(
    source: VideoSource,
    root: str,
    s: JobSettings,
    downloader: Optional[Callable[[VideoSource, DownloadSettings], Path]] = None,
) -> Analysis:
    """Process one video up to (not including) frame encoding. Never raises for a bad
    video: problems come back as a rejected/failed record."""
    t0 = time.perf_counter()
    vid = source.video_id
    out = Analysis(vid)
    info: Optional[MediaInfo] = None
    spool: Optional[str] = None
    try:
        if source.path is not None:
            path = Path(source.path)
        else:
            if downloader is None:
                raise DownloadError(vid, "download failed: no downloader configured")
            path = Path(downloader(source, s.download))
        info = probe(path)
        win, why = choose_window(info.duration, s)
        if win is None:
            out.record = failed(vid, "rejected", why, duration=info.duration)
            return out
        # The window is on the picture's clock; it lies in the span where sound plays too.
        win = dataclasses.replace(win, start=round(win.start + info.usable_start, 6))
        out.audio_offset = info.audio_offset
        fd, spool = tempfile.mkstemp(prefix=f"{vid}.", suffix=".rgb", dir=s.spool_dir)
        with open(fd, "wb") as sink:
            n_frames, rows, scenes = _decode_window(path, win, s, sink)
        facts = dict(
            duration=info.duration, n_scenes=scenes.n_scenes, longest_scene=scenes.longest,
            window_start=win.start, window_duration=win.duration,
        )
        if scenes.longest > s.scene_max_seconds:
            a, b = max(scenes.scenes, key=lambda se: se[1] - se[0])
            out.record = failed(
                vid, "rejected",
                f"scene too long: {scenes.longest:.2f} s > {s.scene_max_seconds:g} s "
                f"(window {a:.2f}-{b:.2f} s)",
                **facts,
            )
            return out
        try:
            rels = _write_audio(Path(root), vid, path, win, s, info.audio_offset)
        except AudioDecodeError as exc:
            out.record = failed(vid, "failed", f"audio decoding failed: {exc.reason}", **facts)
            return out
        out.frames_path, out.n_frames, out.frame_size, out.rows = spool, n_frames, s.frame_size, rows
        out.facts = dict(facts, n_segments=win.n_segments, audio_paths=tuple(rels))
    except DownloadError as exc:
        out.record = failed(vid, "failed", exc.reason)
    except MediaError as exc:
        facts = {"duration": info.duration} if info is not None else {}
        out.record = failed(vid, "failed", exc.reason, **facts)
    except Exception as exc:  # a video must never stop the run; keep the cause for the manifest
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out.record = failed(vid, "failed", f"unexpected error: {tb}")
    finally:
        if spool is not None and out.frames_path is None:
            Path(spool).unlink(missing_ok=True)
        out.seconds = time.perf_counter() - t0
    return out
