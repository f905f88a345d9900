"""Stage 3 end to end on the demo tagging set: fine-tuning learns the planted tags, a
randomly initialised frozen encoder with a linear head does clearly worse, exports and
checkpoints round-trip, and the evaluation script scores a run."""

import json
from pathlib import Path

import pytest
import torch

import vcmr
from vcmr.config import CONFIG_DIR, load_config
from vcmr.models.heads import LinearHead, MLPHead
from vcmr.scripts.evaluation import run as evaluation_main
from vcmr.scripts.supervised import run as supervised_main
from vcmr.models.tagger import build_tagger, load_tagger
from vcmr.trainers.supervised import SupervisedConfig, SupervisedTagging

# Drums and tempo at 4 kHz with 1.64 s windows: learnable by a tiny SampleCNN in ~100 steps.
TINY = [
    "data.sample_rate=4000",
    "data.demo.duration=4.0",
    "data.demo.n_train=128",
    "data.demo.n_valid=32",
    "data.demo.n_test=40",
    "data.demo.categories=[drums,tempo]",
    "data.loader.num_workers=0",
    "data.loader.persistent_workers=false",
    "data.loader.prefetch_factor=null",
    "model.audio_encoder.args.input_length=6561",
    "model.audio_encoder.args.n_blocks=7",
    "model.audio_encoder.args.channels=[16,16,32,32,32,64,64]",
    "optim.lr=5e-3",
    "model.encoder_lr=5e-3",
    "trainer.max_epochs=10",
    "callbacks.early_stopping.patience=12",
    "evaluation.chart=false",
    "logger.name=csv",
    "trainer.enable_progress_bar=false",
]


def _overrides(out_root: Path, *extra: str):
    return [f"output.root={out_root}", *TINY, *extra]


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    return tmp_path_factory.mktemp("supervised_runs")


@pytest.fixture(scope="module")
def finetune(out_root):
    return supervised_main(["--config", "supervised_demo.yaml", *_overrides(out_root, "model.mode=finetune")])


def test_finetune_learns_planted_tags(finetune):
    assert finetune["roc_auc"] >= 0.9, finetune["song"]
    assert set(finetune["song"]) == {"overlap=0/mean", "overlap=0/max", "overlap=0.5/mean", "overlap=0.5/max"}
    run = Path(finetune["run_dir"])
    assert (run / "config.yaml").is_file() and (run / "scores.json").is_file()
    assert json.loads((run / "scores.json").read_text())["roc_auc"] == pytest.approx(finetune["roc_auc"])
    doc = json.loads((run / "song_eval_test" / "results.json").read_text())
    assert set(doc["results"]["overlap=0/mean"]["groups"]) == {"drums", "tempo"}
    assert doc["data_sha256"] and doc["checkpoint"] == finetune["best_checkpoint"]
    assert Path(finetune["best_checkpoint"]).name.startswith("best-")


def test_random_frozen_linear_scores_clearly_lower(finetune, out_root):
    rand = supervised_main(["--config", "supervised_demo.yaml",
                            *_overrides(out_root, "model.mode=linear", "model.audio_init=scratch", "trainer.max_epochs=2",
                                            "evaluation.overlaps=[0.0]", "evaluation.aggregations=[mean]")])
    assert rand["roc_auc"] <= finetune["roc_auc"] - 0.15, (rand["roc_auc"], finetune["roc_auc"])


def test_export_and_checkpoint_round_trip(finetune):
    tagger, meta = load_tagger(finetune["run_dir"])  # a run folder resolves to its best checkpoint
    assert meta["mode"] == "finetune" and meta["tags"][0].startswith("drums---") and meta["sample_rate"] == 4000
    assert isinstance(tagger.head, MLPHead) and not tagger.training
    encoder = vcmr.load_encoder(finetune["encoder_export"])
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, tagger.encoder.state_dict()[k])
    x = torch.randn(3, 1, 6561)
    with torch.no_grad():
        torch.testing.assert_close(tagger.head(encoder(x)), tagger(x))


