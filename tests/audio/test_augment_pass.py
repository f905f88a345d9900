"""The shared FFT pass's fast paths against slow naive references: the reverb bank, the
resampling roll-off, the FFT sizes, and examples that no transform picks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcmr.audio import cpu_fft
from vcmr.audio import dsp as D
from vcmr.audio import transforms as T
from vcmr.audio import augment
from vcmr.audio.augment import AugmentationChain, pass_sizes, spectral_run

from .test_dsp import SR, gen, peak_hz, rms, sine

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

MS = (82.0, 14.68, 12.0)


@pytest.fixture(params=["mkl", "pocketfft"])
def fft_backend(request, monkeypatch):
    """The pass on both CPU paths: row by row with MKL, in row batches with pocketFFT."""
    if request.param == "mkl" and cpu_fft._load() is None:
        pytest.skip("MKL's DFTI is not available in this torch build")
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, request.param)
    return request.param


def decay_rt60(h: np.ndarray, rt60_hint: float) -> float:
    """RT60 fitted on the energy of 20 ms windows over the first ``rt60_hint`` seconds."""
    win = 320
    n_win = int(rt60_hint * SR) // win
    energy_db = 10 * np.log10(np.square(h[: n_win * win].astype(np.float64)).reshape(n_win, win).mean(-1))
    t = (np.arange(n_win) + 0.5) * win / SR
    slope = np.polyfit(t, energy_db, 1)[0]
    return -60.0 / slope


def test_rir_bank_rows_decay_at_their_rt60_and_spectra_are_their_ffts():
    grid = (0.3, 0.55, 0.8)
    bank = D.rir_bank(grid, 2, SR, SR, 7, torch.device("cpu"))
    assert bank.shape == (6, SR)
    np.testing.assert_allclose(bank.double().pow(2).sum(-1).numpy(), np.ones(6), atol=1e-5)
    for row in range(6):
        assert decay_rt60(bank[row].numpy(), grid[row // 2]) == pytest.approx(grid[row // 2], rel=0.1)
    # Independent noise in every row; the same seed gives the same bank, another seed another.
    assert not torch.allclose(bank[0], bank[1])
    torch.testing.assert_close(D.rir_bank.__wrapped__(grid, 2, SR, SR, 7, torch.device("cpu")), bank, rtol=0, atol=0)
    assert not torch.allclose(D.rir_bank(grid, 2, SR, SR, 8, torch.device("cpu")), bank)
    # Spectra: numpy's FFT of each zero-padded row.
    n = 40000
    spectra = D.rir_bank_spectra(grid, 2, SR, SR, 7, n, torch.device("cpu"))
    ref = np.fft.rfft(np.pad(bank.double().numpy(), ((0, 0), (0, n - SR))), axis=-1)
    np.testing.assert_allclose(spectra.numpy(), ref, atol=2e-4, rtol=0)


def test_random_reverb_applies_the_bank_response_of_the_drawn_rt60():
    t = T.RandomReverb(1.0, SR, 0.2, 0.4, 0.2, 0.6, 0.5, rt60_steps=11, irs_per_rt60=3, bank_seed=0)
    assert t.rt60_grid == pytest.approx([0.2 + 0.02 * i for i in range(11)])
    x = torch.zeros(64, 1, 8000)
    x[..., 0] = 1.0
    y, params = t.forward_with_params(x, gen(3))
    grid = torch.tensor(t.rt60_grid, dtype=torch.float64)
    # The drawn RT60 is the one of the response applied: row rir_index of the bank.
    torch.testing.assert_close(params["rt60_s"], grid[params["rir_index"] // 3], rtol=0, atol=0)
    assert len(set(params["rir_index"].tolist())) > 15
    bank = t.bank(torch.device("cpu"))
    wet = params["wet"].float().view(-1, 1)
    # Dry/wet formula on a click: (1 - wet) at t = 0 plus wet times the response.
    ref = wet * bank[params["rir_index"], :8000]
    ref[:, 0] += 1.0 - wet[:, 0]
    torch.testing.assert_close(y[:, 0], ref, atol=1e-5, rtol=0)
    for i in range(4):
        assert decay_rt60(y[i, 0, 1:].numpy(), float(params["rt60_s"][i])) == pytest.approx(
            float(params["rt60_s"][i]), rel=0.15
        )


def default_run() -> list:
    return [
        ("filter", T.RandomFilter(0.7, SR, 0.5, 2, 2200.0, 4000.0, 200.0, 1200.0)),
        ("delay", T.RandomDelay(0.5, SR, 100.0, 300.0, 50.0, 0.5)),
        ("pitch", T.RandomPitchShift(0.7, -7.0, 7.0, 1.0, 1024, 256, "wsola", *MS, sample_rate=SR)),
        ("reverb", T.RandomReverb(0.6, SR, 0.1, 0.5, 0.1, 0.5, 0.5, rt60_steps=9, irs_per_rt60=2, bank_seed=1)),
    ]


def naive_pass(x: torch.Tensor, run: list, drawn: dict) -> np.ndarray:
    """The pass written out one example at a time in float64 numpy, from the draws."""
    b, _, t = x.shape
    tr = dict(run)
    ratios = torch.pow(2.0, drawn["pitch"]["semitones"].double() / 12.0)
    n_out, in_of = pass_sizes(run, t)
    grid = np.array(list(in_of))
    out = x[:, 0].double().numpy().copy()
    for i in range(b):
        applied = {name: bool(drawn[name]["apply"][i]) for name in tr}
        if not any(applied.values()):
            continue
        n_in = n_out
        sig = x[i, 0].double().numpy()
        if applied["pitch"]:
            n_in = list(in_of.values())[int(np.abs(grid - float(ratios[i])).argmin())]
            eff = n_in / n_out
            length = min(math.ceil(t * eff), n_in)
            # The stretch of the whole clip (as if it went on), cut where the clip's stretch ends.
            sig = D.wsola_stretch(x[i : i + 1, 0], torch.tensor([eff]), 2 * t, *tr["pitch"].wsola)[0, :length]
            sig = sig.double().numpy()
        spec = np.fft.rfft(np.pad(sig, (0, n_in - sig.shape[0])))
        keep = min(n_out // 2 + 1, spec.shape[0])
        spec = spec[:keep] * (n_out / n_in)
        if applied["pitch"]:
            w = math.ceil(D.RESAMPLE_ROLLOFF * keep)
            spec[keep - w :] *= 0.5 * (1 + np.cos(np.pi * np.arange(1, w + 1) / w))
        spec = np.pad(spec, (0, n_out // 2 + 1 - keep))
        warp = n_in / n_out
        freqs = np.arange(n_out // 2 + 1) * SR / n_out
        if applied["filter"]:
            fc = float(drawn["filter"]["cutoff_hz"][i]) * warp
            r = (freqs / fc) ** 4  # order 2
            with np.errstate(divide="ignore"):
                spec *= np.sqrt(1 / (1 + 1 / r) if drawn["filter"]["highpass"][i] else 1 / (1 + r))
        if applied["delay"]:
            d = float(drawn["delay"]["delay_samples"][i]) * (warp if applied["pitch"] else 1.0) / warp
            spec *= 1 + 0.5 * np.exp(-2j * np.pi * np.arange(n_out // 2 + 1) * d / n_out)
        if applied["reverb"]:
            h = tr["reverb"].bank(torch.device("cpu"))[int(drawn["reverb"]["rir_index"][i])].double().numpy()
            wet = float(drawn["reverb"]["wet"][i])
            spec *= (1 - wet) + wet * np.fft.rfft(np.pad(h, (0, n_out - h.shape[0])))
        out[i] = np.fft.irfft(spec, n=n_out)[:t]
    return out


def test_fused_pass_equals_a_naive_reference_per_example(fft_backend):
    x = 0.3 * torch.randn(24, 1, 6000, generator=gen(21))
    run = default_run()
    one = x.clone()
    drawn = spectral_run(one, run, gen(5))
    assert 0 < int(drawn["pitch"]["apply"].sum()) < 24
    np.testing.assert_allclose(one[:, 0].numpy(), naive_pass(x, run, drawn), atol=2e-5, rtol=0)
    # Two torch threads: the unshifted rows run in the pass's helper thread beside the WSOLA
    # stretch, and the two threads share the shifted rows' FFTs; every row is computed the
    # same way (to float rounding: torch splits vectorised loops differently with 2 threads).
    torch.set_num_threads(2)
    try:
        two = x.clone()
        spectral_run(two, run, gen(5))
    finally:
        torch.set_num_threads(1)
    assert augment._POOL is not None  # the helper thread ran
    assert float((one - two).abs().max()) < 1e-6


def test_examples_no_transform_picks_skip_the_fft(monkeypatch, fft_backend):
    x = 0.3 * torch.randn(16, 1, 4000, generator=gen(2))
    run = [(name, tr) for name, tr in default_run()]
    for _, tr in run:
        tr.p = 0.3
    spectral_run(x.clone(), run, gen(0))  # builds the reverb bank's spectra at the pass's size
    rows = {"rfft": 0, "irfft": 0}
    calls = []
    if fft_backend == "mkl":
        # Row by row: one forward and one inverse transform per picked example.
        for name, method in (("rfft", "forward_at"), ("irfft", "backward_at")):
            real = getattr(cpu_fft.RowTransforms, method)

            def counted_row(self, *args, _real=real, _name=name):
                rows[_name] += 1
                return _real(self, *args)

            monkeypatch.setattr(cpu_fft.RowTransforms, method, counted_row)
    else:
        for name, fn in (("rfft", "real_fft"), ("irfft", "real_ifft")):
            real = getattr(augment, fn)

            def counted(inp, *args, _real=real, _name=name, **kwargs):
                # Rows of zeros only pad a call of several rows to a multiple of SIMD_ROWS.
                rows[_name] += int((inp != 0).any(dim=-1).sum())
                calls.append(inp.shape[0])
                return _real(inp, *args, **kwargs)

            monkeypatch.setattr(augment, fn, counted)
    y = x.clone()
    drawn = spectral_run(y, run, gen(8))
    picked = torch.zeros(16, dtype=torch.bool)
    for params in drawn.values():
        picked |= params["apply"]
    assert 0 < int(picked.sum()) < 16
    # One forward and one inverse row per picked example (the bank's spectra are cached).
    assert rows == {"rfft": int(picked.sum()), "irfft": int(picked.sum())}
    if fft_backend == "pocketfft":
        assert calls and all(n == 1 or n % augment.SIMD_ROWS == 0 for n in calls)
        assert augment._simd_rows(1, torch.device("cpu")) == 1 and augment._simd_rows(5, torch.device("cpu")) == 8
    else:
        assert augment._simd_rows(5, torch.device("cpu")) == 5  # MKL: no padding rows
    assert torch.equal(y[~picked], x[~picked])
    # A batch that no transform picks makes no FFT at all.
    for _, tr in run:
        tr.p = 0.0
    rows.update(rfft=0, irfft=0)
    z = x.clone()
    spectral_run(z, run, gen(8))
    assert rows == {"rfft": 0, "irfft": 0} and torch.equal(z, x)


def naive_cost(n: int) -> float:
    """fft_cost written out."""
    cost = n * math.log2(n)
    if not D._is_smooth(n, (2, 3, 5)):
        cost *= D._ODD_RADIX_COST
    if n % 5 == 0:
        cost *= D._RADIX5_COST
    if n % 4:
        cost *= D._TWICE_ODD_COST
    return cost


def naive_pitch_grid(need: int, ratios: tuple) -> tuple:
    """pitch_grid written out: every even size with prime factors <= 13 from the smallest >= need
    to 10 % above it is a candidate output size; each ratio gets the cheapest size within the
    tolerance of ratio * n_out; the grid of least 1.5 cost(n_out) + 0.5 mean cost(n_in) wins
    (where no candidate fits: the smallest worst error, with the nearest sizes)."""
    sizes = [n for n in range(2, 3 * need, 2) if D._is_smooth(n, (2, 3, 5, 7, 11, 13))]
    lo = min(n for n in sizes if n >= need)
    best = fallback = None
    for n_out in (n for n in sizes if lo <= n <= lo * 1.1):
        picks = []
        for r in ratios:
            fits = [n for n in sizes if abs(n / (r * n_out) - 1) <= D.PASS_PITCH_TOLERANCE]
            if not fits:
                break
            picks.append(min(fits, key=lambda n: (naive_cost(n), n)))
        if len(picks) == len(ratios):
            total = 1.5 * naive_cost(n_out) + 0.5 * sum(naive_cost(n) for n in picks) / len(picks)
            if best is None or total < best[0]:
                best = (total, n_out, tuple(picks))
        elif best is None:
            n_in = [min(sizes, key=lambda n: (abs(n - r * n_out), n)) for r in ratios]
            worst = max(abs(v / (r * n_out) - 1) for v, r in zip(n_in, ratios))
            if fallback is None or worst < fallback[0]:
                fallback = (worst, n_out, tuple(n_in))
    return (best or fallback)[1:]


def test_pass_sizes_are_fixed_fast_and_accurate():
    run = default_run()
    n_out, in_of = pass_sizes(run, 98415)
    # Room for the extents: the filter's (scaled by the lowest factor), the delay's, the reverb's.
    assert n_out >= 98415 + 8000 + math.ceil(4800 / 2 ** (-7 / 12))
    assert len(in_of) == 14 and n_out % 4 == 0 and D._is_smooth(n_out, (2, 3, 5))
    for ratio, n_in in in_of.items():
        assert n_in % 2 == 0 and D._is_smooth(n_in, (2, 3, 5, 7, 11, 13))
        assert abs(n_in / n_out / ratio - 1) <= D.PASS_PITCH_TOLERANCE
    # The grid is the one a naive search over every candidate finds.
    ratios = tuple(in_of)
    for need in (7000, 60000, 98415 + 27835):
        assert D.pitch_grid(need, ratios) == naive_pitch_grid(need, ratios)
    # Pitch in cents draws from too many factors: sizes follow the batch's.
    cents = [("pitch_cents", T.RandomPitchCents(1.0, -700, 700, 1024, 256, "wsola", *MS, sample_rate=SR))]
    n1, in1 = pass_sizes(cents, 98415, (0.9, 1.2))
    assert sorted(in1) == [0.9, 1.2] and all(abs(v / n1 / r - 1) <= D.PASS_PITCH_TOLERANCE for r, v in in1.items())


@pytest.mark.parametrize("semitones", [-7.0, -1.0, 4.0, 7.0])
def test_fused_wsola_tone_has_the_shifted_frequency_and_keeps_length(semitones):
    x = sine(523.25, 2.0).repeat(3, 1, 1)
    chain = AugmentationChain(
        2 * SR, {"pitch": T.RandomPitchShift(1.0, semitones, semitones, 1.0, 1024, 256, "wsola", *MS, sample_rate=SR)}
    )
    y = chain(x, gen(0))
    assert y.shape == x.shape
    for i in range(3):
        assert peak_hz(y[i, ..., 2000:-2000]) == pytest.approx(523.25 * 2 ** (semitones / 12), rel=0.003)
        # Length and level kept: the tone fills the clip to its end.
        assert rms(y[i, ..., -4000:-1000]).item() == pytest.approx(rms(x[i, ..., -4000:-1000]).item(), rel=0.05)


def test_resample_taper_rolls_off_to_zero():
    w = D.resample_taper(1000, torch.device("cpu"))
    assert w.shape == (math.ceil(D.RESAMPLE_ROLLOFF * 1000),)
    assert float(w[0]) > 0.99 and float(w[-1]) == 0.0 and bool((w[1:] <= w[:-1]).all())


def test_crop_equals_per_example_slices_on_every_path():
    x = torch.randn(5, 2, 300, generator=gen(4))
    start = torch.tensor([0, 17, 100, 3, 200])
    ref = torch.stack([x[i, :, s : s + 100] for i, s in enumerate(start.tolist())])
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)  # not contiguous
    for inp in (x, x.double(), x.clone().requires_grad_(True), strided):
        y = D.crop(inp, start, 100)
        assert y.shape == (5, 2, 100) and y.dtype == inp.dtype
        torch.testing.assert_close(y.detach().float(), ref, rtol=0, atol=0)
    y = D.crop(x, start, 100)
    y.add_(1.0)  # a copy: the input is untouched
    torch.testing.assert_close(D.crop(x, start, 100), ref, rtol=0, atol=0)


def test_a_forked_child_does_not_inherit_the_helper_thread(fft_backend):
    # The pass's helper thread does not survive fork(): a child (e.g. a DataLoader worker)
    # must not queue work for a thread it does not have. (torch's own OpenMP threads do not
    # survive fork either, so the child runs the pass with one thread, as DataLoader workers do.)
    import multiprocessing

    x = 0.3 * torch.randn(12, 1, 4000, generator=gen(4))
    torch.set_num_threads(2)
    try:
        spectral_run(x.clone(), default_run(), gen(1))  # the parent's helper thread exists now
        assert augment._POOL is not None
    finally:
        torch.set_num_threads(1)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        inherited, got = pool.apply_async(_pass_in_child, (x, 1)).get(timeout=60)
    want = x.clone()
    spectral_run(want, default_run(), gen(1))
    assert inherited is False
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6, rtol=0)


def _pass_in_child(x: torch.Tensor, seed: int) -> tuple:
    inherited = augment._POOL is not None
    y = x.clone()
    spectral_run(y, default_run(), gen(seed))
    return inherited, y.numpy()


def test_the_gpu_paths_run_on_the_cpu_equal_the_cpu_paths(monkeypatch):
    # The WSOLA search in torch (the GPU's loop) chooses the CPU loop's splices.
    x = 0.3 * torch.randn(4, 6000, generator=gen(6))
    ratio = torch.tensor([0.7, 1.0, 1.3, 1.5], dtype=torch.float64)
    step, search, overlap = 656 - 96, 117, 96
    n_seg, nominal = D._wsola_plan(ratio, 9000, 656, overlap)
    xp = torch.cat([torch.zeros(4, search // 2), x, x.flip(-1), x], dim=-1)
    cpu, gpu = (torch.full((4, n_seg), search // 2, dtype=torch.long) for _ in range(2))
    D._wsola_search(xp, nominal, cpu, step, search, overlap, torch.full((4,), n_seg))
    D._search_torch(xp, nominal, gpu, step, search, overlap)
    assert torch.equal(cpu, gpu)
    # The pass with torch's FFTs and no row padding (as on a GPU) equals the naive reference.
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "pocketfft")  # the batched path (the GPU's)
    monkeypatch.setattr(augment, "real_fft", lambda z, workers=None: torch.fft.rfft(z))
    monkeypatch.setattr(augment, "real_ifft", lambda z, n, workers=None: torch.fft.irfft(z, n=n))
    monkeypatch.setattr(augment, "_simd_rows", lambda rows, device: rows)
    y = 0.3 * torch.randn(20, 1, 6000, generator=gen(22))
    run = default_run()
    z = y.clone()
    drawn = spectral_run(z, run, gen(3))
    np.testing.assert_allclose(z[:, 0].numpy(), naive_pass(y, run, drawn), atol=2e-5, rtol=0)


def test_pitch_in_cents_pass_is_the_same_on_both_cpu_paths(monkeypatch):
    # Pitch in cents draws its FFT sizes per batch: the row path transforms them with
    # pocketFFT (no MKL plan is kept for a size that may not recur); the CLMR delay's
    # compiled response; both equal the batched path to float rounding.
    if cpu_fft._load() is None:
        pytest.skip("MKL's DFTI is not available in this torch build")
    run = [
        ("delay_mix", T.RandomMixDelay(0.6, SR, 100.0, 300.0, 50.0, 0.5)),
        ("pitch_cents", T.RandomPitchCents(0.7, -700, 700, 1024, 256, "wsola", *MS, sample_rate=SR)),
    ]
    x = 0.3 * torch.randn(12, 1, 6000, generator=gen(30))
    out = {}
    for backend in ("mkl", "pocketfft"):
        monkeypatch.setenv(cpu_fft.BACKEND_ENV, backend)
        y = x.clone()
        out[backend] = (y, spectral_run(y, run, gen(31)))
    assert torch.equal(out["mkl"][1]["pitch_cents"]["cents"], out["pocketfft"][1]["pitch_cents"]["cents"])
    assert 0 < int(out["mkl"][1]["pitch_cents"]["apply"].sum()) < 12
    np.testing.assert_allclose(out["mkl"][0].numpy(), out["pocketfft"][0].numpy(), atol=2e-6, rtol=0)
    assert not torch.equal(out["mkl"][0], x)
