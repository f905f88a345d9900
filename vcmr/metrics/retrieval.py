"""Cross-modal retrieval metrics: rank of the true match, Recall@K, median and mean rank.

Conventions (``docs/losses.md``):

* Query ``i`` matches candidate ``i`` (the diagonal of the similarity matrix); a higher
  similarity ranks first. Ranks are 1-based.
* Ties are counted **pessimistically** by default: the rank of the match is the number of
  candidates scoring ``>=`` it (itself included), so a collapsed model whose scores are all
  equal gets rank ``N``, not rank 1. ``ties="optimistic"`` counts only strictly higher
  candidates (``1 + #{j : s_ij > s_ii}``).
* ``R@k`` is the fraction of queries whose rank is ``<= k``. A random ranking gets
  ``min(k, N) / N`` (the chance level) and an expected rank of ``(N + 1) / 2``.
* The median of an even number of ranks is the mean of the two middle ones (as
  ``numpy.median``).

Similarities are computed in row chunks, so ``N`` of tens of thousands only ever holds a
``[chunk_size, N]`` block in memory.

Galleries (:func:`rank_in_gallery`): ``Q`` queries are ranked against ``G`` gallery items
and query ``q``'s true item is ``gallery[targets[q]]``. One-to-one retrieval is
``targets = arange(N)``; **many-to-one** retrieval (several queries share one true item,
e.g. every segment of a video against one embedding per song) repeats a target. The same
tie rule applies, and the chance level of a gallery of ``G`` items is ``min(k, G) / G``
for ``R@k`` and ``(G + 1) / 2`` for the median and mean rank whatever the number of
queries (:func:`chance_levels`).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TIE_RULES",
    "rank_of_matches",
    "recall_at_k",
    "median_rank",
    "mean_rank",
    "cross_modal_retrieval",
    "rank_in_gallery",
    "rank_summary",
    "chance_levels",
]

#: Accepted values of the ``ties`` argument.
TIE_RULES: Tuple[str, ...] = ("pessimistic", "optimistic")

#: Default query rows per similarity block: 1024 x 50,000 float32 scores is ~200 MB.
DEFAULT_CHUNK_SIZE = 1024


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")


def _check_chunk(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _check_ks(ks: Sequence[int]) -> Tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    return ks


def _ranks_of_block(block: Tensor, start: int, ties: str) -> Tensor:
    """Ranks for a block of query rows ``start .. start + R`` of an ``[N, N]`` similarity.

    Args:
        block: ``[R, N]`` similarities of queries ``start + r`` against all candidates.
        start: global index of the block's first query; its match is column ``start + r``.
        ties: a rule from :data:`TIE_RULES`.

    Returns:
        ``[R]`` int64 1-based ranks.
    """
    rows = torch.arange(block.shape[0], device=block.device)
    # The diagonal is read from the same block it is compared against, so a match always ties
    # with itself exactly, whatever rounding the similarity computation did.
    diag = block[rows, rows + start].unsqueeze(1)
    if ties == "pessimistic":
        return (block >= diag).sum(dim=1)
    return (block > diag).sum(dim=1) + 1


def _check_finite(name: str, x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def rank_of_matches(sim: Tensor, ties: str = "pessimistic", chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """1-based rank of the diagonal item in each row of a similarity matrix.

    Args:
        sim: ``[N, N]`` similarities, row = query, column = candidate, higher = closer.
        ties: ``"pessimistic"`` (rank = number of candidates scoring ``>=`` the match) or
            ``"optimistic"`` (``1 +`` number scoring strictly higher).
        chunk_size: rows compared at a time (bounds the temporary ``[chunk, N]`` masks).

    Returns:
        ``[N]`` int64 ranks in ``1 .. N``.

    Raises:
        ValueError: ``sim`` is not square and non-empty, contains NaN/inf, or ``ties`` is unknown.
    """
    _check_ties(ties)
    _check_chunk(chunk_size)
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
        raise ValueError(f"sim must be a non-empty square [N, N] matrix, got shape {tuple(sim.shape)}")
    _check_finite("sim", sim)
    n = sim.shape[0]
    return torch.cat([_ranks_of_block(sim[s : s + chunk_size], s, ties) for s in range(0, n, chunk_size)])


def _as_ranks(sim_or_ranks: Tensor, ties: str) -> Tensor:
    """Accept either ``[N]`` ranks (from :func:`rank_of_matches`) or an ``[N, N]`` similarity."""
    if sim_or_ranks.dim() == 1:
        if sim_or_ranks.numel() == 0:
            raise ValueError("ranks are empty")
        if sim_or_ranks.is_floating_point() or (sim_or_ranks < 1).any():
            raise ValueError("ranks must be integers >= 1 (use rank_of_matches on a similarity matrix)")
        return sim_or_ranks
    return rank_of_matches(sim_or_ranks, ties=ties)


def recall_at_k(sim: Tensor, ks: Sequence[int] = (1, 5, 10), ties: str = "pessimistic") -> Dict[str, float]:
    """Fraction of queries whose match ranks within the top ``k``.

    Args:
        sim: ``[N, N]`` similarity matrix, or ``[N]`` ranks from :func:`rank_of_matches`.
        ks: cut-offs; ``k > N`` gives 1.0.
        ties: tie rule when ``sim`` is a similarity matrix.

    Returns:
        ``{"R@1": float, "R@5": float, ...}`` in ``[0, 1]``.
    """
    ks = _check_ks(ks)
    ranks = _as_ranks(sim, ties)
    return {f"R@{k}": float((ranks <= k).double().mean()) for k in ks}


def median_rank(sim: Tensor, ties: str = "pessimistic") -> float:
    """Median rank of the matches (mean of the two middle ranks when ``N`` is even).

    Args:
        sim: ``[N, N]`` similarity matrix, or ``[N]`` ranks from :func:`rank_of_matches`.
        ties: tie rule when ``sim`` is a similarity matrix.
    """
    ranks = _as_ranks(sim, ties).double().sort().values
    n = ranks.numel()
    return float(ranks[n // 2]) if n % 2 else float(0.5 * (ranks[n // 2 - 1] + ranks[n // 2]))


def mean_rank(sim: Tensor, ties: str = "pessimistic") -> float:
    """Mean rank of the matches.

    Args:
        sim: ``[N, N]`` similarity matrix, or ``[N]`` ranks from :func:`rank_of_matches`.
        ties: tie rule when ``sim`` is a similarity matrix.
    """
    return float(_as_ranks(sim, ties).double().mean())


def _directional_ranks(queries: Tensor, candidates: Tensor, ties: str, chunk_size: int) -> Tensor:
    """Ranks of ``candidates[i]`` for ``queries[i]``; both ``[N, D]`` unit vectors."""
    n = queries.shape[0]
    out = []
    for s in range(0, n, chunk_size):
        block = queries[s : s + chunk_size] @ candidates.t()  # [chunk, N] cosine similarities
        out.append(_ranks_of_block(block, s, ties))
    return torch.cat(out)


def cross_modal_retrieval(
    audio: Tensor,
    video: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Dict[str, float]:
    """Audio->video and video->audio retrieval by cosine similarity.

    Args:
        audio: ``[N, D]`` audio embeddings; row ``i`` pairs with ``video[i]``.
        video: ``[N, D]`` video embeddings.
        ks: Recall@K cut-offs.
        ties: tie rule (see the module docstring).
        chunk_size: query rows per similarity block.

    Returns:
        For ``d`` in ``a2v`` (audio queries, video candidates) and ``v2a``: ``d/R@k`` for each
        ``k``, ``d/median_rank``, ``d/mean_rank``; plus ``chance/R@k`` (``min(k, N) / N``),
        ``chance/median_rank`` and ``chance/mean_rank`` (both ``(N + 1) / 2``) and ``n``.

    Raises:
        ValueError: shapes differ or are not ``[N, D]`` with ``N >= 1``, or values are not finite.
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    _check_chunk(chunk_size)
    if audio.dim() != 2 or video.dim() != 2 or audio.shape != video.shape or audio.shape[0] == 0:
        raise ValueError(
            f"audio and video must both be [N, D] with the same N >= 1 and D, got "
            f"{tuple(audio.shape)} and {tuple(video.shape)}"
        )
    _check_finite("audio", audio)
    _check_finite("video", video)
    a = F.normalize(audio.detach().float(), dim=1)
    v = F.normalize(video.detach().float(), dim=1)
    n = a.shape[0]
    out: Dict[str, float] = {}
    for name, (q, c) in {"a2v": (a, v), "v2a": (v, a)}.items():
        ranks = _directional_ranks(q, c, ties, chunk_size)
        for key, value in recall_at_k(ranks, ks).items():
            out[f"{name}/{key}"] = value
        out[f"{name}/median_rank"] = median_rank(ranks)
        out[f"{name}/mean_rank"] = mean_rank(ranks)
    for k in ks:
        out[f"chance/R@{k}"] = min(k, n) / n
    out["chance/median_rank"] = (n + 1) / 2
    out["chance/mean_rank"] = (n + 1) / 2
    out["n"] = float(n)
    return out


