"""Compiled CPU loops (numba) of the augmentation chain's sequential steps.

A loop whose every step depends on the one before (the WSOLA search, sox's reverb) cannot be
batched into array operations; compiled, it runs without Python's per-step overhead and
without holding the GIL, so another thread (the FFT pass's helper) runs beside it. Each function is compiled
on first use and cached on disk (numba's ``cache=True``: next to this file, or in numba's
user cache directory where that is read-only; ``NUMBA_CACHE_DIR`` overrides both).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def wsola_search(xp: np.ndarray, nominal: np.ndarray, counts: np.ndarray, src: np.ndarray, step: int, search: int, overlap: int) -> None:
    """Fill ``src[:, 1:]`` in place, sox ``tempo``'s linear search, row by row.

    Segment ``k`` of row ``r`` starts at ``nominal[r, k] + i`` for the ``i`` in ``[0, search)``
    whose ``overlap`` samples differ least from the continuation of segment ``k - 1``:
    ``sum_j (xp[r, start + j] - xp[r, src[r, k - 1] + step + j])^2``, summed in float32 over
    ``j`` in order as sox sums it, the first least difference winning as in sox. Segments
    from ``counts[r]`` on get ``nominal[r, k] + search // 2``.

    Args:
        xp: ``[b, L]`` float32 padded input.
        nominal: ``[b, K]`` int64 nominal segment starts.
        counts: ``[b]`` int64 segments each row needs.
        src: ``[b, K]`` int64 segment starts, ``src[:, 0]`` given.
        step, search, overlap: segment advance, candidates and overlap, in samples.
    """
    b, n_seg = src.shape
    half = search // 2
    diff = np.empty(search, dtype=np.float32)
    for r in range(b):
        x = xp[r]
        for k in range(1, n_seg):
            base = nominal[r, k]
            if k >= counts[r]:
                src[r, k] = base + half
                continue
            tail = src[r, k - 1] + step
            diff[:] = 0.0
            # Candidates in the inner loop: every step of it is independent (vectorised),
            # and each candidate's sum still runs over j in order. Four j per pass over the
            # candidates: a quarter of the loads and stores of the sums.
            j = 0
            while j + 4 <= overlap:
                c0, c1, c2, c3 = x[tail + j], x[tail + j + 1], x[tail + j + 2], x[tail + j + 3]
                window = x[base + j : base + j + search + 3]
                for i in range(search):
                    e0 = window[i] - c0
                    e1 = window[i + 1] - c1
                    e2 = window[i + 2] - c2
                    e3 = window[i + 3] - c3
                    diff[i] = (((diff[i] + e0 * e0) + e1 * e1) + e2 * e2) + e3 * e3
                j += 4
            while j < overlap:
                c = x[tail + j]
                window = x[base + j : base + j + search]
                for i in range(search):
                    e = window[i] - c
                    diff[i] += e * e
                j += 1
            best = 0
            least = diff[0]
            for i in range(1, search):
                if diff[i] < least:
                    least = diff[i]
                    best = i
            src[r, k] = base + best



@numba.njit(nogil=True, cache=True)
def wsola_join(xp: np.ndarray, starts: np.ndarray, step: int, overlap: int, scale: float, out: np.ndarray) -> None:
    """One row of a WSOLA stretch (:func:`vcmr.audio.dsp.wsola_splices`), times ``scale``,
    into ``out`` (its first ``len(out)`` samples).

    Block ``k`` is ``xp[starts[k]:][:step]``; for ``1 <= k < len(starts) - 1`` its first
    ``overlap`` samples fade linearly from the continuation of block ``k - 1``:
    ``(head - tail) * (j / overlap) + tail``, in float32 as the batched join computes it.
    """
    length = out.shape[0]
    n_blocks = starts.shape[0]
    s = np.float32(scale)
    fade = np.arange(overlap).astype(np.float32) / np.float32(overlap)
    pos = 0
    for k in range(n_blocks):
        if pos >= length:
            break
        a = starts[k]
        m = min(step, length - pos)
        first = 0
        # Each loop reads and writes through views that start at its first sample: indexed
        # from 0, the loops vectorise (about 8x faster than offsets added inside the loop).
        if 1 <= k < n_blocks - 1:
            tail = starts[k - 1] + step
            first = min(overlap, m)
            head = xp[a : a + first]
            cont = xp[tail : tail + first]
            dst = out[pos : pos + first]
            for j in range(first):
                t = cont[j]
                dst[j] = ((head[j] - t) * fade[j] + t) * s
        src = xp[a + first : a + m]
        dst = out[pos + first : pos + m]
        for j in range(m - first):
            dst[j] = src[j] * s
        pos += m


@numba.njit(nogil=True, cache=True)
def sox_reverb_rows(
    x: np.ndarray,
    pre: int,
    feedback: np.ndarray,
    hf_damping: np.ndarray,
    gain: np.ndarray,
    combs: np.ndarray,
    allpasses: np.ndarray,
    allpass_feedback: float,
    out: np.ndarray,
) -> None:
    """sox's reverb (reverb.c's ``filter_array_process``) sample by sample, row by row, in float64.

    Each of row ``r``'s filter arrays ``a`` turns the input, delayed by ``pre`` samples, into
    ``gain[r] * allpass_4(...allpass_1(sum_k comb_k(input)))``: comb ``k`` (delay
    ``combs[r, a, k]``, from the last to the first as sox runs them) outputs ``o``, the sample it
    stored ``N`` steps ago, keeps ``s = o + (s - o) * hf_damping[r]`` and stores
    ``input + s * feedback[r]``; all-pass ``k`` (delay ``allpasses[r, a, k]``) outputs
    ``o - in`` and stores ``in + o * allpass_feedback``. ``out[r]`` is ``x[r]`` plus the mean of
    the arrays' outputs, clipped to [-1, 1] (sox's integer samples, then a mix to mono).

    Args:
        x: ``[b, T]`` float32 input. out: ``[b, T]`` float32, written.
        feedback, hf_damping, gain: ``[b]`` float64.
        combs: ``[b, A, 8]`` int64 (an even number of combs) and allpasses ``[b, A, 4]`` int64 delays in samples (>= 1).
    """
    if combs.shape[2] % 2:
        raise ValueError("sox_reverb_rows runs the combs in pairs: their number must be even")
    b, t = x.shape
    n_arrays = combs.shape[1]
    inp = np.empty(t, dtype=np.float64)
    acc = np.empty(t, dtype=np.float64)
    wet = np.empty(t, dtype=np.float64)
    for r in range(b):
        inp[:pre] = 0.0
        for i in range(pre, t):
            inp[i] = x[r, i - pre]
        wet[:] = 0.0
        f = feedback[r]
        hf = hf_damping[r]
        for a in range(n_arrays):
            # The combs run in parallel on the same input (their sum does not depend on the
            # order, as each comb's sum is in sox's order: last comb first), one after another
            # over the whole signal, each with its state in registers.
            acc[:] = 0.0
            for k in range(combs.shape[2] - 1, 0, -2):
                # Two combs per pass (k, then k - 1): two independent recursions side by side.
                n1, n2 = combs[r, a, k], combs[r, a, k - 1]
                buf1, buf2 = np.zeros(n1), np.zeros(n2)
                p1, p2 = 0, 0
                s1, s2 = 0.0, 0.0
                for i in range(t):
                    o1 = buf1[p1]
                    o2 = buf2[p2]
                    s1 = o1 + (s1 - o1) * hf
                    s2 = o2 + (s2 - o2) * hf
                    buf1[p1] = inp[i] + s1 * f
                    buf2[p2] = inp[i] + s2 * f
                    p1 = p1 - 1 if p1 > 0 else n1 - 1
                    p2 = p2 - 1 if p2 > 0 else n2 - 1
                    acc[i] = (acc[i] + o1) + o2
            for k in range(allpasses.shape[2] - 1, -1, -1):
                n = allpasses[r, a, k]
                buf = np.zeros(n)
                ptr = 0
                for i in range(t):
                    o = buf[ptr]
                    buf[ptr] = acc[i] + o * allpass_feedback
                    ptr = ptr - 1 if ptr > 0 else n - 1
                    acc[i] = o - acc[i]
            g = gain[r]
            for i in range(t):
                wet[i] += acc[i] * g
        for i in range(t):
            v = np.float64(x[r, i]) + wet[i] / n_arrays
            out[r, i] = min(1.0, max(-1.0, v))


# --- Frequency responses multiplied into one row's spectrum (the FFT pass on the CPU) ------
# ``spec`` is a complex64 spectrum seen as float32 pairs ``[2 m]`` (``z.view(np.float32)``),
# multiplied in place; each loop is over bins only, so it vectorises (numpy's error model: a
# float division by zero gives inf, as IEEE arithmetic, instead of raising). The products
# go through views of one block that start at its first bin: indexed from 0, the loops
# vectorise (2-2.5x faster than offsets added inside the loop).

_BLOCK = 256


@numba.njit(nogil=True, cache=True, error_model="numpy")
def mul_butterworth(spec: np.ndarray, bin_over_cutoff: float, order: int, highpass: bool) -> None:
    """Multiply by the zero-phase Butterworth magnitude ``|H(f)|`` of ``order``.

    With ``q = (f / f_c)^2n``, ``f / f_c = k * bin_over_cutoff`` at bin ``k``: ``1 / sqrt(1 + q)``
    (low-pass) or ``1 / sqrt(1 + 1 / q)`` (high-pass; 0 at 0 Hz). In float32: where ``q``
    overflows, the gain is 0 (low-pass) or 1 (high-pass), never NaN.
    """
    m = spec.shape[0] // 2
    c = np.float32(bin_over_cutoff)
    one = np.float32(1.0)
    u2 = np.empty(_BLOCK, dtype=np.float32)
    q = np.empty(_BLOCK, dtype=np.float32)
    # Bin numbers as float32 from a float ramp (exact below 2^24): converting an int64 to a
    # float has no AVX2 instruction, so a conversion per bin would keep the loop scalar.
    ramp = np.arange(_BLOCK).astype(np.float32)
    for k0 in range(0, m, _BLOCK):
        kk = min(_BLOCK, m - k0)
        base = np.float32(k0)
        for j in range(kk):
            u = (base + ramp[j]) * c
            u2[j] = u * u
            q[j] = u * u
        for _ in range(order - 1):
            for j in range(kk):
                q[j] *= u2[j]
        if highpass:
            for j in range(kk):
                q[j] = one / q[j]
        for j in range(kk):
            u2[j] = one / np.sqrt(one + q[j])
        blk = spec[2 * k0 : 2 * (k0 + kk)]
        for j in range(kk):
            blk[2 * j] *= u2[j]
            blk[2 * j + 1] *= u2[j]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def mul_echo(spec: np.ndarray, delay: float, n: int, volume: float, gain: float) -> None:
    """Multiply by an echo's response ``gain * (1 + volume * exp(-2 pi i k delay / n))``.

    The phase factor of bin ``k = q * 256 + r`` is the product of a coarse one (``q``) and a
    fine one (``r``), each from its angle reduced modulo one turn in float64, so a long delay
    keeps its precision; the product is in float32.
    """
    m = spec.shape[0] // 2
    turns = delay / n
    fr = np.empty(_BLOCK, dtype=np.float32)
    fi = np.empty(_BLOCK, dtype=np.float32)
    for r in range(_BLOCK):
        a = -2.0 * np.pi * ((r * turns) % 1.0)
        fr[r] = volume * np.cos(a)
        fi[r] = volume * np.sin(a)
    hr = np.empty(_BLOCK, dtype=np.float32)
    hi = np.empty(_BLOCK, dtype=np.float32)
    g = np.float32(gain)
    one = np.float32(1.0)
    for k0 in range(0, m, _BLOCK):
        a = -2.0 * np.pi * ((k0 * turns) % 1.0)
        cr = np.float32(np.cos(a))
        ci = np.float32(np.sin(a))
        kk = min(_BLOCK, m - k0)
        # The block's response first, then the product (two loops that each vectorise).
        for j in range(kk):
            hr[j] = (one + (cr * fr[j] - ci * fi[j])) * g
            hi[j] = (cr * fi[j] + ci * fr[j]) * g
        blk = spec[2 * k0 : 2 * (k0 + kk)]
        for j in range(kk):
            re = blk[2 * j]
            im = blk[2 * j + 1]
            blk[2 * j] = re * hr[j] - im * hi[j]
            blk[2 * j + 1] = re * hi[j] + im * hr[j]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def mul_mix(spec: np.ndarray, response: np.ndarray, wet: float) -> None:
    """Multiply by ``(1 - wet) + wet * response`` (``response``: float32 pairs like ``spec``)."""
    m = spec.shape[0] // 2
    w = np.float32(wet)
    dry = np.float32(1.0) - w
    for k0 in range(0, m, _BLOCK):
        kk = min(_BLOCK, m - k0)
        blk = spec[2 * k0 : 2 * (k0 + kk)]
        rb = response[2 * k0 : 2 * (k0 + kk)]
        for j in range(kk):
            hr = dry + w * rb[2 * j]
            hi = w * rb[2 * j + 1]
            re = blk[2 * j]
            im = blk[2 * j + 1]
            blk[2 * j] = re * hr - im * hi
            blk[2 * j + 1] = re * hi + im * hr
