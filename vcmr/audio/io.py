"""Audio decoding to mono float32 at a target sample rate.

Uncompressed and lossless files (wav, flac, ogg/vorbis) are read with ``soundfile``,
which seeks sample-accurately. Everything else (mp3, m4a/aac, opus, the audio track of
mp4/webm/mkv/mov) is decoded with PyAV, seeking to the requested offset through the
container index so a window of a long file is read without decoding the whole file.
Resampling uses ``soxr``.

Every failure raises :class:`AudioDecodeError`, which names the file and the reason
(permission problems say "permission denied", never "corrupt"). Output samples are in
[-1, 1] (clipped), and a header sample rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]
is a bad header. :func:`verify_audio` decodes a whole file with bounded memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
import soxr

from vcmr.utils import PERMISSION_DENIED, MediaFileError, atomic_path, open_container, stream_seconds

SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | {".mp3", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".mkv", ".mov"}

#: A whole-file decode that yields less than this fraction of the duration the header
#: announces is reported as truncated (when the gap is also over TRUNCATION_MIN_GAP_S).
TRUNCATION_RATIO = 0.9
TRUNCATION_MIN_GAP_S = 0.5


class AudioDecodeError(MediaFileError):
    """A file could not be decoded. ``path`` and ``reason`` are attributes."""


class AudioRangeWarning(UserWarning):
    """Decoded samples went far outside [-1, 1] (a mis-scaled float file); they were clipped."""


#: Header sample rates outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz are reported as a bad
#: header: a wav claiming 2 Hz would otherwise turn 4 KB into a "1,000 s song".
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000

#: Decoded samples are clipped to [-1, 1]. Lossy codecs overshoot full scale a little on loud
#: masters; a peak above CLIP_WARN_PEAK (6 dB over full scale) means mis-scaled data and the
#: file is also named in an :class:`AudioRangeWarning`.
CLIP_WARN_PEAK = 2.0

#: Frames per block when libsndfile reads a file in pieces (PyAV decodes frame by frame).
BLOCK_FRAMES = 65536


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio stream. ``duration`` is in seconds (may be estimated)."""

    sample_rate: int
    channels: int
    duration: float
    codec: str


