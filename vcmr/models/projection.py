"""MLP projection head mapping encoder features into the contrastive embedding space."""

from __future__ import annotations

from typing import List

from torch import Tensor, nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """``n_layers`` linear layers with ReLU between them: Linear-ReLU-...-Linear.

    With ``n_layers=2`` this is SimCLR/CLMR's head: ``Linear(in, hidden) -> ReLU ->
    Linear(hidden, out)``; ``n_layers=1`` is a single ``Linear(in, out)``.

    Args:
        in_dim: input feature size.
        hidden_dim: width of the hidden layers (unused when ``n_layers=1``).
        out_dim: output embedding size.
        n_layers: number of linear layers (``>= 1``).
        bias: whether the linear layers have biases.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int = 2, bias: bool = False) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        layers: List[nn.Module] = []
        for i in range(n_layers):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        self.net = nn.Sequential(*layers)
        self.input_dim = in_dim
        self.output_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """Project ``x: [..., in_dim]`` to ``[..., out_dim]`` (unnormalised)."""
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"projection head expects in_dim={self.input_dim} features, got shape {tuple(x.shape)}")
        return self.net(x)
