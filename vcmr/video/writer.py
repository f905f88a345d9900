"""Write videos from arrays with PyAV: h264 (yuv420p) picture and AAC mono sound.

Used by the demo music-video generator and by tests and benchmarks that need real media
files with known content.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from vcmr.utils import atomic_path


#: FFmpeg's AAC coders, and ``None`` for its default.
AAC_CODERS = (None, "twoloop", "fast", "anmr")


def write_video(
    path: str | os.PathLike,
    frames: Optional[Iterable[np.ndarray]],
    fps: int,
    audio: Optional[np.ndarray] = None,
    sample_rate: int = 0,
    crf: int = 23,
    preset: str = "ultrafast",
    faststart: bool = True,
    aac_coder: Optional[str] = None,
) -> Path:
    """Encode frames and/or audio into a container chosen by the extension, atomically.

    Args:
        path: output file (``.mp4``, ``.mkv``, ``.mov``...).
        frames: ``[H, W, 3]`` uint8 RGB frames (even sizes) shown ``1 / fps`` s each;
            ``None`` writes no video stream.
        fps: frame rate.
        audio: ``[N]`` float32 mono in [-1, 1]; ``None`` writes no audio stream.
        sample_rate: audio rate in Hz (required with ``audio``).
        crf: x264 constant rate factor.
        preset: x264 speed preset.
        faststart: put the mp4/mov index (``moov``) at the front, as web videos have it.
        aac_coder: FFmpeg AAC coder (``twoloop``, ``fast``, ``anmr``); ``None`` keeps FFmpeg's
            default (``twoloop``, the best quality). ``fast`` encodes about twice as fast.

    Returns:
        ``path``.
    """
    import av

    path = Path(path)
    if frames is None and audio is None:
        raise ValueError(f"{path}: nothing to write (no frames and no audio)")
    if audio is not None and sample_rate <= 0:
        raise ValueError(f"{path}: audio needs a positive sample_rate")
    if aac_coder not in AAC_CODERS:
        raise ValueError(f"{path}: aac_coder must be one of {AAC_CODERS}, got {aac_coder!r}")
    options = {"movflags": "+faststart"} if faststart and path.suffix.lower() in (".mp4", ".mov", ".m4a") else {}
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=_format(path), options=options) as out:
            vs = aus = None
            frame_iter = iter(frames) if frames is not None else None
            first = next(frame_iter, None) if frame_iter is not None else None
            if first is not None:
                vs = out.add_stream("libx264", rate=int(fps), options={"crf": str(crf), "preset": preset})
                vs.height, vs.width = first.shape[:2]
                vs.pix_fmt = "yuv420p"
            if audio is not None:
                aus = out.add_stream("aac", rate=int(sample_rate), layout="mono",
                                     options={"aac_coder": aac_coder} if aac_coder else {})
            a_pos = 0
            chunk = 1024

            def push_audio(until: int) -> None:
                nonlocal a_pos
                while aus is not None and a_pos < min(until, audio.size):
                    block = np.ascontiguousarray(audio[a_pos : a_pos + chunk], dtype=np.float32)
                    fr = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                    fr.sample_rate = int(sample_rate)
                    fr.pts = a_pos
                    out.mux(aus.encode(fr))
                    a_pos += block.size

            if vs is not None:
                i = 0
                img = first
                while img is not None:
                    # Interleave: audio up to the end of this frame, then the frame.
                    push_audio(int((i + 1) / fps * sample_rate) if aus is not None else 0)
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                    vf.pts = i
                    out.mux(vs.encode(vf))
                    i += 1
                    img = next(frame_iter, None)
                out.mux(vs.encode(None))
            if aus is not None:
                push_audio(audio.size)
                out.mux(aus.encode(None))
    return path


def _format(path: Path) -> Optional[str]:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".m4a": "mp4"}.get(path.suffix.lower())
