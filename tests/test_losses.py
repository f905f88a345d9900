"""Losses: naive references, temperature behaviour, and 2-process gloo gradient equivalence."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F

from vcmr.losses import (
    LOSSES,
    CrossModalInfoNCE,
    NTXentLoss,
    VideoMusicLoss,
    build_loss,
    gather_with_grad,
    rank_offset,
    world_info,
)

WORLD = 2
LOCAL_B = 4
DIM = 8


# --------------------------------------------------------------------------------------
# Naive references
# --------------------------------------------------------------------------------------


def naive_ntxent(z_i: torch.Tensor, z_j: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-anchor loop over the 2N embeddings of one batch (SimCLR definition)."""
    z = F.normalize(torch.cat([z_i, z_j]).double(), dim=1)
    n = z_i.shape[0]
    losses = []
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        num = math.exp(float(z[a] @ z[pos]) / tau)
        den = sum(math.exp(float(z[a] @ z[k]) / tau) for k in range(2 * n) if k != a)
        losses.append(-math.log(num / den))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def naive_infonce(audio: torch.Tensor, video: torch.Tensor, tau: float) -> Dict[str, float]:
    a = F.normalize(audio.double(), dim=1)
    v = F.normalize(video.double(), dim=1)
    n = a.shape[0]

    def direction(x: torch.Tensor, y: torch.Tensor) -> float:
        total = 0.0
        for k in range(n):
            scores = [math.exp(float(x[k] @ y[m]) / tau) for m in range(n)]
            total += -math.log(scores[k] / sum(scores))
        return total / n

    a2v, v2a = direction(a, v), direction(v, a)
    return {"loss_a2v": a2v, "loss_v2a": v2a, "loss": 0.5 * (a2v + v2a)}


# --------------------------------------------------------------------------------------
# Single process
# --------------------------------------------------------------------------------------


def test_gather_is_identity_without_process_group() -> None:
    x = torch.randn(3, 5, requires_grad=True)
    assert world_info() == (0, 1)
    assert gather_with_grad(x) is x
    assert rank_offset(7) == 0
    with pytest.raises(ValueError, match="scalar"):
        gather_with_grad(torch.tensor(1.0))


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_ntxent_matches_naive_loop(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    z_i, z_j = torch.randn(6, DIM, generator=g), torch.randn(6, DIM, generator=g)
    got = NTXentLoss(tau)(z_i, z_j)
    assert got.shape == () and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_ntxent(z_i, z_j, tau), rtol=1e-5, atol=1e-5)


def test_ntxent_is_scale_invariant_and_bounded_for_identical_views() -> None:
    g = torch.Generator().manual_seed(1)
    z_i, z_j = torch.randn(5, DIM, generator=g), torch.randn(5, DIM, generator=g)
    loss = NTXentLoss(0.5)
    torch.testing.assert_close(loss(z_i, z_j), loss(3.0 * z_i, 0.2 * z_j))
    # Orthogonal identical views: positive cos = 1, every negative cos = 0 (except none).
    eye = torch.eye(4)
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + 6 * math.exp(0.0)))
    assert abs(loss(eye, eye).item() - expected) < 1e-5


def test_ntxent_temperature_behaviour() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(8, DIM, generator=g)
    z_i = base + 0.05 * torch.randn(8, DIM, generator=g)
    z_j = base + 0.05 * torch.randn(8, DIM, generator=g)
    # Well-aligned views: a lower temperature sharpens the softmax onto the positive.
    losses = [NTXentLoss(t)(z_i, z_j).item() for t in (0.05, 0.1, 0.5, 2.0)]
    assert losses == sorted(losses)
    assert losses[0] < 0.05
    # A very high temperature flattens everything: loss -> log(2N - 1).
    assert abs(NTXentLoss(1e4)(z_i, z_j).item() - math.log(2 * 8 - 1)) < 1e-3
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss(0.1)(torch.randn(3, DIM), torch.randn(4, DIM))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        NTXentLoss(0.1)(torch.randn(3), torch.randn(3))


