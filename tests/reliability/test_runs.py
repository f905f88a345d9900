"""Runs never report success on nothing, never resume into an empty folder, never unpickle code."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.demo.synth import random_spec, render
from vcmr.models.export import CheckpointError, load_tensors_only
from vcmr.trainers.base import TrainingDataError, resolve_ckpt_path, resolve_run_dir
from vcmr.trainers.music import MusicPretrainConfig, train

sys.path.insert(0, str(Path(__file__).parent.parent / "trainers"))
from tiny import stage1_overrides  # noqa: E402

SR = 16000


def test_too_little_data_fails_before_a_run_folder_exists(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        save_audio(tmp_path / "songs" / f"s{i}.wav", render(random_spec(rng), SR, 1.0), SR)
    cfg = load_config(
        CONFIG_DIR / "mus_pretrain.yaml",
        stage1_overrides(tmp_path / "songs", tmp_path / "runs", ["data.loader.batch_size=16", "data.val_fraction=0.0"]),
        MusicPretrainConfig,
    )
    with pytest.raises(TrainingDataError, match=r"7 training examples give no full training batch of "
                                                 r"data.loader.batch_size=16 on 1 device"):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # no run folder, no config, no export


def test_resume_last_skips_folders_without_a_checkpoint(tmp_path):
    out = {"root": str(tmp_path), "name": "run", "version": None}
    (tmp_path / "run" / "version_0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "run" / "version_1").mkdir()  # a run that failed before its first checkpoint
    assert resolve_run_dir(out, "last") == tmp_path / "run" / "version_0"
    assert resolve_run_dir(out, None) == tmp_path / "run" / "version_2"
    (tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt").unlink()
    assert resolve_run_dir(out, "last") == tmp_path / "run" / "version_2"  # nothing to resume: a new run
    assert resolve_ckpt_path("last", tmp_path / "run" / "version_2") is None


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused_whatever_the_environment(tmp_path, monkeypatch):
    bad = tmp_path / "bad.ckpt"
    with open(bad, "wb") as fh:
        pickle.dump({"state_dict": {}, "payload": _Payload()}, fh)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, good)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="bad.ckpt: cannot be read as tensors only"):
        load_tensors_only(bad)
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        resolve_ckpt_path(str(bad), tmp_path)
    assert load_tensors_only(good)["epoch"] == 3
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # the environment is left as it was
