"""Tagging heads, the tagger builder and the tagger checkpoint format."""

import os

import pytest
import torch

from vcmr.models.export import CheckpointError
from vcmr.models.heads import HEADS, LinearHead, MLPHead, build_head
from vcmr.models.tagger import CKPT_FORMAT, CKPT_KEY, TAGGER_PREFIX, build_tagger, find_checkpoint, load_tagger

TINY_ARGS = {"input_length": 243, "first_block": {"out_channels": 4, "kernel_size": 3}, "n_blocks": 4,
             "channels": [4, 4, 8, 8], "kernel_size": 3, "pool_size": 3, "last_block": {"out_channels": 8, "kernel_size": 1}}


def _model_cfg(mode="mlp"):
    return {"audio_init": "scratch", "audio_encoder": {"name": "samplecnn", "args": TINY_ARGS}, "pool_size": 3,
            "mode": mode, "finetune_head": "linear", "heads": {"linear": {}, "mlp": {"hidden_dim": 6, "dropout": 0.1}}}


def test_head_registry_and_errors():
    assert HEADS == {"linear": LinearHead, "mlp": MLPHead}
    assert build_head("mlp", 8, 3, {"hidden_dim": 5, "dropout": 0.0})(torch.randn(2, 8)).shape == (2, 3)
    with pytest.raises(KeyError, match="known: \\['linear', 'mlp'\\]"):
        build_head("attention", 8, 3, {})
    with pytest.raises(TypeError, match="head 'linear'"):
        build_head("linear", 8, 3, {"hidden_dim": 5})


def test_build_tagger_head_per_mode_and_missing_head_args():
    tagger, meta = build_tagger(_model_cfg("finetune"), 3, 8000)
    assert isinstance(tagger.head, LinearHead) and not tagger.freeze_encoder  # finetune uses model.finetune_head
    assert meta["head"] == {"name": "linear", "args": {}} and meta["encoder"]["args"] == TINY_ARGS
    assert meta["format"] == CKPT_FORMAT and meta["sample_rate"] == 8000 and meta["n_tags"] == 3
    cfg = {**_model_cfg("mlp"), "heads": {"linear": {}}}
    with pytest.raises(ValueError, match="model.heads: no arguments for head 'mlp'"):
        build_tagger(cfg, 3, 8000)


def _save(tagger, meta, tags, path):
    state = {TAGGER_PREFIX + k: v for k, v in tagger.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, CKPT_KEY: {**meta, "tags": tags}}, path)


def test_checkpoint_round_trip_and_run_folder(tmp_path):
    torch.manual_seed(0)
    tagger, meta = build_tagger(_model_cfg("mlp"), 3, 8000)
    ckpts = tmp_path / "run" / "checkpoints"
    _save(tagger, meta, ["a", "b", "c"], ckpts / "last.ckpt")
    assert find_checkpoint(tmp_path / "run") == ckpts / "last.ckpt"
    _save(tagger, meta, ["a", "b", "c"], ckpts / "best-epoch=001-step=4.ckpt")
    os.utime(ckpts / "last.ckpt", (1, 1))
    assert find_checkpoint(tmp_path / "run") == ckpts / "best-epoch=001-step=4.ckpt"
    loaded, loaded_meta = load_tagger(tmp_path / "run")
    assert loaded_meta["tags"] == ["a", "b", "c"] and loaded_meta["path"].endswith("best-epoch=001-step=4.ckpt")
    assert not loaded.training
    x = torch.randn(2, 1, 243)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tagger.eval()(x))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")


class _NotATensor:
    pass


def test_load_tagger_reads_tensors_only(tmp_path):
    torch.save({"state_dict": {}, "other": 1}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="no 'vcmr_tagger' entry"):
        load_tagger(tmp_path / "plain.ckpt")
    torch.save({"state_dict": {}, CKPT_KEY: _NotATensor()}, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match="pickled.ckpt: cannot be read as tensors only"):
        load_tagger(tmp_path / "pickled.ckpt")
