"""Clip and music libraries: scene-bounded clips, tables, index, resume after a kill, shards, checks."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import sqlite3
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, ConfigError, load_config
from vcmr.retrieval import library as lib
from vcmr.retrieval.check import chance_first_own, own_item_ranks, own_item_recall
from vcmr.retrieval.embedder import Embedder, window_starts
from vcmr.retrieval.index import VectorIndex
from vcmr.retrieval.library import (ClipSpan, LibraryConfig, LibraryError, build, cut_clips, load_part, read_sources,
                                    self_retrieval)
from vcmr.video.writer import write_video

sys.path.insert(0, str(Path(__file__).parent))
from retrieval_media import PALETTE, SAMPLE_RATE, colour_video, tiny_model, tone  # noqa: E402

#: Per video: the colour of each second; a colour change is a cut.
VIDEOS = {
    "a": [0, 0, 0, 1, 1, 1, 1, 2, 2],  # scenes 0-3, 3-7, 7-9
    "b": [3, 3, 3, 3, 3, 4, 4],        # scenes 0-5, 5-7
    "c": [5, 5, 6, 7, 7, 7],           # scenes 0-2, 2-3, 3-6
    "d": [2, 2, 2, 2, 0, 0, 0],
    "e": [4, 4, 1, 1, 1, 1],
}

TINY = [
    "progress=false", "clip_seconds=2", "min_clip_seconds=1", "scenes.short_side=32", "thumbs.short_side=32",
    "embedder.batch_size=4", "embedder.frame_batch_size=16", "check.ks=[1,2]",
]


def tiny_cfg(input_path, output, model, *extra):
    return load_config(CONFIG_DIR / "library.yaml",
                       [*TINY, f"input={input_path}", f"output={output}", f"model={model}", *extra], LibraryConfig)


def make_videos(folder: Path, names=tuple(VIDEOS)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        colour_video(folder / f"{name}.mp4", VIDEOS[name])
    return folder


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = make_videos(tmp_path_factory.mktemp("videos"))
    (folder / "broken.mp4").write_bytes(b"\x00\x01 not a video")
    write_video(folder / "sound_only.mp4", None, 10, tone(2.0, 16000, [300.0]), 16000)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, videos, model_path):
    out = tmp_path_factory.mktemp("lib") / "library"
    summary = build(tiny_cfg(videos, out, model_path))
    return out, summary


def rows(root: Path, table: str):
    con = sqlite3.connect(root / "library.sqlite")
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        con.close()


def test_clip_rule():
    assert cut_clips([(0.0, 3.0), (3.0, 7.0), (7.0, 9.0)], 2, 1) == [
        ClipSpan(0.0, 2, 0), ClipSpan(2.0, 1, 0), ClipSpan(3.0, 2, 1), ClipSpan(5.0, 2, 1), ClipSpan(7.0, 2, 2)]
    # a 10 s clip: a 25.5 s scene gives 2 full clips and a 5 s remainder (kept: >= 4 s); a 3.9 s scene nothing
    assert cut_clips([(1.5, 27.0), (27.0, 30.9)], 10, 4) == [ClipSpan(1.5, 10, 0), ClipSpan(11.5, 10, 0),
                                                            ClipSpan(21.5, 5, 0)]
    assert cut_clips([(0.0, 3.7)], 10, 4) == []
    with pytest.raises(ConfigError, match="min_clip_seconds"):
        cut_clips([(0.0, 5.0)], 2, 3)


def test_sources_from_a_folder_and_a_list(videos, tmp_path):
    found = read_sources(videos, lib.ClipsKind.extensions())
    assert [s.item_id for s in found] == ["a", "b", "broken", "c", "d", "e", "sound_only"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two of them\n{videos / 'a.mp4'}\n\n{videos / 'c.mp4'}  # trailing comment\n")
    assert [s.item_id for s in read_sources(listing, (".mp4",))] == ["a", "c"]
    listing.write_text("a.mp4\nmissing.mp4\n")
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"list.txt:2: 'missing.mp4' is not a file"):
        read_sources(listing, (".mp4",))


def test_library_layout_rows_thumbs_and_status(built, videos, model_path):
    root, summary = built
    assert summary.counts == {"ok": 5, "failed": 2} and summary.processed == 7
    doc = lib.read_library_yaml(root)
    import hashlib

    assert doc["model"]["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert doc["frame_encoder"]["name"] == "tiny_clip" and doc["model"]["sample_rate"] == SAMPLE_RATE
    assert doc["settings"]["clip_seconds"] == 2 and doc["assembled"]["n_entries"] == {"clips": 20}

    clips = rows(root, "clips")
    assert [r[0] for r in clips] == list(range(20))
    spans = {(r[2], round(r[4], 2), round(r[5], 2), r[7]) for r in clips}
    scene_spans = {(r[2], r[7]): (round(r[8], 2), round(r[9], 2)) for r in clips}
    assert [scene_spans[("a", s)] for s in range(3)] == [(0.0, 3.0), (3.0, 7.0), (7.0, 9.0)]
    assert scene_spans[("e", 1)] == (2.0, 6.0)
    # video a: scenes 0-3, 3-7, 7-9 -> clips [0,2) [2,3) | [3,5) [5,7) | [7,9)
    assert {s for s in spans if s[0] == "a"} == {("a", 0.0, 2.0, 0), ("a", 2.0, 3.0, 0), ("a", 3.0, 5.0, 1),
                                                 ("a", 5.0, 7.0, 1), ("a", 7.0, 9.0, 2)}
    assert {s for s in spans if s[0] == "c"} == {("c", 0.0, 2.0, 0), ("c", 2.0, 3.0, 1), ("c", 3.0, 5.0, 2),
                                                 ("c", 5.0, 6.0, 2)}
    for r in clips:  # every clip's thumbnail: a JPEG showing the colour of its scene
        from PIL import Image

        img = np.asarray(Image.open(root / r[10]))
        second = int((r[4] + r[5]) / 2)
        colour = PALETTE[VIDEOS[r[2]][second]].astype(float)
        assert np.median(img.reshape(-1, 3), axis=0) == pytest.approx(colour, abs=25)
        assert r[3] == str((videos / f"{r[2]}.mp4").resolve())

    status = {r[0]: (r[2], r[3]) for r in rows(root, "status")}
    assert status["broken"][0] == "failed" and "cannot open container" in status["broken"][1]
    assert status["sound_only"] == ("failed", "no video stream")
    assert status["a"] == ("ok", "")


def test_clip_vectors_are_the_model_on_the_clip_seconds(built, videos, model_path):
    root, _ = built
    part = load_part(root, "a")
    e = Embedder(model_path, progress=False)
    ref = e.embed_video(videos / "a.mp4", clip_seconds=2, start=3.0, end=5.0).clips[0]
    np.testing.assert_allclose(part["vectors"][2], ref, atol=1e-4)
    index = VectorIndex.load(root / "clips.index")
    vectors = np.concatenate([load_part(root, v)["vectors"] for v in "abcde"])
    q = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    scores, ids = index.search(q, 20)
    np.testing.assert_array_equal(ids, np.argsort(-(q @ vectors.T), axis=1, kind="stable"))


def test_rebuild_with_other_settings_or_model_is_refused(built, videos, model_path, tmp_path):
    root, _ = built
    with pytest.raises(LibraryError, match="different clip_seconds"):
        build(tiny_cfg(videos, root, model_path, "clip_seconds=3"))
    other = tiny_model(tmp_path, seed=1)
    with pytest.raises(LibraryError, match=r"different model_sha256 \(another model\)"):
        build(tiny_cfg(videos, root, other))


def _same_library(a: Path, b: Path) -> None:
    assert (a / "clips.index").read_bytes() == (b / "clips.index").read_bytes()
    assert rows(a, "clips") == rows(b, "clips")
    assert [r[:5] + r[6:7] for r in rows(a, "status")] == [r[:5] + r[6:7] for r in rows(b, "status")]
    for p in sorted((a / "thumbs").iterdir()):
        assert p.read_bytes() == (b / "thumbs" / p.name).read_bytes()


def test_resume_after_an_injected_crash_gives_the_same_library(tmp_path, built, videos, model_path, monkeypatch):
    root_ref, _ = built
    out = tmp_path / "resumed"
    real = lib.ClipsKind.process
    calls = []

    def crash_on_third(self, src, *args):
        calls.append(src.item_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-video
        return real(self, src, *args)

    monkeypatch.setattr(lib.ClipsKind, "process", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build(tiny_cfg(videos, out, model_path))
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == ["a", "b"]
    assert not (out / "clips.index").exists() and "assembled" not in lib.read_library_yaml(out)
    monkeypatch.setattr(lib.ClipsKind, "process", real)
    summary = build(tiny_cfg(videos, out, model_path))
    assert summary.processed == 5 and summary.total == 7
    _same_library(out, root_ref)


def test_sigkill_mid_build_then_rerun_gives_the_same_library(tmp_path, built, videos, model_path, warm_start_method):
    """The command's ``main`` runs in a worker process (started warm: no second import of torch and
    open_clip), which is SIGKILLed once two videos are recorded; a rerun finishes the library."""
    from vcmr.scripts.build_library import main

    root_ref, _ = built
    out = tmp_path / "killed"
    args = [f"--config={CONFIG_DIR / 'library.yaml'}", *TINY, f"input={videos}", f"output={out}", f"model={model_path}"]
    proc = multiprocessing.get_context(warm_start_method).Process(target=main, args=(args,))
    proc.start()
    deadline = time.time() + 240
    while time.time() < deadline and proc.is_alive() and len(list((out / "records").glob("*.json"))) < 2:
        time.sleep(0.01)
    assert proc.is_alive(), f"the build ended before it was killed (exit code {proc.exitcode})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    done = len(list((out / "records").glob("*.json")))
    assert 2 <= done < 7 and not (out / "library.sqlite").exists() and not (out / "clips.index").exists()
    summary = build(tiny_cfg(videos, out, model_path))
    assert summary.processed == 7 - done
    _same_library(out, root_ref)


def test_shards_then_merge_equal_one_build(tmp_path, built, videos, model_path):
    root_ref, _ = built
    out = tmp_path / "sharded"
    s0 = build(tiny_cfg(videos, out, model_path, "shard=0/2"))
    s1 = build(tiny_cfg(videos, out, model_path, "shard=1/2"))
    assert s0.assembled is None and s1.assembled is None and s0.total + s1.total == 7
    assert "merge=true" in str(s0) and not (out / "clips.index").exists()
    merged = build(tiny_cfg(videos, out, model_path, "merge=true"))
    assert merged.assembled["n_entries"] == {"clips": 20} and merged.processed == 0
    _same_library(out, root_ref)


def test_music_library(tmp_path, videos, model_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    save_audio(songs / "low.wav", tone(2.0, SAMPLE_RATE, [200.0, 250.0]), SAMPLE_RATE)
    save_audio(songs / "high.flac", tone(1.5, 16000, [900.0]), 16000)
    (songs / "broken.mp3").write_bytes(b"\x00" * 64)
    (songs / "sub").mkdir()
    colour_video(songs / "sub" / "clip.mp4", [0, 1, 2])  # the audio track of a video is a song too
    out = tmp_path / "music"
    summary = build(tiny_cfg(songs, out, model_path, "kind=music"))
    assert summary.counts == {"ok": 3, "failed": 1}
    n_win = [len(window_starts(int(s * SAMPLE_RATE), 729, 364)) for s in (1.5, 2.0, 3.0)]  # high, low, clip
    assert summary.assembled["n_entries"] == {"songs": 3, "windows": sum(n_win)}
    song_rows = rows(out, "songs")
    assert [r[1] for r in song_rows] == ["high", "low", "sub__clip"]
    assert [r[4] for r in song_rows] == n_win and [r[5] for r in song_rows] == [0, n_win[0], n_win[0] + n_win[1]]
    windows = rows(out, "windows")
    assert len(windows) == sum(n_win) and windows[n_win[0]][1:4] == ("low", 1, 0)
    e = Embedder(model_path, progress=False)
    ref = e.embed_audio(songs / "low.wav")
    index = VectorIndex.load(out / "songs.index")
    scores, ids = index.search(ref.song[None], 1)
    assert ids[0, 0] == 1 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    status = {r[0]: r[2:4] for r in rows(out, "status")}
    assert status["broken"][0] == "failed" and "cannot open container" in status["broken"][1]
    check = self_retrieval(out, e, [1], progress=False)  # a video against its own soundtrack
    assert check["direction"] == "video -> own soundtrack" and check["all"]["n_queries"] == 1
    assert sorted(check["skipped"]) == ["high", "low"] and "no video stream" in check["skipped"]["low"]


def test_own_item_ranks_against_a_naive_loop():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((6, 12)).round(1)  # rounding makes ties
    q_owner = np.array([0, 1, 2, 3, 0, 2])
    i_owner = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 2, 0])
    naive = []
    for q in range(6):
        own = [j for j in range(12) if i_owner[j] == q_owner[q]]
        best = max(scores[q, j] for j in own)
        naive.append(1 + sum(1 for j in range(12) if i_owner[j] != q_owner[q] and scores[q, j] >= best))
    assert own_item_ranks(scores, q_owner, i_owner).tolist() == naive
    with pytest.raises(ValueError, match="without any own item"):
        own_item_ranks(scores[:1], np.array([9]), i_owner)


def test_chance_of_the_first_own_item_by_enumeration():
    n, m = 7, 2
    firsts = [min(pos) + 1 for pos in combinations(range(n), m)]  # every placement of the own items
    got = chance_first_own(n, m, [1, 2, 3])
    for k in (1, 2, 3):
        assert got[f"R@{k}"] == pytest.approx(np.mean([f <= k for f in firsts]))
    assert got["mean_rank"] == pytest.approx(np.mean(firsts))
    cdf = [np.mean([f <= r for f in firsts]) for r in range(1, n + 1)]
    assert got["median_rank"] == next(r for r, c in enumerate(cdf, 1) if c >= 0.5)
    assert chance_first_own(10, 1, [1, 5])["R@5"] == pytest.approx(0.5)


def test_own_item_recall_and_self_retrieval_on_a_library(built, model_path):
    items = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3, 3]]
    queries = np.eye(4, dtype=np.float32)[[0, 1, 1]]  # the third query's own item (owner 7) is not its closest
    m = own_item_recall(queries, items, [5, 6, 7], [5, 5, 6, 7, 8, 8], [1, 2])
    assert m["R@1"] == pytest.approx(2 / 3) and m["median_rank"] == 1.0 and m["n_items"] == 6
    assert m["mean_rank"] == pytest.approx((1 + 1 + 6) / 3)  # ties count against the query: rank 6 of 6
    assert m["chance/R@1"] == pytest.approx((2 / 6 + 1 / 6 + 1 / 6) / 3)

    root, _ = built
    out = self_retrieval(root, Embedder(model_path, progress=False), [1, 2], progress=False)
    assert out["direction"] == "song -> own video's clips" and out["all"]["n_queries"] == 5
    assert 0.0 <= out["all"]["R@1"] <= out["all"]["R@2"] <= 1.0 and out["skipped"] == {}
    assert json.loads((root / "check.json").read_text())["all"]["n_items"] == 20
