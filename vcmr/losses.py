"""Contrastive losses whose negatives come from the global (all-rank) batch.

Every loss here owns its cross-rank gather: under ``torch.distributed`` with world size
``W > 1`` the embeddings of all ranks are gathered *with gradients*, so each rank scores its
local anchors against the ``N = W * B`` embeddings of the whole step. Without an initialised
process group (one process, one GPU, CPU tests) the gather is the identity and the losses are
the plain single-process losses.

Why the gradients are right under DDP (equal local batch sizes ``B``): rank ``r`` computes
``L_r``, the mean loss of its local anchors against the global batch. The mean of the
``L_r`` over ranks is exactly the single-process loss ``L`` on the concatenated batch. In
the backward pass :func:`gather_with_grad` sums (all-reduce) the gradient that every rank's
loss sends to each gathered row and keeps this rank's slice, so rank ``r``'s local
embeddings receive ``sum_s dL_s/dz_r = W * dL/dz_r``. DDP then averages parameter gradients
over the ``W`` ranks, which divides by ``W`` again: the parameters get ``dL/dtheta``, the
gradient of the single-process loss. See ``docs/losses.md``.

Local batch sizes may differ between ranks (items dropped because their file failed to
decode, see :mod:`vcmr.data.collate`): the gather pads to the largest and trims, and each
rank still averages over its own anchors, so a rank with ``B - 1`` rows weighs each of them
``1 / (B - 1)`` instead of ``1 / B`` (a negligible bias for the rare dropped item).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "world_info",
    "gather_with_grad",
    "rank_offset",
    "NTXentLoss",
    "CrossModalInfoNCE",
    "VideoMusicLoss",
    "LOSSES",
    "build_loss",
]


# --------------------------------------------------------------------------------------
# Cross-rank gather
# --------------------------------------------------------------------------------------


def world_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors live for a collective: the GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_sizes(local_batch_size: int) -> List[int]:
    """Every rank's local batch size (a collective: call it on every rank); ``[B]`` without a group."""
    _, world = world_info()
    if world == 1:
        return [int(local_batch_size)]
    size = torch.tensor([int(local_batch_size)], dtype=torch.long, device=_collective_device())
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 of rows whose count may differ per rank (padded to the largest,
    then trimmed); the backward all-reduces (sums) and keeps this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: Tuple[int, ...]) -> Tensor:  # type: ignore[override]
        rank, world = world_info()
        x = x.contiguous()
        longest = max(sizes)
        padded = x if x.shape[0] == longest else torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        ctx.start = sum(sizes[:rank])
        ctx.local = x.shape[0]
        return torch.cat([part[:n] for part, n in zip(parts, sizes)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None]:  # type: ignore[override]
        # Every rank's loss depends on every gathered row: the gradient of the rows this rank
        # contributed is the sum over ranks of what each rank's loss sends back to them.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.local], None


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping gradients to every rank.

    Args:
        x: ``[B_r, ...]`` this rank's rows. ``B_r`` may differ between ranks (a batch that
            lost items to unreadable files); the other dimensions must be equal.

    Returns:
        ``[sum_r B_r, ...]`` rows of rank 0, then rank 1, ...; this rank's rows start at
        :func:`rank_offset`. Identity (the same tensor) without an initialised process group
        or with world size 1.

    Raises:
        ValueError: ``x`` is a scalar.
    """
    if x.dim() == 0:
        raise ValueError("gather_with_grad expects a tensor with a batch dimension, got a scalar")
    _, world = world_info()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x, tuple(local_sizes(x.shape[0])))


def rank_offset(local_batch_size: int) -> int:
    """Row index of this rank's first row in the output of :func:`gather_with_grad`
    (the sum of the lower ranks' batch sizes; a collective under ``torch.distributed``)."""
    rank, _ = world_info()
    return sum(local_sizes(local_batch_size)[:rank])


def _check_pair(a: Tensor, b: Tensor, names: Tuple[str, str]) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"{names[0]} and {names[1]} must be [B, D], got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty (batch size 0)")


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent loss between two views, with global-batch negatives.

    For the global batch of ``N = W * B`` pairs there are ``2N`` embeddings. The anchor
    ``z_i[k]`` has positive ``z_j[k]`` (and vice versa); its negatives are the other ``2N - 2``
    embeddings. Each rank averages the loss over its ``2B`` local anchors.

    Args:
        temperature: softmax temperature ``tau > 0`` (cosine similarities are divided by it).
        gather: score against the gathered global batch (``True``) or against this rank's
            ``2B`` embeddings only (``False``; identical in a single process).
    """

    def __init__(self, temperature: float, gather: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = float(temperature)
        self.gather = bool(gather)

    def forward(self, z_i: Tensor, z_j: Tensor) -> Tensor:
        """Mean NT-Xent over the local anchors.

        Args:
            z_i: ``[B, D]`` embeddings of the first view (any scale; L2-normalised here).
            z_j: ``[B, D]`` embeddings of the second view, row ``k`` pairs with ``z_i[k]``.

        Returns:
            Scalar loss (nats), float32.
        """
        _check_pair(z_i, z_j, ("z_i", "z_j"))
        b = z_i.shape[0]
        # float32 logits: under mixed precision the exp/log-sum-exp needs the range.
        z_i = F.normalize(z_i.float(), dim=1)
        z_j = F.normalize(z_j.float(), dim=1)
        if self.gather:
            all_i, all_j = gather_with_grad(z_i), gather_with_grad(z_j)
            offset = rank_offset(b)
        else:
            all_i, all_j, offset = z_i, z_j, 0
        n = all_i.shape[0]
        anchors = torch.cat([z_i, z_j], dim=0)  # [2B, D]
        columns = torch.cat([all_i, all_j], dim=0)  # [2N, D]
        logits = anchors @ columns.t() / self.temperature  # [2B, 2N]

        local = torch.arange(b, device=logits.device) + offset
        self_cols = torch.cat([local, local + n])
        pos_cols = torch.cat([local + n, local])
        rows = torch.arange(2 * b, device=logits.device)
        # An anchor is never its own negative.
        logits = logits.index_put((rows, self_cols), logits.new_tensor(float("-inf")))
        return F.cross_entropy(logits, pos_cols)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"


class CrossModalInfoNCE(nn.Module):
    """Symmetric audio<->video InfoNCE (CLIP-style) with global-batch negatives.

    Row ``k`` of ``audio`` and of ``video`` come from the same clip. Audio->video scores each
    local audio row against every gathered video row (the matching one is the positive, the
    other ``N - 1`` are negatives) and video->audio the reverse. ``loss`` is the mean of the
    two directions.

    Args:
        temperature: fixed temperature, or the initial one when learnable.
        learnable_temperature: learn ``log(1 / temperature)`` as a parameter.
        max_inverse_temperature: the inverse temperature is clamped to at most this value
            (it stops receiving gradient there), which keeps the logits bounded.
        gather: use the global batch for negatives (``True``) or the local one (``False``).
    """

    def __init__(
        self,
        temperature: float,
        learnable_temperature: bool,
        max_inverse_temperature: float = 100.0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        if not (math.isfinite(max_inverse_temperature) and max_inverse_temperature > 0):
            raise ValueError(f"max_inverse_temperature must be finite and > 0, got {max_inverse_temperature!r}")
        if 1.0 / temperature > max_inverse_temperature:
            raise ValueError(
                f"temperature {temperature} is below 1 / max_inverse_temperature = {1.0 / max_inverse_temperature}"
            )
        self.learnable_temperature = bool(learnable_temperature)
        self.max_inverse_temperature = float(max_inverse_temperature)
        self.gather = bool(gather)
        log_inv = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if self.learnable_temperature:
            self.log_inv_temperature = nn.Parameter(log_inv)
        else:
            self.register_buffer("log_inv_temperature", log_inv)

    def inverse_temperature(self) -> Tensor:
        """Current ``1 / temperature`` (scalar tensor, clamped, differentiable below the cap)."""
        return self.log_inv_temperature.exp().clamp(max=self.max_inverse_temperature)

    def forward(self, audio: Tensor, video: Tensor) -> Dict[str, Tensor]:
        """Symmetric InfoNCE over the local rows.

        Args:
            audio: ``[B, D]`` audio embeddings (L2-normalised here).
            video: ``[B, D]`` video embeddings, row ``k`` pairs with ``audio[k]``.

        Returns:
            ``{"loss", "loss_a2v", "loss_v2a", "temperature"}``: scalar tensors; ``loss`` is
            the mean of the two directions, ``temperature`` is detached.
        """
        _check_pair(audio, video, ("audio", "video"))
        b = audio.shape[0]
        audio = F.normalize(audio.float(), dim=1)
        video = F.normalize(video.float(), dim=1)
        if self.gather:
            all_audio, all_video = gather_with_grad(audio), gather_with_grad(video)
            offset = rank_offset(b)
        else:
            all_audio, all_video, offset = audio, video, 0
        scale = self.inverse_temperature()
        targets = torch.arange(b, device=audio.device) + offset
        loss_a2v = F.cross_entropy(scale * audio @ all_video.t(), targets)
        loss_v2a = F.cross_entropy(scale * video @ all_audio.t(), targets)
        return {
            "loss": 0.5 * (loss_a2v + loss_v2a),
            "loss_a2v": loss_a2v,
            "loss_v2a": loss_v2a,
            "temperature": (1.0 / scale).detach(),
        }

    def extra_repr(self) -> str:
        return (
            f"learnable_temperature={self.learnable_temperature}, "
            f"max_inverse_temperature={self.max_inverse_temperature}, gather={self.gather}"
        )


class VideoMusicLoss(nn.Module):
    """Stage-2 objective: cross-modal InfoNCE plus an optional music-only NT-Xent term.

    ``loss = cross_modal.loss + music_weight * music(audio, audio_view2)``; the music term is
    only computed when ``music_weight > 0``.

    Args:
        cross_modal: the audio<->video loss.
        music_weight: weight of the music NT-Xent term (``>= 0``).
        music: NT-Xent between two augmented views of the same music segment; required when
            ``music_weight > 0``.
    """

    def __init__(self, cross_modal: CrossModalInfoNCE, music_weight: float, music: Optional[NTXentLoss]) -> None:
        super().__init__()
        if not (math.isfinite(music_weight) and music_weight >= 0):
            raise ValueError(f"music_weight must be a finite number >= 0, got {music_weight!r}")
        if music_weight > 0 and music is None:
            raise ValueError(f"music_weight is {music_weight} > 0 but no music loss (NTXentLoss) was given")
        self.cross_modal = cross_modal
        self.music_weight = float(music_weight)
        self.music = music

    def forward(self, audio: Tensor, video: Tensor, audio_view2: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Total loss and its parts.

        Args:
            audio: ``[B, D]`` embeddings of the first audio view.
            video: ``[B, D]`` video embeddings paired with ``audio``.
            audio_view2: ``[B, D]`` embeddings of a second augmented view of the same audio;
                required when ``music_weight > 0``.

        Returns:
            ``{"loss", "loss_cross_modal", "loss_a2v", "loss_v2a", "temperature"}`` plus
            ``"loss_music"`` when the music term is active.
        """
        parts = self.cross_modal(audio, video)
        out: Dict[str, Tensor] = {
            "loss_cross_modal": parts["loss"],
            "loss_a2v": parts["loss_a2v"],
            "loss_v2a": parts["loss_v2a"],
            "temperature": parts["temperature"],
        }
        total = parts["loss"]
        if self.music_weight > 0:
            if audio_view2 is None:
                raise ValueError(
                    f"music_weight is {self.music_weight} > 0: pass audio_view2, the embeddings of a "
                    "second augmented view of the audio"
                )
            assert self.music is not None  # checked in __init__
            out["loss_music"] = self.music(audio, audio_view2)
            total = total + self.music_weight * out["loss_music"]
        out["loss"] = total
        return out


