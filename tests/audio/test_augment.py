"""Batched augmentations: each transform does what it says, per example, reproducibly."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vcmr.audio import augment as A
from vcmr.config import ConfigError, load_config

SR = 16000
CONFIG = Path(__file__).resolve().parents[2] / "config" / "augment" / "clmr.yaml"


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


@pytest.fixture(scope="module")
def cfg_dict() -> dict:
    return OmegaConf.to_container(load_config(CONFIG).augment)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ functional transforms


def test_polarity_flips_sign():
    x = torch.randn(3, 1, 100)
    assert torch.equal(A.polarity_inversion(x), -x)


def test_gain_changes_rms_by_exact_db():
    x = torch.randn(4, 1, 2000)
    db = torch.tensor([-20.0, -6.0, 0.0, 3.5])
    y = A.gain(x, db)
    measured = 20 * torch.log10(rms(y) / rms(x))
    torch.testing.assert_close(measured, db.double(), atol=1e-4, rtol=0)


def test_noise_gives_drawn_snr():
    x = sine(440.0, 1.0).repeat(3, 1, 1)
    snr = torch.tensor([10.0, 20.0, 40.0])
    noise = torch.randn(x.shape, generator=gen(1))
    y = A.add_noise(x, snr, noise)
    measured = 20 * torch.log10(rms(x) / rms(y - x))
    torch.testing.assert_close(measured, snr.double(), atol=0.2, rtol=0)


@pytest.mark.parametrize("kind", ["lowpass", "highpass"])
def test_filters_keep_passband_and_attenuate_stopband(kind):
    low, high = sine(200.0, 1.0), sine(5000.0, 1.0)
    fn = getattr(A, kind)
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
        y = A.frequency_filter(x, 1000.0, SR, 4, hp)
        gain_db = 20 * math.log10((rms(y[..., 2000:-2000]) / rms(x[..., 2000:-2000])).item())
        assert gain_db == pytest.approx(-3.01, abs=0.1)


def test_filter_per_example_cutoffs_and_modes():
    x = sine(2000.0, 1.0).repeat(3, 1, 1)
    y = A.frequency_filter(x, torch.tensor([500.0, 8000.0 - 1, 500.0]), SR, 2, torch.tensor([False, False, True]))
    r = (rms(y[..., 2000:-2000]) / rms(x[..., 2000:-2000])).tolist()
    assert r[0] < 0.1 and r[1] > 0.95 and r[2] > 0.95


def test_filter_padding_gives_linear_convolution():
    # Reference: the same response applied with far more zero padding, in float64.
    x = torch.randn(3, 1, 3000, generator=gen(11))
    cutoff = torch.tensor([200.0, 1000.0, 3000.0])
    hp = torch.tensor([True, False, True])
    y = A.frequency_filter(x, cutoff, SR, 2, hp)
    n = 16 * 3000
    spec = np.fft.rfft(x.double().numpy(), n=n)
    h = A.butterworth_response(torch.fft.rfftfreq(n, 1.0 / SR, dtype=torch.float64), cutoff.double(), 2, hp)
    ref = np.fft.irfft(spec * h.numpy()[:, None, :], n=n)[..., :3000]
    np.testing.assert_allclose(y.numpy(), ref, atol=2e-5)


def test_delay_adds_delayed_copy_at_offset():
    x = torch.zeros(2, 1, 1000)
    x[:, 0, 10] = 1.0
    y = A.delay(x, torch.tensor([100, 250]), 0.5)
    for b, d in enumerate([100, 250]):
        nz = torch.nonzero(y[b, 0]).view(-1).tolist()
        assert nz == [10, 10 + d]
        assert y[b, 0, 10 + d].item() == pytest.approx(0.5)
    z = torch.randn(1, 1, 500)
    expected = z.clone()
    expected[..., 40:] += 0.3 * z[..., :-40]
    torch.testing.assert_close(A.delay(z, 40, 0.3), expected)


@pytest.mark.parametrize("semitones", [-7.0, -3.0, 2.0, 5.0])
def test_pitch_shift_moves_sine_peak(semitones):
    x = sine(440.0, 2.0)
    y = A.pitch_shift(x, torch.tensor([semitones]), 1024, 256)
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
    y = A.pitch_shift(x, semis, 1024, 256)

    def envelope(z):
        return z.abs().reshape(-1, 400).mean(-1)

    # The bursts stay where they were (a plain resample would move them).
    corr = torch.corrcoef(torch.stack([envelope(x[0]), envelope(y[0])]))[0, 1]
    assert corr > 0.9
    assert torch.equal(y[1], x[1])  # 0 semitones: untouched
    assert peak_hz(y[2, ..., 4000:-4000]) == pytest.approx(300.0 * 2 ** (-4 / 12), rel=0.004)
    # Same result as shifting the example alone.
    alone = A.pitch_shift(x[2:3], -4.0, 1024, 256)
    torch.testing.assert_close(y[2:3], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("semitones", [-7.0, -2.0, 3.0, 7.0])
def test_resample_pitch_shift_moves_peak_and_keeps_length(semitones):
    x = sine(440.0, 2.0)
    y = A.pitch_shift(x, torch.tensor([semitones]), 1024, 256, method="resample")
    assert y.shape == x.shape
    target = 440.0 * 2 ** (semitones / 12)
    assert peak_hz(y[..., 4000:-4000]) == pytest.approx(target, rel=0.004)
    assert (rms(y[..., 4000:-4000]) / rms(x[..., 4000:-4000])).item() == pytest.approx(1.0, abs=0.03)


def test_resample_pitch_shift_changes_tempo_and_mirrors_end():
    # A click train every 0.25 s: the playback-rate change moves the clicks by the factor a.
    x = torch.zeros(1, 1, 2 * SR)
    x[..., :: SR // 4] = 1.0
    a = 2 ** (4 / 12)
    y = A.pitch_shift(x, 4.0, 1024, 256, method="resample")
    assert y.shape == x.shape
    peaks = torch.nonzero(y[0, 0] > 0.5).view(-1).float()
    assert peaks[1].item() == pytest.approx(SR / 4 / a, abs=2)
    # An upward shift reads past the clip's end, which is mirrored: no silent tail.
    z = A.pitch_shift(sine(300.0, 1.0), 7.0, 1024, 256, method="resample")
    assert rms(z[..., -2000:]).item() > 0.3
    assert torch.equal(A.pitch_shift(x, 0.0, 1024, 256, method="resample"), x)
    with pytest.raises(ValueError, match="method"):
        A.pitch_shift(x, 1.0, 1024, 256, method="sox")


def test_resample_pitch_shift_matches_naive_reference():
    # Reference: band-limited interpolation by numpy FFT on the exact span, float64.
    x = torch.randn(2, 1, 3000, generator=gen(12))
    y = A.pitch_shift(x, torch.tensor([-3.0, -3.0]), 256, 64, method="resample")
    m = A.next_fast_len(3000)
    span = A.nearest_smooth_len(m * 2 ** (-3 / 12))
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
            torch.testing.assert_close(A.istft(spec, n_fft, hop, length), ref, atol=1e-5, rtol=0)


def test_next_fast_len_sizes():
    for n in (1, 300, 3001, 98415, 114414):
        m = A.next_fast_len(n)
        assert m >= n and m % 16 == 0 and m < 1.05 * n + 16
        k = m // 16
        for r in (2, 3, 5):
            while k % r == 0:
                k //= r
        assert k == 1


def test_fft_resample_band_limited():
    x = sine(1000.0, 1.0)
    y = A.fft_resample(x, 8000)  # 16 kHz -> 8 kHz: same tone, half the samples
    assert y.shape[-1] == 8000
    assert peak_hz(y, sr=8000) == pytest.approx(1000.0, abs=2)
    assert rms(y).item() == pytest.approx(rms(x).item(), rel=1e-3)


def test_synthetic_rir_decays_60db_at_rt60():
    rt60 = torch.tensor([0.3, 0.8])
    h = A.synthetic_rir(rt60, SR, SR, gen(0))
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
    y = A.fft_convolve(x, h)
    for b in range(2):
        ref = np.convolve(x[b, 0].numpy(), h[b, 0].numpy())[:300]
        np.testing.assert_allclose(y[b, 0].numpy(), ref, atol=1e-4)


def test_reverb_lengthens_decay():
    x = torch.zeros(1, 1, SR)
    x[..., 100] = 1.0
    h = A.synthetic_rir(torch.tensor([0.5]), 8000, SR, gen(4))
    y = A.reverb(x, h, 0.5)
    assert y.shape == x.shape
    assert y[0, 0, :100].abs().max() < 1e-6  # causal
    tail = y[0, 0, 100 + 2000 : 100 + 4000]
    assert tail.abs().max() > 1e-3  # energy remains 125 ms after the click
    torch.testing.assert_close(y[0, 0, 100 + 1 : 100 + 8000], 0.5 * h[0, 0, 1:8000], atol=1e-5, rtol=0)


def test_center_and_random_crop():
    x = torch.arange(20.0).view(2, 1, 10)
    torch.testing.assert_close(A.center_crop(x, 4), x[..., 3:7])
    y = A.random_crop(x.repeat(16, 1, 1), 4, gen(0))
    assert y.shape == (32, 1, 4)
    # Each window is contiguous and the offsets differ between examples.
    assert torch.all(y[..., 1:] - y[..., :-1] == 1)
    assert len({float(v) for v in y[::2, 0, 0]}) > 1
    with pytest.raises(ValueError, match="crop_length"):
        A.center_crop(x, 11)


# ------------------------------------------------------------------ random modules


def test_probability_zero_and_one():
    x = torch.randn(16, 1, 4000, generator=gen(5))
    never = A.RandomGain(0.0, -10.0, -1.0)
    assert torch.equal(never(x, gen(0)), x)
    always = A.RandomPolarity(1.0)
    assert torch.equal(always(x, gen(0)), -x)
    y, params = A.RandomGain(1.0, -10.0, -1.0).forward_with_params(x, gen(0))
    assert params["apply"].all()
    torch.testing.assert_close(20 * torch.log10(rms(y) / rms(x)), params["db"], atol=1e-4, rtol=0)


def test_partial_probability_touches_only_selected_examples():
    x = torch.randn(64, 1, 2000, generator=gen(6))
    y, params = A.RandomFilter(0.5, SR, 0.5, 2, 2200, 4000, 200, 1200).forward_with_params(x, gen(1))
    mask = params["apply"]
    assert 0 < mask.sum() < 64
    assert torch.equal(y[~mask], x[~mask])
    assert not torch.isclose(y[mask], x[mask]).all(dim=-1).any()
    cut = params["cutoff_hz"]
    hp = params["highpass"]
    assert ((cut[hp] >= 200) & (cut[hp] <= 1200)).all() and ((cut[~hp] >= 2200) & (cut[~hp] <= 4000)).all()


def test_per_example_independent_draws():
    x = sine(440.0, 0.5).repeat(8, 1, 1)
    y, params = A.RandomGain(1.0, -20.0, -1.0).forward_with_params(x, gen(0))
    assert len(set(params["db"].tolist())) == 8
    assert len({round(v, 6) for v in rms(y).tolist()}) == 8


def test_random_delay_and_pitch_draw_from_grids():
    d = A.RandomDelay(1.0, SR, 200, 500, 50, 0.5)
    assert d.delays_ms == [200.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0]
    _, params = d.forward_with_params(torch.zeros(32, 1, SR), gen(0))
    assert set(params["delay_ms"].tolist()) <= set(d.delays_ms)
    torch.testing.assert_close(params["delay_samples"], (params["delay_ms"] * 16).long())
    ps = A.RandomPitchShift(1.0, -2, 2, 1, 256, 64)
    assert ps.semitones == [-2.0, -1.0, 1.0, 2.0]


def test_scaling_transforms_match_functional_and_leave_others_bitwise():
    x = torch.randn(16, 1, 1000, generator=gen(14))
    y, params = A.RandomGain(0.5, -20.0, -1.0).forward_with_params(x, gen(2))
    m = params["apply"]
    assert 0 < m.sum() < 16
    assert torch.equal(y[~m], x[~m])
    assert torch.equal(y[m], A.gain(x[m], params["db"][m]))
    z, params = A.RandomPolarity(0.5).forward_with_params(x, gen(3))
    m = params["apply"]
    assert torch.equal(z[m], -x[m]) and torch.equal(z[~m], x[~m])


def test_inplace_matches_out_of_place_and_chain_keeps_input():
    x = torch.randn(8, 1, 9000, generator=gen(15))
    for t in (A.RandomDelay(0.5, SR, 10, 50, 10, 0.5), A.RandomFilter(0.5, SR, 0.5, 2, 2200, 4000, 200, 1200)):
        ref, _ = t.forward_with_params(x, gen(4))
        buf = x.clone()
        out, _ = t.forward_with_params(buf, gen(4), inplace=True)
        assert torch.equal(out, ref) and out.data_ptr() == buf.data_ptr()
    cfg = OmegaConf.to_container(load_config(CONFIG).augment)
    chain = A.build_augmentation(cfg, SR, 9000)  # crop length == input length: no copy by the crop
    before = x.clone()
    chain(x, gen(5))
    assert torch.equal(x, before)


def test_random_reverb_uses_drawn_parameters():
    x = torch.zeros(4, 1, 8000)
    x[..., 0] = 1.0
    t = A.RandomReverb(1.0, SR, 0.2, 0.4, 1.0, 1.0, 0.5)
    y, params = t.forward_with_params(x, gen(0))
    assert ((params["rt60_s"] >= 0.2) & (params["rt60_s"] <= 0.4)).all()
    # wet = 1: the output is the (unit-energy) impulse response itself.
    torch.testing.assert_close(y.pow(2).sum(-1).view(-1), torch.ones(4), atol=1e-4, rtol=0)


# ------------------------------------------------------------------ chain + config


@pytest.mark.parametrize("method", ["phase_vocoder", "resample"])
def test_chain_shapes_and_reproducibility(cfg_dict, method):
    cfg = copy.deepcopy(cfg_dict)
    cfg["pitch"]["method"] = method
    chain = A.build_augmentation(cfg, SR, 8192)
    assert chain.transforms["pitch"].method == method
    assert list(chain.transforms) == ["polarity", "noise", "gain", "filter", "delay", "pitch", "reverb"]
    x = torch.randn(6, 1, 12000, generator=gen(7))
    y1, y2 = chain(x, gen(42)), chain(x, gen(42))
    assert y1.shape == (6, 1, 8192) and y1.dtype == torch.float32
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, chain(x, gen(43)))
    assert torch.isfinite(y1).all()


def test_chain_probabilities_from_config(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 16384)
    expected = {"polarity": 0.8, "noise": 0.01, "gain": 0.3, "filter": 0.8, "delay": 0.3, "pitch": 0.6, "reverb": 0.6}
    assert {k: t.p for k, t in chain.transforms.items()} == expected
    # The application draws follow p (shared mechanism of every transform).
    for p in (0.01, 0.3, 0.8):
        _, params = A.RandomGain(p, -1.0, -1.0).forward_with_params(torch.zeros(20000, 1, 8), gen(3))
        assert params["apply"].float().mean().item() == pytest.approx(p, abs=0.015)


def test_chain_applies_every_transform_when_p_is_one(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    for name in ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb"):
        cfg[name]["p"] = 1.0
    chain = A.build_augmentation(cfg, SR, 8192)
    x = torch.randn(4, 1, 8192, generator=gen(8))
    y, drawn = chain.forward_with_params(x, gen(0))
    assert all(d["apply"].all() for d in drawn.values())
    assert y.shape == x.shape


def test_disabled_chain_only_crops(cfg_dict):
    cfg = dict(cfg_dict, enabled=False)
    chain = A.build_augmentation(cfg, SR, 100)
    assert len(chain.transforms) == 0
    x = torch.arange(3000.0).view(3, 1, 1000)
    y = chain(x, gen(0))
    assert y.shape == (3, 1, 100)
    assert torch.all(y[..., 1:] - y[..., :-1] == 1)


def test_zero_probability_transforms_are_left_out(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    cfg["pitch"]["p"] = 0.0
    cfg["noise"]["p"] = 0.0
    chain = A.build_augmentation(cfg, SR, 16384)
    assert list(chain.transforms) == ["polarity", "gain", "filter", "delay", "reverb"]


def test_build_accepts_wrapped_config_and_dictconfig():
    root = load_config(CONFIG)
    assert len(A.build_augmentation(root, SR, 16384).transforms) == 7
    assert len(A.build_augmentation(root.augment, SR, 16384).transforms) == 7


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("noise.p", 1.5, r"augment\.noise\.p"),
        ("gain.p", -0.1, r"augment\.gain\.p"),
        ("gain.min_db", 5.0, r"augment\.gain\.min_db"),
        ("filter.lowpass_max_hz", 9000.0, r"augment\.filter\.lowpass_max_hz"),
        ("pitch.hop_length", 0, r"augment\.pitch\.hop_length"),
        ("reverb.max_wet", 1.5, r"augment\.reverb\.max_wet"),
        ("delay.max_ms", 1500.0, r"augment\.delay\.max_ms"),
        ("pitch.p", "often", r"pitch\.p"),
        ("pitch.method", "sox", r"augment\.pitch\.method"),
    ],
)
def test_bad_config_names_the_key(cfg_dict, key, value, match):
    cfg = copy.deepcopy(cfg_dict)
    section, field = key.split(".")
    cfg[section][field] = value
    with pytest.raises(ConfigError, match=match):
        A.build_augmentation(cfg, SR, 16384)


def test_missing_and_unknown_keys(cfg_dict):
    cfg = copy.deepcopy(cfg_dict)
    del cfg["reverb"]["ir_length_s"]
    with pytest.raises(ConfigError, match=r"augment\.reverb\.ir_length_s"):
        A.build_augmentation(cfg, SR, 16384)
    cfg = copy.deepcopy(cfg_dict)
    cfg["gain"]["max_gain"] = 1.0
    with pytest.raises(ConfigError, match="max_gain"):
        A.build_augmentation(cfg, SR, 16384)


def test_crop_longer_than_input_raises(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 8192)
    with pytest.raises(ValueError, match="crop_length"):
        chain(torch.zeros(2, 1, 8000))
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        chain(torch.zeros(2, 8192))
    with pytest.raises(ConfigError, match="crop_length"):
        A.build_augmentation(cfg_dict, SR, 0)


def test_yaml_has_single_top_level_key():
    raw = OmegaConf.load(CONFIG)
    assert list(raw.keys()) == ["augment"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_chain_on_cuda_matches_cpu(cfg_dict):
    chain = A.build_augmentation(cfg_dict, SR, 8192)
    x = torch.randn(8, 1, 10000, generator=gen(9))
    y_cpu = chain(x, gen(5))
    y_gpu = chain(x.cuda(), gen(5))
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=2e-3, rtol=1e-3)
