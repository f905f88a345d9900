"""Library-level self-retrieval metrics: does a music video's own soundtrack find its own clips?

For a clip library built from music videos, each video's audio track is a natural query
whose right answers are known: the clips of that video. :func:`own_item_ranks` gives, per
query, the rank of its **best-ranked own item** among all items of the library (ties
counted pessimistically: other items scoring ``>=`` it rank first), so ``R@K`` is the
fraction of queries whose ``K`` nearest clips include at least one of their own.

Chance levels account for the number ``m`` of own items among ``N``: under a random
ranking, the first own item lies within the top ``K`` with probability
``1 - C(N - m, K) / C(N, K)``, and its expected rank is ``(N + 1) / (m + 1)``.

For a music library built from the same videos, the query is the video (its clip
embeddings pooled) and the one right answer its own soundtrack. The check of a whole
library is :func:`vcmr.retrieval.library.self_retrieval`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

CHECK_FILE = "check.json"


def own_item_ranks(scores: np.ndarray, query_owner: np.ndarray, item_owner: np.ndarray) -> np.ndarray:
    """1-based rank of each query's best own item.

    Args:
        scores: ``[Q, N]`` similarities (higher = closer).
        query_owner: ``[Q]`` owner id of each query.
        item_owner: ``[N]`` owner id of each item.

    Returns:
        ``[Q]`` int64: ``1 + #{items of other owners scoring >= the best own item}``.

    Raises:
        ValueError: a query has no own item, or the shapes disagree.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape != (len(query_owner), len(item_owner)):
        raise ValueError(f"scores must be [Q, N] = [{len(query_owner)}, {len(item_owner)}], got {scores.shape}")
    own = np.asarray(query_owner)[:, None] == np.asarray(item_owner)[None, :]
    if not own.any(axis=1).all():
        raise ValueError(f"queries without any own item: {np.flatnonzero(~own.any(axis=1)).tolist()}")
    best = np.where(own, scores, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((scores >= best) & ~own).sum(axis=1).astype(np.int64)


def chance_first_own(n: int, m: int, ks: Sequence[int]) -> Dict[str, float]:
    """Expected ``R@k``, median and mean rank of the first of ``m`` own items among ``n`` under a random ranking."""
    if not 1 <= m <= n:
        raise ValueError(f"need 1 <= m <= n, got m={m}, n={n}")

    def p_within(r: int) -> float:
        r = min(r, n)
        return 1.0 - math.comb(n - m, r) / math.comb(n, r)

    out = {f"R@{k}": p_within(k) for k in ks}
    lo, hi = 1, n  # smallest r with P(rank <= r) >= 1/2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if p_within(mid) >= 0.5 else (mid + 1, hi)
    out["median_rank"] = float(lo)
    out["mean_rank"] = (n + 1) / (m + 1)
    return out


def own_item_recall(
    queries: np.ndarray, items: np.ndarray, query_owner: Sequence[Any], item_owner: Sequence[Any], ks: Sequence[int]
) -> Dict[str, float]:
    """Recall@K, median and mean rank of the best own item, next to their chance levels.

    Args:
        queries: ``[Q, D]`` unit vectors.
        items: ``[N, D]`` unit vectors.
        query_owner, item_owner: owner ids (e.g. video ids) of queries and items.
        ks: Recall@K cut-offs.

    Returns:
        ``R@k``, ``median_rank``, ``mean_rank``, ``chance/R@k`` (mean over queries),
        ``chance/median_rank`` (median over queries), ``chance/mean_rank`` (mean), ``n_queries``, ``n_items``.
    """
    import torch

    from vcmr.metrics.retrieval import rank_summary

    q_owner, i_owner = np.asarray(query_owner), np.asarray(item_owner)
    ranks = own_item_ranks(np.asarray(queries) @ np.asarray(items).T, q_owner, i_owner)
    out = rank_summary(torch.from_numpy(ranks), list(ks))
    chances = [chance_first_own(len(i_owner), int((i_owner == o).sum()), ks) for o in q_owner]
    for key in [f"R@{k}" for k in ks] + ["mean_rank"]:
        out[f"chance/{key}"] = float(np.mean([c[key] for c in chances]))
    out["chance/median_rank"] = float(np.median([c["median_rank"] for c in chances]))
    out["n_queries"], out["n_items"] = int(len(q_owner)), int(len(i_owner))
    return out


def held_out_ids(model_path: str | Path, ids: Sequence[str]) -> List[str]:
    """The ``ids`` a stage-2 model held out for validation, by its run's split rule.

    Reads ``data.val_fraction`` from ``<run>/config.yaml`` of ``<run>/export/model.safetensors``
    and applies :func:`vcmr.utils.hash_split` (the stage-2 split of video ids). Meaningful
    when the library holds the videos the model was trained from, under the same ids (the
    builder and the library name local files alike). Empty when the run config is missing.
    """
    from omegaconf import OmegaConf

    from vcmr.utils import hash_split

    model_path = Path(model_path)
    run = model_path.parent.parent if model_path.parent.name == "export" else model_path.parent
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        return []
    val = OmegaConf.select(OmegaConf.load(cfg_path), "data.val_fraction")
    if val is None:
        return []
    return [i for i in ids if hash_split(i, float(val)) == "val"]


def format_check(result: Mapping[str, Any], ks: Sequence[int]) -> str:
    """A short table of :func:`self_retrieval` results."""
    head = "  ".join(f"{f'R@{k}':<11}" for k in ks)
    lines = [f"self-retrieval ({result['direction']}), chance in brackets:",
             f"  {'queries':<10} {'n':>5}  {head}  median rank"]
    for name, m in result.items():
        if not isinstance(m, dict) or "n_queries" not in m:
            continue
        cells = "  ".join(f"{m[f'R@{k}']:.2f} [{m[f'chance/R@{k}']:.2f}]" for k in ks)
        lines.append(f"  {name:<10} {m['n_queries']:>5}  {cells}  {m['median_rank']:.1f} [{m['chance/median_rank']:.1f}]")
    if result.get("skipped"):
        lines.append(f"  skipped {len(result['skipped'])} file(s) whose query could not be decoded")
    return "\n".join(lines)


__all__ = ["CHECK_FILE", "chance_first_own", "format_check", "held_out_ids", "own_item_ranks", "own_item_recall"]