#: Config name -> loss class (``name:`` + ``args:`` in YAML).
LOSSES: Dict[str, Type[nn.Module]] = {"ntxent": NTXentLoss, "cross_modal_infonce": CrossModalInfoNCE}


def build_loss(name: str, args: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``LOSSES[name](**args)`` with errors that name the culprit."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss name '{name}'; known: {sorted(LOSSES)}")
    try:
        return LOSSES[name](**dict(args))
    except TypeError as exc:
        raise TypeError(f"bad arguments for loss '{name}': {exc}") from exc


# --------------------------------------------------------------------------------------
# Seed retrieval models: VM-NET and the siamese clip matcher (docs/seed_models.md)
# --------------------------------------------------------------------------------------

from typing import Sequence  # noqa: E402  (the seed losses' own import, kept with them)


def _full_precision(t: Tensor) -> Tensor:
    """Half-precision inputs (mixed precision) are scored in float32; float32/64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class TopQTripletLoss(nn.Module):
    """VM-NET's inter-modal top-Q triplet ranking loss, in both directions.

    Row ``i`` of ``x`` matches row ``i`` of ``y`` only. The distance is the negative cosine
    similarity, ``d(a, b) = -a·b`` on L2-normalised rows (the inputs must already be unit
    rows, as VM-NET's ``is_l2_norm_already``). For each anchor ``x_i`` (direction ``xy``) the
    ``q = min(top_q, N - 1)`` negatives ``y_j, j != i`` closest to it (smallest ``d``) give the
    hinges ``max(0, margin + d(x_i, y_i) - d(x_i, y_j))``; ``xy`` is the mean of those
    ``N · q`` terms. ``yx`` is the same with the roles of ``x`` and ``y`` swapped. With
    ``top_q >= N - 1`` every negative is used (VM-NET's code instead pads the batch's
    negatives with never-violating entries, which only rescales the mean).

    Under ``torch.distributed`` with ``gather=True`` the negatives come from the global batch
    (embeddings of all ranks, gathered with gradients) and each rank averages over its local
    anchors; in one process this is the plain loss.

    Args:
        margin: the hinge margin (VM-NET: 0.1).
        top_q: most violating negatives per anchor (VM-NET: 100).
        gather: take negatives from every rank.
    """

    def __init__(self, margin: float = 0.1, top_q: int = 100, gather: bool = True) -> None:
        super().__init__()
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        if int(top_q) < 1:
            raise ValueError(f"top_q must be >= 1, got {top_q!r}")
        self.margin = float(margin)
        self.top_q = int(top_q)
        self.gather = bool(gather)

    def _direction(self, anchors: Tensor, candidates: Tensor, offset: int) -> Tensor:
        """Mean hinge of local ``anchors [B, D]`` against all ``candidates [N, D]``; match of
        anchor ``r`` is candidate ``offset + r``."""
        b, n = anchors.shape[0], candidates.shape[0]
        q = min(self.top_q, n - 1)
        if q < 1:
            return anchors.sum() * 0.0
        dist = -(anchors @ candidates.t())  # [B, N]
        rows = torch.arange(b, device=dist.device)
        pos = dist[rows, rows + offset]  # [B]
        neg = dist.index_put((rows, rows + offset), dist.new_tensor(float("inf")))
        closest = torch.topk(neg, q, dim=1, largest=False).values  # [B, q]
        return F.relu(self.margin + pos[:, None] - closest).mean()

    def forward(self, x: Tensor, y: Tensor) -> Dict[str, Tensor]:
        """``{"xy": x-anchored loss, "yx": y-anchored loss}`` for unit rows ``x, y: [B, D]``."""
        _check_pair(x, y, ("x", "y"))
        x, y = _full_precision(x), _full_precision(y)
        if self.gather:
            all_x, all_y, offset = gather_with_grad(x), gather_with_grad(y), rank_offset(x.shape[0])
        else:
            all_x, all_y, offset = x, y, 0
        return {"xy": self._direction(x, all_y, offset), "yx": self._direction(y, all_x, offset)}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, top_q={self.top_q}, gather={self.gather}"


class IntraModalStructureLoss(nn.Module):
    """VM-NET's soft intra-modal structure constraint (``embed_structure_loss.py``).

    Distances are negative cosine similarities of the L2-normalised low-level ``features``
    (``dl``) and of the L2-normalised ``embeddings`` (``de``). With ``K = min(k, N)``, the
    first ``K`` samples are the anchors ``i`` and, for consecutive candidates ``j, j + 1``
    among the first ``K`` (``0 <= j < K - 1``), the term is::

        (sign(dl[i, j] - dl[i, j+1]) - sign(de[i, j] - de[i, j+1])) * (de[i, j+1] - de[i, j])

    averaged over the ``K · (K - 1)`` terms. It is positive when the embedding orders a pair
    of neighbours differently from the features, and pushes the embedding distances towards
    the features' order; ``sign`` passes no gradient. Computed on the local batch.

    Args:
        k: anchors and candidates considered (VM-NET: its ``top_K``, 100).
    """

    def __init__(self, k: int = 100) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        self.k = int(k)

    def forward(self, features: Tensor, embeddings: Tensor) -> Tensor:
        """Scalar loss for ``features: [N, F]`` (no gradient needed) and ``embeddings: [N, D]``."""
        if features.dim() != 2 or embeddings.dim() != 2 or features.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"features [N, F] and embeddings [N, D] must have the same N, got "
                f"{tuple(features.shape)} and {tuple(embeddings.shape)}"
            )
        kk = min(self.k, embeddings.shape[0])
        if kk < 2:
            return embeddings.sum() * 0.0
        f = F.normalize(_full_precision(features[:kk]), dim=1)
        e = F.normalize(_full_precision(embeddings[:kk]), dim=1)
        dl = -(f @ f.t())
        de = -(e @ e.t())
        coeff = torch.sign(dl[:, :-1] - dl[:, 1:]) - torch.sign(de[:, :-1] - de[:, 1:])
        return (coeff.detach() * (de[:, 1:] - de[:, :-1])).mean()

    def extra_repr(self) -> str:
        return f"k={self.k}"


class VMNetLoss(nn.Module):
    """VM-NET's total: ``w_xy · xy + w_yx · yx + w_x · structure(music) + w_y · structure(video)``.

    ``x`` is the music side and ``y`` the video side (VM-NET's weights 3 / 1 / 0.2 / 0.2).

    Args:
        triplet: the inter-modal :class:`TopQTripletLoss`.
        structure: the :class:`IntraModalStructureLoss`.
        weights: ``{"music_to_video", "video_to_music", "music_structure", "video_structure"}``.
    """

    WEIGHT_KEYS = ("music_to_video", "video_to_music", "music_structure", "video_structure")

    def __init__(self, triplet: TopQTripletLoss, structure: IntraModalStructureLoss, weights: Mapping[str, float]) -> None:
        super().__init__()
        missing = [k for k in self.WEIGHT_KEYS if k not in weights]
        unknown = sorted(set(weights) - set(self.WEIGHT_KEYS))
        if missing or unknown:
            raise ValueError(f"VM-NET loss weights: missing {missing}, unknown {unknown}")
        self.triplet = triplet
        self.structure = structure
        self.weights = {k: float(weights[k]) for k in self.WEIGHT_KEYS}

    def forward(self, audio: Tensor, video: Tensor, audio_features: Tensor, video_features: Tensor) -> Dict[str, Tensor]:
        """``audio``/``video``: ``[B, D]`` unit embeddings; ``*_features``: the branches' inputs.

        Returns:
            ``{"loss", "music_to_video", "video_to_music", "music_structure", "video_structure"}``.
        """
        t = self.triplet(audio, video)
        parts = {
            "music_to_video": t["xy"],
            "video_to_music": t["yx"],
            "music_structure": self.structure(audio_features, audio),
            "video_structure": self.structure(video_features, video),
        }
        parts["loss"] = sum(self.weights[k] * parts[k] for k in self.WEIGHT_KEYS)
        return parts


def contrastive_pairs(n: int, step: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """The siamese matcher's pair sampling for a batch of ``n`` matching (audio, video) rows.

    Batches alternate, as in the seed: on even ``step`` each audio row keeps its own video
    row (matching pairs, label 1); on odd ``step`` the video rows are rolled by a random
    offset in ``[1, n - 1]``, so every audio row meets another clip's video (label 0).

    Returns:
        ``(video_index [n] int64, match [n] float32)``: use ``video[video_index]``.
    """
    if n < 1:
        raise ValueError(f"need at least one pair, got n={n}")
    idx = torch.arange(n)
    if step % 2 == 0 or n == 1:
        return idx, torch.ones(n)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    return (idx + shift) % n, torch.zeros(n)


class SiameseContrastiveLoss(nn.Module):
    """The siamese matcher's contrastive loss with L1/L2 weight regularisers.

    For pairs with Euclidean distance ``d = ||a - v||`` and label ``y`` (1 matching, 0 not)::

        contrastive = reduce( y · d² / 2 + (1 - y) · max(0, margin - d)² / 2 )
        l1 = l1_weight · Σ |w|        l2 = l2_weight · Σ w² / 2      (TensorFlow's regularisers)
        loss = contrastive + l1 + l2

    over the given ``weights`` (the seed regularises every trainable variable). ``reduce``
    is the sum over pairs, as in the seed (``reduction="mean"`` divides by the batch size).

    Args:
        margin: distance a non-matching pair is pushed beyond (seed: 1).
        l1: L1 weight (seed: 0.001).
        l2: L2 weight (seed: 0.01).
        reduction: ``sum`` (seed) or ``mean`` over pairs.
    """

    REDUCTIONS = ("sum", "mean")

    def __init__(self, margin: float = 1.0, l1: float = 0.001, l2: float = 0.01, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"reduction must be one of {self.REDUCTIONS}, got {reduction!r}")
        for name, v in (("margin", margin), ("l1", l1), ("l2", l2)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.margin, self.l1, self.l2, self.reduction = float(margin), float(l1), float(l2), reduction

    def forward(
        self, audio: Tensor, video: Tensor, match: Tensor, weights: Sequence[Tensor] = ()
    ) -> Dict[str, Tensor]:
        """``audio``, ``video``: ``[B, D]`` embeddings (unnormalised); ``match``: ``[B]`` 1/0 labels.

        Returns:
            ``{"loss", "contrastive", "l1", "l2", "match_fraction"}``.
        """
        _check_pair(audio, video, ("audio", "video"))
        if match.shape != (audio.shape[0],):
            raise ValueError(f"match must be [B] = [{audio.shape[0]}], got {tuple(match.shape)}")
        y = match.to(audio.dtype)
        sq = (_full_precision(audio) - _full_precision(video)).pow(2).sum(dim=1)
        d = torch.sqrt(sq.clamp_min(1e-12))
        per_pair = y * 0.5 * sq + (1 - y) * 0.5 * F.relu(self.margin - d).pow(2)
        contrastive = per_pair.sum() if self.reduction == "sum" else per_pair.mean()
        zero = contrastive.new_zeros(())
        l1 = self.l1 * sum((w.abs().sum() for w in weights), zero)
        l2 = self.l2 * 0.5 * sum((w.pow(2).sum() for w in weights), zero)
        return {"loss": contrastive + l1 + l2, "contrastive": contrastive, "l1": l1, "l2": l2,
                "match_fraction": y.mean().detach()}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, l1={self.l1}, l2={self.l2}, reduction={self.reduction}"


class RegressionMSELoss(nn.Module):
    """The regression baseline's objective: mean squared error of ``prediction`` against ``target``."""

    def forward(self, prediction: Tensor, target: Tensor) -> Dict[str, Tensor]:
        """``prediction``, ``target``: ``[B, D]``; returns ``{"loss"}`` (mean over every element)."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction and target shapes differ: {tuple(prediction.shape)} vs {tuple(target.shape)}")
        return {"loss": F.mse_loss(_full_precision(prediction), _full_precision(target))}


__all__ += [
    "TopQTripletLoss",
    "IntraModalStructureLoss",
    "VMNetLoss",
    "contrastive_pairs",
    "SiameseContrastiveLoss",
    "RegressionMSELoss",
]


# --------------------------------------------------------------------------------------
# Rhythm- and motion-aware matching (UT-CMVMR): many-to-one music galleries, unified target
# (docs/rhythm_motion.md)
# --------------------------------------------------------------------------------------


def multi_positive_nce(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows of ``-log(sum_{j in P(i)} exp(l_ij) / sum_j exp(l_ij))``.

    Args:
        logits: ``[R, N]`` scaled similarities.
        positives: ``[R, N]`` bool, at least one true per row.
    """
    if logits.shape != positives.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and positives {tuple(positives.shape)} differ")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every row needs at least one positive")
    pos = logits.masked_fill(~positives, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(pos, dim=1)).mean()


class ManyToOneInfoNCE(nn.Module):
    """Symmetric video<->song InfoNCE when several videos share one song, with global-batch negatives.

    Row ``i`` of the (gathered) batch pairs video ``i`` with its song, ``song[i]`` an integer
    id; videos of the same song share that id. A video's positives are every audio row of
    its song (duplicates of one song are not negatives of each other), and a song row's
    positives are every video of that song: ``-log(sum_pos exp(s/t) / sum_all exp(s/t))``
    with cosine similarities ``s``, averaged over the local rows in both directions.

    Args:
        temperature: softmax temperature ``t > 0``.
        gather: score against the gathered global batch (``True``) or this rank's rows only.
    """

    def __init__(self, temperature: float, gather: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = float(temperature)
        self.gather = bool(gather)

    def forward(self, video: Tensor, audio: Tensor, song: Tensor) -> Dict[str, Tensor]:
        """``video``, ``audio``: ``[B, D]`` (any scale), ``song``: ``[B]`` int ids ->
        ``{"loss", "v2a", "a2v"}`` (nats)."""
        _check_pair(video, audio, ("video", "audio"))
        if song.shape != (video.shape[0],) or song.is_floating_point():
            raise ValueError(f"song must be [B] = [{video.shape[0]}] integer ids, got {tuple(song.shape)} {song.dtype}")
        b = video.shape[0]
        v = F.normalize(video.float(), dim=1)
        a = F.normalize(audio.float(), dim=1)
        song = song.to(v.device)
        if self.gather:
            all_v, all_a, all_song = gather_with_grad(v), gather_with_grad(a), gather_with_grad(song)
        else:
            all_v, all_a, all_song = v, a, song
        positives = song[:, None] == all_song[None, :]  # [B, N]
        v2a = multi_positive_nce(v @ all_a.t() / self.temperature, positives)
        a2v = multi_positive_nce(a @ all_v.t() / self.temperature, positives)
        return {"loss": 0.5 * (v2a + a2v), "v2a": v2a, "a2v": a2v}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"


class UTCMVMRLoss(nn.Module):
    """The matcher's objective: many-to-one InfoNCE of the two-tower embeddings plus
    ``cross_weight`` times the same loss on the cross-attention scores of the local batch.

    The cross-attention scores pair every video of the local batch with every song of the
    local batch (their negatives are local: scoring pairs across ranks would need the
    sequences of every rank).

    Args:
        two_tower: :class:`ManyToOneInfoNCE` of the two-tower embeddings.
        cross_weight: weight of the cross-attention term (0 drops it).
        cross_temperature: temperature of the cross-attention scores (cosines).
    """

    def __init__(self, two_tower: ManyToOneInfoNCE, cross_weight: float, cross_temperature: float) -> None:
        super().__init__()
        _check_temperature(cross_temperature)
        if cross_weight < 0:
            raise ValueError(f"cross_weight must be >= 0, got {cross_weight}")
        self.two_tower = two_tower
        self.cross_weight = float(cross_weight)
        self.cross_temperature = float(cross_temperature)

    def forward(self, audio: Tensor, video: Tensor, song: Tensor, cross: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``audio``, ``video``: ``[B, D]``; ``song``: ``[B]`` ids; ``cross``: ``[B, B]`` scores
        (video row, song column) -> ``{"loss", "two_tower", "cross"}``."""
        out = self.two_tower(video, audio, song)
        total = out["loss"]
        parts = {"two_tower": out["loss"].detach()}
        if cross is not None and self.cross_weight > 0:
            b = video.shape[0]
            if cross.shape != (b, b):
                raise ValueError(f"cross must be [B, B] = [{b}, {b}], got {tuple(cross.shape)}")
            positives = song[:, None].to(cross.device) == song[None, :].to(cross.device)
            logits = cross.float() / self.cross_temperature
            c = 0.5 * (multi_positive_nce(logits, positives) + multi_positive_nce(logits.t(), positives))
            total = total + self.cross_weight * c
            parts["cross"] = c.detach()
        return {"loss": total, **parts}


class UnifiedTargetLoss(nn.Module):
    """Unified pretraining target: both clip encoders predict the sentence embedding of the
    pair's tags; the loss is the mean cosine distance ``1 - cos(prediction, target)`` of each side."""

    def forward(self, audio_text: Tensor, video_text: Tensor, target: Tensor) -> Dict[str, Tensor]:
        """``audio_text``, ``video_text``, ``target``: ``[B, T]`` -> ``{"loss", "audio", "video"}``."""
        for name, x in (("audio_text", audio_text), ("video_text", video_text)):
            if x.shape != target.shape:
                raise ValueError(f"{name} {tuple(x.shape)} and target {tuple(target.shape)} differ")
        t = F.normalize(target.float(), dim=1)
        la = (1 - (F.normalize(audio_text.float(), dim=1) * t).sum(1)).mean()
        lv = (1 - (F.normalize(video_text.float(), dim=1) * t).sum(1)).mean()
        return {"loss": la + lv, "audio": la.detach(), "video": lv.detach()}


__all__ += ["multi_positive_nce", "ManyToOneInfoNCE", "UTCMVMRLoss", "UnifiedTargetLoss"]


# --------------------------------------------------------------------------------------
# VCMR's stage-2 objective: SimCLR's NT-Xent over (audio, video) pairs
# --------------------------------------------------------------------------------------


class CrossModalNTXent(nn.Module):
    """NT-Xent on audio/video pairs over the ``2N x 2N`` similarity matrix (VCMR's stage-2 loss).

    The ``2N`` embeddings of a global batch of ``N = W * B`` pairs are the ``N`` audio and the
    ``N`` video embeddings. Each anchor's positive is its pair's other modality; its
    ``2N - 2`` negatives are every other embedding, so audio-audio and video-video pairs are
    negatives too (unlike :class:`CrossModalInfoNCE`, which only contrasts across modalities).
    The temperature is fixed (VCMR: 0.1). This is :class:`NTXentLoss` with the audio batch as
    the first view and the video batch as the second; it returns the cross-modal dict of
    :class:`VideoMusicLoss`, so it can replace :class:`CrossModalInfoNCE` there.

    Args:
        temperature: softmax temperature ``tau > 0``.
        gather: score against the gathered global batch (``True``) or the local one.
    """

    def __init__(self, temperature: float, gather: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = float(temperature)
        self.gather = bool(gather)

    def forward(self, audio: Tensor, video: Tensor) -> Dict[str, Tensor]:
        """Mean NT-Xent over this rank's ``2B`` anchors.

        Args:
            audio: ``[B, D]`` audio embeddings (L2-normalised here).
            video: ``[B, D]`` video embeddings, row ``k`` pairs with ``audio[k]``.

        Returns:
            ``{"loss", "loss_a2v", "loss_v2a", "temperature"}``: ``loss_a2v`` is the mean over
            the audio anchors, ``loss_v2a`` over the video anchors, ``loss`` their mean (the
            mean over all ``2B`` anchors); ``temperature`` is a constant tensor.
        """
        _check_pair(audio, video, ("audio", "video"))
        b = audio.shape[0]
        a = F.normalize(audio.float(), dim=1)
        v = F.normalize(video.float(), dim=1)
        if self.gather:
            all_a, all_v = gather_with_grad(a), gather_with_grad(v)
            offset = rank_offset(b)
        else:
            all_a, all_v, offset = a, v, 0
        n = all_a.shape[0]
        logits = torch.cat([a, v]) @ torch.cat([all_a, all_v]).t() / self.temperature  # [2B, 2N]
        local = torch.arange(b, device=logits.device) + offset
        rows = torch.arange(2 * b, device=logits.device)
        logits = logits.index_put((rows, torch.cat([local, local + n])), logits.new_tensor(float("-inf")))
        per_anchor = F.cross_entropy(logits, torch.cat([local + n, local]), reduction="none")
        loss_a2v, loss_v2a = per_anchor[:b].mean(), per_anchor[b:].mean()
        return {
            "loss": 0.5 * (loss_a2v + loss_v2a),
            "loss_a2v": loss_a2v,
            "loss_v2a": loss_v2a,
            "temperature": torch.tensor(self.temperature, device=logits.device),
        }

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"


__all__ += ["CrossModalNTXent"]
