"""Embed songs and videos with a trained stage-2 model, for search and libraries.

:class:`Embedder` loads a stage-2 export (``vcmr.load_model``) and the frame encoder its
training data was built with (recorded in the export), and turns files into joint-space
embeddings. No Lightning import: it runs wherever torch does.

Audio windows (:meth:`Embedder.embed_audio`)
    The song is decoded to mono at the model's sample rate and cut into windows of
    ``model.input_length`` samples starting at ``0, hop, 2*hop, ...`` (``hop`` defaults to
    half a window) as long as a window fits; when the last of those windows ends before
    the song does, one more window is **aligned to the end** of the song (it overlaps its
    neighbour), so every sample is covered. A song shorter than one window is
    **zero-padded** at its end to one window (its ``ends[0]`` is the song's length).

Song embedding
    The mean of the unit-normalised window embeddings, normalised again (cosine centroid).

Video clips (:meth:`Embedder.embed_video`)
    Frames are sampled at the recorded ``fps`` (5), encoded by the frame encoder and
    averaged per second exactly as the dataset builder does (:mod:`vcmr.video.features`).
    The temporal encoder then sees windows of ``clip_seconds`` rows (default: the model's
    video context, ``round(input_length / sample_rate)`` seconds) at ``hop_seconds``
    (default: ``clip_seconds``), the last window aligned to the end like the audio; a video
    shorter than one window gives one clip over all its seconds. The video embedding is the
    cosine centroid of its clips.

All embeddings are float32 unit vectors, so inner products are cosine similarities.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from vcmr.utils import progress_bar
from vcmr.video.features import (
    FrameEmbeddings,
    encode_video_frames,
    span_features,
    video_stream_info,
)

#: Accepted ``precision`` values and their autocast dtypes (``None``: plain float32).
PRECISIONS: Dict[str, Optional[torch.dtype]] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Arguments of a frame encoder that only say where its weights are stored. A given frame
#: encoder may differ from the recorded one in these, when the given value is a local file
#: or folder (e.g. the same CLIP checkpoint on an offline machine).
WEIGHT_LOCATION_ARGS: Dict[str, Tuple[str, ...]] = {"open_clip": ("pretrained",), "hf_clip": ("model",)}

#: Frame sampling keys a frame-encoder description must carry besides ``name`` and ``args``.
FRAME_KEYS = ("fps", "normalize")


class EmbedderError(ValueError):
    """The model, the frame encoder or the settings do not fit together."""


@dataclasses.dataclass
class AudioEmbedding:
    """Embeddings of one song.

    Attributes:
        windows: ``[n, D]`` float32 unit vectors, one per window.
        starts: ``[n]`` float64 window starts in seconds.
        ends: ``[n]`` float64 window ends in seconds (capped at the song's length).
        song: ``[D]`` float32 song embedding (cosine centroid of ``windows``).
        sample_rate: Hz the windows were cut at (the model's rate).
        duration: song length in seconds.
    """

    windows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    song: np.ndarray
    sample_rate: int
    duration: float


@dataclasses.dataclass
class VideoEmbedding:
    """Embeddings of one video (or a span of it).

    Attributes:
        clips: ``[n, D]`` float32 unit vectors, one per clip.
        starts: ``[n]`` float64 clip starts in seconds from the start of the file.
        ends: ``[n]`` float64 clip ends in seconds.
        features: ``[S, F]`` float32 per-second frame features; row ``k`` covers
            ``[start + k, start + k + 1)``.
        start: seconds of the file before row 0.
        video: ``[D]`` float32 video embedding (cosine centroid of ``clips``).
    """

    clips: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    features: np.ndarray
    start: float
    video: np.ndarray


def window_starts(n: int, length: int, hop: int) -> np.ndarray:
    """Start offsets of the windows of ``length`` over ``n`` items (samples or seconds).

    ``0, hop, 2*hop, ...`` while a window fits, plus one window aligned to the end when
    those leave a tail uncovered; ``[0]`` when ``n <= length``.

    Raises:
        ValueError: ``length`` or ``hop`` below 1.
    """
    if length < 1 or hop < 1:
        raise ValueError(f"window length and hop must be >= 1, got {length} and {hop}")
    if n <= length:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n - length + 1, hop, dtype=np.int64)
    if starts[-1] + length < n:
        starts = np.append(starts, n - length)
    return starts


def centroid(vectors: np.ndarray) -> np.ndarray:
    """Mean of unit-normalised rows ``[n, D]``, normalised again -> ``[D]`` float32."""
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    m = v.mean(axis=0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _describe(spec: Mapping[str, Any]) -> str:
    return f"{spec.get('name')} {dict(spec.get('args') or {})}"


def resolve_frame_encoder(
    recorded: Optional[Mapping[str, Any]], given: Optional[Mapping[str, Any]], model_path: str
) -> Dict[str, Any]:
    """The frame encoder to use: the one the model records, or ``given`` if it is the same one.

    Args:
        recorded: ``model.meta["frame_encoder"]`` (``{name, args, fps, normalize}`` or ``None``).
        given: a user's ``{name, args[, fps, normalize]}``, or ``None``.
        model_path: named in error messages.

    Returns:
        ``{"name", "args", "fps", "normalize"}``.

    Raises:
        EmbedderError: nothing recorded and nothing given; a given encoder that differs
            from the recorded one (the message names both); missing ``fps``/``normalize``.
    """
    has_record = bool(recorded) and bool(recorded.get("name"))
    if given is None:
        if not has_record:
            raise EmbedderError(
                f"{model_path}: the model records no frame encoder (its training data had no "
                "preprocess_config.yaml); pass frame_encoder={'name': ..., 'args': {...}, 'fps': 5, "
                "'normalize': False} as the dataset was built"
            )
        spec = {k: recorded.get(k) for k in ("name", "args", *FRAME_KEYS)}
    else:
        spec = {"name": given.get("name"), "args": dict(given.get("args") or {}),
                **{k: given.get(k) for k in FRAME_KEYS}}
        if has_record:
            mismatch = _mismatch(recorded, spec)
            if mismatch:
                raise EmbedderError(
                    f"{model_path}: frame encoder mismatch ({mismatch}): the model was trained on features of "
                    f"'{_describe(recorded)}' but '{_describe(spec)}' was given; features of another encoder "
                    "mean nothing to its video encoder (leave frame_encoder unset to use the recorded one)"
                )
            for k in FRAME_KEYS:
                if spec[k] is None:
                    spec[k] = recorded.get(k)
    spec["args"] = dict(spec.get("args") or {})
    missing = [k for k in FRAME_KEYS if spec.get(k) is None]
    if missing:
        raise EmbedderError(f"{model_path}: frame encoder '{spec['name']}' lacks {missing} (the builder's frames.*)")
    return spec


def _mismatch(recorded: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """Why ``given`` is not the recorded encoder ('' when it is)."""
    if given.get("name") != recorded.get("name"):
        return f"name {given.get('name')!r} != {recorded.get('name')!r}"
    ra, ga = dict(recorded.get("args") or {}), dict(given.get("args") or {})
    movable = WEIGHT_LOCATION_ARGS.get(str(recorded.get("name")), ())
    for key in sorted(set(ra) | set(ga)):
        if ra.get(key) == ga.get(key):
            continue
        if key in movable and ga.get(key) is not None and Path(str(ga[key])).exists():
            continue  # the same weights from a local copy
        return f"args.{key} {ga.get(key)!r} != {ra.get(key)!r}"
    for key in FRAME_KEYS:
        if given.get(key) is not None and recorded.get(key) is not None and given[key] != recorded[key]:
            return f"{key} {given[key]!r} != {recorded[key]!r}"
    return ""


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


class Embedder:
    """Joint-space embeddings of songs and videos from a stage-2 model.

    Args:
        model: a stage-2 export file, a run folder, its ``export/`` folder, or an already
            loaded :class:`~vcmr.models.joint.MusicVideoModel` (with ``meta``).
        device: ``cpu`` (default), ``cuda``, ``cuda:1`` or ``auto``.
        precision: ``fp32``; ``fp16`` or ``bf16`` (autocast) on a CUDA device only.
        frame_encoder: ``None`` uses the encoder recorded in the export; a given
            ``{name, args[, fps, normalize]}`` must be that same encoder.
        batch_size: audio windows / video clips per forward pass.
        frame_batch_size: frames per frame-encoder batch.
        progress: progress bars for long inputs.
        interpolation: swscale filter used when frames are scaled (the builder's ``frames.interpolation``).
        decoder_threads: FFmpeg decoder threads (0: automatic).
        end_tolerance: seconds the last decoded frame may cover past its timestamp.

    Raises:
        EmbedderError: bad precision/device pair, or a frame encoder problem.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike, torch.nn.Module],
        device: str = "cpu",
        precision: str = "fp32",
        frame_encoder: Optional[Mapping[str, Any]] = None,
        batch_size: int = 32,
        frame_batch_size: int = 64,
        progress: bool = True,
        interpolation: str = "BILINEAR",
        decoder_threads: int = 0,
        end_tolerance: float = 0.5,
    ) -> None:
        from vcmr.models.export import load_any_model as load_model
        from vcmr.video.encoders import resolve_device

        if precision not in PRECISIONS:
            raise EmbedderError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(str(device))
        if PRECISIONS[precision] is not None and self.device.type != "cuda":
            raise EmbedderError(
                f"precision={precision!r} runs on a CUDA GPU only, but device={str(device)!r}; "
                "use precision='fp32' on CPU"
            )
        if batch_size < 1 or frame_batch_size < 1:
            raise EmbedderError(f"batch sizes must be >= 1, got {batch_size} and {frame_batch_size}")
        self.model = model if isinstance(model, torch.nn.Module) else load_model(model)
        meta = dict(getattr(self.model, "meta", {}) or {})
        if "sample_rate" not in meta:
            raise EmbedderError(f"{meta.get('path', model)}: the model records no sample_rate")
        self.model_path = str(meta.get("path", model))
        self.sample_rate = int(meta["sample_rate"])
        self.precision = precision
        self.batch_size = int(batch_size)
        self.frame_batch_size = int(frame_batch_size)
        self.progress = bool(progress)
        self.interpolation = str(interpolation)
        self.decoder_threads = int(decoder_threads)
        self.end_tolerance = float(end_tolerance)
        self.frame_encoder_spec = resolve_frame_encoder(meta.get("frame_encoder"), frame_encoder, self.model_path)
        self.model.eval().to(self.device)
        self._frame_encoder = None
        self._sha256: Optional[str] = None

    # ------------------------------------------------------------------------------
    # Facts
    # ------------------------------------------------------------------------------

    @property
    def input_length(self) -> int:
        """Samples per audio window."""
        return int(self.model.input_length)

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def video_context(self) -> int:
        """Seconds of video the model was trained to pair with one window: ``round(L / sr)`` (>= 1)."""
        return max(1, int(round(self.input_length / self.sample_rate)))

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the model's export file (computed once)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.model_path)
        return self._sha256

    def model_info(self) -> Dict[str, Any]:
        """What a library records about the model it was built with."""
        return {
            "path": str(Path(self.model_path).resolve()),
            "sha256": self.model_sha256,
            "sample_rate": self.sample_rate,
            "input_length": self.input_length,
            "embed_dim": self.embed_dim,
            "video_context": self.video_context,
            "spec": self.model.spec,
        }

    @property
    def frame_encoder(self):
        """The :class:`~vcmr.video.encoders.FrameEncoder`, built on first use."""
        if self._frame_encoder is None:
            from vcmr.video.encoders import build_frame_encoder

            spec = self.frame_encoder_spec
            enc = build_frame_encoder(str(spec["name"]), spec["args"], device=str(self.device))
            if int(enc.embed_dim) != self.model.video_input_dim:
                raise EmbedderError(
                    f"{self.model_path}: frame encoder '{spec['name']}' gives {enc.embed_dim}-dim features but the "
                    f"model's video encoder takes {self.model.video_input_dim}"
                )
            self._frame_encoder = enc.eval()
        return self._frame_encoder

    # ------------------------------------------------------------------------------
    # Forward passes
    # ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode():
            if dtype is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=dtype):
                    yield

    def _bar(self, total: int, desc: str, unit: str):
        return progress_bar(total=total, desc=desc, unit=unit, leave=False, disable=not self.progress or total <= 1)

    def encode_windows(self, x: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Windows ``x[s : s + L]`` for each ``s`` in ``starts`` -> ``[n, D]`` float32 unit vectors."""
        L = self.input_length
        out = np.zeros((len(starts), self.embed_dim), np.float32)
        bar = self._bar(math.ceil(len(starts) / self.batch_size), "audio windows", "batch")
        with self._autocast():
            for i in range(0, len(starts), self.batch_size):
                batch = np.stack([x[s : s + L] for s in starts[i : i + self.batch_size]])
                t = torch.from_numpy(batch).unsqueeze(1).to(self.device)
                z = self.model.encode_audio(t, normalize=True).float()
                out[i : i + len(batch)] = torch.nn.functional.normalize(z, dim=-1).cpu().numpy()
                bar.update(1)
        bar.close()
        return out

    def encode_features(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Per-second feature sequences ``[S_i, F]`` -> ``[n, D]`` float32 unit vectors.

        Sequences are batched with others of the same length, so an embedding never depends
        on padding or on the other items of a call.
        """
        out = np.zeros((len(features), self.embed_dim), np.float32)
        by_len: Dict[int, List[int]] = {}
        for i, f in enumerate(features):
            if f.ndim != 2 or f.shape[0] < 1:
                raise ValueError(f"features must be [S >= 1, F], got shape {f.shape}")
            by_len.setdefault(int(f.shape[0]), []).append(i)
        batches = [idx[j : j + self.batch_size] for _, idx in sorted(by_len.items())
                   for j in range(0, len(idx), self.batch_size)]
        bar = self._bar(len(batches), "video clips", "batch")
        with self._autocast():
            for idx in batches:
                v = torch.from_numpy(np.stack([features[i] for i in idx]).astype(np.float32)).to(self.device)
                z = self.model.encode_video(v, normalize=True).float()
                out[idx] = torch.nn.functional.normalize(z, dim=-1).cpu().numpy()
                bar.update(1)
        bar.close()
        return out

    # ------------------------------------------------------------------------------
    # Audio
    # ------------------------------------------------------------------------------

    def load_song(self, path_or_array: Union[str, os.PathLike, np.ndarray], sample_rate: Optional[int] = None) -> np.ndarray:
        """Mono float32 at the model's rate from a file (any format :func:`vcmr.audio.io.load_audio`
        reads, including the audio track of a video) or an array ``[N]`` at ``sample_rate``."""
        if isinstance(path_or_array, (str, os.PathLike)):
            from vcmr.audio.io import load_audio

            return load_audio(path_or_array, self.sample_rate)
        x = np.asarray(path_or_array, dtype=np.float32)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 1:
            raise ValueError(f"audio array must be mono [N] (or [1, N]), got shape {x.shape}")
        if sample_rate is None:
            raise ValueError("embed_audio(array) needs sample_rate= (Hz of the array)")
        if x.size == 0 or not np.isfinite(x).all():
            raise ValueError("audio array is empty or contains NaN/inf")
        return np.ascontiguousarray(_resample(x, int(sample_rate), self.sample_rate))

    def embed_audio(
        self,
        path_or_array: Union[str, os.PathLike, np.ndarray],
        sample_rate: Optional[int] = None,
        hop_seconds: Optional[float] = None,
    ) -> AudioEmbedding:
        """Window and song embeddings of a song (see the module docstring for the windows).

        Args:
            path_or_array: audio/video file, or a mono float array.
            sample_rate: Hz of an array (files are resampled to the model's rate).
            hop_seconds: window hop; ``None``: half a window.

        Raises:
            AudioDecodeError: the file cannot be decoded (names the file and the reason).
            ValueError: a bad array or hop.
        """
        x = self.load_song(path_or_array, sample_rate)
        L, sr = self.input_length, self.sample_rate
        hop = L // 2 if hop_seconds is None else int(round(float(hop_seconds) * sr))
        if hop < 1:
            raise ValueError(f"hop_seconds={hop_seconds} is shorter than one sample")
        n = int(x.size)
        if n < L:
            x = np.pad(x, (0, L - n))
        starts = window_starts(n, L, hop)
        windows = self.encode_windows(x, starts)
        s = starts / sr
        return AudioEmbedding(
            windows=windows, starts=s.astype(np.float64), ends=np.minimum(s + L / sr, n / sr).astype(np.float64),
            song=centroid(windows), sample_rate=sr, duration=n / sr,
        )

    # ------------------------------------------------------------------------------
    # Video
    # ------------------------------------------------------------------------------

    def encode_frames(
        self,
        path: str | os.PathLike,
        start: float,
        duration: float,
        extra_grids: Sequence[Any] = (),
        on_sample: Optional[Callable[[Any], None]] = None,
    ) -> FrameEmbeddings:
        """Decode a span once and encode its frames at the recorded ``fps`` (see
        :func:`vcmr.video.features.encode_video_frames`; ``extra_grids``/``on_sample`` serve
        other consumers of the same decoding pass)."""
        spec = self.frame_encoder_spec
        with self._autocast():
            return encode_video_frames(
                path, self.frame_encoder, float(spec["fps"]), float(start), float(duration), self.frame_batch_size,
                self.interpolation, self.decoder_threads, self.end_tolerance, extra_grids, on_sample,
                progress=self.progress and duration > 60,
            )

    def span_features(self, frames: FrameEmbeddings, start: float, n_seconds: int) -> np.ndarray:
        """``[n_seconds, F]`` per-second features of ``[start, start + n_seconds)`` (builder's rule)."""
        return span_features(frames, start, n_seconds, bool(self.frame_encoder_spec["normalize"]))

    def embed_video(
        self,
        path: str | os.PathLike,
        clip_seconds: Optional[int] = None,
        hop_seconds: Optional[int] = None,
        start: float = 0.0,
        end: Optional[float] = None,
        spans: Optional[Sequence[Tuple[float, float]]] = None,
    ) -> VideoEmbedding:
        """Clip embeddings of a video (see the module docstring for the windows).

        Args:
            path: video file (an audio stream is not needed).
            clip_seconds: whole seconds per clip; ``None``: the model's video context.
            hop_seconds: whole seconds between clip starts; ``None``: ``clip_seconds``.
            start: seconds of the file to skip.
            end: where to stop (seconds of the file); ``None``: the end of the video stream.
            spans: given clips instead of windows: ``(start, end)`` seconds of the file, each
                lasting ``floor(end - start) >= 1`` whole seconds (its per-second rows are
                aligned to its own start); ``start``/``end`` then only bound the decoding,
                and ``features`` covers ``[start, start + floor(end - start))``.

        Raises:
            MediaError: the file cannot be decoded or has less than one second in the span.
            ValueError: bad clip settings.
        """
        from vcmr.video.probe import MediaError

        clip = self.video_context if clip_seconds is None else int(clip_seconds)
        hop = clip if hop_seconds is None else int(hop_seconds)
        if clip < 1 or hop < 1:
            raise ValueError(f"clip_seconds and hop_seconds must be whole seconds >= 1, got {clip_seconds}, {hop_seconds}")
        if end is None:
            end = video_stream_info(path).duration
        n = int(math.floor(float(end) - float(start) + 1e-6))
        if n < 1:
            raise MediaError(path, f"less than one second of video between {start:.2f} s and {end:.2f} s")
        frames = self.encode_frames(path, start, n)
        n = int(math.floor(frames.duration + 1e-6))
        if n < 1:
            raise MediaError(path, f"less than one second of video decoded after {start:.2f} s")
        features = self.span_features(frames, start, n)
        if spans is not None:
            lens = [int(math.floor(float(b) - float(a) + 1e-6)) for a, b in spans]
            if not spans or min(lens) < 1:
                raise ValueError(f"spans must be a non-empty list of (start, end) of at least 1 s, got {list(spans)}")
            clips = self.encode_features([self.span_features(frames, float(a), m) for (a, _), m in zip(spans, lens)])
            starts = np.array([float(a) for a, _ in spans], np.float64)
            return VideoEmbedding(clips=clips, starts=starts, ends=starts + np.array(lens, np.float64),
                                  features=features, start=float(start), video=centroid(clips))
        rows = window_starts(n, clip, hop)
        lens = np.minimum(clip, n - rows)
        clips = self.encode_features([features[r : r + m] for r, m in zip(rows, lens)])
        return VideoEmbedding(
            clips=clips, starts=(start + rows).astype(np.float64), ends=(start + rows + lens).astype(np.float64),
            features=features, start=float(start), video=centroid(clips),
        )


__all__ = [
    "AudioEmbedding",
    "Embedder",
    "EmbedderError",
    "PRECISIONS",
    "VideoEmbedding",
    "WEIGHT_LOCATION_ARGS",
    "centroid",
    "file_sha256",
    "resolve_frame_encoder",
    "window_starts",
]
