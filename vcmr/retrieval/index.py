"""Vector index for embedding libraries: FAISS inner-product search, nearest and farthest.

Vectors are ``[N, D]`` float32 rows (unit-normalised embeddings, so inner product is cosine
similarity); their ids are ``0 .. N-1`` in insertion order. Three kinds, picked by name
from :data:`INDEX_KINDS`:

==========  ======================================  ===================================
kind        FAISS index                             parameters
==========  ======================================  ===================================
``flat``    ``IndexFlatIP`` (exact)                 none
``hnsw``    ``IndexHNSWFlat(d, m, METRIC_INNER_PRODUCT)``  ``m``, ``ef_construction``, ``ef_search``
``ivf``     ``IndexIVFFlat`` on a flat IP quantizer  ``nlist``, ``nprobe``
==========  ======================================  ===================================

* ``search`` returns the ``k`` highest inner products, descending. ``flat`` is exact;
  ``hnsw`` and ``ivf`` are approximate (``ef_search`` / ``nprobe`` trade speed for recall).
  A query for which an approximate index finds fewer than ``k`` results (an IVF probe of
  sparse lists) is answered exactly instead, so every row holds ``k`` valid ids.
* ``search_farthest`` returns the ``k`` **lowest** inner products, ascending. The lowest
  ``<q, x>`` is the highest ``<-q, x>``, so it is a nearest-neighbour search for ``-q``.
  With ``exact=True`` (the default) that search is exhaustive for every kind: ``flat``
  searches its vectors, ``hnsw`` searches the flat storage under its graph (a brute-force
  scan, not the graph), ``ivf`` probes all ``nlist`` lists. ``exact=False`` uses the
  approximate structure for ``-q`` (HNSW graph, ``nprobe`` IVF lists): fast, but the graph
  was built for near neighbours, so recall of the farthest items is not guaranteed.
* ``k`` larger than the index is reduced to its size; searching an empty index raises.
* IVF is trained on the vectors of the first :meth:`VectorIndex.add` call, with ``nlist``
  capped at ``N // 39`` (at least 1; FAISS asks for 39 training points per centroid) and
  ``nprobe`` at ``nlist``.

Files are FAISS's own format (``faiss.write_index``), written atomically; the kind and its
parameters are read back from the index itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from vcmr.utils import atomic_path

__all__ = ["INDEX_KINDS", "VectorIndex", "IndexFileError"]

#: FAISS's k-means wants at least this many training points per IVF list.
MIN_POINTS_PER_LIST = 39

#: Exhaustive searches of at least this many queries go through FAISS's BLAS path (one
#: matrix product per block of stored vectors, the scores kept in cache) instead of its
#: per-query SIMD scan. FAISS 1.15 only switches at 128,000 queries
#: (``distance_compute_blas_threshold``); for 64-query batches over 1M x 128 vectors the BLAS
#: path measured ~7x faster than the scan (``benchmarks/bench_search.py``). 20 is the value
#: FAISS used before.
BLAS_MIN_QUERIES = 20


class IndexFileError(ValueError):
    """An index file is missing, unreadable, or not an inner-product index of a known kind."""


def _faiss():
    if "faiss" not in sys.modules:
        # FAISS's OpenMP threads sleep between parallel regions instead of spinning: on a
        # machine shared with other busy processes, spinning threads made 64-query batch
        # searches 10x slower (benchmarks/bench_search.py). Read once, when FAISS loads its
        # OpenMP runtime; a value set by the user wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("vector search needs faiss: pip install faiss-cpu") from exc
    return faiss


@contextlib.contextmanager
def _blas_for_batches() -> Iterator[None]:
    """FAISS's BLAS threshold set to :data:`BLAS_MIN_QUERIES` for the duration of a search."""
    cvar = _faiss().cvar
    old = cvar.distance_compute_blas_threshold
    cvar.distance_compute_blas_threshold = BLAS_MIN_QUERIES
    try:
        yield
    finally:
        cvar.distance_compute_blas_threshold = old


# --------------------------------------------------------------------------------------
# Kinds: how to build each FAISS index, read its parameters back, and search it exactly
# --------------------------------------------------------------------------------------