def rank_in_gallery(
    queries: Tensor,
    gallery: Tensor,
    targets: Tensor,
    ties: str = "pessimistic",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """1-based rank of each query's true gallery item, by inner product.

    Args:
        queries: ``[Q, D]`` query embeddings (normalise them first for cosine similarity).
        gallery: ``[G, D]`` gallery embeddings.
        targets: ``[Q]`` integer index into ``gallery`` of each query's true item; repeated
            targets give many-to-one retrieval.
        ties: a rule from :data:`TIE_RULES`.
        chunk_size: query rows compared at a time (bounds the ``[chunk, G]`` block).

    Returns:
        ``[Q]`` int64 ranks in ``1 .. G``.

    Raises:
        ValueError: shapes disagree, a target is out of ``[0, G)``, values are not finite,
            or ``ties`` / ``chunk_size`` is invalid.
    """
    _check_ties(ties)
    _check_chunk(chunk_size)
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries and gallery must be [Q, D] and [G, D] with the same D, got "
            f"{tuple(queries.shape)} and {tuple(gallery.shape)}"
        )
    if queries.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError(f"queries ({queries.shape[0]}) and gallery ({gallery.shape[0]}) must not be empty")
    if targets.dim() != 1 or targets.shape[0] != queries.shape[0] or targets.is_floating_point():
        raise ValueError(f"targets must be [Q] integers with Q={queries.shape[0]}, got {tuple(targets.shape)}")
    if int(targets.min()) < 0 or int(targets.max()) >= gallery.shape[0]:
        raise ValueError(
            f"targets must index the gallery of {gallery.shape[0]} items, got {int(targets.min())}..{int(targets.max())}"
        )
    _check_finite("queries", queries)
    _check_finite("gallery", gallery)
    targets = targets.long().to(queries.device)
    out = []
    for s in range(0, queries.shape[0], chunk_size):
        block = queries[s : s + chunk_size] @ gallery.t()  # [chunk, G]
        true = block.gather(1, targets[s : s + chunk_size, None])
        out.append((block >= true).sum(dim=1) if ties == "pessimistic" else (block > true).sum(dim=1) + 1)
    return torch.cat(out)


def chance_levels(n_gallery: int, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Expected scores of a random ranking of ``n_gallery`` items with one true item per query.

    Returns:
        ``{"R@k": min(k, G) / G, ..., "median_rank": (G + 1) / 2, "mean_rank": (G + 1) / 2}``.
    """
    ks = _check_ks(ks)
    if n_gallery < 1:
        raise ValueError(f"n_gallery must be >= 1, got {n_gallery}")
    out = {f"R@{k}": min(k, n_gallery) / n_gallery for k in ks}
    out["median_rank"] = (n_gallery + 1) / 2
    out["mean_rank"] = (n_gallery + 1) / 2
    return out


def rank_summary(ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """``{"R@k": ..., "median_rank": ..., "mean_rank": ...}`` of ``[Q]`` 1-based ranks."""
    out = recall_at_k(ranks, ks)
    out["median_rank"] = median_rank(ranks)
    out["mean_rank"] = mean_rank(ranks)
    return out
