"""Stage-2 dataset over a builder output folder: index, split, crop/feature alignment."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from vcmr.data.video_music import VideoMusicDataModule, VideoMusicDataset, feature_rows, index_dataset
from vcmr.data.manifest import VideoRecord, write_manifest
from vcmr.utils import hash_split

SR = 1000          # small rate keeps the fixture tiny; the rule is rate-independent
SEG_S = 5          # seconds per segment
N_SEG = 3
DIM = 4
SLOPE = 1.0 / (SEG_S * N_SEG * SR)


def make_dataset(root, n_videos=12, rejected=2):
    """Audio is a float ramp over the kept window (value tells the sample position);
    feature row k is filled with k (value tells the second)."""
    records = []
    for v in range(n_videos):
        vid = f"vid{v:02d}"
        paths = []
        for j in range(N_SEG):
            idx = np.arange(j * SEG_S * SR, (j + 1) * SEG_S * SR)
            rel = f"audio/{vid}/{vid}_{j:02d}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, (idx * SLOPE - 0.5).astype(np.float32), SR, subtype="FLOAT")
            paths.append(rel)
        feats = np.repeat(np.arange(SEG_S * N_SEG, dtype=np.float32)[:, None], DIM, axis=1)
        (root / "features").mkdir(exist_ok=True)
        np.save(root / "features" / f"{vid}.npy", feats)
        records.append(VideoRecord(vid, "ok", "", 30.0, 3, 8.0, 5.0, 15.0, N_SEG, feats.shape, tuple(paths), f"features/{vid}.npy"))
    for r in range(rejected):
        records.append(VideoRecord(f"bad{r}", "rejected", "scene longer than 30 s", 40.0, 1, 40.0, 0, 0, 0, (0, 0), (), ""))
    write_manifest(root / "manifest.csv", records)
    return root


def test_feature_rows_rule():
    # 98,415 samples at 16 kHz -> 6 rows, centred on the crop.
    assert feature_rows(0, 98415, 16000, 120) == (0, 6)
    assert feature_rows(16000 * 10, 98415, 16000, 120) == (10, 6)
    # Centre at 10.5 + 3.075 = 13.575 s -> 13.575 - 3 = 10.575 -> rounds to 11.
    assert feature_rows(16000 * 10 + 8000, 98415, 16000, 120) == (11, 6)
    # Clamped at the end of the window.
    assert feature_rows(16000 * 118, 98415, 16000, 120) == (114, 6)
    with pytest.raises(ValueError, match="needs 6 feature rows"):
        feature_rows(0, 98415, 16000, 5)


def test_index_excludes_rejected_and_counts(tmp_path):
    make_dataset(tmp_path)
    segments, counts = index_dataset(tmp_path, SR, 2000)
    assert counts == {"ok": 12, "rejected": 2}
    assert len(segments) == 12 * N_SEG
    assert [s.start_sample for s in segments[:3]] == [0, 5000, 10000]


def test_items_align_audio_and_features(tmp_path):
    make_dataset(tmp_path, n_videos=2)
    segments, _ = index_dataset(tmp_path, SR, 2400)
    ds = VideoMusicDataset(segments, SR, 2400, random_crop=True)
    torch.manual_seed(0)
    for idx in range(len(ds)):
        for _ in range(3):
            item = ds[idx]
            a, v = item["audio"], item["video"]
            assert a.shape == (1, 2400) and v.shape == (2, DIM)
            start = int(round((a[0, 0].item() + 0.5) / SLOPE))  # global sample of the crop start
            seg = segments[idx]
            assert seg.start_sample <= start <= seg.start_sample + seg.n_samples - 2400
            # Samples are consecutive: the crop is exactly [start, start + 2400).
            np.testing.assert_allclose(a[0, -1].item(), (start + 2399) * SLOPE - 0.5, atol=1e-6)
            first, n = feature_rows(start, 2400, SR, 15)
            np.testing.assert_array_equal(v[:, 0].numpy(), np.arange(first, first + n))
            # The rows are the seconds the crop's centre sits in the middle of.
            centre = (start + 1200) / SR
            assert abs((first + n / 2) - centre) <= 0.5 + 1e-9


def test_validation_is_deterministic_and_one_item_per_video(tmp_path):
    make_dataset(tmp_path, n_videos=12)
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}
    dm = VideoMusicDataModule(str(tmp_path), SR, 2000, 0.3, loader)
    dm.setup()
    val_ids = [s.video_id for s in dm.val_segments]
    assert len(val_ids) == len(set(val_ids)) > 0
    assert all(hash_split(v, 0.3) == "val" for v in val_ids)
    assert not {s.video_id for s in dm.train_segments} & set(val_ids)
    b1 = next(iter(dm.val_dataloader())).data  # a CheckedBatch: no bad items here
    b2 = next(iter(dm.val_dataloader())).data
    torch.testing.assert_close(b1["audio"], b2["audio"])
    assert b1["video"].shape[1:] == (2, DIM)


def test_sample_rate_mismatch_is_reported(tmp_path):
    make_dataset(tmp_path, n_videos=1)
    with pytest.raises(ValueError, match="1000 Hz but data.sample_rate=16000"):
        index_dataset(tmp_path, 16000, 2000)


def test_missing_manifest_names_the_folder(tmp_path):
    with pytest.raises(Exception, match="manifest not found"):
        index_dataset(tmp_path, SR, 2000)
