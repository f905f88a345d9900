"""Temporal encoders over per-second frame features (e.g. CLIP image embeddings).

Constructor arguments are keyword-only (configs pass them by name); those without a
default are required. The encoders map ``x: [B, S, F]`` (``S`` one-second steps of ``F``-dim frame features) to
one vector ``[B, out_dim]`` per clip. Variable-length clips are right-padded to a common
``S`` and passed with ``lengths: [B]`` (number of valid steps, ``1 .. S``); padded steps never
influence the output.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = [
    "LSTMFlattenVideoEncoder",
    "LSTMVideoEncoder",
    "TransformerVideoEncoder",
    "sinusoidal_positions",
    "valid_mask",
]

POOLINGS_LSTM = ("last", "mean")
POOLINGS_TRANSFORMER = ("mean", "cls")
POSITIONAL = ("sinusoidal", "learned", "none")


def _check_input(x: Tensor, input_dim: int) -> None:
    if x.dim() != 3:
        raise ValueError(f"video features must be [B, S, F], got shape {tuple(x.shape)}")
    if x.shape[2] != input_dim:
        raise ValueError(f"video features have F={x.shape[2]}, the encoder expects input_dim={input_dim}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"video features are empty: shape {tuple(x.shape)}")


def valid_mask(lengths: Optional[Tensor], batch: int, steps: int, device: torch.device) -> Tensor:
    """``[B, S]`` bool mask, True on the first ``lengths[b]`` steps (all True without lengths).

    Raises:
        ValueError: ``lengths`` is not ``[B]`` or has values outside ``1 .. S``.
    """
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must be [B] = [{batch}], got shape {tuple(lengths.shape)}")
    if lengths.is_floating_point():
        raise ValueError("lengths must be an integer tensor (number of valid steps per clip)")
    if int(lengths.min()) < 1 or int(lengths.max()) > steps:
        raise ValueError(
            f"lengths must lie in 1 .. S = {steps}, got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def _masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``h: [B, S, H]`` over the steps where ``mask: [B, S]`` is True -> ``[B, H]``."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(dim=1) / m.sum(dim=1)


def _output_layer(in_dim: int, out_dim: Optional[int]) -> Tuple[nn.Module, int]:
    if out_dim is None:
        return nn.Identity(), in_dim
    if out_dim < 1:
        raise ValueError(f"out_dim must be a positive integer or None, got {out_dim}")
    return nn.Linear(in_dim, out_dim), out_dim


class LSTMVideoEncoder(nn.Module):
    """Stacked LSTM over frame features, pooled to one vector.

    Args:
        input_dim: frame feature size ``F`` (512 for CLIP ViT-B/32).
        hidden_dim: LSTM hidden size ``H``.
        num_layers: stacked LSTM layers.
        dropout: dropout between LSTM layers (ignored with one layer).
        out_dim: size of a final linear layer; ``None`` returns the pooled ``H``-dim state.
        pooling: ``"last"``: hidden state of the top layer at the last valid step;
            ``"mean"``: mean of the top layer's outputs over the valid steps.
    """

    def __init__(
        self,
        *,
        input_dim: int = 512,
        hidden_dim: int,
        num_layers: int = 2,
        dropout: float,
        out_dim: Optional[int],
        pooling: str = "last",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS_LSTM:
            raise ValueError(f"pooling must be one of {POOLINGS_LSTM}, got {pooling!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_dim = input_dim
        self.pooling = pooling
        self.lstm = nn.LSTM(
            input_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.out, self.output_dim = _output_layer(hidden_dim, out_dim)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """Encode clips.

        Args:
            x: ``[B, S, F]`` float frame features, right-padded when ``lengths`` is given.
            lengths: ``[B]`` int number of valid steps per clip (``None``: all ``S``).

        Returns:
            ``[B, output_dim]`` clip embeddings.
        """
        _check_input(x, self.input_dim)
        b, s, _ = x.shape
        mask = valid_mask(lengths, b, s, x.device)
        if lengths is None:
            out, (h_n, _) = self.lstm(x)
        else:
            # Packing stops the recurrence at each clip's last valid step.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out_packed, (h_n, _) = self.lstm(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=s)
        pooled = h_n[-1] if self.pooling == "last" else _masked_mean(out, mask)
        return self.out(pooled)


def sinusoidal_positions(max_len: int, d_model: int) -> Tensor:
    """Fixed sine/cosine position table (Vaswani et al., 2017).

    Returns:
        ``[max_len, d_model]``: ``sin(p / 10000^(2i/d))`` on even, ``cos`` on odd columns.
    """
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return table


class TransformerVideoEncoder(nn.Module):
    """Transformer encoder over frame features, pooled to one vector.

    Frame features are projected to ``d_model``, position ``p`` (seconds) gets a positional
    encoding, and pre-norm transformer layers attend over the valid steps only (padded steps
    are masked out as keys and excluded from pooling).

    Args:
        input_dim: frame feature size ``F``.
        d_model: transformer width.
        nhead: attention heads (must divide ``d_model``).
        num_layers: transformer layers.
        dim_feedforward: hidden size of each layer's MLP.
        dropout: dropout inside the layers.
        max_len: longest accepted clip in steps (size of the position table).
        pooling: ``"mean"`` over the valid steps, or ``"cls"``: the output of a learned token
            prepended to the sequence (the token itself gets no positional encoding).
        out_dim: size of a final linear layer; ``None`` returns the ``d_model`` vector.
        positional: ``"sinusoidal"`` (fixed table), ``"learned"`` (a trained ``[max_len,
            d_model]`` table, initialised at N(0, 0.02)) or ``"none"`` (order-blind).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float,
        max_len: int,
        pooling: str = "mean",
        out_dim: Optional[int],
        positional: str = "sinusoidal",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS_TRANSFORMER:
            raise ValueError(f"pooling must be one of {POOLINGS_TRANSFORMER}, got {pooling!r}")
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {positional!r}")
        if d_model % nhead != 0:
            raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.input_dim = input_dim
        self.max_len = max_len
        self.pooling = pooling
        self.positional = positional
        self.input_proj = nn.Linear(input_dim, d_model)
        if positional == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_positions(max_len, d_model), persistent=False)
        elif positional == "learned":
            self.pos_table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        else:
            self.pos_table = None
        self.cls_token = nn.Parameter(torch.randn(1, 1, d_model) * 0.02) if pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout, batch_first=True, norm_first=True
        )
        # The nested-tensor fast path does not apply to pre-norm layers; keep one code path.
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out, self.output_dim = _output_layer(d_model, out_dim)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """Encode clips.

        Args:
            x: ``[B, S, F]`` float frame features, ``S <= max_len``, right-padded when
                ``lengths`` is given.
            lengths: ``[B]`` int number of valid steps per clip (``None``: all ``S``).

        Returns:
            ``[B, output_dim]`` clip embeddings.
        """
        _check_input(x, self.input_dim)
        b, s, _ = x.shape
        if s > self.max_len:
            raise ValueError(f"clip has S={s} steps, more than max_len={self.max_len}")
        mask = valid_mask(lengths, b, s, x.device)
        h = self.input_proj(x)
        if self.pos_table is not None:
            h = h + self.pos_table[:s].to(h.dtype)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(b, -1, -1).to(h.dtype), h], dim=1)
            mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), mask], dim=1)
        h = self.norm(self.encoder(h, src_key_padding_mask=~mask))
        pooled = h[:, 0] if self.cls_token is not None else _masked_mean(h, mask)
        return self.out(pooled)


