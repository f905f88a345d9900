"""A folder of audio files as a contrastive-pretraining dataset.

Files are found recursively and checked once, at setup: files that cannot be decoded or
are shorter than one clip are listed in a report and never reach a DataLoader worker.
The train/validation split is decided by a hash of a group key (:func:`split_key`): the
file's path relative to the root (``group_by: none``), or its parent folder (``group_by:
parent``, so the segments of one video, ``audio/<id>/<id>_<jj>.wav`` in the dataset
builder's output, stay on one side). Adding files never moves existing ones between splits.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vcmr.data.loaders import build_loader

from vcmr.audio.io import AudioDecodeError, audio_info, load_audio
from vcmr.utils import atomic_write_text, hash_split, is_hidden, progress_bar


@dataclasses.dataclass(frozen=True)
class AudioFile:
    """A usable file: ``path`` absolute, ``relpath`` relative to the root, ``duration`` in s."""

    path: str
    relpath: str
    duration: float


@dataclasses.dataclass(frozen=True)
class RejectedFile:
    """A file left out at setup, with the reason."""

    relpath: str
    reason: str


def find_audio_files(root: str | os.PathLike, extensions: Sequence[str]) -> List[Path]:
    """All files under ``root`` (recursive, sorted) whose extension is in ``extensions``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: audio folder not found: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts and not is_hidden(p, root)
    )


def _probe(args: Tuple[str, str, int, float, str]) -> Tuple[str, Optional[float], str]:
    path, relpath, sample_rate, min_seconds, verify = args
    try:
        if verify == "full":
            duration = load_audio(path, sample_rate).size / sample_rate
        else:
            duration = audio_info(path).duration
            if not np.isfinite(duration):
                return relpath, None, "duration unknown from header"
    except AudioDecodeError as exc:
        return relpath, None, exc.reason
    except Exception as exc:  # a decoder crash on a hostile file is still just a bad file
        return relpath, None, f"{type(exc).__name__}: {exc}"
    if duration < min_seconds:
        return relpath, None, f"too short: {duration:.2f}s < {min_seconds:.2f}s needed for one clip"
    return relpath, duration, ""


def index_folder(
    root: str | os.PathLike,
    extensions: Sequence[str],
    sample_rate: int,
    min_seconds: float,
    verify: str = "full",
    workers: int = 1,
    progress: bool = True,
) -> Tuple[List[AudioFile], List[RejectedFile]]:
    """Check every audio file under ``root`` once.

    Args:
        verify: ``full`` decodes each file completely (finds corrupt data anywhere);
            ``header`` reads only headers (fast, for large trusted collections).
        workers: processes used for the check.

    Returns:
        ``(usable, rejected)``, both sorted by relative path.
    """
    if verify not in ("full", "header"):
        raise ValueError(f"data.verify: must be 'full' or 'header', got '{verify}'")
    root = Path(root)
    paths = find_audio_files(root, extensions)
    jobs = [(str(p), p.relative_to(root).as_posix(), sample_rate, min_seconds, verify) for p in paths]
    results: List[Tuple[str, Optional[float], str]] = []
    bar = progress_bar(total=len(jobs), desc=f"Checking audio files ({verify})", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_probe, jobs, chunksize=4):
                results.append(res)
                bar.update()
    else:
        for job in jobs:
            results.append(_probe(job))
            bar.update()
    bar.close()
    usable = [AudioFile(str(root / rel), rel, d) for rel, d, _ in results if d is not None]
    rejected = [RejectedFile(rel, why) for rel, d, why in results if d is None]
    return usable, rejected


def write_report(path: str | os.PathLike, rejected: Sequence[RejectedFile]) -> None:
    """Tab-separated ``relpath<TAB>reason`` list of the files left out."""
    lines = ["relpath\treason"] + [f"{r.relpath}\t{r.reason}" for r in rejected]
    atomic_write_text(path, "\n".join(lines) + "\n")


