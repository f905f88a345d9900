"""Reading a tagging dataset for training and evaluation: audio access, unusable tracks,
window datasets and the DataModule.

:func:`open_tagging_data` is the one sequence both stage-3 training and song-level
evaluation use: parse the annotations (:func:`~vcmr.data.tagging.annotations.build_index`),
open the audio (the originals, or the cache of :mod:`vcmr.data.tagging.cache`), and drop
the tracks whose audio cannot be used, once, with the reasons kept for the report.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader, Dataset

from vcmr.audio.io import load_audio
from vcmr.config import DataLoaderConfig
from vcmr.data.collate import BadItem, drop_bad_items
from vcmr.data.tagging import cache
from vcmr.data.tagging.annotations import TaggingIndex, Track, build_index
from vcmr.utils import MediaFileError

SPLITS: Tuple[str, ...] = ("train", "valid", "test")


# --------------------------------------------------------------------------------------
# Config schema (values in YAML)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoTaggingConfig:
    """Settings of the generated demo set (``data.name: demo``).

    Read by :func:`vcmr.demo.tagging.prepare`, which writes the set and points the ``data``
    block at it; nothing in :mod:`vcmr.data` uses them.
    """

    n_train: int = MISSING
    n_valid: int = MISSING
    n_test: int = MISSING
    duration: float = MISSING
    seed: int = MISSING
    categories: List[str] = MISSING
    tempo_slow: List[float] = MISSING
    tempo_fast: List[float] = MISSING


@dataclasses.dataclass
class CacheConfig:
    """Decoded-audio cache (``dir: null`` decodes the original files on the fly)."""

    dir: Optional[str] = MISSING
    format: str = MISSING
    num_workers: int = MISSING


@dataclasses.dataclass
class TaggingDataConfig:
    """Which tagging data to read and how.

    ``name``: a key of :data:`~vcmr.data.tagging.annotations.DATASETS` (``magnatagatune``,
    ``mtg_jamendo``), or ``demo`` before :func:`vcmr.demo.tagging.prepare` has replaced it.
    ``report_name``: name shown in logs and reports (``null``: ``name``). ``split``:
    ``pons2017`` or ``won2020`` (MTAT), ``split-0`` .. ``split-4`` (MTG), ``filtered`` (GTZAN),
    ``csv`` or ``folders`` (``single_label``). ``tagset``: MTG tag file family. ``subset``: the
    split scored by evaluation (``train``, ``valid`` or ``test``). ``val_crop``: the window the
    validation loader takes from each track during training, ``center`` or ``random`` (VCMR).
    """

    name: str = MISSING
    report_name: Optional[str] = MISSING
    root: Optional[str] = MISSING
    audio_root: Optional[str] = MISSING
    split: str = MISSING
    tagset: str = MISSING
    subset: str = MISSING
    sample_rate: int = MISSING
    val_crop: str = MISSING
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    loader: DataLoaderConfig = dataclasses.field(default_factory=DataLoaderConfig)
    demo: DemoTaggingConfig = dataclasses.field(default_factory=DemoTaggingConfig)


# --------------------------------------------------------------------------------------
# Audio access and unusable tracks
# --------------------------------------------------------------------------------------


class AudioStore:
    """Reads the tracks of an index as mono float32 at ``sample_rate``.

    Args:
        audio_root: folder the track paths are relative to.
        sample_rate: Hz.
        cache_dir: cache written by :mod:`vcmr.preprocess.tagging_cache`, or ``None`` to
            decode the original files.
    """

    def __init__(self, audio_root: str | os.PathLike, sample_rate: int, cache_dir: Optional[str | os.PathLike] = None):
        self.audio_root = Path(audio_root)
        self.sample_rate = int(sample_rate)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.format: Optional[str] = None
        if self.cache_dir is not None:
            self.format = cache.read_info(self.cache_dir, self.sample_rate)

    def source(self, track: Track) -> Path:
        """The original audio file of ``track``."""
        return self.audio_root / track.path

    def file(self, track: Track) -> Path:
        """The file actually read: cached copy when a cache is used."""
        if self.cache_dir is None:
            return self.source(track)
        return cache.cache_path(self.cache_dir, track.path, self.format or "int16")

    def failed(self) -> Dict[str, str]:
        """Relative path -> reason, for tracks the cache step could not decode."""
        return {} if self.cache_dir is None else cache.read_failed(self.cache_dir)

    def load(self, track: Track) -> np.ndarray:
        """The whole track: ``[N]`` float32."""
        if self.format is None:
            return load_audio(self.file(track), self.sample_rate)
        return cache.read_audio(self.file(track), self.format, self.sample_rate)

    def load_window(self, track: Track, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)``, zero-padded past the end: ``[length]`` float32."""
        if self.format is None:
            x = load_audio(self.file(track), self.sample_rate)[start : start + length]
        else:
            x = cache.read_window(self.file(track), self.format, start, length)
        return np.pad(x, (0, length - x.size)) if x.size < length else x

    def num_samples(self, track: Track) -> int:
        """Length of the track in samples (decodes the file when there is no cache)."""
        if self.format is None:
            return int(load_audio(self.file(track), self.sample_rate).size)
        return cache.num_samples(self.file(track), self.format)


