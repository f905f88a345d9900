"""Clip-level rhythm features of a song: beat count, beat strength, beat interval, tempo.

The song is cut into consecutive clips of ``clip_seconds`` (a trailing part shorter than
one clip is dropped, as in UT-CMVMR). One onset-strength envelope is computed for the
whole song (librosa's spectral-flux onset strength on a mel spectrogram); for each clip,
librosa's dynamic-programming beat tracker runs on the clip's slice of that envelope, so
the tempo may change from clip to clip. Per clip:

* ``n_beats``: number of beats found in the clip;
* ``beat_strength``: mean onset strength at those beats (0 without beats);
* ``beat_interval``: mean time between consecutive beats, seconds (0 with fewer than two);
* ``tempo``: the tracker's tempo estimate for the clip, beats per minute (0 when none).

**Quantisation** (the UT-CMVMR rule, every constant in :class:`RhythmSettings`):

* beat-count class ``min(n_beats, max_beats)`` -> ``max_beats + 1`` classes;
* strength class ``min(round(beat_strength / strength_step), strength_classes - 1)``;
* interval class: the clip length is cut into ``interval_bins`` equal bins
  (edges ``linspace(0, clip_seconds, interval_bins + 1)``); an interval falls in bin
  ``min(floor(interval / (clip_seconds / interval_bins)), interval_bins - 1)``; a clip with
  0 or 1 beat gets the extra class ``interval_bins`` -> ``interval_bins + 1`` classes.

With the defaults (4 s clips, 64 bins) a bin is 62.5 ms wide: 120 bpm (0.5 s) is class 8.

The feature array of a song is ``[n_clips, len(COLUMNS)]`` float32 with the columns of
:data:`COLUMNS`; :func:`rhythm_tokens` reads the three class columns back as int64.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Tuple

import numpy as np

from vcmr.audio.io import load_audio

#: Columns of a rhythm feature array, in order.
COLUMNS: Tuple[str, ...] = (
    "n_beats",
    "beat_strength",
    "beat_interval",
    "tempo",
    "beats_class",
    "strength_class",
    "interval_class",
)
#: Column indices of the three token classes (beat count, strength, interval).
TOKEN_COLUMNS: Tuple[int, int, int] = (4, 5, 6)


@dataclasses.dataclass(frozen=True)
class RhythmSettings:
    """How rhythm is measured and quantised (the ``rhythm:`` config block).

    Attributes:
        sample_rate: analysis sample rate in Hz (audio is resampled to it).
        clip_seconds: clip length in seconds.
        hop_length: samples between onset-envelope frames (time resolution).
        start_bpm: the beat tracker's initial tempo guess.
        tightness: how strictly beats follow the tempo (librosa's ``tightness``).
        context_seconds: envelope seen by the tracker on each side of a clip (0: the clip only).
        interval_bins: bins of the mean beat interval over ``[0, clip_seconds]``.
        max_beats: beat counts above this share the top count class.
        strength_classes: number of beat-strength classes.
        strength_step: onset-strength units per strength class.
    """

    sample_rate: int
    clip_seconds: float
    hop_length: int
    start_bpm: float
    tightness: float
    context_seconds: float
    interval_bins: int
    max_beats: int
    strength_classes: int
    strength_step: float

    def __post_init__(self) -> None:
        for name in ("sample_rate", "hop_length", "interval_bins", "max_beats", "strength_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"rhythm.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("clip_seconds", "start_bpm", "tightness", "strength_step"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"rhythm.{name} must be > 0, got {getattr(self, name)}")
        if not float(self.context_seconds) >= 0:
            raise ValueError(f"rhythm.context_seconds must be >= 0, got {self.context_seconds}")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | Any) -> "RhythmSettings":
        """From a mapping or config node with one key per field (every key required)."""
        get = node.get if isinstance(node, Mapping) else lambda k: getattr(node, k, None)
        missing = [f.name for f in dataclasses.fields(cls) if get(f.name) is None]
        if missing:
            raise KeyError(f"rhythm settings: missing keys {missing}")
        return cls(**{f.name: get(f.name) for f in dataclasses.fields(cls)})

    @property
    def n_classes(self) -> Tuple[int, int, int]:
        """Class counts of (beat count, strength, interval) tokens."""
        return self.max_beats + 1, self.strength_classes, self.interval_bins + 1

    @property
    def interval_edges(self) -> np.ndarray:
        """``[interval_bins + 1]`` bin edges of the mean beat interval, seconds."""
        return np.linspace(0.0, self.clip_seconds, self.interval_bins + 1)


def quantize_interval(interval: float, n_beats: int, clip_seconds: float, bins: int) -> int:
    """Interval class: ``bins`` for 0-1 beats, else the bin of ``interval`` over ``[0, clip_seconds]``."""
    if n_beats <= 1:
        return bins
    return int(min(max(math.floor(interval / (clip_seconds / bins)), 0), bins - 1))


def quantize_clip(n_beats: int, strength: float, interval: float, s: RhythmSettings) -> Tuple[int, int, int]:
    """The three token classes of one clip (see the module docstring)."""
    beats_class = min(int(n_beats), s.max_beats)
    strength_class = int(min(max(round(strength / s.strength_step), 0), s.strength_classes - 1))
    return beats_class, strength_class, quantize_interval(interval, n_beats, s.clip_seconds, s.interval_bins)


def clip_rhythm(envelope: np.ndarray, lo: int, hi: int, s: RhythmSettings) -> Tuple[int, float, float, float]:
    """``(n_beats, mean strength, mean interval s, tempo bpm)`` of frames ``[lo, hi)`` of a song.

    Args:
        envelope: ``[frames]`` onset strength of the whole song at ``s.sample_rate / s.hop_length``
            frames per second.
        lo: first envelope frame of the clip.
        hi: end (exclusive) envelope frame of the clip.
    """
    import librosa

    ctx = int(round(s.context_seconds * s.sample_rate / s.hop_length))
    start = max(0, lo - ctx)
    window = envelope[start : hi + ctx]
    if window.size < 2 or not np.any(envelope[lo:hi] > 0):
        return 0, 0.0, 0.0, 0.0
    tempo, beats = librosa.beat.beat_track(
        onset_envelope=window, sr=s.sample_rate, hop_length=s.hop_length,
        start_bpm=s.start_bpm, tightness=s.tightness,
    )
    beats = np.asarray(beats, dtype=np.int64) + start
    beats = beats[(beats >= lo) & (beats < hi)]
    if beats.size == 0:
        return 0, 0.0, 0.0, 0.0
    strength = float(envelope[beats].mean())
    interval = float(np.diff(beats).mean()) * s.hop_length / s.sample_rate if beats.size > 1 else 0.0
    return int(beats.size), strength, interval, float(np.atleast_1d(tempo)[0])


def n_clips_of(n_samples: int, s: RhythmSettings) -> int:
    """Whole clips in ``n_samples`` samples at ``s.sample_rate``."""
    return int(n_samples // int(round(s.clip_seconds * s.sample_rate)))


def rhythm_features(x: np.ndarray, s: RhythmSettings) -> np.ndarray:
    """Per-clip rhythm of a waveform.

    Args:
        x: ``[N]`` float mono waveform at ``s.sample_rate``.
        s: settings.

    Returns:
        ``[n_clips, len(COLUMNS)]`` float32 (columns of :data:`COLUMNS`).

    Raises:
        ValueError: ``x`` is not 1-D, not finite, or shorter than one clip.
    """
    import librosa

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform [N], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or infinite values")
    n_clips = n_clips_of(x.size, s)
    if n_clips < 1:
        raise ValueError(
            f"audio of {x.size / s.sample_rate:.2f} s is shorter than one clip ({s.clip_seconds} s)"
        )
    env = librosa.onset.onset_strength(y=x, sr=s.sample_rate, hop_length=s.hop_length)
    frames_per_second = s.sample_rate / s.hop_length
    out = np.zeros((n_clips, len(COLUMNS)), np.float32)
    for c in range(n_clips):
        lo = int(round(c * s.clip_seconds * frames_per_second))
        hi = int(round((c + 1) * s.clip_seconds * frames_per_second))
        n_beats, strength, interval, tempo = clip_rhythm(env, lo, hi, s)
        out[c] = (n_beats, strength, interval, tempo, *quantize_clip(n_beats, strength, interval, s))
    return out


def song_rhythm(path: str | os.PathLike, s: RhythmSettings) -> np.ndarray:
    """:func:`rhythm_features` of an audio file (or a video's audio track).

    Raises:
        AudioDecodeError: the file cannot be decoded.
        ValueError: the file is shorter than one clip (the message names it).
    """
    x = load_audio(path, s.sample_rate)
    try:
        return rhythm_features(x, s)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def rhythm_tokens(features: np.ndarray) -> np.ndarray:
    """``[n_clips, 3]`` int64 (beat count, strength, interval) classes of a feature array."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != len(COLUMNS):
        raise ValueError(f"rhythm features must be [n_clips, {len(COLUMNS)}], got shape {features.shape}")
    return features[:, list(TOKEN_COLUMNS)].astype(np.int64)