def test_cross_modal_matches_naive_loop() -> None:
    g = torch.Generator().manual_seed(3)
    audio, video = torch.randn(7, DIM, generator=g), torch.randn(7, DIM, generator=g)
    out = CrossModalInfoNCE(0.07, learnable_temperature=False)(audio, video)
    ref = naive_infonce(audio, video, 0.07)
    for key in ("loss", "loss_a2v", "loss_v2a"):
        assert abs(out[key].item() - ref[key]) < 1e-4, key
    assert abs(out["temperature"].item() - 0.07) < 1e-6
    assert not out["temperature"].requires_grad
    assert out["loss_a2v"].item() != pytest.approx(out["loss_v2a"].item())


def test_cross_modal_learnable_temperature_and_clamp() -> None:
    g = torch.Generator().manual_seed(4)
    audio, video = torch.randn(6, DIM, generator=g), torch.randn(6, DIM, generator=g)
    fixed = CrossModalInfoNCE(0.1, learnable_temperature=False)
    assert [n for n, _ in fixed.named_parameters()] == []
    learn = CrossModalInfoNCE(0.1, learnable_temperature=True, max_inverse_temperature=50.0)
    assert [n for n, _ in learn.named_parameters()] == ["log_inv_temperature"]
    out = learn(audio, video)
    torch.testing.assert_close(out["loss"], fixed(audio, video)["loss"])
    out["loss"].backward()
    grad = learn.log_inv_temperature.grad
    assert grad is not None and grad.abs().item() > 0
    # Past the cap the inverse temperature is clamped and gets no gradient.
    with torch.no_grad():
        learn.log_inv_temperature.fill_(math.log(500.0))
    learn.log_inv_temperature.grad = None
    out = learn(audio, video)
    assert abs(out["temperature"].item() - 1 / 50.0) < 1e-7
    out["loss"].backward()
    assert learn.log_inv_temperature.grad.abs().item() == 0.0
    with pytest.raises(ValueError, match="max_inverse_temperature"):
        CrossModalInfoNCE(0.001, learnable_temperature=True, max_inverse_temperature=100.0)


def test_video_music_loss_combines_terms() -> None:
    g = torch.Generator().manual_seed(5)
    audio, video, view2 = (torch.randn(5, DIM, generator=g) for _ in range(3))
    cm = CrossModalInfoNCE(0.1, learnable_temperature=False)
    music = NTXentLoss(0.2)
    out = VideoMusicLoss(cm, 0.5, music)(audio, video, view2)
    expected = cm(audio, video)["loss"] + 0.5 * music(audio, view2)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["loss_music"], music(audio, view2))
    assert set(out) == {"loss", "loss_cross_modal", "loss_a2v", "loss_v2a", "temperature", "loss_music"}
    only_cm = VideoMusicLoss(cm, 0.0, None)(audio, video)
    torch.testing.assert_close(only_cm["loss"], cm(audio, video)["loss"])
    assert "loss_music" not in only_cm
    with pytest.raises(ValueError, match="audio_view2"):
        VideoMusicLoss(cm, 0.5, music)(audio, video)
    with pytest.raises(ValueError, match="no music loss"):
        VideoMusicLoss(cm, 0.5, None)


def test_registry_builds_losses() -> None:
    assert LOSSES == {"ntxent": NTXentLoss, "cross_modal_infonce": CrossModalInfoNCE}
    loss = build_loss("ntxent", {"temperature": 0.3})
    assert isinstance(loss, NTXentLoss) and loss.temperature == 0.3
    with pytest.raises(KeyError, match="unknown loss name 'nope'"):
        build_loss("nope", {})
    with pytest.raises(TypeError, match="bad arguments for loss 'ntxent'"):
        build_loss("ntxent", {"temp": 0.3})


