"""Projection head: layer layout, shapes, reference computation, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vcmr.models.projection import ProjectionHead
from vcmr.models.registry import MODULES, build_module


def test_two_layer_head_is_linear_relu_linear() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(10, 6, 4)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear]
    assert all(m.bias is None for m in head.net if isinstance(m, nn.Linear))
    x = torch.randn(5, 10)
    w1, w2 = head.net[0].weight, head.net[2].weight
    torch.testing.assert_close(head(x), torch.relu(x @ w1.t()) @ w2.t())
    assert head(x).shape == (5, 4) and head.output_dim == 4
    assert head(torch.randn(2, 3, 10)).shape == (2, 3, 4)


@pytest.mark.parametrize("n_layers,expected", [(1, [(10, 4)]), (3, [(10, 6), (6, 6), (6, 4)])])
def test_layer_count_and_bias(n_layers: int, expected: list) -> None:
    head = ProjectionHead(10, 6, 4, n_layers=n_layers, bias=True)
    linears = [m for m in head.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == expected
    assert all(m.bias is not None for m in linears)
    assert sum(isinstance(m, nn.ReLU) for m in head.net) == n_layers - 1
    x = torch.randn(3, 10, requires_grad=True)
    head(x).sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_errors_and_registry() -> None:
    with pytest.raises(ValueError, match="n_layers"):
        ProjectionHead(4, 4, 4, n_layers=0)
    with pytest.raises(ValueError, match="out_dim"):
        ProjectionHead(4, 4, 0)
    with pytest.raises(ValueError, match="in_dim=4"):
        ProjectionHead(4, 4, 2)(torch.randn(2, 5))
    assert MODULES["projection"] is ProjectionHead
    head = build_module("projection", {"in_dim": 8, "hidden_dim": 8, "out_dim": 3})
    assert isinstance(head, ProjectionHead) and head(torch.randn(2, 8)).shape == (2, 3)
