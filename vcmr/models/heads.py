"""Classification heads put on top of a music encoder for tagging (:class:`~vcmr.models.tagger.Tagger`).

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
