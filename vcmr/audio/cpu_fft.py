"""Real FFTs on the CPU: Intel MKL's DFTI with kept plans where it can be found, else pocketFFT.

The augmentation chain's FFT pass transforms about 30 signals of 100,000-150,000 samples per
batch, most of them alone or in twos (one forward transform per pitch factor). scipy's
pocketFFT vectorises across rows only: one row of 129,600 points takes about 1.5 ms, four
take 2 ms. MKL vectorises inside one transform: about 0.3-0.6 ms for one row, the same per
row as a multi-row call. ``torch.fft`` on the CPU calls MKL too, but sets its transform up
afresh on every call (2-3 ms for these sizes); here a committed descriptor is kept per size,
precision and direction, so a call costs the transform alone.

Where MKL comes from: the copy linked into torch's own CPU library (``libtorch_cpu``, which
exports MKL's DFTI functions in the Linux x86-64 wheels), else a system ``libmkl_rt``. The
first use checks it on a small transform against numpy; if it is absent or the check fails,
every call goes to ``scipy.fft`` (pocketFFT). The environment variable ``VCMR_CPU_FFT``
(``auto``, the default, ``mkl`` or ``pocketfft``) chooses; ``mkl`` raises if MKL is not
usable. :func:`backend` says which one runs.

Descriptors are kept per thread (a descriptor is not shared between threads that may run at
the same time), each limited to one thread (``DFTI_THREAD_LIMIT``): the callers parallelise
over rows themselves. The calls go through ``ctypes``, which releases the GIL, so two Python
threads transform side by side. A forked child (a DataLoader worker) starts with no
descriptors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Dict, Optional, Tuple

import numpy as np

#: Environment variable that chooses the backend: ``auto`` (default), ``mkl`` or ``pocketfft``.
BACKEND_ENV = "VCMR_CPU_FFT"

# DFTI's configuration names and values (mkl_dfti.h).
_REAL = 33
_CONJUGATE_EVEN_STORAGE = 10
_COMPLEX_COMPLEX = 39
_PLACEMENT = 11
_NOT_INPLACE = 44
_BACKWARD_SCALE = 5
_THREAD_LIMIT = 27

_C_LONG = ctypes.c_long


class MklUnavailable(RuntimeError):
    """MKL's DFTI could not be loaded or did not pass the check."""


class _Dfti:
    """MKL's DFTI functions from one shared library."""

    def __init__(self, lib: ctypes.CDLL, origin: str):
        self.origin = origin
        self.create = {
            np.dtype(np.float32): lib.DftiCreateDescriptor_s_1d,
            np.dtype(np.float64): lib.DftiCreateDescriptor_d_1d,
        }
        for f in self.create.values():
            f.restype = _C_LONG
        self.set_value = lib.DftiSetValue
        self.set_value.restype = _C_LONG
        self.commit = lib.DftiCommitDescriptor
        self.commit.restype = _C_LONG
        self.commit.argtypes = [ctypes.c_void_p]
        # (handle, input, output): addresses as Python ints. The functions are variadic in C;
        # with only pointer arguments, x86-64 passes them the same way.
        self.forward = lib.DftiComputeForward
        self.forward.restype = _C_LONG
        self.forward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.backward = lib.DftiComputeBackward
        self.backward.restype = _C_LONG
        self.backward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.free = lib.DftiFreeDescriptor
        self.free.restype = _C_LONG
        self.free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.message = lib.DftiErrorMessage
        self.message.restype = ctypes.c_char_p
        self.message.argtypes = [_C_LONG]

    def check(self, status: int, what: str) -> None:
        if status:
            text = (self.message(status) or b"").decode(errors="replace").strip()
            raise RuntimeError(f"MKL DFTI {what} failed (status {status}): {text}")

    def plan(self, n: int, dtype: np.dtype, inverse: bool) -> ctypes.c_void_p:
        """A committed descriptor: one real transform of ``n`` points, out of place, one thread."""
        handle = ctypes.c_void_p()
        self.check(self.create[dtype](ctypes.byref(handle), ctypes.c_int(_REAL), _C_LONG(n)), f"create (n={n})")
        try:
            self.check(self.set_value(handle, ctypes.c_int(_PLACEMENT), ctypes.c_int(_NOT_INPLACE)), "placement")
            self.check(
                self.set_value(handle, ctypes.c_int(_CONJUGATE_EVEN_STORAGE), ctypes.c_int(_COMPLEX_COMPLEX)),
                "storage",
            )
            self.check(self.set_value(handle, ctypes.c_int(_THREAD_LIMIT), ctypes.c_int(1)), "thread limit")
            if inverse:
                self.check(self.set_value(handle, ctypes.c_int(_BACKWARD_SCALE), ctypes.c_double(1.0 / n)), "scale")
            self.check(self.commit(handle), f"commit (n={n})")
        except BaseException:
            self.free(ctypes.byref(handle))
            raise
        return handle


