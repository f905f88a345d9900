"""Learning check for stage 2 on the demo music videos, which plant an audio-video link.

The demo videos draw their picture from the music's attributes (key -> hue, timbre ->
shape, drums -> object count, tempo -> motion, mode -> stripes). A short CPU run must
retrieve the right video for a music crop (and back) far above chance, and the stage-2
audio encoder must expose the key (which stage 1's pitch-shift augmentation teaches it to
ignore) better than the stage-1 encoder it started from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vcmr import load_encoder
from vcmr.config import CONFIG_DIR, load_config
from vcmr.demo.videos import ensure_demo_dataset
from vcmr.data.video_music import VideoMusicDataset, index_dataset
from vcmr.trainers.music import MusicPretrainConfig
from vcmr.trainers.music import train as train_music
from vcmr.trainers.video import VideoPretrainConfig
from vcmr.trainers.video import train as train_video
from vcmr.utils import hash_split

pytestmark = pytest.mark.slow


def probe_accuracy(encoder_path, dataset, sample_rate, length, val_fraction, attribute):
    """Logistic-regression accuracy for a planted attribute: train split -> validation split."""
    from sklearn.linear_model import LogisticRegression

    specs = {}
    for line in (Path(dataset) / "specs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        specs[rec["video_id"]] = rec
    segments, _ = index_dataset(dataset, sample_rate, length)
    enc = load_encoder(encoder_path)

    def embed(segs):
        ds = VideoMusicDataset(segs, sample_rate, length, random_crop=False)
        x = torch.stack([ds[i]["audio"] for i in range(len(ds))])
        with torch.no_grad():
            return enc(x).numpy(), [specs[s.video_id][attribute] for s in segs]

    z_tr, y_tr = embed([s for s in segments if hash_split(s.video_id, val_fraction) == "train"])
    z_va, y_va = embed([s for s in segments if hash_split(s.video_id, val_fraction) == "val"])
    mu, sd = z_tr.mean(0), z_tr.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit((z_tr - mu) / sd, y_tr)
    return clf.score((z_va - mu) / sd, y_va)


def test_stage2_learns_the_planted_correspondence(tmp_path):
    vcfg = load_config(CONFIG_DIR / "vid_pretrain_demo.yaml", [f"output.root={tmp_path}"], VideoPretrainConfig)
    dataset = ensure_demo_dataset(list(vcfg.demo.cfg_overrides) + ["progress=false"], root=tmp_path / "cache")
    sr, length = vcfg.data.sample_rate, vcfg.data.audio_length

    common = [f"output.root={tmp_path}", "trainer.enable_progress_bar=false"]
    s1 = train_music(load_config(
        CONFIG_DIR / "mus_pretrain_demo.yaml",
        [*common, f"data.root={dataset / 'audio'}", "trainer.max_epochs=3", "data.val_fraction=0.1"],
        MusicPretrainConfig,
    ))
    s2 = train_video(load_config(
        CONFIG_DIR / "vid_pretrain_demo.yaml",
        [*vcfg.demo.from_stage1, *common, f"data.root={dataset}", f"model.audio_init={s1['export']}"],
        VideoPretrainConfig,
    ))
    m = s2["metrics"]
    # R@1 and chance are k/N fractions logged as float32: compare with a rounding margin.
    chance = m["val/chance/R@1"]
    assert m["val/chance/R@1"] <= 0.01 + 1e-6, m  # at least 100 validation videos
    assert m["val/a2v/R@1"] >= 7 * chance - 1e-6, m
    assert m["val/v2a/R@1"] >= 7 * chance - 1e-6, m
    assert m["val/a2v/median_rank"] < m["val/chance/median_rank"] / 2, m

    before = probe_accuracy(s1["export"], dataset, sr, length, vcfg.data.val_fraction, "key")
    after = probe_accuracy(s2["exports"]["audio_encoder"], dataset, sr, length, vcfg.data.val_fraction, "key")
    print(f"key probe: stage 1 {before:.3f} -> stage 2 {after:.3f}; retrieval {m}")
    assert after > before
