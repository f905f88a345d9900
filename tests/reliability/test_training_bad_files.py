"""A file that fails to decode during training never ends the run (issue 15, item 2).

With ``data.verify=header`` an mp4 whose header is intact but whose data is cut passes the
index check; during training its item is dropped from the batch, counted in
``<stage>/bad_items`` and the file appended to the run's ``rejected_files.tsv``
(see ``vcmr/data/collate.py``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from vcmr.audio.io import AudioDecodeError, load_audio, save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.data.audio_folder import AudioClipDataset, AudioFile, read_report
from vcmr.data.collate import BadItem, CheckedBatch, drop_bad_items
from vcmr.data.video_music import Segment, VideoMusicDataset
from vcmr.demo.synth import random_spec, render
from vcmr.trainers.base import TrainingDataError
from vcmr.trainers.music import MusicPretrainConfig, train
from vcmr.utils import hash_split

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "trainers"))
import hostile  # noqa: E402
from tiny import stage1_overrides  # noqa: E402
from tiny_stage import TinyContrastive  # noqa: E402

SR = 16000


def _names(prefix: str, ext: str, n_train: int, n_val: int) -> list:
    """File names whose hash puts ``n_train`` on the training side and ``n_val`` on validation (val_fraction 0.3)."""
    out, want = [], {"train": n_train, "val": n_val}
    i = 0
    while any(want.values()):
        name = f"{prefix}{i}.{ext}"
        side = hash_split(name, 0.3)
        if want[side]:
            want[side] -= 1
            out.append(name)
        i += 1
    return out


def _metrics(run: Path) -> list:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_datasets_return_a_bad_item_and_the_collate_drops_it(tmp_path):
    cut = hostile.truncated_mp4(tmp_path / "cut.mp4", 3.0, SR, keep=0.0)
    good = tmp_path / "good.wav"
    save_audio(good, hostile.tone(3.0, SR), SR)
    with pytest.raises(AudioDecodeError):
        load_audio(cut, SR, offset=1.0, duration=0.2)  # what used to end the run in a worker
    files = [AudioFile(str(good), "good.wav", 3.0), AudioFile(str(cut), "cut.mp4", 3.0)]
    ds = AudioClipDataset(files, SR, 3200, random_offset=True)
    assert isinstance(ds[0], torch.Tensor)
    assert ds[1] == BadItem("cut.mp4", "failed to decode during training: no audio samples decoded")
    batch = drop_bad_items([ds[0], ds[1], ds[0]])
    assert isinstance(batch, CheckedBatch) and batch.data.shape == (2, 1, 3200)
    assert batch.bad == (ds[1],)
    assert drop_bad_items([ds[1]]) == CheckedBatch(None, (ds[1],))
    # Stage 2: the segment's path relative to the dataset folder names it.
    feats = tmp_path / "f.npy"
    np.save(feats, np.zeros((3, 2), np.float32))
    seg = Segment("v", str(cut), str(feats), 0, 0, 3 * SR, 3, "audio/v/v_00.mp4")
    item = VideoMusicDataset([seg], SR, 3200, random_crop=True)[0]
    assert isinstance(item, BadItem) and item.path == "audio/v/v_00.mp4"


def test_stage1_run_with_a_cut_mp4_and_header_verification_completes(tmp_path):
    root = tmp_path / "songs"
    rng = np.random.default_rng(3)
    for name in _names("song", "wav", n_train=6, n_val=2):
        save_audio(root / name, render(random_spec(rng), SR, 1.5), SR)
    bad_train = _names("cut", "mp4", n_train=2, n_val=0)
    bad_val = [n for n in _names("cutv", "mp4", n_train=0, n_val=1)]
    for name in bad_train + bad_val:
        hostile.truncated_mp4(root / name, 3.0, SR, keep=0.0)  # header intact, no audio data
    cfg = load_config(CONFIG_DIR / "mus_pretrain.yaml",
                      stage1_overrides(root, tmp_path / "runs", ["data.verify=header"]), MusicPretrainConfig)
    result = train(cfg)  # before: AudioDecodeError from the DataLoader, exit 1

    run = Path(result["run_dir"])
    assert result["data"] == {"train": 8, "val": 3, "rejected": 0}  # the header check let them in
    assert (run / "export" / "encoder.safetensors").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # 2 epochs x 2 batches of 4 - 1 dropped item each: no step lost
    rows = _metrics(run)
    train_bad = [float(r["train/bad_items"]) for r in rows if r.get("train/bad_items")]
    val_bad = [float(r["val/bad_items"]) for r in rows if r.get("val/bad_items")]
    assert train_bad == [2.0, 2.0]  # every training item is seen once per epoch
    assert val_bad == [1.0, 1.0]
    report = {r.relpath: r.reason for r in read_report(run / "rejected_files.tsv")}
    assert set(report) == set(bad_train + bad_val)
    for name in bad_train:
        assert report[name] == "failed to decode during training: no audio samples decoded (train, epoch 0)"
    assert report[bad_val[0]].endswith("(val, epoch 0)")


def _fit_tiny(tmp_path: Path, n: int, bad, batch_size: int, **trainer_kw) -> tuple:
    pl.seed_everything(0)
    module = TinyContrastive(n, bad, batch_size)
    trainer = pl.Trainer(default_root_dir=str(tmp_path), max_epochs=1, accelerator="cpu", logger=pl.loggers.CSVLogger(
        str(tmp_path), name="csv", version=""), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, use_distributed_sampler=False, **trainer_kw)
    trainer.fit(module)
    return trainer, module


def test_a_batch_of_only_bad_items_skips_its_step(tmp_path):
    # Batches [0, 1] (both bad: skipped), [2, 3] (one bad: one item), [4, 5].
    trainer, module = _fit_tiny(tmp_path, 6, bad=[0, 1, 2], batch_size=2)
    assert module.sizes == [1, 2] and (module.skipped_steps, module.data_steps) == (1, 2)
    w = module.weights
    # The empty step left the weights alone (a 1-item NT-Xent batch has no negative: zero loss);
    # the 2-item step moved them.
    assert torch.equal(w[0], w[1]) and not torch.equal(w[2], w[3])
    rows = _metrics(tmp_path)
    assert [float(r["train/bad_items"]) for r in rows if r.get("train/bad_items")] == [3.0]
    assert [r.relpath for r in read_report(tmp_path / "rejected_files.tsv")] == ["item00.wav", "item01.wav", "item02.wav"]


def test_every_training_item_bad_ends_with_the_no_step_error_not_a_crash(tmp_path):
    root = tmp_path / "songs"
    for name in _names("cut", "mp4", n_train=4, n_val=0):
        hostile.truncated_mp4(root / name, 3.0, SR, keep=0.0)
    rng = np.random.default_rng(0)
    for name in _names("song", "wav", n_train=0, n_val=2):
        save_audio(root / name, render(random_spec(rng), SR, 1.5), SR)
    cfg = load_config(CONFIG_DIR / "mus_pretrain.yaml",
                      stage1_overrides(root, tmp_path / "runs", ["data.verify=header", "trainer.max_epochs=1"]),
                      MusicPretrainConfig)
    with pytest.raises(TrainingDataError, match=r"all 1 batches held only files that failed to decode"):
        train(cfg)
    (run,) = (tmp_path / "runs" / "tiny").glob("version_*")
    assert len(read_report(run / "rejected_files.tsv")) == 4


def test_ddp_ranks_skip_together_and_gather_unequal_batches(tmp_path, warm_start_method):
    """Two gloo ranks, DistributedSampler without shuffling: rank 0 gets items 0, 2, 4, ...
    Step 1: rank 0's items 0 and 2 are bad -> both ranks skip (a zero loss). Step 2: rank 0
    has one item (4 is bad), rank 1 two: the loss gathers 3 rows. Step 3: full.
    The ranks are started like ``ddp_spawn``'s, from the suite's warm forkserver."""
    _fit_tiny(tmp_path, 12, bad=[0, 2, 4], batch_size=2, devices=2,
              strategy=DDPStrategy(start_method=warm_start_method))
    rows = _metrics(tmp_path)
    assert [float(r["train/bad_items"]) for r in rows if r.get("train/bad_items")] == [3.0]  # both ranks
    assert [r.relpath for r in read_report(tmp_path / "rejected_files.tsv")] == ["item00.wav", "item02.wav", "item04.wav"]
    # What each rank saw: step 1 skipped on both (weights unchanged), then 1 and 2 items on rank 0.
    for rank, sizes in ((0, [1, 2]), (1, [2, 2])):
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert seen["sizes"] == sizes and (seen["skipped"], seen["data"]) == (1, 2), rank
        w = seen["weights"]
        assert torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2]), rank
