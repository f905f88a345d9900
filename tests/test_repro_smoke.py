"""Smoke runs of every published recipe in config/repro/ on generated data (CPU, a few steps).

Each recipe runs through the entry point its script calls, with the recipe's own model, loss,
augmentation chain, optimiser, schedule and evaluation rules; only the hardware (CPU, fp32,
one device), the batch size, the length of training and the data change. Stage 2 starts from
the stage-1 smoke export and VCMR's stage 3 from the stage-2 one; CLMR's linear evaluations
start from the CLMR pretraining export, as the recipes chain on real data.

The stage-3 recipes read their own dataset formats (MagnaTagATune pons2017, MTG-Jamendo
moodtheme split-0, GTZAN fault-filtered lists), written here over generated demo songs whose
planted attributes are mapped onto tags of each vocabulary.

    make test-repro         # python -m pytest -q -m repro
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import pytest
import torch
import yaml

import vcmr
from vcmr.config import CONFIG_DIR, load_config
from vcmr.data.tagging.annotations import GTZAN_GENRES, PONS2017_TAGS, parse_mtg_jamendo
from vcmr.demo import music as demo_music
from vcmr.demo import tagging as demo_tagging
from vcmr.demo import videos as demo_videos
from vcmr.losses import CrossModalNTXent, NTXentLoss
from vcmr.models.heads import LinearHead, MLPHead
from vcmr.models.tagger import load_tagger
from vcmr.trainers import music, supervised, video
from vcmr.trainers.supervised import OneHotCrossEntropy, SupervisedConfig

pytestmark = [pytest.mark.slow, pytest.mark.repro]

REPRO = CONFIG_DIR / "repro"
# augment/clmr_exact.yaml: the transforms CLMR's chain applies, in order, with its probabilities.
CLMR_CHAIN = {"polarity": 0.8, "noise_std": 0.01, "gain": 0.3, "filter_sinc": 0.8, "delay_mix": 0.3,
              "pitch_cents": 0.6, "reverb_sox": 0.6}


def smoke(runs: Path) -> List[str]:
    """The hardware and logging overrides of every smoke run (docs/reproduction.md)."""
    return [
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto", "trainer.precision=32-true",
        "trainer.num_sanity_val_steps=0", "data.loader.batch_size=4", "data.loader.num_workers=0",
        "data.loader.persistent_workers=false", "data.loader.prefetch_factor=null", "logger.name=csv",
        f"output.root={runs}",
    ]


# Generated tagging sets (vcmr.demo.tagging): small, a few seconds per song.
TAGGING_SONGS = {"n_train": 8, "n_valid": 8, "n_test": 8, "seed": 0, "categories": ["timbre", "drums", "tempo"],
                 "tempo_slow": [70.0, 95.0], "tempo_fast": [135.0, 160.0]}
# Planted demo attributes -> MagnaTagATune (pons2017) tag names, MTG-Jamendo mood/theme tags, GTZAN genres.
MTAT_OF_DEMO = {
    "timbre---sine": "ambient", "timbre---square": "synth", "timbre---saw": "electronic", "timbre---pluck": "guitar",
    "timbre---organ": "classical", "drums---none": "quiet", "drums---rock": "rock", "drums---four_on_floor": "dance",
    "drums---breakbeat": "beats", "tempo---slow": "slow", "tempo---fast": "fast",
}
MOOD_OF_DEMO = {"tempo---slow": "mood/theme---calm", "tempo---fast": "mood/theme---energetic",
                "drums---none": "mood/theme---relaxing", "drums---rock": "mood/theme---powerful",
                "drums---four_on_floor": "mood/theme---party", "drums---breakbeat": "mood/theme---groovy"}
GENRE_OF_TIMBRE = {"sine": "classical", "square": "pop", "saw": "metal", "pluck": "country", "organ": "jazz"}


# --------------------------------------------------------------------------------------
# Shared state: a private cache, one runs folder, spies on the trainers' fit()
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """A private ``VCMR_CACHE`` for the module (never the user's), the runs folder, and a
    spy recording the LightningModule and Trainer that each trainer's ``fit`` received."""
    fitted: Dict[str, Any] = {}
    cache = tmp_path_factory.mktemp("repro_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VCMR_CACHE", str(cache))
        for trainer_module in (music, video, supervised):
            original = trainer_module.fit

            def spy(cfg, module, datamodule, run_dir, ckpt_path, *args, _fit=original, **kwargs):
                trainer = _fit(cfg, module, datamodule, run_dir, ckpt_path, *args, **kwargs)
                fitted[str(cfg.output.name)] = {"module": module, "trainer": trainer}
                return trainer

            mp.setattr(trainer_module, "fit", spy)
        yield {"cache": cache, "runs": tmp_path_factory.mktemp("repro_runs"), "fitted": fitted}


def logged_losses(run_dir: Path, key: str) -> List[float]:
    """Every value of ``key`` in the CSV logger's ``metrics.csv``."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    assert path.is_file(), f"{path} not written"
    with open(path, newline="") as fh:
        return [float(row[key]) for row in csv.DictReader(fh) if row.get(key)]


def saved_config(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    assert path.is_file(), f"{path} not written"
    return yaml.safe_load(path.read_text())


def check_optimizer(trainer, cls, lr: float, weight_decay: float) -> None:
    (opt,) = trainer.optimizers
    assert type(opt) is cls
    assert all(g["weight_decay"] == weight_decay for g in opt.param_groups)
    assert max(g.get("initial_lr", g["lr"]) for g in opt.param_groups) == pytest.approx(lr)


def check_finite_losses(run_dir: Path, keys: Sequence[str]) -> None:
    for key in keys:
        values = logged_losses(run_dir, key)
        assert values and all(math.isfinite(v) for v in values), (key, values)


# --------------------------------------------------------------------------------------
# Stage 1 and 2 runs (module-scoped: later stages start from their exports)
# --------------------------------------------------------------------------------------


def run_stage1(env: Dict[str, Any], name: str, extra: Sequence[str]) -> Dict[str, Any]:
    overrides = ["data.root=demo", "data.index_workers=1", "trainer.max_steps=2", *extra, *smoke(env["runs"])]
    cfg = load_config(REPRO / name, overrides, music.MusicPretrainConfig)
    return music.train(demo_music.prepare(cfg))


@pytest.fixture(scope="module")
def vcmr_stage1(env):
    return run_stage1(env, "vcmr_stage1.yaml", ["demo.n_songs=8"])


@pytest.fixture(scope="module")
def clmr_pretrain(env):
    return run_stage1(env, "clmr_pretrain.yaml", ["demo.n_songs=8"])


@pytest.fixture(scope="module")
def vcmr_stage2(env, vcmr_stage1):
    overrides = [
        "data.root=demo", "data.val_fraction=0.3",
        "demo.cfg_overrides=[demo.n_videos=12,audio.segment_seconds=10.0,audio.n_segments=2]",
        f"model.audio_init={vcmr_stage1['export']}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        *smoke(env["runs"]),
    ]
    cfg = load_config(REPRO / "vcmr_stage2.yaml", overrides, video.VideoPretrainConfig)
    return video.train(demo_videos.prepare(cfg))


def check_stage1(env, result, name: str, opt_cls, weight_decay: float, temperature: float, out_dim: int,
                 sample_rate: int, input_length: int) -> None:
    run_dir = Path(result["run_dir"])
    check_finite_losses(run_dir, ["train/loss_epoch", "val/loss"])
    assert math.isfinite(result["metrics"]["val/loss"]) and "val/view_top1" in result["metrics"]
    fitted = env["fitted"][name]
    module, trainer = fitted["module"], fitted["trainer"]
    assert trainer.global_step == 2
    assert type(module.loss) is NTXentLoss and module.loss.temperature == temperature and not module.loss.gather
    assert {k: t.p for k, t in module.augment.transforms.items()} == CLMR_CHAIN  # dict order: the chain's
    assert list(module.augment.transforms) == list(CLMR_CHAIN) and module.augment.transforms["pitch_cents"].method == "wsola"
    sizes = [tuple(m.weight.shape) for m in module.projector.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(512, 512), (out_dim, 512)]
    check_optimizer(trainer, opt_cls, 3e-4, weight_decay)
    cfg = saved_config(run_dir)
    assert cfg["optim"]["name"] == opt_cls.__name__.lower() and cfg["optim"]["weight_decay"] == weight_decay
    assert cfg["optim"]["schedule"] == "constant" and cfg["data"]["sample_rate"] == sample_rate
    assert Path(cfg["data"]["root"]).is_relative_to(env["cache"])  # generated in the private cache
    assert Path(result["checkpoint"]).is_file() and Path(result["last_checkpoint"]).is_file()
    encoder = vcmr.load_encoder(result["export"])
    assert encoder.input_length == input_length
    with torch.no_grad():
        z = encoder(torch.randn(2, 1, input_length))
    assert z.shape == (2, 512) and torch.isfinite(z).all()


def test_vcmr_stage1(env, vcmr_stage1):
    check_stage1(env, vcmr_stage1, "repro_vcmr_stage1", torch.optim.AdamW, 0.01, 0.1, 128, 16000, 98415)


def test_clmr_pretrain(env, clmr_pretrain):
    check_stage1(env, clmr_pretrain, "repro_clmr_pretrain", torch.optim.Adam, 0.0, 0.5, 64, 22050, 59049)


def test_vcmr_stage2(env, vcmr_stage1, vcmr_stage2):
    run_dir = Path(vcmr_stage2["run_dir"])
    check_finite_losses(run_dir, ["train/loss_epoch", "train/loss_cross_modal_epoch"])
    fitted = env["fitted"]["repro_vcmr_stage2"]
    module, trainer = fitted["module"], fitted["trainer"]
    assert trainer.global_step == 2
    assert type(module.loss.cross_modal) is CrossModalNTXent and module.loss.cross_modal.temperature == 0.1
    assert not any(p.requires_grad for p in module.loss.parameters())  # fixed temperature
    assert len(module.augment.transforms) == 0
    check_optimizer(trainer, torch.optim.AdamW, 5e-4, 0.01)
    enc = module.model.audio_encoder
    assert [any(p.requires_grad for p in b.parameters()) for b in enc.blocks][:5] == [False] * 4 + [True]
    metrics = vcmr_stage2["metrics"]
    assert {"val/a2v/R@1", "val/v2a/R@1", "val/chance/R@1"} <= set(metrics)
    model = vcmr.load_model(vcmr_stage2["exports"]["model"])
    assert model.spec["video_encoder"]["name"] == "lstm_flatten" and model.input_length == 98415
    assert model.meta["sample_rate"] == 16000 and model.embed_dim == 128
    with torch.no_grad():
        za = model.encode_audio(torch.randn(2, 1, model.input_length))
        zv = model.encode_video(torch.randn(2, 6, model.video_input_dim))
    assert za.shape == zv.shape == (2, 128) and torch.allclose(za.norm(dim=1), torch.ones(2), atol=1e-5)
    assert Path(vcmr_stage2["checkpoint"]).is_file()
    # Stage 1's export was the starting point: the 4 frozen blocks keep its weights, the rest trained.
    start = dict(vcmr.load_encoder(vcmr_stage1["export"]).named_parameters())
    end = vcmr.load_encoder(vcmr_stage2["exports"]["audio_encoder"])
    assert end.input_length == 98415
    same = [all(torch.equal(p, start[f"blocks.{i}.{k}"]) for k, p in b.named_parameters()) for i, b in enumerate(end.blocks)]
    assert same[:5] == [True] * 4 + [False], same
    cfg = saved_config(run_dir)
    assert cfg["loss"]["name"] == "cross_modal_ntxent" and cfg["model"]["frozen_bn"] == "train"
    assert Path(cfg["data"]["root"]).is_relative_to(env["cache"])


# --------------------------------------------------------------------------------------
# Stage 3: the recipes' own dataset formats over generated songs
# --------------------------------------------------------------------------------------


def demo_songs(root: Path, sample_rate: int, duration: float):
    """The generated tagging songs at ``sample_rate`` (``root/demo_tagging/<hash>``) and their index."""
    folder = demo_tagging.ensure_demo_dataset({**TAGGING_SONGS, "duration": duration}, sample_rate, root=root)
    return folder, parse_mtg_jamendo(folder, demo_tagging.SPLIT, demo_tagging.TAGSET)


def write_mtat(out: Path, index) -> Path:
    """MagnaTagATune pons2017 files (``index_mtt.tsv``, ``{train,val,test}_gt_mtt.tsv``)."""
    out.mkdir(parents=True, exist_ok=True)
    col = {t: j for j, t in enumerate(PONS2017_TAGS)}
    index_lines, files = [], {"train": "train_gt_mtt.tsv", "valid": "val_gt_mtt.tsv", "test": "test_gt_mtt.tsv"}
    for split, fname in files.items():
        lines = []
        for k, track in enumerate(index.splits[split]):
            clip_id = f"{split}{k}"
            index_lines.append(f"{clip_id}\t{track.path}")
            y = [0.0] * len(PONS2017_TAGS)
            for j in track.labels.nonzero()[0]:
                y[col[MTAT_OF_DEMO[index.tags[j]]]] = 1.0
            lines.append(f"{clip_id}\t[{', '.join(str(v) for v in y)}]")
        (out / fname).write_text("\n".join(lines) + "\n")
    (out / "index_mtt.tsv").write_text("\n".join(index_lines) + "\n")
    return out


def mood_tags(index, track) -> List[str]:
    return sorted({MOOD_OF_DEMO[index.tags[j]] for j in track.labels.nonzero()[0] if index.tags[j] in MOOD_OF_DEMO})


def write_mtg_moodtheme(out: Path, index) -> Path:
    """MTG-Jamendo ``data/splits/split-0/autotagging_moodtheme-*.tsv`` with mood/theme tags."""
    folder = out / "data" / "splits" / "split-0"
    folder.mkdir(parents=True, exist_ok=True)
    for split, fname in (("train", "train"), ("valid", "validation"), ("test", "test")):
        rows = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
        for k, track in enumerate(index.splits[split]):
            tags = "\t".join(mood_tags(index, track))
            rows.append(f"track_{split}{k}\tartist_{k}\talbum_{k}\t{track.path}\t8.0\t{tags}")
        (folder / f"autotagging_moodtheme-{fname}.tsv").write_text("\n".join(rows) + "\n")
    return out


def write_gtzan(out: Path, songs: Path, index) -> Path:
    """GTZAN fault-filtered lists (``{train,valid,test}_filtered.txt``) and a ``genres/`` folder
    of ``<genre>/<genre>.<nnnnn>.wav`` links to the songs; the genre follows the timbre."""
    genres = out / "genres"
    n = 0
    for split in ("train", "valid", "test"):
        lines = []
        for track in index.splits[split]:
            timbre = next(index.tags[j] for j in track.labels.nonzero()[0] if index.tags[j].startswith("timbre---"))
            genre = GENRE_OF_TIMBRE[timbre.split("---", 1)[1]]
            rel = f"{genre}/{genre}.{n:05d}.wav"
            (genres / genre).mkdir(parents=True, exist_ok=True)
            (genres / rel).symlink_to(songs / "audio" / track.path)
            lines.append(rel)
            n += 1
        (out / f"{split}_filtered.txt").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def tagging_data(tmp_path_factory) -> Dict[str, List[str]]:
    """Data overrides of each stage-3 recipe: its own format, over generated songs; and the
    MTG-Jamendo vocabulary (the mood/theme tags of the train file, sorted)."""
    root = tmp_path_factory.mktemp("repro_tagging")
    songs16, index16 = demo_songs(root, 16000, 8.0)   # VCMR: 98,415-sample windows at 16 kHz
    songs22, index22 = demo_songs(root, 22050, 4.0)   # CLMR: 59,049-sample windows at 22.05 kHz
    return {
        "mtg_vocabulary": sorted({t for track in index16.splits["train"] for t in mood_tags(index16, track)}),
        "vcmr_mtat.yaml": [f"data.root={write_mtat(root / 'mtat16', index16)}", f"data.audio_root={songs16 / 'audio'}"],
        "vcmr_mtg_moodtheme.yaml": [f"data.root={write_mtg_moodtheme(root / 'mtg', index16)}",
                                    f"data.audio_root={songs16 / 'audio'}"],
        "clmr_linear_mtat.yaml": [f"data.root={write_mtat(root / 'mtat22', index22)}", f"data.audio_root={songs22 / 'audio'}"],
        "clmr_linear_gtzan.yaml": [f"data.root={write_gtzan(root / 'gtzan', songs22, index22)}",
                                   f"data.audio_root={root / 'gtzan' / 'genres'}"],
    }


def run_stage3(env, data: List[str], name: str, audio_init: str) -> Dict[str, Any]:
    overrides = [*data, f"model.audio_init={audio_init}", "evaluation.device=cpu", "evaluation.chart=false",
                 "trainer.max_epochs=1", *smoke(env["runs"])]
    cfg = load_config(REPRO / name, overrides, SupervisedConfig)
    return supervised.train(demo_tagging.prepare(cfg))


def check_stage3(env, result, name: str, opt_cls, head_cls, n_out: int, loss_cls, settings: Sequence[str],
                 groups: Sequence[str]) -> Dict[str, Any]:
    """What every stage-3 recipe shares (plateau schedule and early stopping on val/loss, lr 1e-3,
    weight decay 1e-6, song-level windows with the last partial one dropped) and what it names."""
    run_dir = Path(result["run_dir"])
    check_finite_losses(run_dir, ["train/loss_epoch", "val/loss", "val/roc_auc", "val/pr_auc"])
    fitted = env["fitted"][name]
    module, trainer = fitted["module"], fitted["trainer"]
    assert trainer.current_epoch == 1 and trainer.global_step > 0
    assert type(module.loss) is loss_cls
    check_optimizer(trainer, opt_cls, 1e-3, 1e-6)
    (sched,) = trainer.lr_scheduler_configs
    plateau = sched.scheduler
    assert type(plateau) is torch.optim.lr_scheduler.ReduceLROnPlateau and sched.monitor == "val/loss"
    assert (plateau.mode, plateau.factor, plateau.patience, plateau.threshold) == ("min", 0.1, 5, 1e-4)
    stop = trainer.early_stopping_callback
    assert stop is not None and (stop.monitor, stop.patience) == ("val/loss", 10)
    assert Path(result["best_checkpoint"]).is_file()
    tagger, meta = load_tagger(result["best_checkpoint"])
    assert isinstance(tagger.head, head_cls) and len(meta["tags"]) == n_out
    vcmr_recipe = name.startswith("repro_vcmr")
    assert tagger.frozen_bn == ("train" if vcmr_recipe else "eval") and meta["mode"] == ("mlp" if vcmr_recipe else "linear")
    if vcmr_recipe:
        assert tagger.head.net[0].p == 0.3
    assert saved_config(run_dir)["data"]["val_crop"] == "random"
    with torch.no_grad():
        out = tagger(torch.randn(2, 1, tagger.input_length))
    assert out.shape == (2, n_out) and torch.isfinite(out).all()
    assert vcmr.load_encoder(result["encoder_export"]).input_length == tagger.input_length
    assert math.isfinite(result["roc_auc"]) and math.isfinite(result["pr_auc"])
    report = json.loads((run_dir / "song_eval_test" / "results.json").read_text())
    assert {"checkpoint", "subset", "data_sha256", "results", "primary", "tags", "n_tracks", "rule", "task"} <= set(report)
    assert report["subset"] == "test" and report["checkpoint"] == result["best_checkpoint"] and report["n_tracks"] == 8
    assert list(report["results"]) == list(settings) and report["primary"] == settings[0]
    assert "remainder shorter than a window is left out" in report["rule"]  # last_window: drop
    block = report["results"][settings[0]]
    assert block["overall"]["roc_auc"] == pytest.approx(result["roc_auc"])
    assert set(block.get("groups") or {}) == set(groups)
    assert json.loads((run_dir / "scores.json").read_text())["roc_auc"] == result["roc_auc"]
    return report


def test_vcmr_mtat(env, vcmr_stage2, tagging_data):
    name = "vcmr_mtat.yaml"
    r = run_stage3(env, tagging_data[name], name, vcmr_stage2["exports"]["audio_encoder"])
    report = check_stage3(env, r, "repro_vcmr_mtat", torch.optim.AdamW, MLPHead, 50, torch.nn.BCEWithLogitsLoss,
                          ["overlap=0.5/mean", "overlap=0.5/max", "overlap=0.5/majority_vote"],
                          ["genre", "mood", "instrument", "vocals", "other"])  # tag_groups/mtat_vcmr.yaml
    assert report["task"] == "multilabel" and report["tags"] == list(PONS2017_TAGS)


def test_vcmr_mtg_moodtheme(env, vcmr_stage2, tagging_data):
    name = "vcmr_mtg_moodtheme.yaml"
    r = run_stage3(env, tagging_data[name], name, vcmr_stage2["exports"]["audio_encoder"])
    vocabulary = tagging_data["mtg_vocabulary"]
    report = check_stage3(env, r, "repro_vcmr_mtg_moodtheme", torch.optim.AdamW, MLPHead, len(vocabulary),
                          torch.nn.BCEWithLogitsLoss, ["overlap=0.5/mean", "overlap=0.5/max", "overlap=0.5/majority_vote"], [])
    assert report["task"] == "multilabel" and report["tags"] == vocabulary and len(vocabulary) >= 3


def test_clmr_linear_mtat(env, clmr_pretrain, tagging_data):
    name = "clmr_linear_mtat.yaml"
    r = run_stage3(env, tagging_data[name], name, clmr_pretrain["export"])
    report = check_stage3(env, r, "repro_clmr_linear_mtat", torch.optim.Adam, LinearHead, 50, torch.nn.BCEWithLogitsLoss,
                          ["overlap=0/mean"], ["genre", "instrument", "mood", "vocals"])  # tag_groups/mtat.yaml
    assert report["task"] == "multilabel" and report["input_length"] == 59049


def test_clmr_linear_gtzan(env, clmr_pretrain, tagging_data):
    name = "clmr_linear_gtzan.yaml"
    r = run_stage3(env, tagging_data[name], name, clmr_pretrain["export"])
    report = check_stage3(env, r, "repro_clmr_linear_gtzan", torch.optim.Adam, LinearHead, len(GTZAN_GENRES),
                          OneHotCrossEntropy, ["overlap=0/mean"], [])
    assert report["task"] == "single_label" and report["tags"] == list(GTZAN_GENRES)
    overall = report["results"]["overlap=0/mean"]["overall"]
    assert 0.0 <= r["accuracy"] <= 1.0 and overall["accuracy"] == pytest.approx(r["accuracy"])
    check_finite_losses(Path(r["run_dir"]), ["val/accuracy"])
