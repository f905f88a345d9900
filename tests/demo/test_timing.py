"""The timing benchmark: generator, rhythm/motion extraction over its builder output, the
ut_cmvmr recipe in the retrieval trainer, and the ablation's claim on token data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vcmr.config import load_config
from vcmr.demo.timing import (
    TimingSettings,
    beat_times,
    clip_tags,
    ensure_timing_dataset,
    format_ablation,
    pan_offsets,
    plan_videos,
    render_song,
)
from vcmr.losses import ManyToOneInfoNCE, UTCMVMRLoss
from vcmr.metrics.retrieval import chance_levels, rank_summary
from vcmr.models.ut_cmvmr import UTCMVMR
from vcmr.trainers.retrieval_ut import (
    ClipSequences,
    build_sequences,
    music_gallery_ranks,
    read_song_ids,
    read_tags,
)


def tiny(**kw) -> TimingSettings:
    base = dict(name="timing_test", n_songs=2, videos_per_song=2, n_clips=2, clip_seconds=4.0, lead_seconds=0.5,
                tempos=[60.0, 150.0], sample_rate=8000, size=64, fps=8, texture_period=128, burst_px=8.0,
                burst_seconds=0.25, hit_db=-6.0, seed=0, crf=18)
    base.update(kw)
    return TimingSettings(**base)


def test_plan_beats_song_and_pan():
    s = tiny(n_songs=3, videos_per_song=2)
    plans = plan_videos(s)
    assert [p.video_id for p in plans] == ["t000_0", "t000_1", "t001_0", "t001_1", "t002_0", "t002_1"]
    assert plans == plan_videos(s)  # deterministic
    assert plans[0].tempos == plans[1].tempos and plans[0].song_id == plans[1].song_id
    beats = beat_times((60.0, 150.0), s)
    # 60 bpm: 0.5 + 0.5, 1.5, 2.5, 3.5; 150 bpm (0.4 s): 4.5 + 0.2, 0.6, ..., 3.8 (10 beats).
    np.testing.assert_allclose(beats[:4], [1.0, 2.0, 3.0, 4.0])
    assert len(beats) == 14 and np.all(np.diff(beats) > 0) and beats[-1] < 8.5
    y = render_song((60.0, 150.0), s)
    assert y.shape == (int(9 * 8000),) and y.dtype == np.float32 and np.abs(y).max() == pytest.approx(0.9, abs=1e-4)
    shift = pan_offsets(beats, s)
    assert shift.shape == (72,) and shift[0] == 0 and shift[-1] == pytest.approx(8.0 * 14)
    assert np.all(np.diff(shift) >= 0)
    assert clip_tags((150.0, 60.0), s) == ["clip1---slow", "clip2---very_slow"]


@pytest.fixture(scope="module")
def timing_dataset(tmp_path_factory) -> Path:
    return ensure_timing_dataset(tiny(), ["num_workers=0"], root=tmp_path_factory.mktemp("timing"), progress=False)


FEATURES = {
    "rhythm": dict(sample_rate=8000, clip_seconds=4.0, hop_length=128, start_bpm=120.0, tightness=100.0,
                   context_seconds=1.0, interval_bins=64, max_beats=17, strength_classes=49, strength_step=1.0),
    "motion": dict(backend="farneback", fps=4.0, short_side=64, clip_seconds=4.0, bins=64, max_magnitude=32.0,
                   videos=None, backends={"farneback": dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                                            poly_n=5, poly_sigma=1.2, batch_size=1)}),
}


def test_dataset_files_and_extraction(timing_dataset):
    from vcmr.data.manifest import read_manifest
    from vcmr.preprocess.features import extract_features

    root = timing_dataset
    recs = read_manifest(root)
    assert [r.status for r in recs] == ["ok"] * 4 and all(r.window_duration == 8 for r in recs)
    assert read_song_ids(root / "song_ids.tsv") == {"t000_0": "song000", "t000_1": "song000",
                                                    "t001_0": "song001", "t001_1": "song001"}
    assert all(len(t) == 2 for t in read_tags(root / "tags.tsv").values())
    specs = {json.loads(line)["video_id"]: json.loads(line) for line in
             (root.parent / "videos" / "timing_specs.jsonl").read_text().splitlines()}
    out = {}
    for kind, args in FEATURES.items():
        summary = extract_features(root, kind, args, progress=False)
        assert summary.done == 4 and not summary.failures
        again = extract_features(root, kind, args, progress=False)  # resumable: nothing left to do
        assert again.done == 0 and again.skipped == 4
        out[kind] = {r.video_id: np.load(root / "feature_cache" / kind / f"{r.video_id}.npy") for r in recs}
    for vid, spec in specs.items():
        rhythm, motion = out["rhythm"][vid], out["motion"][vid]
        assert rhythm.shape == (2, 7) and motion.shape == (2, 66)
        for c, tempo in enumerate(spec["tempos"]):
            planned = int(np.floor(4.0 / (60.0 / tempo) - 0.5)) + 1
            assert abs(rhythm[c, 0] - planned) <= 1, (vid, c, rhythm[:, 0], spec["tempos"])
        # More beats, more bursts: the clip with the faster tempo has the larger motion token.
        if spec["tempos"][0] != spec["tempos"][1]:
            fast = int(np.argmax(spec["tempos"]))
            assert motion[fast, -1] > motion[1 - fast, -1]


def test_recipe_in_the_retrieval_trainer(timing_dataset, tmp_path):
    from vcmr.trainers.retrieval import RECIPES, TrainRetrievalConfig, train

    assert "ut_cmvmr" in RECIPES
    over = [
        f"data.root={timing_dataset}", "data.val_fraction=0.4", "progress=false", "logger.name=none",
        "trainer.enable_progress_bar=false", f"output.root={tmp_path}", "output.version=0",
        "recipes.ut_cmvmr.trainer.max_epochs=1", "recipes.ut_cmvmr.pretrain.epochs=1", "recipes.ut_cmvmr.tags=tags.tsv",
        "recipes.ut_cmvmr.batch_size=2", "recipes.ut_cmvmr.model.d_model=16", "recipes.ut_cmvmr.model.ff_dim=16",
        "recipes.ut_cmvmr.model.clip_hidden=16", "recipes.ut_cmvmr.model.embed_dim=8",
        "features.motion.short_side=64",
    ]
    cfg = load_config("train_ut_cmvmr_timing.yaml", over, schema=TrainRetrievalConfig)
    result = train(cfg)
    run = Path(result["run_dir"])
    gallery = json.loads((run / "evaluation" / "music_gallery.json").read_text())
    assert gallery["n_songs"] == 2 and gallery["chance"]["R@1"] == 0.5
    assert 1 <= gallery["two_tower"]["median_rank"] <= 2 and "cross" in gallery
    assert (run / "export" / "model.safetensors").is_file() and (run / "pretrain").is_dir()
    assert any(k.startswith("pretrain/") for k in result["metrics"])
    from vcmr.models.export import load_spec_model

    model = load_spec_model(run / "export" / "model.safetensors")
    assert isinstance(model, UTCMVMR) and model.meta["song_ids"] == "song_ids.tsv"


def test_build_sequences_windows_and_padding():
    rows = {"a": np.arange(30 * 2, dtype=np.float32).reshape(30, 2)}
    vrows = {"a": np.ones((30, 3), np.float32)}
    rhythm = {"a": np.tile(np.array([[8, 20, 8.5, 120, 8, 20, 8]], np.float32), (7, 1))}
    motion = {"a": np.concatenate([np.zeros((7, 65)), np.arange(7)[:, None]], 1).astype(np.float32)}
    ds = build_sequences(rows, vrows, rhythm, motion, ["a"], {"a": "s"}, ["s"], 4, 5, hop=1)
    assert len(ds) == 3  # 7 clips (28 s of 30), windows of 5 every clip
    np.testing.assert_array_equal(ds.motion[:, 0], [0, 1, 2])
    np.testing.assert_allclose(ds.audio[0, 0], rows["a"][:4].mean(0))
    first = build_sequences(rows, vrows, rhythm, motion, ["a"], {"a": "s"}, ["s"], 4, 10, hop=None)
    assert len(first) == 1 and first.mask[0].tolist() == [True] * 7 + [False] * 3
    assert np.all(first.audio[0, 7:] == 0) and first.rhythm[0, 0].tolist() == [8, 20, 8]


# ---- the ablation's claim, on token data ------------------------------------------------------

BEATS, INTERVAL, MOTION = [4, 5, 6, 8, 10, 12], [16, 12, 9, 8, 6, 5], [2, 5, 8, 11, 14, 17]


def token_set(n_songs: int = 16, per_song: int = 4, c: int = 5, seed: int = 0):
    """The timing set as tokens: content is noise with the same law for every song; a song's
    per-clip tempo class sets its rhythm tokens, and (with +-1 noise) its videos' motion tokens."""
    rng = np.random.default_rng(seed)
    tempo = rng.integers(0, 6, size=(n_songs, c))
    audio, video, rhythm, motion, song = [], [], [], [], []
    for s in range(n_songs):
        for _ in range(per_song):
            audio.append(rng.standard_normal((c, 6)))
            video.append(rng.standard_normal((c, 6)))
            rhythm.append(np.stack([np.take(BEATS, tempo[s]), np.full(c, 20), np.take(INTERVAL, tempo[s])], -1))
            motion.append(np.clip(np.take(MOTION, tempo[s]) + rng.integers(-1, 2, size=c), 0, 63))
            song.append(s)
    n = len(song)
    ds = ClipSequences(np.array(audio), np.array(video), np.array(rhythm), np.array(motion), np.ones((n, c), bool),
                       np.array(song), np.arange(n), [f"v{i}" for i in range(n)], [f"s{i}" for i in range(n_songs)])
    query = np.arange(n) % per_song < per_song // 2  # half of each song's videos are queries
    return ds.subset(np.flatnonzero(~query)), ds.subset(np.flatnonzero(query)), ds


