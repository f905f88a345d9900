"""Render a music video: one source segment per shot, cut on the beat, the song as soundtrack.

Streaming with PyAV, shot by shot; at most one shot's crossfade tail (a few frames) is
held in memory, whatever the song's length.

* **Frame grid.** The output runs at ``fps``; frame ``i`` is shown over
  ``[i / fps, (i + 1) / fps)``. A shot ``[start, end)`` of the song covers frames
  ``round(start * fps)`` to ``round(end * fps)`` (exclusive), so every cut lies within half
  a frame of its beat, and the video has ``round(duration * fps)`` frames: its length is
  the song's to within half a frame.
* **Source frames.** Output frame ``j`` of a shot shows the source frame on screen at
  ``in_point + (j + 0.5) / fps`` (the centre of its interval, the sampling rule of
  :func:`vcmr.video.frames.iter_samples`), which resamples any source rate to ``fps``.
  Frames are scaled inside FFmpeg so that they cover ``width x height`` (keeping their
  aspect) and the centre is cropped. They stay in yuv420p, the encoder's format, from the
  decoder to the encoder: converting through RGB would cost about three times as much.
* **Crossfades** (``crossfade`` seconds, default 0): the outgoing shot is decoded
  ``k = round(crossfade * fps)`` frames past its end and those frames are blended into
  the first ``k`` frames of the next shot (weight of the new shot ``(j + 1) / (k + 1)``),
  so the transition starts on the beat.
* **Sound.** The song is decoded, resampled (to ``audio_sample_rate``, or its own rate
  when 0) and encoded as AAC in chunks, interleaved with the picture; its channel layout
  is kept (mono or stereo); it is cut or padded with silence to the video's length.
* **Container.** H.264 (libx264, yuv420p) + AAC in MP4 with the index at the front
  (faststart), written to a temporary file and renamed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vcmr.utils import MediaFileError, atomic_path, open_container, progress_bar


class RenderError(MediaFileError):
    """A source clip or the song cannot be used for rendering (names the file and why)."""


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """Output format (the ``render:`` config block).

    Attributes:
        width: output width in pixels (even).
        height: output height in pixels (even).
        fps: output frame rate (integer frames per second).
        crossfade: crossfade length in seconds at each cut (0: hard cuts).
        crf: x264 constant rate factor (lower is better quality).
        preset: x264 speed preset.
        audio_bitrate: AAC bit rate in bits per second.
        audio_sample_rate: AAC sample rate in Hz; 0 keeps the song's rate.
        interpolation: swscale filter for scaling (``BILINEAR``, ``AREA``, ``BICUBIC``...).
        decoder_threads: FFmpeg decoder threads per source (0: automatic).
        thumb_height: height in pixels of the per-shot thumbnails (0: none).
    """

    width: int
    height: int
    fps: int
    crossfade: float
    crf: int
    preset: str
    audio_bitrate: int
    audio_sample_rate: int
    interpolation: str
    decoder_threads: int
    thumb_height: int

    @classmethod
    def from_config(cls, node) -> "RenderSettings":
        return cls(**{f.name: getattr(node, f.name) for f in dataclasses.fields(cls)})

    def check(self) -> None:
        """Raise ``ValueError`` naming the ``render.*`` key that cannot work."""
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(f"render.width/height must be positive and even (yuv420p), got {self.width}x{self.height}")
        if self.fps <= 0:
            raise ValueError(f"render.fps must be positive, got {self.fps}")
        if self.crossfade < 0:
            raise ValueError(f"render.crossfade must be >= 0, got {self.crossfade}")

    @property
    def crossfade_frames(self) -> int:
        return int(round(self.crossfade * self.fps))


@dataclasses.dataclass(frozen=True)
class ShotSource:
    """What one shot shows: ``[in_point, in_point + end - start)`` of ``path``, placed at
    ``[start, end)`` seconds of the song."""

    path: str
    in_point: float
    start: float
    end: float


@dataclasses.dataclass
class RenderResult:
    """``path`` of the mp4, ``n_frames``, ``duration`` (s), wall-clock ``seconds`` spent,
    ``frame_bounds`` (first, end) output frame per shot, ``thumbnails`` (one path per shot or empty)."""

    path: Path
    n_frames: int
    duration: float
    seconds: float
    frame_bounds: List[Tuple[int, int]]
    thumbnails: List[Path]


def frame_bounds(shots: Sequence[ShotSource], fps: int, duration: float) -> List[Tuple[int, int]]:
    """``(first, end)`` output frames of each shot: ``round(t * fps)`` of its start and end;
    the last shot ends at ``round(duration * fps)``.

    Raises:
        ValueError: a shot rounds to no frame at all (shorter than about one frame).
    """
    n_total = int(round(duration * fps))
    out = []
    for i, sh in enumerate(shots):
        a = int(round(sh.start * fps))
        b = n_total if i == len(shots) - 1 else int(round(sh.end * fps))
        if b <= a:
            raise ValueError(f"shot {i} [{sh.start:.3f}, {sh.end:.3f}) s is shorter than one frame at {fps} fps")
        out.append((a, b))
    if out and out[0][0] != 0:
        raise ValueError(f"the first shot starts at {shots[0].start:.3f} s, not at 0")
    return out


def cover_short_side(width: int, height: int, out_w: int, out_h: int) -> int:
    """Short side (even) to scale a ``width x height`` frame to so it covers ``out_w x out_h``."""
    from vcmr.video.frames import scaled_size

    scale = max(out_w / width, out_h / height)
    short = int(math.ceil(min(width, height) * scale / 2.0)) * 2
    while True:  # rounding of the long side may leave it a pixel short
        w, h = scaled_size(width, height, short)
        if w >= out_w and h >= out_h:
            return short
        short += 2


def i420_to_rgb(frame: np.ndarray) -> np.ndarray:
    """``[H * 3 / 2, W]`` uint8 I420 (yuv420p planes one after the other) -> ``[H, W, 3]`` uint8 RGB."""
    import av

    return av.VideoFrame.from_ndarray(frame, format="yuv420p").to_ndarray(format="rgb24")


def _crop_i420(buf: np.ndarray, sw: int, sh: int, out_w: int, out_h: int) -> np.ndarray:
    """Centre crop of an ``sw x sh`` I420 buffer to ``out_w x out_h`` (even offsets keep chroma aligned)."""
    flat = buf.reshape(-1)
    top, left = ((sh - out_h) // 2) & ~1, ((sw - out_w) // 2) & ~1
    y = flat[: sw * sh].reshape(sh, sw)[top : top + out_h, left : left + out_w]
    q = (sw // 2) * (sh // 2)
    u = flat[sw * sh : sw * sh + q].reshape(sh // 2, sw // 2)
    v = flat[sw * sh + q : sw * sh + 2 * q].reshape(sh // 2, sw // 2)
    t2, l2, h2, w2 = top // 2, left // 2, out_h // 2, out_w // 2
    return np.concatenate([y.reshape(-1), u[t2 : t2 + h2, l2 : l2 + w2].reshape(-1),
                           v[t2 : t2 + h2, l2 : l2 + w2].reshape(-1)]).reshape(out_h * 3 // 2, out_w)


def shot_frames(src: ShotSource, n: int, s: RenderSettings) -> Iterator[np.ndarray]:
    """``n`` output frames of a shot's source from its in-point, as ``[height * 3 / 2, width]``
    uint8 I420 buffers (the encoder's yuv420p planes).

    Frame ``j`` is the source frame on screen at ``in_point + (j + 0.5) / fps`` (the last
    decoded frame whose timestamp is not after that time). Each picked frame is scaled to
    cover the output and converted to yuv420p inside FFmpeg (once, however many output
    frames show it), then centre-cropped. A source that ends early repeats its last frame
    (the clip choice guarantees enough frames, so this only covers a stream's final frame).

    Raises:
        RenderError: the source is missing, cannot be decoded, or yields no frame.
    """
    import av

    path = Path(src.path)
    if not path.is_file():
        raise RenderError(path, "source clip file does not exist")
    times = src.in_point + (np.arange(n) + 0.5) / s.fps
    with open_container(path, RenderError) as container:
        if not container.streams.video:
            raise RenderError(path, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        vs.thread_count = int(s.decoder_threads)
        ctx = vs.codec_context
        if not ctx.width or not ctx.height:
            raise RenderError(path, "video stream has no frame size")
        from vcmr.video.frames import scaled_size

        sw, sh = scaled_size(int(ctx.width), int(ctx.height), cover_short_side(int(ctx.width), int(ctx.height),
                                                                                s.width, s.height))
        tb = float(vs.time_base)
        t0 = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        rate = float(vs.average_rate or vs.guessed_rate or s.fps)
        if src.in_point > 0:
            try:
                container.seek(int((src.in_point + t0) / tb), stream=vs, backward=True)
            except av.error.FFmpegError:
                container.seek(0)
        held = None  # (frame, converted buffer or None)
        j = 0
        last_t: Optional[float] = None

        def convert(item):
            if item[1] is None:
                buf = item[0].to_ndarray(width=sw, height=sh, format="yuv420p", interpolation=s.interpolation)
                item[1] = _crop_i420(buf, sw, sh, s.width, s.height)
            return item[1]

        try:
            for frame in container.decode(vs):
                t = frame.pts * tb - t0 if frame.pts is not None else ((last_t + 1.0 / rate) if last_t is not None else 0.0)
                last_t = t
                while held is not None and j < n and times[j] < t:
                    yield convert(held)
                    j += 1
                if j >= n:
                    return
                held = [frame, None]
        except av.error.FFmpegError as exc:
            if held is None:
                raise RenderError(path, f"video decoding failed: {exc}") from exc
            # A damaged tail: the last good frame fills the rest.
        if held is None:
            raise RenderError(path, f"no frame decoded at {src.in_point:.3f} s")
        while j < n:
            yield convert(held)
            j += 1


def _audio_layout(channels: int) -> str:
    return "mono" if channels <= 1 else "stereo"


class _SongAudio:
    """Streams the song into the AAC encoder: decode, resample, fixed-size frames."""

    def __init__(self, song: str, out, s: RenderSettings, total_seconds: float) -> None:
        import av

        self.path = Path(song)
        self.container = open_container(self.path, RenderError, "cannot open the song")
        if not self.container.streams.audio:
            self.container.close()
            raise RenderError(self.path, "the song has no audio stream")
        self.stream_in = self.container.streams.audio[0]
        ctx = self.stream_in.codec_context
        rate = int(s.audio_sample_rate or ctx.sample_rate or 0)
        if rate <= 0:
            raise RenderError(self.path, "the song's audio stream has no sample rate")
        self.rate = rate
        self.layout = _audio_layout(int(ctx.channels or 1))
        self.stream = out.add_stream("aac", rate=rate, layout=self.layout)
        self.stream.bit_rate = int(s.audio_bitrate)
        self.out = out
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=rate)
        self.fifo = av.AudioFifo()
        self.frames = self.container.decode(self.stream_in)
        self.total = int(round(total_seconds * rate))  # samples the output gets
        self.written = 0
        self.source_done = False
        self.chunk = int(self.stream.codec_context.frame_size or 1024)

    def _fill(self, need: int) -> None:
        import av

        while not self.source_done and self.fifo.samples < need:
            try:
                frame = next(self.frames)
            except StopIteration:
                self.source_done = True
                frame = None
            except av.error.FFmpegError as exc:
                raise RenderError(self.path, f"audio decoding failed: {exc}") from exc
            for rf in self.resampler.resample(frame):
                rf.pts = None
                self.fifo.write(rf)

    def _padded(self, n: int):
        """What is left of the song, padded with silence to ``n`` samples."""
        import av

        arr = np.zeros((1 if self.layout == "mono" else 2, n), np.float32)
        have = self.fifo.samples
        if have:
            arr[:, :have] = self.fifo.read(have).to_ndarray()
        return av.AudioFrame.from_ndarray(arr, format="fltp", layout=self.layout)

    def push_until(self, seconds: float) -> None:
        """Encode and mux the song up to ``seconds`` (at most to the video's end)."""
        until = min(int(round(seconds * self.rate)), self.total)
        while self.written < until:
            n = min(self.chunk, self.total - self.written)
            self._fill(n)
            # The song ended before the video: pad with silence.
            fr = self.fifo.read(n) if self.fifo.samples >= n else self._padded(n)
            fr.sample_rate = self.rate
            fr.pts = self.written
            fr.time_base = Fraction(1, self.rate)
            self.out.mux(self.stream.encode(fr))
            self.written += n

    def finish(self) -> None:
        self.push_until(self.total / self.rate)
        self.out.mux(self.stream.encode(None))
        self.container.close()


def _save_thumbnail(img: np.ndarray, path: Path, height: int) -> None:
    from PIL import Image

    im = Image.fromarray(img)
    w = max(2, int(round(img.shape[1] * height / img.shape[0])))
    im = im.resize((w, height), Image.BILINEAR)
    with atomic_path(path) as tmp:
        im.save(tmp, format="JPEG", quality=85)


def render_video(
    song: str | os.PathLike,
    shots: Sequence[ShotSource],
    output: str | os.PathLike,
    duration: float,
    s: RenderSettings,
    thumbs_dir: Optional[str | os.PathLike] = None,
    progress: bool = True,
    on_frame: Optional[Callable[[int, np.ndarray], None]] = None,
    poster: Optional[str | os.PathLike] = None,
) -> RenderResult:
    """Write the music video.

    Args:
        song: the audio file (its audio stream becomes the soundtrack).
        shots: one source per shot, in order, covering ``[0, duration)`` without gaps.
        output: the ``.mp4`` to write (atomically).
        duration: song length in seconds (the video's length).
        s: output format.
        thumbs_dir: when set (and ``s.thumb_height > 0``), the middle frame of each shot is
            saved there as ``shot_NNNN.jpg``.
        progress: show a progress bar with an ETA.
        on_frame: called with ``(frame index, [H, W, 3] uint8)`` for every output frame
            (tests use it; it must not keep the arrays).
        poster: when set, the first shot's middle frame is saved there as a full-size JPEG.

    Raises:
        RenderError: a source clip or the song cannot be decoded.
        ValueError: bad settings or shots.
    """
    import av

    s.check()
    output = Path(output)
    bounds = frame_bounds(shots, s.fps, duration)
    n_total = bounds[-1][1] if bounds else 0
    k = s.crossfade_frames
    thumbs: List[Path] = []
    t0 = time.perf_counter()
    bar = progress_bar(total=n_total, desc="rendering", unit="frame", disable=not progress, dynamic_ncols=True)
    with atomic_path(output) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vs = out.add_stream("libx264", rate=Fraction(int(s.fps), 1),
                                options={"crf": str(s.crf), "preset": s.preset})
            vs.width, vs.height, vs.pix_fmt = s.width, s.height, "yuv420p"
            audio = _SongAudio(str(song), out, s, n_total / s.fps)
            index = 0
            tail: List[np.ndarray] = []  # the previous shot's frames past its end (crossfade)
            for i, (src, (a, b)) in enumerate(zip(shots, bounds)):
                n = b - a
                extra = k if (k > 0 and i < len(shots) - 1) else 0
                mid = n // 2
                new_tail: List[np.ndarray] = []
                for j, img in enumerate(shot_frames(src, n + extra, s)):
                    if j >= n:
                        new_tail.append(img.copy())
                        continue
                    if j < len(tail):
                        # Blending the yuv planes equals blending RGB: the conversion is affine.
                        wgt = (j + 1) / (len(tail) + 1)
                        img = (tail[j].astype(np.float32) * (1 - wgt) + img.astype(np.float32) * wgt + 0.5).astype(np.uint8)
                    if j == mid and i == 0 and poster is not None:
                        _save_thumbnail(i420_to_rgb(img), Path(poster), s.height)
                    if j == mid and thumbs_dir is not None and s.thumb_height > 0:
                        p = Path(thumbs_dir) / f"shot_{i:04d}.jpg"
                        _save_thumbnail(i420_to_rgb(img), p, s.thumb_height)
                        thumbs.append(p)
                    if on_frame is not None:
                        on_frame(index, i420_to_rgb(img))
                    audio.push_until((index + 1) / s.fps)
                    vf = av.VideoFrame.from_ndarray(img, format="yuv420p")
                    vf.pts = index
                    out.mux(vs.encode(vf))
                    index += 1
                    bar.update(1)
                tail = new_tail
            out.mux(vs.encode(None))
            audio.finish()
    bar.close()
    return RenderResult(
        path=output, n_frames=n_total, duration=n_total / s.fps, seconds=time.perf_counter() - t0,
        frame_bounds=bounds, thumbnails=thumbs,
    )