@dataclasses.dataclass
class DropReport:
    """Tracks removed from each split at index time, with reasons."""

    dropped: Dict[str, List[Tuple[str, str]]]

    def counts(self) -> Dict[str, int]:
        return {s: len(v) for s, v in self.dropped.items()}

    def summary(self) -> str:
        parts = [f"{s}: {len(v)} dropped" for s, v in self.dropped.items() if v]
        return "; ".join(parts) if parts else "no tracks dropped"


def drop_unusable(index: TaggingIndex, store: AudioStore) -> Tuple[TaggingIndex, DropReport]:
    """Remove tracks whose audio cannot be used, once, before training.

    With a cache: tracks listed in its ``failed.tsv`` are dropped; a track with neither a
    cached file nor a failure record means the cache is incomplete, which raises. Without
    a cache: missing and empty (0-byte) files are dropped.
    """
    failed = store.failed()
    dropped: Dict[str, List[Tuple[str, str]]] = {}
    incomplete: List[str] = []
    splits: Dict[str, List[Track]] = {}
    for split, tracks in index.splits.items():
        keep, gone = [], []
        for t in tracks:
            if store.cache_dir is not None:
                if t.path in failed:
                    gone.append((t.path, failed[t.path]))
                elif not store.file(t).is_file():
                    incomplete.append(t.path)
                else:
                    keep.append(t)
            else:
                src = store.source(t)
                if not src.is_file():
                    gone.append((t.path, "file does not exist"))
                elif src.stat().st_size == 0:
                    gone.append((t.path, "file is empty (0 bytes)"))
                else:
                    keep.append(t)
        splits[split] = keep
        dropped[split] = gone
    if incomplete:
        raise FileNotFoundError(
            f"{store.cache_dir}: audio cache is incomplete, {len(incomplete)} track(s) not converted "
            f"(first: {incomplete[:3]}); rerun python -m vcmr.preprocess.tagging_cache (it resumes)"
        )
    return dataclasses.replace(index, splits=splits), DropReport(dropped)


@dataclasses.dataclass
class TaggingData:
    """A parsed dataset with its usable tracks only, the audio access and what was dropped."""

    index: TaggingIndex
    store: AudioStore
    dropped: DropReport

    def summary(self) -> str:
        """One line: tag count, tracks per split and the dropped counts."""
        splits = ", ".join(f"{s} {len(t)} tracks" for s, t in self.index.splits.items())
        return f"{self.index.name}: {len(self.index.tags)} tags; {splits} ({self.dropped.summary()})"


def open_tagging_data(cfg: Mapping[str, Any]) -> TaggingData:
    """Index -> audio store -> unusable tracks dropped, for the ``data`` block ``cfg``."""
    index = build_index(cfg)
    store = AudioStore(index.audio_root, int(cfg["sample_rate"]), cfg["cache"]["dir"])
    index, dropped = drop_unusable(index, store)
    return TaggingData(index, store, dropped)


# --------------------------------------------------------------------------------------
# Datasets and DataModule
# --------------------------------------------------------------------------------------


