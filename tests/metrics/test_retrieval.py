"""Retrieval metrics against a naive Python loop and hand-checked cases."""

from __future__ import annotations

import math
from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vcmr.metrics.retrieval import (
    chance_levels,
    cross_modal_retrieval,
    rank_in_gallery,
    rank_summary,
    mean_rank,
    median_rank,
    rank_of_matches,
    recall_at_k,
)


def naive_ranks(sim: List[List[float]], ties: str) -> List[int]:
    ranks = []
    for i, row in enumerate(sim):
        if ties == "pessimistic":
            ranks.append(sum(1 for j, s in enumerate(row) if s >= row[i]))
        else:
            ranks.append(1 + sum(1 for s in row if s > row[i]))
    return ranks


def test_hand_checked_ranks_and_ties() -> None:
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2],  # match is best -> 1
            [0.5, 0.3, 0.3],  # 0.5 beats it, 0.3 ties it (itself + col 2)
            [0.7, 0.7, 0.7],  # all tied
        ]
    )
    assert rank_of_matches(sim).tolist() == [1, 3, 3]
    assert rank_of_matches(sim, ties="optimistic").tolist() == [1, 2, 1]
    assert recall_at_k(sim, ks=(1, 2, 3)) == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(1 / 3), "R@3": 1.0}
    assert recall_at_k(sim, ks=(1,), ties="optimistic") == {"R@1": pytest.approx(2 / 3)}
    assert median_rank(sim) == 3.0
    assert mean_rank(sim) == pytest.approx(7 / 3)
    assert mean_rank(sim, ties="optimistic") == pytest.approx(4 / 3)
    # Collapsed scores: pessimistic gives the worst rank, never a perfect score.
    flat = torch.zeros(4, 4)
    assert rank_of_matches(flat).tolist() == [4, 4, 4, 4]
    assert recall_at_k(flat, ks=(1,))["R@1"] == 0.0


def test_median_of_even_count_averages_middle_ranks() -> None:
    ranks = torch.tensor([1, 2, 5, 9])
    assert median_rank(ranks) == 3.5
    assert median_rank(torch.tensor([4])) == 4.0
    assert recall_at_k(ranks, ks=(2, 100)) == {"R@2": 0.5, "R@100": 1.0}


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_ranks_match_naive_loop_with_many_ties(ties: str, chunk: int) -> None:
    g = torch.Generator().manual_seed(7)
    # Scores on a coarse grid so ties are frequent.
    sim = torch.randint(0, 4, (23, 23), generator=g).float()
    got = rank_of_matches(sim, ties=ties, chunk_size=chunk).tolist()
    assert got == naive_ranks(sim.tolist(), ties)
    ranks = np.array(got)
    rec = recall_at_k(sim, ks=(1, 5, 10), ties=ties)
    for k in (1, 5, 10):
        assert rec[f"R@{k}"] == pytest.approx(float(np.mean(ranks <= k)))
    assert median_rank(sim, ties=ties) == pytest.approx(float(np.median(ranks)))
    assert mean_rank(sim, ties=ties) == pytest.approx(float(np.mean(ranks)))


@pytest.mark.parametrize("chunk", [5, 1024])
def test_cross_modal_retrieval_matches_naive(chunk: int) -> None:
    g = torch.Generator().manual_seed(11)
    n, d = 40, 16
    audio = torch.randn(n, d, generator=g)
    video = audio + 1.2 * torch.randn(n, d, generator=g)  # correlated but imperfect
    out = cross_modal_retrieval(3.0 * audio, video, ks=(1, 5, 10), chunk_size=chunk)
    a = F.normalize(audio.double(), dim=1)
    v = F.normalize(video.double(), dim=1)
    for name, sim in (("a2v", a @ v.t()), ("v2a", v @ a.t())):
        ranks = np.array(naive_ranks(sim.tolist(), "pessimistic"))
        for k in (1, 5, 10):
            assert out[f"{name}/R@{k}"] == pytest.approx(float(np.mean(ranks <= k)))
        assert out[f"{name}/median_rank"] == pytest.approx(float(np.median(ranks)))
        assert out[f"{name}/mean_rank"] == pytest.approx(float(np.mean(ranks)))
    # Correlated embeddings retrieve far above chance; directions are not identical.
    assert out["a2v/R@1"] > 5 * out["chance/R@1"]
    assert out["chance/R@1"] == pytest.approx(1 / n)
    assert out["chance/R@10"] == pytest.approx(10 / n)
    assert out["chance/median_rank"] == pytest.approx((n + 1) / 2)
    assert out["n"] == n


