"""Parsers of the published tagging annotation files, audio access and crop datasets."""

import json

import numpy as np
import pytest
import torch

from vcmr.audio.io import save_audio
from vcmr.data.tagging import (
    DATASETS,
    PONS2017_TAGS,
    AnnotationFormatError,
    AudioStore,
    CropDataset,
    DatasetFilesError,
    TaggingDataModule,
    Track,
    build_index,
    drop_unusable,
    parse_mtat_pons2017,
    parse_mtat_won2020,
    parse_mtg_jamendo,
)


def _gt_line(clip_id, positives, n=50):
    values = ", ".join("1.0" if i in positives else "0.0" for i in range(n))
    return f"{clip_id}\t[{values}]\n"


@pytest.fixture
def pons_root(tmp_path):
    (tmp_path / "index_mtt.tsv").write_text(
        "2\tf/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3\n"
        "6\tf/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-146-175.mp3\n"
        "14\tc/lvx_nova-lvx_nova-01-contimune-30-59.mp3\n"
        "19\tc/lvx_nova-lvx_nova-01-contimune-175-204.mp3\n"
    )
    (tmp_path / "train_gt_mtt.tsv").write_text(_gt_line(2, {0, 1}) + _gt_line(6, {49}))
    (tmp_path / "val_gt_mtt.tsv").write_text(_gt_line(14, {3}))
    (tmp_path / "test_gt_mtt.tsv").write_text(_gt_line(19, set()))
    return tmp_path


def test_pons2017_parses_published_format(pons_root):
    idx = parse_mtat_pons2017(pons_root)
    assert idx.tags == list(PONS2017_TAGS) and len(idx.tags) == 50
    assert [t.key for t in idx.splits["train"]] == ["2", "6"]
    t = idx.splits["train"][0]
    assert t.path == "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"
    assert t.labels.dtype == np.float32 and t.labels.shape == (50,)
    assert np.flatnonzero(t.labels).tolist() == [0, 1]
    assert idx.tags[np.flatnonzero(idx.splits["train"][1].labels)[0]] == "choral"
    assert idx.splits["valid"][0].labels[3] == 1 and idx.labels("test").sum() == 0
    assert idx.audio_root == pons_root


def test_pons2017_missing_files_are_listed_with_source(tmp_path):
    (tmp_path / "index_mtt.tsv").write_text("2\ta.mp3\n")
    (tmp_path / "train_gt_mtt.tsv").write_text(_gt_line(2, {0}))
    with pytest.raises(DatasetFilesError) as err:
        parse_mtat_pons2017(tmp_path)
    msg = str(err.value)
    assert "2 annotation file(s) missing" in msg
    assert "val_gt_mtt.tsv" in msg and "test_gt_mtt.tsv" in msg and "train_gt_mtt.tsv" not in msg
    assert "jordipons/musicnn-training" in msg


@pytest.mark.parametrize(
    "bad, match",
    [
        ("2\t[1.0, 0.0]\n", "expected 50 label values"),
        (_gt_line(2, {0}).replace("1.0", "2.0", 1), "0 or 1"),
        ("2\t[__import__('os'), 0.0]\n", "non-numeric"),
        ("2\t1.0, 0.0\n", r"\[0.0, 1.0"),
        (_gt_line(99, {0}), "not in index_mtt.tsv"),
    ],
)
def test_pons2017_rejects_malformed_rows(pons_root, bad, match):
    (pons_root / "train_gt_mtt.tsv").write_text(_gt_line(6, {1}) + bad)
    with pytest.raises(AnnotationFormatError, match=match) as err:
        parse_mtat_pons2017(pons_root)
    assert "train_gt_mtt.tsv:2" in str(err.value)


def test_won2020_parses_npy_files(tmp_path):
    tags = np.array([f"tag{i}" for i in range(50)])
    binary = np.zeros((10, 50), dtype=np.int64)
    binary[3, [1, 7]] = 1
    binary[5, 0] = 1
    np.save(tmp_path / "tags.npy", tags)
    np.save(tmp_path / "binary.npy", binary)
    np.save(tmp_path / "train.npy", np.array(["3\tf/a-0-29.mp3", "5\tc/b-30-59.mp3"]))
    np.save(tmp_path / "valid.npy", np.array(["0\t0/c-0-29.mp3"]))
    np.save(tmp_path / "test.npy", np.array(["9\td/e-0-29.mp3"]))
    idx = parse_mtat_won2020(tmp_path, audio_root=tmp_path / "mp3")
    assert idx.tags == list(tags)
    assert [t.path for t in idx.splits["train"]] == ["f/a-0-29.mp3", "c/b-30-59.mp3"]
    assert np.flatnonzero(idx.splits["train"][0].labels).tolist() == [1, 7]
    assert idx.splits["train"][1].labels[0] == 1
    assert idx.audio_root == tmp_path / "mp3"
    np.save(tmp_path / "test.npy", np.array(["12\td/e-0-29.mp3"]))
    with pytest.raises(AnnotationFormatError, match="past binary.npy"):
        parse_mtat_won2020(tmp_path)
    np.save(tmp_path / "test.npy", np.array([{"x": 1}], dtype=object))
    with pytest.raises(AnnotationFormatError, match="not a plain numpy array"):
        parse_mtat_won2020(tmp_path)
    (tmp_path / "binary.npy").unlink()
    with pytest.raises(DatasetFilesError, match="binary.npy") as err:
        parse_mtat_won2020(tmp_path)
    assert "sota-music-tagging-models" in str(err.value) and "tags.npy" not in str(err.value)


HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def _mtg_root(tmp_path, rows):
    folder = tmp_path / "data" / "splits" / "split-0"
    folder.mkdir(parents=True)
    for name, body in rows.items():
        (folder / f"autotagging_top50tags-{name}.tsv").write_text(HEADER + body)
    return tmp_path


def test_mtg_jamendo_multi_tag_rows_and_vocabulary(tmp_path):
    root = _mtg_root(tmp_path, {
        "train": (
            "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock\n"
            "track_0917543\tartist_378901\talbum_108650\t43/917543.mp3\t221.2\tgenre---pop\t"
            "instrument---piano\tmood/theme---relaxing\n"
            "track_0917546\tartist_378901\talbum_108650\t46/917546.mp3\t167.6\tgenre---chillout\tgenre---pop\n"
        ),
        "validation": "track_0000001\tartist_000001\talbum_000001\t01/1.mp3\t60.0\tgenre---pop\tgenre---jazz\n",
        "test": "track_0000002\tartist_000001\talbum_000001\t02/2.mp3\t61.0\tinstrument---piano\n",
    })
    idx = parse_mtg_jamendo(root, "split-0", "top50tags")
    # Vocabulary: tags of the train file, sorted by string order.
    assert idx.tags == ["genre---chillout", "genre---pop", "genre---punkrock", "instrument---piano", "mood/theme---relaxing"]
    multi = idx.splits["train"][1]
    assert multi.key == "track_0917543" and multi.path == "43/917543.mp3"
    assert [idx.tags[j] for j in np.flatnonzero(multi.labels)] == ["genre---pop", "instrument---piano", "mood/theme---relaxing"]
    assert idx.splits["train"][2].labels.sum() == 2
    # genre---jazz is not in the train vocabulary: ignored and reported.
    assert idx.splits["valid"][0].labels.tolist() == [0, 1, 0, 0, 0]
    assert any("valid: 1 tag occurrence" in n for n in idx.notes)


def test_mtg_jamendo_errors(tmp_path):
    with pytest.raises(DatasetFilesError) as err:
        parse_mtg_jamendo(tmp_path, "split-3", "genre")
    msg = str(err.value)
    assert "3 split file(s) missing" in msg and "autotagging_genre-validation.tsv" in msg
    assert "MTG/mtg-jamendo-dataset" in msg
    with pytest.raises(ValueError, match="tag set"):
        parse_mtg_jamendo(tmp_path, "split-0", "moods")
    root = _mtg_root(tmp_path, {
        "train": "track_1\ta\tb\t01/1.mp3\t10.0\n",
        "validation": "", "test": "",
    })
    with pytest.raises(AnnotationFormatError, match="at least one tag"):
        parse_mtg_jamendo(root, "split-0", "top50tags")
    (root / "data/splits/split-0/autotagging_top50tags-train.tsv").write_text("TRACK\tPATH\n")
    with pytest.raises(AnnotationFormatError, match="header"):
        parse_mtg_jamendo(root, "split-0", "top50tags")


def _cfg(**kw):
    base = {"name": "magnatagatune", "report_name": None, "root": None, "audio_root": None, "split": "pons2017",
            "tagset": "top50tags", "subset": "test", "sample_rate": 8000}
    return {**base, **kw}


def test_build_index_dispatch(pons_root):
    assert build_index(_cfg(root=str(pons_root))).tags == list(PONS2017_TAGS)
    with pytest.raises(ValueError, match="data.split"):
        build_index(_cfg(root=str(pons_root), split="lee2017"))
    with pytest.raises(ValueError, match="data.name"):
        build_index(_cfg(name="fma", root=str(pons_root)))
    with pytest.raises(ValueError, match="data.root"):
        build_index(_cfg())


def test_dataset_registry_and_report_name(pons_root):
    assert sorted(DATASETS) == ["gtzan", "magnatagatune", "mtg_jamendo", "single_label"]
    assert build_index(_cfg(root=str(pons_root))).name == "magnatagatune"
    assert build_index(_cfg(root=str(pons_root), report_name="mtat-50")).name == "mtat-50"


def _index_with_audio(tmp_path, lengths):
    """One wav per length (0 -> an empty file, None -> missing), all in the train split."""
    tracks = []
    for i, n in enumerate(lengths):
        rel = f"a/{i}.wav"
        if n == 0:
            (tmp_path / "a").mkdir(exist_ok=True)
            (tmp_path / rel).write_bytes(b"")
        elif n is not None:
            save_audio(tmp_path / rel, 0.5 * np.sin(np.arange(n) / 5.0).astype(np.float32), 8000)
        tracks.append(Track(str(i), rel, np.array([i % 2, 1 - i % 2], np.float32)))
    from vcmr.data.tagging import TaggingIndex

    return TaggingIndex("t", ["x", "y"], {"train": tracks, "valid": tracks[:1], "test": tracks[:1]}, tmp_path)


