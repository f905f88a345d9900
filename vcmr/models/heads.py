"""Classification heads put on top of a music encoder for tagging, and the tagger itself.

* :class:`LinearHead`: one linear layer (linear-probe evaluation, as in CLMR).
* :class:`MLPHead`: dropout, ``in_dim -> hidden_dim`` linear, ReLU, ``hidden_dim -> n_tags``
  linear (VCMR's supervised head: 512 -> 128 -> n_tags).

Heads return logits; the sigmoid lives in the loss (``BCEWithLogitsLoss``) and in
evaluation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import torch
from torch import nn


class LinearHead(nn.Module):
    """``[B, in_dim]`` embedding -> ``[B, n_tags]`` logits with one linear layer."""

    def __init__(self, in_dim: int, n_tags: int) -> None:
        super().__init__()
        if in_dim <= 0 or n_tags <= 0:
            raise ValueError(f"LinearHead needs positive sizes, got in_dim={in_dim} n_tags={n_tags}")
        self.fc = nn.Linear(in_dim, n_tags)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: ``[B, in_dim]`` -> ``[B, n_tags]`` logits."""
        return self.fc(z)


class MLPHead(nn.Module):
    """Dropout, Linear(in_dim, hidden_dim), ReLU, Linear(hidden_dim, n_tags)."""

    def __init__(self, in_dim: int, n_tags: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        if min(in_dim, n_tags, hidden_dim) <= 0:
            raise ValueError(f"MLPHead needs positive sizes, got {in_dim}, {hidden_dim}, {n_tags}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPHead dropout must be in [0, 1), got {dropout}")
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, n_tags),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: ``[B, in_dim]`` -> ``[B, n_tags]`` logits."""
        return self.net(z)


#: Head registry: a config names ``linear`` or ``mlp`` plus its arguments.
HEADS: Dict[str, Callable[..., nn.Module]] = {"linear": LinearHead, "mlp": MLPHead}


def build_head(name: str, in_dim: int, n_tags: int, args: Mapping[str, Any]) -> nn.Module:
    """``HEADS[name](in_dim=..., n_tags=..., **args)`` with errors naming the head."""
    if name not in HEADS:
        raise KeyError(f"unknown head '{name}'; known: {sorted(HEADS)}")
    try:
        return HEADS[name](in_dim=in_dim, n_tags=n_tags, **dict(args))
    except TypeError as exc:
        raise TypeError(f"bad arguments for head '{name}': {exc}") from exc


class Tagger(nn.Module):
    """Encoder + head. With ``freeze_encoder`` the encoder gets no gradients and stays in
    eval mode (batch-norm statistics frozen), as a linear probe requires.

    Args:
        encoder: module mapping ``[B, 1, L]`` waveforms to ``[B, D]``; must expose
            ``input_length`` (L, samples) and ``output_dim`` (D).
        head: module mapping ``[B, D]`` to ``[B, n_tags]`` logits.
        freeze_encoder: keep the encoder fixed.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze_encoder: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    @property
    def input_length(self) -> int:
        """Samples per window the encoder takes."""
        return int(self.encoder.input_length)

    def train(self, mode: bool = True) -> "Tagger":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, L]`` waveform -> ``[B, D]`` encoder output."""
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, L]`` waveform -> ``[B, n_tags]`` logits."""
        return self.head(self.embed(x))
