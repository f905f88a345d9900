"""Loading our exports and CLMR/VCMR checkpoints built here in their published layouts."""

import argparse

import pytest
import torch
from torch import nn

from vcmr import load_encoder, save_encoder
from vcmr.models import CLMR_ARGS, SampleCNN
from vcmr.models.export import CheckpointError, load_encoder_with_meta


class ClmrSampleCNN(nn.Module):
    """CLMR's published layout: ``sequential`` of blocks, classifier ``fc``."""

    def __init__(self, ch=(8, 8, 16), first=8, last_kernel=3):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv1d(1, first, 3, stride=3), nn.BatchNorm1d(first), nn.ReLU())]
        c_in = first
        for c in ch:
            blocks.append(
                nn.Sequential(nn.Conv1d(c_in, c, 3, padding=1), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(3, 3))
            )
            c_in = c
        blocks.append(nn.Sequential(nn.Conv1d(c_in, c_in, last_kernel, padding=last_kernel // 2), nn.BatchNorm1d(c_in), nn.ReLU()))
        self.sequential = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, 5)

    def representation(self, x):
        out = self.sequential(x)
        return out.reshape(x.shape[0], -1)


class VcmrSampleCNN(nn.Module):
    """VCMR's published layout: ``all_blocks``; first conv 5/stride 5, 1x1 last conv."""

    def __init__(self, ch=(8, 16, 16), first=8, out=10):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv1d(1, first, 5, stride=5), nn.BatchNorm1d(first), nn.ReLU())]
        c_in = first
        for c in ch:
            blocks.append(
                nn.Sequential(nn.Conv1d(c_in, c, 3, padding="same"), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(3, 3))
            )
            c_in = c
        blocks.append(nn.Sequential(nn.Conv1d(c_in, out, 1), nn.BatchNorm1d(out), nn.ReLU()))
        self.all_blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.all_blocks(x).squeeze(-1)


def randomise_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module.eval()


class SimCLRWrapper(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(16, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False))


def test_clmr_state_dict_pt(tmp_path):
    ref = randomise_bn(ClmrSampleCNN())
    path = tmp_path / "clmr_checkpoint.pt"
    torch.save(SimCLRWrapper(ref).state_dict(), path)
    enc, meta = load_encoder_with_meta(path)
    assert meta["source"] == "state_dict" and meta["args"]["input_length"] == 81
    x = torch.randn(3, 1, 81)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref.representation(x))


def test_clmr_lightning_ckpt(tmp_path):
    ref = randomise_bn(ClmrSampleCNN())
    inner = SimCLRWrapper(ref)
    state = {f"model.{k}": v for k, v in inner.state_dict().items()}
    path = tmp_path / "epoch=9.ckpt"
    torch.save({"pytorch-lightning_version": "1.9.0", "epoch": 9, "state_dict": state}, path)
    enc = load_encoder(path)
    x = torch.randn(2, 1, 81)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref.representation(x))


def test_vcmr_lightning_ckpt_with_namespace_hparams(tmp_path):
    ref = randomise_bn(VcmrSampleCNN())
    # VCMR's stage-1 module keeps the encoder as `encoder` and again inside `model.0`.
    state = {f"encoder.{k}": v for k, v in ref.state_dict().items()}
    state.update({f"model.0.{k}": v for k, v in ref.state_dict().items()})
    state["projector.0.weight"] = torch.randn(10, 10)
    path = tmp_path / "vcmr.ckpt"
    torch.save(
        {"pytorch-lightning_version": "1.8.6", "state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-3)},
        path,
    )
    enc, meta = load_encoder_with_meta(path)
    assert meta["args"]["first_block"] == {"out_channels": 8, "kernel_size": 5}
    assert meta["args"]["last_block"] == {"out_channels": 10, "kernel_size": 1}
    x = torch.randn(2, 1, 5 * 27)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref(x))


def test_own_export_roundtrip_and_metadata(tmp_path):
    enc = randomise_bn(SampleCNN(**CLMR_ARGS))
    path = save_encoder(tmp_path / "e.safetensors", enc, "samplecnn", CLMR_ARGS, {"sample_rate": 22050})
    loaded, meta = load_encoder_with_meta(path)
    assert meta["source"] == "vcmr" and meta["sample_rate"] == 22050 and meta["args"] == CLMR_ARGS
    x = torch.randn(1, 1, 59049)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x))
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


class Payload:
    """An arbitrary class: unpickling it would mean running code from the file."""


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "obj": Payload()}, path)
    with pytest.raises(CheckpointError, match="tensors only"):
        load_encoder(path)


def test_unknown_layout_lists_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"backbone.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="no SampleCNN weights found.*backbone.conv.weight"):
        load_encoder(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "missing.ckpt")
