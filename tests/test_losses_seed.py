"""The seed models' losses against naive Python loops of their formulas (value and gradient)."""

from __future__ import annotations

from typing import List

import pytest
import torch
import torch.nn.functional as F

import vcmr.losses as losses
from vcmr.losses import (
    IntraModalStructureLoss,
    RegressionMSELoss,
    SiameseContrastiveLoss,
    TopQTripletLoss,
    VMNetLoss,
    contrastive_pairs,
)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)


def naive_triplet(x: torch.Tensor, y: torch.Tensor, margin: float, top_q: int) -> List[torch.Tensor]:
    """Loop form of the issue's definition: per anchor, its top_q closest negatives."""
    n = x.shape[0]
    q = min(top_q, n - 1)
    out = []
    for a, b in ((x, y), (y, x)):
        terms = []
        for i in range(n):
            pos = -torch.dot(a[i], b[i])
            negs = sorted(((-torch.dot(a[i], b[j]), j) for j in range(n) if j != i), key=lambda t: float(t[0].detach()))
            for d_neg, _ in negs[:q]:
                terms.append(torch.clamp(margin + pos - d_neg, min=0.0))
        out.append(torch.stack(terms).mean())
    return out


@pytest.mark.parametrize("n,top_q", [(7, 3), (6, 100), (5, 4), (2, 1)])
def test_top_q_triplet_matches_naive_loop(n: int, top_q: int) -> None:
    x, y = _unit(n, 4, 1), _unit(n, 4, 2)
    got = TopQTripletLoss(margin=0.3, top_q=top_q)(x, y)
    ref = naive_triplet(x, y, 0.3, top_q)
    assert torch.allclose(got["xy"], ref[0]) and torch.allclose(got["yx"], ref[1])
    g_got = torch.autograd.grad(3 * got["xy"] + got["yx"], (x, y))
    g_ref = torch.autograd.grad(3 * ref[0] + ref[1], (x, y))
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b)
    assert float(got["xy"]) > 0  # a random embedding violates the margin somewhere


def test_top_q_larger_than_batch_uses_every_negative() -> None:
    x, y = _unit(5, 3, 3), _unit(5, 3, 4)
    big = TopQTripletLoss(0.2, top_q=100)(x, y)
    exact = TopQTripletLoss(0.2, top_q=4)(x, y)
    assert torch.equal(big["xy"], exact["xy"]) and torch.equal(big["yx"], exact["yx"])


def test_top_q_triplet_zero_for_separated_pairs() -> None:
    e = torch.eye(4, dtype=torch.float64)
    out = TopQTripletLoss(margin=0.5, top_q=2)(e, e.clone())
    assert float(out["xy"]) == 0.0 and float(out["yx"]) == 0.0


def test_top_q_triplet_global_batch_mean_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (monkeypatched) 2-rank gather, the mean of the ranks' losses is the one-process loss."""
    x, y = _unit(8, 4, 5).detach(), _unit(8, 4, 6).detach()
    full = TopQTripletLoss(0.2, top_q=3)(x, y)
    per_rank = []
    for rank in (0, 1):
        rows = slice(4 * rank, 4 * rank + 4)
        xs, ys = x[rows], y[rows]
        lookup = {id(xs): x, id(ys): y}
        monkeypatch.setattr(losses, "gather_with_grad", lambda t: lookup[id(t)])
        monkeypatch.setattr(losses, "rank_offset", lambda b, r=rank: r * b)
        per_rank.append(TopQTripletLoss(0.2, top_q=3)(xs, ys))
    for key in ("xy", "yx"):
        assert torch.allclose(0.5 * (per_rank[0][key] + per_rank[1][key]), full[key])


def naive_structure(features: torch.Tensor, emb: torch.Tensor, k: int) -> torch.Tensor:
    kk = min(k, features.shape[0])
    f = [features[i] / features[i].norm() for i in range(kk)]
    e = [emb[i] / emb[i].norm() for i in range(kk)]
    terms = []
    for i in range(kk):
        for j in range(kk - 1):
            dl1, dl2 = -torch.dot(f[i], f[j]), -torch.dot(f[i], f[j + 1])
            de1, de2 = -torch.dot(e[i], e[j]), -torch.dot(e[i], e[j + 1])
            coeff = float(torch.sign(dl1 - dl2)) - float(torch.sign((de1 - de2).detach()))
            terms.append(coeff * (de2 - de1))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("n,k", [(9, 5), (6, 100), (4, 4)])
