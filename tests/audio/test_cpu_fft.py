"""CPU FFT backends (MKL with kept plans, pocketFFT) and the compiled loops of the pass's
row path, against numpy and the batched torch responses."""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest
import torch

from vcmr.audio import cpu_fft, kernels
from vcmr.audio import dsp as D
from vcmr.audio import transforms as T

from .test_dsp import SR, gen

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

HAVE_MKL = cpu_fft._load() is not None
needs_mkl = pytest.mark.skipif(not HAVE_MKL, reason="MKL's DFTI is not available in this torch build")


@pytest.fixture(params=["mkl", "pocketfft"])
def backend(request, monkeypatch):
    if request.param == "mkl" and not HAVE_MKL:
        pytest.skip("MKL's DFTI is not available in this torch build")
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, request.param)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 1000), (2, 2, 1001), (1, 131072)])
def test_rfft_and_irfft_equal_numpy(backend, dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    n = shape[-1]
    tol = 2e-5 if dtype == np.float32 else 1e-11
    got = cpu_fft.rfft(x)
    ref = np.fft.rfft(x.astype(np.float64), axis=-1)
    assert got.shape == ref.shape and got.dtype == (np.complex64 if dtype == np.float32 else np.complex128)
    np.testing.assert_allclose(got, ref, atol=tol * np.sqrt(n), rtol=0)
    # Back at n, and at sizes that cut or zero-pad the spectrum (as numpy's irfft).
    spec = (rng.standard_normal(ref.shape) + 1j * rng.standard_normal(ref.shape)).astype(got.dtype)
    for m in (n, n // 2, 2 * n + 1):
        back = cpu_fft.irfft(spec, m)
        want = np.fft.irfft(spec.astype(np.complex128), n=m, axis=-1)
        assert back.shape == want.shape and back.dtype == dtype
        np.testing.assert_allclose(back, want, atol=tol, rtol=0)
    # A strided view of the spectrum reads the same values.
    wide = np.zeros(ref.shape[:-1] + (2 * ref.shape[-1],), dtype=got.dtype)
    wide[..., ::2] = spec
    np.testing.assert_allclose(cpu_fft.irfft(wide[..., ::2], n), cpu_fft.irfft(np.ascontiguousarray(spec), n), atol=0, rtol=0)


@needs_mkl
def test_row_transforms_fill_the_callers_buffers_and_ignore_alignment(monkeypatch):
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "auto")
    rows = cpu_fft.row_transforms()
    assert rows is not None and cpu_fft.backend().startswith("mkl")
    n = 116640
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    spec = np.empty(n // 2 + 1, dtype=np.complex64)
    rows.forward(x, spec)
    np.testing.assert_allclose(spec, np.fft.rfft(x.astype(np.float64)), atol=2e-5 * np.sqrt(n), rtol=0)
    out = np.empty(n, dtype=np.float32)
    rows.backward(spec, out)
    np.testing.assert_allclose(out, x, atol=2e-6, rtol=0)
    # A size that will not recur goes through pocketFFT, into the same buffer, to float rounding.
    once = np.empty_like(spec)
    rows.forward_unplanned(x, once)
    np.testing.assert_allclose(once, spec, atol=2e-5 * np.sqrt(n), rtol=0)
    # The same values at any address give the same bits (no alignment-dependent code path).
    for offset in (1, 3, 5):
        buf = np.empty(n + 8, dtype=np.float32)
        view = buf[offset : offset + n]
        view[:] = x
        other = np.empty(n // 2 + 1, dtype=np.complex64)
        rows.forward(view, other)
        assert np.array_equal(other, spec)


def test_backend_choice_and_errors(monkeypatch):
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "pocketfft")
    assert cpu_fft.backend() == "pocketfft" and cpu_fft.row_transforms() is None
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "fftw")
    with pytest.raises(ValueError, match="VCMR_CPU_FFT='fftw'"):
        cpu_fft.rfft(np.zeros(8, dtype=np.float32))
    # Asked for MKL where none loads: a clear error; auto falls back to pocketFFT.
    monkeypatch.setattr(cpu_fft, "_load", lambda: None)
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "mkl")
    with pytest.raises(cpu_fft.MklUnavailable, match="VCMR_CPU_FFT=mkl"):
        cpu_fft.backend()
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "auto")
    assert cpu_fft.backend() == "pocketfft"
    np.testing.assert_allclose(cpu_fft.rfft(np.arange(6.0)), np.fft.rfft(np.arange(6.0)), atol=1e-12)
    with pytest.raises(TypeError, match="int64"):
        cpu_fft.rfft(np.arange(6))
    with pytest.raises(TypeError, match="complex64 or complex128"):
        cpu_fft.irfft(np.zeros(4, dtype=np.float32), 6)


