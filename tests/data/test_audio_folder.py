import numpy as np
import pytest
import torch

from vcmr.audio.io import save_audio
from vcmr.data.audio_folder import AudioClipDataset, AudioFolderDataModule, index_folder, write_report
from vcmr.demo.music import ensure_demo_music
from vcmr.utils import hash_split

SR = 8000


def make_folder(root, n=6, seconds=2.0):
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / f"album{i % 2}"
        save_audio(sub / f"t{i}.wav", (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
    save_audio(root / "short.flac", np.zeros(SR // 4, np.float32), SR)
    (root / "empty.wav").write_bytes(b"")
    (root / "junk.mp3").write_bytes(b"\x00garbage" * 64)
    (root / "notes.txt").write_text("not audio, ignored by extension")
    return root


def loader_cfg(**kw):
    cfg = {"batch_size": 2, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}
    cfg.update(kw)
    return cfg


def test_split_is_stable_when_files_are_added():
    names = [f"a/{i}.wav" for i in range(200)]
    before = {n: hash_split(n, 0.2) for n in names}
    more = names + [f"b/{i}.wav" for i in range(300)]
    after = {n: hash_split(n, 0.2) for n in more}
    assert all(after[n] == before[n] for n in names)
    share = np.mean([v == "val" for v in after.values()])
    assert 0.12 < share < 0.28


@pytest.mark.parametrize("verify", ["full", "header"])
def test_broken_and_short_files_are_reported_once(tmp_path, verify):
    make_folder(tmp_path)
    usable, rejected = index_folder(tmp_path, [".wav", ".flac", ".mp3"], SR, 1.0, verify=verify, progress=False)
    assert sorted(f.relpath for f in usable) == sorted(f"album{i % 2}/t{i}.wav" for i in range(6))
    reasons = {r.relpath: r.reason for r in rejected}
    assert set(reasons) == {"short.flac", "empty.wav", "junk.mp3"}
    assert "empty" in reasons["empty.wav"]
    assert "too short" in reasons["short.flac"]


def test_datamodule_report_and_batches(tmp_path):
    root = make_folder(tmp_path / "audio", n=10)
    report = tmp_path / "rejected.tsv"
    dm = AudioFolderDataModule(
        str(root), SR, 4000, 0.3, [".wav", ".flac", ".mp3"], "full", 2, loader_cfg()
    )
    dm.setup()
    write_report(report, dm.rejected)
    counts = dm.summary()
    assert counts["train"] + counts["val"] == 10 and counts["rejected"] == 3
    lines = report.read_text().strip().splitlines()
    assert lines[0] == "relpath\treason" and len(lines) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch.bad == ()  # every file here decodes (see tests/reliability for the others)
    assert batch.data.shape == (2, 1, 4000) and batch.data.dtype == torch.float32


def test_validation_items_are_deterministic_and_training_items_random(tmp_path):
    make_folder(tmp_path, n=2, seconds=3.0)
    usable, _ = index_folder(tmp_path, [".wav"], SR, 1.0, progress=False)
    val = AudioClipDataset(usable, SR, 4000, random_offset=False)
    torch.testing.assert_close(val[0], val[0])
    train = AudioClipDataset(usable, SR, 4000, random_offset=True)
    assert not torch.equal(train[0], train[0])


def test_demo_music_is_generated_once(tmp_path):
    folder = ensure_demo_music(4, 2.0, SR, root=tmp_path)
    songs = sorted((folder / "songs").glob("*.wav"))
    assert len(songs) == 4 and (folder / "songs.jsonl").read_text().count("\n") == 4
    mtime = songs[0].stat().st_mtime_ns
    assert ensure_demo_music(4, 2.0, SR, root=tmp_path) == folder
    assert songs[0].stat().st_mtime_ns == mtime
