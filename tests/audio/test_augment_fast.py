"""The chain's shared FFT pass and the WSOLA pitch shift, against naive references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcmr.audio import dsp as D
from vcmr.audio import transforms as T
from vcmr.audio.augment import AugmentationChain, build_augmentation
from vcmr.config import load_config

from .test_dsp import SR, gen, peak_hz, rms, sine
from .test_augment import CONFIG


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def sox_tempo_port(x: np.ndarray, ratio: float, length: int, segment: int, search: int, overlap: int) -> np.ndarray:
    """sox tempo.c's tempo_process for one channel (linear search), written out sample by sample:
    the input preceded by search // 2 zeros and mirrored at its end."""
    lead = search // 2
    xp = np.concatenate([np.zeros(lead), x])
    while len(xp) < 4 * len(x) + 4 * segment:
        extra = min(len(xp) - 1, 4 * len(x) + 4 * segment - len(xp))
        xp = np.concatenate([xp, xp[-extra - 1 : -1][::-1]])
    out, pos, total, skip_total, tail = [], 0, 0, 0, None
    while len(out) < length + segment:
        win = xp[pos:]
        if total == 0:
            offset = lead
            out.extend(win[offset : offset + overlap])
        else:
            diffs = [np.sum((win[i : i + overlap] - tail) ** 2) for i in range(search)]
            offset = int(np.argmin(diffs))
            fade = np.arange(overlap) / overlap
            out.extend(tail * (1 - fade) + win[offset : offset + overlap] * fade)
        out.extend(win[offset + overlap : offset + segment - overlap])
        tail = win[offset + segment - overlap : offset + segment].copy()
        total += 1
        skip = int(total * (segment - overlap) / ratio + 0.5) - skip_total
        skip_total += skip
        pos += skip
    out.extend(tail)
    return np.array(out[:length])


def test_wsola_sizes_round_as_sox():
    assert D.wsola_sizes(44100, 82.0, 14.68, 12.0) == (3616, 647, 528)
    assert D.wsola_sizes(16000, 82.0, 14.68, 12.0) == (1312, 235, 192)
    assert D.wsola_sizes(8000, 82.0, 14.68, 12.0) == (656, 117, 96)


