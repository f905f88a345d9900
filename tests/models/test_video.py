"""Video temporal encoders: shapes, pooling, padding masks, order sensitivity, determinism."""

from __future__ import annotations

import math
from typing import Any, Dict

import pytest
import torch

from vcmr.models.registry import MODULES, build_module
from vcmr.models.video import LSTMVideoEncoder, TransformerVideoEncoder, sinusoidal_positions

F_DIM = 12


def lstm(**kw: Any) -> LSTMVideoEncoder:
    args: Dict[str, Any] = {"input_dim": F_DIM, "hidden_dim": 16, "num_layers": 2, "dropout": 0.0, "out_dim": 8}
    args.update(kw)
    return LSTMVideoEncoder(**args).eval()


def transformer(**kw: Any) -> TransformerVideoEncoder:
    args: Dict[str, Any] = {
        "input_dim": F_DIM,
        "d_model": 16,
        "nhead": 2,
        "num_layers": 2,
        "dim_feedforward": 32,
        "dropout": 0.0,
        "max_len": 10,
        "out_dim": 8,
    }
    args.update(kw)
    return TransformerVideoEncoder(**args).eval()


def clips(b: int = 3, s: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, s, F_DIM, generator=torch.Generator().manual_seed(seed))


ENCODERS = [
    ("lstm", {"pooling": "last"}),
    ("lstm", {"pooling": "mean"}),
    ("transformer", {"pooling": "mean"}),
    ("transformer", {"pooling": "cls"}),
    ("transformer", {"pooling": "mean", "positional": "learned"}),
]


def make(kind: str, kw: Dict[str, Any]) -> torch.nn.Module:
    return lstm(**kw) if kind == "lstm" else transformer(**kw)


@pytest.mark.parametrize("kind,kw", ENCODERS)
def test_shapes_and_output_dim(kind: str, kw: Dict[str, Any]) -> None:
    enc = make(kind, kw)
    y = enc(clips())
    assert y.shape == (3, 8) and enc.output_dim == 8
    assert torch.isfinite(y).all()
    raw = make(kind, {**kw, "out_dim": None})
    width = 16
    assert raw(clips()).shape == (3, width) and raw.output_dim == width


@pytest.mark.parametrize("kind,kw", ENCODERS)
def test_padding_does_not_change_valid_part(kind: str, kw: Dict[str, Any]) -> None:
    torch.manual_seed(0)
    enc = make(kind, kw)
    x = clips(b=3, s=7, seed=1)
    lengths = torch.tensor([7, 3, 5])
    padded = x.clone()
    for b, n in enumerate(lengths.tolist()):
        padded[b, n:] = 1e3 * torch.randn(7 - n, F_DIM)  # garbage that would dominate if seen
    batched = enc(padded, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = enc(x[b : b + 1, :n])
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-4, atol=1e-5)
    # Without lengths the garbage is seen: a different output for the padded clips.
    assert not torch.allclose(enc(padded)[1], batched[1], atol=1e-3)


def test_lstm_pooling_semantics() -> None:
    torch.manual_seed(0)
    enc = lstm(out_dim=None, pooling="last")
    x = clips(b=2, s=5)
    out, (h_n, _) = enc.lstm(x)
    torch.testing.assert_close(enc(x), out[:, -1])
    torch.testing.assert_close(enc(x), h_n[-1])
    mean_enc = lstm(out_dim=None, pooling="mean")
    mean_enc.load_state_dict(enc.state_dict())
    torch.testing.assert_close(mean_enc(x), out.mean(dim=1))


@pytest.mark.parametrize("kind,kw", ENCODERS)
def test_gradients_reach_every_parameter(kind: str, kw: Dict[str, Any]) -> None:
    enc = make(kind, kw).train()
    x = clips().requires_grad_(True)
    enc(x, torch.tensor([6, 2, 4])).pow(2).sum().backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0
    # Padded steps get no gradient: they do not influence the output.
    assert x.grad[1, 2:].abs().max() == 0
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_positional_encoding_makes_transformer_order_sensitive() -> None:
    x = clips(b=2, s=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.manual_seed(0)
    blind = transformer(positional="none", pooling="mean")
    torch.testing.assert_close(blind(x[:, perm]), blind(x), rtol=1e-5, atol=1e-6)
    for positional in ("sinusoidal", "learned"):
        torch.manual_seed(0)
        enc = transformer(positional=positional, pooling="mean")
        diff = (enc(x[:, perm]) - enc(x)).abs().max()
        assert diff > 1e-3, positional


def test_sinusoidal_table_values() -> None:
    table = sinusoidal_positions(5, 6)
    assert table.shape == (5, 6)
    p, i = 3, 1  # column 2i = 2 is sin, 2i + 1 = 3 is cos
    angle = p / 10000 ** (2 * i / 6)
    assert abs(table[p, 2].item() - math.sin(angle)) < 1e-6
    assert abs(table[p, 3].item() - math.cos(angle)) < 1e-6
    assert torch.equal(table[0, 1::2], torch.ones(3))
    assert sinusoidal_positions(4, 7).shape == (4, 7)


@pytest.mark.parametrize("kind,kw", ENCODERS)
def test_deterministic_under_seed(kind: str, kw: Dict[str, Any]) -> None:
    torch.manual_seed(42)
    a = make(kind, {**kw, "dropout": 0.3})
    torch.manual_seed(42)
    b = make(kind, {**kw, "dropout": 0.3})
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), na
    torch.testing.assert_close(a(clips()), b(clips()), rtol=0, atol=0)
    a.train()
    b.train()
    torch.manual_seed(1)
    ya = a(clips())
    torch.manual_seed(1)
    assert torch.equal(ya, b(clips()))


def test_bad_input_raises() -> None:
    enc = transformer()
    with pytest.raises(ValueError, match="input_dim=12"):
        enc(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"\[B, S, F\]"):
        enc(torch.randn(4, F_DIM))
    with pytest.raises(ValueError, match="max_len=10"):
        enc(torch.randn(1, 11, F_DIM))
    with pytest.raises(ValueError, match="lengths must lie"):
        enc(clips(b=2, s=4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="lengths must lie"):
        lstm()(clips(b=2, s=4), torch.tensor([2, 5]))
    with pytest.raises(ValueError, match=r"lengths must be \[B\]"):
        enc(clips(b=2, s=4), torch.tensor([4]))
    with pytest.raises(ValueError, match="pooling"):
        lstm(pooling="max")
    with pytest.raises(ValueError, match="positional"):
        transformer(positional="rope")
    with pytest.raises(ValueError, match="divisible"):
        transformer(nhead=3)
    with pytest.raises(TypeError):
        LSTMVideoEncoder(input_dim=F_DIM, num_layers=2, dropout=0.0, out_dim=8)  # hidden_dim is required


def test_registered_and_buildable() -> None:
    assert MODULES["lstm"] is LSTMVideoEncoder
    assert MODULES["transformer"] is TransformerVideoEncoder
    enc = build_module(
        "lstm", {"input_dim": F_DIM, "hidden_dim": 8, "num_layers": 1, "dropout": 0.0, "out_dim": 4, "pooling": "mean"}
    )
    assert isinstance(enc, LSTMVideoEncoder) and enc(clips()).shape == (3, 4)