# --------------------------------------------------------------------------------------
# Two processes (gloo): gradients under DDP equal single-process gradients
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_data() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    n = WORLD * LOCAL_B
    return {k: torch.randn(n, DIM, generator=g) for k in ("z_i", "z_j", "audio", "video")}


#: Rows per rank in the unequal-size checks (rank 1 lost one item of its batch).
UNEQUAL = (LOCAL_B, LOCAL_B - 1)


def _unequal_rows(data: Dict[str, torch.Tensor], rank: int) -> Dict[str, torch.Tensor]:
    start = sum(UNEQUAL[:rank])
    return {k: v[start : start + UNEQUAL[rank]] for k, v in data.items()}


def _local_run(data: Dict[str, torch.Tensor], rows: slice) -> Dict[str, torch.Tensor]:
    """Every loss on ``data[rows]``: losses and gradients w.r.t. the rows (and temperature)."""
    out: Dict[str, torch.Tensor] = {}
    for gather in (True, False):
        z_i = data["z_i"][rows].clone().requires_grad_(True)
        z_j = data["z_j"][rows].clone().requires_grad_(True)
        loss = NTXentLoss(0.2, gather=gather)(z_i, z_j)
        loss.backward()
        tag = f"ntxent_gather{int(gather)}"
        out[f"{tag}/loss"] = loss.detach()
        out[f"{tag}/grad_i"], out[f"{tag}/grad_j"] = z_i.grad, z_j.grad
    audio = data["audio"][rows].clone().requires_grad_(True)
    video = data["video"][rows].clone().requires_grad_(True)
    cm = CrossModalInfoNCE(0.1, learnable_temperature=True)
    res = cm(audio, video)
    res["loss"].backward()
    out["cm/loss"] = res["loss"].detach()
    out["cm/loss_a2v"] = res["loss_a2v"].detach()
    out["cm/grad_audio"], out["cm/grad_video"] = audio.grad, video.grad
    out["cm/grad_temp"] = cm.log_inv_temperature.grad
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        data = _global_data()
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        out = _local_run(data, rows)
        # Plain gather: values and offset.
        gathered = gather_with_grad(data["z_i"][rows])
        out["gathered"] = gathered
        out["offset"] = torch.tensor(rank_offset(LOCAL_B))
        # Unequal local batch sizes (a batch that lost items): rank r holds UNEQUAL[r] rows.
        uneq = _unequal_rows(data, rank)
        z_i = uneq["z_i"].clone().requires_grad_(True)
        z_j = uneq["z_j"].clone().requires_grad_(True)
        out["unequal/gathered"] = gather_with_grad(z_i.detach())
        out["unequal/offset"] = torch.tensor(rank_offset(z_i.shape[0]))
        loss = NTXentLoss(0.2)(z_i, z_j)
        loss.backward()
        out["unequal/loss"] = loss.detach()
        out["unequal/grad_i"], out["unequal/grad_j"] = z_i.grad, z_j.grad
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(
    tmp_path_factory: pytest.TempPathFactory, warm_start_method: str
) -> Dict[int, Dict[str, torch.Tensor]]:
    import torch.multiprocessing as mp

    out_dir = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True,
                       start_method=warm_start_method)
    return {r: torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)}


def test_ddp_gather_values_and_offset(ddp_results: Dict[int, Dict[str, torch.Tensor]]) -> None:
    data = _global_data()
    for r in range(WORLD):
        torch.testing.assert_close(ddp_results[r]["gathered"], data["z_i"])
        assert int(ddp_results[r]["offset"]) == r * LOCAL_B


