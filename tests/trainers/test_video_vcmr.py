"""Stage 2 with VCMR's choices: lstm_flatten video side, 2N NT-Xent, frozen blocks' BN statistics."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import vcmr
from vcmr.config import CONFIG_DIR, ConfigError, load_config
from vcmr.losses import CrossModalInfoNCE, CrossModalNTXent
from vcmr.trainers.video import VideoPretrainConfig, build_module_from_config, train

sys.path.insert(0, str(Path(__file__).parent))
from tiny import make_builder_output, stage2_overrides  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


FLATTEN = [
    "model.video_encoder=lstm_flatten",
    "model.video_encoders.lstm_flatten.input_dim=8",
    "model.video_encoders.lstm_flatten.hidden_dim=8",
    "model.video_encoders.lstm_flatten.steps=1",  # 729 samples at 16 kHz pair with 1 second of features
    "model.video_encoders.lstm_flatten.out_dim=16",
]
VCMR_LOSS = ["loss.name=cross_modal_ntxent", "loss.learnable_temperature=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_builder_output(tmp_path_factory.mktemp("mv"))


def cfg_for(dataset, out, *extra):
    return load_config(CONFIG_DIR / "vid_pretrain.yaml", stage2_overrides(dataset, out, extra=list(extra)), VideoPretrainConfig)


def test_defaults_are_unchanged(dataset, tmp_path):
    cfg = cfg_for(dataset, tmp_path)
    assert cfg.loss.name == "cross_modal_infonce" and cfg.model.frozen_bn == "eval"
    module = build_module_from_config(cfg)
    assert type(module.loss.cross_modal) is CrossModalInfoNCE


def bn_stats(module):
    bn = module.model.audio_encoder.blocks[0][1]
    return bn.running_mean.clone()


@pytest.mark.parametrize("frozen_bn, changes", [("eval", False), ("train", True)])
def test_frozen_blocks_bn_statistics(dataset, tmp_path, frozen_bn, changes):
    module = build_module_from_config(cfg_for(dataset, tmp_path, f"model.frozen_bn={frozen_bn}"))
    enc = module.model.audio_encoder
    assert all(not p.requires_grad for b in list(enc.blocks)[:2] for p in b.parameters())
    assert all(p.requires_grad for p in enc.blocks[2].parameters())
    before = bn_stats(module)
    # As built (Lightning keeps each submodule's mode), and after an explicit train().
    assert enc.blocks[0].training is changes and enc.blocks[2].training
    module(torch.randn(4, 1, 729) + 3.0, torch.randn(4, 1, 8))
    assert (not torch.equal(before, bn_stats(module))) is changes
    module.train()
    assert enc.blocks[0].training is changes


def test_vcmr_model_and_loss_are_built(dataset, tmp_path):
    module = build_module_from_config(cfg_for(dataset, tmp_path, *FLATTEN, *VCMR_LOSS))
    assert type(module.loss.cross_modal) is CrossModalNTXent and module.loss.cross_modal.temperature == 0.1
    assert module.model.spec["video_encoder"]["name"] == "lstm_flatten"
    out = module(torch.randn(3, 1, 729), torch.randn(3, 1, 8))
    assert out["video"].shape == (3, 8)


def test_config_errors_name_the_key(dataset, tmp_path):
    with pytest.raises(ValueError, match="loss.learnable_temperature"):
        build_module_from_config(cfg_for(dataset, tmp_path, "loss.name=cross_modal_ntxent"))
    with pytest.raises(ConfigError, match="loss.name"):
        cfg_for(dataset, tmp_path, "loss.name=ntxent")
    with pytest.raises(ConfigError, match="model.frozen_bn"):
        cfg_for(dataset, tmp_path, "model.frozen_bn=frozen")
    with pytest.raises(ValueError, match=r"model.video_encoders.lstm_flatten.steps=6 .* 1 seconds"):
        build_module_from_config(cfg_for(dataset, tmp_path, *FLATTEN, "model.video_encoders.lstm_flatten.steps=6"))


def test_short_vcmr_run_exports_a_loadable_model(dataset, tmp_path):
    cfg = cfg_for(dataset, tmp_path, *FLATTEN, *VCMR_LOSS, "model.frozen_bn=train", "optim.name=adamw",
                  "optim.weight_decay=0.01", "optim.warmup_steps=0", "optim.schedule=constant", "trainer.max_epochs=1")
    result = train(cfg)
    assert "val/a2v/R@1" in result["metrics"] and "train/loss_a2v_step" in result["metrics"]
    model = vcmr.load_model(result["exports"]["model"])
    assert model.spec["video_encoder"]["name"] == "lstm_flatten"
    assert model.encode_video(torch.randn(2, 1, 8)).shape == (2, 8)