class _Plans:
    """One thread's descriptors, freed with the thread."""

    def __init__(self, dfti: _Dfti):
        self.dfti = dfti
        self.handles: Dict[Tuple[int, str, bool], ctypes.c_void_p] = {}

    def get(self, n: int, dtype: np.dtype, inverse: bool) -> ctypes.c_void_p:
        key = (n, dtype.char, inverse)
        handle = self.handles.get(key)
        if handle is None:
            if len(self.handles) >= MAX_PLANS:
                self.clear()
            handle = self.handles[key] = self.dfti.plan(n, dtype, inverse)
        return handle

    def clear(self) -> None:
        for handle in self.handles.values():
            self.dfti.free(ctypes.byref(handle))
        self.handles.clear()

    def __del__(self) -> None:
        try:
            self.clear()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


#: Descriptors a thread keeps (all dropped when a new one would exceed it).
MAX_PLANS = 128

_LOCK = threading.Lock()
_DFTI: Optional[_Dfti] = None
_TRIED = False
_LOCAL = threading.local()


def _candidates():
    try:
        import torch

        yield os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"), "torch"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    path = ctypes.util.find_library("mkl_rt")
    if path:
        yield path, "libmkl_rt"


def _self_test(dfti: _Dfti) -> None:
    """A few transforms against numpy's, both precisions, both directions."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in (12, 30, 1024):
            x = rng.standard_normal((2, n)).astype(dtype)
            ref = np.fft.rfft(x.astype(np.float64), axis=-1)
            got = _mkl_rfft(dfti, x)
            tol = 1e-4 if dtype == np.float32 else 1e-10
            if not np.allclose(got, ref, rtol=tol, atol=tol * np.sqrt(n)):
                raise MklUnavailable(f"forward transform of {n} points differs from numpy's")
            back = _mkl_irfft(dfti, got, n)
            if not np.allclose(back, x, rtol=tol, atol=tol):
                raise MklUnavailable(f"inverse transform of {n} points does not return the signal")


def _load() -> Optional[_Dfti]:
    global _DFTI, _TRIED
    with _LOCK:
        if _TRIED:
            return _DFTI
        _TRIED = True
        for path, origin in _candidates():
            if not os.path.exists(path) and os.sep in path:
                continue
            try:
                dfti = _Dfti(ctypes.CDLL(path), origin)
                _self_test(dfti)
            except (OSError, AttributeError, RuntimeError):
                continue
            _DFTI = dfti
            break
        return _DFTI


def _choice() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "mkl", "pocketfft"):
        raise ValueError(f"{BACKEND_ENV}={value!r}: expected 'auto', 'mkl' or 'pocketfft'")
    return value


def _dfti() -> Optional[_Dfti]:
    choice = _choice()
    if choice == "pocketfft":
        return None
    dfti = _load()
    if dfti is None and choice == "mkl":
        raise MklUnavailable(
            f"{BACKEND_ENV}=mkl, but MKL's DFTI was found neither in torch's CPU library nor as libmkl_rt "
            "(or it failed its check against numpy)"
        )
    return dfti


def backend() -> str:
    """``"mkl (torch)"``, ``"mkl (libmkl_rt)"`` or ``"pocketfft"``: what :func:`rfft` uses now."""
    dfti = _dfti()
    return f"mkl ({dfti.origin})" if dfti is not None else "pocketfft"


def _plans(dfti: _Dfti) -> _Plans:
    plans = getattr(_LOCAL, "plans", None)
    if plans is None or plans.dfti is not dfti:
        plans = _LOCAL.plans = _Plans(dfti)
    return plans


def _mkl_rfft(dfti: _Dfti, x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    rows = np.ascontiguousarray(x).reshape(-1, n)
    out = np.empty((rows.shape[0], n // 2 + 1), dtype=np.result_type(x.dtype, np.complex64))
    one = RowTransforms(dfti)
    for r in range(rows.shape[0]):
        one.forward(rows[r], out[r])
    return out.reshape(x.shape[:-1] + (n // 2 + 1,))


def _mkl_irfft(dfti: _Dfti, spec: np.ndarray, n: int) -> np.ndarray:
    bins = n // 2 + 1
    m = spec.shape[-1]
    rows = spec.reshape(-1, m)
    if m != bins or not rows.flags.c_contiguous:
        # Cut or zero-padded to the bins of n points (as numpy's irfft).
        full = np.zeros((rows.shape[0], bins), dtype=rows.dtype)
        full[:, : min(m, bins)] = rows[:, : min(m, bins)]
        rows = full
    real = np.float32 if rows.dtype == np.complex64 else np.float64
    out = np.empty((rows.shape[0], n), dtype=real)
    one = RowTransforms(dfti)
    for r in range(rows.shape[0]):
        one.backward(rows[r], out[r])
    return out.reshape(spec.shape[:-1] + (n,))


class RowTransforms:
    """One-row MKL transforms into arrays the caller keeps (:func:`row_transforms`).

    Every array is one contiguous row: ``forward(x, out)`` with ``x: [n]`` float32 (float64)
    and ``out: [n // 2 + 1]`` complex64 (complex128); ``backward(spec, out)`` with ``spec:
    [n // 2 + 1]`` complex (read only) and ``out: [n]`` real of the same precision (scaled by
    ``1 / n``, as ``numpy.fft.irfft``). :meth:`forward_at` and :meth:`backward_at` take the
    arrays' addresses instead (:func:`address`), for a loop over buffers it keeps.
    """

    def __init__(self, dfti: _Dfti):
        self._dfti = dfti

    def forward(self, x: np.ndarray, out: np.ndarray) -> None:
        n = x.shape[0]
        _check_rows(x, n, out, n // 2 + 1, "forward transform")
        self.forward_at(n, address(x), address(out), x.dtype)

    def forward_at(self, n: int, src: int, dst: int, dtype: np.dtype = np.dtype(np.float32)) -> None:
        """:meth:`forward` of ``n`` points from address ``src`` (``n`` reals of ``dtype``) to
        ``dst`` (``n // 2 + 1`` complex): contiguous buffers that the caller keeps alive."""
        d = self._dfti
        status = d.forward(_plans(d).get(n, dtype, False), src, dst)
        if status:
            d.check(status, f"forward transform (n={n})")

    def forward_unplanned(self, x: np.ndarray, out: np.ndarray) -> None:
        """:meth:`forward` for a size that will not recur soon: by pocketFFT, whose plan costs
        about 0.15 ms to set up against MKL's 2.5 ms (sizes near 130,000), so that no MKL
        descriptor is made and kept for it."""
        import scipy.fft

        out[:] = scipy.fft.rfft(x, workers=1)

    def backward(self, spec: np.ndarray, out: np.ndarray) -> None:
        n = out.shape[0]
        _check_rows(out, n, spec, n // 2 + 1, "inverse transform")
        self.backward_at(n, address(spec), address(out), out.dtype)

    def backward_at(self, n: int, src: int, dst: int, dtype: np.dtype = np.dtype(np.float32)) -> None:
        """:meth:`backward` to ``n`` points from address ``src`` (``n // 2 + 1`` complex) to
        ``dst`` (``n`` reals of ``dtype``): contiguous buffers that the caller keeps alive."""
        d = self._dfti
        status = d.backward(_plans(d).get(n, dtype, True), src, dst)
        if status:
            d.check(status, f"inverse transform (n={n})")


_COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64), np.dtype(np.float64): np.dtype(np.complex128)}


def _check_rows(real: np.ndarray, n: int, spec: np.ndarray, bins: int, what: str) -> None:
    """Raise unless ``real`` is ``[n]`` float and ``spec`` ``[bins]`` complex of its precision, both contiguous."""
    ok = (
        real.dtype in _COMPLEX
        and spec.dtype == _COMPLEX[real.dtype]
        and real.shape == (n,)
        and spec.shape == (bins,)
        and real.flags.c_contiguous
        and spec.flags.c_contiguous
    )
    if not ok:
        raise ValueError(
            f"{what}: expected contiguous rows of {n} float32/float64 samples and {bins} complex bins of the "
            f"same precision, got {real.dtype} {real.shape} and {spec.dtype} {spec.shape}"
        )


def address(a: np.ndarray) -> int:
    """The address of ``a``'s first element (for :meth:`RowTransforms.forward_at`)."""
    return a.__array_interface__["data"][0]


def row_transforms() -> Optional[RowTransforms]:
    """MKL's one-row transforms, or ``None`` where the backend is pocketFFT (which is fast
    only on several rows at once)."""
    dfti = _dfti()
    return RowTransforms(dfti) if dfti is not None else None


def rfft(x: np.ndarray, workers: int = 1) -> np.ndarray:
    """``numpy.fft.rfft(x, axis=-1)`` in ``x``'s precision (float32 -> complex64).

    ``workers``: pocketFFT's threads (MKL runs each row on the calling thread).
    """
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"rfft: expected float32 or float64 samples, got {x.dtype}")
    dfti = _dfti()
    if dfti is None or x.shape[-1] < 2 or x.size == 0:
        import scipy.fft

        return scipy.fft.rfft(x, axis=-1, workers=workers)
    return _mkl_rfft(dfti, x)


def irfft(spec: np.ndarray, n: int, workers: int = 1) -> np.ndarray:
    """``numpy.fft.irfft(spec, n=n, axis=-1)`` in ``spec``'s precision (complex64 -> float32):
    ``spec`` cut or zero-padded to ``n // 2 + 1`` bins; the imaginary parts of the 0 Hz and
    (even ``n``) Nyquist bins are ignored."""
    if spec.dtype not in (np.complex64, np.complex128):
        raise TypeError(f"irfft: expected a complex64 or complex128 spectrum, got {spec.dtype}")
    if n < 1:
        raise ValueError(f"irfft: n must be >= 1, got {n}")
    dfti = _dfti()
    if dfti is None or n < 2 or spec.size == 0:
        import scipy.fft

        return scipy.fft.irfft(spec, n=n, axis=-1, workers=workers)
    return _mkl_irfft(dfti, spec, n)


def _forget_plans() -> None:
    # The child of a fork starts without the parent's descriptors (never freed there either).
    global _LOCAL
    _LOCAL = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_plans)


__all__ = ["BACKEND_ENV", "MAX_PLANS", "MklUnavailable", "RowTransforms", "address", "backend", "irfft", "rfft", "row_transforms"]
