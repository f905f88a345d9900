"""Hand-crafted music features with librosa: VM-NET's per-track vector and per-second log-mel statistics.

VM-NET's music features (``data/audio_feature_extractor/librosa_feature.py`` of
``csehong/VM-NET``), :func:`vmnet_track_features`:

1. The track is decoded at ``sample_rate`` and fitted to ``duration`` seconds: a longer
   track keeps its centre, a shorter one is zero-padded at its end.
2. Harmonic/percussive separation (``librosa.effects.hpss``).
3. For the harmonic part, then the percussive part, ``rows_per_source`` frame-wise rows
   (hop ``hop_length``), each passed through the log-amplitude of librosa 0.5
   (``10·log10(max(|S|, 1e-10) / max|S|)``, floored at ``top_db`` below its maximum), in
   this order::

       chroma_stft 12 | chroma_cens 12 | mel spectrogram n_mels | MFCC n_mfcc | ΔMFCC n_mfcc |
       Δ²MFCC n_mfcc | RMS 1 | spectral centroid 1 | bandwidth 1 | roll-off 1 |
       polynomial fit order 1: 2 | order 2: 3 | zero-crossing rate 1

   (the log-amplitude of MFCCs and their differences is taken of their absolute value, as
   in the original). With the defaults (96 mel bands, 20 MFCCs) that is 190 rows per
   source, 380 in all.
4. Per-track summary: the mean, variance and maximum over frames of every row, concatenated
   -> ``3 · 380 = 1140`` values (VM-NET's ``x_dim``), float32.

Where this differs from the original (also in ``docs/seed_models.md``): the mel spectrogram
is computed at the track's own sample rate (the original passes no ``sr``, so librosa used
22,050 Hz for its mel filters); ``chroma_cens`` takes ``cens_octaves`` (the default 7 octaves
above C1 do not fit under the Nyquist frequency of 8 kHz audio); ``rmse`` is today's
``rms``; the log-amplitude is re-implemented because ``librosa.logamplitude`` is gone.

Per-second log-mel statistics (:func:`persecond_logmel`), the music input of the 10-second
clip matcher (a stand-in for the AudioSet/VGGish embeddings the seed used, which need
TensorFlow weights): a VGGish-style log-mel spectrogram (``window_seconds`` windows every
``hop_seconds``, ``n_mels`` bands between ``fmin`` and ``fmax``, ``log(mel + log_offset)``
of the magnitude); row ``k`` is the mean and standard deviation over the frames whose
centre lies in second ``[k, k + 1)`` -> ``[seconds, 2 · n_mels]``.

Everything here is deterministic (no random state) and takes mono float32 arrays; the
file-level helpers raise :class:`vcmr.audio.io.AudioDecodeError` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from vcmr.audio.io import AudioDecodeError, load_audio

#: Rows that do not depend on the settings: chroma_stft, chroma_cens, RMS, centroid,
#: bandwidth, roll-off, poly order 1 (2 rows), poly order 2 (3 rows), zero-crossing rate.
FIXED_ROWS = 12 + 12 + 1 + 1 + 1 + 1 + 2 + 3 + 1
SUMMARIES = ("mean", "var", "max")
SOURCES = ("harmonic", "percussive")


@dataclasses.dataclass(frozen=True)
class VMNetAudioSettings:
    """Settings of :func:`vmnet_track_features` (VM-NET's values in ``config/retrieval/features.yaml``).

    Attributes:
        sample_rate: Hz the track is analysed at (VM-NET: 12,000).
        duration: seconds kept per track (VM-NET: 29.12).
        n_fft: FFT size of the spectral features (VM-NET: 512).
        hop_length: hop in samples of every frame-wise feature (VM-NET: 256).
        n_mels: mel bands of the mel-spectrogram rows (VM-NET: 96).
        n_mfcc: MFCCs (librosa's default 20).
        mfcc_n_fft: FFT size of the MFCCs (the original uses librosa's default, 2048).
        mfcc_n_mels: mel bands under the MFCCs (librosa's default, 128).
        cens_octaves: octaves of the constant-Q transform under chroma CENS (librosa: 7).
        top_db: floor of the log-amplitude below its maximum (librosa 0.5: 80).
    """

    sample_rate: int
    duration: float
    n_fft: int
    hop_length: int
    n_mels: int
    n_mfcc: int
    mfcc_n_fft: int
    mfcc_n_mels: int
    cens_octaves: int
    top_db: float

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> "VMNetAudioSettings":
        return _from_mapping(cls, args)

    @property
    def rows_per_source(self) -> int:
        return FIXED_ROWS + self.n_mels + 3 * self.n_mfcc

    @property
    def dim(self) -> int:
        """Length of the per-track vector: ``3 · 2 · rows_per_source``."""
        return len(SUMMARIES) * len(SOURCES) * self.rows_per_source

    @property
    def n_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))


@dataclasses.dataclass(frozen=True)
class LogMelSettings:
    """Settings of :func:`persecond_logmel` (VGGish's framing by default in the config).

    Attributes:
        sample_rate: Hz the audio is analysed at.
        window_seconds: STFT window length (VGGish: 0.025).
        hop_seconds: STFT hop (VGGish: 0.010).
        n_mels: mel bands (VGGish: 64).
        fmin: lowest mel frequency, Hz (VGGish: 125).
        fmax: highest mel frequency, Hz (VGGish: 7500; capped at the Nyquist frequency).
        log_offset: added before the log (VGGish: 0.01).
    """

    sample_rate: int
    window_seconds: float
    hop_seconds: float
    n_mels: int
    fmin: float
    fmax: float
    log_offset: float

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> "LogMelSettings":
        return _from_mapping(cls, args)

    @property
    def dim(self) -> int:
        """Values per second: mean and standard deviation of each band."""
        return 2 * self.n_mels


def _from_mapping(cls: type, args: Mapping[str, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(args) - set(names))
    missing = [n for n in names if n not in args]
    if unknown or missing:
        raise KeyError(f"{cls.__name__}: unknown key(s) {unknown}, missing key(s) {missing}")
    return cls(**{n: args[n] for n in names})


def _check_signal(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono signal [N], got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("signal contains NaN or infinite values")
    return y


def fit_duration(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut to its centre ``n`` samples, or zero-padded at its end to ``n`` (VM-NET's rule)."""
    y = _check_signal(y)
    if y.size < n:
        return np.concatenate([y, np.zeros(n - y.size, np.float32)])
    start = (y.size - n) // 2
    return y[start : start + n]


def log_amplitude(s: np.ndarray, top_db: float, amin: float = 1e-10) -> np.ndarray:
    """librosa 0.5's ``logamplitude(S, ref_power=np.max)``: ``10·log10(max(|S|, amin) / max(|S|))``,
    floored at ``top_db`` below the maximum."""
    mag = np.abs(np.asarray(s, np.float64))
    ref = max(float(mag.max()) if mag.size else amin, amin)
    out = 10.0 * np.log10(np.maximum(mag, amin)) - 10.0 * np.log10(ref)
    return np.maximum(out, out.max() - float(top_db)) if out.size else out


def _source_rows(y: np.ndarray, s: VMNetAudioSettings) -> List[np.ndarray]:
    """The frame-wise rows of one source (harmonic or percussive), before the log-amplitude."""
    import librosa

    sr, n_fft, hop = s.sample_rate, s.n_fft, s.hop_length
    mfcc = librosa.feature.mfcc(y=y, sr=sr, hop_length=hop, n_mfcc=s.n_mfcc, n_fft=s.mfcc_n_fft, n_mels=s.mfcc_n_mels)
    return [
        librosa.feature.chroma_stft(y=y, sr=sr, hop_length=hop, n_fft=n_fft),
        librosa.feature.chroma_cens(y=y, sr=sr, hop_length=hop, n_octaves=s.cens_octaves),
        librosa.feature.melspectrogram(y=y, sr=sr, hop_length=hop, n_fft=n_fft, n_mels=s.n_mels),
        mfcc,
        librosa.feature.delta(mfcc),
        librosa.feature.delta(mfcc, order=2),
        librosa.feature.rms(y=y, hop_length=hop, frame_length=n_fft),
        librosa.feature.spectral_centroid(y=y, sr=sr, hop_length=hop, n_fft=n_fft),
        librosa.feature.spectral_bandwidth(y=y, sr=sr, hop_length=hop, n_fft=n_fft),
        librosa.feature.spectral_rolloff(y=y, sr=sr, hop_length=hop, n_fft=n_fft),
        librosa.feature.poly_features(y=y, sr=sr, hop_length=hop, n_fft=n_fft, order=1),
        librosa.feature.poly_features(y=y, sr=sr, hop_length=hop, n_fft=n_fft, order=2),
        librosa.feature.zero_crossing_rate(y=y, hop_length=hop, frame_length=n_fft),
    ]


def vmnet_frame_features(y: np.ndarray, settings: VMNetAudioSettings) -> np.ndarray:
    """VM-NET's frame-wise log-amplitude rows of a signal already at ``settings.sample_rate``.

    Args:
        y: ``[N]`` float32 mono signal; it is fitted to ``settings.duration`` first.
        settings: the analysis settings.

    Returns:
        ``[2 · rows_per_source, T]`` float64: the harmonic rows, then the percussive rows
        (order in the module docstring), ``T = 1 + n_samples // hop_length`` frames.
    """
    import librosa

    y = fit_duration(y, settings.n_samples)
    harmonic, percussive = librosa.effects.hpss(y)
    rows: List[np.ndarray] = []
    with warnings.catch_warnings():
        # Narrow mel bands at low FFT resolution are empty (as in the original); their
        # rows sit at the log-amplitude floor.
        warnings.filterwarnings("ignore", message=".*[Ee]mpty filters.*")
        for source in (harmonic, percussive):
            rows.extend(log_amplitude(r, settings.top_db) for r in _source_rows(source, settings))
    frames = min(r.shape[1] for r in rows)
    out = np.vstack([r[:, :frames] for r in rows])
    expected = 2 * settings.rows_per_source
    if out.shape[0] != expected:  # pragma: no cover - guards the row bookkeeping
        raise RuntimeError(f"VM-NET features: {out.shape[0]} rows, expected {expected}")
    return out


def summarize(frames: np.ndarray) -> np.ndarray:
    """Per-row mean, variance and maximum over frames, concatenated -> ``[3 · rows]`` float32."""
    return np.concatenate([frames.mean(axis=1), frames.var(axis=1), frames.max(axis=1)]).astype(np.float32)


def vmnet_track_features(y: np.ndarray, settings: VMNetAudioSettings) -> np.ndarray:
    """VM-NET's per-track music vector of a signal at ``settings.sample_rate`` -> ``[settings.dim]`` float32."""
    return summarize(vmnet_frame_features(y, settings))


def persecond_logmel(y: np.ndarray, settings: LogMelSettings, n_seconds: int) -> np.ndarray:
    """Per-second log-mel statistics of a signal at ``settings.sample_rate``.

    Args:
        y: ``[N]`` float32 mono signal; second ``k`` is samples ``[k·sr, (k+1)·sr)``.
        settings: framing and mel settings.
        n_seconds: rows wanted; the signal is zero-padded at its end when shorter.

    Returns:
        ``[n_seconds, 2 · n_mels]`` float32: per second, the mean of each band over the
        frames centred in that second, then the standard deviations.
    """
    import librosa

    y = _check_signal(y)
    sr = settings.sample_rate
    if n_seconds < 1:
        raise ValueError(f"n_seconds must be >= 1, got {n_seconds}")
    y = np.pad(y, (0, max(0, n_seconds * sr - y.size)))[: n_seconds * sr]
    win = int(round(settings.window_seconds * sr))
    hop = int(round(settings.hop_seconds * sr))
    n_fft = 1 << max(0, (win - 1).bit_length())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ee]mpty filters.*")
        mel = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True, power=1.0,
            n_mels=settings.n_mels, fmin=settings.fmin, fmax=min(settings.fmax, sr / 2),
        )
    logmel = np.log(mel + settings.log_offset)  # [n_mels, T]
    centres = np.arange(logmel.shape[1]) * hop / sr
    rows = np.minimum(np.floor(centres + 1e-9).astype(np.int64), n_seconds - 1)
    out = np.zeros((n_seconds, settings.dim), np.float64)
    for k in range(n_seconds):
        sel = logmel[:, rows == k]
        out[k, : settings.n_mels] = sel.mean(axis=1)
        out[k, settings.n_mels :] = sel.std(axis=1)
    return out.astype(np.float32)


def load_concatenated(paths: Sequence[str | os.PathLike], sample_rate: int) -> Tuple[np.ndarray, List[int]]:
    """Decode files at ``sample_rate`` and join them end to end (a video's audio segments).

    Returns:
        ``([N] float32, [n_i samples of each file])``.

    Raises:
        AudioDecodeError: a file cannot be decoded (names it and why).
        ValueError: no paths.
    """
    if not paths:
        raise ValueError("no audio files given")
    parts = [load_audio(p, sample_rate) for p in paths]
    return np.concatenate(parts), [int(p.size) for p in parts]


def vmnet_track_features_file(paths: Sequence[str | os.PathLike], settings: VMNetAudioSettings) -> np.ndarray:
    """:func:`vmnet_track_features` of the files ``paths`` joined end to end.

    Raises:
        AudioDecodeError: naming the file that cannot be decoded.
    """
    y, _ = load_concatenated(paths, settings.sample_rate)
    return vmnet_track_features(y, settings)


def settings_dict(settings: Any) -> Dict[str, Any]:
    """The fields of a settings dataclass as a plain dict (recorded with cached features)."""
    return dataclasses.asdict(settings)


__all__ = [
    "AudioDecodeError",
    "LogMelSettings",
    "SOURCES",
    "SUMMARIES",
    "VMNetAudioSettings",
    "fit_duration",
    "load_concatenated",
    "log_amplitude",
    "persecond_logmel",
    "settings_dict",
    "summarize",
    "vmnet_frame_features",
    "vmnet_track_features",
    "vmnet_track_features_file",
]
