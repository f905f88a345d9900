"""Vector search: FAISS exact and HNSW (through ``vcmr.retrieval.index.VectorIndex``) vs NumPy brute force.

On ``--n`` x ``--dim`` float32 unit vectors (seeded; ``--data uniform``: Gaussian directions,
the hardest case for graph search; ``--data clustered``: ``--clusters`` centres with
``--spread`` noise, closer to a clip library where clips of one video sit together) and
batches of ``--batch`` queries, measured side by side in one run:

* queries/s of NumPy brute force (``queries @ vectors.T`` + ``argpartition`` + sort of the
  top k) and of the exact FAISS index (``IndexFlatIP``), interleaved batch by batch, from
  the median batch time (robust to bursts of load); ``--threads`` limits the searches of
  both to the same number of BLAS/OpenMP threads (builds use every core);
* an HNSW index (``--m``, ``--ef-construction``), its build time, and for each
  ``--ef-search`` its recall@k against the exact top k and its speed-up over NumPy;
* peak resident memory (RSS) of building a flat library index of ``--n`` vectors in a fresh
  process: vectors arrive in chunks (as a library build embeds them), are added, and the
  index is saved (atomic write).

    python benchmarks/bench_search.py                       # 1,000,000 x 128 (a few minutes)
    python benchmarks/bench_search.py --n 100000 --data clustered

Targets: exact FAISS >= 5x NumPy; HNSW >= 20x NumPy with recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np

from vcmr.retrieval.index import VectorIndex

EXACT_TARGET = 5.0
HNSW_TARGET = 20.0
RECALL_TARGET = 0.95


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(n: int, dim: int, seed: int, data: str, clusters: int, spread: float, chunk: int = 100_000):
    """Yield ``[<=chunk, dim]`` float32 unit rows, ``n`` in all, seeded (same rows whatever ``chunk``)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((clusters, dim), dtype=np.float32)) if data == "clustered" else None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        if centres is None:
            yield unit_rows(noise)
        else:
            which = rng.integers(0, clusters, m)
            yield unit_rows(centres[which] + np.float32(spread / np.sqrt(dim)) * noise)


def make_queries(n_queries: int, dim: int, seed: int, data: str, vectors: np.ndarray, spread: float) -> np.ndarray:
    """Queries from the same distribution as the vectors (not copies of them)."""
    rng = np.random.default_rng(seed + 1)
    noise = rng.standard_normal((n_queries, dim), dtype=np.float32)
    if data == "uniform":
        return unit_rows(noise)
    anchors = vectors[rng.integers(0, len(vectors), n_queries)]
    return unit_rows(anchors + np.float32(spread / np.sqrt(dim)) * noise)


