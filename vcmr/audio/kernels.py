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
            # and each candidate's sum still runs over j in order.
            for j in range(overlap):
                c = x[tail + j]
                window = x[base + j : base + j + search]
                for i in range(search):
                    e = window[i] - c
                    diff[i] += e * e
            best = 0
            least = diff[0]
            for i in range(1, search):
                if diff[i] < least:
                    least = diff[i]
                    best = i
            src[r, k] = base + best



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