def fit_tokens(add_rhythm: bool, add_motion: bool, steps: int = 60) -> dict:
    torch.manual_seed(0)
    train, queries, gallery = token_set()
    model = UTCMVMR(audio_dim=6, video_dim=6, d_model=32, clip_hidden=32, n_heads=2, n_layers=1, ff_dim=32,
                    cross_layers=1, embed_dim=16, max_clip=7, dropout=0.0, add_rhythm=add_rhythm,
                    add_motion=add_motion)
    loss = UTCMVMRLoss(ManyToOneInfoNCE(0.1, gather=False), cross_weight=0.5, cross_temperature=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        b = train.subset(torch.randperm(len(train), generator=g)[:16].numpy())
        t = {k: torch.from_numpy(getattr(b, k)) for k in ("audio", "video", "rhythm", "motion", "mask", "song")}
        out = model(t["audio"], t["video"], t["rhythm"], t["motion"], t["mask"], t["mask"])
        opt.zero_grad()
        loss(**out, song=t["song"])["loss"].backward()
        opt.step()
    ranks, n_songs = music_gallery_ranks(model.eval(), queries, gallery, "two_tower")
    return {**rank_summary(ranks, (1, 5)), "n_songs": n_songs}


@pytest.fixture
def one_thread():
    """Many tiny steps: one thread avoids thread hand-off costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_timing_tokens_beat_content_which_stays_near_chance(one_thread):
    chance = chance_levels(16, (1, 5))
    content = fit_tokens(False, False)
    both = fit_tokens(True, True)
    assert content["n_songs"] == 16
    # Content is noise: near chance (R@5 of chance is 5/16; the median rank of chance 8.5).
    assert content["R@5"] <= 0.55 and content["median_rank"] >= 4
    # Rhythm tokens on the songs and motion tokens on the videos carry the timing.
    assert both["R@1"] >= 3 * chance["R@1"] and both["R@5"] >= 0.75 and both["median_rank"] <= 3


def test_ablation_table_format():
    row = {"mean": {"R@1": 0.03, "R@5": 0.1, "median_rank": 19.0}, "std": {"R@1": 0.01, "R@5": 0.02, "median_rank": 1.0}}
    results = {"seeds": [0, 1], "chance": {"R@1": 0.025, "R@5": 0.125, "median_rank": 20.5},
               "variants": {"content": {"two_tower": row, "cross": row}}}
    table = format_ablation(results).splitlines()
    assert table[0] == ("| variant | two-tower R@1 | two-tower R@5 | two-tower median rank | cross-attention R@1 | "
                        "cross-attention R@5 | cross-attention median rank |")
    assert table[2] == "| content | 0.030 ± 0.010 | 0.100 ± 0.020 | 19.0 | 0.030 ± 0.010 | 0.100 ± 0.020 | 19.0 |"
    assert table[3] == "| chance | 0.025 | 0.125 | 20.5 | 0.025 | 0.125 | 20.5 |"


def test_demo_tags_from_planted_attributes(tmp_path):
    from vcmr.demo.timing import prepare_demo_tags, write_demo_tags
    from vcmr.trainers.retrieval import TrainRetrievalConfig

    rec = {"video_id": "demo_0001", "timbre": "saw", "drums": "rock", "tempo": 130.0, "key": 3, "mode": "minor",
           "seed": 5, "cuts": [], "oneshot": False}
    (tmp_path / "specs.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "video_id": "demo_0000",
                                                                              "tempo": 90.0}) + "\n")
    path = write_demo_tags(tmp_path)
    assert read_tags(path) == {"demo_0000": ["timbre---saw", "drums---rock", "mode---minor", "tempo---slow"],
                               "demo_0001": ["timbre---saw", "drums---rock", "mode---minor", "tempo---fast"]}
    cfg = load_config("train_retrieval_demo.yaml", ["model=ut_cmvmr", f"data.root={tmp_path}"],
                      schema=TrainRetrievalConfig)
    assert cfg.recipes.ut_cmvmr.tags == "demo"
    assert prepare_demo_tags(cfg).recipes.ut_cmvmr.tags == str(path)
    other = load_config("train_retrieval_demo.yaml", ["model=vmnet", f"data.root={tmp_path}"],
                        schema=TrainRetrievalConfig)
    assert prepare_demo_tags(other) is other
