"""Stage 2 wiring on a tiny model: exports equal the trained module, config is honoured, DDP runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vcmr
from vcmr.config import CONFIG_DIR, load_config, to_container
from vcmr.models.export import load_encoder_with_meta
from vcmr.models.joint import MusicVideoModel
from vcmr.trainers.video import VideoMusicModule, VideoPretrainConfig, build_module_from_config, train

sys.path.insert(0, str(Path(__file__).parent))
from tiny import make_builder_output, stage2_overrides  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_builder_output(tmp_path_factory.mktemp("mv"))


def cfg_for(dataset, out, *extra):
    return load_config(CONFIG_DIR / "vid_pretrain.yaml", stage2_overrides(dataset, out, extra=list(extra)), VideoPretrainConfig)


def test_module_assigns_encoders_before_use_and_freezes_blocks(dataset, tmp_path):
    module = build_module_from_config(cfg_for(dataset, tmp_path))
    assert isinstance(module, VideoMusicModule) and module.model.spec["audio_encoder"]["name"] == "samplecnn"
    enc = module.model.audio_encoder
    assert all(not p.requires_grad for b in list(enc.blocks)[:2] for p in b.parameters())
    assert all(p.requires_grad for p in enc.blocks[2].parameters())
    out = module(torch.randn(3, 1, 729), torch.randn(3, 1, 8))
    assert out["audio"].shape == out["video"].shape == (3, 8)


def test_optimizer_uses_configured_learning_rate(dataset, tmp_path):
    cfg = cfg_for(dataset, tmp_path, "optim.lr=0.0123", "optim.warmup_steps=0", "optim.schedule=constant")
    module = build_module_from_config(cfg)

    class FakeTrainer:
        estimated_stepping_batches = 10

    module.trainer = FakeTrainer()  # type: ignore[assignment]
    conf = module.configure_optimizers()
    assert conf["optimizer"].param_groups[0]["lr"] == pytest.approx(0.0123)
    frozen = {id(p) for b in list(module.model.audio_encoder.blocks)[:2] for p in b.parameters()}
    assert not frozen & {id(p) for g in conf["optimizer"].param_groups for p in g["params"]}


def test_train_exports_match_the_trained_module(dataset, tmp_path):
    result = train(cfg_for(dataset, tmp_path))
    assert result["data"] == {"ok": 12, "failed": 1}
    for key in ("val/a2v/R@1", "val/v2a/R@1", "val/a2v/median_rank", "val/chance/R@1", "val/loss"):
        assert key in result["metrics"], key
    n_val = result["metrics"]["val/n"] if "val/n" in result["metrics"] else None
    if n_val:
        assert result["metrics"]["val/chance/R@1"] == pytest.approx(1 / n_val)
    run = Path(result["run_dir"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = build_module_from_config(cfg_for(dataset, tmp_path))
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    enc, meta = load_encoder_with_meta(result["exports"]["audio_encoder"])
    assert meta["stage"] == "video_pretrain" and meta["sample_rate"] == 16000
    model = vcmr.load_model(result["exports"]["model"])
    assert isinstance(model, MusicVideoModel) and not model.training
    assert model.meta["sample_rate"] == 16000 and model.meta["stage"] == "video_pretrain"
    assert vcmr.load_model(run).meta["path"] == result["exports"]["model"]  # a run folder works too
    x, v = torch.randn(4, 1, 729), torch.randn(4, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), module.model.audio_encoder(x))
        for normalize in (False, True):
            torch.testing.assert_close(model.encode_audio(x, normalize), module.model.encode_audio(x, normalize))
            torch.testing.assert_close(model.encode_video(v, normalize), module.model.encode_video(v, normalize))
        torch.testing.assert_close(model.encode_audio(x, False), model.audio_projector(enc(x)))


def test_audio_init_from_stage1_export_and_length_check(dataset, tmp_path):
    from vcmr import save_encoder
    from vcmr.models import build_module

    cfg = cfg_for(dataset, tmp_path)
    args = to_container(cfg.model.audio_encoder.args)
    src = build_module("samplecnn", args)
    path = save_encoder(tmp_path / "s1.safetensors", src, "samplecnn", args, {"sample_rate": 16000})
    module = build_module_from_config(cfg_for(dataset, tmp_path, f"model.audio_init={path}"))
    for a, b in zip(module.model.audio_encoder.state_dict().values(), src.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="trained at 16000 Hz but data.sample_rate=22050"):
        build_module_from_config(cfg_for(dataset, tmp_path, f"model.audio_init={path}", "data.sample_rate=22050"))
    with pytest.raises(ValueError, match="data.audio_length=243"):
        build_module_from_config(cfg_for(dataset, tmp_path, f"model.audio_init={path}", "data.audio_length=243"))


def test_transformer_video_encoder_and_music_term(dataset, tmp_path):
    cfg = cfg_for(
        dataset, tmp_path, "trainer.max_epochs=1", "loss.music_weight=0.5", "augment.enabled=true",
        "augment.delay.min_ms=5", "augment.delay.max_ms=20", "augment.delay.step_ms=5",
        "augment.pitch.n_fft=256", "augment.pitch.hop_length=64", "augment.reverb.ir_length_s=0.02",
        "model.video_encoder=transformer",
    )
    result = train(cfg)
    assert "train/loss_music_epoch" in result["metrics"] or "train/loss_music" in result["metrics"]
    model = vcmr.load_model(result["exports"]["model"])
    assert model.spec["video_encoder"]["name"] == "transformer" and model.spec["video_encoder"]["args"]["d_model"] == 16


def test_unknown_video_encoder_names_the_key(dataset, tmp_path):
    with pytest.raises(ValueError, match="model.video_encoder: 'gru'"):
        build_module_from_config(cfg_for(dataset, tmp_path, "model.video_encoder=gru"))


def test_ddp_two_cpu_ranks(dataset, tmp_path):
    args = stage2_overrides(dataset, tmp_path, extra=["trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # one thread per rank: two ranks, two cores
    env.pop("VCMR_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vcmr.scripts.vid_pretrain", "--config", str(CONFIG_DIR / "vid_pretrain.yaml"), *args],
        capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "a2v R@1" in proc.stdout
    runs = list((tmp_path / "tiny2").glob("version_*"))
    assert len(runs) == 1 and (runs[0] / "export" / "audio_encoder.safetensors").is_file()
    assert (runs[0] / "export" / "model.safetensors").is_file()


def test_load_model_needs_no_lightning(dataset, tmp_path):
    result = train(cfg_for(dataset, tmp_path, "trainer.max_epochs=1"))
    code = (
        "import sys, torch, vcmr\n"
        f"m = vcmr.load_model({str(result['exports']['model'])!r})\n"
        "z = m.encode_audio(torch.randn(2, 1, m.input_length))\n"
        "assert z.shape == (2, m.embed_dim)\n"
        "print('lightning' in ' '.join(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