def test_two_threads_transform_side_by_side(backend):
    # Each thread keeps its own plans; results equal the ones made one after the other.
    rng = np.random.default_rng(3)
    signals = [rng.standard_normal((2, n)).astype(np.float32) for n in (40000, 43740, 50000, 40000)]
    alone = [cpu_fft.irfft(cpu_fft.rfft(s) * 2, s.shape[-1]) for s in signals]
    got = [None] * len(signals)

    def work(i):
        for _ in range(5):
            got[i] = cpu_fft.irfft(cpu_fft.rfft(signals[i]) * 2, signals[i].shape[-1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(signals))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for a, b, s in zip(alone, got, signals):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, 2 * s, atol=2e-5)


def _child_rfft(x):
    return cpu_fft.rfft(x)


def test_a_forked_child_makes_its_own_plans(backend):
    x = np.random.default_rng(4).standard_normal((2, 5000)).astype(np.float32)
    parent = cpu_fft.rfft(x)  # the parent holds plans for this size now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_child_rfft, (x,)).get(timeout=60)
    np.testing.assert_array_equal(child, parent)


# --- the compiled responses of the row path, against the batched torch responses ------------


def one_row(resp: torch.Tensor) -> np.ndarray:
    return resp.reshape(-1).numpy().astype(np.complex64)


