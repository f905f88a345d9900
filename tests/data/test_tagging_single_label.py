"""GTZAN (fault-filtered split) and generic single-label data: published formats, errors, val crops."""
import numpy as np
import pytest
import torch

from vcmr.audio.io import save_audio
from vcmr.data.tagging import (
    GTZAN_GENRES,
    AnnotationFormatError,
    AudioStore,
    DatasetFilesError,
    TaggingDataModule,
    build_index,
    parse_gtzan,
    parse_single_label_csv,
    parse_single_label_folders,
)


def _cfg(**kw):
    base = {"name": "gtzan", "report_name": None, "root": None, "audio_root": None, "split": "filtered",
            "tagset": "top50tags", "subset": "test", "sample_rate": 8000}
    return {**base, **kw}


def write_gtzan_lists(root, per_split=None):
    per_split = per_split or {"train": ["blues/blues.00029.wav", "jazz/jazz.00001.wav"],
                              "valid": ["blues/blues.00000.wav"], "test": ["rock/rock.00012.wav", "pop/pop.00003.wav"]}
    for split, lines in per_split.items():
        (root / f"{split}_filtered.txt").write_text("\n".join(lines) + "\n")
    return root


def test_gtzan_parses_the_published_lists(tmp_path):
    index = parse_gtzan(write_gtzan_lists(tmp_path), audio_root=tmp_path / "genres")
    assert index.task == "single_label" and index.tags == list(GTZAN_GENRES) and len(GTZAN_GENRES) == 10
    assert index.tags == sorted(index.tags)  # torchaudio's gtzan_genres order
    rock = index.splits["test"][0]
    assert rock.key == "rock.00012" and rock.path == "rock/rock.00012.wav"
    assert rock.labels.tolist() == [float(g == "rock") for g in GTZAN_GENRES]
    assert index.audio_root == tmp_path / "genres"
    assert any("443" in n for n in index.notes)  # a shortened list is reported against the published size
    assert build_index(_cfg(root=str(tmp_path))).name == "gtzan"


def test_gtzan_errors(tmp_path):
    with pytest.raises(DatasetFilesError, match=r"(?s)train_filtered.txt.*jongpillee/music_dataset_split"):
        parse_gtzan(tmp_path)
    write_gtzan_lists(tmp_path, {"train": ["techno/techno.00001.wav"], "valid": [], "test": []})
    with pytest.raises(AnnotationFormatError, match=r"train_filtered.txt:1: .*GTZAN genre"):
        parse_gtzan(tmp_path)
    write_gtzan_lists(tmp_path, {"train": ["jazz/jazz.00001.wav"], "valid": [], "test": ["jazz/jazz.00001.wav"]})
    with pytest.raises(AnnotationFormatError, match=r"test_filtered.txt:1: jazz/jazz.00001.wav is already listed"):
        parse_gtzan(tmp_path)
    with pytest.raises(ValueError, match="data.split"):
        build_index(_cfg(root=str(tmp_path), split="random"))


def test_single_label_csv(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "path,label,split\nx/a.wav,dog,train\nx/b.wav,cat,train\n\nx/c.wav,cat,valid\nx/d.wav,dog,test\n"
    )
    index = build_index(_cfg(name="single_label", root=str(tmp_path), split="csv"))
    assert index.tags == ["cat", "dog"] and index.task == "single_label"
    assert [t.labels.tolist() for t in index.splits["train"]] == [[0.0, 1.0], [1.0, 0.0]]
    (tmp_path / "labels.csv").write_text("path,label,split\nx/a.wav,dog,train\nx/c.wav,bird,test\n")
    with pytest.raises(AnnotationFormatError, match=r"labels.csv:3: class 'bird' has no track in the train split"):
        parse_single_label_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label,split\nx/a.wav,dog,training\n")
    with pytest.raises(AnnotationFormatError, match=r"labels.csv:2: split must be train, valid or test"):
        parse_single_label_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("file,class\n")
    with pytest.raises(AnnotationFormatError, match=r"labels.csv:1: expected the header path,label,split"):
        parse_single_label_csv(tmp_path)
    with pytest.raises(DatasetFilesError, match="labels.csv"):
        parse_single_label_csv(tmp_path / "nowhere")


def test_single_label_folders(tmp_path):
    for split, cls, name in [("train", "b", "1.wav"), ("train", "a", "2.flac"), ("valid", "a", "3.wav"),
                             ("test", "b", "sub/4.wav"), ("train", "a", "notes.txt")]:
        (tmp_path / split / cls / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / split / cls / name).write_bytes(b"x")
    index = parse_single_label_folders(tmp_path)
    assert index.tags == ["a", "b"]
    assert [t.path for t in index.splits["train"]] == ["train/a/2.flac", "train/b/1.wav"]
    assert index.splits["test"][0].path == "test/b/sub/4.wav" and index.splits["test"][0].labels.tolist() == [0, 1]
    (tmp_path / "test").rename(tmp_path / "testing")
    with pytest.raises(DatasetFilesError, match=r"lacks the split folder\(s\) \['test'\]"):
        parse_single_label_folders(tmp_path)


def test_validation_crops_center_or_random(tmp_path):
    sr = 1000
    (tmp_path / "labels.csv").write_text("path,label,split\na.wav,x,train\na.wav,x,valid\na.wav,x,test\n")
    save_audio(tmp_path / "a.wav", np.linspace(-0.9, 0.9, 5000).astype(np.float32), sr)
    index = parse_single_label_csv(tmp_path)
    store = AudioStore(tmp_path, sr)
    loader = {"batch_size": 1, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}
    centre = TaggingDataModule(index, store, 100, loader)
    xs = [next(iter(centre.val_dataloader())).data[0] for _ in range(3)]
    assert all(torch.equal(x, xs[0]) for x in xs)
    torch.manual_seed(0)
    rnd = TaggingDataModule(index, store, 100, loader, val_crop="random")
    xs = [next(iter(rnd.val_dataloader())).data[0] for _ in range(4)]
    assert len({round(float(x[0, 0, 0]), 4) for x in xs}) > 1
    assert torch.equal(next(iter(rnd.test_dataloader())).data[0], next(iter(centre.test_dataloader())).data[0])  # test: centred
    with pytest.raises(ValueError, match="data.val_crop"):
        TaggingDataModule(index, store, 100, loader, val_crop="middle")
