"""VCMR's stage-2 loss: NT-Xent over the 2N x 2N audio/video matrix, fixed temperature."""
import math

import pytest
import torch
import torch.nn.functional as F

from vcmr import losses
from vcmr.losses import CrossModalNTXent, NTXentLoss


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py



def naive_2n_ntxent(audio: torch.Tensor, video: torch.Tensor, tau: float):
    """Per-anchor loop: anchors a_0..a_{N-1}, v_0..v_{N-1}; positive = the pair's other modality."""
    z = torch.cat([F.normalize(audio, dim=1), F.normalize(video, dim=1)])
    n = audio.shape[0]
    terms = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k != i)
        terms.append(-torch.log(torch.exp(z[i] @ z[pos] / tau) / den))
    return torch.stack(terms[:n]).mean(), torch.stack(terms[n:]).mean(), torch.stack(terms).mean()


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_naive_loop_value_and_gradient(tau):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 5, generator=g).requires_grad_(True)
    v = torch.randn(6, 5, generator=g).requires_grad_(True)
    out = CrossModalNTXent(tau)(a, v)
    ref_a2v, ref_v2a, ref = naive_2n_ntxent(a, v, tau)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out["loss_a2v"].item() == pytest.approx(ref_a2v.item(), rel=1e-5)
    assert out["loss_v2a"].item() == pytest.approx(ref_v2a.item(), rel=1e-5)
    assert out["temperature"].item() == pytest.approx(tau)
    ga, gv = torch.autograd.grad(out["loss"], (a, v))
    ra, rv = torch.autograd.grad(ref, (a, v))
    assert torch.allclose(ga, ra, atol=1e-5) and torch.allclose(gv, rv, atol=1e-5)
    # Same number as SimCLR's NT-Xent with the audio batch as view 1 and the video batch as view 2.
    assert out["loss"].item() == pytest.approx(NTXentLoss(tau)(a, v).item(), rel=1e-6)


def test_same_modality_pairs_are_negatives():
    # Two identical audio rows: in the 2N loss each is the other's hard negative, so the
    # loss rises; a cross-modal-only InfoNCE would not see the audio-audio similarity.
    v = torch.eye(4)
    a_distinct = torch.eye(4)
    a_dup = a_distinct.clone()
    a_dup[1] = a_dup[0]
    loss = CrossModalNTXent(0.1)
    assert loss(a_dup, v)["loss"] > loss(a_distinct, v)["loss"]
    # Perfectly aligned, mutually orthogonal pairs: every anchor's loss is log(1 + (2N-2) e^{-1/tau}).
    expected = math.log(1 + 6 * math.exp(-10.0))
    assert loss(a_distinct, v)["loss"].item() == pytest.approx(expected, rel=1e-4)


def test_global_batch_with_monkeypatched_gather(monkeypatch):
    """Two ranks: the mean of their losses, and its gradient, equal the one-process loss."""
    g = torch.Generator().manual_seed(7)
    a = torch.randn(8, 4, generator=g, requires_grad=True)
    v = torch.randn(8, 4, generator=g, requires_grad=True)
    full = CrossModalNTXent(0.1)(a, v)["loss"]
    g_full = torch.autograd.grad(full, (a, v))

    def rank_loss(rank):
        rows = slice(4 * rank, 4 * rank + 4)
        # The gathered tensors are rows of the same leaves, so gradients reach every rank's rows.
        an, vn = F.normalize(a, dim=1), F.normalize(v, dim=1)
        local_a, local_v = a[rows], v[rows]
        calls = iter([an, vn])  # the loss gathers audio, then video
        monkeypatch.setattr(losses, "gather_with_grad", lambda t: next(calls))
        monkeypatch.setattr(losses, "rank_offset", lambda b, r=rank: r * b)
        return CrossModalNTXent(0.1)(local_a, local_v)["loss"]

    per_rank = [rank_loss(0), rank_loss(1)]
    mean = 0.5 * (per_rank[0] + per_rank[1])
    assert mean.item() == pytest.approx(full.item(), rel=1e-6)
    g_mean = torch.autograd.grad(mean, (a, v))
    for x, y in zip(g_mean, g_full):
        assert torch.allclose(x, y, atol=1e-6)
    # Without gather, each rank only uses its own 2B embeddings: a different number.
    local = CrossModalNTXent(0.1, gather=False)(a[:4], v[:4])["loss"]
    assert local.item() != pytest.approx(per_rank[0].item(), rel=1e-3)


def test_stage2_registry_and_errors():
    from vcmr.trainers.video import CROSS_MODAL_LOSSES

    block = {"temperature": 0.1, "learnable_temperature": False, "max_inverse_temperature": 100.0, "global_negatives": True}
    loss = CROSS_MODAL_LOSSES["cross_modal_ntxent"](block)
    assert isinstance(loss, CrossModalNTXent) and loss.temperature == 0.1 and loss.gather
    with pytest.raises(ValueError, match="temperature"):
        CrossModalNTXent(0.0)
    with pytest.raises(ValueError, match="same shape"):
        CrossModalNTXent(0.1)(torch.randn(3, 4), torch.randn(2, 4))
