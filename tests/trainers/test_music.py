"""Stage 1 end to end on a tiny model: outputs, export equality, resume, broken files, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vcmr import load_encoder
from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.demo.synth import random_spec, render
from vcmr.trainers.music import MusicPretrainConfig, train, view_match_accuracy

sys.path.insert(0, str(Path(__file__).parent))
from tiny import stage1_overrides  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def music_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    rng = np.random.default_rng(1)
    for i in range(14):
        save_audio(root / f"genre{i % 3}" / f"song{i}.wav", render(random_spec(rng), SR, 1.5), SR)
    (root / "broken.wav").write_bytes(b"")
    (root / "garbage.mp3").write_bytes(b"\x01\x02 not audio" * 50)
    save_audio(root / "too_short.flac", np.zeros(200, np.float32), SR)
    return root


def tiny_cfg(music_folder, out_root, *extra):
    return load_config(CONFIG_DIR / "mus_pretrain.yaml", stage1_overrides(music_folder, out_root, list(extra)), MusicPretrainConfig)


def test_view_match_accuracy():
    z = torch.eye(4)
    assert view_match_accuracy(z, z).item() == 1.0
    assert view_match_accuracy(z, z[[1, 0, 2, 3]]).item() == 0.5


def test_train_writes_checkpoint_config_export_and_report(music_folder, tmp_path):
    cfg = tiny_cfg(music_folder, tmp_path)
    result = train(cfg)
    run = Path(result["run_dir"])
    assert (run / "config.yaml").is_file()
    saved = load_config(run / "config.yaml", schema=MusicPretrainConfig)
    assert saved == cfg
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert result["checkpoint"] and Path(result["checkpoint"]).is_file()
    assert result["data"] == {"train": result["data"]["train"], "val": result["data"]["val"], "rejected": 3}
    report = (run / "rejected_files.tsv").read_text()
    for name in ("broken.wav", "garbage.mp3", "too_short.flac"):
        assert name in report
    for key in ("val/loss", "val/view_top1", "train/loss_epoch"):
        assert np.isfinite(result["metrics"][key])
    assert (run / "csv" / "metrics.csv").is_file()
    assert "lr-Adam" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]

    # The export holds the trained weights: same representation as the checkpoint's encoder.
    enc = load_encoder(result["export"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    from_ckpt = load_encoder(run / "checkpoints" / "last.ckpt")
    x = torch.randn(3, 1, 729)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), from_ckpt(x))
    assert ckpt["global_step"] > 0


def test_resume_last_continues_the_same_run(music_folder, tmp_path):
    first = train(tiny_cfg(music_folder, tmp_path, "trainer.max_epochs=1"))
    step1 = torch.load(Path(first["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    second = train(tiny_cfg(music_folder, tmp_path, "trainer.max_epochs=2", "resume=last"))
    assert second["run_dir"] == first["run_dir"]
    step2 = torch.load(Path(second["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step2 == 2 * step1


def test_clip_shorter_than_encoder_input_is_rejected(music_folder, tmp_path):
    with pytest.raises(ValueError, match="data.clip_length=500"):
        train(tiny_cfg(music_folder, tmp_path, "data.clip_length=500"))


def test_script_reports_config_errors(capsys):
    from vcmr.scripts.mus_pretrain import main

    with pytest.raises(SystemExit) as exc:  # in process: the command line itself runs in test_ddp_two_cpu_ranks
        main(["optim.weight_decy=1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "optim.weight_decy" in err and "did you mean 'optim.weight_decay'" in err


def test_ddp_two_cpu_ranks(music_folder, tmp_path):
    """A few steps of 2-process DDP (gloo) through the real entry point."""
    args = stage1_overrides(music_folder, tmp_path, ["trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # one thread per rank: two ranks, two cores
    env.pop("VCMR_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vcmr.scripts.mus_pretrain", "--config", str(CONFIG_DIR / "mus_pretrain.yaml"), *args],
        capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((tmp_path / "tiny").glob("version_*"))
    assert len(runs) == 1, runs
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] > 0
    assert (runs[0] / "export" / "encoder.safetensors").is_file()
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr or "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
