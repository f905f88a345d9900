"""Pure DSP functions: each does what it says, per example, against naive references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from vcmr.audio import dsp as D

SR = 16000


def sine(freq_hz: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq_hz * t)).float().view(1, 1, -1)


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.double().pow(2).mean(dim=-1).sqrt().view(-1)


def peak_hz(x: torch.Tensor, sr: int = SR) -> float:
    """Frequency of the largest FFT peak of a 1-D signal (Hann-windowed, zero-padded 4x)."""
    x = x.reshape(-1).double()
    n = 4 * x.numel()
    spec = torch.fft.rfft(x * torch.hann_window(x.numel(), dtype=torch.float64), n=n).abs()
    return float(torch.fft.rfftfreq(n, 1.0 / sr)[spec.argmax()])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_polarity_flips_sign():
    x = torch.randn(3, 1, 100)
    assert torch.equal(D.polarity_inversion(x), -x)


def test_gain_changes_rms_by_exact_db():
    x = torch.randn(4, 1, 2000)
    db = torch.tensor([-20.0, -6.0, 0.0, 3.5])
    y = D.gain(x, db)
    measured = 20 * torch.log10(rms(y) / rms(x))
    torch.testing.assert_close(measured, db.double(), atol=1e-4, rtol=0)


def test_noise_gives_drawn_snr():
    x = sine(440.0, 1.0).repeat(3, 1, 1)
    snr = torch.tensor([10.0, 20.0, 40.0])
    noise = torch.randn(x.shape, generator=gen(1))
    y = D.add_noise(x, snr, noise)
    measured = 20 * torch.log10(rms(x) / rms(y - x))
    torch.testing.assert_close(measured, snr.double(), atol=0.2, rtol=0)


@pytest.mark.parametrize("kind", ["lowpass", "highpass"])
def test_filters_keep_passband_and_attenuate_stopband(kind):
    low, high = sine(200.0, 1.0), sine(5000.0, 1.0)
    fn = getattr(D, kind)
    y_low, y_high = fn(low, 1000.0, SR, 2), fn(high, 1000.0, SR, 2)
    mid = slice(2000, -2000)  # away from the edges
    ratio_low = rms(y_low[..., mid]) / rms(low[..., mid])
    ratio_high = rms(y_high[..., mid]) / rms(high[..., mid])
    kept, cut = (ratio_low, ratio_high) if kind == "lowpass" else (ratio_high, ratio_low)
    assert kept.item() > 0.95
    # Order-2 Butterworth, a factor 5 beyond the cut-off: 1 / sqrt(1 + 5**4) = -28 dB.
    assert 20 * math.log10(cut.item()) < -25
    assert y_low.shape == low.shape


def test_filter_matches_butterworth_response_at_cutoff():
    x = sine(1000.0, 1.0)
    for hp in (False, True):
        y = D.frequency_filter(x, 1000.0, SR, 4, hp)
        gain_db = 20 * math.log10((rms(y[..., 2000:-2000]) / rms(x[..., 2000:-2000])).item())
        assert gain_db == pytest.approx(-3.01, abs=0.1)


def test_filter_per_example_cutoffs_and_modes():
    x = sine(2000.0, 1.0).repeat(3, 1, 1)
    y = D.frequency_filter(x, torch.tensor([500.0, 8000.0 - 1, 500.0]), SR, 2, torch.tensor([False, False, True]))
    r = (rms(y[..., 2000:-2000]) / rms(x[..., 2000:-2000])).tolist()
    assert r[0] < 0.1 and r[1] > 0.95 and r[2] > 0.95


def test_filter_padding_gives_linear_convolution():
    # Reference: the same response applied with far more zero padding, in float64.
    x = torch.randn(3, 1, 3000, generator=gen(11))
    cutoff = torch.tensor([200.0, 1000.0, 3000.0])
    hp = torch.tensor([True, False, True])
    y = D.frequency_filter(x, cutoff, SR, 2, hp)
    n = 16 * 3000
    spec = np.fft.rfft(x.double().numpy(), n=n)
    h = D.butterworth_response(torch.fft.rfftfreq(n, 1.0 / SR, dtype=torch.float64), cutoff.double(), 2, hp)
    ref = np.fft.irfft(spec * h.numpy()[:, None, :], n=n)[..., :3000]
    np.testing.assert_allclose(y.numpy(), ref, atol=2e-5)


def test_delay_adds_delayed_copy_at_offset():
    x = torch.zeros(2, 1, 1000)
    x[:, 0, 10] = 1.0
    y = D.delay(x, torch.tensor([100, 250]), 0.5)
    for b, d in enumerate([100, 250]):
        nz = torch.nonzero(y[b, 0]).view(-1).tolist()
        assert nz == [10, 10 + d]
        assert y[b, 0, 10 + d].item() == pytest.approx(0.5)
    z = torch.randn(1, 1, 500)
    expected = z.clone()
    expected[..., 40:] += 0.3 * z[..., :-40]
    torch.testing.assert_close(D.delay(z, 40, 0.3), expected)


@pytest.mark.parametrize("semitones", [-7.0, -3.0, 2.0, 5.0])
def test_pitch_shift_moves_sine_peak(semitones):
    x = sine(440.0, 2.0)
    y = D.pitch_shift(x, torch.tensor([semitones]), 1024, 256)
    assert y.shape == x.shape
    target = 440.0 * 2 ** (semitones / 12)
    assert peak_hz(y[..., 4000:-4000]) == pytest.approx(target, rel=0.004)
    # Phase-locked vocoder: a steady sine keeps its level.
    assert (rms(y[..., 4000:-4000]) / rms(x[..., 4000:-4000])).item() == pytest.approx(1.0, abs=0.03)


def test_pitch_shift_keeps_tempo_and_batches_per_value():
    t = torch.arange(2 * SR) / SR
    bursts = (torch.sin(2 * math.pi * 600 * t) * ((t * 4) % 1 < 0.3)).view(1, 1, -1)
    x = torch.cat([bursts, bursts, sine(300.0, 2.0)])
    semis = torch.tensor([5.0, 0.0, -4.0])
    y = D.pitch_shift(x, semis, 1024, 256)

    def envelope(z):
        return z.abs().reshape(-1, 400).mean(-1)

    # The bursts stay where they were (a plain resample would move them).
    corr = torch.corrcoef(torch.stack([envelope(x[0]), envelope(y[0])]))[0, 1]
    assert corr > 0.9
    assert torch.equal(y[1], x[1])  # 0 semitones: untouched
    assert peak_hz(y[2, ..., 4000:-4000]) == pytest.approx(300.0 * 2 ** (-4 / 12), rel=0.004)
    # Same result as shifting the example alone.
    alone = D.pitch_shift(x[2:3], -4.0, 1024, 256)
    torch.testing.assert_close(y[2:3], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("semitones", [-7.0, -2.0, 3.0, 7.0])
def test_resample_pitch_shift_moves_peak_and_keeps_length(semitones):
    x = sine(440.0, 2.0)
    y = D.pitch_shift(x, torch.tensor([semitones]), 1024, 256, method="resample")
    assert y.shape == x.shape
    target = 440.0 * 2 ** (semitones / 12)
    assert peak_hz(y[..., 4000:-4000]) == pytest.approx(target, rel=0.004)
    assert (rms(y[..., 4000:-4000]) / rms(x[..., 4000:-4000])).item() == pytest.approx(1.0, abs=0.03)


def test_resample_pitch_shift_changes_tempo_and_mirrors_end():
    # A click train every 0.25 s: the playback-rate change moves the clicks by the factor a.
    x = torch.zeros(1, 1, 2 * SR)
    x[..., :: SR // 4] = 1.0
    a = 2 ** (4 / 12)
    y = D.pitch_shift(x, 4.0, 1024, 256, method="resample")
    assert y.shape == x.shape
    peaks = torch.nonzero(y[0, 0] > 0.5).view(-1).float()
    assert peaks[1].item() == pytest.approx(SR / 4 / a, abs=2)
    # An upward shift reads past the clip's end, which is mirrored: no silent tail.
    z = D.pitch_shift(sine(300.0, 1.0), 7.0, 1024, 256, method="resample")
    assert rms(z[..., -2000:]).item() > 0.3
    assert torch.equal(D.pitch_shift(x, 0.0, 1024, 256, method="resample"), x)
    with pytest.raises(ValueError, match="method"):
        D.pitch_shift(x, 1.0, 1024, 256, method="sox")


def test_resample_pitch_shift_matches_naive_reference():
    # Reference: band-limited interpolation by numpy FFT on the exact span, float64.
    x = torch.randn(2, 1, 3000, generator=gen(12))
    y = D.pitch_shift(x, torch.tensor([-3.0, -3.0]), 256, 64, method="resample")
    m = D.next_fast_len(3000)
    span = D.nearest_smooth_len(m * 2 ** (-3 / 12))
    spec = np.fft.rfft(x[..., :span].double().numpy(), axis=-1)
    ref = np.fft.irfft(np.concatenate([spec, np.zeros((2, 1, m // 2 + 1 - spec.shape[-1]))], -1), n=m) * m / span
    np.testing.assert_allclose(y.numpy(), ref[..., :3000], atol=1e-4)


def test_istft_matches_torch():
    x = torch.randn(3, 5000, generator=gen(13))
    for n_fft, hop in ((1024, 256), (512, 128), (512, 200)):
        w = torch.hann_window(n_fft)
        spec = torch.stft(x, n_fft, hop, window=w, center=True, pad_mode="constant", return_complex=True)
        for length in (5000, 5300, 700):
            with warnings.catch_warnings():  # torch warns when it pads the tail with zeros
                warnings.simplefilter("ignore")
                ref = torch.istft(spec, n_fft, hop, window=w, center=True, length=length)
            torch.testing.assert_close(D.istft(spec, n_fft, hop, length), ref, atol=1e-5, rtol=0)


def test_next_fast_len_sizes():
    for n in (1, 300, 3001, 98415, 114414):
        m = D.next_fast_len(n)
        assert m >= n and m % 16 == 0 and m < 1.05 * n + 16
        k = m // 16
        for r in (2, 3, 5):
            while k % r == 0:
                k //= r
        assert k == 1


def test_fft_resample_band_limited():
    x = sine(1000.0, 1.0)
    y = D.fft_resample(x, 8000)  # 16 kHz -> 8 kHz: same tone, half the samples
    assert y.shape[-1] == 8000
    assert peak_hz(y, sr=8000) == pytest.approx(1000.0, abs=2)
    assert rms(y).item() == pytest.approx(rms(x).item(), rel=1e-3)


def test_synthetic_rir_decays_60db_at_rt60():
    rt60 = torch.tensor([0.3, 0.8])
    h = D.synthetic_rir(rt60, SR, SR, gen(0))
    assert h.shape == (2, 1, SR)
    torch.testing.assert_close(h.pow(2).sum(-1).view(-1), torch.ones(2), atol=1e-5, rtol=0)
    # Fit the decay of the energy in 20 ms windows: the slope gives the RT60.
    win = 320
    for b, r in enumerate(rt60.tolist()):
        n_win = int(r * SR) // win
        energy_db = 10 * torch.log10(h[b, 0, : n_win * win].double().pow(2).view(n_win, win).mean(-1))
        t = (torch.arange(n_win, dtype=torch.float64) + 0.5) * win / SR
        slope = torch.linalg.lstsq(torch.stack([t, torch.ones_like(t)], 1), energy_db.view(-1, 1)).solution[0, 0]
        assert -60.0 / slope.item() == pytest.approx(r, rel=0.1)


def test_fft_convolve_matches_numpy():
    x = torch.randn(2, 1, 300, generator=gen(2))
    h = torch.randn(2, 1, 50, generator=gen(3))
    y = D.fft_convolve(x, h)
    for b in range(2):
        ref = np.convolve(x[b, 0].numpy(), h[b, 0].numpy())[:300]
        np.testing.assert_allclose(y[b, 0].numpy(), ref, atol=1e-4)


def test_reverb_lengthens_decay():
    x = torch.zeros(1, 1, SR)
    x[..., 100] = 1.0
    h = D.synthetic_rir(torch.tensor([0.5]), 8000, SR, gen(4))
    y = D.reverb(x, h, 0.5)
    assert y.shape == x.shape
    assert y[0, 0, :100].abs().max() < 1e-6  # causal
    tail = y[0, 0, 100 + 2000 : 100 + 4000]
    assert tail.abs().max() > 1e-3  # energy remains 125 ms after the click
    torch.testing.assert_close(y[0, 0, 100 + 1 : 100 + 8000], 0.5 * h[0, 0, 1:8000], atol=1e-5, rtol=0)


def test_center_and_random_crop():
    x = torch.arange(20.0).view(2, 1, 10)
    torch.testing.assert_close(D.center_crop(x, 4), x[..., 3:7])
    y = D.random_crop(x.repeat(16, 1, 1), 4, gen(0))
    assert y.shape == (32, 1, 4)
    # Each window is contiguous and the offsets differ between examples.
    assert torch.all(y[..., 1:] - y[..., :-1] == 1)
    assert len({float(v) for v in y[::2, 0, 0]}) > 1
    with pytest.raises(ValueError, match="crop_length"):
        D.center_crop(x, 11)
