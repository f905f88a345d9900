"""Batched waveform augmentations for contrastive music pretraining (CLMR's chain).

Every transform works on a whole batch ``x: [B, 1, T]`` float waveform on whatever device
``x`` lives on (CPU or GPU), with one independent draw per example: whether it is applied
(probability ``p``) and its parameters. The chain is an ``nn.Module`` without state, meant
to be called by a training step after the batch has reached the training device::

    chain = build_augmentation(cfg.augment, sample_rate=16000, crop_length=59049)
    x1 = chain(batch, generator)   # [B, 1, T_in] -> [B, 1, crop_length]

Order of the chain (CLMR): random crop (always) -> polarity inversion -> additive white
noise -> gain -> high- or low-pass filter -> delay (echo) -> pitch shift -> reverb.

All randomness is drawn from the optional ``torch.Generator`` given to ``forward`` (small
parameter tensors on the generator's device, then moved), so a seeded generator gives
identical outputs. Each transform is also available as a function with explicit
parameters (``gain(x, db)``, ``pitch_shift(x, semitones, ...)``, ...).

Pitch shift has two methods. ``phase_vocoder`` (CLMR's): a phase-vocoder time stretch by
``2**(s/12)`` (with identity phase locking) followed by band-limited (FFT) resampling back
to the input length, so pitch moves by ``s`` semitones while the duration and tempo stay
the same. ``resample``: the playback rate changes by ``2**(s/12)`` (band-limited FFT
resampling of a span ``2**(s/12)`` times the output length), which moves pitch by ``s``
semitones and keeps the length but also changes the tempo; it is several times cheaper.
Semitone values come from a grid, and examples sharing a value are processed together,
so the work is batched per distinct value.

Every random transform works only on the examples it picks (index-select, process,
scatter back), except sign flips and gains, which are one multiplication of the whole
batch by per-example factors (1 for examples not picked, which leaves them bit for bit
unchanged). Inside the chain, transforms write into the chain's own buffer in place.

Filters are zero-phase Butterworth magnitude responses applied in the frequency domain;
reverb convolves (by FFT) with a synthetic room impulse response: white noise under an
exponential envelope that falls by 60 dB after the drawn RT60.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from vcmr.config import ConfigError

#: Clips the pitch shift's phase vocoder processes at once on CPU: their spectra then stay
#: in cache, which is faster than one large batch. GPUs take every clip of a value at once.
PITCH_CPU_CHUNK = 4

#: Pitch-shift methods (``augment.pitch.method``).
PITCH_METHODS = ("phase_vocoder", "resample")

#: 2 pi, for wrapping phase differences.
TWO_PI = 2.0 * math.pi

#: Zero padding of the frequency-domain filters, in periods of the lowest cut-off.
FILTER_PAD_PERIODS = 16

#: ln(1000): an amplitude envelope exp(-LN_1000 * t / rt60) has fallen by 60 dB at rt60.
LN_1000 = math.log(1000.0)

# --------------------------------------------------------------------------------------
# Config schema (values live in config/augment/*.yaml)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class PolarityConfig:
    """Multiply the waveform by -1."""

    p: float = MISSING


@dataclasses.dataclass
class NoiseConfig:
    """Additive white Gaussian noise at a signal-to-noise ratio drawn in dB."""

    p: float = MISSING
    min_snr_db: float = MISSING
    max_snr_db: float = MISSING


@dataclasses.dataclass
class GainConfig:
    """Scale by a gain drawn uniformly in dB."""

    p: float = MISSING
    min_db: float = MISSING
    max_db: float = MISSING


@dataclasses.dataclass
class FilterConfig:
    """Zero-phase Butterworth high-pass (with probability ``highpass_prob``) or low-pass."""

    p: float = MISSING
    highpass_prob: float = MISSING
    order: int = MISSING
    lowpass_min_hz: float = MISSING
    lowpass_max_hz: float = MISSING
    highpass_min_hz: float = MISSING
    highpass_max_hz: float = MISSING


@dataclasses.dataclass
class DelayConfig:
    """Echo: ``x + volume * x delayed``, delay drawn from ``min_ms, min_ms+step_ms, ..., max_ms``."""

    p: float = MISSING
    min_ms: float = MISSING
    max_ms: float = MISSING
    step_ms: float = MISSING
    volume: float = MISSING


@dataclasses.dataclass
class PitchConfig:
    """Pitch shift by semitones drawn from ``min..max`` in ``step_semitones`` steps (0 excluded).

    ``method``: ``phase_vocoder`` (keeps tempo; ``n_fft``/``hop_length`` are its STFT) or
    ``resample`` (playback-rate change: also changes tempo; ignores ``n_fft``/``hop_length``).
    """

    p: float = MISSING
    min_semitones: float = MISSING
    max_semitones: float = MISSING
    step_semitones: float = MISSING
    n_fft: int = MISSING
    hop_length: int = MISSING
    method: str = MISSING


@dataclasses.dataclass
class ReverbConfig:
    """Convolution with a synthetic decaying-noise room response, mixed with the dry signal."""

    p: float = MISSING
    min_rt60_s: float = MISSING
    max_rt60_s: float = MISSING
    min_wet: float = MISSING
    max_wet: float = MISSING
    ir_length_s: float = MISSING


@dataclasses.dataclass
class AugmentConfig:
    """The whole chain. With ``enabled: false`` only the random crop is applied."""

    enabled: bool = MISSING
    polarity: PolarityConfig = MISSING
    noise: NoiseConfig = MISSING
    gain: GainConfig = MISSING
    filter: FilterConfig = MISSING
    delay: DelayConfig = MISSING
    pitch: PitchConfig = MISSING
    reverb: ReverbConfig = MISSING


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _check_batch(x: Tensor) -> None:
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"expected a waveform batch of shape [B, 1, T], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point waveform, got dtype {x.dtype}")


def _per_example(v: Tensor | float, x: Tensor) -> Tensor:
    """A parameter as a ``[B, 1, 1]`` tensor on ``x``'s device and dtype."""
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
    for r in primes:
        while n % r == 0:
            n //= r
    return n == 1


