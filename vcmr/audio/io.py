"""Audio decoding to mono float32 at a target sample rate.

Uncompressed and lossless files (wav, flac, ogg/vorbis) are read with ``soundfile``,
which seeks sample-accurately. Everything else (mp3, m4a/aac, opus, the audio track of
mp4/webm/mkv/mov) is decoded with PyAV, seeking to the requested offset through the
container index so a window of a long file is read without decoding the whole file.
Resampling uses ``soxr``.

Every failure raises :class:`AudioDecodeError`, which names the file and the reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import soxr

from vcmr.utils import MediaFileError, atomic_path, open_container

SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | {".mp3", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".mkv", ".mov"}

#: A whole-file decode that yields less than this fraction of the duration the header
#: announces is reported as truncated (when the gap is also over TRUNCATION_MIN_GAP_S).
TRUNCATION_RATIO = 0.9
TRUNCATION_MIN_GAP_S = 0.5


class AudioDecodeError(MediaFileError):
    """A file could not be decoded. ``path`` and ``reason`` are attributes."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio stream. ``duration`` is in seconds (may be estimated)."""

    sample_rate: int
    channels: int
    duration: float
    codec: str


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioDecodeError(path, "file does not exist")
    if not path.is_file():
        raise AudioDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read sample rate, channel count and duration from the header."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        import soundfile as sf

        try:
            info = sf.info(str(path))
            return AudioInfo(info.samplerate, info.channels, info.frames / info.samplerate, info.format)
        except Exception:
            pass  # fall through to PyAV, which reads more variants
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioDecodeError(path, "no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = float("nan")
            return AudioInfo(
                int(stream.codec_context.sample_rate),
                int(stream.codec_context.channels),
                duration,
                stream.codec_context.name,
            )
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(path, f"cannot read header: {exc}") from exc


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out or x.size == 0:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def _wav_declared_seconds(path: Path) -> Optional[float]:
    """Duration announced by a RIFF/WAVE header's ``data`` chunk, or None if unparsable.

    libsndfile derives the length of a wav from the file size, so a file cut short reads
    as a shorter, valid file; the header's own chunk size is what reveals the cut.
    """
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            while True:
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    byte_rate = struct.unpack("<I", fmt[8:12])[0]
                elif cid == b"data":
                    if not byte_rate or size in (0, 0xFFFFFFFF):
                        return None  # streaming writers leave the size unset
                    return size / byte_rate
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None


def _read_soundfile(path: Path, offset: float, duration: Optional[float]) -> tuple[np.ndarray, int, float]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as fh:
        sr = fh.samplerate
        start = int(round(offset * sr))
        if start > fh.frames:
            raise AudioDecodeError(path, f"offset {offset:.3f}s is past the end ({fh.frames / sr:.3f}s)")
        fh.seek(start)
        n = -1 if duration is None else int(round(duration * sr))
        data = fh.read(frames=n, dtype="float32", always_2d=True)
        expected = fh.frames / sr
    if path.suffix.lower() == ".wav":
        declared = _wav_declared_seconds(path)
        if declared is not None:
            expected = max(expected, declared)
    return data.mean(axis=1), sr, expected


def _read_pyav(path: Path, offset: float, duration: Optional[float]) -> tuple[np.ndarray, int, float]:
    import av

    with open_container(path, AudioDecodeError) as container:
        if not container.streams.audio:
            raise AudioDecodeError(path, "no audio stream")
        stream = container.streams.audio[0]
        sr = int(stream.codec_context.sample_rate or 0)
        if sr <= 0:
            raise AudioDecodeError(path, "audio stream has no sample rate")
        if stream.duration is not None and stream.time_base is not None:
            expected = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            expected = container.duration / 1_000_000
        else:
            expected = float("nan")
        start_s = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if offset > 0:
            try:
                container.seek(int((offset + start_s) / stream.time_base), stream=stream, backward=True)
            except Exception:
                container.seek(0)
        want_start = int(round(offset * sr))
        want_len = None if duration is None else int(round(duration * sr))
        chunks = []
        got_until = None  # sample index (relative to stream start) after the last kept chunk
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.ndim == 1:
                    arr = arr[None, :]
                if frame.format.is_planar:
                    mono = arr.astype(np.float32).mean(axis=0)
                else:
                    ch = max(1, len(frame.layout.channels))
                    mono = arr.reshape(-1, ch).astype(np.float32).mean(axis=1)
                if np.issubdtype(arr.dtype, np.integer):
                    mono /= float(np.iinfo(arr.dtype).max) + 1.0
                if frame.pts is not None and frame.time_base is not None:
                    pos = int(round((float(frame.pts * frame.time_base) - start_s) * sr))
                else:
                    pos = got_until if got_until is not None else 0
                if got_until is not None and abs(pos - got_until) <= 2:
                    pos = got_until  # keep chunks contiguous despite pts rounding
                end = pos + mono.size
                lo = max(want_start - pos, 0)
                if want_len is not None:
                    hi = min(want_start + want_len - pos, mono.size)
                else:
                    hi = mono.size
                if hi > lo:
                    chunks.append(mono[lo:hi])
                got_until = end
                if want_len is not None and end >= want_start + want_len:
                    break
        except av.error.FFmpegError as exc:
            if not chunks:
                raise AudioDecodeError(path, f"decoding failed: {exc}") from exc
            # Damaged tail: keep what decoded; the length checks below judge it.
    x = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return x, sr, expected


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    offset: float = 0.0,
    duration: Optional[float] = None,
) -> np.ndarray:
    """Decode a file (or a window of it) to mono float32.

    Args:
        path: audio file, or a video file with an audio track.
        sample_rate: output rate in Hz.
        offset: start of the window in seconds.
        duration: window length in seconds; ``None`` reads to the end.

    Returns:
        ``[N]`` float32 array in [-1, 1] at ``sample_rate``. With ``duration`` set,
        ``N == round(duration * sample_rate)``.

    Raises:
        AudioDecodeError: missing/empty/unreadable file, no audio stream, nothing
            decoded, a window past the end of the file, or a file much shorter than
            its header says (truncated).
    """
    path = Path(path)
    _check_file(path)
    if offset < 0 or (duration is not None and duration <= 0):
        raise AudioDecodeError(path, f"invalid window offset={offset} duration={duration}")
    x: Optional[np.ndarray] = None
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            x, sr, expected = _read_soundfile(path, offset, duration)
        except AudioDecodeError:
            raise
        except Exception:
            x = None  # a variant libsndfile does not read; PyAV may
    if x is None:
        x, sr, expected = _read_pyav(path, offset, duration)
    if x.size == 0:
        raise AudioDecodeError(path, "no audio samples decoded")
    if not np.all(np.isfinite(x)):
        raise AudioDecodeError(path, "decoded samples contain NaN or Inf")
    got = x.size / sr
    if duration is None and offset == 0 and math.isfinite(expected):
        if got < TRUNCATION_RATIO * expected and expected - got > TRUNCATION_MIN_GAP_S:
            raise AudioDecodeError(path, f"truncated: decoded {got:.2f}s of {expected:.2f}s announced")
    y = _resample(x, sr, sample_rate)
    if duration is not None:
        n = int(round(duration * sample_rate))
        # Allow a few samples of resampler/frame rounding; anything more is a short file.
        if y.size < n - max(2, sample_rate // 1000):
            raise AudioDecodeError(
                path, f"window {offset:.3f}s+{duration:.3f}s ends past the end of the audio ({offset + got:.3f}s)"
            )
        y = np.pad(y, (0, max(0, n - y.size)))[:n]
    return np.ascontiguousarray(y, dtype=np.float32)


def save_audio(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as wav/flac (by extension) through a temp file + rename."""
    import soundfile as sf

    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output extension (use .wav, .flac or .ogg)")
    subtype = "PCM_16" if fmt != "OGG" else "VORBIS"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), sample_rate, format=fmt, subtype=subtype)
