"""Group-aware stage-1 split: one video's segments stay on one side with group_by=parent."""
import numpy as np
import pytest

from vcmr.audio.io import save_audio
from vcmr.data.audio_folder import AudioFolderDataModule, split_key
from vcmr.utils import hash_split

SR = 8000


def loader_cfg():
    return {"batch_size": 2, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}


def test_split_key():
    assert split_key("audio/vid1/vid1_03.wav", "none") == "audio/vid1/vid1_03.wav"
    assert split_key("audio/vid1/vid1_03.wav", "parent") == "audio/vid1"
    assert split_key("top.wav", "parent") == "top.wav"  # a file under the root is its own group
    with pytest.raises(ValueError, match="data.group_by"):
        split_key("a.wav", "album")


def make_builder_like(root, n_videos=12, n_segments=4):
    rng = np.random.default_rng(0)
    for v in range(n_videos):
        for j in range(n_segments):
            x = (0.2 * rng.standard_normal(int(1.5 * SR))).astype(np.float32)
            save_audio(root / "audio" / f"v{v:02d}" / f"v{v:02d}_{j:02d}.wav", x, SR)


def sides(dm):
    def groups(files):
        return {f.relpath.split("/")[1] for f in files}
    return groups(dm.train_files), groups(dm.val_files)


def test_parent_grouping_keeps_segments_together(tmp_path):
    make_builder_like(tmp_path)
    common = (str(tmp_path), SR, 4000, 0.4, [".wav"], "header", 1, loader_cfg())
    per_file = AudioFolderDataModule(*common)  # default: per file, as before
    per_file.setup()
    train, val = sides(per_file)
    assert train & val, "with per-file splitting some video should straddle both sides"
    # The default is the per-file hash of the relative path, unchanged.
    expect_val = sorted(
        f.relpath for f in per_file.train_files + per_file.val_files if hash_split(f.relpath, 0.4) == "val"
    )
    assert sorted(f.relpath for f in per_file.val_files) == expect_val

    grouped = AudioFolderDataModule(*common, group_by="parent")
    grouped.setup()
    train, val = sides(grouped)
    assert not (train & val) and train and val
    assert len(grouped.train_files) + len(grouped.val_files) == 48
    assert all(hash_split(f"audio/{v}", 0.4) == "val" for v in val)


def test_unknown_group_by_fails_before_scanning(tmp_path):
    with pytest.raises(ValueError, match="data.group_by"):
        AudioFolderDataModule(str(tmp_path / "nowhere"), SR, 4000, 0.4, [".wav"], "header", 1, loader_cfg(), group_by="x")
