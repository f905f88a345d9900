"""Container probing: streams, codecs and durations of a video file.

Every failure raises :class:`MediaError`, which names the file and a short reason that the
dataset builder records in its manifest (corrupt container, no video stream, no audio
stream, zero duration, unsupported codec).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Optional

from vcmr.utils import MediaFileError, open_container, stream_seconds

#: Reason given when a container cannot be opened.
OPEN_FAILED = "cannot open container (corrupt or truncated)"

#: Video container extensions picked up when a folder is given as input.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov")


class MediaError(MediaFileError):
    """A video file cannot be used. ``path`` and ``reason`` are attributes."""


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """Header facts of a video file. Durations are in seconds.

    Times are on the video stream's clock (0 = its first frame), as a player aligns the
    streams by their start times.

    Attributes:
        duration: usable duration: the span where both streams play (see ``usable_start``).
        video_duration: duration of the first video stream.
        audio_duration: duration of the first audio stream.
        width: frame width in pixels.
        height: frame height in pixels.
        fps: average frame rate (frames per second; 0 when unknown).
        video_codec: decoder name of the video stream.
        audio_codec: decoder name of the audio stream.
        audio_offset: start of the audio stream minus start of the video stream, seconds
            (positive: the sound starts after the picture).
        usable_start: where the span with both picture and sound starts, seconds
            (``max(0, audio_offset)``).
    """

    duration: float
    video_duration: float
    audio_duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str
    audio_offset: float = 0.0
    usable_start: float = 0.0


def _start(stream) -> float:
    """Start time of a stream in seconds (0 when the container does not say)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _codec_name(path: Path, stream, kind: str) -> str:
    """Decoder name of ``stream``; raises when FFmpeg has no decoder for it."""
    try:
        ctx = stream.codec_context
        name: Optional[str] = ctx.name if ctx is not None else None
    except Exception as exc:  # PyAV raises for streams whose codec it cannot open
        raise MediaError(path, f"unsupported {kind} codec: {exc}") from exc
    if not name or name == "none":
        raise MediaError(path, f"unsupported {kind} codec (no decoder available)")
    return name


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read stream layout, codecs and durations of a video file.

    Raises:
        MediaError: missing or empty file, unreadable container, no video stream, no
            audio stream, a codec FFmpeg cannot decode, or a zero/unknown duration.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    with open_container(path, MediaError, OPEN_FAILED) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        vs = container.streams.video[0]
        aus = container.streams.audio[0]
        vcodec = _codec_name(path, vs, "video")
        acodec = _codec_name(path, aus, "audio")
        vdur = stream_seconds(container, vs)
        adur = stream_seconds(container, aus)
        offset = _start(aus) - _start(vs)
        usable_start = max(0.0, offset)
        duration = min(vdur, offset + adur) - usable_start
        if not math.isfinite(duration) or duration <= 0:
            raise MediaError(
                path, f"zero or unknown duration: video {vdur:.3f}s, audio {adur:.3f}s"
                + (f", audio starting {offset:+.3f}s from the picture" if offset else "")
            )
        rate = vs.average_rate or vs.guessed_rate
        return MediaInfo(
            duration=duration,
            video_duration=vdur,
            audio_duration=adur,
            width=int(vs.codec_context.width or 0),
            height=int(vs.codec_context.height or 0),
            fps=float(rate) if rate else 0.0,
            video_codec=vcodec,
            audio_codec=acodec,
            audio_offset=round(offset, 6),
            usable_start=round(usable_start, 6),
        )