#: ``data.group_by`` -> key of a file's relative path that decides its split.
GROUP_KEYS = {
    "none": lambda relpath: relpath,
    # Files directly under the root form their own group (their parent would be one group).
    "parent": lambda relpath: os.path.dirname(relpath) or relpath,
}


def split_key(relpath: str, group_by: str) -> str:
    """The string hashed to split ``relpath`` (posix, relative to the root) under ``group_by``."""
    if group_by not in GROUP_KEYS:
        raise ValueError(f"data.group_by: must be one of {sorted(GROUP_KEYS)}, got '{group_by}'")
    return GROUP_KEYS[group_by](relpath)


class AudioClipDataset(Dataset):
    """Fixed-length clips from a list of checked files.

    Training items start at a uniformly random offset (drawn from the worker's torch
    RNG, so Lightning's seeding makes runs reproducible); validation items are the
    centre of each file. ``__getitem__`` returns ``[1, clip_length]`` float32.
    """

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, clip_length: int, random_offset: bool):
        self.files = list(files)
        self.sample_rate = sample_rate
        self.clip_length = clip_length
        self.random_offset = random_offset

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> torch.Tensor:
        f = self.files[idx]
        seconds = self.clip_length / self.sample_rate
        # Keep a small margin: header durations of compressed files can be approximate.
        span = max(0.0, f.duration - seconds - 0.05)
        if self.random_offset:
            offset = float(torch.rand(()).item()) * span
        else:
            offset = span / 2
        x = load_audio(f.path, self.sample_rate, offset=offset, duration=seconds)
        return torch.from_numpy(x).unsqueeze(0)


class AudioFolderDataModule(pl.LightningDataModule):
    """Train/validation clips from a folder of audio files.

    Args:
        root: folder searched recursively.
        sample_rate: decode rate (Hz).
        clip_length: samples per item.
        val_fraction: share of files (by path hash) used for validation.
        extensions: file extensions to include.
        verify: ``full`` or ``header`` (see :func:`index_folder`).
        index_workers: processes for the setup check.
        loader: DataLoader settings (batch size per device, workers, ...).
        group_by: ``none`` (split per file) or ``parent`` (per parent folder), see :func:`split_key`.
    """

    def __init__(
        self,
        root: str,
        sample_rate: int,
        clip_length: int,
        val_fraction: float,
        extensions: Sequence[str],
        verify: str,
        index_workers: int,
        loader: Mapping[str, Any],
        group_by: str = "none",
    ):
        super().__init__()
        split_key("", group_by)  # an unknown value fails here, before the folder is scanned
        self.group_by = group_by
        self.root = root
        self.sample_rate = sample_rate
        self.clip_length = clip_length
        self.val_fraction = val_fraction
        self.extensions = list(extensions)
        self.verify = verify
        self.index_workers = index_workers
        self.loader = dict(loader)
        self.train_files: List[AudioFile] = []
        self.val_files: List[AudioFile] = []
        self.rejected: List[RejectedFile] = []
        self._indexed = False

    def setup(self, stage: Optional[str] = None) -> None:
        if self._indexed:
            return
        usable, self.rejected = index_folder(
            self.root,
            self.extensions,
            self.sample_rate,
            min_seconds=self.clip_length / self.sample_rate + 0.1,
            verify=self.verify,
            workers=self.index_workers,
        )
        for f in usable:
            side = hash_split(split_key(f.relpath, self.group_by), self.val_fraction)
            (self.val_files if side == "val" else self.train_files).append(f)
        if not self.train_files:
            raise RuntimeError(
                f"data.root: no usable training files in {self.root} "
                f"({len(usable)} usable, {len(self.rejected)} rejected)"
            )
        self._indexed = True

    def summary(self) -> Dict[str, int]:
        """Counts of train, validation and rejected files."""
        return {"train": len(self.train_files), "val": len(self.val_files), "rejected": len(self.rejected)}

    def _loader(self, files: Sequence[AudioFile], train: bool) -> DataLoader:
        ds = AudioClipDataset(files, self.sample_rate, self.clip_length, random_offset=train)
        return build_loader(ds, self.loader, train)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_files, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_files, train=False)
