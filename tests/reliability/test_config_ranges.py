"""Bad values stop a command before any work, with exit status 2 and the key's name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vcmr.config import CONFIG_DIR, ConfigError, load_config
from vcmr.preprocess.builder import PreprocessConfig
from vcmr.trainers.base import LOGGERS
from vcmr.trainers.music import MusicPretrainConfig
from vcmr.trainers.optim import OPTIMIZERS
from vcmr.trainers.video import VideoPretrainConfig


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.loader.batch_size=0", "key 'data.loader.batch_size': 0 must be >= 1"),
        ("data.loader.batch_size=-4", "key 'data.loader.batch_size': -4 must be >= 1"),
        ("optim.lr=-0.1", "key 'optim.lr': -0.1 must be > 0"),
        ("data.val_fraction=2", "key 'data.val_fraction': 2.0 must be in [0, 1)"),
        ("optim.name=sgd", "key 'optim.name': 'sgd' must be one of adam, adamw, lars"),
        ("logger.name=mlflow", "key 'logger.name': 'mlflow' must be one of"),
        ("data.verify=some", "key 'data.verify': 'some' must be one of full, header"),
    ],
)
def test_stage_ranges_are_checked_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "mus_pretrain_demo.yaml", [override], MusicPretrainConfig)
    assert message in str(err.value)


def test_video_stage_ranges():
    with pytest.raises(ConfigError, match="key 'model.freeze_blocks': -1 must be >= 0"):
        load_config(CONFIG_DIR / "vid_pretrain_demo.yaml", ["model.freeze_blocks=-1"], VideoPretrainConfig)


@pytest.mark.parametrize(
    "override, key",
    [("audio.segment_seconds=-5", "audio.segment_seconds"), ("window.seconds=0", "window.seconds"),
     ("frames.batch_size=0", "frames.batch_size"), ("window.seconds=10.5", "window.seconds")],
)
def test_builder_ranges_are_checked_at_load(override, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_config(CONFIG_DIR / "preprocess.yaml", [override], PreprocessConfig)


def test_the_choice_lists_match_the_registries():
    from vcmr.config import LoggerConfig, OptimConfig
    import dataclasses

    def choices(schema, name):
        check = {f.name: f for f in dataclasses.fields(schema)}[name].metadata["check"][0]
        return {c for c in ("adam", "adamw", "lars", "sgd", "tensorboard", "wandb", "csv", "none", "mlflow") if check(c)}

    assert choices(OptimConfig, "name") == set(OPTIMIZERS)
    assert choices(LoggerConfig, "name") == set(LOGGERS)


def test_builder_command_without_output_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vcmr.scripts.preprocess", "--config", "preprocess.yaml", "input=x"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: output: required" in proc.stderr
    assert list(tmp_path.iterdir()) == []