def test_structure_loss_matches_naive_loop(n: int, k: int) -> None:
    g = torch.Generator().manual_seed(n)
    feats = torch.randn(n, 7, generator=g, dtype=torch.float64)
    emb = torch.randn(n, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    got = IntraModalStructureLoss(k)(feats, emb)
    ref = naive_structure(feats, emb, k)
    assert torch.allclose(got, ref)
    assert torch.allclose(torch.autograd.grad(got, emb)[0], torch.autograd.grad(ref, emb)[0])
    assert float(got) >= 0  # each term is >= 0: it only counts neighbours the embedding orders wrongly


def test_structure_loss_is_zero_when_order_agrees() -> None:
    feats = torch.randn(6, 4, dtype=torch.float64)
    assert float(IntraModalStructureLoss(6)(feats, feats.clone())) == 0.0
    assert float(IntraModalStructureLoss(6)(feats[:1], feats[:1])) == 0.0  # fewer than 2 samples


def naive_contrastive(a, v, y, margin, l1, l2, weights, reduction):
    terms = []
    for i in range(a.shape[0]):
        d = torch.sqrt(sum((a[i, k] - v[i, k]) ** 2 for k in range(a.shape[1])))
        terms.append(y[i] * 0.5 * d**2 + (1 - y[i]) * 0.5 * torch.clamp(margin - d, min=0.0) ** 2)
    c = torch.stack(terms).sum()
    if reduction == "mean":
        c = c / a.shape[0]
    reg1 = sum(w.abs().sum() for w in weights)
    reg2 = sum((w**2).sum() for w in weights) / 2
    return c + l1 * reg1 + l2 * reg2


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_contrastive_loss_matches_naive_loop(reduction: str) -> None:
    g = torch.Generator().manual_seed(7)
    a = (0.3 * torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    v = (0.3 * torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    w = [torch.randn(3, 2, generator=g, dtype=torch.float64).requires_grad_(True),
         torch.randn(2, generator=g, dtype=torch.float64).requires_grad_(True)]
    y = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.float64)
    out = SiameseContrastiveLoss(1.0, 0.001, 0.01, reduction)(a.double(), v.double(), y, w)
    ref = naive_contrastive(a, v, y, 1.0, 0.001, 0.01, w, reduction)
    assert torch.allclose(out["loss"].double(), ref)
    got_g = torch.autograd.grad(out["loss"], (a, v, *w))
    ref_g = torch.autograd.grad(ref, (a, v, *w))
    for x1, x2 in zip(got_g, ref_g):
        assert torch.allclose(x1.double(), x2, atol=1e-6)
    assert float(out["match_fraction"]) == 0.5


def test_contrastive_pairs_alternate() -> None:
    idx, match = contrastive_pairs(5, step=0)
    assert torch.equal(idx, torch.arange(5)) and torch.equal(match, torch.ones(5))
    gen = torch.Generator().manual_seed(0)
    for step in (1, 3, 5):
        idx, match = contrastive_pairs(5, step=step, generator=gen)
        assert torch.equal(match, torch.zeros(5))
        assert sorted(idx.tolist()) == list(range(5)) and all(int(i) != k for k, i in enumerate(idx))


def test_vmnet_loss_weights_and_regression_mse() -> None:
    x, y = _unit(6, 4, 8).detach(), _unit(6, 4, 9).detach()
    fx, fy = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    w = {"music_to_video": 3.0, "video_to_music": 1.0, "music_structure": 0.2, "video_structure": 0.2}
    trip, struct = TopQTripletLoss(0.1, 100), IntraModalStructureLoss(100)
    out = VMNetLoss(trip, struct, w)(x, y, fx, fy)
    t = trip(x, y)
    expect = 3 * t["xy"] + t["yx"] + 0.2 * struct(fx, x) + 0.2 * struct(fy, y)
    assert torch.allclose(out["loss"], expect)
    with pytest.raises(ValueError, match="music_structure"):
        VMNetLoss(trip, struct, {"music_to_video": 1.0, "video_to_music": 1.0, "video_structure": 1.0})
    p, q = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(RegressionMSELoss()(p, q)["loss"], ((p - q) ** 2).mean())


def test_seed_losses_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="top_q"):
        TopQTripletLoss(0.1, top_q=0)
    with pytest.raises(ValueError, match="same shape"):
        TopQTripletLoss()(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="reduction"):
        SiameseContrastiveLoss(reduction="max")
    with pytest.raises(ValueError, match="match"):
        SiameseContrastiveLoss()(torch.randn(3, 2), torch.randn(3, 2), torch.ones(2))
