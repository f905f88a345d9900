"""config/repro/: every published recipe loads with its stage's schema, states its source,
and builds the model it describes."""
from __future__ import annotations

import re

import pytest
import torch

from vcmr.config import CONFIG_DIR, load_config
from vcmr.losses import CrossModalNTXent, NTXentLoss
from vcmr.models.heads import LinearHead, MLPHead
from vcmr.models.tagger import build_tagger
from vcmr.trainers import music, video
from vcmr.trainers.optim import build_optimizer, check_schedule
from vcmr.trainers.supervised import SupervisedConfig

REPRO = CONFIG_DIR / "repro"
SOURCE = re.compile(r"Source: (klean2050/VCMR, experiments branch, commit 853dace|Spijkervet/CLMR, commit 423414d)")


def test_every_recipe_is_here_and_states_its_source():
    names = sorted(p.name for p in REPRO.glob("*.yaml"))
    assert names == ["clmr_linear_gtzan.yaml", "clmr_linear_mtat.yaml", "clmr_pretrain.yaml", "vcmr_mtat.yaml",
                     "vcmr_mtg_moodtheme.yaml", "vcmr_stage1.yaml", "vcmr_stage2.yaml"]
    for p in REPRO.glob("*.yaml"):
        assert SOURCE.search(p.read_text()), p.name


def head_sizes(head):
    return [tuple(m.weight.shape) for m in head.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("name, sr, length, out_dim, temp", [
    ("vcmr_stage1.yaml", 16000, 98415, 128, 0.1),
    ("clmr_pretrain.yaml", 22050, 59049, 64, 0.5),
])
def test_stage1_recipes(name, sr, length, out_dim, temp):
    cfg = load_config(REPRO / name, ["data.root=demo"], music.MusicPretrainConfig)
    module = music.build_module_from_config(cfg)
    assert cfg.data.sample_rate == sr and module.encoder.input_length == length
    assert head_sizes(module.projector) == [(512, 512), (out_dim, 512)]
    assert all(m.bias is None for m in module.projector.modules() if isinstance(m, torch.nn.Linear))
    assert isinstance(module.loss, NTXentLoss) and module.loss.temperature == temp and not module.loss.gather
    assert list(module.augment.transforms) == ["polarity", "noise_std", "gain", "filter_sinc", "delay_mix",
                                               "pitch_cents", "reverb_sox"]
    opt = build_optimizer(module.param_groups(), module.optim_cfg)
    expected = {"vcmr_stage1.yaml": (torch.optim.AdamW, 3e-4, 0.01), "clmr_pretrain.yaml": (torch.optim.Adam, 3e-4, 0.0)}
    cls, lr, wd = expected[name]
    assert type(opt) is cls and opt.defaults["lr"] == lr and opt.defaults["weight_decay"] == wd


def test_vcmr_stage2_recipe():
    cfg = load_config(REPRO / "vcmr_stage2.yaml", ["data.root=demo", "model.audio_init=none"], video.VideoPretrainConfig)
    module = video.build_module_from_config(cfg)
    m = module.model
    assert m.input_length == 98415 and cfg.data.loader.batch_size == 128 and cfg.trainer.max_epochs == 50
    assert str(cfg.trainer.precision) == "16-mixed"
    assert m.spec["video_encoder"]["name"] == "lstm_flatten"
    assert m.video_encoder.lstm.num_layers == 2 and m.video_encoder.lstm.hidden_size == 512
    assert tuple(m.video_encoder.head[1].weight.shape) == (512, 3072)
    assert head_sizes(m.audio_projector) == head_sizes(m.video_projector) == [(512, 512), (128, 512)]
    assert type(module.loss.cross_modal) is CrossModalNTXent and module.loss.cross_modal.temperature == 0.1
    enc = m.audio_encoder
    assert [all(not p.requires_grad for p in b.parameters()) for b in enc.blocks][:5] == [True] * 4 + [False]
    assert enc.blocks[0].training  # frozen_bn: train
    assert len(module.augment.transforms) == 0
    opt = build_optimizer(module.param_groups(), module.optim_cfg)
    assert type(opt) is torch.optim.AdamW and opt.defaults["lr"] == 5e-4 and opt.defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("name, sr, head, sizes, n_tags", [
    ("vcmr_mtat.yaml", 16000, MLPHead, [(128, 512), (50, 128)], 50),
    ("vcmr_mtg_moodtheme.yaml", 16000, MLPHead, [(128, 512), (56, 128)], 56),
    ("clmr_linear_mtat.yaml", 22050, LinearHead, [(50, 512)], 50),
    ("clmr_linear_gtzan.yaml", 22050, LinearHead, [(10, 512)], 10),
])
def test_stage3_recipes(name, sr, head, sizes, n_tags):
    cfg = load_config(REPRO / name, ["data.root=x", "model.audio_init=scratch"], SupervisedConfig)
    check_schedule(dict(cfg.optim))
    tagger, meta = build_tagger(cfg.model, n_tags, cfg.data.sample_rate)
    assert cfg.data.sample_rate == sr and isinstance(tagger.head, head) and head_sizes(tagger.head) == sizes
    assert cfg.optim.schedule == "plateau" and cfg.optim.plateau.patience == 5 and cfg.optim.plateau.factor == 0.1
    assert cfg.callbacks.early_stopping.monitor == "val/loss" and cfg.callbacks.early_stopping.patience == 10
    assert cfg.evaluation.last_window == "drop"
    if name.startswith("vcmr"):
        assert tagger.head.net[0].p == 0.3 and meta["frozen_bn"] == "train" and cfg.data.val_crop == "random"
        assert cfg.evaluation.overlaps == [0.5] and cfg.optim.name == "adamw" and cfg.trainer.max_epochs == 100
    else:
        assert meta["frozen_bn"] == "eval" and cfg.data.loader.batch_size == 48 and cfg.trainer.max_epochs == 200
    if name == "vcmr_mtg_moodtheme.yaml":
        assert (cfg.data.name, cfg.data.split, cfg.data.tagset) == ("mtg_jamendo", "split-0", "moodtheme")
    if name == "vcmr_mtat.yaml":
        assert cfg.evaluation.tag_groups == "tag_groups/mtat_vcmr.yaml"
