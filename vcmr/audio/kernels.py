"""Compiled CPU loops (numba) of the augmentation chain's sequential steps.

A loop whose every step depends on the one before (the WSOLA search) cannot be batched into
array operations; compiled, it runs without Python's per-step overhead and without holding
the GIL, so another thread (the FFT pass's helper) runs beside it. Each function is compiled
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

