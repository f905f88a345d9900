"""The demo stage-2 model: newest export under runs/, trained once when there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vcmr.config import load_config
from vcmr.demo import models
from vcmr.evaluation.retrieval import RetrievalEvalConfig


def _export(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_newest_demo_export_wins(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = _export(runs / "vid_pretrain_demo" / "version_0" / "export" / "model.safetensors", 1_000)
    new = _export(runs / "demo" / "vid_pretrain_demo" / "version_3" / "export" / "model.safetensors", 2_000)
    _export(runs / "vid_pretrain" / "version_9" / "export" / "model.safetensors", 3_000)  # not a demo run
    _export(runs / "vid_pretrain_demo" / "version_1" / "export" / "audio_encoder.safetensors", 4_000)
    assert models.find_demo_models(runs) == [new, old]
    assert models.ensure_demo_model(runs) == new
    assert models.find_demo_models(tmp_path / "absent") == []


def test_trains_once_when_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import vcmr.demo.videos
    import vcmr.trainers.video

    calls = []

    def fake_train(cfg):
        calls.append(cfg)
        out = _export(Path(cfg.output.root) / cfg.output.name / "version_0" / "export" / "model.safetensors", 5_000)
        return {"exports": {"model": str(out)}}

    monkeypatch.setattr(vcmr.demo.videos, "prepare", lambda cfg: cfg)
    monkeypatch.setattr(vcmr.trainers.video, "train", fake_train)
    runs = tmp_path / "runs"
    path = models.ensure_demo_model(runs, overrides=["trainer.max_epochs=1"])
    assert path == runs / "vid_pretrain_demo" / "version_0" / "export" / "model.safetensors"
    assert "training the stage-2 demo" in capsys.readouterr().out
    cfg = calls[0]
    assert cfg.output.root == str(runs) and cfg.trainer.max_epochs == 1 and cfg.data.root == "demo"
    assert models.ensure_demo_model(runs) == path and len(calls) == 1  # found the second time


def test_prepare_replaces_only_demo_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "ensure_demo_model", lambda runs: tmp_path / "m.safetensors")
    monkeypatch.setattr(models, "demo_dataset", lambda: tmp_path / "dataset")
    cfg = load_config("eval_retrieval.yaml", [], RetrievalEvalConfig)
    out = models.prepare(cfg)
    assert out.model == str(tmp_path / "m.safetensors") and out.data.root == str(tmp_path / "dataset")
    kept = load_config("eval_retrieval.yaml", ["model=a.safetensors", "data.root=/data/mv"], RetrievalEvalConfig)
    assert models.prepare(kept) is kept
