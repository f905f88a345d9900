"""The signal processing of CLMR's augmentations, batched, with explicit per-example parameters.

CLMR (Spijkervet & Burgoyne, 2021) augments with ``torchaudio-augmentations``, which runs
per example on the CPU through julius (filters) and sox (pitch, reverb). These functions
compute the same transforms on a whole ``[B, 1, T]`` batch on any device:

* :func:`sinc_filter`: julius' windowed-sinc low-pass (``zeros=8`` zero crossings, Hann
  window, unit DC gain, edges padded by replication), and the high-pass ``x - lowpass(x)``.
* :func:`mix_delay`: ``(x + volume * x[t - d]) / 2``.
* :func:`add_noise_std`: white noise with standard deviation ``ratio * std(x)``.
* :func:`sox_reverb`: sox's ``reverb`` effect (a Freeverb: 8 damped feedback combs in
  parallel, then 4 all-passes in series, per channel), with sox's parameterisation
  (reverberance, HF damping and room scale in percent): sox's sample loop on the CPU, and on
  other devices one exact frequency-domain response, since every part of it is linear and
  time-invariant.

Pitch shifting in cents reuses :func:`vcmr.audio.dsp.pitch_shift` (semitones = cents / 100).
No randomness here: the random transforms in :mod:`vcmr.audio.transforms` draw the parameters.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from vcmr.audio.dsp import _per_example, check_batch, next_fast_len, real_fft, real_ifft, rfft_padded

#: julius' default number of zero crossings kept on each side of the sinc.
SINC_ZEROS = 8

#: sox reverb (reverb.c, from Freeverb): comb and all-pass delay lengths at 44.1 kHz, and the
#: stereo spread added to (or taken from, alternately) each length for the second channel.
COMB_LENGTHS: Tuple[int, ...] = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)
ALLPASS_LENGTHS: Tuple[int, ...] = (225, 341, 441, 556)
STEREO_ADJUST = 12
#: All-pass feedback gain, and the wet gain factor, of sox's reverb.
ALLPASS_FEEDBACK = 0.5
WET_SCALE = 0.015
#: The impulse response is evaluated until its slowest comb has decayed by this factor
#: (relative amplitude; time-aliasing of the frequency sampling stays below it).
REVERB_TAIL_DECAY = 1e-6
#: Examples reverberated together (the transfer functions take ``chunk * FFT size`` memory).
REVERB_CHUNK = 8


# --------------------------------------------------------------------------------------
# Windowed-sinc filters (julius.lowpass_filter / highpass_filter)
# --------------------------------------------------------------------------------------


def sinc_half_size(cutoff: float, zeros: float = SINC_ZEROS) -> int:
    """Half length ``int(zeros / cutoff / 2)`` of julius' filter for a normalised cut-off (f / sr)."""
    return int(zeros / cutoff / 2)


def sinc_lowpass_kernel(cutoff: float, zeros: float = SINC_ZEROS) -> Tensor:
    """julius' low-pass FIR for ``cutoff`` in cycles per sample (``0 < cutoff <= 0.5``).

    ``h[t] = 2 c w[t] sinc(2 pi c t)`` for ``t = -H..H`` (``H = int(zeros / c / 2)``), ``w`` a
    symmetric Hann window of ``2H + 1`` points, then scaled so that ``sum(h) = 1``.

    Returns:
        ``[2H + 1]`` float32.
    """
    if not 0.0 < cutoff <= 0.5:
        raise ValueError(f"cut-off must be in (0, 0.5] cycles per sample, got {cutoff}")
    half = sinc_half_size(cutoff, zeros)
    window = torch.hann_window(2 * half + 1, periodic=False)
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    arg = 2 * cutoff * math.pi * t
    sinc = torch.where(t == 0, torch.ones_like(arg), torch.sin(arg) / torch.where(t == 0, torch.ones_like(arg), arg))
    h = 2 * cutoff * window * sinc
    return h / h.sum()


