"""Pure DSP on batched waveforms: crops, gain, noise, filters, delay, pitch shift, reverb.

Every function takes ``x: [B, 1, T]`` (or ``[B, C, T]`` where noted) float waveforms on any
device and returns tensors on that device; per-example parameters are ``[B]`` tensors or
scalars. Nothing here reads a config. Randomness enters only through explicit arguments: a
noise tensor (:func:`add_noise`) or a ``torch.Generator`` (:func:`random_crop`,
:func:`synthetic_rir`), so a seeded generator gives identical outputs.

Filters are zero-phase Butterworth magnitude responses applied in the frequency domain.
Pitch shift has three methods. ``phase_vocoder``: a phase-vocoder time stretch by
``2**(s/12)`` (with identity phase locking) followed by band-limited (FFT) resampling back
to the input length, so pitch moves by ``s`` semitones while duration and tempo stay.
``resample``: the playback rate changes by ``2**(s/12)`` (band-limited FFT resampling of a
span ``2**(s/12)`` times the output length), which moves pitch and keeps the length but also
changes the tempo; it is several times cheaper. ``wsola``: sox's ``pitch``, a WSOLA time
stretch (:func:`wsola_stretch`) then the same resampling. Reverb convolves (by FFT) with a
synthetic room impulse response: white noise under an exponential envelope that falls by
60 dB after the given RT60 (:func:`synthetic_rir`; :func:`rir_bank` keeps a seeded bank of
them, :func:`rir_bank_spectra` their spectra at an FFT size).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

#: Clips the pitch shift's phase vocoder processes at once on CPU: their spectra then stay
#: in cache, which is faster than one large batch. GPUs take every clip of a value at once.
PITCH_CPU_CHUNK = 4

#: Pitch-shift methods of :func:`pitch_shift` (``augment.pitch.method``).
PITCH_METHODS = ("phase_vocoder", "resample", "wsola")

#: Length of the fine table of :func:`delay_response` (bin k = q * _TABLE + r).
_TABLE = 256

#: 2 pi, for wrapping phase differences.
TWO_PI = 2.0 * math.pi

#: Zero padding of the frequency-domain filters, in periods of the lowest cut-off.
FILTER_PAD_PERIODS = 16

#: ln(1000): an amplitude envelope exp(-LN_1000 * t / rt60) has fallen by 60 dB at rt60.
LN_1000 = math.log(1000.0)


def check_batch(x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``[B, 1, T]`` floating-point waveform batch."""
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"expected a waveform batch of shape [B, 1, T], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point waveform, got dtype {x.dtype}")


