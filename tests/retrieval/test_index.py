"""VectorIndex against NumPy brute force: nearest, farthest, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

from vcmr.retrieval.index import INDEX_KINDS, IndexFileError, VectorIndex

PARAMS = {"flat": {}, "hnsw": {"m": 16, "ef_construction": 80, "ef_search": 64}, "ivf": {"nlist": 8, "nprobe": 8}}


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(queries: np.ndarray, vectors: np.ndarray, k: int, farthest: bool = False):
    """Naive reference: full sort of every row."""
    sims = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(sims if farthest else -sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def test_registry_is_explicit() -> None:
    assert sorted(INDEX_KINDS) == ["flat", "hnsw", "ivf"]


@pytest.mark.parametrize("n_queries", [13, 40])  # FAISS's per-query scan, and its BLAS path for batches
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_nearest_and_farthest_equal_brute_force(kind: str, n_queries: int) -> None:
    import faiss

    threshold = faiss.cvar.distance_compute_blas_threshold
    x, q = unit(400, 24, 0), unit(n_queries, 24, 1)
    index = VectorIndex(24, kind, **PARAMS[kind])
    index.add(x[:250])
    index.add(x[250:])  # ids continue in insertion order
    assert len(index) == 400
    scores, ids = index.search(q, 10)
    ref_s, ref_i = brute(q, x, 10)
    assert scores.shape == (n_queries, 10) and ids.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # descending
    if kind in ("flat", "ivf"):  # flat is exact; IVF probes all 8 lists here
        np.testing.assert_array_equal(ids, ref_i)
    else:
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref_i)])
        assert recall >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), atol=1e-5)
    # Farthest: exact by default for every kind.
    f_s, f_i = index.search_farthest(q, 7)
    ref_fs, ref_fi = brute(q, x, 7, farthest=True)
    np.testing.assert_array_equal(f_i, ref_fi)
    np.testing.assert_allclose(f_s, ref_fs, atol=1e-5)
    assert np.all(np.diff(f_s, axis=1) >= -1e-6)  # ascending
    # The lowest score really is below everything else in the row.
    assert np.all(f_s[:, -1:] <= np.sort(q @ x.T, axis=1)[:, 7:8] + 1e-6)
    assert faiss.cvar.distance_compute_blas_threshold == threshold  # FAISS's global setting is restored


def test_approximate_farthest_returns_valid_low_scores() -> None:
    x, q = unit(500, 16, 2), unit(5, 16, 3)
    index = VectorIndex(16, "hnsw", **PARAMS["hnsw"])
    index.add(x)
    s, i = index.search_farthest(q, 5, exact=False)
    assert (i >= 0).all() and np.all(np.diff(s, axis=1) >= -1e-6)
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, i, axis=1), atol=1e-5)
    assert np.all(s.max(axis=1) < np.median(q @ x.T, axis=1))  # from the far end, even if not exact


def test_ivf_short_probe_falls_back_to_exact() -> None:
    # One probed list of 4 cannot hold 300 results: rows come back complete and exact.
    x, q = unit(400, 8, 4), unit(3, 8, 5)
    index = VectorIndex(8, "ivf", nlist=4, nprobe=1)
    index.add(x)
    s, i = index.search(q, 300)
    assert (i >= 0).all()
    np.testing.assert_array_equal(np.sort(i, axis=1), np.sort(brute(q, x, 300)[1], axis=1))


def test_ivf_nlist_is_capped_by_the_training_set() -> None:
    index = VectorIndex(8, "ivf", nlist=1000, nprobe=50)
    index.add(unit(100, 8, 6))
    assert index.params == {"nlist": 2, "nprobe": 2}  # 100 // 39


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(kind: str, tmp_path) -> None:
    x, q = unit(300, 12, 7), unit(4, 12, 8)
    index = VectorIndex(12, kind, **PARAMS[kind])
    index.add(x)
    path = index.save(tmp_path / "sub" / "lib.faiss")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))  # no temporary left
    back = VectorIndex.load(path)
    assert (back.kind, back.dim, len(back), back.params) == (kind, 12, 300, index.params)
    for a, b in zip(index.search(q, 5), back.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(index.search_farthest(q, 5), back.search_farthest(q, 5)):
        np.testing.assert_array_equal(a, b)


def test_empty_index_saves_loads_and_refuses_search(tmp_path) -> None:
    for kind in ("flat", "ivf"):
        index = VectorIndex(6, kind, **PARAMS[kind])
        with pytest.raises(ValueError, match="empty"):
            index.search(unit(1, 6, 0), 3)
        with pytest.raises(ValueError, match="empty"):
            index.search_farthest(unit(1, 6, 0), 3)
        back = VectorIndex.load(index.save(tmp_path / f"{kind}.faiss"))
        assert len(back) == 0 and back.kind == kind
        back.add(unit(80, 6, 1))  # an empty IVF is trained on its first add after loading
        assert len(back) == 80


def test_k_larger_than_index() -> None:
    x = unit(6, 4, 9)
    index = VectorIndex(4)
    index.add(x)
    s, i = index.search(x[:2], 50)
    assert s.shape == (2, 6) and sorted(i[0].tolist()) == list(range(6)) and i[0, 0] == 0
    s, i = index.search_farthest(x[:2], 50)
    assert i.shape == (2, 6) and i[0, -1] == 0  # itself is the least far


def test_bad_input_errors(tmp_path) -> None:
    index = VectorIndex(8)
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        index.add(np.zeros((3, 7), np.float32))
    index.add(unit(5, 8, 0))
    with pytest.raises(ValueError, match=r"queries must be \[N, 8\]"):
        index.search(np.zeros((2, 9), np.float32), 1)
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        index.search(np.zeros(8, np.float32), 1)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 8), np.nan, np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(unit(1, 8, 1), 0)
    with pytest.raises(ValueError, match="unknown index kind 'annoy'"):
        VectorIndex(8, "annoy")
    with pytest.raises(ValueError, match="missing: \\['ef_search'\\]"):
        VectorIndex(8, "hnsw", m=8, ef_construction=40)
    with pytest.raises(ValueError, match="unknown: \\['nprobe'\\]"):
        VectorIndex(8, "flat", nprobe=3)
    with pytest.raises(IndexFileError, match="missing.faiss: index file not found"):
        VectorIndex.load(tmp_path / "missing.faiss")
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not an index at all")
    with pytest.raises(IndexFileError, match="bad.faiss: not a readable FAISS index"):
        VectorIndex.load(bad)
    import faiss

    faiss.write_index(faiss.IndexFlatL2(8), str(tmp_path / "l2.faiss"))
    with pytest.raises(IndexFileError, match="l2.faiss"):
        VectorIndex.load(tmp_path / "l2.faiss")


def test_search_params_change_after_build(tmp_path) -> None:
    x, q = unit(600, 16, 10), unit(20, 16, 11)
    index = VectorIndex(16, "hnsw", m=4, ef_construction=16, ef_search=1)
    index.add(x)
    ref = brute(q, x, 10)[1]
    recall = lambda ids: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])  # noqa: E731
    low = recall(index.search(q, 10)[1])
    index.set_search_params(ef_search=400)
    assert index.params["ef_search"] == 400 and recall(index.search(q, 10)[1]) > low
    assert VectorIndex.load(index.save(tmp_path / "h.faiss")).params["ef_search"] == 400
    ivf = VectorIndex(16, "ivf", nlist=8, nprobe=1)
    ivf.set_search_params(nprobe=100)  # before training: kept, then capped at nlist
    ivf.add(x)
    assert ivf.params == {"nlist": 8, "nprobe": 8}
    with pytest.raises(ValueError, match="search-time parameters \\['ef_search'\\], not 'm'"):
        index.set_search_params(m=8)
    with pytest.raises(ValueError, match="not 'nprobe'"):
        VectorIndex(16).set_search_params(nprobe=2)