def test_linear_probe_on_export_keeps_encoder_frozen(finetune, out_root):
    res = supervised_main(["--config", "supervised_demo.yaml",
                           *_overrides(out_root, "model.mode=linear", f"model.audio_init={finetune['encoder_export']}",
                                       "trainer.max_epochs=2", "optim.lr=1e-2",
                                       "evaluation.overlaps=[0.0]", "evaluation.aggregations=[mean]")])
    tagger, meta = load_tagger(res["best_checkpoint"])
    assert meta["mode"] == "linear" and isinstance(tagger.head, LinearHead)
    before = vcmr.load_encoder(finetune["encoder_export"]).state_dict()
    for k, v in tagger.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])  # weights and BN statistics untouched
    assert res["roc_auc"] >= 0.85  # the fine-tuned features transfer to a linear probe


def test_evaluation_script_on_a_run(finetune, tmp_path):
    out = tmp_path / "eval"
    res = evaluation_main(["--config", "evaluation.yaml", f"checkpoint={finetune['run_dir']}", "data.subset=test",
                           f"output_dir={out}", "evaluation.device=cpu", "evaluation.overlaps=[0.0]",
                           "evaluation.aggregations=[mean]", *[o for o in TINY if o.startswith("data.demo") or
                                                               o.startswith("data.sample_rate")]])
    assert res["roc_auc"] == pytest.approx(finetune["roc_auc"], abs=1e-6)  # same checkpoint, same data
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["checkpoint"]["sha256"]) == 64 and doc["training_config"]["sha256"]
    assert (out / "per_tag.png").is_file() and (out / "per_tag.tsv").is_file()


def _tiny_cfg(*extra):
    return load_config(CONFIG_DIR / "supervised_demo.yaml", [*TINY, *extra], SupervisedConfig)


def test_build_tagger_modes_and_errors(tmp_path):
    cfg = _tiny_cfg()
    for mode, head_type, frozen in (("linear", LinearHead, True), ("mlp", MLPHead, True), ("finetune", MLPHead, False)):
        tagger, meta = build_tagger({**cfg.model, "mode": mode}, 6, 4000)
        assert isinstance(tagger.head, head_type) and tagger.freeze_encoder is frozen
        assert all(p.requires_grad is not frozen for p in tagger.encoder.parameters())
        tagger.train()
        assert tagger.encoder.training is not frozen  # frozen encoders stay in eval mode
        assert tagger(torch.randn(2, 1, 6561)).shape == (2, 6)
    mlp = build_tagger({**cfg.model, "mode": "mlp"}, 6, 4000)[0].head.net
    assert [type(m).__name__ for m in mlp] == ["Dropout", "Linear", "ReLU", "Linear"]
    assert mlp[1].out_features == cfg.model.heads.mlp.hidden_dim
    with pytest.raises(ValueError, match="model.mode"):
        build_tagger({**cfg.model, "mode": "probe"}, 6, 4000)
    # An export records its sample rate; a mismatch with the data is refused.
    tagger, meta = build_tagger({**cfg.model, "mode": "linear"}, 6, 4000)
    path = vcmr.save_encoder(tmp_path / "enc.safetensors", tagger.encoder, "samplecnn", meta["encoder"]["args"],
                             extra={"sample_rate": 16000})
    with pytest.raises(ValueError, match="16000 Hz"):
        build_tagger({**cfg.model, "mode": "linear", "audio_init": str(path)}, 6, 4000)


def test_finetune_optimizer_has_separate_encoder_lr():
    cfg = _tiny_cfg("model.encoder_lr=1e-4", "optim.lr=2e-3")
    tagger, meta = build_tagger({**cfg.model, "mode": "finetune"}, 6, 4000)
    module = SupervisedTagging(tagger, torch.nn.BCEWithLogitsLoss(), dict(cfg.optim), 1e-4, meta, list("abcdef"))

    class _T:  # what configure_optimizers reads from the trainer
        estimated_stepping_batches = 10

    module._trainer = _T()
    opt = module.configure_optimizers()["optimizer"]
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [1e-4, 2e-3]
    n_enc = sum(p.numel() for p in tagger.encoder.parameters())
    assert sum(p.numel() for g in opt.param_groups if g["lr"] == 1e-4 for p in g["params"]) == n_enc