@pytest.mark.parametrize("ratio", [0.7, 1.0, 1.26, 1.5])
def test_wsola_stretch_equals_sox_loop(ratio):
    sr, n = 8000, 4000
    rng = np.random.default_rng(0)
    t = np.arange(n) / sr
    x = (np.sin(2 * np.pi * 330 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.1 * rng.standard_normal(n)).astype(np.float32)
    sizes = D.wsola_sizes(sr, 82.0, 14.68, 12.0)
    length = int(round(n * ratio))
    y = D.wsola_stretch(torch.from_numpy(x).view(1, -1), torch.tensor([ratio]), length, *sizes)
    ref = sox_tempo_port(x.astype(np.float64), ratio, length, *sizes)
    assert y.shape == (1, length)
    np.testing.assert_allclose(y[0].numpy(), ref, atol=1e-6)


def test_wsola_stretch_batch_equals_alone_and_lengths_cut_reads():
    x = torch.randn(3, 3000, generator=gen(1))
    ratio = torch.tensor([0.8, 1.2, 1.45], dtype=torch.float64)
    sizes = D.wsola_sizes(8000, 82.0, 14.68, 12.0)
    y = D.wsola_stretch(x, ratio, 4500, *sizes)
    for i in range(3):
        torch.testing.assert_close(y[i], D.wsola_stretch(x[i : i + 1], ratio[i : i + 1], 4500, *sizes)[0], rtol=0, atol=0)
    lengths = torch.ceil(3000 * ratio).long()
    z = D.wsola_stretch(x, ratio, 4500, *sizes, lengths=lengths)
    for i in range(3):  # the samples each example needs are the same
        torch.testing.assert_close(z[i, : lengths[i]], y[i, : lengths[i]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="overlap"):
        D.wsola_stretch(x, ratio, 100, 100, 10, 60)


@pytest.mark.parametrize("semitones", [-7.0, -3.0, 2.0, 7.0])
def test_wsola_pitch_shift_moves_sine_and_keeps_level(semitones):
    x = sine(440.0, 2.0)
    sizes = D.wsola_sizes(SR, 82.0, 14.68, 12.0)
    y = D.pitch_shift(x, torch.tensor([semitones]), 1024, 256, method="wsola", wsola=sizes)
    assert y.shape == x.shape
    assert peak_hz(y[..., 4000:-4000]) == pytest.approx(440.0 * 2 ** (semitones / 12), rel=0.004)
    assert (rms(y[..., 4000:-4000]) / rms(x[..., 4000:-4000])).item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="wsola"):
        D.pitch_shift(x, 1.0, 1024, 256, method="wsola")


def bursts(seconds: float = 2.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return (torch.sin(2 * math.pi * 600 * t) * ((t * 4) % 1 < 0.3)).view(1, 1, -1)


def envelope(z: torch.Tensor) -> torch.Tensor:
    return z.abs().reshape(-1, 400).mean(-1)


def test_wsola_pitch_shift_keeps_tempo():
    x = bursts()
    y = D.pitch_shift(x, 5.0, 1024, 256, method="wsola", wsola=D.wsola_sizes(SR, 82.0, 14.68, 12.0))
    assert torch.corrcoef(torch.stack([envelope(x[0]), envelope(y[0])]))[0, 1] > 0.9


def test_pitch_grid_sizes_and_accuracy():
    ratios = tuple(2 ** (s / 12) for s in range(-7, 8) if s)
    for need, tolerance in ((5000, 0.003), (60000, 0.0015), (98415 + 20000, 0.0015), (131073, 0.0015)):
        n_out, n_in = D.pitch_grid(need, ratios)
        assert n_out >= need and n_out % 2 == 0 and D._is_smooth(n_out, (2, 3, 5, 7, 11, 13))
        for r, m in zip(ratios, n_in):
            assert m % 2 == 0 and D._is_smooth(m, (2, 3, 5, 7, 11, 13))
            assert abs(m / n_out / r - 1) < tolerance  # 0.0015: 2.6 cents
    assert D.fast_pass_len(98415) >= 98415 and D.fast_pass_len(98415) % 2 == 0


def test_responses_on_grid_equal_their_formulas():
    n = 6000
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    d = torch.tensor([0.0, 17.0, 2500.5, 5999.0])
    got = D.delay_response(d, n, 0.5, torch.device("cpu")).to(torch.complex128)
    ref = 1 + 0.5 * torch.exp(-2j * math.pi * k * d.view(-1, 1) / n)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)
    cut = torch.tensor([200.0, 1000.0, 3000.0])
    hp = torch.tensor([True, False, True])
    got = D.butterworth_on_grid(n, SR, cut, 2, hp, torch.device("cpu"))
    ref = D.butterworth_response(k * SR / n, cut.double(), 2, hp)
    torch.testing.assert_close(got.double(), ref, atol=2e-6, rtol=0)


def edge_free(n: int, b: int, margin: int, seed: int) -> torch.Tensor:
    """Noise that is zero within `margin` samples of both ends (no edge effects to compare)."""
    x = 0.3 * torch.randn(b, 1, n, generator=gen(seed))
    x[..., :margin] = 0
    x[..., -margin:] = 0
    return x


def lti_chain(fuse: bool) -> AugmentationChain:
    return AugmentationChain(
        16000,
        {
            "filter": T.RandomFilter(0.8, SR, 0.5, 2, 2200.0, 4000.0, 200.0, 1200.0),
            "delay": T.RandomDelay(0.5, SR, 50.0, 200.0, 50.0, 0.5),
            "reverb": T.RandomReverb(0.7, SR, 0.05, 0.2, 0.1, 0.5, 0.2, rt60_steps=16, irs_per_rt60=2, bank_seed=0),
        },
        fuse=fuse,
    )


def test_fused_pass_equals_transforms_one_by_one():
    # filter, delay, reverb: linear and time-invariant, so away from the edges (where the
    # one-by-one chain cuts each result back to the clip) the single pass is the same.
    x = edge_free(16000, 12, 1500, seed=3)
    fused, alone = lti_chain(True), lti_chain(False)
    assert fused.runs() == [["filter", "delay", "reverb"]]
    assert alone.runs() == [["filter"], ["delay"], ["reverb"]]
    y, drawn = fused.forward_with_params(x, gen(7))
    ref, drawn_ref = alone.forward_with_params(x, gen(7))
    for name in drawn:
        for key in drawn[name]:
            assert torch.equal(drawn[name][key], drawn_ref[name][key])
    assert 0 < int(drawn["delay"]["apply"].sum()) < 12
    torch.testing.assert_close(y[..., :-1500], ref[..., :-1500], atol=2e-5, rtol=0)
    untouched = ~(drawn["filter"]["apply"] | drawn["delay"]["apply"] | drawn["reverb"]["apply"])
    assert torch.equal(y[untouched], x[untouched])


def pitch_chain(method: str, semitones: float, fuse: bool = True) -> AugmentationChain:
    ms = (82.0, 14.68, 12.0)
    return AugmentationChain(
        2 * SR,
        {
            "filter": T.RandomFilter(1.0, SR, 0.0, 2, 7000.0, 7000.0, 200.0, 200.0),
            "pitch": T.RandomPitchShift(1.0, semitones, semitones, 1.0, 1024, 256, method, *ms, sample_rate=SR),
        },
        fuse=fuse,
    )


@pytest.mark.parametrize("semitones", [-7.0, -2.0, 3.0, 7.0])
@pytest.mark.parametrize("method", ["wsola", "resample"])
def test_fused_pitch_shift_moves_a_tone(method, semitones):
    x = sine(440.0, 2.0).repeat(2, 1, 1)
    chain = pitch_chain(method, semitones)
    assert chain.runs() == [["filter", "pitch"]]
    y = chain(x, gen(0))
    assert y.shape == x.shape
    for i in range(2):
        assert peak_hz(y[i, ..., 4000:-4000]) == pytest.approx(440.0 * 2 ** (semitones / 12), rel=0.004)
        assert (rms(y[i, ..., 4000:-4000]) / rms(x[i, ..., 4000:-4000])).item() == pytest.approx(1.0, abs=0.05)


def test_fused_wsola_keeps_tempo_and_batching_does_not_change_an_example():
    x = torch.cat([bursts(), sine(300.0, 2.0)])
    chain = pitch_chain("wsola", 5.0)
    y = chain(x, gen(0))
    assert torch.corrcoef(torch.stack([envelope(x[0]), envelope(y[0])]))[0, 1] > 0.9
    torch.testing.assert_close(y[1:], chain(x[1:], gen(0)), atol=1e-5, rtol=0)
    # The resample method moves the bursts (tempo changes with pitch).
    z = pitch_chain("resample", 5.0)(x, gen(0))
    assert torch.corrcoef(torch.stack([envelope(x[0]), envelope(z[0])]))[0, 1] < 0.5


def test_chains_fold_their_spectral_transforms():
    fast = build_augmentation(load_config(CONFIG), SR, 16384)
    assert fast.runs() == [["polarity"], ["noise"], ["gain"], ["filter", "delay", "pitch", "reverb"]]
    exact = build_augmentation(load_config(CONFIG.parent / "clmr_exact.yaml"), SR, 16384)
    assert exact.runs() == [["polarity"], ["noise_std"], ["gain"], ["filter_sinc"], ["delay_mix", "pitch_cents"], ["reverb_sox"]]
    # phase_vocoder is not a resampling step: the pitch shift runs on its own.
    vocoder = build_augmentation(load_config(CONFIG, ["augment.pitch.method=phase_vocoder"]), SR, 16384)
    assert vocoder.runs()[-2:] == [["pitch"], ["reverb"]]


def test_fused_chain_is_reproducible_and_finite():
    chain = build_augmentation(load_config(CONFIG), SR, 12000)
    x = 0.3 * torch.randn(16, 1, 14000, generator=gen(4))
    y1, y2 = chain(x, gen(9)), chain(x, gen(9))
    assert torch.equal(y1, y2) and torch.isfinite(y1).all() and y1.shape == (16, 1, 12000)
    assert not torch.equal(y1, chain(x, gen(10)))


@pytest.mark.parametrize("method", ["wsola", "resample"])
def test_fused_pass_leaves_room_for_the_reverb(method):
    # A clip silent for its first second: a downward shift plays it slower and the reverb is
    # causal, so the output stays silent at first (nothing wraps around from the end).
    x = torch.cat([torch.zeros(6, 1, SR), 0.3 * torch.randn(6, 1, SR, generator=gen(5))], dim=-1)
    chain = AugmentationChain(
        2 * SR,
        {
            "pitch": T.RandomPitchShift(1.0, -7.0, 7.0, 14.0, 1024, 256, method, 82.0, 14.68, 12.0, sample_rate=SR),
            "reverb": T.RandomReverb(1.0, SR, 0.5, 0.5, 1.0, 1.0, 1.0, rt60_steps=1, irs_per_rt60=4, bank_seed=0),
        },
    )
    y, drawn = chain.forward_with_params(x, gen(1))
    # Silent for 1 s / a at least (resample plays it a times faster; wsola keeps tempo).
    first = int(0.9 * SR / max(1.0, float(2 ** (drawn["pitch"]["semitones"].max() / 12))))
    assert set(drawn["pitch"]["semitones"].tolist()) == {-7.0, 7.0}
    # The resampling's band edge rolls off, so it does not ring ahead of the onset (a brick
    # wall rang at about -45 dB here) and nothing wraps around: float32 rounding only.
    assert y[..., : first - 400].abs().max() < 1e-5
    assert y[..., first + 2000 :].abs().max() > 1e-2


def test_rfft_padded_equals_rfft_with_n():
    x = torch.randn(3, 1, 1000, generator=gen(2))
    for n in (1000, 1536, 4000, 700):
        torch.testing.assert_close(D.rfft_padded(x, n), torch.fft.rfft(x, n=n), atol=1e-5, rtol=0)