def test_drop_unusable_without_cache(tmp_path):
    idx = _index_with_audio(tmp_path, [4000, 0, None, 3000])
    kept, report = drop_unusable(idx, AudioStore(tmp_path, 8000))
    assert [t.key for t in kept.splits["train"]] == ["0", "3"]
    assert report.counts() == {"train": 2, "valid": 0, "test": 0}
    reasons = dict(report.dropped["train"])
    assert reasons == {"a/1.wav": "file is empty (0 bytes)", "a/2.wav": "file does not exist"}


def test_drop_unusable_with_cache(tmp_path):
    idx = _index_with_audio(tmp_path, [4000, 3000])
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="no audio cache"):
        AudioStore(tmp_path, 8000, cache)
    cache.mkdir()
    (cache / "cache_info.json").write_text(json.dumps({"sample_rate": 16000, "format": "int16"}))
    with pytest.raises(ValueError, match="16000 Hz"):
        AudioStore(tmp_path, 8000, cache)
    (cache / "cache_info.json").write_text(json.dumps({"sample_rate": 8000, "format": "int16"}))
    (cache / "a").mkdir()
    np.save(cache / "a/0.npy", np.arange(4000, dtype=np.int16))
    store = AudioStore(tmp_path, 8000, cache)
    with pytest.raises(FileNotFoundError, match="incomplete, 1 track"):
        drop_unusable(idx, store)
    (cache / "failed.tsv").write_text("a/1.wav\tdecoding failed: bad header\n")
    kept, report = drop_unusable(idx, store)
    assert [t.key for t in kept.splits["train"]] == ["0"]
    assert report.dropped["train"] == [("a/1.wav", "decoding failed: bad header")]
    x = store.load_window(kept.splits["train"][0], 3990, 20)
    assert x.shape == (20,) and x[9] == pytest.approx(3999 / 32768) and np.all(x[10:] == 0)


def test_crop_dataset_shapes_and_crops(tmp_path):
    idx = _index_with_audio(tmp_path, [4000, 1000])
    store = AudioStore(tmp_path, 8000)
    full = store.load(idx.splits["train"][0])
    val = CropDataset(idx.splits["train"], store, 2187, random_crop=False)
    x, y = val[0]
    assert x.shape == (1, 2187) and x.dtype == torch.float32 and y.tolist() == [0.0, 1.0]
    start = (4000 - 2187) // 2
    np.testing.assert_allclose(x[0].numpy(), full[start : start + 2187], atol=1e-6)
    short, _ = val[1]  # 1000 samples: zero-padded at the end
    assert short.shape == (1, 2187) and torch.all(short[0, 1000:] == 0) and short[0, :1000].abs().sum() > 0
    train = CropDataset(idx.splits["train"], store, 2187, random_crop=True)
    torch.manual_seed(0)
    crops = {tuple(train[0][0][0, :3].tolist()) for _ in range(6)}
    assert len(crops) > 1  # different windows
    for _ in range(5):
        c = train[0][0][0].numpy()
        hits = [s for s in range(0, 4000 - 2187 + 1) if np.allclose(full[s : s + 2187], c, atol=1e-6)]
        assert hits, "a random crop must be a contiguous window of the track"


def test_datamodule_loaders(tmp_path):
    idx = _index_with_audio(tmp_path, [4000, 3000, 5000])
    loader = {"batch_size": 2, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}
    dm = TaggingDataModule(idx, AudioStore(tmp_path, 8000), 2187, loader)
    x, y = next(iter(dm.train_dataloader())).data
    assert x.shape == (2, 1, 2187) and y.shape == (2, 2)
    assert len(dm.val_dataloader().dataset) == 1
    empty = type(idx)("t", idx.tags, {"train": idx.splits["train"], "valid": [], "test": []}, tmp_path)
    with pytest.raises(ValueError, match="split 'valid' has no usable tracks"):
        TaggingDataModule(empty, AudioStore(tmp_path, 8000), 2187, loader)


def test_a_track_that_fails_at_training_time_drops_out_of_its_batch(tmp_path):
    """A file damaged after the index check: the dataset names it, the collate drops it."""
    from vcmr.data.collate import BadItem

    idx = _index_with_audio(tmp_path, [4000, 3000, 5000])
    (tmp_path / "a" / "1.wav").write_bytes(b"RIFF\x00\x00")  # damaged after indexing
    loader = {"batch_size": 3, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}
    dm = TaggingDataModule(idx, AudioStore(tmp_path, 8000), 2187, loader)
    item = dm.train_dataloader().dataset[1]
    assert isinstance(item, BadItem) and item.path == "a/1.wav" and "failed to decode during training" in item.reason
    batch = next(iter(dm.train_dataloader()))
    x, y = batch.data
    assert x.shape == (2, 1, 2187) and y.shape == (2, 2)
    assert [b.path for b in batch.bad] == ["a/1.wav"]