def numpy_topk(queries: np.ndarray, vectors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Brute force: all inner products, ``argpartition`` for the top k, then sort those k."""
    sims = queries @ vectors.T
    part = np.argpartition(sims, -k, axis=1)[:, -k:]
    top = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-top, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


def timed(fn: Callable[[], object]) -> Tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, exact)]))


def peak_rss() -> int:
    """Peak resident memory of this process in bytes: ``VmHWM`` of ``/proc/self/status`` (Linux).

    ``getrusage``'s ``ru_maxrss`` is not used: it survives ``fork`` + ``exec`` and would report
    the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(args: argparse.Namespace) -> None:
    """Build a flat index from chunks and save it; print the peak RSS (bytes) of this process."""
    base = peak_rss()
    index = VectorIndex(args.dim, "flat")
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in make_vectors(args.n, args.dim, args.seed, args.data, args.clusters, args.spread):
            index.add(chunk)
        path = index.save(Path(tmp) / "library.faiss")
        size = path.stat().st_size
    print(f"{base} {peak_rss()} {size}")


def measure_memory(args: argparse.Namespace) -> Tuple[int, int, int]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--n", str(args.n), "--dim", str(args.dim),
           "--seed", str(args.seed), "--data", args.data, "--clusters", str(args.clusters),
           "--spread", str(args.spread)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=64, help="queries per search call")
    p.add_argument("--batches", type=int, default=10, help="batches timed for NumPy and exact FAISS")
    p.add_argument("--hnsw-batches", type=int, default=20, help="batches timed per HNSW ef_search")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=32, help="HNSW neighbours per node")
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--data", choices=["uniform", "clustered"], default="uniform")
    p.add_argument("--clusters", type=int, default=20_000, help="centres of --data clustered")
    p.add_argument("--spread", type=float, default=0.5, help="noise norm around a centre (--data clustered)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP threads of the searches, NumPy and FAISS alike (default: all); "
                   "1 is steadier on a busy machine")
    p.add_argument("--skip-hnsw", action="store_true")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_info, threadpool_limits

    flat = VectorIndex(args.dim, "flat")  # loads FAISS the way the project does (vcmr.retrieval.index)

    def limited():
        """Thread limit of the searches (builds use every core)."""
        return threadpool_limits(limits=args.threads)

    with limited():
        threads = max(pool["num_threads"] for pool in threadpool_info())
    print(f"{args.n:,} x {args.dim} float32 unit vectors ({args.data}, seed {args.seed}); {args.batch}-query batches, "
          f"k={args.k}; {os.cpu_count()} CPUs; search threads {threads} (NumPy BLAS and FAISS); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average {os.getloadavg()[0]:.1f}", flush=True)
    t_gen, vectors = timed(lambda: np.concatenate(list(
        make_vectors(args.n, args.dim, args.seed, args.data, args.clusters, args.spread))))
    n_q = args.batch * max(args.batches, args.hnsw_batches)
    queries = make_queries(n_q, args.dim, args.seed, args.data, vectors, args.spread)
    assert vectors.dtype == queries.dtype == np.float32  # NumPy and FAISS both work in float32
    print(f"  generated in {t_gen:.1f} s ({vectors.nbytes / 2**30:.2f} GiB)", flush=True)

    t_flat_build, _ = timed(lambda: flat.add(vectors))
    batches = [queries[i * args.batch : (i + 1) * args.batch] for i in range(n_q // args.batch)]
    exact_ids, agree, t_np, t_faiss = [], [], [], []
    with limited():
        # Warm-up (page faults, thread pools), then the two methods batch by batch, side by side.
        numpy_topk(batches[0], vectors, args.k)
        flat.search(batches[0], args.k)
        for b in batches[: args.batches]:
            dt, (_, i_np) = timed(lambda: numpy_topk(b, vectors, args.k))
            t_np.append(dt)
            dt, (_, i_f) = timed(lambda: flat.search(b, args.k))
            t_faiss.append(dt)
            exact_ids.append(i_f)
            agree.append(recall_at_k(i_f, i_np))
    # Median batch time: robust to bursts of load from other processes.
    qps_np, qps_flat = args.batch / float(np.median(t_np)), args.batch / float(np.median(t_faiss))
    rows = [("numpy brute force", None, qps_np, 1.0, 1.0), ("faiss flat (exact)", t_flat_build, qps_flat,
                                                              qps_flat / qps_np, float(np.mean(agree)))]
    print(f"  exact: NumPy {qps_np:,.1f} q/s, FAISS flat {qps_flat:,.1f} q/s (top-{args.k} agreement "
          f"{np.mean(agree):.4f})", flush=True)

    best = None
    if not args.skip_hnsw:
        hnsw = VectorIndex(
            args.dim, "hnsw", m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search[0]
        )
        print(f"  building HNSW m={args.m} ef_construction={args.ef_construction} ...", flush=True)
        t_hnsw_build, _ = timed(lambda: hnsw.add(vectors))
        print(f"  HNSW built in {t_hnsw_build:.0f} s", flush=True)
        hb = batches[: args.hnsw_batches]
        with limited():
            # Exact answers for the HNSW batches (the first ones are already known).
            truth = exact_ids + [flat.search(b, args.k)[1] for b in hb[len(exact_ids):]]
            for ef in args.ef_search:
                hnsw.set_search_params(ef_search=ef)
                hnsw.search(hb[0], args.k)
                times, found = [], []
                for b in hb:
                    dt, (_, ids) = timed(lambda: hnsw.search(b, args.k))
                    times.append(dt)
                    found.append(ids)
                qps = args.batch / float(np.median(times))
                rec = recall_at_k(np.concatenate(found), np.concatenate(truth[: len(hb)]))
                rows.append((f"faiss hnsw m={args.m} ef={ef}", t_hnsw_build, qps, qps / qps_np, rec))
                if rec >= RECALL_TARGET and (best is None or qps > best[2]):
                    best = rows[-1]
                print(f"  ef_search={ef}: {qps:,.1f} q/s, recall@{args.k} {rec:.4f}", flush=True)
    del vectors, flat
    if not args.skip_hnsw:
        del hnsw

    base, peak, size = measure_memory(args)

    print(f"\n{'method':<28}{'build s':>9}{'queries/s':>12}{'x NumPy':>9}{f'recall@{args.k}':>11}")
    for name, build, qps, ratio, rec in rows:
        b = "-" if build is None else f"{build:.1f}"
        print(f"{name:<28}{b:>9}{qps:>12,.1f}{ratio:>9.1f}{rec:>11.3f}")
    raw = args.n * args.dim * 4
    print(f"\npeak RSS building a flat library index of {args.n:,} vectors (chunks of 100,000, add + save): "
          f"{peak / 2**30:.2f} GiB ({peak / raw:.2f}x the {raw / 2**30:.2f} GiB of vectors; "
          f"{base / 2**30:.2f} GiB after imports); index file {size / 2**30:.2f} GiB")
    ok_exact = qps_flat / qps_np >= EXACT_TARGET
    verdict = "met" if ok_exact else "NOT met"
    print(f"target exact FAISS >= {EXACT_TARGET:g}x NumPy: {qps_flat / qps_np:.1f}x  {verdict}")
    if not args.skip_hnsw:
        if best is None:
            print(f"target HNSW >= {HNSW_TARGET:g}x with recall@{args.k} >= {RECALL_TARGET}: no ef_search reached the "
                  "recall; NOT met (raise --ef-search / --m)")
        else:
            verdict = "met" if best[3] >= HNSW_TARGET else "NOT met"
            print(f"target HNSW >= {HNSW_TARGET:g}x with recall@{args.k} >= {RECALL_TARGET}: best {best[0]} "
                  f"{best[3]:.1f}x at recall {best[4]:.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
