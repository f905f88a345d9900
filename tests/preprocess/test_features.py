"""Per-video feature extraction: documented shapes, the cache (resumable, settings-checked,
failures recorded with a reason), the fitted transform and the learned-feature extractor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vcmr.config import CONFIG_DIR, load_config
from vcmr.data.feature_cache import FeatureCacheError, FeatureTransform, feature_path, load_features, read_failures
from vcmr.data.manifest import VideoRecord, read_manifest, write_manifest
from vcmr.preprocess.features import (
    EXTRACTORS,
    ExtractFeaturesConfig,
    build_extractor,
    extract_features,
    parse_kinds,
    run,
)
from vcmr.video.stats import video_level_stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "trainers"))
from tiny import make_builder_output, stage2_overrides  # noqa: E402

AUDIO = {"sample_rate": 8000, "duration": 6.0, "n_fft": 512, "hop_length": 256, "n_mels": 24, "n_mfcc": 10,
         "mfcc_n_fft": 1024, "mfcc_n_mels": 32, "cens_octaves": 6, "top_db": 80.0}
LOGMEL = {"sample_rate": 8000, "window_seconds": 0.025, "hop_seconds": 0.01, "n_mels": 16, "fmin": 125.0,
          "fmax": 7500.0, "log_offset": 0.01}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models run fastest on one thread on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_builder_output(tmp_path / "ds", n_videos=4)


def test_vmnet_video_cache_resume_and_settings_check(dataset: Path) -> None:
    s = extract_features(dataset, "vmnet_video", {"top_k": 5}, progress=False)
    assert (s.done, s.skipped, s.failures) == (4, 0, {})
    for rec in read_manifest(dataset):
        if rec.status == "ok":
            arr = np.load(feature_path(dataset, "vmnet_video", rec.video_id))
            assert arr.shape == (7 * 8,)
            assert np.array_equal(arr, video_level_stats(np.load(dataset / rec.feature_path), 5))
    settings = json.loads((dataset / "feature_cache" / "vmnet_video" / "settings.json").read_text())
    assert settings == {"kind": "vmnet_video", "settings": {"top_k": 5}}
    again = extract_features(dataset, "vmnet_video", {"top_k": 5}, progress=False)
    assert (again.done, again.skipped) == (0, 4)
    with pytest.raises(FeatureCacheError, match="top_k: 5 -> 3.*overwrite=true"):
        extract_features(dataset, "vmnet_video", {"top_k": 3}, progress=False)
    with pytest.raises(FeatureCacheError, match="top_k"):
        load_features(dataset, "vmnet_video", ["vid000"], settings={"top_k": 3})
    redo = extract_features(dataset, "vmnet_video", {"top_k": 3}, overwrite=True, progress=False)
    assert redo.done == 4 and load_features(dataset, "vmnet_video", ["vid001"])["vid001"].shape == (5 * 8,)
    assert not list((dataset / "feature_cache" / "vmnet_video").glob(".tmp*"))


def test_clip_audio_rows_follow_the_feature_rows(dataset: Path) -> None:
    extract_features(dataset, "clip_audio", LOGMEL, progress=False, video_ids=["vid000"])
    arr = load_features(dataset, "clip_audio", ["vid000"])["vid000"]
    assert arr.shape == (6, 32)  # 6 feature rows (seconds) x (mean, std) of 16 bands
    with pytest.raises(FeatureCacheError, match="vid001.*extract_features"):
        load_features(dataset, "clip_audio", ["vid001"])


def test_unreadable_audio_is_recorded_and_retried(dataset: Path) -> None:
    records = read_manifest(dataset)
    bad = dataset / "audio" / "vid001" / "vid001_01.wav"
    good = bad.read_bytes()
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnothing")
    s = extract_features(dataset, "vmnet_audio", AUDIO, progress=False, video_ids=["vid000", "vid001"])
    assert s.done == 1 and list(s.failures) == ["vid001"]
    assert "AudioDecodeError" in s.failures["vid001"] and "vid001_01.wav" in s.failures["vid001"]
    assert read_failures(dataset, "vmnet_audio") == s.failures
    with pytest.raises(FeatureCacheError, match="last extraction failed: AudioDecodeError"):
        load_features(dataset, "vmnet_audio", ["vid001"])
    arr = load_features(dataset, "vmnet_audio", ["vid000"])["vid000"]
    dim = 6 * (34 + AUDIO["n_mels"] + 3 * AUDIO["n_mfcc"])  # 34 rows of fixed size per source
    assert arr.shape == (dim,) and np.isfinite(arr).all()
    bad.write_bytes(good)
    retry = extract_features(dataset, "vmnet_audio", AUDIO, progress=False, video_ids=["vid000", "vid001"])
    assert (retry.done, retry.skipped, retry.failures) == (1, 1, {})
    assert len(records) == 5


def test_stage2_audio_is_the_mean_of_window_embeddings(dataset: Path, tmp_path: Path) -> None:
    from vcmr.models.build import build_music_video_model
    from vcmr.models.export import save_model
    from vcmr.trainers.video import VideoPretrainConfig

    cfg = load_config(CONFIG_DIR / "vid_pretrain.yaml", stage2_overrides(dataset, tmp_path), VideoPretrainConfig)
    model = build_music_video_model(cfg.model, 16000, 729).eval()
    path = save_model(tmp_path / "model.safetensors", model, {"sample_rate": 16000})
    args = {"model": str(path), "representation": "encoder", "hop_fraction": 0.5, "batch_size": 4, "device": "cpu"}
    ext = build_extractor("stage2_audio", args)
    rec = next(r for r in read_manifest(dataset) if r.video_id == "vid002")
    got = ext(rec, dataset)
    from vcmr.audio.io import load_audio

    y = np.concatenate([load_audio(dataset / p, 16000) for p in rec.audio_paths])
    starts = list(range(0, y.size - 729 + 1, 364)) + [y.size - 729]
    with torch.no_grad():
        ref = model.audio_encoder(torch.from_numpy(np.stack([y[s : s + 729] for s in starts]))[:, None]).mean(0)
    assert got.shape == (16,) and np.allclose(got, ref.numpy(), atol=1e-5)
    joint = build_extractor("stage2_audio", {**args, "representation": "joint"})(rec, dataset)
    assert joint.shape == (8,)
    assert ext.settings()["model_sha256"] and ext.settings()["representation"] == "encoder"
    with pytest.raises(ValueError, match="representation"):
        build_extractor("stage2_audio", {**args, "representation": "middle"})


def test_feature_transform_matches_sklearn_pca_and_round_trips(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).standard_normal((40, 6)) @ np.diag([5, 3, 1, 0.5, 0.2, 0.1]) + 2
    t = FeatureTransform(True, 3, False).fit(x)
    z = (x - x.mean(0)) / x.std(0)
    ref = PCA(3).fit_transform(z)
    got = t.transform(x)
    assert np.allclose(np.abs(got), np.abs(ref), atol=1e-4)  # equal up to each component's sign
    l2 = FeatureTransform(True, 3, True).fit(x).transform(x)
    assert np.allclose(np.linalg.norm(l2, axis=1), 1.0, atol=1e-5)
    back = FeatureTransform.load(t.save(tmp_path / "t.npz"))
    assert np.array_equal(back.transform(x), got) and back.config() == t.config()
    with pytest.raises(ValueError, match="pca_dim=7 exceeds"):
        FeatureTransform(True, 7, False).fit(x)
    with pytest.raises(FeatureCacheError, match="transform file not found"):
        FeatureTransform.load(tmp_path / "missing.npz")
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureTransform(False, None, False).transform(x)


def test_command_config_kinds_and_demo_overrides(dataset: Path) -> None:
    assert set(EXTRACTORS) >= {"vmnet_audio", "vmnet_video", "clip_audio", "stage2_audio"}
    assert parse_kinds("vmnet_video, clip_audio") == ["vmnet_video", "clip_audio"]
    with pytest.raises(KeyError, match="vmnet_vid"):
        parse_kinds("vmnet_vid")
    cfg = load_config(CONFIG_DIR / "extract_features.yaml", [f"input={dataset}", "kind=vmnet_video", "progress=false"],
                      ExtractFeaturesConfig)
    (summary,) = run(cfg)
    assert summary.done == 4
    demo = load_config(CONFIG_DIR / "extract_features_demo.yaml", [], ExtractFeaturesConfig)
    retrieval_demo = load_config(CONFIG_DIR / "train_retrieval_demo.yaml", [], None)
    stage2 = load_config(CONFIG_DIR / "vid_pretrain_demo.yaml", [], None)
    assert list(demo.demo.cfg_overrides) == list(retrieval_demo.demo.cfg_overrides)  # the demo library set
    assert demo.features.vmnet_audio.sample_rate == stage2.data.sample_rate


def test_manifest_without_ok_videos_extracts_nothing(tmp_path: Path) -> None:
    write_manifest(tmp_path / "manifest.csv", [VideoRecord("x", "failed", "no audio", 0, 0, 0, 0, 0, 0, (0, 0), (), "")])
    s = extract_features(tmp_path, "vmnet_video", {"top_k": 5}, progress=False)
    assert (s.done, s.skipped, s.failures) == (0, 0, {})
