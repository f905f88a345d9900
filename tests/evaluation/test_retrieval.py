"""The retrieval protocol against a naive reference, and the command end to end on a tiny model."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from tiny import make_builder_output, stage2_overrides  # noqa: E402

from vcmr.evaluation.retrieval import (  # noqa: E402
    EmbeddedSet,
    embed_segments,
    evaluate_embeddings,
    format_table,
    gallery_draws,
    pool_tracks,
    select_segments,
)

# --------------------------------------------------------------------------------------
# Naive reference: plain Python lists and loops
# --------------------------------------------------------------------------------------


def _norm(v: List[float]) -> List[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a: List[float], b: List[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def naive_rank(query: List[float], gallery: List[List[float]], target: int) -> int:
    true = _dot(query, gallery[target])
    return 1 + sum(1 for j, g in enumerate(gallery) if j != target and _dot(query, g) >= true)


def naive_protocol(audio, video, track, n_tracks, ks, sizes, n_galleries, seed) -> Dict:
    audio = [_norm(list(map(float, r))) for r in audio]
    video = [_norm(list(map(float, r))) for r in video]
    track = [int(t) for t in track]

    def pool(rows):
        out = []
        for t in range(n_tracks):
            members = [r for r, tt in zip(rows, track) if tt == t]
            out.append(_norm([sum(col) / len(members) for col in zip(*members)]))
        return out

    songs, vids = pool(audio), pool(video)
    seg_items = list(range(len(audio)))
    tasks = {
        "segment": {"a2v": (audio, seg_items, video), "v2a": (video, seg_items, audio)},
        "segment_to_track": {"a2v": (audio, track, vids), "v2a": (video, track, songs)},
        "track": {"a2v": (songs, list(range(n_tracks)), vids), "v2a": (vids, list(range(n_tracks)), songs)},
    }
    out = {}
    for level, dirs in tasks.items():
        n_items = len(dirs["a2v"][2])
        galleries = {"full": [list(range(n_items))]}
        for size in sizes:
            if size < n_items:
                galleries[str(size)] = [list(map(int, d)) for d in gallery_draws(n_items, size, n_galleries, seed)]
        out[level] = {}
        for name, draws in galleries.items():
            entry = {}
            for d, (queries, items, gallery) in dirs.items():
                per_draw = []
                for sel in draws:
                    g = [gallery[i] for i in sel]
                    ranks = [naive_rank(q, g, sel.index(it)) for q, it in zip(queries, items) if it in sel]
                    scores = {f"R@{k}": sum(1 for r in ranks if r <= k) / len(ranks) for k in ks}
                    scores["median_rank"] = statistics.median(ranks)
                    scores["mean_rank"] = sum(ranks) / len(ranks)
                    per_draw.append(scores)
                entry[d] = {key: sum(s[key] for s in per_draw) / len(per_draw) for key in per_draw[0]}
            g = len(draws[0])
            entry["chance"] = {**{f"R@{k}": min(k, g) / g for k in ks}, "median_rank": (g + 1) / 2, "mean_rank": (g + 1) / 2}
            out[level][name] = entry
    return out


def random_set(n_tracks: int = 23, dim: int = 8, seed: int = 0) -> EmbeddedSet:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, n_tracks)  # 1..5 segments per track
    track = np.repeat(np.arange(n_tracks), counts)
    rng.shuffle(track)
    centre = rng.standard_normal((n_tracks, dim))
    audio = centre[track] + 0.9 * rng.standard_normal((len(track), dim))
    video = centre[track] + 0.9 * rng.standard_normal((len(track), dim))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return EmbeddedSet(unit(audio), unit(video), track.astype(np.int64), [f"v{i:02d}" for i in range(n_tracks)])


def test_protocol_equals_naive_reference() -> None:
    emb = random_set()
    ks, sizes = [1, 5, 10], [5, 10, 40, 1024]
    got = evaluate_embeddings(emb, ["segment", "segment_to_track", "track"], ks, sizes, n_galleries=3, seed=4)
    ref = naive_protocol(emb.audio, emb.video, emb.track, len(emb.track_ids), ks, sizes, 3, 4)
    n_seg = emb.audio.shape[0]
    assert 40 < n_seg < 1024
    # Tracks (23) are fewer than 40: that gallery is skipped at track levels, kept at segment level.
    assert "skipped" in got["track"]["40"] and "skipped" in got["segment"]["1024"]
    assert got["segment"]["40"]["n_galleries"] == 3 and got["segment"]["full"]["n_items"] == n_seg
    for level, galleries in ref.items():
        assert set(got[level]) - {k for k, v in got[level].items() if "skipped" in v} == set(galleries)
        for name, entry in galleries.items():
            for part in ("a2v", "v2a", "chance"):
                assert got[level][name][part] == pytest.approx(entry[part], abs=1e-9), (level, name, part)
    # Far above chance, and the table prints every row.
    assert got["track"]["full"]["a2v"]["R@1"] > 5 * got["track"]["full"]["chance"]["R@1"]
    table = format_table(got, ks)
    assert "segment_to_track" in table and "full (23)" in table and "skipped" in table


def test_many_to_one_hand_checked() -> None:
    # Two tracks; track 0 has two segments. Video track embeddings: e0 and e1.
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    audio = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)  # seg 1 of track 0 looks like track 1
    video = np.array([e0, e0, e1], np.float32)
    emb = EmbeddedSet(audio, video, np.array([0, 0, 1]), ["a", "b"])
    np.testing.assert_allclose(pool_tracks(video, emb.track, 2), [e0, e1])
    r = evaluate_embeddings(emb, ["segment_to_track"], [1, 2], [], n_galleries=1, seed=0)
    a2v = r["segment_to_track"]["full"]["a2v"]
    # Queries: seg0 -> track 0 rank 1; seg1 -> track 0 rank 2; seg2 -> track 1 rank 1.
    assert a2v["R@1"] == pytest.approx(2 / 3) and a2v["R@2"] == 1.0
    assert a2v["median_rank"] == 1.0 and a2v["mean_rank"] == pytest.approx(4 / 3)
    assert r["segment_to_track"]["full"]["n_queries"]["a2v"] == 3.0


def test_gallery_draws_are_seeded_distinct_and_sorted() -> None:
    a = gallery_draws(50, 10, 4, seed=1)
    b = gallery_draws(50, 10, 4, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(len(set(x.tolist())) == 10 and np.all(np.diff(x) > 0) for x in a)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], gallery_draws(50, 10, 1, seed=2)[0])
    with pytest.raises(ValueError, match="gallery size 60"):
        gallery_draws(50, 60, 1, seed=0)


def test_bad_protocol_settings() -> None:
    emb = random_set(5)
    with pytest.raises(ValueError, match="protocol.levels: unknown \\['clip'\\]"):
        evaluate_embeddings(emb, ["clip"], [1], [], 1, 0)
    with pytest.raises(ValueError, match="protocol.ties"):
        evaluate_embeddings(emb, ["track"], [1], [], 1, 0, ties="random")
    with pytest.raises(ValueError, match="every track id"):
        EmbeddedSet(emb.audio, emb.video, np.zeros(len(emb.track), np.int64), emb.track_ids)


# --------------------------------------------------------------------------------------
# The command on a tiny model and a tiny builder output
# --------------------------------------------------------------------------------------


def _tiny_export(tmp_path: Path, data_root: Path, val_fraction: float = 0.3, frame_encoder=None) -> Path:
    from omegaconf import OmegaConf

    from vcmr.config import load_config, save_config
    from vcmr.models.build import build_music_video_model
    from vcmr.models.export import save_model
    from vcmr.trainers.video import VideoPretrainConfig

    cfg = load_config(
        "vid_pretrain.yaml", stage2_overrides(data_root, tmp_path / "runs", extra=[f"data.val_fraction={val_fraction}"]),
        VideoPretrainConfig,
    )
    torch.manual_seed(0)
    model = build_music_video_model(cfg.model, 16000, 729)
    run = tmp_path / "runs" / "tiny2" / "version_0"
    save_config(cfg, run / "config.yaml")
    extra = {"sample_rate": 16000, "stage": "video_pretrain", "run_dir": str(run), "frame_encoder": frame_encoder}
    save_model(run / "export" / "model.safetensors", model, extra)
    assert OmegaConf.load(run / "config.yaml").data.val_fraction == val_fraction
    return run


def _args(run: Path, data: Path, *extra: str) -> List[str]:
    return [
        f"model={run}", f"data.root={data}", "protocol.gallery_sizes=[5,100]", "protocol.n_galleries=2",
        "batch_size=4", "device=cpu", "progress=false", *extra,
    ]


def test_command_end_to_end_matches_its_embeddings(tmp_path: Path, capsys) -> None:
    from vcmr.utils import hash_split as video_split
    from vcmr.models.export import load_model
    from vcmr.scripts.eval_retrieval import main

    data = make_builder_output(tmp_path / "mv", n_videos=12, n_segments=3)
    run = _tiny_export(tmp_path, data)
    assert main(_args(run, data)) == 0
    printed = capsys.readouterr().out
    assert "segment_to_track" in printed and "chance" in printed
    out = json.loads((run / "evaluation" / "retrieval_val.json").read_text())
    val_ids = sorted(f"vid{v:03d}" for v in range(12) if video_split(f"vid{v:03d}", 0.3) == "val")
    assert out["data"]["video_ids"] == val_ids and out["data"]["val_fraction"] == 0.3  # from the run's config.yaml
    assert out["data"]["n_segments"] == 3 * len(val_ids) and out["data"]["status_counts"] == {"ok": 12, "failed": 1}
    assert out["model"]["input_length"] == 729 and len(out["model"]["sha256"]) == 64
    assert set(out["results"]) == {"segment", "segment_to_track", "track"}

    # The JSON holds the protocol of the embeddings; each embedding is the documented crop + rows.
    model = load_model(run)
    segments, _, _ = select_segments(data, 16000, 729, "val", 0.3)
    emb = embed_segments(model, segments, 16000, batch_size=5, device="cpu", progress=False)
    again = evaluate_embeddings(emb, ["segment", "segment_to_track", "track"], [1, 5, 10], [5, 100], 2, 0)
    for level, galleries in again.items():
        for name, entry in galleries.items():
            for part in ("a2v", "v2a", "chance"):
                if part in entry:
                    assert out["results"][level][name][part] == pytest.approx(entry[part])
    from vcmr.audio.io import load_audio

    seg = segments[4]
    off = (seg.n_samples - 729) // 2
    x = torch.from_numpy(load_audio(seg.audio_path, 16000, offset=off / 16000, duration=729 / 16000))[None, None]
    # 729 samples round to S = 1 row: the second that holds the crop's centre.
    row = min(int((seg.start_sample + off + 729 / 2) // 16000), seg.n_rows - 1)
    rows = np.load(seg.feature_path)[row : row + 1]
    with torch.no_grad():
        np.testing.assert_allclose(emb.audio[4], model.encode_audio(x)[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(emb.video[4], model.encode_video(torch.from_numpy(rows)[None])[0].numpy(), atol=1e-5)

    # split=all covers every ok video; output= chooses the file.
    assert main(_args(run, data, "data.split=all", f"output={tmp_path / 'all.json'}")) == 0
    assert json.loads((tmp_path / "all.json").read_text())["data"]["n_videos"] == 12


def test_command_errors_name_the_problem(tmp_path: Path, capsys) -> None:
    from vcmr.scripts.eval_retrieval import main

    data = make_builder_output(tmp_path / "mv", n_videos=4, n_segments=2)
    run = _tiny_export(tmp_path, data)
    # No run config to read val_fraction from: a bare export file elsewhere.
    bare = tmp_path / "bare" / "model.safetensors"
    bare.parent.mkdir()
    bare.write_bytes((run / "export" / "model.safetensors").read_bytes())
    assert main(_args(bare, data)) == 1
    assert "data.val_fraction is null" in capsys.readouterr().err
    assert main(_args(tmp_path / "nowhere", data)) == 1
    assert "model file not found" in capsys.readouterr().err
    assert main(_args(run, tmp_path / "empty")) == 1
    assert "manifest not found" in capsys.readouterr().err
    assert main(_args(run, data, "data.split=test")) == 1
    assert "data.split: unknown split 'test'" in capsys.readouterr().err
    # Features of another width than the model takes.
    np.save(data / "features" / "vid000.npy", np.zeros((4, 5), np.float32))
    assert main(_args(run, data, "data.split=all")) == 1
    assert "vid000.npy: features of shape (4, 5)" in capsys.readouterr().err
    # A dataset built with another frame encoder than the model's.
    (data / "preprocess_config.yaml").write_text("frames:\n  encoder: open_clip\n  encoders:\n    open_clip: {model: ViT-B-32}\n")
    other = _tiny_export(tmp_path / "o", data, frame_encoder={"name": "tiny_clip", "args": {"width": 32}})
    assert main(_args(other, data, "data.split=all")) == 1
    err = capsys.readouterr().err
    assert "open_clip" in err and "tiny_clip" in err and "preprocess_config.yaml" in err
    # Bad config values stop before any work, with exit status 2.
    with pytest.raises(SystemExit) as exc:
        main(_args(run, data, "protocol.n_galeries=3"))
    assert exc.value.code == 2