class CropDataset(Dataset):
    """One window of ``input_length`` samples per track, with its labels.

    Training draws a uniformly random start; evaluation takes the centred window.
    Tracks shorter than a window are zero-padded at the end.

    Returns ``(x, y)``: ``x`` ``[1, input_length]`` float32, ``y`` ``[T]`` float32.
    """

    def __init__(self, tracks: Sequence[Track], store: AudioStore, input_length: int, random_crop: bool):
        self.tracks = list(tracks)
        self.store = store
        self.input_length = int(input_length)
        self.random_crop = bool(random_crop)

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor] | BadItem:
        """``([1, input_length] float32 window, [T] labels)``, or a :class:`~vcmr.data.collate.BadItem`
        when the track's audio (or its cached copy) fails to read: the loaders' collate drops it
        and the run reports it (:mod:`vcmr.data.collate`)."""
        t = self.tracks[i]
        try:
            n = self.store.num_samples(t) if self.store.cache_dir is not None else None
            if n is None:
                # No cache: one decode, then crop in memory.
                audio = self.store.load(t)
                x = self._crop(audio, audio.size)
            else:
                start = self._start(n)
                x = self.store.load_window(t, start, self.input_length)
        except MediaFileError as exc:
            return BadItem(t.path, f"failed to decode during training: {exc.reason}")
        except (OSError, ValueError) as exc:  # a damaged cache file
            return BadItem(t.path, f"failed to read during training: {type(exc).__name__}: {exc}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None], torch.from_numpy(t.labels.copy())

    def _start(self, n: int) -> int:
        slack = max(0, n - self.input_length)
        if self.random_crop:
            # torch's generator is seeded per worker by Lightning, so crops are reproducible.
            return int(torch.randint(0, slack + 1, ()).item())
        return slack // 2

    def _crop(self, audio: np.ndarray, n: int) -> np.ndarray:
        start = self._start(n)
        x = audio[start : start + self.input_length]
        return np.pad(x, (0, self.input_length - x.size)) if x.size < self.input_length else x


#: ``data.val_crop`` -> whether validation windows are drawn at random (else centred).
VAL_CROPS: Dict[str, bool] = {"center": False, "random": True}


class TaggingDataModule(pl.LightningDataModule):
    """Train/valid/test loaders of window crops (random for train, centred otherwise).

    Args:
        index: parsed (and filtered) dataset.
        store: audio access.
        input_length: samples per window (the encoder's input length).
        loader: :class:`~vcmr.config.DataLoaderConfig` values.
        val_crop: ``center`` (default) or ``random`` (a new random window per track and
            validation epoch, as VCMR's stage 3); test windows are always centred.
    """

    def __init__(
        self, index: TaggingIndex, store: AudioStore, input_length: int, loader: Mapping[str, Any], val_crop: str = "center"
    ):
        super().__init__()
        if val_crop not in VAL_CROPS:
            raise ValueError(f"data.val_crop: must be one of {sorted(VAL_CROPS)}, got '{val_crop}'")
        self.val_random = VAL_CROPS[val_crop]
        self.index = index
        self.store = store
        self.input_length = int(input_length)
        self.loader_cfg = dict(loader)
        for split in SPLITS:
            if not index.splits.get(split):
                raise ValueError(f"{index.name}: split '{split}' has no usable tracks")

    def _loader(self, split: str, train: bool, random_crop: Optional[bool] = None) -> DataLoader:
        c = self.loader_cfg
        workers = int(c["num_workers"])
        random_crop = train if random_crop is None else random_crop
        return DataLoader(
            CropDataset(self.index.splits[split], self.store, self.input_length, random_crop=random_crop),
            batch_size=int(c["batch_size"]),
            shuffle=train,
            drop_last=train and len(self.index.splits[split]) > int(c["batch_size"]),
            collate_fn=drop_bad_items,
            num_workers=workers,
            pin_memory=bool(c["pin_memory"]),
            persistent_workers=bool(c["persistent_workers"]) and workers > 0,
            prefetch_factor=c["prefetch_factor"] if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False, random_crop=self.val_random)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def label_stats(index: TaggingIndex) -> Dict[str, Dict[str, float]]:
    """Per split: track count and mean positives per track (for run logs)."""
    out = {}
    for s, tracks in index.splits.items():
        y = index.labels(s)
        out[s] = {"tracks": len(tracks), "tags_per_track": float(y.sum(1).mean()) if len(tracks) else math.nan}
    return out