def test_ddp_gather_of_unequal_batches(
    ddp_results: Dict[int, Dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranks with 4 and 3 rows: the gather is the 7 rows in rank order (no padding left), the
    offsets are 0 and 4, and each rank's row gradients are those of the sum of the per-rank
    losses computed in one process on the same 7 rows."""
    import vcmr.losses as losses

    data = _global_data()
    n = sum(UNEQUAL)
    for r in range(WORLD):
        assert ddp_results[r]["unequal/gathered"].shape == (n, DIM)
        torch.testing.assert_close(ddp_results[r]["unequal/gathered"], data["z_i"][:n])
        assert int(ddp_results[r]["unequal/offset"]) == sum(UNEQUAL[:r])
    z_i = data["z_i"][:n].clone().requires_grad_(True)
    z_j = data["z_j"][:n].clone().requires_grad_(True)
    total = 0.0
    for r in range(WORLD):
        start = sum(UNEQUAL[:r])
        rows = slice(start, start + UNEQUAL[r])
        full = iter([F.normalize(z_i, dim=1), F.normalize(z_j, dim=1)])  # the loss gathers unit rows
        monkeypatch.setattr(losses, "gather_with_grad", lambda t: next(full))
        monkeypatch.setattr(losses, "rank_offset", lambda b, s=start: s)
        loss_r = NTXentLoss(0.2)(z_i[rows], z_j[rows])
        torch.testing.assert_close(ddp_results[r]["unequal/loss"], loss_r.detach(), rtol=1e-5, atol=1e-6)
        total = total + loss_r
    total.backward()
    for r in range(WORLD):
        start = sum(UNEQUAL[:r])
        rows = slice(start, start + UNEQUAL[r])
        torch.testing.assert_close(ddp_results[r]["unequal/grad_i"], z_i.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ddp_results[r]["unequal/grad_j"], z_j.grad[rows], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "prefix,grads",
    [
        ("ntxent_gather1", {"grad_i": "z_i", "grad_j": "z_j"}),
        ("cm", {"grad_audio": "audio", "grad_video": "video"}),
    ],
)
def test_ddp_matches_single_process(
    ddp_results: Dict[int, Dict[str, torch.Tensor]], prefix: str, grads: Dict[str, str]
) -> None:
    data = _global_data()
    single = _local_run(data, slice(None))
    # (a) DDP reports the mean of the per-rank losses: it equals the full-batch loss.
    mean_loss = sum(ddp_results[r][f"{prefix}/loss"] for r in range(WORLD)) / WORLD
    torch.testing.assert_close(mean_loss, single[f"{prefix}/loss"], rtol=1e-5, atol=1e-6)
    # (b) Each rank's local gradient, averaged by DDP (/W), is the full-batch gradient.
    for r in range(WORLD):
        rows = slice(r * LOCAL_B, (r + 1) * LOCAL_B)
        for gkey in grads:
            got = ddp_results[r][f"{prefix}/{gkey}"] / WORLD
            torch.testing.assert_close(got, single[f"{prefix}/{gkey}"][rows], rtol=1e-4, atol=1e-6)
            assert got.abs().max() > 1e-4
    if prefix == "cm":
        # A parameter gradient (the temperature) is averaged by DDP: mean over ranks.
        mean_temp = sum(ddp_results[r]["cm/grad_temp"] for r in range(WORLD)) / WORLD
        torch.testing.assert_close(mean_temp, single["cm/grad_temp"], rtol=1e-4, atol=1e-6)


def test_ddp_without_gather_uses_local_negatives(ddp_results: Dict[int, Dict[str, torch.Tensor]]) -> None:
    data = _global_data()
    single = _local_run(data, slice(None))
    mean_loss = sum(ddp_results[r]["ntxent_gather0/loss"] for r in range(WORLD)) / WORLD
    # Fewer negatives: a different (here lower) loss than the global-batch loss.
    assert abs(mean_loss.item() - single["ntxent_gather1/loss"].item()) > 1e-2
    for r in range(WORLD):
        rows = slice(r * LOCAL_B, (r + 1) * LOCAL_B)
        local_only = NTXentLoss(0.2)(data["z_i"][rows], data["z_j"][rows])
        torch.testing.assert_close(ddp_results[r]["ntxent_gather0/loss"], local_only)
        with_global = ddp_results[r]["ntxent_gather1/loss"]
        assert abs(with_global.item() - local_only.item()) > 1e-3
