"""CLMR-exact transforms, each against its formula or a literal port of the original code."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vcmr.audio import dsp_clmr as D
from vcmr.audio import transforms as T
from vcmr.audio.augment import build_augmentation
from vcmr.audio.dsp import frequency_filter
from vcmr.config import ConfigError, load_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


ROOT = Path(__file__).resolve().parents[2]
SR = 16000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sine(freq: float, n: int, sr: int = SR) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / sr).float()


def gain_db(y: torch.Tensor, x: torch.Tensor, margin: int) -> float:
    """Level of y relative to x in dB, away from the edges."""
    return 20 * math.log10(float(y[margin:-margin].pow(2).mean().sqrt() / x[margin:-margin].pow(2).mean().sqrt()))


# --- filter ---------------------------------------------------------------------------


def julius_lowpass_reference(x: np.ndarray, cutoff: float, zeros: float = 8) -> np.ndarray:
    """julius.lowpass_filter written out with numpy: Hann-windowed sinc, sum 1, replicate padding."""
    half = int(zeros / cutoff / 2)
    t = np.arange(-half, half + 1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * half + 1) / (2 * half))
    arg = 2 * cutoff * np.pi * t
    h = 2 * cutoff * window * np.where(t == 0, 1.0, np.sin(arg) / np.where(t == 0, 1.0, arg))
    h = h / h.sum()
    padded = np.concatenate([np.full(half, x[0]), x, np.full(half, x[-1])])
    return np.convolve(padded, h, mode="valid")


def test_sinc_filter_equals_julius_formula_per_example():
    x = torch.randn(3, 1, 4000, generator=gen(0))
    cut = torch.tensor([2500.0, 300.0, 1000.0])
    hp = torch.tensor([False, True, True])
    y = D.sinc_filter(x, cut, SR, hp)
    for i in range(3):
        low = julius_lowpass_reference(x[i, 0].double().numpy(), float(cut[i]) / SR)
        ref = x[i, 0].double().numpy() - low if hp[i] else low
        assert np.allclose(y[i, 0].numpy(), ref, atol=2e-5)


def test_sinc_filter_attenuation_and_steepness():
    n = 16000
    x = torch.stack([sine(f, n) for f in (1200.0, 2700.0, 3200.0)]).unsqueeze(1)
    low = D.sinc_filter(x, torch.full((3,), 2200.0), SR, torch.zeros(3, dtype=torch.bool))
    margin = 500
    assert abs(gain_db(low[0, 0], x[0, 0], margin)) < 0.01  # pass band: 1 kHz below the cut-off
    assert gain_db(low[1, 0], x[1, 0], margin) < -40  # 500 Hz above it
    assert gain_db(low[2, 0], x[2, 0], margin) < -60
    # The Butterworth of the fast chain (order 2) barely attenuates 500 Hz above the cut-off.
    bw = frequency_filter(x[1:2], torch.tensor([2200.0]), SR, 2, torch.tensor([False]))
    assert gain_db(bw[0, 0], x[1, 0], margin) > -6
    # High-pass at 1200 Hz: a 300 Hz tone is removed, a 3 kHz tone passes.
    y = torch.stack([sine(300.0, n), sine(3000.0, n)]).unsqueeze(1)
    high = D.sinc_filter(y, torch.full((2,), 1200.0), SR, torch.ones(2, dtype=torch.bool))
    assert gain_db(high[0, 0], y[0, 0], margin) < -60
    assert abs(gain_db(high[1, 0], y[1, 0], margin)) < 0.01


def test_random_sinc_filter_draws_and_checks():
    f = T.RandomSincFilter(1.0, SR, 0.5, 8.0, 2200.0, 4000.0, 200.0, 1200.0)
    params = f.sample(400, gen(2))
    hp = params["highpass"]
    assert 0.4 < hp.float().mean() < 0.6
    assert ((params["cutoff_hz"][hp] >= 200) & (params["cutoff_hz"][hp] <= 1200)).all()
    assert ((params["cutoff_hz"][~hp] >= 2200) & (params["cutoff_hz"][~hp] <= 4000)).all()


# --- delay ----------------------------------------------------------------------------


def test_mix_delay_formula_and_grid():
    d = T.RandomMixDelay(1.0, SR, min_ms=200.0, stop_ms=500.0, step_ms=50.0, volume=0.5)
    assert d.delays_ms == [200.0, 250.0, 300.0, 350.0, 400.0, 450.0]  # numpy.arange: 500 excluded
    x = torch.randn(64, 1, 8000, generator=gen(3))
    y, params = d.forward_with_params(x, gen(4))
    assert set(params["delay_ms"].tolist()) == set(d.delays_ms)
    for i in range(64):
        k = int(params["delay_ms"][i].item() * SR / 1000)
        assert int(params["delay_samples"][i]) == k
        delayed = torch.cat([torch.zeros(k), x[i, 0, :-k]])
        assert torch.allclose(y[i, 0], (x[i, 0] + 0.5 * delayed) / 2, atol=1e-6)
    # int() truncation of CLMR's calc_offset at a sample rate where ms * sr / 1000 is fractional.
    d2 = T.RandomMixDelay(1.0, 22050, 200.0, 250.0, 50.0, 0.5)
    assert int(d2.sample(1, gen(0))["delay_samples"]) == 4410
    d3 = T.RandomMixDelay(1.0, 22050, 250.0, 300.0, 50.0, 0.5)
    assert int(d3.sample(1, gen(0))["delay_samples"]) == int(250 * 22.05)


# --- pitch ----------------------------------------------------------------------------


def peak_hz(x: torch.Tensor, sr: int = SR) -> float:
    """Frequency of the spectral peak, refined by parabolic interpolation of the log magnitude."""
    w = torch.hann_window(x.numel(), dtype=torch.float64)
    mag = torch.fft.rfft(x.double() * w).abs().log()
    k = int(mag.argmax())
    a, b, c = float(mag[k - 1]), float(mag[k]), float(mag[k + 1])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / x.numel()


@pytest.mark.parametrize("cents", [350, -700, 37])
def test_pitch_in_cents(cents):
    x = sine(440.0, 16384).view(1, 1, -1)
    from vcmr.audio.dsp import pitch_shift

    y = pitch_shift(x, torch.tensor([cents / 100.0]), 1024, 256)
    measured = 1200 * math.log2(peak_hz(y[0, 0, 2048:-2048]) / peak_hz(x[0, 0, 2048:-2048]))
    assert measured == pytest.approx(cents, abs=3.0)


def test_random_pitch_cents_draws_uniform_integers():
    p = T.RandomPitchCents(1.0, -700, 700, 1024, 256, "phase_vocoder")
    draws = p.sample(20000, gen(5))
    c = draws["cents"]
    assert c.dtype == torch.int64 and int(c.min()) == -700 and int(c.max()) == 700
    assert abs(float(c.double().mean())) < 15 and float(c.double().std()) == pytest.approx(1401 / math.sqrt(12), rel=0.03)
    assert torch.allclose(draws["semitones"], c.double() / 100)


# --- noise ----------------------------------------------------------------------------


def test_noise_std_is_a_fraction_of_the_signal_std():
    x = 0.3 * torch.randn(200, 1, 20000, generator=gen(6))
    n = T.RandomNoiseStd(1.0, 1e-4, 1e-2)
    y, params = n.forward_with_params(x, gen(7))
    r = params["std_ratio"]
    assert ((r >= 1e-4) & (r <= 1e-2)).all()
    measured = (y - x).std(dim=-1).view(-1) / x.std(dim=-1).view(-1)
    assert torch.allclose(measured, r.float(), rtol=0.03)


# --- reverb ---------------------------------------------------------------------------


def sox_reverb_port(x, rev, damp, room, sr, depth=100.0, pre_ms=0.0, wet_db=0.0):
    """sox reverb.c's per-sample loop (comb_process, allpass_process, filter_array_process), one
    filter array per output channel, then the channels' mean (CLMR's channels(1)) and clipping."""
    a = -1 / math.log(1 - 0.3)
    b = 100 / (math.log(1 - 0.98) * a + 1)
    feedback = 1 - math.exp((rev - b) / (a * b))
    hf = damp / 100 * 0.3 + 0.2
    gain = 10 ** (wet_db / 20) * 0.015
    scale, r, d = room / 100 * 0.9 + 0.1, sr / 44100.0, depth / 100
    pre = int(pre_ms / 1000 * sr + 0.5)
    src = np.concatenate([np.zeros(pre), x])[: len(x)]
    outs = []
    for i in range(int(math.ceil(d)) + 1):
        offset = i * d
        combs, aps = [], []
        for length in (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617):
            combs.append(int(scale * r * (length + 12 * offset) + 0.5))
            offset = -offset
        for length in (225, 341, 441, 556):
            aps.append(int(r * (length + 12 * offset) + 0.5))
            offset = -offset
        cbuf, cptr, store = [[0.0] * n for n in combs], [0] * 8, [0.0] * 8
        abuf, aptr = [[0.0] * n for n in aps], [0] * 4
        y = np.zeros(len(x))
        for t, inp in enumerate(src):
            out = 0.0
            for c in range(7, -1, -1):
                o = cbuf[c][cptr[c]]
                store[c] = o + (store[c] - o) * hf
                cbuf[c][cptr[c]] = inp + store[c] * feedback
                cptr[c] = (cptr[c] - 1) % combs[c]
                out += o
            for c in range(3, -1, -1):
                o = abuf[c][aptr[c]]
                abuf[c][aptr[c]] = out + o * 0.5
                aptr[c] = (aptr[c] - 1) % aps[c]
                out = o - out
            y[t] = out * gain
        outs.append(y)
    return np.clip(x + np.mean(outs, axis=0), -1, 1)


def test_sox_reverb_equals_the_sample_loop_batched():
    sr = 8000
    x = (0.3 * torch.randn(3, 1, 2500, generator=gen(8))).double()
    x[:, :, :50] *= 4  # some clipping at the start
    params = [(50, 50, 100), (0, 99, 0), (99, 0, 99)]
    rev, damp, room = (torch.tensor([float(p[j]) for p in params]) for j in range(3))
    y = D.sox_reverb(x.float(), rev, damp, room, sr)
    for i, (a, b, c) in enumerate(params):
        ref = sox_reverb_port(x[i, 0].numpy(), a, b, c, sr)
        assert np.abs(y[i, 0].numpy() - ref).max() < 2e-6
    mono = D.sox_reverb(x[:1].float(), rev[:1], damp[:1], room[:1], sr, stereo_depth=0.0, pre_delay_ms=20.0, wet_gain_db=-3.0)
    ref = sox_reverb_port(x[0, 0].numpy(), 50, 50, 100, sr, depth=0.0, pre_ms=20.0, wet_db=-3.0)
    assert np.abs(mono[0, 0].numpy() - ref).max() < 2e-6
    # With two torch threads, half the examples run in a second thread: the same output.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = D.sox_reverb(x.float(), rev, damp, room, sr)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(two, y)


def test_sox_reverb_frequency_domain_path_equals_the_sample_loop():
    # The GPU's path (one transfer function per example), run on the CPU.
    sr = 8000
    x = (0.3 * torch.randn(3, 1, 2500, generator=gen(9))).float()
    x[:, :, :50] *= 4
    params = [(50, 50, 100), (0, 99, 0), (99, 0, 99)]
    rev, damp, room = (torch.tensor([float(p[j]) for p in params]) for j in range(3))
    for depth, pre_ms in ((100.0, 0.0), (0.0, 20.0)):
        coef = {k: v.expand(3) for k, v in D.sox_reverb_coefficients(rev, damp, 0.0).items()}
        combs, aps = D.sox_reverb_delays(room, sr, depth)
        y = D._sox_reverb_spectral(x, coef, combs, aps, int(pre_ms / 1000 * sr + 0.5))
        assert y.shape == x.shape
        for i, (a, b, c) in enumerate(params):
            ref = sox_reverb_port(x[i, 0].double().numpy(), a, b, c, sr, depth=depth, pre_ms=pre_ms)
            assert np.abs(y[i, 0].numpy() - ref).max() < 2e-6


def test_sox_reverb_parameterisation():
    c = D.sox_reverb_coefficients(torch.tensor([0.0, 100.0]), torch.tensor([0.0, 100.0]), 0.0)
    assert torch.allclose(c["feedback"], torch.tensor([0.3, 0.98], dtype=torch.float64))
    assert torch.allclose(c["hf_damping"], torch.tensor([0.2, 0.5], dtype=torch.float64))
    combs, aps = D.sox_reverb_delays(torch.tensor([100.0]), 44100, 100.0)
    assert combs[0, 0].tolist() == list(D.COMB_LENGTHS)
    assert combs[0, 1].tolist() == [1128, 1176, 1289, 1344, 1434, 1479, 1569, 1605]
    assert aps[0, 1].tolist() == [237, 329, 453, 544]
    r = T.RandomSoxReverb(1.0, SR, 0, 99, 0, 99, 0, 99, 100.0, 0.0, 0.0)
    draws = r.sample(5000, gen(9))
    for k in ("reverberance", "damping", "room_scale"):
        assert int(draws[k].min()) == 0 and int(draws[k].max()) == 99 and torch.equal(draws[k], draws[k].round())


# --- the chain ------------------------------------------------------------------------


def test_clmr_exact_chain_config():
    cfg = load_config(ROOT / "config" / "augment" / "clmr_exact.yaml")
    chain = build_augmentation(cfg, SR, 12000)
    assert {k: t.p for k, t in chain.transforms.items()} == {
        "polarity": 0.8, "noise_std": 0.01, "gain": 0.3, "filter_sinc": 0.8, "delay_mix": 0.3, "pitch_cents": 0.6,
        "reverb_sox": 0.6,
    }
    x = 0.3 * torch.randn(3, 1, 13000, generator=gen(10))
    y1, y2 = chain(x, gen(11)), chain(x, gen(11))
    assert y1.shape == (3, 1, 12000) and torch.equal(y1, y2) and torch.isfinite(y1).all()
    # The fast chain keeps the exact variants off.
    fast = build_augmentation(load_config(ROOT / "config" / "augment" / "clmr.yaml"), 16000, 12000)
    assert list(fast.transforms) == ["polarity", "noise", "gain", "filter", "delay", "pitch", "reverb"]


def test_exact_blocks_name_bad_keys():
    cfg = load_config(ROOT / "config" / "augment" / "clmr_exact.yaml", ["augment.reverb_sox.max_damping=120"])
    with pytest.raises(ConfigError, match=r"augment\.reverb_sox\.max_damping = 120"):
        build_augmentation(cfg, SR, 16384)
    cfg = load_config(ROOT / "config" / "augment" / "clmr_exact.yaml", ["augment.delay_mix.stop_ms=100"])
    with pytest.raises(ConfigError, match=r"augment\.delay_mix\.stop_ms"):
        build_augmentation(cfg, SR, 16384)
    # At 8 kHz the 4 kHz low-pass bound is the Nyquist frequency: refused when the block is used.
    fast_filter_at_8k = ["augment.filter.lowpass_min_hz=1500", "augment.filter.lowpass_max_hz=3000"]
    with pytest.raises(ConfigError, match=r"augment\.filter_sinc\.lowpass_max_hz"):
        build_augmentation(load_config(ROOT / "config" / "augment" / "clmr_exact.yaml", fast_filter_at_8k), 8000, 16384)