def sinc_filter(x: Tensor, cutoff_hz: Tensor, sample_rate: int, highpass: Tensor, zeros: float = SINC_ZEROS) -> Tensor:
    """Per-example windowed-sinc low-pass, or high-pass ``x - lowpass(x)``, as julius computes them.

    Each example is padded at both ends by repeating its edge samples (``H_max`` of them,
    the largest half length in the batch; a shorter kernel is zero beyond its own ``H``,
    so the result equals padding by its own ``H``) and convolved by FFT.

    Args:
        x: ``[B, 1, T]`` waveform.
        cutoff_hz: ``[B]`` cut-off frequencies in Hz, below ``sample_rate / 2``.
        sample_rate: Hz.
        highpass: ``[B]`` bool, True for a high-pass.
        zeros: zero crossings of the sinc kept on each side.

    Returns:
        ``[B, 1, T]``.
    """
    check_batch(x)
    b, _, t = x.shape
    cutoffs = (torch.as_tensor(cutoff_hz, dtype=torch.float64).detach().cpu().expand(b) / sample_rate).tolist()
    kernels = [sinc_lowpass_kernel(c, zeros) for c in cutoffs]
    h_max = max(len(k) // 2 for k in kernels)
    bank = torch.zeros(b, 2 * h_max + 1)
    for i, k in enumerate(kernels):
        h = len(k) // 2
        bank[i, h_max - h : h_max + h + 1] = k
    xf = x.float()
    padded = torch.nn.functional.pad(xf, (h_max, h_max), mode="replicate")  # [B, 1, T + 2H]
    n = next_fast_len(padded.shape[-1] + bank.shape[-1] - 1)
    # real_fft / real_ifft: on the CPU MKL with kept plans (vcmr.audio.cpu_fft), torch elsewhere.
    buf = padded.new_zeros(b, 1, n)
    buf[..., : padded.shape[-1]] = padded
    spec = real_fft(buf)
    buf.zero_()
    buf[:, 0, : bank.shape[-1]] = bank.to(x.device)
    spec.mul_(real_fft(buf))
    del buf
    low = real_ifft(spec, n)[..., 2 * h_max : 2 * h_max + t]
    hp = torch.as_tensor(highpass, device=x.device).view(b, 1, 1)
    return torch.where(hp, xf - low, low).to(x.dtype)


# --------------------------------------------------------------------------------------
# Delay and noise (torchaudio-augmentations Delay / Noise)
# --------------------------------------------------------------------------------------


def mix_delay(x: Tensor, delay_samples: Tensor, volume: float) -> Tensor:
    """``y[t] = (x[t] + volume * x[t - d]) / 2`` with ``x[t - d] = 0`` for ``t < d``.

    Args:
        x: ``[B, 1, T]`` waveform.
        delay_samples: ``[B]`` integer delays ``0 < d < T``.
        volume: gain of the delayed copy.

    Returns:
        ``[B, 1, T]``.
    """
    check_batch(x)
    b, _, t = x.shape
    d = torch.as_tensor(delay_samples, device=x.device).long().view(b, 1, 1)
    if bool((d <= 0).any()) or bool((d >= t).any()):
        raise ValueError(f"delays must be in 1 .. {t - 1} samples, got {d.view(-1).tolist()}")
    idx = torch.arange(t, device=x.device).view(1, 1, t) - d
    delayed = torch.gather(x, 2, idx.clamp_min(0)) * (idx >= 0).to(x.dtype)
    return (x + volume * delayed) / 2


def add_noise_std(x: Tensor, ratio: Tensor, noise: Tensor) -> Tensor:
    """``x + ratio * std(x) * noise``: white noise whose standard deviation is ``ratio`` times the signal's.

    Args:
        x: ``[B, 1, T]`` waveform.
        ratio: ``[B]`` noise std / signal std (``std`` over the example, Bessel-corrected, as ``torch.std``).
        noise: ``[B, 1, T]`` standard normal noise.

    Returns:
        ``[B, 1, T]``.
    """
    check_batch(x)
    std = x.std(dim=-1, keepdim=True)
    return x + _per_example(ratio, x) * std * noise


# --------------------------------------------------------------------------------------
# sox reverb (Freeverb): the sample loop on the CPU, one exact frequency response elsewhere
# --------------------------------------------------------------------------------------


def sox_reverb_coefficients(reverberance: Tensor, damping: Tensor, wet_gain_db: float) -> Dict[str, Tensor]:
    """Loop gains of sox's reverb from its percentages (reverb.c, ``reverb_create``).

    ``feedback = 1 - exp((reverberance - b) / (a b))`` with ``a = -1 / ln(1 - 0.3)`` and
    ``b = 100 / (a ln(1 - 0.98) + 1)``, which maps reverberance 0..100 % to 0.3..0.98;
    ``hf_damping = damping / 100 * 0.3 + 0.2``; ``gain = 10^(wet_gain_db / 20) * 0.015``.
    """
    a = -1.0 / math.log(1.0 - 0.3)
    b = 100.0 / (math.log(1.0 - 0.98) * a + 1.0)
    rev = torch.as_tensor(reverberance, dtype=torch.float64)
    return {
        "feedback": 1.0 - torch.exp((rev - b) / (a * b)),
        "hf_damping": torch.as_tensor(damping, dtype=torch.float64) / 100.0 * 0.3 + 0.2,
        "gain": torch.full_like(rev, 10.0 ** (wet_gain_db / 20.0) * WET_SCALE),
    }


def sox_reverb_delays(room_scale: Tensor, sample_rate: int, stereo_depth: float) -> Tuple[Tensor, Tensor]:
    """Comb and all-pass delays in samples of each of sox's filter arrays (``filter_array_create``).

    There is one filter array for ``stereo_depth = 0`` and two otherwise; array ``i`` has the
    stereo offset ``o = i * stereo_depth / 100``, added to and taken from the lengths in turn
    (``+o`` for the first comb, ``-o`` for the second, ...; the all-passes continue the
    alternation). Comb ``k``: ``int(scale * r * (COMB_LENGTHS[k] + 12 o) + 0.5)`` with
    ``scale = room_scale / 100 * 0.9 + 0.1`` and ``r = sample_rate / 44100``; all-pass ``k``:
    ``int(r * (ALLPASS_LENGTHS[k] + 12 o) + 0.5)``.

    Returns:
        ``(combs [B, A, 8], allpasses [B, A, 4])`` int64, ``A`` the number of arrays.
    """
    scale = torch.as_tensor(room_scale, dtype=torch.float64) / 100.0 * 0.9 + 0.1
    r = sample_rate / 44100.0
    depth = stereo_depth / 100.0
    combs, allpasses = [], []
    for i in range(int(math.ceil(depth)) + 1):
        offset = i * depth
        comb_row, ap_row = [], []
        for length in COMB_LENGTHS:
            comb_row.append(torch.floor(scale * r * (length + STEREO_ADJUST * offset) + 0.5))
            offset = -offset
        for length in ALLPASS_LENGTHS:
            ap_row.append(torch.full_like(scale, float(int(r * (length + STEREO_ADJUST * offset) + 0.5))))
            offset = -offset
        combs.append(torch.stack(comb_row, dim=-1))
        allpasses.append(torch.stack(ap_row, dim=-1))
    return torch.stack(combs, dim=1).long(), torch.stack(allpasses, dim=1).long()


def sox_reverb(
    x: Tensor,
    reverberance: Tensor,
    damping: Tensor,
    room_scale: Tensor,
    sample_rate: int,
    stereo_depth: float = 100.0,
    pre_delay_ms: float = 0.0,
    wet_gain_db: float = 0.0,
) -> Tensor:
    """sox ``reverb <reverberance> <damping> <room_scale>`` on mono input, mixed back to mono.

    Each of sox's filter arrays (:func:`sox_reverb_delays`) turns the (pre-delayed) input into
    ``gain * allpass_4(...allpass_1(sum_k comb_k(x)))`` where, with feedback ``f`` and damping
    ``d`` (:func:`sox_reverb_coefficients`),

    * comb of delay ``N``: ``o[n] = x[n-N] + f s[n-N]``, ``s[n] = (1-d) o[n] + d s[n-1]``, i.e.
      ``z^-N (1 - d z^-1) / (1 - d z^-1 - f (1-d) z^-N)``;
    * all-pass of delay ``M``: ``v[n] = x[n] + 0.5 v[n-M]``, ``y[n] = v[n-M] - x[n]``, i.e.
      ``(1.5 z^-M - 1) / (1 - 0.5 z^-M)``.

    sox writes one output channel per array (stereo for mono input with a stereo depth);
    CLMR's chain then mixes them to mono (``channels 1``: their mean), so the output is
    ``x + mean over arrays of wet``, clipped to [-1, 1] like sox's 32-bit integer samples.
    On the CPU this is sox's sample loop, compiled (:func:`vcmr.audio.kernels.sox_reverb_rows`).
    Elsewhere, since the whole wet path is linear and time-invariant, it is applied as one
    transfer function sampled on an FFT grid long enough for the impulse response to decay
    by :data:`REVERB_TAIL_DECAY` (the output is as long as the input; sox adds no tail).

    Args:
        x: ``[B, 1, T]`` waveform.
        reverberance, damping, room_scale: ``[B]`` percentages (0..100).
        sample_rate: Hz.
        stereo_depth: percent; 0 gives one filter array, otherwise two.
        pre_delay_ms: delay of the wet path.
        wet_gain_db: gain of the wet path.

    Returns:
        ``[B, 1, T]``.
    """
    check_batch(x)
    b, _, t = x.shape
    dev = x.device
    coef = {k: v.expand(b) for k, v in sox_reverb_coefficients(reverberance, damping, wet_gain_db).items()}
    combs, allpasses = sox_reverb_delays(torch.as_tensor(room_scale).expand(b), sample_rate, stereo_depth)
    pre = int(pre_delay_ms / 1000.0 * sample_rate + 0.5)
    if dev.type == "cpu":
        return _sox_reverb_loop(x, coef, combs, allpasses, pre)
    return _sox_reverb_spectral(x, coef, combs, allpasses, pre)


def _sox_reverb_loop(x: Tensor, coef: Dict[str, Tensor], combs: Tensor, allpasses: Tensor, pre: int) -> Tensor:
    """:func:`sox_reverb` on the CPU: sox's sample loop, compiled; with more than one torch
    thread, half the examples run in a second thread (the loop holds no GIL)."""
    from vcmr.audio.kernels import sox_reverb_rows

    b, _, t = x.shape
    inp = x[:, 0].detach().float().contiguous().numpy()
    fb, hf, gain = (coef[k].detach().double().contiguous().numpy() for k in ("feedback", "hf_damping", "gain"))
    cb, ap = combs.contiguous().numpy(), allpasses.contiguous().numpy()
    out = torch.empty(b, t, dtype=torch.float32)
    out_n = out.numpy()

    def rows(first: int, last: int) -> None:
        s = slice(first, last)
        sox_reverb_rows(inp[s], pre, fb[s], hf[s], gain[s], cb[s], ap[s], ALLPASS_FEEDBACK, out_n[s])

    if torch.get_num_threads() > 1 and b > 1:
        with ThreadPoolExecutor(max_workers=1) as helper:
            second = helper.submit(rows, b // 2, b)
            rows(0, b // 2)
            second.result()
    else:
        rows(0, b)
    return out.view(b, 1, t).to(x.dtype)


def _sox_reverb_spectral(x: Tensor, coef: Dict[str, Tensor], combs: Tensor, allpasses: Tensor, pre: int) -> Tensor:
    """:func:`sox_reverb` as one transfer function per example on an FFT grid (the GPU's path)."""
    dev = x.device
    # Examples whose responses decay alike share a chunk, so few get a longer FFT than they need.
    order = torch.argsort(_tail_samples(coef["feedback"], combs))
    out = torch.empty_like(x)
    for idx in order.split(REVERB_CHUNK):
        out[idx.to(dev)] = _sox_reverb_chunk(
            x[idx.to(dev)], {k: v[idx] for k, v in coef.items()}, combs[idx], allpasses[idx], pre
        )
    return out


def _tail_samples(feedback: Tensor, combs: Tensor) -> Tensor:
    """``[b]`` samples until the slowest comb of each example has decayed by :data:`REVERB_TAIL_DECAY`.

    A comb loses a factor ``feedback`` per round trip of its delay (at DC; faster elsewhere).
    """
    f = feedback.double().clamp(max=1 - 1e-12)
    return combs.amax(dim=(1, 2)).double() * (math.log(REVERB_TAIL_DECAY) / torch.log(f))


#: Fine table length of :func:`_phasor` (bin k = q * _TABLE + r).
_TABLE = 256


def _phasor(n: int, delay: Tensor, device: torch.device) -> Tensor:
    """``z^-delay`` at ``z = exp(2 pi i k / n)``, ``k = 0 .. n // 2``: ``[b, A, n // 2 + 1]`` complex64
    for integer delays ``[b, A]``.

    ``exp(-2 pi i k d / n)`` for ``k = q * 256 + r`` is the product of a coarse (``q``) and a
    fine (``r``) table, each computed in float64 from ``(k d) mod n`` reduced exactly in
    integers: one complex multiplication per bin, full precision for long delays.
    """
    re, im = _phasor_parts(n, delay, device)
    return torch.complex(re, im)


def _phasor_parts(
    n: int, delay: Tensor, device: torch.device, out: Optional[Tuple[Tensor, Tensor]] = None
) -> Tuple[Tensor, Tensor]:
    """:func:`_phasor` as its real and imaginary parts, each ``[b, A, n // 2 + 1]`` float32
    (views of ``[b, A, Q * 256]`` buffers, ``out`` if given: real arithmetic on the parts is
    about twice as fast as complex arithmetic, and reused buffers skip the page faults of
    fresh large allocations)."""
    n_bins = n // 2 + 1
    d = delay.to(device=device, dtype=torch.int64).unsqueeze(-1)  # [b, A, 1]
    fine = torch.arange(_TABLE, dtype=torch.int64, device=device)
    coarse = torch.arange(-(-n_bins // _TABLE), dtype=torch.int64, device=device) * _TABLE
    scale = -2.0 * math.pi / n

    def table(k: Tensor) -> Tuple[Tensor, Tensor]:
        turns = ((k * d) % n).double() * scale
        return torch.cos(turns).float(), torch.sin(turns).float()

    (cr, ci), (fr, fi) = table(coarse), table(fine)
    cr, ci, fr, fi = cr.unsqueeze(-1), ci.unsqueeze(-1), fr.unsqueeze(-2), fi.unsqueeze(-2)  # [b, A, Q, 1], [b, A, 1, 256]
    shape = (*d.shape[:-1], coarse.shape[0], _TABLE)
    re, im = out if out is not None else (torch.empty(shape, device=device), torch.empty(shape, device=device))
    re, im = re.view(shape), im.view(shape)
    torch.mul(cr, fr, out=re).addcmul_(ci, fi, value=-1.0)
    torch.mul(cr, fi, out=im).addcmul_(ci, fr)
    return re.flatten(-2)[..., :n_bins], im.flatten(-2)[..., :n_bins]


def _sox_reverb_chunk(x: Tensor, coef: Dict[str, Tensor], combs: Tensor, allpasses: Tensor, pre: int) -> Tensor:
    """:func:`sox_reverb` on a few examples (memory grows with the FFT size times the chunk).

    With ``q = -f (1 - d) / (1 - d z^-1)`` (one per example) a comb is ``z^-N / w``,
    ``w = 1 + q z^-N``, computed as ``z^-N conj(w) / |w|^2`` in real arithmetic on contiguous
    real and imaginary parts (about twice as fast as torch's complex division on the CPU). The
    all-passes do not depend on the room size, so their product is computed once per array.
    """
    b, _, t = x.shape
    dev = x.device
    tail = float(_tail_samples(coef["feedback"], combs).max())
    ap_tail = int(allpasses.max()) * math.ceil(math.log(REVERB_TAIL_DECAY) / math.log(ALLPASS_FEEDBACK))
    n = next_fast_len(t + pre + int(math.ceil(tail)) + ap_tail)
    z1 = _phasor(n, torch.ones(1, 1, dtype=torch.int64), dev)  # [1, 1, K]
    fb = coef["feedback"].float().to(dev).view(b, 1, 1)
    damp = coef["hf_damping"].float().to(dev).view(b, 1, 1)
    q = (1 - damp * z1).reciprocal().mul_((-fb * (1 - damp)).to(torch.complex64))  # [b, 1, K]
    n_arrays, k_bins = combs.shape[1], z1.shape[-1]
    # q for every array, contiguous (broadcasting over the array axis is a slower kernel).
    qr = q.real.expand(b, n_arrays, k_bins).contiguous()
    qi = q.imag.expand(b, n_arrays, k_bins).contiguous()
    wet_r = torch.zeros(b, n_arrays, k_bins, device=dev)
    wet_i = torch.zeros(b, n_arrays, k_bins, device=dev)
    # Work buffers reused by every comb: every step below writes in place.
    table_shape = (b, n_arrays, -(-k_bins // _TABLE) * _TABLE)
    parts = (torch.empty(table_shape, device=dev), torch.empty(table_shape, device=dev))
    w_r, w_i, inv_den, tmp = (torch.empty(b, n_arrays, k_bins, device=dev) for _ in range(4))
    for j in range(combs.shape[-1]):
        zr, zi = _phasor_parts(n, combs[..., j], dev, parts)
        # w = 1 + q z^-N; comb = z^-N conj(w) / |w|^2 (|w| >= 1 - f > 0).
        torch.mul(zr, qr, out=w_r).addcmul_(zi, qi, value=-1.0).add_(1.0)
        torch.mul(zi, qr, out=w_i).addcmul_(zr, qi)
        torch.mul(w_r, w_r, out=inv_den).addcmul_(w_i, w_i).reciprocal_()
        wet_r.addcmul_(torch.mul(zr, w_r, out=tmp).addcmul_(zi, w_i), inv_den)
        wet_i.addcmul_(torch.mul(zi, w_r, out=tmp).addcmul_(zr, w_i, value=-1.0), inv_den)
    # All-pass delays depend on the array only (sox_reverb_delays): one product per array.
    ap = torch.ones(n_arrays, k_bins, dtype=torch.complex64, device=dev)
    for j in range(allpasses.shape[-1]):
        zm = _phasor(n, allpasses[:1, :, j], dev)[0]  # [A, K]
        ap *= (zm * 1.5).sub_(1.0).div_(zm.mul_(-ALLPASS_FEEDBACK).add_(1.0))
    # Mean over the arrays (sox "channels 1") of wet times the array's all-passes.
    ap_r, ap_i = ap.real.contiguous(), ap.imag.contiguous()
    h_r = (wet_r * ap_r).sub_(wet_i * ap_i).mean(dim=1)
    h_i = (wet_r * ap_i).add_(wet_i * ap_r).mean(dim=1)
    h = torch.complex(h_r, h_i).mul_(coef["gain"].float().to(dev).view(b, 1))
    if pre:
        h = h * _phasor(n, torch.full((1, 1), pre, dtype=torch.int64), dev).view(1, -1)
    xf = x.float().view(b, t)
    y = torch.fft.irfft(rfft_padded(xf, n).mul_(h), n=n)[:, :t]
    return (xf + y).clamp(-1.0, 1.0).view(b, 1, t).to(x.dtype)


__all__ = [
    "ALLPASS_LENGTHS",
    "COMB_LENGTHS",
    "SINC_ZEROS",
    "add_noise_std",
    "mix_delay",
    "sinc_filter",
    "sinc_half_size",
    "sinc_lowpass_kernel",
    "sox_reverb",
    "sox_reverb_coefficients",
    "sox_reverb_delays",
]
