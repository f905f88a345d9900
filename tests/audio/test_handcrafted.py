"""VM-NET's hand-crafted music features and the per-second log-mel statistics: shapes, the
documented row layout, determinism and clear errors on unreadable audio."""

from __future__ import annotations

import numpy as np
import pytest

from vcmr.audio.handcrafted import (
    LogMelSettings,
    VMNetAudioSettings,
    fit_duration,
    load_concatenated,
    log_amplitude,
    persecond_logmel,
    summarize,
    vmnet_frame_features,
    vmnet_track_features,
    vmnet_track_features_file,
)
from vcmr.audio.io import AudioDecodeError, save_audio

SR = 8000
SETTINGS = VMNetAudioSettings(sample_rate=SR, duration=2.5, n_fft=512, hop_length=256, n_mels=32, n_mfcc=13,
                              mfcc_n_fft=1024, mfcc_n_mels=40, cens_octaves=6, top_db=80.0)
LOGMEL = LogMelSettings(sample_rate=SR, window_seconds=0.025, hop_seconds=0.010, n_mels=16, fmin=125.0,
                        fmax=7500.0, log_offset=0.01)


def tone(seconds: float, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_vmnet_defaults_give_vmnets_1140_values() -> None:
    s = VMNetAudioSettings(sample_rate=12000, duration=29.12, n_fft=512, hop_length=256, n_mels=96, n_mfcc=20,
                           mfcc_n_fft=2048, mfcc_n_mels=128, cens_octaves=7, top_db=80.0)
    assert s.rows_per_source == 190 and s.dim == 1140  # VM-NET's x_dim


def test_vmnet_track_features_shape_layout_and_determinism() -> None:
    y = tone(2.2)
    frames = vmnet_frame_features(y, SETTINGS)
    rows = SETTINGS.rows_per_source
    assert frames.shape == (2 * rows, 1 + SETTINGS.n_samples // SETTINGS.hop_length)
    assert np.all(frames <= 1e-9) and np.all(frames >= -SETTINGS.top_db - 1e-9)  # dB below each row's max
    feats = vmnet_track_features(y, SETTINGS)
    assert feats.shape == (SETTINGS.dim,) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.allclose(feats, summarize(frames))
    n = 2 * rows
    assert np.allclose(feats[:n], frames.mean(axis=1)) and np.allclose(feats[n : 2 * n], frames.var(axis=1))
    assert np.allclose(feats[2 * n :], frames.max(axis=1))
    assert np.array_equal(feats, vmnet_track_features(y.copy(), SETTINGS))
    assert not np.allclose(feats, vmnet_track_features(tone(2.2, freq=660.0), SETTINGS))


def test_fit_duration_keeps_the_centre_or_pads_the_end() -> None:
    y = np.arange(10, dtype=np.float32) + 1
    assert np.array_equal(fit_duration(y, 4), np.array([4, 5, 6, 7], np.float32))
    assert np.array_equal(fit_duration(y[:3], 5), np.array([1, 2, 3, 0, 0], np.float32))
    with pytest.raises(ValueError, match="mono"):
        fit_duration(np.zeros((2, 3), np.float32), 4)


def test_log_amplitude_matches_librosa_05_formula() -> None:
    s = np.array([[1e-12, -0.5, 2.0], [4.0, 0.0, 1e-3]])
    ref = np.zeros_like(s)
    for i in range(2):
        for j in range(3):
            ref[i, j] = 10 * np.log10(max(abs(s[i, j]), 1e-10)) - 10 * np.log10(4.0)
    ref = np.maximum(ref, ref.max() - 30.0)
    assert np.allclose(log_amplitude(s, top_db=30.0), ref)


def test_persecond_logmel_rows_follow_the_seconds() -> None:
    y = np.concatenate([np.zeros(SR, np.float32), tone(1.0), np.zeros(SR // 2, np.float32)])
    out = persecond_logmel(y, LOGMEL, 4)  # 2.5 s of signal, padded to 4 s
    assert out.shape == (4, LOGMEL.dim) and out.dtype == np.float32
    peak = out[:, : LOGMEL.n_mels].max(axis=1)  # the loudest band's mean log-mel
    assert peak[1] > peak[0] + 3 and peak[1] > peak[3] + 3  # only second 1 is loud
    assert peak[0] < np.log(LOGMEL.log_offset) + 1  # silence sits near log(log_offset)
    assert np.array_equal(out, persecond_logmel(y, LOGMEL, 4))
    with pytest.raises(ValueError, match="n_seconds"):
        persecond_logmel(y, LOGMEL, 0)


def test_file_helpers_decode_join_and_name_unreadable_files(tmp_path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    save_audio(a, tone(0.5), SR)
    save_audio(b, tone(0.7, 330.0), SR)
    y, sizes = load_concatenated([a, b], SR)
    assert sizes == [4000, 5600] and y.size == 9600
    assert np.array_equal(vmnet_track_features_file([a, b], SETTINGS), vmnet_track_features(y, SETTINGS))
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        vmnet_track_features_file([a, bad], SETTINGS)


def test_settings_from_mapping_names_bad_keys() -> None:
    with pytest.raises(KeyError, match="missing key\\(s\\) \\['log_offset'\\]"):
        LogMelSettings.from_mapping({k: v for k, v in vars(LOGMEL).items() if k != "log_offset"})
    with pytest.raises(KeyError, match="unknown key\\(s\\) \\['nfft'\\]"):
        LogMelSettings.from_mapping({**vars(LOGMEL), "nfft": 3})
