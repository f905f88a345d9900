"""The audio folder is indexed once (issue 14, item 4): one process checks, the other ranks
receive its result, and an unchanged folder is never checked twice."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

import vcmr.data.audio_folder as af
from vcmr.audio.io import save_audio
from vcmr.data.audio_folder import INDEX_ENV, AudioFolderDataModule

SR = 8000
N_GOOD = 6
N_CHECKED = N_GOOD + 1  # and one empty file
LOADER = {"batch_size": 2, "num_workers": 0, "pin_memory": False, "persistent_workers": False, "prefetch_factor": None}


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(N_GOOD):
        save_audio(root / f"album{i % 2}" / f"t{i}.wav", (0.3 * rng.standard_normal(2 * SR)).astype(np.float32), SR)
    (root / "empty.wav").write_bytes(b"")
    return root


def count_decodes(monkeypatch=None) -> Dict[str, int]:
    """Count the full decodes the index makes (``verify=full``)."""
    calls = {"n": 0}
    real = af.verify_audio

    def counted(path):
        calls["n"] += 1
        return real(path)

    if monkeypatch is not None:
        monkeypatch.setattr(af, "verify_audio", counted)
    else:
        af.verify_audio = counted
    return calls


def datamodule(root: Path, cache: Path) -> AudioFolderDataModule:
    return AudioFolderDataModule(str(root), SR, 4000, 0.3, [".wav"], "full", 1, LOADER, index_cache=cache)


def index_of(dm: AudioFolderDataModule):
    return ([(f.relpath, f.duration) for f in dm.train_files], [(f.relpath, f.duration) for f in dm.val_files],
            [(r.relpath, r.reason) for r in dm.rejected])


# --------------------------------------------------------------------------------------
# One machine, one process after another
# --------------------------------------------------------------------------------------


def test_an_unchanged_folder_is_checked_once(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "audio")
    calls = count_decodes(monkeypatch)
    first = datamodule(root, tmp_path / "cache")
    first.setup()
    assert calls["n"] == N_CHECKED
    again = datamodule(root, tmp_path / "cache")
    again.setup()
    assert calls["n"] == N_CHECKED and index_of(again) == index_of(first)
    # A changed file is a changed listing: checked again.
    time.sleep(0.01)
    save_audio(root / "album0" / "t0.wav", np.zeros(SR // 2, np.float32), SR)
    changed = datamodule(root, tmp_path / "cache")
    changed.setup()
    assert calls["n"] == 2 * N_CHECKED
    assert ("album0/t0.wav", "too short: 0.50s < 0.60s needed for one clip") in index_of(changed)[2]


def test_a_rank_started_by_the_first_reads_its_index(tmp_path, monkeypatch):
    """What Lightning's launcher does: rank 0 indexes, then starts the other ranks, which
    inherit ``$VCMR_AUDIO_INDEX``."""
    root = make_folder(tmp_path / "audio")
    monkeypatch.delenv(INDEX_ENV, raising=False)
    rank0 = datamodule(root, tmp_path / "cache")
    rank0.setup()
    assert Path(os.environ[INDEX_ENV]).parent == tmp_path / "cache"
    calls = count_decodes(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    rank1 = datamodule(root, tmp_path / "elsewhere")  # not even the same cache folder: the variable names the file
    rank1.setup()
    assert calls["n"] == 0 and index_of(rank1) == index_of(rank0)


# --------------------------------------------------------------------------------------
# Two processes: started side by side (torchrun, SLURM), and under torch.distributed
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, root: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.pop(INDEX_ENV, None)
    os.environ["LOCAL_RANK"] = str(rank)
    af.INDEX_POLL_S = 0.05
    calls = count_decodes()
    out = {}
    # (a) No process group: rank 1 starts first and waits for rank 0's cache file.
    if rank == 0:
        time.sleep(1.0)
    dm = datamodule(Path(root), Path(out_dir) / "cache_side_by_side")
    dm.setup()
    out["side_by_side"] = (calls["n"], index_of(dm))
    # (b) Under torch.distributed: rank 0 broadcasts (a fresh cache folder, so it checks again).
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        calls["n"] = 0
        dm = datamodule(Path(root), Path(out_dir) / f"cache_dist_{rank}")
        dm.setup()
        out["distributed"] = (calls["n"], index_of(dm))
    finally:
        dist.destroy_process_group()
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, warm_start_method):
    import torch.multiprocessing as mp

    root = make_folder(tmp_path_factory.mktemp("audio"))
    out_dir = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_worker, args=(_free_port(), str(root), str(out_dir)), nprocs=2, join=True,
                       start_method=warm_start_method)
    return {r: torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)}, out_dir


@pytest.mark.parametrize("mode", ["side_by_side", "distributed"])
def test_only_rank_0_decodes_and_both_ranks_get_the_same_index(two_ranks, mode):
    results, out_dir = two_ranks
    (calls0, index0), (calls1, index1) = results[0][mode], results[1][mode]
    assert calls0 == N_CHECKED and calls1 == 0
    assert index1 == index0
    train, val, rejected = index0
    assert len(train) + len(val) == N_GOOD and rejected == [("empty.wav", "file is empty (0 bytes)")]
    if mode == "distributed":
        assert not (out_dir / "cache_dist_1").exists()  # rank 1 neither checked nor wrote anything
