"""VCMR's video encoder variant: LSTM, every step flattened, Linear + ReLU."""
import pytest
import torch
from torch import nn

from vcmr.models.registry import MODULES, build_module
from vcmr.models.video import LSTMFlattenVideoEncoder


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py



class VCMRVideoSide(nn.Module):
    """The original layout (VCMR MultimodalLearning): video_temporal + video_encoder."""

    def __init__(self, steps: int, feats: int, layers: int = 2):
        super().__init__()
        self.video_temporal = nn.LSTM(feats, feats, num_layers=layers, batch_first=True, dropout=0.1)
        self.video_encoder = nn.Sequential(nn.Flatten(), nn.Linear(steps * feats, feats), nn.ReLU())

    def forward(self, x):
        h, _ = self.video_temporal(x)
        return self.video_encoder(h)


def test_registered_and_matches_vcmr_layout():
    assert MODULES["lstm_flatten"] is LSTMFlattenVideoEncoder
    torch.manual_seed(0)
    ours = build_module(
        "lstm_flatten", {"input_dim": 16, "hidden_dim": 16, "num_layers": 2, "dropout": 0.1, "steps": 6, "out_dim": 16}
    ).eval()
    orig = VCMRVideoSide(6, 16).eval()
    mapping = {"video_temporal.": "lstm.", "video_encoder.": "head."}
    state = {}
    for k, v in orig.state_dict().items():
        for a, b in mapping.items():
            if k.startswith(a):
                state[b + k[len(a):]] = v
    ours.load_state_dict(state, strict=True)
    x = torch.randn(5, 6, 16)
    assert torch.allclose(ours(x), orig(x), atol=1e-6)
    assert ours.head[1].in_features == 6 * 16 and ours.output_dim == 16
    assert (ours(x) >= 0).all()  # ends with the ReLU


def test_vcmr_sizes_and_flatten_order():
    enc = LSTMFlattenVideoEncoder(input_dim=512, hidden_dim=512, num_layers=2, dropout=0.1, steps=6, out_dim=512)
    assert enc.head[1].weight.shape == (512, 3072)
    # Column block k of the linear layer reads step k of the LSTM output (row-major flatten).
    small = LSTMFlattenVideoEncoder(input_dim=3, hidden_dim=4, num_layers=1, dropout=0.0, steps=3, out_dim=2).eval()
    x = torch.randn(2, 3, 3)
    h, _ = small.lstm(x)
    w, b = small.head[1].weight, small.head[1].bias
    manual = torch.relu(sum(h[:, k] @ w[:, 4 * k : 4 * k + 4].t() for k in range(3)) + b)
    assert torch.allclose(small(x), manual, atol=1e-6)


def test_lengths_zero_the_padded_steps_and_wrong_length_fails():
    torch.manual_seed(1)
    enc = LSTMFlattenVideoEncoder(input_dim=4, hidden_dim=5, num_layers=2, dropout=0.0, steps=4, out_dim=3).eval()
    x = torch.randn(2, 4, 4)
    lengths = torch.tensor([4, 2])
    out = enc(x, lengths)
    assert torch.allclose(out[0], enc(x[:1])[0], atol=1e-6)
    # Row 1: only its 2 valid steps count; what is in the padding does not matter.
    x2 = x.clone()
    x2[1, 2:] = 100.0
    assert torch.allclose(enc(x2, lengths)[1], out[1], atol=1e-6)
    h, _ = enc.lstm(x[1:2, :2])
    padded = torch.cat([h, torch.zeros(1, 2, 5)], dim=1)
    assert torch.allclose(out[1], enc.head(padded)[0], atol=1e-6)
    with pytest.raises(ValueError, match="steps=4"):
        enc(torch.randn(2, 5, 4))