def _per_example(v: Tensor | float, x: Tensor) -> Tensor:
    """A ``[B]`` (or scalar) parameter as a ``[B, 1, 1]`` tensor on ``x``'s device and dtype."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"per-example parameter must have shape [{x.shape[0]}], got {tuple(v.shape)}")
    return v.view(-1, 1, 1)


#: Radices for zero-padded FFT sizes. pocketFFT (CPU) and cuFFT are fastest on sizes with
#: many factors of 2 and few 3s and 5s (a size like 3**9 * 5 is about twice as slow as
#: 2**15 * 3), so padded sizes are 16 times a number whose prime factors are <= 5.
_PAD_RADICES = (2, 3, 5)
_PAD_MULTIPLE = 16
#: Prime factors allowed in the stretched length of the pitch shift: small enough for
#: direct FFT passes (no Bluestein fallback), dense enough to land within ~0.1 % of a*T.
_STRETCH_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23)


def _is_smooth(n: int, primes: Tuple[int, ...]) -> bool:
    """Whether every prime factor of ``n`` lies in ``primes``."""
    for r in primes:
        while n % r == 0:
            n //= r
    return n == 1


@functools.lru_cache(maxsize=4096)
def next_fast_len(n: int) -> int:
    """Smallest integer >= ``n`` of the form ``16 * m``, ``m``'s prime factors all <= 5.

    Such sizes are at most a few percent above ``n`` and among the fastest FFT sizes.

    Args:
        n: a signal length in samples (values below 1 count as 1).

    Returns:
        An FFT size in samples.
    """
    m = -(-max(1, int(n)) // _PAD_MULTIPLE)
    while not _is_smooth(m, _PAD_RADICES):
        m += 1
    return _PAD_MULTIPLE * m


@functools.lru_cache(maxsize=4096)
def nearest_smooth_len(x: float, primes: Tuple[int, ...] = _STRETCH_PRIMES) -> int:
    """The integer closest to ``x`` whose prime factors all lie in ``primes`` (ties go up).

    Args:
        x: a target length in samples (may be fractional).
        primes: the allowed prime factors.

    Returns:
        A length in samples, at least 1.
    """
    up = max(1, math.ceil(x))
    while not _is_smooth(up, primes):
        up += 1
    down = max(1, math.floor(x))
    while down > 1 and not _is_smooth(down, primes):
        down -= 1
    return down if x - down < up - x else up


#: Prime factors of the FFT sizes of the chain's shared pass (vcmr.audio.augment): sizes
#: whose prime factors are all <= 13 have no slow generic FFT step in MKL, pocketFFT or cuFFT
#: and are far denser than 5-smooth ones, so pitch factors land close to the wanted ones.
_PASS_PRIMES = (2, 3, 5, 7, 11, 13)
#: Largest relative error of a pitch factor ``n_in / n_out`` that :func:`pitch_grid` accepts
#: (0.0012: about 2 cents).
PASS_PITCH_TOLERANCE = 0.0012
#: Largest size in the tables of :func:`_pass_sizes` (2**22 samples: over 4 minutes at 16 kHz).
_PASS_MAX = 1 << 22
#: Sizes :func:`fast_pass_len` and :func:`pitch_grid` consider: up to this fraction above the
#: smallest usable one.
_PASS_SLACK = 0.1
#: Relative time per sample of a real FFT whose size has a prime factor above 5 (those run
#: through slower butterflies than the radix-2, 3, 4 and 5 ones). Measured with scipy's
#: pocketFFT (float32, one thread, a forward and an inverse transform of 16 rows) on sizes of
#: 93,000 to 210,000: 7.0-8.4 ns per sample for 5-smooth sizes, 9.0-10.7 with a factor 7, 11
#: or 13.
_ODD_RADIX_COST = 1.35
#: Relative time per sample of a real FFT of twice an odd number (about 1.5 times slower per
#: sample in MKL than a multiple of 4, measured on sizes of 90,000 to 220,000).
_TWICE_ODD_COST = 1.5
#: Relative time per sample of a real FFT whose size has a factor 5. MKL (one row, one thread,
#: a forward and an inverse transform): 0.67 ms for 131,072 = 2^17 and 0.75 ms for
#: 124,416 = 2^9 3^5 points, 1.02-1.07 ms for 125,000 = 2^3 5^6, 128,000 = 2^10 5^3 and
#: 129,600 = 2^6 3^4 5^2; pocketFFT runs them about alike.
_RADIX5_COST = 1.3


@functools.lru_cache(maxsize=2)
def _pass_sizes(multiple: int) -> Tuple[int, ...]:
    """Every multiple of ``multiple`` up to :data:`_PASS_MAX` with prime factors in :data:`_PASS_PRIMES`, ascending."""
    sizes = [1]
    for p in _PASS_PRIMES:
        grown = []
        for v in sizes:
            while v <= _PASS_MAX:
                grown.append(v)
                v *= p
        sizes = grown
    return tuple(sorted(v for v in set(sizes) if v % multiple == 0))


def fft_cost(n: int) -> float:
    """Relative time of a real FFT of ``n`` points (``n`` even, prime factors <= 13).

    ``n log2 n``, times :data:`_ODD_RADIX_COST` when ``n`` has a prime factor above 5,
    :data:`_RADIX5_COST` when it has a factor 5 and :data:`_TWICE_ODD_COST` when ``n / 2`` is
    odd. Used to choose among sizes that all fit.
    """
    cost = n * math.log2(max(2, n))
    if not _is_smooth(n, _PAD_RADICES):
        cost *= _ODD_RADIX_COST
    if n % 5 == 0:
        cost *= _RADIX5_COST
    if n % 4:
        cost *= _TWICE_ODD_COST
    return cost


@functools.lru_cache(maxsize=1)
def _pass_table() -> Tuple[np.ndarray, np.ndarray]:
    """The even sizes of :func:`_pass_sizes` and their :func:`fft_cost`, as float64 arrays."""
    sizes = _pass_sizes(2)
    return np.asarray(sizes, dtype=np.float64), np.asarray([fft_cost(n) for n in sizes], dtype=np.float64)


def _cheapest(sizes: np.ndarray, costs: np.ndarray, lo: float, hi: float) -> int:
    """Index of the cheapest size in ``[lo, hi]`` (the smaller one on ties); -1 if none."""
    a = int(np.searchsorted(sizes, lo, side="left"))
    z = int(np.searchsorted(sizes, hi, side="right"))
    return a + int(np.argmin(costs[a:z])) if z > a else -1


def fast_pass_len(n: int) -> int:
    """The fastest FFT size in ``[n, n (1 + _PASS_SLACK)]`` by :func:`fft_cost`: even, prime
    factors <= 13 (denser than :func:`next_fast_len`'s sizes, so closer to ``n``)."""
    sizes, costs = _pass_table()
    n = max(1, int(n))
    if n > sizes[-1]:
        return next_fast_len(n)
    first = int(np.searchsorted(sizes, n))
    return int(sizes[_cheapest(sizes, costs, n, max(float(sizes[first]), n * (1.0 + _PASS_SLACK)))])


@functools.lru_cache(maxsize=1024)
def pitch_grid(need: int, ratios: Tuple[float, ...]) -> Tuple[int, Tuple[int, ...]]:
    """FFT sizes of pitch shifts by resampling that share one output size.

    Candidates for ``n_out`` are the fast sizes (even, prime factors <= 13) from the smallest
    ``>= need`` to :data:`_PASS_SLACK` above it. For each, ``n_in[i]`` is the cheapest fast
    size (:func:`fft_cost`) whose pitch factor ``n_in[i] / n_out`` lies within
    :data:`PASS_PITCH_TOLERANCE` (about 2 cents) of ``ratios[i]``. Of the candidates where every
    factor has one, the grid is the one of least cost ``1.5 cost(n_out) + 0.5 mean_i
    cost(n_in[i])`` (a batch makes one inverse FFT of ``n_out`` points per example and one
    forward FFT of ``n_out`` or ``n_in`` points; the smaller ``n_out`` on ties). Where no
    candidate reaches the tolerance: the one with the smallest worst error, each ``n_in[i]``
    the size nearest to ``ratios[i] * n_out``. Sharing ``n_out`` makes every response a
    function of one frequency grid, cached across batches.

    Args:
        need: output samples the grid must hold (clip plus padding).
        ratios: wanted frequency factors (> 0).

    Returns:
        ``(n_out, n_in)`` with ``n_in`` a tuple like ``ratios``; pitch factor ``n_in[i] / n_out``.
    """
    if not ratios:
        return fast_pass_len(need), ()
    sizes, costs = _pass_table()
    need = max(1, int(need))
    first = int(np.searchsorted(sizes, need))
    if first >= len(sizes) or max(ratios) * need > sizes[-1]:
        n_out = next_fast_len(need)
        return n_out, tuple(nearest_smooth_len(r * n_out) for r in ratios)
    last = int(np.searchsorted(sizes, sizes[first] * (1.0 + _PASS_SLACK), side="right"))
    best, fallback = None, None
    for c in range(first, last):
        n_out = float(sizes[c])
        picks = []
        for r in ratios:
            target = r * n_out
            i = _cheapest(sizes, costs, target * (1.0 - PASS_PITCH_TOLERANCE), target * (1.0 + PASS_PITCH_TOLERANCE))
            if i < 0:
                break
            picks.append(i)
        if len(picks) == len(ratios):
            total = 1.5 * costs[c] + 0.5 * float(np.mean(costs[picks]))
            if best is None or total < best[0]:
                best = (total, int(n_out), tuple(int(sizes[i]) for i in picks))
        elif best is None:
            target = n_out * np.asarray(ratios, dtype=np.float64)
            j = np.clip(np.searchsorted(sizes, target), 1, len(sizes) - 1)
            n_in = np.where(target - sizes[j - 1] <= sizes[j] - target, sizes[j - 1], sizes[j])
            err = float(np.abs(n_in / target - 1.0).max())
            if fallback is None or err < fallback[0]:
                fallback = (err, int(n_out), tuple(int(v) for v in n_in))
    return (best or fallback)[1:]


def rfft_padded(x: Tensor, n: int) -> Tensor:
    """``torch.fft.rfft(x, n=n)``: cut or zero-padded to ``n`` samples, padding into a fresh buffer.

    On the CPU this is much faster than letting ``rfft`` pad (about 1.7x for clips of
    ~100,000 samples), which copies through a slower path.

    Args:
        x: ``[..., L]`` real signal.
        n: FFT size.

    Returns:
        ``[..., n // 2 + 1]`` complex spectrum.
    """
    if x.shape[-1] >= n:
        return torch.fft.rfft(x[..., :n])
    buf = x.new_zeros(*x.shape[:-1], n)
    buf[..., : x.shape[-1]] = x
    return torch.fft.rfft(buf)


def real_fft(x: Tensor, workers: Optional[int] = None) -> Tensor:
    """``torch.fft.rfft(x)`` over the last axis; on the CPU by :func:`vcmr.audio.cpu_fft.rfft`
    (MKL with kept plans, else scipy's pocketFFT).

    ``torch.fft`` sets up MKL's transform afresh on every CPU call (about 2-3 ms for sizes near
    140,000, as long as the transform of a few rows); the descriptors of
    :mod:`vcmr.audio.cpu_fft` are kept.

    Args:
        x: ``[..., n]`` float32 or float64 signal (any device).
        workers: CPU threads of pocketFFT (default: torch's intra-op count); MKL transforms
            on the calling thread.

    Returns:
        ``[..., n // 2 + 1]`` complex64 (complex128 for float64) on ``x``'s device.
    """
    if x.device.type != "cpu":
        return torch.fft.rfft(x)
    from . import cpu_fft

    return torch.from_numpy(cpu_fft.rfft(x.detach().numpy(), workers or torch.get_num_threads()))


def real_ifft(spec: Tensor, n: int, workers: Optional[int] = None) -> Tensor:
    """``torch.fft.irfft(spec, n=n)``: the spectrum cut or zero-padded to ``n // 2 + 1`` bins,
    transformed back to ``n`` samples; on the CPU by :func:`vcmr.audio.cpu_fft.irfft` (see
    :func:`real_fft`).

    Args:
        spec: ``[..., m]`` complex spectrum (any device; a strided view is fine).
        n: output samples.
        workers: CPU threads of pocketFFT (default: torch's intra-op count).

    Returns:
        ``[..., n]`` float32 (float64 for complex128) on ``spec``'s device.
    """
    if spec.device.type != "cpu":
        return torch.fft.irfft(spec, n=n)
    from . import cpu_fft

    return torch.from_numpy(cpu_fft.irfft(spec.detach().numpy(), n, workers or torch.get_num_threads()))


def _check_crop(crop_length: int, t_in: int) -> None:
    if crop_length <= 0:
        raise ValueError(f"crop_length must be positive, got {crop_length}")
    if crop_length > t_in:
        raise ValueError(f"crop_length ({crop_length} samples) is longer than the input ({t_in} samples)")


def center_crop(x: Tensor, crop_length: int) -> Tensor:
    """Deterministic centre crop for validation.

    Args:
        x: ``[B, C, T_in]`` waveform, ``T_in >= crop_length``.
        crop_length: output length in samples.

    Returns:
        ``[B, C, crop_length]``; the window starts at ``(T_in - crop_length) // 2``.
    """
    t_in = x.shape[-1]
    _check_crop(crop_length, t_in)
    start = (t_in - crop_length) // 2
    return x[..., start : start + crop_length]


def crop(x: Tensor, start: Tensor, crop_length: int) -> Tensor:
    """Cut ``x[b, :, start[b] : start[b] + crop_length]`` for every example.

    Args:
        x: ``[B, C, T_in]``.
        start: ``[B]`` integer start offsets in samples, ``0 <= start <= T_in - crop_length``.
        crop_length: output length in samples.

    Returns:
        ``[B, C, crop_length]`` (a copy).
    """
    b = x.shape[0]
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
        # numpy's fancy indexing copies each window as one block (about 3x faster here).
        windows = np.lib.stride_tricks.sliding_window_view(x.detach().numpy(), crop_length, axis=-1)
        return torch.from_numpy(windows[np.arange(b), :, start.cpu().numpy()])
    # Windows of the unfolded view are contiguous rows, so this copies whole rows instead
    # of gathering sample by sample through a [B, C, crop_length] index tensor.
    rows = torch.arange(b, device=x.device)
    return x.unfold(-1, crop_length, 1)[rows, :, start.to(x.device, torch.long)]


def random_crop(x: Tensor, crop_length: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Random window of ``crop_length`` samples per example (independent offsets).

    Args:
        x: ``[B, C, T_in]`` with ``T_in >= crop_length``.
        crop_length: output length in samples.
        generator: source of the offsets (drawn on its device; ``None``: torch's global RNG).

    Returns:
        ``[B, C, crop_length]``.
    """
    t_in = x.shape[-1]
    start = crop_offsets(x.shape[0], t_in, crop_length, generator)
    if t_in == crop_length:
        return x
    return crop(x, start, crop_length)


def crop_offsets(batch: int, t_in: int, crop_length: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """The ``[batch]`` start offsets :func:`random_crop` draws (uniform in ``[0, t_in - crop_length]``,
    on the generator's device), the same draw from the same stream."""
    _check_crop(crop_length, t_in)
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(t_in - crop_length + 1, (batch,), generator=generator, device=dev)


def polarity_inversion(x: Tensor) -> Tensor:
    """Sign flip.

    Args:
        x: ``[B, C, T]`` waveform.

    Returns:
        ``-x``, same shape.
    """
    return -x


def gain(x: Tensor, db: Tensor | float) -> Tensor:
    """Scale example ``b`` by ``10 ** (db[b] / 20)``.

    Args:
        x: ``[B, 1, T]`` waveform.
        db: ``[B]`` (or scalar) gain in decibels.

    Returns:
        ``[B, 1, T]`` scaled waveform.
    """
    return x * torch.pow(10.0, _per_example(db, x) / 20.0)


def add_noise(x: Tensor, snr_db: Tensor | float, noise: Tensor) -> Tensor:
    """Add white noise scaled so that ``rms(x[b]) / rms(noise part) = 10 ** (snr_db[b] / 20)``.

    Args:
        x: ``[B, 1, T]`` waveform.
        snr_db: ``[B]`` (or scalar) signal-to-noise ratio in dB.
        noise: ``[B, 1, T]`` standard normal noise (the caller draws it, for seeding).

    Returns:
        ``[B, 1, T]`` noisy waveform.
    """
    rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
    sigma = rms * torch.pow(10.0, -_per_example(snr_db, x) / 20.0)
    return x + sigma * noise


def butterworth_response(freqs_hz: Tensor, cutoff_hz: Tensor, order: int, highpass: Tensor) -> Tensor:
    """Butterworth magnitude ``|H(f)|`` per example.

    Args:
        freqs_hz: ``[F]`` frequencies in Hz.
        cutoff_hz: ``[B]`` -3 dB cut-off frequencies in Hz.
        order: filter order (``6 * order`` dB per octave roll-off).
        highpass: ``[B]`` bool, high-pass where true, low-pass otherwise.

    Returns:
        ``[B, F]`` gains in ``[0, 1]``.
    """
    ratio = freqs_hz.view(1, -1) / cutoff_hz.view(-1, 1)
    # High-pass: |H| = 1/sqrt(1 + (fc/f)^2n), written as f^n / sqrt(f^2n + fc^2n) to stay finite at f=0.
    r2n = ratio.pow(2 * order)
    low = torch.rsqrt(1.0 + r2n)
    high = ratio.pow(order) * torch.rsqrt(1.0 + r2n)
    return torch.where(highpass.view(-1, 1), high, low)


def frequency_filter(
    x: Tensor, cutoff_hz: Tensor | float, sample_rate: int, order: int, highpass: Tensor | bool
) -> Tensor:
    """Zero-phase Butterworth high- or low-pass filter, applied in the frequency domain.

    The signal is zero-padded before the FFT by :data:`FILTER_PAD_PERIODS` periods of the
    lowest cut-off (at most its own length), so the filtering is a linear, not circular,
    convolution with the filter's two-sided impulse response, whose envelope decays like
    ``exp(-2 pi fc sin(pi / 2n) |t|)``: far below float precision after that many periods.

    Args:
        x: ``[B, 1, T]`` waveform at ``sample_rate`` Hz.
        cutoff_hz: ``[B]`` (or scalar) -3 dB frequency in Hz.
        sample_rate: samples per second.
        order: Butterworth order.
        highpass: ``[B]`` bool (or scalar): high-pass where true, low-pass otherwise.

    Returns:
        ``[B, 1, T]`` filtered waveform.
    """
    b, _, t = x.shape
    cutoff = _per_example(cutoff_hz, x).view(b).float()
    hp = torch.as_tensor(highpass, device=x.device, dtype=torch.bool).expand(b)
    pad = min(t, filter_extent(cutoff, sample_rate))
    n = next_fast_len(t + pad)
    spec = rfft_padded(x.float(), n)
    freqs = torch.fft.rfftfreq(n, d=1.0 / sample_rate, device=x.device)
    spec = spec * butterworth_response(freqs, cutoff, order, hp).unsqueeze(1)
    return torch.fft.irfft(spec, n=n)[..., :t].to(x.dtype)


def lowpass(x: Tensor, cutoff_hz: Tensor | float, sample_rate: int, order: int) -> Tensor:
    """Zero-phase Butterworth low-pass; see :func:`frequency_filter`.

    Args:
        x: ``[B, 1, T]`` waveform at ``sample_rate`` Hz.
        cutoff_hz: ``[B]`` (or scalar) -3 dB frequency in Hz.
        sample_rate: samples per second.
        order: Butterworth order (``6 * order`` dB per octave).

    Returns:
        ``[B, 1, T]`` filtered waveform.
    """
    return frequency_filter(x, cutoff_hz, sample_rate, order, False)


def highpass(x: Tensor, cutoff_hz: Tensor | float, sample_rate: int, order: int) -> Tensor:
    """Zero-phase Butterworth high-pass; see :func:`frequency_filter` (arguments as :func:`lowpass`)."""
    return frequency_filter(x, cutoff_hz, sample_rate, order, True)


def delay(x: Tensor, delay_samples: Tensor | int, volume: float) -> Tensor:
    """Echo: ``y[b, t] = x[b, t] + volume * x[b, t - d[b]]`` (zero before the start).

    Args:
        x: ``[B, 1, T]`` waveform.
        delay_samples: ``[B]`` (or scalar) non-negative integer delays in samples.
        volume: linear gain of the delayed copy.

    Returns:
        ``[B, 1, T]`` waveform (a new tensor).
    """
    b, _, t = x.shape
    d = torch.as_tensor(delay_samples, dtype=torch.long).detach().cpu().expand(b)
    y = x.clone()
    # One slice addition per distinct delay (a grid of a few values) instead of a gather
    # through a [B, 1, T] index tensor.
    if (d < 0).any():
        raise ValueError(f"delays must be >= 0 samples, got {d.tolist()}")
    for value in torch.unique(d).tolist():
        if value >= t:  # the echo starts after the end
            continue
        idx = torch.nonzero(d == value).view(-1).to(x.device)
        y[..., value:].index_add_(0, idx, x.index_select(0, idx)[..., : t - value], alpha=volume)
    return y


def _peak_of_bin(mag: Tensor, jumps: int = 2) -> Tensor:
    """For every bin, the spectral peak its main lobe belongs to (steepest ascent).

    Each bin points to its larger neighbour (or itself at a local maximum); following the
    pointers ``2 ** jumps`` times (pointer doubling) reaches the peak of lobes up to that
    many bins wide.

    Args:
        mag: ``[..., F]`` magnitudes (frequency last).
        jumps: pointer doublings.

    Returns:
        ``[..., F]`` long bin indices.
    """
    left = torch.empty_like(mag)
    left[..., :1] = -1.0
    left[..., 1:] = mag[..., :-1]
    right = torch.empty_like(mag)
    right[..., -1:] = -1.0
    right[..., :-1] = mag[..., 1:]
    up = (right > mag) & (right >= left)
    down = (left > mag) & ~up
    ptr = torch.arange(mag.shape[-1], device=mag.device) + (up.to(torch.long) - down.to(torch.long))
    for _ in range(jumps):
        ptr = torch.gather(ptr, -1, ptr)
    return ptr


def phase_vocoder(spec: Tensor, rate: float) -> Tensor:
    """Time-stretch a complex STFT by ``1 / rate`` keeping its frequencies.

    Output frame ``k`` reads the input at fractional frame ``k * rate``: its magnitude is
    linearly interpolated between the two neighbouring frames, and each bin's phase
    advances by the phase it gains over one hop in the input (its instantaneous frequency
    times the hop; analysis and synthesis hops are equal). Phases are then locked to the
    peak of each bin's spectral lobe (identity phase locking): a bin keeps the phase offset
    to its peak that it has in the analysis frame, so the bins of one partial stay coherent
    instead of drifting apart (which would lower the level and smear the sound).

    Everything runs on contiguous real tensors (magnitude, ``atan2`` phase, a real
    ``cumsum`` of wrapped phase steps, ``cos``/``sin`` at the end): these are the
    vectorised kernels; complex ``abs``/``angle``/``cumprod`` and strided views are not.

    Args:
        spec: ``[..., F, N]`` complex STFT (``F = n_fft // 2 + 1``).
        rate: speed factor; ``< 1`` makes the signal longer.

    Returns:
        ``[..., F, ceil(N / rate)]`` complex STFT (a transposed view of ``[..., N', F]``).
    """
    n_frames = spec.shape[-1]
    steps = torch.arange(0, n_frames, rate, device=spec.device, dtype=torch.float64)  # N' values only
    i0 = steps.floor().long()
    alpha = (steps - i0).to(torch.float32).unsqueeze(-1)
    # Frames on the second-last axis so that picking frames copies contiguous rows.
    ri = torch.view_as_real(spec).transpose(-2, -3)  # [..., N, F, 2]
    re, im = ri[..., 0].contiguous(), ri[..., 1].contiguous()
    mag_s = (re * re).addcmul_(im, im).sqrt_()
    phase = torch.atan2(im, re)
    del re, im
    mag_in = torch.nn.functional.pad(mag_s, (0, 0, 0, 1))
    # Phase gained over one hop, wrapped to [-pi, pi] so the running sum stays small (the
    # last frame repeats its predecessor's).
    dphi = torch.empty_like(phase)
    torch.sub(phase[..., 1:, :], phase[..., :-1, :], out=dphi[..., :-1, :])
    dphi[..., -1, :] = dphi[..., -2, :] if n_frames > 1 else 0.0
    dphi.sub_(torch.round(dphi * (1.0 / TWO_PI)).mul_(TWO_PI))
    peak_in = _peak_of_bin(mag_s)

    mag = torch.lerp(mag_in.index_select(-2, i0), mag_in.index_select(-2, i0 + 1), alpha)
    # advanced[k] = phase[0] + sum_{j<k} dphi[i0[j]]
    incr = torch.empty((*phase.shape[:-2], i0.numel(), phase.shape[-1]), dtype=phase.dtype, device=phase.device)
    incr[..., :1, :] = phase[..., :1, :]
    incr[..., 1:, :] = dphi.index_select(-2, i0[:-1])
    advanced = torch.cumsum(incr, dim=-2)
    del incr
    phase0 = phase.index_select(-2, i0)
    # Lock: phase[k] = advanced[peak] + (phase0[k] - phase0[peak]).
    advanced.sub_(phase0)
    locked = phase0.add_(torch.gather(advanced, -1, peak_in.index_select(-2, i0)))
    del advanced
    out = torch.empty((*locked.shape, 2), dtype=locked.dtype, device=locked.device)
    torch.cos(locked, out=out[..., 0])
    torch.sin(locked, out=out[..., 1])
    out.mul_(mag.unsqueeze(-1))
    return torch.view_as_complex(out).transpose(-1, -2)


def fft_resample(x: Tensor, length: int) -> Tensor:
    """Band-limited resampling by truncating or zero-padding the spectrum.

    An ideal low-pass, so shrinking does not alias. Resampling ``L`` samples at rate ``r``
    to ``length`` samples gives the same signal at rate ``r * length / L``.

    Args:
        x: ``[..., L]`` real signal.
        length: output samples.

    Returns:
        ``[..., length]`` (``x`` itself when ``length == L``).
    """
    n_in = x.shape[-1]
    if n_in == length:
        return x
    spec = torch.fft.rfft(x, n=n_in)
    n_bins = length // 2 + 1
    if spec.shape[-1] >= n_bins:
        spec = spec[..., :n_bins]
    else:
        spec = torch.nn.functional.pad(spec, (0, n_bins - spec.shape[-1]))
    return torch.fft.irfft(spec, n=length) * (length / n_in)


#: Width of the roll-off at the band edge of the chain's resampling (:func:`resample_taper`),
#: as a fraction of the kept band.
RESAMPLE_ROLLOFF = 0.05


@functools.lru_cache(maxsize=64)
def resample_taper(n_bins: int, device: torch.device) -> Tensor:
    """Raised-cosine roll-off over the top :data:`RESAMPLE_ROLLOFF` of a band of ``n_bins`` bins.

    Multiplied into the last bins of a resampled spectrum (the chain's FFT pass) it falls
    from 1 to 0 at the band edge, so the resampling's impulse response decays like ``1 / t^3``
    after a few dozen samples instead of ringing like a brick wall's ``1 / t`` over the clip.

    Returns:
        ``[w]`` float32, ``w = ceil(RESAMPLE_ROLLOFF * n_bins)``: ``0.5 (1 + cos(pi (j + 1) / w))``.
    """
    w = max(1, math.ceil(RESAMPLE_ROLLOFF * n_bins))
    j = torch.arange(1, w + 1, dtype=torch.float64)
    return (0.5 * (1.0 + torch.cos(math.pi * j / w))).float().to(device)


@functools.lru_cache(maxsize=16)
def _hann_window(n_fft: int, device: torch.device) -> Tensor:
    """Periodic Hann window ``[n_fft]``, built once per size and device."""
    return torch.hann_window(n_fft, device=device)


@functools.lru_cache(maxsize=64)
def _ola_envelope(n_fft: int, hop_length: int, n_frames: int, device: torch.device) -> Tensor:
    """Overlap-added squared Hann window of ``n_frames`` frames: ``[(n_frames - 1) * hop + n_fft]``."""
    w2 = _hann_window(n_fft, device).pow(2)
    r = n_fft // hop_length
    env = torch.zeros(n_frames + r - 1, hop_length, device=device)
    for j in range(r):
        env[j : j + n_frames] += w2[j * hop_length : (j + 1) * hop_length]
    return env.view(-1)


def istft(spec: Tensor, n_fft: int, hop_length: int, length: int) -> Tensor:
    """Inverse of ``torch.stft(x, n_fft, hop_length, hann_window(n_fft), center=True)``.

    Same result as ``torch.istft`` (windowed overlap-add divided by the overlap-added
    squared window), but when ``hop_length`` divides ``n_fft`` the overlap-add is
    ``n_fft / hop_length`` slice additions instead of a fold, several times faster on CPU.

    Args:
        spec: ``[B, F, N]`` complex STFT, ``F = n_fft // 2 + 1``.
        n_fft: frame size.
        hop_length: hop between frames in samples.
        length: output samples.

    Returns:
        ``[B, length]`` float32.
    """
    window = _hann_window(n_fft, spec.device)
    if n_fft % hop_length:
        return torch.istft(spec, n_fft, hop_length, window=window, center=True, length=length)
    b, _, n_frames = spec.shape
    frames = torch.fft.irfft(spec.transpose(-1, -2), n=n_fft)  # [B, N, n_fft]
    frames.mul_(window)
    r = n_fft // hop_length
    y = torch.zeros(b, n_frames + r - 1, hop_length, dtype=frames.dtype, device=frames.device)
    for j in range(r):
        y[:, j : j + n_frames] += frames[..., j * hop_length : (j + 1) * hop_length]
    start = n_fft // 2
    env = _ola_envelope(n_fft, hop_length, n_frames, spec.device)[start : start + length]
    y = y.view(b, -1)[:, start : start + length]
    # Where no frame overlaps (beyond the last frame) the output is zero, as in torch.istft.
    y = y / torch.where(env > 1e-11, env, torch.ones_like(env))[: y.shape[-1]]
    if y.shape[-1] < length:
        y = torch.nn.functional.pad(y, (0, length - y.shape[-1]))
    return y


def _reflect_to(x: Tensor, length: int) -> Tensor:
    """Extend ``x[..., T]`` to ``[..., length]`` by mirroring the end (repeatedly if needed)."""
    while x.shape[-1] < length:
        extra = min(length - x.shape[-1], x.shape[-1] - 1)
        if extra <= 0:  # a single sample: repeat it
            return torch.nn.functional.pad(x, (0, length - x.shape[-1]), mode="replicate")
        x = torch.cat([x, x[..., -extra - 1 : -1].flip(-1)], dim=-1)
    return x


# --------------------------------------------------------------------------------------
# WSOLA time stretch (sox's ``tempo``), the time-domain half of the ``wsola`` pitch shift
# --------------------------------------------------------------------------------------


def wsola_sizes(sample_rate: int, segment_ms: float, search_ms: float, overlap_ms: float) -> Tuple[int, int, int]:
    """Segment, search and overlap lengths in samples, rounded as sox's ``tempo`` rounds them.

    ``segment = round(sr * segment_ms / 1000)``, ``search = round(sr * search_ms / 1000)``,
    ``overlap = max(int(sr * overlap_ms / 1000 + 4.5), 16)`` rounded down to a multiple of 8
    (minus 8 while twice the overlap exceeds the segment).

    Returns:
        ``(segment, search, overlap)`` in samples.
    """
    segment = int(sample_rate * segment_ms / 1000.0 + 0.5)
    search = int(sample_rate * search_ms / 1000.0 + 0.5)
    overlap = max(int(sample_rate * overlap_ms / 1000.0 + 4.5), 16) & ~7
    while overlap * 2 > segment and overlap > 8:
        overlap -= 8
    return segment, search, overlap


def _wsola_plan(ratio: Tensor, length: int, segment: int, overlap: int) -> Tuple[int, Tensor]:
    """Number of segments and their nominal input positions ``[b, K]`` for outputs of ``length``."""
    step = segment - overlap
    k = max(1, math.ceil((length - overlap) / step))
    # sox: the input skip after segment k totals round(factor * k * step), factor = 1 / ratio.
    idx = torch.arange(k, dtype=torch.float64, device=ratio.device)
    nominal = torch.floor(idx.view(1, -1) * step / ratio.view(-1, 1).double() + 0.5).long()
    return k, nominal


def _wsola_search(xp: Tensor, nominal: Tensor, src: Tensor, step: int, search: int, overlap: int, counts: Tensor) -> None:
    """Fill ``src[:, 1:]`` (``src[:, 0]`` given): segment ``k`` starts at ``nominal[:, k] + i``, ``i`` in
    ``[0, search)`` minimising ``sum_j (xp[start + j] - xp[src[:, k - 1] + step + j])^2``, ``j < overlap``.
    Example ``b`` needs its first ``counts[b]`` segments; later ones get their nominal start
    (plus ``search // 2``), a valid position.

    On the CPU, sox's loop compiled (:func:`vcmr.audio.kernels.wsola_search`: float32 sums in
    sox's order, no GIL held); elsewhere :func:`_search_torch`.
    """
    if xp.device.type == "cpu":
        from .kernels import wsola_search

        out = src.numpy()
        wsola_search(
            np.ascontiguousarray(xp.numpy(), dtype=np.float32), np.ascontiguousarray(nominal.numpy()),
            np.ascontiguousarray(counts.numpy()), out, step, search, overlap,
        )
        return
    _search_torch(xp, nominal, src, step, search, overlap)


def _search_torch(xp: Tensor, nominal: Tensor, src: Tensor, step: int, search: int, overlap: int) -> None:
    """:func:`_wsola_search` in torch on ``xp``'s device (the GPU's path), every segment of every
    example searched (no ``counts``).

    Every candidate span is known in advance (it starts at the nominal position), so their
    spectra and window energies are computed for all segments at once; the sequential loop
    only correlates each segment's span with the continuation chosen before it (one small FFT
    pair per segment for the whole batch): ``argmin sum (c - buf)^2 = argmax (c . buf - |c|^2 / 2)``.
    """
    b, n_seg = src.shape
    span = search + overlap - 1
    n = next_fast_len(span)
    first = overlap - 1
    rows = torch.arange(b, device=xp.device).view(b, 1)
    spans = xp.unfold(-1, span, 1)[rows, nominal[:, 1:]]  # [b, K - 1, span]
    cum = torch.nn.functional.pad(spans.pow(2).cumsum(-1), (1, 0))
    half_energy = (cum[..., overlap : overlap + search] - cum[..., :search]).mul_(0.5)  # [b, K - 1, search]
    spans_f = torch.fft.rfft(spans, n=n)
    cont = torch.arange(overlap - 1, -1, -1, device=xp.device) + step
    for k in range(1, n_seg):
        buf = torch.gather(xp, 1, src[:, k - 1 : k] + cont)
        conv = torch.fft.irfft(spans_f[:, k - 1] * torch.fft.rfft(buf, n=n), n=n)
        src[:, k] = nominal[:, k] + (conv[:, first : first + search] - half_energy[:, k - 1]).argmax(-1)


def wsola_splices(
    x: Tensor,
    ratio: Tensor | float,
    length: int,
    segment: int,
    search: int,
    overlap: int,
    lengths: Optional[Tensor] = None,
    rows: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """The WSOLA stretch of :func:`wsola_stretch` up to its join: the padded input and where
    each output block is read from. With ``rows`` (``[b]`` indices into ``x``), of the rows
    ``x[rows]``, copied straight into the padded input.

    Returns:
        ``(xp, starts)``: ``xp: [b, L]`` float32, the clip after ``search // 2`` zeros and
        mirrored at its end; ``starts: [b, K + 1]`` int64, block ``k`` of the output (samples
        ``[k step, (k + 1) step)``, ``step = segment - overlap``) is ``xp[starts[k] :][:step]``,
        its first ``overlap`` samples (``1 <= k < K``) cross-faded linearly from
        ``xp[starts[k - 1] + step :]`` (:func:`vcmr.audio.kernels.wsola_join` joins one row).
    """
    b, t = x.shape if rows is None else (rows.numel(), x.shape[-1])
    if overlap <= 0 or 2 * overlap > segment or search < 1:
        raise ValueError(f"WSOLA sizes need 0 < 2 * overlap <= segment and search >= 1, got {segment}, {search}, {overlap}")
    r = torch.as_tensor(ratio, dtype=torch.float64).detach().cpu().expand(b)
    step = segment - overlap
    n_seg, nominal = _wsola_plan(r, length, segment, overlap)
    counts = torch.full((b,), n_seg, dtype=torch.long)
    if lengths is not None:
        # An example stops advancing once its own output is covered (one block past it).
        own = ((torch.as_tensor(lengths).detach().cpu().view(b) - overlap).clamp_min(1) + step - 1) // step
        counts = (own + 1).clamp(1, n_seg)
        nominal = torch.minimum(nominal, nominal.gather(1, counts.view(b, 1) - 1))
    lead = search // 2
    extra = max(0, int(nominal[:, -1].max()) + search + 2 * segment - t)
    # Zeros ahead (as sox), the end mirrored (repeatedly for an extension longer than the clip).
    xp = torch.empty(b, lead + t + extra, dtype=torch.float32, device=x.device)
    xp[:, :lead] = 0.0
    body = xp[:, lead : lead + t]
    if rows is None:
        body.copy_(x)
    elif x.device.type == "cpu":
        xv, bv = x.detach().numpy(), body.numpy()
        for j, row in enumerate(rows.tolist()):
            bv[j] = xv[row]
    else:
        body.copy_(x.index_select(0, rows.to(x.device)))
    if extra:
        xp[:, lead + t :] = _reflect_to(body, t + extra)[:, t:] if extra >= t else body[:, -extra - 1 : -1].flip(-1)
    dev = x.device
    nominal = nominal.to(dev)
    src = torch.empty(b, n_seg, dtype=torch.long, device=dev)
    src[:, 0] = lead
    if n_seg > 1:
        _wsola_search(xp, nominal, src, step, search, overlap, counts)
    # Segment k supplies output samples [k step, (k + 1) step); the first `overlap` of them
    # (k >= 1) cross-fade with the continuation of segment k - 1. A last block continues the
    # last segment (its `overlap` samples sox flushes at the end).
    starts = torch.cat([src, src[:, -1:] + step], dim=1)
    return xp, starts


def wsola_stretch(
    x: Tensor, ratio: Tensor | float, length: int, segment: int, search: int, overlap: int, lengths: Optional[Tensor] = None
) -> Tensor:
    """Stretch time by ``ratio[b]`` keeping pitch: sox's ``tempo`` (WSOLA) with factor ``1 / ratio``.

    The output is cut into segments of ``segment`` samples that advance by ``segment - overlap``
    and are joined by a linear cross-fade over ``overlap`` samples. Segment ``k`` is read from
    the input near ``k (segment - overlap) / ratio``: of the ``search`` positions from there on,
    the one whose first ``overlap`` samples differ least (sum of squares) from the natural
    continuation of segment ``k - 1``. As in sox, the input is preceded by ``search // 2``
    zeros, so the first segment starts with the clip. The clip is extended at its end by
    mirroring where a segment reads past it. The search runs for all examples at once, one
    segment after another; each example has its own ``ratio``.

    Args:
        x: ``[b, T]`` waveforms.
        ratio: ``[b]`` (or scalar) stretch factors (> 1: longer; output duration ``ratio * T``).
        length: output samples (every example).
        segment, search, overlap: sizes in samples (see :func:`wsola_sizes`), ``2 overlap <= segment``.
        lengths: optional ``[b]`` samples each example needs (<= ``length``); its samples past
            that are then left unspecified, and it reads no further input than it needs.

    Returns:
        ``[b, length]`` float32 (possibly a view).
    """
    b = x.shape[0]
    step = segment - overlap
    xp, starts = wsola_splices(x, ratio, length, segment, search, overlap, lengths)
    n_seg = starts.shape[1] - 1
    src = starts[:, :n_seg]
    dev = x.device
    if dev.type == "cpu":
        from .kernels import wsola_join

        out = np.empty((b, length), dtype=np.float32)
        xn, sn = xp.numpy(), starts.numpy()
        for r in range(b):
            wsola_join(xn[r], sn[r], step, overlap, 1.0, out[r])
        return torch.from_numpy(out)
    rows = torch.arange(b, device=dev).view(b, 1)
    blocks = xp.unfold(-1, step, 1)[rows, starts]  # [b, K + 1, step]
    if n_seg > 1:
        fade = torch.arange(overlap, device=dev, dtype=blocks.dtype) / overlap
        tails = xp.unfold(-1, overlap, 1)[rows, src[:, :-1] + step]  # [b, K - 1, overlap]
        blocks[:, 1:n_seg, :overlap].lerp_(tails, 1.0 - fade)
    return blocks.view(b, -1)[:, :length]


def _shift_vocoder(group: Tensor, value: float, n_fft: int, hop_length: int) -> Tensor:
    """Phase-vocoder pitch shift of ``group: [b, T]`` by ``value`` semitones -> ``[b, T]``."""
    t = group.shape[-1]
    # Stretch to a length L near a * T with only small prime factors, so the FFT of the
    # resampling step stays fast; the pitch factor is then L / T (within ~0.1 %, about
    # 1-2 cents, of 2 ** (s / 12) for clip lengths of a few seconds).
    stretched_len = nearest_smooth_len(t * 2.0 ** (value / 12.0))
    # Zero padding (not reflection) at the edges: a mirrored start would give the first
    # frame's bins phases that belong to no single sinusoid.
    spec = torch.stft(
        group,
        n_fft,
        hop_length,
        window=_hann_window(n_fft, group.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    spec = phase_vocoder(spec, t / stretched_len)
    return fft_resample(istft(spec, n_fft, hop_length, stretched_len), t)


def _shift_resample(group: Tensor, value: float) -> Tensor:
    """Playback-rate pitch shift of ``group: [b, T]`` by ``value`` semitones -> ``[b, T]``.

    The output's ``M = next_fast_len(T)`` samples are the band-limited resampling of the
    first ``L ~ 2 ** (value / 12) * M`` input samples (``L`` with small prime factors, so
    the pitch factor ``L / M`` is within ~0.1 % of ``2 ** (s / 12)``); the first ``T`` are
    kept. Upward shifts need more input than there is: the clip is extended by mirroring
    its end.
    """
    t = group.shape[-1]
    m = next_fast_len(t)
    span_len = nearest_smooth_len(m * 2.0 ** (value / 12.0))
    span = group[..., :span_len] if span_len <= t else _reflect_to(group, span_len)
    return fft_resample(span, m)[..., :t]


def _shift_wsola(group: Tensor, value: float, wsola: Tuple[int, int, int]) -> Tensor:
    """sox-style pitch shift of ``group: [b, T]`` by ``value`` semitones -> ``[b, T]``.

    WSOLA time stretch to a length ``L`` near ``2 ** (value / 12) * T`` with small prime
    factors, then band-limited resampling back to ``T`` samples (pitch factor ``L / T``).
    """
    t = group.shape[-1]
    stretched_len = nearest_smooth_len(t * 2.0 ** (value / 12.0))
    return fft_resample(wsola_stretch(group, stretched_len / t, stretched_len, *wsola), t)


def pitch_shift(
    x: Tensor,
    semitones: Tensor | float,
    n_fft: int,
    hop_length: int,
    method: str = "phase_vocoder",
    wsola: Optional[Tuple[int, int, int]] = None,
) -> Tensor:
    """Shift pitch by ``semitones[b]`` semitones keeping the length.

    ``phase_vocoder`` (tempo kept): each example is time-stretched by ``a = 2 ** (s / 12)``
    with a phase vocoder (length ``round(a * T)``), then resampled back to ``T`` samples
    (band-limited, via FFT), which multiplies every frequency by ``a``.

    ``wsola`` (tempo kept; sox's ``pitch``, which CLMR's ``PitchShift`` calls): the same with a
    WSOLA time stretch (:func:`wsola_stretch`) in place of the phase vocoder.

    ``resample`` (tempo changes too): the playback rate is multiplied by ``a``: the output
    is a band-limited resampling of a span ``a`` times as long as the output, so events
    come ``a`` times faster; upward shifts mirror the clip's end to fill the span.

    Examples sharing a semitone value are processed together; an example with 0
    semitones is returned unchanged.

    Args:
        x: ``[B, 1, T]`` waveform.
        semitones: ``[B]`` (or scalar) shifts in semitones (positive = higher).
        n_fft: STFT size of the phase vocoder in samples (used by ``phase_vocoder`` only).
        hop_length: STFT hop of the phase vocoder in samples (used by ``phase_vocoder`` only).
        method: ``"phase_vocoder"``, ``"wsola"`` or ``"resample"``.
        wsola: ``(segment, search, overlap)`` in samples (:func:`wsola_sizes`), for ``wsola``.

    Returns:
        ``[B, 1, T]``.
    """
    if method not in PITCH_METHODS:
        raise ValueError(f"pitch-shift method must be one of {PITCH_METHODS}, got {method!r}")
    if method == "wsola" and wsola is None:
        raise ValueError("the wsola pitch shift needs wsola=(segment, search, overlap) in samples")
    b, _, t = x.shape
    s = torch.as_tensor(semitones, dtype=torch.float64).detach().cpu().expand(b)
    out = x.clone()
    chunk = PITCH_CPU_CHUNK if x.device.type == "cpu" and method == "phase_vocoder" else b
    for value in torch.unique(s).tolist():
        if value == 0.0:
            continue
        members = torch.nonzero(s == value).view(-1).to(x.device)
        for idx in members.split(chunk):
            group = x.index_select(0, idx).reshape(-1, t).float()
            if method == "phase_vocoder":
                y = _shift_vocoder(group, value, n_fft, hop_length)
            elif method == "wsola":
                y = _shift_wsola(group, value, wsola)
            else:
                y = _shift_resample(group, value)
            out.index_copy_(0, idx, y.view(-1, 1, t).to(x.dtype))
    return out


def pitch_span(x: Tensor, length: int, stretch: Optional[Tuple[Tensor, Tuple[int, int, int]]] = None) -> Tensor:
    """The input a pitch shift resamples: ``[b, length]`` from ``x: [b, T]``.

    Without ``stretch`` (the ``resample`` method): the first ``length`` samples, the clip
    mirrored at its end where it is shorter. With ``stretch = (ratio [b], (segment, search,
    overlap))`` (the ``wsola`` method): the WSOLA stretch of each example by its ``ratio``.
    """
    if stretch is not None:
        ratio, sizes = stretch
        return wsola_stretch(x, ratio, length, *sizes)
    return x[..., :length] if length <= x.shape[-1] else _reflect_to(x, length)


@functools.lru_cache(maxsize=64)
def _bin_indices(n: int, device: torch.device) -> Tensor:
    """``[n // 2 + 1]`` float64 bin numbers ``0 .. n // 2``, built once per size and device."""
    return torch.arange(n // 2 + 1, dtype=torch.float64, device=device)


def delay_response(delay_samples: Tensor, n: int, volume: float | Tensor, device: torch.device) -> Tensor:
    """Frequency response ``1 + volume * exp(-2 pi i k d / n)`` of an echo, on an ``n``-point grid.

    ``exp(-2 pi i k d / n)`` for ``k = q * 256 + r`` is the product of two small float64 tables
    (``q`` and ``r`` terms), so the long axis costs one complex multiplication.

    Args:
        delay_samples: ``[b]`` delays in samples (may be fractional: a band-limited delay).
        n: FFT size.
        volume: gain of the delayed copy (scalar or ``[b]``).
        device: where the result goes.

    Returns:
        ``[b, n // 2 + 1]`` complex64.
    """
    n_bins = n // 2 + 1
    d = torch.as_tensor(delay_samples, dtype=torch.float64).to(device).view(-1, 1)
    v = torch.as_tensor(volume, dtype=torch.float64).to(device).expand(d.shape[0]).reshape(-1, 1)
    fine = torch.arange(_TABLE, dtype=torch.float64, device=device)
    coarse = torch.arange(-(-n_bins // _TABLE), dtype=torch.float64, device=device) * _TABLE
    # Turns reduced modulo 1 in float64 before the angle, so long delays keep their precision.
    w_fine = torch.polar(v, torch.remainder(fine * d / n, 1.0) * (-2.0 * math.pi)).to(torch.complex64)
    w_coarse = torch.polar(torch.ones_like(d), torch.remainder(coarse * d / n, 1.0) * (-2.0 * math.pi))
    echo = w_coarse.to(torch.complex64).unsqueeze(-1) * w_fine.unsqueeze(1)  # [b, Q, 256]
    return echo.view(d.shape[0], -1)[:, :n_bins].add_(1.0)


@functools.lru_cache(maxsize=16)
def _bin_hz(n: int, sample_rate: int, device: torch.device) -> Tensor:
    """``[n // 2 + 1]`` float32 frequencies in Hz of the bins of an ``n``-point real FFT."""
    return (_bin_indices(n, device) * (sample_rate / n)).float()


def butterworth_on_grid(
    n: int, sample_rate: int, cutoff_hz: Tensor, order: int, highpass: Tensor, device: torch.device
) -> Tensor:
    """:func:`butterworth_response` on the bins of an ``n``-point real FFT: ``[b, n // 2 + 1]`` float32.

    Written as ``1 / sqrt(1 + u^2n)`` with ``u = f / fc`` (low-pass) or ``fc / f`` (high-pass),
    in float32. Where ``u^2n`` overflows (a high order), the gain is 0, as it is to float32
    precision; at 0 Hz the high-pass gain is 0.
    """
    hp = highpass.to(device).view(-1)
    fc = cutoff_hz.to(device, torch.float64).view(-1, 1)
    u = _bin_hz(n, sample_rate, device).unsqueeze(0) * (1.0 / fc).float()
    if bool(hp.any()):
        u[hp] = u[hp].reciprocal()
    return _int_power_(u, 2 * order).add_(1.0).rsqrt_()


def _int_power_(u: Tensor, p: int) -> Tensor:
    """``u ** p`` in place for an integer ``p >= 1``, by squaring (torch's ``pow`` with an
    exponent other than 2 or 3 runs the generic power function, several times slower)."""
    if p == 1:
        return u
    if p % 2 == 0:
        return _int_power_(u.square_(), p // 2)
    odd = u.clone()
    return _int_power_(u.square_(), p // 2).mul_(odd)


def filter_extent(cutoff_hz: Tensor, sample_rate: int) -> int:
    """Samples on each side over which :func:`frequency_filter`'s response is not negligible."""
    return math.ceil(FILTER_PAD_PERIODS * sample_rate / float(cutoff_hz.min()))


def synthetic_rir(
    rt60_s: Tensor,
    length: int,
    sample_rate: int,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Synthetic room impulse responses: white noise under ``exp(-ln(1000) * t / rt60)``.

    The amplitude envelope falls by 60 dB at ``t = rt60``. Each response is scaled to unit
    energy so the reverberant part has about the level of the dry signal.

    Args:
        rt60_s: ``[B]`` reverberation times in seconds (> 0).
        length: response length in samples.
        sample_rate: samples per second.
        generator: source of the noise (drawn on its device).
        device: where the result goes (default: the generator's device, else CPU).

    Returns:
        ``[B, 1, length]`` float32.
    """
    gen_dev = generator.device if generator is not None else (device or torch.device("cpu"))
    device = device or gen_dev
    b = rt60_s.shape[0]
    noise = torch.randn((b, 1, length), generator=generator, device=gen_dev).to(device)
    t = torch.arange(length, device=device, dtype=torch.float32) / sample_rate
    envelope = torch.exp(-LN_1000 * t.view(1, 1, -1) / rt60_s.to(device, torch.float32).view(-1, 1, 1))
    h = noise * envelope
    return h / h.pow(2).sum(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


@functools.lru_cache(maxsize=4)
def rir_bank(
    rt60_s: Tuple[float, ...], per_rt60: int, length: int, sample_rate: int, seed: int, device: torch.device
) -> Tensor:
    """A fixed bank of :func:`synthetic_rir` responses, built once per argument set.

    Row ``i * per_rt60 + j`` is the ``j``-th response of reverberation time ``rt60_s[i]``; the
    noise of every row is independent, drawn on the CPU from a generator seeded with ``seed``
    (so the bank is the same on every device and in every process).

    Args:
        rt60_s: the reverberation times in seconds.
        per_rt60: responses per reverberation time.
        length: response length in samples.
        sample_rate: samples per second.
        seed: seed of the bank's own generator.
        device: where the bank lives.

    Returns:
        ``[len(rt60_s) * per_rt60, length]`` float32, each row of unit energy (do not modify).
    """
    rt60 = torch.tensor(rt60_s, dtype=torch.float64).repeat_interleave(per_rt60)
    bank = synthetic_rir(rt60, length, sample_rate, torch.Generator().manual_seed(seed))
    return bank.view(rt60.shape[0], length).to(device)


@functools.lru_cache(maxsize=2)
def rir_bank_spectra(
    rt60_s: Tuple[float, ...], per_rt60: int, length: int, sample_rate: int, seed: int, n: int, device: torch.device
) -> Tensor:
    """``rfft`` of the rows of :func:`rir_bank` zero-padded (or cut) to ``n`` samples:
    ``[rows, n // 2 + 1]`` complex64, built once per argument set (do not modify).

    The chain's FFT pass keeps its size from batch to batch, so one bank of spectra serves
    every batch: a reverberated example costs a row lookup instead of an FFT of its response.
    """
    return rfft_padded(rir_bank(rt60_s, per_rt60, length, sample_rate, seed, device), n)


def fft_convolve(x: Tensor, h: Tensor) -> Tensor:
    """Causal linear convolution ``y = x * h`` truncated to ``x``'s length, by FFT.

    Args:
        x: ``[B, C, T]``.
        h: ``[B, C, L]`` (or broadcastable) impulse responses.

    Returns:
        ``[B, C, T]``: ``y[t] = sum_k h[k] x[t - k]``.
    """
    t = x.shape[-1]
    n = next_fast_len(t + h.shape[-1] - 1)
    y = torch.fft.irfft(rfft_padded(x.float(), n) * rfft_padded(h.float(), n), n=n)
    return y[..., :t].to(x.dtype)


def reverb(x: Tensor, rir: Tensor, wet: Tensor | float) -> Tensor:
    """Mix ``(1 - wet) * x + wet * (x * rir)``.

    Args:
        x: ``[B, 1, T]`` waveform.
        rir: ``[B, 1, L]`` impulse responses at ``x``'s sample rate (e.g. :func:`synthetic_rir`).
        wet: ``[B]`` (or scalar) wet fraction in ``[0, 1]``.

    Returns:
        ``[B, 1, T]`` waveform.
    """
    w = _per_example(wet, x)
    return (1.0 - w) * x + w * fft_convolve(x, rir)


__all__ = [
    "FILTER_PAD_PERIODS",
    "PITCH_METHODS",
    "add_noise",
    "butterworth_response",
    "butterworth_on_grid",
    "center_crop",
    "check_batch",
    "crop",
    "crop_offsets",
    "delay",
    "delay_response",
    "fft_convolve",
    "fft_cost",
    "fast_pass_len",
    "fft_resample",
    "filter_extent",
    "frequency_filter",
    "gain",
    "highpass",
    "istft",
    "lowpass",
    "nearest_smooth_len",
    "next_fast_len",
    "phase_vocoder",
    "pitch_grid",
    "pitch_shift",
    "pitch_span",
    "polarity_inversion",
    "random_crop",
    "real_fft",
    "real_ifft",
    "reverb",
    "rfft_padded",
    "RESAMPLE_ROLLOFF",
    "resample_taper",
    "rir_bank",
    "rir_bank_spectra",
    "PASS_PITCH_TOLERANCE",
    "synthetic_rir",
    "wsola_sizes",
    "wsola_stretch",
]
