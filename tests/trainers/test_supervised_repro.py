"""Stage 3 with the originals' choices on a tiny single-label folder dataset: softmax loss and
accuracy, ReduceLROnPlateau + early stopping on val/loss, random validation crops, frozen
encoder whose batch norms keep updating, dropped last window, majority vote."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.models.tagger import load_tagger
from vcmr.trainers.supervised import OneHotCrossEntropy, SupervisedConfig, train


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one thread is faster, and immune to other processes on the same cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SR = 4000


def make_folders(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("valid", 4), ("test", 4)):
        for cls, f0 in (("low", 180.0), ("high", 900.0)):
            for i in range(n):
                t = np.arange(int(2.3 * SR)) / SR
                x = 0.4 * np.sin(2 * np.pi * f0 * rng.uniform(0.9, 1.1) * t) + 0.05 * rng.standard_normal(t.size)
                save_audio(root / split / cls / f"{i}.wav", x.astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, _one_torch_thread):
    root = make_folders(tmp_path_factory.mktemp("folders"))
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(CONFIG_DIR / "supervised.yaml", [
        "data.name=single_label", f"data.root={root}", "data.split=folders", f"data.sample_rate={SR}",
        "data.val_crop=random", "data.loader.batch_size=4", "data.loader.num_workers=0",
        "data.loader.persistent_workers=false", "data.loader.prefetch_factor=null", "data.loader.pin_memory=false",
        "model.audio_init=scratch", "model.audio_encoder.args.input_length=3645", "model.audio_encoder.args.n_blocks=6",
        "model.audio_encoder.args.channels=[8,8,16,16,16,16]", "model.mode=mlp", "model.frozen_bn=train",
        "model.heads.mlp={hidden_dim: 16, dropout: 0.3}",
        "optim.name=adamw", "optim.lr=3e-3", "optim.schedule=plateau", "optim.warmup_steps=0",
        "optim.plateau={monitor: val/loss, mode: min, factor: 0.1, patience: 0, threshold: 0.5, min_lr: 0.0}",
        "callbacks.checkpoint.monitor=val/accuracy", "callbacks.early_stopping.monitor=val/loss",
        "callbacks.early_stopping.mode=min", "callbacks.early_stopping.patience=10",
        "evaluation.overlaps=[0.0]", "evaluation.aggregations=[mean,majority_vote]", "evaluation.last_window=drop",
        "evaluation.tag_groups=null", "evaluation.chart=false", "evaluation.device=cpu",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.max_epochs=3", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "logger.name=csv", f"output.root={out}", "output.name=folders",
    ], SupervisedConfig)
    return cfg, train(cfg)


def test_single_label_run_reports_accuracy(run):
    cfg, result = run
    assert 0.0 <= result["accuracy"] <= 1.0
    doc = json.loads(Path(result["song"] and Path(result["run_dir"]) / "song_eval_test" / "results.json").read_text())
    assert doc["task"] == "single_label" and doc["tags"] == ["high", "low"]
    assert set(doc["results"]) == {"overlap=0/mean", "overlap=0/majority_vote"}
    assert "drop" not in doc["rule"] or "left out" in doc["rule"]
    per_class = doc["results"]["overlap=0/mean"]["per_tag"]
    assert set(per_class) == {"high", "low"} and all("accuracy" in v for v in per_class.values())
    # The run logged validation accuracy and stepped the plateau scheduler on val/loss.
    metrics = (Path(result["run_dir"]) / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/accuracy" in metrics and "val/loss" in metrics


def test_checkpoint_records_task_and_frozen_bn(run):
    cfg, result = run
    tagger, meta = load_tagger(result["best_checkpoint"])
    assert meta["task"] == "single_label" and meta["frozen_bn"] == "train" and meta["head"]["args"]["dropout"] == 0.3
    assert tagger.frozen_bn == "train" and all(not p.requires_grad for p in tagger.encoder.parameters())
    bn = tagger.encoder.blocks[0][1]
    # Random-init running statistics are 0 / 1; training with frozen_bn=train moved them.
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    tagger.train()
    assert tagger.encoder.training  # follows the tagger's mode (VCMR)


def test_one_hot_cross_entropy():
    logits = torch.randn(5, 3)
    target = torch.eye(3)[torch.tensor([0, 2, 1, 1, 0])]
    assert torch.allclose(OneHotCrossEntropy()(logits, target),
                          torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 1, 1, 0])))