def _check_file(path: Path) -> None:
    """A readable, non-empty regular file, or an :class:`AudioDecodeError` saying which it is not.

    Only regular files are ever opened: opening a FIFO would block forever.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken link: its target does not exist" if os.path.islink(path) else "file does not exist"
        raise AudioDecodeError(path, reason) from None
    except PermissionError:
        raise AudioDecodeError(path, PERMISSION_DENIED) from None
    except OSError as exc:  # a link loop, a name too long, ...
        raise AudioDecodeError(path, f"cannot access: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioDecodeError(path, f"not a regular file ({file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise AudioDecodeError(path, "file is empty (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise AudioDecodeError(path, PERMISSION_DENIED) from None


def file_kind(mode: int) -> str:
    """``"fifo"``, ``"socket"``, ``"character device"``, ``"block device"``, ``"folder"`` or ``"file"``."""
    kinds = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"))
    return next((name for test, name in kinds if test(mode)), "file")


def _check_rate(path: Path, sample_rate: int) -> int:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            path, f"bad header: sample rate {sample_rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
        )
    return sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read sample rate, channel count and duration from the header.

    Raises:
        AudioDecodeError: unreadable file, no audio stream, or a sample rate outside
            [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`].
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except Exception:
            info = None  # fall through to PyAV, which reads more variants
        if info is not None:
            _check_rate(path, info.samplerate)
            return AudioInfo(info.samplerate, info.channels, info.frames / info.samplerate, info.format)
    import av

    with open_container(path, AudioDecodeError, "cannot read header") as container:
        if not container.streams.audio:
            raise AudioDecodeError(path, "no audio stream")
        stream = container.streams.audio[0]
        try:
            duration = stream_seconds(container, stream)
            sr, channels, name = (int(stream.codec_context.sample_rate or 0), int(stream.codec_context.channels),
                                  stream.codec_context.name)
        except (av.error.FFmpegError, ValueError, TypeError) as exc:
            raise AudioDecodeError(path, f"cannot read header: {exc}") from exc
        return AudioInfo(_check_rate(path, sr), channels, duration, name)


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
    except (OSError, struct.error):
        return None


@dataclasses.dataclass
class _Source:
    """An open decoder: native ``sample_rate`` (Hz), ``expected`` seconds announced by the
    header (NaN if unknown) and ``blocks``, mono float32 pieces of the requested window."""

    sample_rate: int
    expected: float
    blocks: Iterator[np.ndarray]


def _soundfile_blocks(path: Path, fh: Any, offset: float, duration: Optional[float]) -> _Source:
    sr = _check_rate(path, fh.samplerate)
    start = int(round(offset * sr))
    if start > fh.frames:
        raise AudioDecodeError(path, f"offset {offset:.3f}s is past the end ({fh.frames / sr:.3f}s)")
    fh.seek(start)
    expected = fh.frames / sr
    if path.suffix.lower() == ".wav":
        declared = _wav_declared_seconds(path)
        if declared is not None:
            expected = max(expected, declared)

    def blocks() -> Iterator[np.ndarray]:
        left = -1 if duration is None else int(round(duration * sr))
        while left != 0:
            n = BLOCK_FRAMES if left < 0 else min(BLOCK_FRAMES, left)
            data = fh.read(frames=n, dtype="float32", always_2d=True)
            if data.shape[0] == 0:
                return
            yield data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            left = -1 if left < 0 else left - data.shape[0]

    return _Source(sr, expected, blocks())


def _pyav_blocks(path: Path, container: Any, offset: float, duration: Optional[float]) -> _Source:
    import av

    if not container.streams.audio:
        raise AudioDecodeError(path, "no audio stream")
    stream = container.streams.audio[0]
    sr = int(stream.codec_context.sample_rate or 0)
    if sr <= 0:
        raise AudioDecodeError(path, "audio stream has no sample rate")
    _check_rate(path, sr)
    expected = stream_seconds(container, stream)
    start_s = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if offset > 0:
        try:
            container.seek(int((offset + start_s) / stream.time_base), stream=stream, backward=True)
        except Exception:
            container.seek(0)
    want_start = int(round(offset * sr))
    want_len = None if duration is None else int(round(duration * sr))

    def blocks() -> Iterator[np.ndarray]:
        got_until = None  # sample index (relative to stream start) after the last decoded frame
        kept = False
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
                    pos = got_until  # keep blocks contiguous despite pts rounding
                end = pos + mono.size
                lo = max(want_start - pos, 0)
                hi = mono.size if want_len is None else min(want_start + want_len - pos, mono.size)
                got_until = end
                if hi > lo:
                    kept = True
                    yield mono[lo:hi]
                if want_len is not None and end >= want_start + want_len:
                    return
        except av.error.FFmpegError as exc:
            if not kept:
                raise AudioDecodeError(path, f"decoding failed: {exc}") from exc
            # Damaged tail: keep what decoded; the length checks judge it.

    return _Source(sr, expected, blocks())


@contextlib.contextmanager
def _open_source(path: Path, offset: float, duration: Optional[float]) -> Iterator[_Source]:
    """Open ``path`` with libsndfile (wav, flac, ...) or else PyAV; yields a :class:`_Source`."""
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        import soundfile as sf

        try:
            fh = sf.SoundFile(str(path))
        except Exception:
            fh = None  # a variant libsndfile does not read; PyAV may
        if fh is not None:
            with fh:
                yield _soundfile_blocks(path, fh, offset, duration)
            return
    with open_container(path, AudioDecodeError) as container:
        yield _pyav_blocks(path, container, offset, duration)


def _decode_blocks(path: Path, offset: float, duration: Optional[float], consume: Callable[[np.ndarray], None]) -> Tuple[int, float]:
    """Decode the window block by block into ``consume``; returns ``(sample_rate, expected)``.

    Every block is checked for NaN/Inf. A decoder failure of any kind is an
    :class:`AudioDecodeError` naming the file: a hostile file is a bad file, not a crash.
    """
    try:
        with _open_source(path, offset, duration) as src:
            for block in src.blocks:
                if not np.all(np.isfinite(block)):
                    raise AudioDecodeError(path, "decoded samples contain NaN or Inf")
                consume(block)
            return src.sample_rate, src.expected
    except AudioDecodeError:
        raise
    except PermissionError as exc:
        raise AudioDecodeError(path, PERMISSION_DENIED) from exc
    except Exception as exc:
        raise AudioDecodeError(path, f"decoding failed: {type(exc).__name__}: {exc}") from exc


def _check_whole(path: Path, n: int, sr: int, expected: float) -> None:
    """A whole-file decode of ``n`` samples: something, and not much less than announced."""
    if n == 0:
        raise AudioDecodeError(path, "no audio samples decoded")
    got = n / sr
    if math.isfinite(expected) and got < TRUNCATION_RATIO * expected and expected - got > TRUNCATION_MIN_GAP_S:
        raise AudioDecodeError(path, f"truncated: decoded {got:.2f}s of {expected:.2f}s announced")


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
        ``[N]`` float32 array in [-1, 1] at ``sample_rate``: samples beyond full scale are
        clipped (see :data:`CLIP_WARN_PEAK`). With ``duration`` set,
        ``N == round(duration * sample_rate)``.

    Raises:
        AudioDecodeError: missing/empty/unreadable file (permission denied is said so), not
            a regular file, no audio stream, a header sample rate outside
            [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`], NaN/Inf samples, nothing
            decoded, a window past the end of the file, or a file much shorter than its
            header says (truncated).
    """
    path = Path(path)
    _check_file(path)
    if offset < 0 or (duration is not None and duration <= 0):
        raise AudioDecodeError(path, f"invalid window offset={offset} duration={duration}")
    chunks: List[np.ndarray] = []
    sr, expected = _decode_blocks(path, offset, duration, chunks.append)
    x = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if x.size == 0:
        raise AudioDecodeError(path, "no audio samples decoded")
    if duration is None and offset == 0:
        _check_whole(path, x.size, sr, expected)
    peak = float(np.abs(x).max())
    if peak > CLIP_WARN_PEAK:
        warnings.warn(f"{path}: samples reach {peak:.3g}, far beyond full scale; clipped to [-1, 1]",
                      AudioRangeWarning, stacklevel=2)
    y = _resample(x, sr, sample_rate)
    if duration is not None:
        n = int(round(duration * sample_rate))
        # Allow a few samples of resampler/frame rounding; anything more is a short file.
        if y.size < n - max(2, sample_rate // 1000):
            raise AudioDecodeError(
                path, f"window {offset:.3f}s+{duration:.3f}s ends past the end of the audio ({offset + x.size / sr:.3f}s)"
            )
        y = np.pad(y, (0, max(0, n - y.size)))[:n]
    y = np.ascontiguousarray(y, dtype=np.float32)
    return np.clip(y, -1.0, 1.0, out=y)


def verify_audio(path: str | os.PathLike) -> float:
    """Decode a whole file block by block, keeping no samples; returns its duration in seconds.

    The checks are those of ``load_audio(path, ...)`` without a window (NaN/Inf, nothing
    decoded, truncated, bad header), but memory stays at one block whatever the file's
    length (``load_audio`` holds the whole decoded file).

    Raises:
        AudioDecodeError: as :func:`load_audio`.
    """
    path = Path(path)
    _check_file(path)
    count = [0]

    def consume(block: np.ndarray) -> None:
        count[0] += block.size

    sr, expected = _decode_blocks(path, 0.0, None, consume)
    _check_whole(path, count[0], sr, expected)
    return count[0] / sr


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
