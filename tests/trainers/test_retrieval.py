"""The retrieval trainer end to end on a tiny builder output with a planted audio <-> video
correspondence: each recipe trains, beats chance on the validation videos, writes the
protocol results and an export that reproduces its embeddings."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from vcmr.config import CONFIG_DIR, ConfigError, load_config
from vcmr.data.feature_cache import feature_path, kind_dir
from vcmr.data.manifest import read_manifest
from vcmr.models.export import load_spec_model
from vcmr.trainers.retrieval import RECIPES, TrainRetrievalConfig, clip_starts, inbatch_recall, split_videos, train
from vcmr.utils import atomic_save_npy, atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from tiny import make_builder_output  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def plant_audio_caches(root: Path, cfg) -> None:
    """Cached music features that are a fixed random view of each video's planted colour, with
    the settings.json the extractors would write (so nothing is extracted)."""
    rng = np.random.default_rng(3)
    w_track, w_sec = rng.standard_normal((8, 20)), rng.standard_normal((8, 4))
    for kind in ("vmnet_audio", "clip_audio"):
        atomic_write_text(kind_dir(root, kind) / "settings.json",
                          json.dumps({"kind": kind, "settings": dict(cfg.features[kind])}))
    for rec in read_manifest(root):
        if rec.status != "ok":
            continue
        frames = np.load(root / rec.feature_path)
        atomic_save_npy(feature_path(root, "vmnet_audio", rec.video_id),
                        (frames.mean(0) @ w_track + 0.1 * rng.standard_normal(20)).astype(np.float32))
        atomic_save_npy(feature_path(root, "clip_audio", rec.video_id),
                        (frames @ w_sec + 0.1 * rng.standard_normal((len(frames), 4))).astype(np.float32))


def tiny_overrides(root: Path, out: Path, model: str, extra: List[str] = ()) -> List[str]:
    return [
        f"model={model}", f"data.root={root}", "data.val_fraction=0.3", "progress=false",
        "protocol.gallery_sizes=[4]", "protocol.n_galleries=2", "vmnet_protocol.batch_size=5",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "trainer.num_sanity_val_steps=0", "logger.name=csv",
        f"output.root={out}", "output.name=tiny_retrieval",
        "recipes.vmnet.audio_hidden=[32, 32]", "recipes.vmnet.video_hidden=[32]", "recipes.vmnet.embed_dim=16",
        "recipes.vmnet.video_transform.pca_dim=8", "recipes.vmnet.batch_size=8", "recipes.vmnet.top_q=4",
        "recipes.vmnet.structure_k=8", "recipes.vmnet.optim.lr=3e-3", "recipes.vmnet.trainer.max_epochs=40",
        *(f"recipes.{m}.{k}" for m in ("siamese", "regression") for k in (
            "clip_seconds=3", "train_hop=1", "eval_hop=3", "video_transform.pca_dim=4", "batch_size=8",
            "optim.lr=3e-3", "trainer.max_epochs=15")),
        "recipes.siamese.layers=[32, 16, 8]", "recipes.siamese.dropout=0.0", "recipes.siamese.l1=1e-5",
        "recipes.siamese.l2=1e-4", "recipes.regression.hidden=[32, 32, 16]",
        *extra,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_builder_output(tmp_path_factory.mktemp("retrieval") / "ds", n_videos=24)
    cfg = load_config(CONFIG_DIR / "train_retrieval.yaml", [f"data.root={root}"], TrainRetrievalConfig)
    plant_audio_caches(root, cfg)
    return root


@pytest.mark.parametrize("model,levels", [("vmnet", ["track"]),
                                          ("siamese", ["segment", "segment_to_track", "track"]),
                                          ("regression", ["segment", "segment_to_track", "track"])])
def test_recipe_learns_and_exports(data: Path, tmp_path: Path, model: str, levels: List[str]) -> None:
    cfg = load_config(CONFIG_DIR / "train_retrieval.yaml", tiny_overrides(data, tmp_path, model), TrainRetrievalConfig)
    result = train(cfg)
    assert list(result["protocol"]) == levels
    track = result["protocol"]["track"]["full"]
    n_val = track["n_items"]
    assert n_val >= 5
    assert track["a2v"]["R@1"] >= 2.5 * track["chance"]["R@1"], track
    assert track["a2v"]["median_rank"] < track["chance"]["median_rank"]
    vm = result["vmnet_protocol"]
    assert vm["batch_size"] == 5 and vm["chance"]["R@1"] == pytest.approx(0.2)
    report = json.loads(Path(result["results_json"]).read_text())
    assert report["model"] == model and report["protocol"]["levels"] == levels
    saved = load_config(Path(result["run_dir"]) / "config.yaml", [], TrainRetrievalConfig)
    assert saved.trainer.max_epochs == cfg.recipes[model].trainer.max_epochs  # the recipe's override ran
    exported = load_spec_model(result["export"])
    assert exported.meta["recipe"] == model and exported.spec["name"] == model
    assert set(exported.meta["features"]) >= {cfg.recipes[model].audio_features}
    assert exported.meta["deploy"]["audio"]["kind"] == cfg.recipes[model].audio_features
    assert exported.meta["deploy"]["video_input_dim"] == 8


def test_export_reproduces_the_evaluated_embeddings(data: Path, tmp_path: Path) -> None:
    from vcmr.trainers.retrieval import build_recipe, effective_config, RunContext

    cfg = effective_config(load_config(CONFIG_DIR / "train_retrieval.yaml",
                                       tiny_overrides(data, tmp_path, "vmnet", ["recipes.vmnet.trainer.max_epochs=3"]),
                                       TrainRetrievalConfig))
    records, train_ids, val_ids = split_videos(data, 0.3)
    recipe = build_recipe(cfg)
    result = recipe.run(RunContext(cfg, data, records, train_ids, val_ids, tmp_path / "run", None))
    model = load_spec_model(result.export)
    val = recipe.load_split(RunContext(cfg, data, records, train_ids, val_ids, tmp_path, None), val_ids, False)
    with torch.no_grad():
        za = model.encode_audio(torch.from_numpy(val.audio)).numpy()
    assert np.allclose(za, result.embedded.audio, atol=1e-6)
    assert result.embedded.track_ids == val_ids


def test_joint_recipe_evaluates_a_given_export(data: Path, tmp_path: Path) -> None:
    from tiny import stage2_overrides

    from vcmr.models.build import build_music_video_model
    from vcmr.models.export import save_model
    from vcmr.trainers.video import VideoPretrainConfig

    c2 = load_config(CONFIG_DIR / "vid_pretrain.yaml", stage2_overrides(data, tmp_path), VideoPretrainConfig)
    export = save_model(tmp_path / "joint.safetensors", build_music_video_model(c2.model, 16000, 729).eval(),
                        {"sample_rate": 16000})
    cfg = load_config(CONFIG_DIR / "train_retrieval.yaml",
                      tiny_overrides(data, tmp_path, "vcmr", [f"recipes.vcmr.export={export}", "recipes.vcmr.device=cpu"]),
                      TrainRetrievalConfig)
    result = train(cfg)
    assert list(result["protocol"]) == ["segment", "segment_to_track", "track"]
    assert result["protocol"]["segment"]["full"]["n_items"] == 3 * result["protocol"]["track"]["full"]["n_items"]
    assert result["export"] == str(export)


def test_inbatch_recall_matches_naive_loop() -> None:
    rng = np.random.default_rng(0)
    a, v = rng.standard_normal((23, 5)).astype(np.float32), rng.standard_normal((23, 5)).astype(np.float32)
    out = inbatch_recall(a, v, batch_size=10, ks=[1, 3], seed=4)
    order = np.random.default_rng(4).permutation(23)
    hits = {k: [] for k in (1, 3)}
    for b in range(2):  # two full batches; the last 3 pairs are dropped
        sel = order[b * 10 : (b + 1) * 10]
        an = a[sel] / np.linalg.norm(a[sel], axis=1, keepdims=True)
        vn = v[sel] / np.linalg.norm(v[sel], axis=1, keepdims=True)
        s = an @ vn.T
        for i in range(10):
            rank = sum(1 for j in range(10) if s[i, j] >= s[i, i])
            for k in hits:
                hits[k].append(rank <= k)
    assert out["n_batches"] == 2 and out["batch_size"] == 10
    for k in (1, 3):
        assert out["m2v"][f"R@{k}"] == pytest.approx(np.mean(hits[k]))
        assert out["chance"][f"R@{k}"] == pytest.approx(k / 10)


def test_config_errors_name_the_key(data: Path, tmp_path: Path) -> None:
    assert set(RECIPES) >= {"vmnet", "siamese", "regression", "vcmr"}
    with pytest.raises(ConfigError, match="model: unknown retrieval model 'vmnett'"):
        train(load_config(CONFIG_DIR / "train_retrieval.yaml", tiny_overrides(data, tmp_path, "vmnett"),
                          TrainRetrievalConfig))
    with pytest.raises(ConfigError, match="recipes.vmnet.keep_prb"):
        train(load_config(CONFIG_DIR / "train_retrieval.yaml",
                          tiny_overrides(data, tmp_path, "vmnet", ["recipes.vmnet.keep_prb=0.5"]), TrainRetrievalConfig))
    with pytest.raises(ConfigError, match="video_transform: pca_dim=512 exceeds"):
        train(load_config(CONFIG_DIR / "train_retrieval.yaml",
                          tiny_overrides(data, tmp_path, "vmnet", ["recipes.vmnet.video_transform.pca_dim=512"]),
                          TrainRetrievalConfig))
    assert clip_starts(7, 3, 2) == [0, 2, 4] and clip_starts(2, 3, 1) == []
    demo = load_config(CONFIG_DIR / "train_retrieval_demo.yaml", [], TrainRetrievalConfig)
    stage2 = load_config(CONFIG_DIR / "vid_pretrain_demo.yaml", [], None)
    # The demo library set's songs are the first of the stage-2 demo set's (same generator seed),
    # and its validation videos are validation videos of the stage-2 demo model too.
    lib, s2 = (dict(o.split("=", 1) for o in c.demo.cfg_overrides) for c in (demo, stage2))
    assert "demo.seed" not in lib and "demo.seed" not in s2
    assert int(lib["demo.n_videos"]) <= int(s2["demo.n_videos"]) and lib["audio.sample_rate"] == s2["audio.sample_rate"]
    assert demo.data.val_fraction <= stage2.data.val_fraction


def test_embedder_deploys_seed_models_from_their_exports(tmp_path: Path) -> None:
    """VM-NET and the clip matcher load in the Embedder and embed media through their feature front ends."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "retrieval"))
    from retrieval_media import FEAT_DIM, TINY_CLIP, colour_video, tone

    from vcmr.audio.handcrafted import LogMelSettings, VMNetAudioSettings, persecond_logmel, vmnet_track_features
    from vcmr.models.export import save_spec_model
    from vcmr.models.siamese import SiameseMatcher
    from vcmr.models.vmnet import VMNet
    from vcmr.retrieval.embedder import Embedder
    from vcmr.video.stats import video_level_stats_torch

    sr = 4000
    hc = {"sample_rate": sr, "duration": 2.0, "n_fft": 256, "hop_length": 128, "n_mels": 16, "n_mfcc": 8,
          "mfcc_n_fft": 512, "mfcc_n_mels": 20, "cens_octaves": 5, "top_db": 80.0}
    lm = {"sample_rate": sr, "window_seconds": 0.025, "hop_seconds": 0.01, "n_mels": 8, "fmin": 125.0,
          "fmax": 7500.0, "log_offset": 0.01}
    vm = VMNet(VMNetAudioSettings(**hc).dim, 7 * FEAT_DIM, [16, 16], [16], 8).eval()
    deploy = {"audio": {"kind": "vmnet_audio", "settings": hc}, "video": {"kind": "vmnet_video", "settings": {"top_k": 5}},
              "clip_seconds": None, "video_input_dim": FEAT_DIM}
    vm_file = save_spec_model(tmp_path / "vmnet.safetensors", vm, {"deploy": deploy, "frame_encoder": TINY_CLIP})
    sm = SiameseMatcher(2, 2 * lm["n_mels"], FEAT_DIM, layers=[16, 8], projection_dim=12).eval()
    deploy2 = {"audio": {"kind": "clip_audio", "settings": lm}, "video": {"kind": "frame_rows", "settings": {}},
               "clip_seconds": 2, "video_input_dim": FEAT_DIM}
    sm_file = save_spec_model(tmp_path / "siamese.safetensors", sm, {"deploy": deploy2, "frame_encoder": TINY_CLIP})
    song = tone(4.5, sr, [220, 330, 440, 550, 660])
    video = colour_video(tmp_path / "v.mp4", [0, 1, 2, 3, 4], audio=False)
    for file, model, audio_fn in (
        (vm_file, vm, lambda y: vmnet_track_features(y, VMNetAudioSettings(**hc))),
        (sm_file, sm, lambda y: persecond_logmel(y, LogMelSettings(**lm), 2)),
    ):
        emb = Embedder(file, progress=False)
        assert emb.sample_rate == sr and emb.input_length == 2 * sr and emb.video_context == 2
        a = emb.embed_audio(song, sample_rate=sr)
        first = torch.from_numpy(audio_fn(song[: 2 * sr])[None])
        with torch.no_grad():
            assert np.allclose(a.windows[0], model.encode_audio(first).numpy(), atol=1e-5)
        v = emb.embed_video(video)
        rows = torch.from_numpy(v.features[None, :2])
        with torch.no_grad():
            ref = model.encode_video(video_level_stats_torch(rows, 5) if model is vm else rows)
        assert np.allclose(v.clips[0], ref.numpy(), atol=1e-5)
    with pytest.raises(Exception, match="no 'deploy' settings"):
        save_spec_model(tmp_path / "bare.safetensors", vm, {})
        Embedder(tmp_path / "bare.safetensors", progress=False)