@pytest.mark.parametrize("order", [1, 2, 3, 8])
@pytest.mark.parametrize("highpass", [False, True])
def test_mul_butterworth_equals_the_torch_response(order, highpass):
    n = 131072
    spec = (np.random.default_rng(order).standard_normal(n // 2 + 1) + 1j).astype(np.complex64)
    for cutoff in (150.0, 1000.0, 7500.0):
        got = spec.copy()
        kernels.mul_butterworth(got.view(np.float32), SR / (n * cutoff), order, highpass)
        resp = D.butterworth_on_grid(n, SR, torch.tensor([cutoff]), order, torch.tensor([highpass]), torch.device("cpu"))
        np.testing.assert_allclose(got, spec * one_row(resp), atol=2e-6, rtol=2e-6)
        assert got[0] == (0 if highpass else spec[0])
    # An order whose power overflows float32 keeps finite gains of 0 (low-pass) or 1 (high-pass).
    got = spec.copy()
    kernels.mul_butterworth(got.view(np.float32), SR / (n * 100.0), 40, highpass)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[-1000:], spec[-1000:] if highpass else 0, atol=1e-6)


@pytest.mark.parametrize("delay", [0.0, 3.25, 4000.0, 100000.37])
def test_mul_echo_equals_the_torch_response(delay):
    n = 131072
    spec = (np.random.default_rng(1).standard_normal(n // 2 + 1) + 0.5j).astype(np.complex64)
    got = spec.copy()
    kernels.mul_echo(got.view(np.float32), delay, n, 0.5, 0.5)
    ref = spec * (0.5 * one_row(D.delay_response(torch.tensor([delay], dtype=torch.float64), n, 0.5, torch.device("cpu"))))
    np.testing.assert_allclose(got, ref, atol=3e-6, rtol=0)
    # In float64 from the definition.
    k = np.arange(n // 2 + 1)
    exact = spec * 0.5 * (1 + 0.5 * np.exp(-2j * np.pi * k * delay / n))
    np.testing.assert_allclose(got, exact, atol=5e-6, rtol=0)


def test_mul_mix_is_the_dry_wet_response():
    rng = np.random.default_rng(2)
    spec = (rng.standard_normal(999) + 1j * rng.standard_normal(999)).astype(np.complex64)
    resp = (rng.standard_normal(999) + 1j * rng.standard_normal(999)).astype(np.complex64)
    got = spec.copy()
    kernels.mul_mix(got.view(np.float32), resp.view(np.float32), 0.3)
    np.testing.assert_allclose(got, spec * (0.7 + 0.3 * resp), atol=1e-6, rtol=1e-6)


def lti_transforms() -> list:
    return [
        T.RandomFilter(1.0, SR, 0.5, 2, 2200.0, 4000.0, 200.0, 1200.0),
        T.RandomDelay(1.0, SR, 100.0, 300.0, 50.0, 0.5),
        T.RandomReverb(1.0, SR, 0.1, 0.5, 0.1, 0.5, 0.5, rt60_steps=9, irs_per_rt60=2, bank_seed=1),
        T.RandomMixDelay(1.0, SR, 200.0, 500.0, 50.0, 0.5),
    ]


@pytest.mark.parametrize("index", range(4))
def test_spectral_multiply_equals_spectral_response_row_by_row(index):
    tr = lti_transforms()[index]
    n = 24000
    params = tr.draw(6, gen(index))
    sub = {k: v for k, v in params.items() if k != "apply"}
    state = tr.spectral_state(sub, 8000, torch.device("cpu"), gen(9))
    rows_state = tr.spectral_rows(state, n)
    scale = torch.tensor([1.0, 1.2, 0.8, 1.5, 1.0, 0.7], dtype=torch.float64)
    warp = torch.tensor([1.0, 1.2, 0.8, 1.5, 0.9, 0.7], dtype=torch.float64)
    resp = tr.spectral_response(state, torch.arange(6), n, scale, warp)
    spec = (np.random.default_rng(index).standard_normal((6, n // 2 + 1)) + 1j).astype(np.complex64)
    for r in range(6):
        got = spec[r].copy()
        tr.spectral_multiply(rows_state, r, got, n, float(scale[r]), float(warp[r]))
        np.testing.assert_allclose(got, spec[r] * resp[r].numpy(), atol=3e-6, rtol=3e-6)
        # The base class's version (one row of spectral_response) agrees.
        base = spec[r].copy()
        T.RandomTransform.spectral_multiply(tr, state, r, base, n, float(scale[r]), float(warp[r]))
        np.testing.assert_allclose(base, spec[r] * resp[r].numpy(), atol=1e-6, rtol=1e-6)


def test_wsola_join_rebuilds_the_batched_stretch_bit_for_bit():
    x = torch.randn(5, 6000, generator=gen(7))
    ratio = torch.tensor([0.7, 0.9, 1.0, 1.3, 1.5], dtype=torch.float64)
    segment, search, overlap = 656, 117, 97  # an overlap that is not a multiple of 4
    length = 9500
    xp, starts = D.wsola_splices(x, ratio, length, segment, search, overlap)
    ref = D.wsola_stretch(x, ratio, length, segment, search, overlap)
    for j in range(5):
        out = np.empty(length, dtype=np.float32)
        kernels.wsola_join(xp[j].numpy(), starts[j].numpy(), segment - overlap, overlap, 1.0, out)
        np.testing.assert_array_equal(out, ref[j].numpy())
        part = np.empty(1234, dtype=np.float32)
        kernels.wsola_join(xp[j].numpy(), starts[j].numpy(), segment - overlap, overlap, 0.5, part)
        np.testing.assert_array_equal(part, ref[j, :1234].numpy() * np.float32(0.5))


def test_wsola_splices_of_chosen_rows_equal_those_of_the_gathered_rows():
    # The pass gathers its shifted rows straight into the padded input; a stretch much longer
    # than the clip mirrors its end repeatedly.
    x = torch.randn(6, 3000, generator=gen(8), dtype=torch.float64)
    rows = torch.tensor([4, 0, 4, 2])
    ratio = torch.tensor([0.8, 1.4, 1.0, 1.2], dtype=torch.float64)
    for length, mirrored_twice in ((3500, False), (9000, True)):
        got = D.wsola_splices(x, ratio, length, 656, 117, 96, rows=rows)
        ref = D.wsola_splices(x[rows], ratio, length, 656, 117, 96)
        assert got[0].dtype == torch.float32 and (got[0].shape[1] > 2 * 3000 + 58) == mirrored_twice
        for a, b in zip(got, ref):
            assert torch.equal(a, b)


def test_wsola_search_equals_a_naive_search():
    # Overlaps that are and are not a multiple of the loop's four samples per pass.
    rng = np.random.default_rng(5)
    for overlap in (8, 11):
        search, step = 13, 40
        xp = rng.standard_normal((2, 900)).astype(np.float32)
        nominal = np.array([[6, 40, 85, 130, 170, 210], [6, 45, 80, 120, 170, 220]], dtype=np.int64)
        src = np.zeros((2, 6), dtype=np.int64)
        src[:, 0] = 6
        kernels.wsola_search(xp, nominal, np.array([6, 4]), src, step, search, overlap)
        for r in range(2):
            prev = 6
            for k in range(1, 6):
                if k >= (6, 4)[r]:
                    assert src[r, k] == nominal[r, k] + search // 2
                    continue
                tail = xp[r, prev + step : prev + step + overlap]
                diffs = []
                for i in range(search):
                    acc = np.float32(0)
                    for j in range(overlap):
                        e = xp[r, nominal[r, k] + i + j] - tail[j]
                        acc = np.float32(acc + e * e)
                    diffs.append(acc)
                assert src[r, k] == nominal[r, k] + int(np.argmin(diffs))
                prev = src[r, k]