class LSTMFlattenVideoEncoder(nn.Module):
    """VCMR's video side: stacked LSTM, every step's output flattened, then Linear + ReLU.

    ``x: [B, S, F] -> LSTM -> [B, S, H] -> flatten [B, S*H] -> Linear(S*H, out_dim) -> ReLU``.
    Unlike :class:`LSTMVideoEncoder` (last state or mean), the clip length is part of the
    architecture: it takes exactly ``steps`` seconds. VCMR uses 2 layers of 512, dropout
    0.1, 6 steps and ``out_dim`` 512 (so ``Linear(3072, 512)``); the submodule layout
    (``lstm`` = VCMR's ``video_temporal``, ``head.1`` = VCMR's ``video_encoder.1``) mirrors it.

    Args:
        input_dim: frame feature size ``F``.
        hidden_dim: LSTM hidden size ``H``.
        num_layers: stacked LSTM layers.
        dropout: dropout between LSTM layers (ignored with one layer).
        steps: clip length ``S`` in steps (seconds); inputs must have exactly this many.
        out_dim: size of the linear layer after the flatten.
    """

    def __init__(
        self,
        *,
        input_dim: int = 512,
        hidden_dim: int,
        num_layers: int = 2,
        dropout: float,
        steps: int,
        out_dim: int,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if out_dim < 1:
            raise ValueError(f"out_dim must be a positive integer, got {out_dim}")
        self.input_dim = input_dim
        self.steps = int(steps)
        self.lstm = nn.LSTM(
            input_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.steps * hidden_dim, out_dim), nn.ReLU())
        self.output_dim = int(out_dim)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """Encode clips.

        Args:
            x: ``[B, steps, F]`` float frame features, right-padded when ``lengths`` is given.
            lengths: ``[B]`` int number of valid steps per clip (``None``: all ``steps``).
                The outputs at padded steps are set to zero before the flatten, so padding
                never influences the result.

        Returns:
            ``[B, out_dim]`` clip embeddings (after the ReLU).
        """
        _check_input(x, self.input_dim)
        b, s, _ = x.shape
        if s != self.steps:
            raise ValueError(
                f"this encoder flattens exactly steps={self.steps} seconds of features, got S={s}; "
                "crop or pad the clip to that length"
            )
        if lengths is None:
            out, _ = self.lstm(x)
        else:
            mask = valid_mask(lengths, b, s, x.device)
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out_packed, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=s)
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return self.head(out)