class _FlatKind:
    """Exact search over all vectors."""

    params: Tuple[str, ...] = ()
    search_params: Tuple[str, ...] = ()
    lazy = False

    def create(self, dim: int, params: Mapping[str, Any], first: Optional[np.ndarray]):
        faiss = _faiss()
        return faiss.IndexFlatIP(dim)

    def set_search_param(self, index, name: str, value: int) -> None:
        raise AssertionError("flat has no search-time parameters")

    def matches(self, index) -> bool:
        return type(index).__name__ == "IndexFlatIP" or (
            type(index).__name__ == "IndexFlat" and index.metric_type == _faiss().METRIC_INNER_PRODUCT
        )

    def read_params(self, index) -> Dict[str, Any]:
        return {}

    def exact_search(self, index, q: np.ndarray, k: int):
        return index.search(q, k)


class _HNSWKind:
    """Hierarchical navigable small-world graph over flat storage."""

    params = ("m", "ef_construction", "ef_search")
    search_params = ("ef_search",)
    lazy = False

    def set_search_param(self, index, name: str, value: int) -> None:
        index.hnsw.efSearch = value

    def create(self, dim: int, params: Mapping[str, Any], first: Optional[np.ndarray]):
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(dim, int(params["m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["ef_construction"])
        index.hnsw.efSearch = int(params["ef_search"])
        return index

    def matches(self, index) -> bool:
        return type(index).__name__ == "IndexHNSWFlat"

    def read_params(self, index) -> Dict[str, Any]:
        # Level 0 keeps 2*m neighbours, the upper levels m.
        return {"m": int(index.hnsw.nb_neighbors(1)), "ef_construction": int(index.hnsw.efConstruction),
                "ef_search": int(index.hnsw.efSearch)}

    def exact_search(self, index, q: np.ndarray, k: int):
        return _faiss().downcast_index(index.storage).search(q, k)


class _IVFKind:
    """Inverted lists over k-means cells of a flat inner-product quantizer."""

    params = ("nlist", "nprobe")
    search_params = ("nprobe",)
    lazy = True  # trained on the first vectors added

    def set_search_param(self, index, name: str, value: int) -> None:
        index.nprobe = min(value, int(index.nlist))

    def create(self, dim: int, params: Mapping[str, Any], first: Optional[np.ndarray]):
        faiss = _faiss()
        nlist = int(params["nlist"])
        if first is not None:
            nlist = max(1, min(nlist, first.shape[0] // MIN_POINTS_PER_LIST))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = max(1, min(int(params["nprobe"]), nlist))
        if first is not None:
            index.train(first)
        return index

    def matches(self, index) -> bool:
        return type(index).__name__ == "IndexIVFFlat"

    def read_params(self, index) -> Dict[str, Any]:
        return {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}

    def exact_search(self, index, q: np.ndarray, k: int):
        return index.search(q, k, params=_faiss().SearchParametersIVF(nprobe=int(index.nlist)))


#: Index kinds by name (``library.index.kind`` in configs).
INDEX_KINDS: Dict[str, Any] = {"flat": _FlatKind(), "hnsw": _HNSWKind(), "ivf": _IVFKind()}


def _check_params(kind: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    expected = INDEX_KINDS[kind].params
    unknown = sorted(set(params) - set(expected))
    missing = [p for p in expected if p not in params]
    if unknown or missing:
        raise ValueError(
            f"index kind '{kind}' takes the parameters {list(expected)}; "
            + (f"unknown: {unknown} " if unknown else "")
            + (f"missing: {missing}" if missing else "")
        )
    out = {}
    for name in expected:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
            raise ValueError(f"index parameter '{name}' must be a positive integer, got {value!r}")
        out[name] = int(value)
    return out


class VectorIndex:
    """Inner-product index over ``[N, D]`` float32 vectors, ids ``0 .. N-1``.

    Args:
        dim: vector size ``D``.
        kind: a key of :data:`INDEX_KINDS` (``flat``, ``hnsw``, ``ivf``).
        **params: the kind's parameters (``hnsw``: ``m``, ``ef_construction``,
            ``ef_search``; ``ivf``: ``nlist``, ``nprobe``; ``flat``: none).

    Raises:
        ValueError: unknown kind, wrong or missing parameters, ``dim < 1``.
    """

    def __init__(self, dim: int, kind: str = "flat", **params: Any) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind '{kind}'; choose one of {sorted(INDEX_KINDS)}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 1:
            raise ValueError(f"index dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.kind = kind
        self.params = _check_params(kind, params)
        self._kind = INDEX_KINDS[kind]
        self._index = None if self._kind.lazy else self._kind.create(self.dim, self.params, None)

    # ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self.dim}, kind={self.kind!r}, n={len(self)}, params={self.params})"

    def _as_matrix(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what} must be [N, {self.dim}] (the index dim), got shape {tuple(x.shape)}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        return x

    def add(self, vectors: np.ndarray) -> None:
        """Append ``vectors: [N, D]`` float32; they get ids ``len(self) .. len(self) + N - 1``.

        An IVF index is trained on the first non-empty call (see the module docstring).
        """
        x = self._as_matrix(vectors, "vectors")
        if x.shape[0] == 0:
            return
        if self._index is None:
            self._index = self._kind.create(self.dim, self.params, x)
            self.params = self._kind.read_params(self._index)
        self._index.add(x)

    def set_search_params(self, **params: int) -> None:
        """Change search-time parameters of a built index: ``ef_search`` (hnsw), ``nprobe`` (ivf).

        ``nprobe`` is capped at ``nlist``. Build-time parameters cannot change.
        """
        allowed = self._kind.search_params
        for name, value in params.items():
            if name not in allowed:
                raise ValueError(
                    f"index kind '{self.kind}' has the search-time parameters {list(allowed)}, not '{name}'"
                )
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
                raise ValueError(f"index parameter '{name}' must be a positive integer, got {value!r}")
            if self._index is not None:
                self._kind.set_search_param(self._index, name, int(value))
                self.params = self._kind.read_params(self._index)
            else:
                self.params[name] = int(value)

    def _prepare_search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, int]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if len(self) == 0:
            raise ValueError("the index is empty: add vectors before searching")
        return self._as_matrix(queries, "queries"), min(int(k), len(self))

    def _complete(self, q: np.ndarray, k: int, scores: np.ndarray, ids: np.ndarray,
                  exact: Callable[[np.ndarray, int], Tuple[np.ndarray, np.ndarray]]):
        """Answer exactly the rows where an approximate search came back short (id -1)."""
        short = (ids < 0).any(axis=1)
        if short.any():
            s2, i2 = exact(q[short], k)
            scores[short], ids[short] = s2, i2
        return scores, ids.astype(np.int64, copy=False)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` highest inner products per query.

        Args:
            queries: ``[Q, D]`` float32.
            k: results per query; more than ``len(self)`` gives ``len(self)``.

        Returns:
            ``(scores [Q, k] float32 descending, ids [Q, k] int64)``.
        """
        q, k = self._prepare_search(queries, k)
        with _blas_for_batches():
            scores, ids = self._index.search(q, k)
            return self._complete(q, k, scores, ids, lambda qq, kk: self._kind.exact_search(self._index, qq, kk))

    def search_farthest(self, queries: np.ndarray, k: int, exact: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` lowest inner products per query (the least similar items).

        Args:
            queries: ``[Q, D]`` float32.
            k: results per query; more than ``len(self)`` gives ``len(self)``.
            exact: exhaustive search for every kind (default); ``False`` uses the
                approximate structure of ``hnsw``/``ivf`` on the negated query.

        Returns:
            ``(scores [Q, k] float32 ascending, ids [Q, k] int64)``.
        """
        q, k = self._prepare_search(queries, k)
        neg = np.ascontiguousarray(-q)
        exact_fn = lambda qq, kk: self._kind.exact_search(self._index, qq, kk)  # noqa: E731
        with _blas_for_batches():
            scores, ids = exact_fn(neg, k) if exact else self._index.search(neg, k)
            scores, ids = self._complete(neg, k, scores, ids, exact_fn)
        return -scores, ids

    # ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index in FAISS's format, atomically (temporary file + rename)."""
        faiss = _faiss()
        path = Path(path)
        index = self._index if self._index is not None else self._kind.create(self.dim, self.params, None)
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VectorIndex":
        """Read an index written by :meth:`save`.

        Raises:
            IndexFileError: the file is missing, not a FAISS index, or not an
                inner-product index of a kind in :data:`INDEX_KINDS`; the message names the file.
        """
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"{path}: index file not found")
        try:
            index = faiss.read_index(str(path))  # returned as its concrete class; owns its memory
        except Exception as exc:  # FAISS raises RuntimeError with a C++ message
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IndexFileError(f"{path}: not a readable FAISS index ({first})") from exc
        kind = next((name for name, k in INDEX_KINDS.items() if k.matches(index)), None)
        if kind is None:
            raise IndexFileError(
                f"{path}: FAISS index of type {type(index).__name__} is not one of {sorted(INDEX_KINDS)}"
            )
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFileError(f"{path}: index does not use the inner-product metric")
        out = cls.__new__(cls)
        out.dim, out.kind, out._kind = int(index.d), kind, INDEX_KINDS[kind]
        out.params = out._kind.read_params(index)
        # An IVF index saved before any vector was added is untrained: train on the first add.
        out._index = None if (out._kind.lazy and not index.is_trained) else index
        return out