@functools.lru_cache(maxsize=4096)
def next_fast_len(n: int) -> int:
    """Smallest integer >= ``n`` of the form ``16 * m``, ``m``'s prime factors all <= 5.

    Such sizes are at most a few percent above ``n`` and among the fastest FFT sizes.
    """
    m = -(-max(1, int(n)) // _PAD_MULTIPLE)
    while not _is_smooth(m, _PAD_RADICES):
        m += 1
    return _PAD_MULTIPLE * m


@functools.lru_cache(maxsize=4096)
def nearest_smooth_len(x: float, primes: Tuple[int, ...] = _STRETCH_PRIMES) -> int:
    """The integer closest to ``x`` whose prime factors all lie in ``primes`` (ties go up)."""
    up = max(1, math.ceil(x))
    while not _is_smooth(up, primes):
        up += 1
    down = max(1, math.floor(x))
    while down > 1 and not _is_smooth(down, primes):
        down -= 1
    return down if x - down < up - x else up


def _uniform(n: int, low: float, high: float, generator: Optional[torch.Generator]) -> Tensor:
    dev = generator.device if generator is not None else torch.device("cpu")
    return low + (high - low) * torch.rand(n, generator=generator, device=dev, dtype=torch.float64)


def _choice(n: int, values: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    dev = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randint(len(values), (n,), generator=generator, device=dev)
    return values.to(dev)[idx]


def _randn_like(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like ``x``, from ``generator`` (drawn on its device)."""
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, dtype=x.dtype, device=generator.device, generator=generator).to(x.device)


# --------------------------------------------------------------------------------------
# Functional transforms: explicit per-example parameters, batched, length-preserving
# --------------------------------------------------------------------------------------


def center_crop(x: Tensor, crop_length: int) -> Tensor:
    """Deterministic centre crop for validation.

    Args:
        x: ``[B, C, T_in]`` waveform, ``T_in >= crop_length``.
        crop_length: output length in samples.

    Returns:
        ``[B, C, crop_length]``; the window starts at ``(T_in - crop_length) // 2``.
    """
    t_in = x.shape[-1]
    if crop_length <= 0:
        raise ValueError(f"crop_length must be positive, got {crop_length}")
    if crop_length > t_in:
        raise ValueError(f"crop_length ({crop_length} samples) is longer than the input ({t_in} samples)")
    start = (t_in - crop_length) // 2
    return x[..., start : start + crop_length]


def crop(x: Tensor, start: Tensor, crop_length: int) -> Tensor:
    """Cut ``x[b, :, start[b] : start[b] + crop_length]`` for every example.

    Args:
        x: ``[B, C, T_in]``.
        start: ``[B]`` integer start offsets in samples, ``0 <= start <= T_in - crop_length``.
        crop_length: output length in samples.
    """
    b = x.shape[0]
    # Windows of the unfolded view are contiguous rows, so this copies whole rows instead
    # of gathering sample by sample through a [B, C, crop_length] index tensor.
    rows = torch.arange(b, device=x.device)
    return x.unfold(-1, crop_length, 1)[rows, :, start.to(x.device, torch.long)]


def random_crop(x: Tensor, crop_length: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Random window of ``crop_length`` samples per example (independent offsets).

    Args:
        x: ``[B, C, T_in]`` with ``T_in >= crop_length``.
        crop_length: output length in samples.
        generator: source of the offsets.

    Returns:
        ``[B, C, crop_length]``.
    """
    t_in = x.shape[-1]
    if crop_length <= 0:
        raise ValueError(f"crop_length must be positive, got {crop_length}")
    if crop_length > t_in:
        raise ValueError(f"crop_length ({crop_length} samples) is longer than the input ({t_in} samples)")
    dev = generator.device if generator is not None else torch.device("cpu")
    start = torch.randint(t_in - crop_length + 1, (x.shape[0],), generator=generator, device=dev)
    if t_in == crop_length:
        return x
    return crop(x, start, crop_length)


def polarity_inversion(x: Tensor) -> Tensor:
    """``-x``. Shape unchanged."""
    return -x


def gain(x: Tensor, db: Tensor | float) -> Tensor:
    """Scale example ``b`` by ``10 ** (db[b] / 20)``.

    Args:
        x: ``[B, 1, T]`` waveform.
        db: ``[B]`` (or scalar) gain in decibels.
    """
    return x * torch.pow(10.0, _per_example(db, x) / 20.0)


def add_noise(x: Tensor, snr_db: Tensor | float, noise: Tensor) -> Tensor:
    """Add white noise scaled so that ``rms(x[b]) / rms(noise part) = 10 ** (snr_db[b] / 20)``.

    Args:
        x: ``[B, 1, T]`` waveform.
        snr_db: ``[B]`` (or scalar) signal-to-noise ratio in dB.
        noise: ``[B, 1, T]`` standard normal noise (the caller draws it, for seeding).
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
    pad = min(t, math.ceil(FILTER_PAD_PERIODS * sample_rate / float(cutoff.min())))
    n = next_fast_len(t + pad)
    spec = torch.fft.rfft(x.float(), n=n)
    freqs = torch.fft.rfftfreq(n, d=1.0 / sample_rate, device=x.device)
    spec = spec * butterworth_response(freqs, cutoff, order, hp).unsqueeze(1)
    return torch.fft.irfft(spec, n=n)[..., :t].to(x.dtype)


def lowpass(x: Tensor, cutoff_hz: Tensor | float, sample_rate: int, order: int) -> Tensor:
    """Zero-phase Butterworth low-pass; see :func:`frequency_filter`."""
    return frequency_filter(x, cutoff_hz, sample_rate, order, False)


def highpass(x: Tensor, cutoff_hz: Tensor | float, sample_rate: int, order: int) -> Tensor:
    """Zero-phase Butterworth high-pass; see :func:`frequency_filter`."""
    return frequency_filter(x, cutoff_hz, sample_rate, order, True)


def delay(x: Tensor, delay_samples: Tensor | int, volume: float) -> Tensor:
    """Echo: ``y[b, t] = x[b, t] + volume * x[b, t - d[b]]`` (zero before the start).

    Args:
        x: ``[B, 1, T]`` waveform.
        delay_samples: ``[B]`` (or scalar) non-negative integer delays in samples.
        volume: gain of the delayed copy.
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
    """Band-limited resampling of ``x[..., L]`` to ``x[..., length]`` by truncating or
    zero-padding its spectrum (ideal low-pass, so shrinking does not alias)."""
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


@functools.lru_cache(maxsize=16)
def _hann_window(n_fft: int, device: torch.device) -> Tensor:
    """Periodic Hann window, built once per size and device."""
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
        hop_length: hop between frames.
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
    """Extend ``x[..., T]`` to ``length`` samples by mirroring the end (repeatedly if needed)."""
    while x.shape[-1] < length:
        extra = min(length - x.shape[-1], x.shape[-1] - 1)
        if extra <= 0:  # a single sample: repeat it
            return torch.nn.functional.pad(x, (0, length - x.shape[-1]), mode="replicate")
        x = torch.cat([x, x[..., -extra - 1 : -1].flip(-1)], dim=-1)
    return x


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


def pitch_shift(
    x: Tensor, semitones: Tensor | float, n_fft: int, hop_length: int, method: str = "phase_vocoder"
) -> Tensor:
    """Shift pitch by ``semitones[b]`` semitones keeping the length.

    ``phase_vocoder`` (tempo kept): each example is time-stretched by ``a = 2 ** (s / 12)``
    with a phase vocoder (length ``round(a * T)``), then resampled back to ``T`` samples
    (band-limited, via FFT), which multiplies every frequency by ``a``.

    ``resample`` (tempo changes too): the playback rate is multiplied by ``a``: the output
    is a band-limited resampling of a span ``a`` times as long as the output, so events
    come ``a`` times faster; upward shifts mirror the clip's end to fill the span.

    Examples sharing a semitone value are processed together; an example with 0
    semitones is returned unchanged.

    Args:
        x: ``[B, 1, T]`` waveform.
        semitones: ``[B]`` (or scalar) shifts in semitones (positive = higher).
        n_fft: STFT size of the phase vocoder (unused by ``resample``).
        hop_length: STFT hop of the phase vocoder (unused by ``resample``).
        method: ``"phase_vocoder"`` or ``"resample"``.

    Returns:
        ``[B, 1, T]``.
    """
    if method not in PITCH_METHODS:
        raise ValueError(f"pitch-shift method must be one of {PITCH_METHODS}, got {method!r}")
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
            else:
                y = _shift_resample(group, value)
            out.index_copy_(0, idx, y.view(-1, 1, t).to(x.dtype))
    return out


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
    y = torch.fft.irfft(torch.fft.rfft(x.float(), n=n) * torch.fft.rfft(h.float(), n=n), n=n)
    return y[..., :t].to(x.dtype)


def reverb(x: Tensor, rir: Tensor, wet: Tensor | float) -> Tensor:
    """Mix ``(1 - wet) * x + wet * (x * rir)``.

    Args:
        x: ``[B, 1, T]`` waveform.
        rir: ``[B, 1, L]`` impulse responses (e.g. :func:`synthetic_rir`).
        wet: ``[B]`` (or scalar) wet fraction in ``[0, 1]``.
    """
    w = _per_example(wet, x)
    return (1.0 - w) * x + w * fft_convolve(x, rir)


# --------------------------------------------------------------------------------------
# Random transforms (nn.Modules): per-example application mask + parameters
# --------------------------------------------------------------------------------------

Params = Dict[str, Tensor]


class RandomTransform(nn.Module):
    """Applies a transform to each example with probability ``p`` (independent draws).

    Subclasses implement :meth:`sample` (parameters for all ``B`` examples, on the
    generator's device) and :meth:`apply` (the transform on the selected sub-batch), or
    :meth:`scale` for transforms that only multiply each example by a factor. Only the
    selected examples are processed; the others are returned bit-for-bit unchanged.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        """Draw the parameters of every example (``[B]`` tensors)."""
        return {}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        """Transform every example of ``x`` (``[b, 1, T]``) with its ``params`` (``[b]``)."""
        raise NotImplementedError

    def scale(self, params: Params, x: Tensor) -> Optional[Tensor]:
        """Per-example factors ``[b]`` (``x``'s dtype and device) if the transform is a pure
        scaling, else ``None`` (then :meth:`apply` is used)."""
        return None

    def forward_with_params(
        self, x: Tensor, generator: Optional[torch.Generator] = None, inplace: bool = False
    ) -> Tuple[Tensor, Params]:
        """Like :meth:`forward`, also returning the draws (``params["apply"]``: ``[B]`` bool).

        With ``inplace=True`` the result is written into ``x`` (which must not be needed
        by the caller any more); the chain does so on its own buffer to skip copies.
        """
        _check_batch(x)
        b = x.shape[0]
        dev = generator.device if generator is not None else torch.device("cpu")
        # Always draw the same amount per call so the stream does not depend on p.
        mask = torch.rand(b, generator=generator, device=dev) < self.p
        params = self.sample(b, generator)
        params["apply"] = mask
        idx = torch.nonzero(mask.cpu()).view(-1)
        if idx.numel() == 0:
            return x, params
        sub = {k: v[idx.to(v.device)] for k, v in params.items() if k != "apply"}
        factor = self.scale(sub, x)
        if factor is not None:
            # One pass over the batch; a factor of exactly 1 leaves an example's bits as they are.
            full = torch.ones(b, dtype=x.dtype, device=x.device)
            full[idx.to(x.device)] = factor
            full = full.view(b, 1, 1)
            return (x.mul_(full) if inplace else x * full), params
        if idx.numel() == b:
            y = self.apply(x, sub, generator)
            return (x.copy_(y) if inplace and y is not x else y), params
        idx = idx.to(x.device)
        y = self.apply(x.index_select(0, idx), sub, generator).to(x.dtype)
        return (x.index_copy_(0, idx, y) if inplace else x.index_copy(0, idx, y)), params

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``x: [B, 1, T]`` -> ``[B, 1, T]``, each example transformed with probability ``p``."""
        return self.forward_with_params(x, generator)[0]

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomPolarity(RandomTransform):
    """Sign flip with probability ``p``."""

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return polarity_inversion(x)

    def scale(self, params: Params, x: Tensor) -> Optional[Tensor]:
        return torch.tensor(-1.0, dtype=x.dtype, device=x.device)


class RandomNoise(RandomTransform):
    """White Gaussian noise at an SNR drawn uniformly in ``[min_snr_db, max_snr_db]``."""

    def __init__(self, p: float, min_snr_db: float, max_snr_db: float):
        super().__init__(p)
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        return {"snr_db": _uniform(batch_size, self.min_snr_db, self.max_snr_db, generator)}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return add_noise(x, params["snr_db"], _randn_like(x, generator))


class RandomGain(RandomTransform):
    """Gain drawn uniformly in ``[min_db, max_db]`` decibels."""

    def __init__(self, p: float, min_db: float, max_db: float):
        super().__init__(p)
        self.min_db, self.max_db = float(min_db), float(max_db)

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        return {"db": _uniform(batch_size, self.min_db, self.max_db, generator)}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return gain(x, params["db"])

    def scale(self, params: Params, x: Tensor) -> Optional[Tensor]:
        # Same arithmetic as gain(), so both give the same bits.
        return torch.pow(10.0, params["db"].to(x.device, x.dtype) / 20.0)


class RandomFilter(RandomTransform):
    """High-pass (probability ``highpass_prob``) or low-pass Butterworth, cut-off drawn uniformly."""

    def __init__(
        self,
        p: float,
        sample_rate: int,
        highpass_prob: float,
        order: int,
        lowpass_min_hz: float,
        lowpass_max_hz: float,
        highpass_min_hz: float,
        highpass_max_hz: float,
    ):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.highpass_prob = float(highpass_prob)
        self.order = int(order)
        self.lowpass_range = (float(lowpass_min_hz), float(lowpass_max_hz))
        self.highpass_range = (float(highpass_min_hz), float(highpass_max_hz))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        dev = generator.device if generator is not None else torch.device("cpu")
        hp = torch.rand(batch_size, generator=generator, device=dev) < self.highpass_prob
        u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
        lo = torch.where(hp, self.highpass_range[0], self.lowpass_range[0])
        hi = torch.where(hp, self.highpass_range[1], self.lowpass_range[1])
        return {"highpass": hp, "cutoff_hz": lo + (hi - lo) * u}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return frequency_filter(x, params["cutoff_hz"], self.sample_rate, self.order, params["highpass"].to(x.device))

    def extra_repr(self) -> str:
        return f"p={self.p}, highpass_prob={self.highpass_prob}, order={self.order}"


class RandomDelay(RandomTransform):
    """Echo with a delay drawn from the grid ``min_ms, min_ms + step_ms, ..., max_ms``."""

    def __init__(self, p: float, sample_rate: int, min_ms: float, max_ms: float, step_ms: float, volume: float):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.volume = float(volume)
        n = int(math.floor((max_ms - min_ms) / step_ms + 1e-9)) + 1
        self.delays_ms = [float(min_ms) + i * float(step_ms) for i in range(n)]

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        ms = _choice(batch_size, torch.tensor(self.delays_ms, dtype=torch.float64), generator)
        return {"delay_ms": ms, "delay_samples": torch.round(ms * self.sample_rate / 1000.0).long()}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return delay(x, params["delay_samples"], self.volume)


class RandomPitchShift(RandomTransform):
    """Pitch shift by semitones drawn from a grid (0 excluded), batched per distinct value."""

    def __init__(
        self,
        p: float,
        min_semitones: float,
        max_semitones: float,
        step_semitones: float,
        n_fft: int,
        hop_length: int,
        method: str = "phase_vocoder",
    ):
        super().__init__(p)
        if method not in PITCH_METHODS:
            raise ConfigError(f"augment.pitch.method = {method!r}: must be one of {', '.join(PITCH_METHODS)}")
        self.n_fft, self.hop_length, self.method = int(n_fft), int(hop_length), str(method)
        n = int(math.floor((max_semitones - min_semitones) / step_semitones + 1e-9)) + 1
        grid = [float(min_semitones) + i * float(step_semitones) for i in range(n)]
        self.semitones = [round(v, 9) for v in grid if abs(v) > 1e-9]

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        if not self.semitones:
            return {"semitones": torch.zeros(batch_size, dtype=torch.float64)}
        return {"semitones": _choice(batch_size, torch.tensor(self.semitones, dtype=torch.float64), generator)}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return pitch_shift(x, params["semitones"], self.n_fft, self.hop_length, self.method)

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, method={self.method}, semitones={self.semitones}, "
            f"n_fft={self.n_fft}, hop_length={self.hop_length}"
        )


class RandomReverb(RandomTransform):
    """Synthetic-room reverb: RT60 and wet fraction drawn uniformly, fresh noise IR per example."""

    def __init__(
        self,
        p: float,
        sample_rate: int,
        min_rt60_s: float,
        max_rt60_s: float,
        min_wet: float,
        max_wet: float,
        ir_length_s: float,
    ):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.rt60_range = (float(min_rt60_s), float(max_rt60_s))
        self.wet_range = (float(min_wet), float(max_wet))
        self.ir_length = max(1, int(round(ir_length_s * sample_rate)))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        return {
            "rt60_s": _uniform(batch_size, *self.rt60_range, generator),
            "wet": _uniform(batch_size, *self.wet_range, generator),
        }

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        ir_len = min(self.ir_length, x.shape[-1])
        rir = synthetic_rir(params["rt60_s"], ir_len, self.sample_rate, generator, device=x.device)
        return reverb(x, rir, params["wet"])

    def extra_repr(self) -> str:
        return f"p={self.p}, rt60_s={self.rt60_range}, wet={self.wet_range}, ir_length={self.ir_length}"


# --------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------


class AugmentationChain(nn.Module):
    """Random crop followed by the random transforms, in order.

    Args:
        crop_length: output length in samples.
        transforms: name -> transform, applied in insertion order (empty: crop only).
    """

    def __init__(self, crop_length: int, transforms: Optional[Mapping[str, RandomTransform]] = None):
        super().__init__()
        if crop_length <= 0:
            raise ConfigError(f"crop_length must be a positive number of samples, got {crop_length}")
        self.crop_length = int(crop_length)
        self.transforms = nn.ModuleDict(dict(transforms or {}))

    def forward_with_params(
        self, x: Tensor, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Dict[str, Params]]:
        """Like :meth:`forward`, also returning every transform's draws by name."""
        _check_batch(x)
        if x.shape[-1] < self.crop_length:
            raise ValueError(
                f"crop_length ({self.crop_length} samples) is longer than the input "
                f"({x.shape[-1]} samples): load longer clips or lower crop_length"
            )
        out = random_crop(x, self.crop_length, generator)
        if self.transforms and out.data_ptr() == x.data_ptr():
            out = out.clone()  # the transforms below write into `out`, never into the caller's x
        drawn: Dict[str, Params] = {}
        for name, transform in self.transforms.items():
            out, drawn[name] = transform.forward_with_params(out, generator, inplace=True)
        return out, drawn

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Augment a batch.

        Args:
            x: ``[B, 1, T_in]`` float waveform, ``T_in >= crop_length``, on any device.
            generator: source of every random draw; seed it for reproducible output.

        Returns:
            ``[B, 1, crop_length]`` on ``x``'s device.
        """
        return self.forward_with_params(x, generator)[0]

    def extra_repr(self) -> str:
        return f"crop_length={self.crop_length}"


def _fail(key: str, value: Any, reason: str) -> None:
    raise ConfigError(f"augment.{key} = {value!r}: {reason}")


def _check_p(cfg: DictConfig, name: str) -> None:
    p = cfg[name].p
    if not 0.0 <= p <= 1.0:
        _fail(f"{name}.p", p, "a probability must be in [0, 1]")


def _check_range(cfg: DictConfig, name: str, lo: str, hi: str) -> None:
    a, b = cfg[name][lo], cfg[name][hi]
    if a > b:
        _fail(f"{name}.{lo}", a, f"must not exceed augment.{name}.{hi} ({b})")


def validate_config(cfg: Mapping | DictConfig, sample_rate: int, crop_length: int) -> DictConfig:
    """Check an augmentation config against :class:`AugmentConfig` and value ranges.

    Args:
        cfg: the ``augment`` block (or a mapping holding it under ``augment``).
        sample_rate: samples per second of the waveforms.
        crop_length: output length in samples.

    Returns:
        The typed config. Raises :class:`ConfigError` naming the offending key.
    """
    if isinstance(cfg, (Mapping, DictConfig)) and "augment" in cfg and "enabled" not in cfg:
        cfg = cfg["augment"]
    if not isinstance(cfg, (Mapping, DictConfig)):
        raise ConfigError(f"augment: expected a mapping, got {type(cfg).__name__}")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(AugmentConfig), cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
        raise ConfigError(f"augment.{key}: {msg}") from None
    missing = sorted(OmegaConf.missing_keys(typed))
    if missing:
        raise ConfigError("augment: required key(s) without a value: " + ", ".join(f"augment.{k}" for k in missing))
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
    if crop_length <= 0:
        raise ConfigError(f"crop_length must be a positive number of samples, got {crop_length}")
    if not typed.enabled:
        # A disabled chain only crops: its transform ranges never meet this sample rate.
        return typed
    nyquist = sample_rate / 2.0
    for name in ("polarity", "noise", "gain", "filter", "delay", "pitch", "reverb"):
        _check_p(typed, name)
    _check_range(typed, "noise", "min_snr_db", "max_snr_db")
    _check_range(typed, "gain", "min_db", "max_db")
    f = typed.filter
    if not 0.0 <= f.highpass_prob <= 1.0:
        _fail("filter.highpass_prob", f.highpass_prob, "a probability must be in [0, 1]")
    if f.order < 1:
        _fail("filter.order", f.order, "the filter order must be >= 1")
    for key in ("lowpass_min_hz", "lowpass_max_hz", "highpass_min_hz", "highpass_max_hz"):
        if not 0.0 < f[key] < nyquist:
            _fail(f"filter.{key}", f[key], f"a cut-off must lie in (0, {nyquist:g}) Hz at {sample_rate} Hz")
    _check_range(typed, "filter", "lowpass_min_hz", "lowpass_max_hz")
    _check_range(typed, "filter", "highpass_min_hz", "highpass_max_hz")
    d = typed.delay
    if d.min_ms < 0:
        _fail("delay.min_ms", d.min_ms, "a delay must be >= 0")
    if d.step_ms <= 0:
        _fail("delay.step_ms", d.step_ms, "the delay grid step must be > 0")
    _check_range(typed, "delay", "min_ms", "max_ms")
    if typed.enabled and d.p > 0 and d.max_ms * sample_rate / 1000.0 >= crop_length:
        _fail("delay.max_ms", d.max_ms, f"the delay must be shorter than the crop ({crop_length} samples)")
    ps = typed.pitch
    if ps.step_semitones <= 0:
        _fail("pitch.step_semitones", ps.step_semitones, "the semitone grid step must be > 0")
    _check_range(typed, "pitch", "min_semitones", "max_semitones")
    if ps.hop_length <= 0 or ps.hop_length > ps.n_fft:
        _fail("pitch.hop_length", ps.hop_length, f"must be in [1, augment.pitch.n_fft={ps.n_fft}]")
    if ps.n_fft < 2 or ps.n_fft % 2:
        _fail("pitch.n_fft", ps.n_fft, "must be an even number >= 2")
    if ps.method not in PITCH_METHODS:
        _fail("pitch.method", ps.method, f"must be one of {', '.join(PITCH_METHODS)}")
    if typed.enabled and ps.p > 0 and ps.method == "phase_vocoder" and ps.n_fft > crop_length:
        _fail("pitch.n_fft", ps.n_fft, f"the STFT window must not exceed the crop ({crop_length} samples)")
    r = typed.reverb
    if r.min_rt60_s <= 0:
        _fail("reverb.min_rt60_s", r.min_rt60_s, "a reverberation time must be > 0 seconds")
    _check_range(typed, "reverb", "min_rt60_s", "max_rt60_s")
    for key in ("min_wet", "max_wet"):
        if not 0.0 <= r[key] <= 1.0:
            _fail(f"reverb.{key}", r[key], "the wet fraction must be in [0, 1]")
    _check_range(typed, "reverb", "min_wet", "max_wet")
    if r.ir_length_s <= 0:
        _fail("reverb.ir_length_s", r.ir_length_s, "the impulse response length must be > 0 seconds")
    return typed


def build_augmentation(cfg: Mapping | DictConfig, sample_rate: int, crop_length: int) -> AugmentationChain:
    """Build the chain from an ``augment`` config block (see ``config/augment/clmr.yaml``).

    Args:
        cfg: values of :class:`AugmentConfig` (a mapping or ``DictConfig``).
        sample_rate: samples per second of the waveforms the chain will see.
        crop_length: output length in samples.

    Returns:
        The chain; with ``enabled: false`` it only crops. Transforms with ``p: 0`` are left out.
    """
    c = validate_config(cfg, sample_rate, crop_length)
    transforms: Dict[str, RandomTransform] = {}
    if c.enabled:
        candidates: List[Tuple[str, RandomTransform]] = [
            ("polarity", RandomPolarity(c.polarity.p)),
            ("noise", RandomNoise(c.noise.p, c.noise.min_snr_db, c.noise.max_snr_db)),
            ("gain", RandomGain(c.gain.p, c.gain.min_db, c.gain.max_db)),
            (
                "filter",
                RandomFilter(
                    c.filter.p,
                    sample_rate,
                    c.filter.highpass_prob,
                    c.filter.order,
                    c.filter.lowpass_min_hz,
                    c.filter.lowpass_max_hz,
                    c.filter.highpass_min_hz,
                    c.filter.highpass_max_hz,
                ),
            ),
            (
                "delay",
                RandomDelay(c.delay.p, sample_rate, c.delay.min_ms, c.delay.max_ms, c.delay.step_ms, c.delay.volume),
            ),
            (
                "pitch",
                RandomPitchShift(
                    c.pitch.p,
                    c.pitch.min_semitones,
                    c.pitch.max_semitones,
                    c.pitch.step_semitones,
                    c.pitch.n_fft,
                    c.pitch.hop_length,
                    c.pitch.method,
                ),
            ),
            (
                "reverb",
                RandomReverb(
                    c.reverb.p,
                    sample_rate,
                    c.reverb.min_rt60_s,
                    c.reverb.max_rt60_s,
                    c.reverb.min_wet,
                    c.reverb.max_wet,
                    c.reverb.ir_length_s,
                ),
            ),
        ]
        transforms = {name: t for name, t in candidates if t.p > 0}
    return AugmentationChain(crop_length, transforms)


__all__ = [
    "AugmentConfig",
    "AugmentationChain",
    "DelayConfig",
    "FilterConfig",
    "GainConfig",
    "NoiseConfig",
    "PitchConfig",
    "PolarityConfig",
    "RandomDelay",
    "RandomFilter",
    "RandomGain",
    "RandomNoise",
    "RandomPitchShift",
    "RandomPolarity",
    "RandomReverb",
    "RandomTransform",
    "ReverbConfig",
    "add_noise",
    "build_augmentation",
    "butterworth_response",
    "center_crop",
    "crop",
    "delay",
    "fft_convolve",
    "fft_resample",
    "frequency_filter",
    "gain",
    "highpass",
    "istft",
    "lowpass",
    "phase_vocoder",
    "next_fast_len",
    "pitch_shift",
    "polarity_inversion",
    "random_crop",
    "reverb",
    "synthetic_rir",
    "validate_config",
]