def test_perfect_and_reversed_embeddings() -> None:
    x = torch.eye(6)
    out = cross_modal_retrieval(x, x, ks=(1, 10))
    assert out["a2v/R@1"] == 1.0 and out["v2a/R@1"] == 1.0 and out["a2v/median_rank"] == 1.0
    assert out["chance/R@10"] == 1.0  # k > N is capped at N
    # Video of clip i equals audio of clip i+1: every match ranks behind the impostor.
    shifted = cross_modal_retrieval(x, torch.roll(x, 1, dims=0) + 0.5 * x, ks=(1, 2))
    assert shifted["a2v/R@1"] == 0.0 and shifted["a2v/R@2"] == 1.0


def test_random_embeddings_are_at_chance() -> None:
    n, d = 200, 32
    r1, medians = [], []
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        out = cross_modal_retrieval(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g), chunk_size=64)
        r1.append(out["a2v/R@1"])
        medians.append(out["a2v/median_rank"])
    # R@1 ~ 1/N = 0.005; over 2000 queries the standard error is ~0.0016.
    assert abs(np.mean(r1) - 1 / n) < 0.006
    assert abs(np.mean(medians) - (n + 1) / 2) < 0.15 * n


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="square"):
        rank_of_matches(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        rank_of_matches(torch.tensor([[1.0, math.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="ties"):
        rank_of_matches(torch.eye(2), ties="random")
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(torch.eye(2), ks=(0,))
    with pytest.raises(ValueError, match="ranks must be integers"):
        median_rank(torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        cross_modal_retrieval(torch.zeros(3, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="video contains NaN"):
        cross_modal_retrieval(torch.zeros(2, 4), torch.full((2, 4), math.inf))
    with pytest.raises(ValueError, match="chunk_size"):
        cross_modal_retrieval(torch.eye(2), torch.eye(2), chunk_size=0)


def naive_gallery_ranks(sim: List[List[float]], targets: List[int], ties: str) -> List[int]:
    out = []
    for row, t in zip(sim, targets):
        better = 0
        for j, s in enumerate(row):
            if j == t:
                continue
            if s > row[t] or (ties == "pessimistic" and s == row[t]):
                better += 1
        out.append(better + 1)
    return out


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_rank_in_gallery_many_to_one_matches_naive(ties: str, chunk: int) -> None:
    g = torch.Generator().manual_seed(3)
    gallery = torch.randint(0, 3, (9, 4), generator=g).float()  # coarse values: many ties
    targets = torch.randint(0, 9, (17,), generator=g)  # several queries share a target
    queries = gallery[targets] + torch.randint(-1, 2, (17, 4), generator=g).float()
    got = rank_in_gallery(queries, gallery, targets, ties=ties, chunk_size=chunk)
    sim = (queries @ gallery.t()).tolist()
    assert got.tolist() == naive_gallery_ranks(sim, targets.tolist(), ties)
    assert got.dtype == torch.int64 and int(got.min()) >= 1 and int(got.max()) <= 9


def test_rank_in_gallery_one_to_one_equals_rank_of_matches() -> None:
    g = torch.Generator().manual_seed(5)
    a, v = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    ranks = rank_in_gallery(a, v, torch.arange(30))
    assert ranks.tolist() == rank_of_matches(a @ v.t()).tolist()


def test_summary_and_chance_levels() -> None:
    s = rank_summary(torch.tensor([1, 3, 12, 2]), ks=(1, 5))
    assert s == {"R@1": 0.25, "R@5": 0.75, "median_rank": 2.5, "mean_rank": 4.5}
    assert chance_levels(100, ks=(1, 5, 10)) == {
        "R@1": 0.01, "R@5": 0.05, "R@10": 0.1, "median_rank": 50.5, "mean_rank": 50.5,
    }
    assert chance_levels(3, ks=(10,))["R@10"] == 1.0
    # A random many-to-one ranking lands at the chance level.
    g = torch.Generator().manual_seed(0)
    gallery = torch.randn(40, 16, generator=g)
    targets = torch.randint(0, 40, (4000,), generator=g)
    ranks = rank_in_gallery(torch.randn(4000, 16, generator=g), gallery, targets)
    assert abs(rank_summary(ranks)["R@10"] - 0.25) < 0.03
    assert abs(rank_summary(ranks)["mean_rank"] - 20.5) < 1.0


def test_rank_in_gallery_bad_input() -> None:
    with pytest.raises(ValueError, match="same D"):
        rank_in_gallery(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="index the gallery of 4"):
        rank_in_gallery(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="targets must be"):
        rank_in_gallery(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        rank_in_gallery(torch.zeros(0, 3), torch.zeros(4, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="n_gallery"):
        chance_levels(0)
