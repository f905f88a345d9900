"""Clip choice: constraints, sampling, feasibility errors and in-point rules on hand-made libraries."""

from __future__ import annotations

import numpy as np
import pytest

from vcmr.assembly.choose import (
    IN_POINT_RULES,
    ChoiceError,
    ChooseSettings,
    Clip,
    choose_clips,
    in_point_best_window,
    shot_queries,
)


def settings(**kw) -> ChooseSettings:
    base = dict(hop=0.5, top_n=5, temperature=0.0, allow_repeats=False, avoid_same_source=True,
                in_point="start", seed=0)
    base.update(kw)
    return ChooseSettings(**base)


def make_library(n_videos=4, per_video=3, length=4.0, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    clips, vecs = [], []
    for v in range(n_videos):
        for k in range(per_video):
            cid = len(clips)
            clips.append(Clip(cid, f"vid{v}", f"/lib/vid{v}.mp4", k * 5.0, k * 5.0 + length, k, k * 5.0, k * 5.0 + 5))
            vecs.append(rng.standard_normal(dim))
    vecs = np.array(vecs, np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return clips, vecs


def flat_search(vecs):
    calls = []

    def search(q, k):
        calls.append(k)
        s = q @ vecs.T
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, ids, axis=1), ids

    search.calls = calls
    return search


def test_greedy_takes_best_qualifying():
    clips, vecs = make_library()
    # Shot 0 asks for clip 4 exactly; shot 1 asks for clip 4 again (used) -> its next best;
    # shot 2 asks for clip 5 (same video as clip 4... only if the previous was from vid1).
    q = np.stack([vecs[4], vecs[4], vecs[7]])
    out = choose_clips(q, [2.0, 2.0, 2.0], flat_search(vecs), clips, settings(top_n=12))
    assert out[0].clip.clip_id == 4 and out[0].rank == 0 and out[0].score == pytest.approx(1.0, abs=1e-5)
    s1 = q[1] @ vecs.T
    order = [int(i) for i in np.argsort(-s1) if i != 4 and clips[i].video_id != "vid1"]
    assert out[1].clip.clip_id == order[0]


def test_no_repeats_and_no_same_source_in_a_row():
    clips, vecs = make_library(n_videos=4, per_video=3)
    rng = np.random.default_rng(1)
    q = vecs[rng.integers(0, len(vecs), 12)]  # 12 shots, 12 clips: every clip once
    out = choose_clips(q, [2.0] * 12, flat_search(vecs), clips, settings(top_n=3))
    ids = [c.clip.clip_id for c in out]
    assert len(set(ids)) == 12
    for a, b in zip(out, out[1:]):
        assert a.clip.video_id != b.clip.video_id


def test_repeats_allowed_when_asked():
    clips, vecs = make_library()
    q = np.stack([vecs[0]] * 4)
    out = choose_clips(q, [2.0] * 4, flat_search(vecs), clips, settings(allow_repeats=True, avoid_same_source=False))
    assert [c.clip.clip_id for c in out] == [0, 0, 0, 0]


def test_too_few_clips_error_says_how_many():
    clips, vecs = make_library(n_videos=2, per_video=2)  # 4 clips
    q = np.repeat(vecs[:1], 5, axis=0)
    with pytest.raises(ChoiceError, match=r"5 shots need 5 different clips.*allow_repeats=true"):
        choose_clips(q, [2.0] * 5, flat_search(vecs), clips, settings())


def test_clip_too_short_for_the_shot_is_skipped_and_reported():
    clips, vecs = make_library(length=4.0)
    short = [Clip(c.clip_id, c.video_id, c.source, c.start, c.start + (1.0 if c.clip_id == 0 else 4.0), c.scene,
                  c.scene_start, c.scene_end) for c in clips]
    out = choose_clips(vecs[:1], [2.0], flat_search(vecs), short, settings())
    assert out[0].clip.clip_id != 0
    with pytest.raises(ChoiceError, match="longest clip in the library lasts 4.00 s"):
        choose_clips(vecs[:1], [4.5], flat_search(vecs), short, settings())
    # The crossfade counts: a 3.9 s shot with 0.2 s of crossfade needs 4.1 s.
    with pytest.raises(ChoiceError, match="4.10 s"):
        choose_clips(vecs[:1], [3.9], flat_search(vecs), short, settings(), extra=0.2)


def test_clip_straddling_a_scene_cut_is_never_used():
    clips, vecs = make_library()
    bad = list(clips)
    c = clips[3]
    bad[3] = Clip(c.clip_id, c.video_id, c.source, c.start, c.end, c.scene, c.start + 1.0, c.end)  # cut inside
    out = choose_clips(vecs[3:4], [2.0], flat_search(vecs), bad, settings())
    assert out[0].clip.clip_id != 3


def test_whole_library_ranked_when_top_n_has_nothing():
    clips, vecs = make_library()
    search = flat_search(vecs)
    # Two shots asking for vid0's clips; top_n=1: shot 1's only candidate is from vid0 -> full ranking.
    out = choose_clips(np.stack([vecs[0], vecs[1]]), [2.0, 2.0], search, clips, settings(top_n=1))
    assert out[1].clip.video_id != "vid0"
    assert search.calls == [1, len(clips)]
    assert out[1].rank == -1


def test_same_source_error_names_the_fix():
    clips = [Clip(i, "only", "/x.mp4", 5.0 * i, 5.0 * i + 4, i, 5.0 * i, 5.0 * i + 5) for i in range(4)]
    vecs = np.eye(4, dtype=np.float32)
    with pytest.raises(ChoiceError, match="avoid_same_source=false"):
        choose_clips(vecs[:2], [2.0, 2.0], flat_search(vecs), clips, settings())
    out = choose_clips(vecs[:2], [2.0, 2.0], flat_search(vecs), clips, settings(avoid_same_source=False))
    assert [c.clip.clip_id for c in out] == [0, 1]


def test_empty_library():
    with pytest.raises(ChoiceError, match="empty"):
        choose_clips(np.zeros((1, 4), np.float32), [2.0], flat_search(np.zeros((0, 4), np.float32)), [], settings())


def test_temperature_sampling_is_seeded_and_varied():
    clips, vecs = make_library(n_videos=6, per_video=4)
    q = vecs[np.random.default_rng(3).integers(0, len(vecs), 6)]
    runs = {seed: [c.clip.clip_id for c in choose_clips(q, [2.0] * 6, flat_search(vecs), clips,
                                                       settings(temperature=0.5, top_n=10, seed=seed))]
            for seed in range(6)}
    again = [c.clip.clip_id for c in choose_clips(q, [2.0] * 6, flat_search(vecs), clips,
                                                 settings(temperature=0.5, top_n=10, seed=0))]
    assert again == runs[0]
    assert len({tuple(v) for v in runs.values()}) > 1
    greedy = [c.clip.clip_id for c in choose_clips(q, [2.0] * 6, flat_search(vecs), clips, settings(top_n=10))]
    assert greedy == [c.clip.clip_id for c in choose_clips(q, [2.0] * 6, flat_search(vecs), clips,
                                                          settings(top_n=10, seed=99))]


def test_shot_queries_weight_by_overlap():
    w = np.eye(3, dtype=np.float32)
    starts, ends = np.array([0.0, 1.0, 2.0]), np.array([2.0, 3.0, 4.0])
    q = shot_queries(w, starts, ends, [(0.0, 1.0), (1.0, 3.0), (9.0, 10.0)])
    np.testing.assert_allclose(q[0], [1, 0, 0], atol=1e-6)          # only window 0 overlaps
    ref = np.array([1.0, 2.0, 1.0]) / np.linalg.norm([1.0, 2.0, 1.0])  # overlaps 1 s, 2 s, 1 s
    np.testing.assert_allclose(q[1], ref, atol=1e-6)
    np.testing.assert_allclose(q[2], [0, 0, 1], atol=1e-6)          # none overlaps: nearest centre


def test_in_point_rules():
    clip = Clip(0, "v", "/v.mp4", 10.0, 16.0, 0, 10.0, 16.0)
    assert set(IN_POINT_RULES) == {"best_window", "start", "middle"}
    assert IN_POINT_RULES["start"](clip, 2.0, None) == 10.0
    assert IN_POINT_RULES["middle"](clip, 2.0, None) == 12.0
    seen = []

    def scorer(c, cands, d):
        seen.append(list(cands))
        return -np.abs(cands - 13.0)

    assert in_point_best_window(clip, 2.5, None, scorer) == 13.0
    assert seen == [[10.0, 11.0, 12.0, 13.0]]  # 13 + 2.5 <= 16; 14 + 2.5 > 16
    assert in_point_best_window(clip, 2.5, None, None) == 10.0
