"""Music tagging datasets: MagnaTagATune (two published splits), MTG-Jamendo, the demo set.

The published annotation files are parsed exactly as they are distributed:

==================  ===========================================================  ==========================================
dataset / split     files (in ``data.root``)                                     where they come from
==================  ===========================================================  ==========================================
MTAT ``pons2017``   ``index_mtt.tsv`` (``clip_id<TAB>path.mp3``),                 github.com/jordipons/musicnn-training,
                    ``{train,val,test}_gt_mtt.tsv``                               ``data/index/mtt/``
                    (``clip_id<TAB>[0.0, 1.0, ...]``, 50 values)
MTAT ``won2020``    ``{train,valid,test}.npy`` (strings ``"<index><TAB><path>"``),  github.com/minzwon/sota-music-tagging-models,
                    ``binary.npy`` (``[n_clips, 50]`` 0/1, row = index),          ``split/mtat/``
                    ``tags.npy`` (50 names)
MTG-Jamendo         ``data/splits/<split>/autotagging_<tagset>-{train,            github.com/MTG/mtg-jamendo-dataset
                    validation,test}.tsv``: header, then TRACK_ID, ARTIST_ID,
                    ALBUM_ID, PATH, DURATION, one or more ``category---tag``
==================  ===========================================================  ==========================================

The label lists of ``*_gt_mtt.tsv`` are parsed as numbers, never evaluated as code. The
``pons2017`` files carry no tag names; their column order is the one musicnn-training
publishes in ``data/index/mtt/output_labels_mtt.txt`` (:data:`PONS2017_TAGS`).

MTG-Jamendo tag vocabulary: every ``category---tag`` string that occurs in the *train*
file, sorted by Python string order (so ``genre---*`` < ``instrument---*`` <
``mood/theme---*``). It is stable for a given train file. Validation/test tags absent
from train are ignored (and counted in :attr:`TaggingIndex.notes`).

Audio paths in the files are relative to ``data.audio_root`` (the folder holding the
mp3s). With ``data.cache.dir`` set, audio is read from the cache written by
:mod:`vcmr.preprocess.tagging_cache` instead; tracks the cache step could not decode are
dropped from their split and reported, with counts, when the data is set up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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

SPLITS: Tuple[str, ...] = ("train", "valid", "test")

#: Column order of the musicnn-training MTAT ground-truth files (output_labels_mtt.txt).
PONS2017_TAGS: Tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)

PONS2017_SOURCE = "https://github.com/jordipons/musicnn-training (data/index/mtt/)"
WON2020_SOURCE = "https://github.com/minzwon/sota-music-tagging-models (split/mtat/)"
MTG_SOURCE = "https://github.com/MTG/mtg-jamendo-dataset (data/splits/)"
MTG_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
MTG_TAGSETS = ("top50tags", "genre", "instrument", "moodtheme")

CACHE_INFO = "cache_info.json"
CACHE_FAILED = "failed.tsv"
CACHE_FORMATS = ("int16", "float16", "flac")


class DatasetFilesError(FileNotFoundError):
    """Annotation files of a dataset are missing; the message lists them and their source."""


class AnnotationFormatError(ValueError):
    """An annotation file does not have the published format (message names file:line)."""


# --------------------------------------------------------------------------------------
# Config schema (values in YAML)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoTaggingConfig:
    """Demo tagging set generated with :mod:`vcmr.data.synth` (see :mod:`vcmr.data.demo_tagging`)."""

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

    ``name``: ``demo``, ``magnatagatune`` or ``mtg_jamendo``. ``split``: ``pons2017`` or
    ``won2020`` (MTAT), ``split-0`` .. ``split-4`` (MTG). ``tagset``: MTG tag file family.
    ``subset``: the split scored by evaluation (``train``, ``valid`` or ``test``).
    """

    name: str = MISSING
    root: Optional[str] = MISSING
    audio_root: Optional[str] = MISSING
    split: str = MISSING
    tagset: str = MISSING
    subset: str = MISSING
    sample_rate: int = MISSING
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    loader: DataLoaderConfig = dataclasses.field(default_factory=DataLoaderConfig)
    demo: DemoTaggingConfig = dataclasses.field(default_factory=DemoTaggingConfig)


# --------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Track:
    """One annotated track. ``path`` is relative to the audio root; ``labels`` is ``[T]`` 0/1 float32."""

    key: str
    path: str
    labels: np.ndarray


@dataclasses.dataclass
class TaggingIndex:
    """Parsed annotations: tag names and the tracks of each split (``train``/``valid``/``test``)."""

    name: str
    tags: List[str]
    splits: Dict[str, List[Track]]
    audio_root: Path
    notes: List[str] = dataclasses.field(default_factory=list)

    def labels(self, split: str) -> np.ndarray:
        """``[N, T]`` float32 labels of a split."""
        tracks = self.splits[split]
        if not tracks:
            return np.zeros((0, len(self.tags)), np.float32)
        return np.stack([t.labels for t in tracks]).astype(np.float32)

    def fingerprint(self, split: str) -> str:
        """sha256 over the split's track keys, paths and labels (order-sensitive)."""
        h = hashlib.sha256()
        h.update(("\n".join(self.tags)).encode())
        for t in self.splits[split]:
            h.update(f"{t.key}\t{t.path}\t".encode())
            h.update(np.asarray(t.labels, np.uint8).tobytes())
        return h.hexdigest()


def _require(root: Path, names: Sequence[str], source: str, what: str) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        lines = "\n".join(f"  - {root / n}" for n in missing)
        raise DatasetFilesError(f"{what}: {len(missing)} annotation file(s) missing:\n{lines}\nThey come from {source}.")


def _read_lines(path: Path) -> List[Tuple[int, str]]:
    with open(path, encoding="utf-8") as fh:
        return [(i + 1, line.rstrip("\r\n")) for i, line in enumerate(fh) if line.strip()]


def _parse_label_list(text: str, n: int, where: str) -> np.ndarray:
    """``"[0.0, 1.0, ...]"`` -> ``[n]`` float32, checked to be 0/1. No ``eval``."""
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        raise AnnotationFormatError(f"{where}: label field must look like [0.0, 1.0, ...], got {s[:40]!r}")
    items = [x.strip() for x in s[1:-1].split(",")]
    try:
        values = np.asarray([float(x) for x in items], dtype=np.float32)
    except ValueError as exc:
        raise AnnotationFormatError(f"{where}: non-numeric label value ({exc})") from None
    if values.size != n:
        raise AnnotationFormatError(f"{where}: expected {n} label values, found {values.size}")
    if not np.all((values == 0) | (values == 1)):
        raise AnnotationFormatError(f"{where}: label values must be 0 or 1")
    return values


def parse_mtat_pons2017(root: str | os.PathLike, audio_root: Optional[str | os.PathLike] = None) -> TaggingIndex:
    """MagnaTagATune with the musicnn-training split (Pons et al., 2017).

    Args:
        root: folder with ``index_mtt.tsv`` and ``{train,val,test}_gt_mtt.tsv``.
        audio_root: folder the mp3 paths are relative to (default: ``root``).
    """
    root = Path(root)
    names = {"train": "train_gt_mtt.tsv", "valid": "val_gt_mtt.tsv", "test": "test_gt_mtt.tsv"}
    _require(root, ["index_mtt.tsv", *names.values()], PONS2017_SOURCE, "MagnaTagATune pons2017")
    paths: Dict[str, str] = {}
    for lineno, line in _read_lines(root / "index_mtt.tsv"):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise AnnotationFormatError(f"{root / 'index_mtt.tsv'}:{lineno}: expected 'clip_id<TAB>path', got {line[:60]!r}")
        if parts[0] in paths:
            raise AnnotationFormatError(f"{root / 'index_mtt.tsv'}:{lineno}: duplicate clip id {parts[0]}")
        paths[parts[0]] = parts[1].strip()
    splits: Dict[str, List[Track]] = {}
    for split, fname in names.items():
        tracks = []
        for lineno, line in _read_lines(root / fname):
            where = f"{root / fname}:{lineno}"
            parts = line.split("\t")
            if len(parts) != 2:
                raise AnnotationFormatError(f"{where}: expected 'clip_id<TAB>[labels]', got {line[:60]!r}")
            clip_id = parts[0].strip()
            if clip_id not in paths:
                raise AnnotationFormatError(f"{where}: clip id {clip_id} is not in index_mtt.tsv")
            labels = _parse_label_list(parts[1], len(PONS2017_TAGS), where)
            tracks.append(Track(clip_id, paths[clip_id], labels))
        splits[split] = tracks
    return TaggingIndex("magnatagatune", list(PONS2017_TAGS), splits, Path(audio_root or root))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise AnnotationFormatError(f"{path}: not a plain numpy array file ({exc})") from None


def parse_mtat_won2020(root: str | os.PathLike, audio_root: Optional[str | os.PathLike] = None) -> TaggingIndex:
    """MagnaTagATune with the sota-music-tagging-models split (Won et al., 2020).

    Args:
        root: folder with ``train.npy``, ``valid.npy``, ``test.npy``, ``binary.npy``, ``tags.npy``.
        audio_root: folder the mp3 paths are relative to (default: ``root``).
    """
    root = Path(root)
    names = {"train": "train.npy", "valid": "valid.npy", "test": "test.npy"}
    _require(root, [*names.values(), "binary.npy", "tags.npy"], WON2020_SOURCE, "MagnaTagATune won2020")
    tags = [str(t) for t in _load_npy(root / "tags.npy").reshape(-1)]
    binary = _load_npy(root / "binary.npy")
    if binary.ndim != 2 or binary.shape[1] != len(tags):
        raise AnnotationFormatError(f"{root / 'binary.npy'}: expected shape [n_clips, {len(tags)}], got {binary.shape}")
    if not np.all((binary == 0) | (binary == 1)):
        raise AnnotationFormatError(f"{root / 'binary.npy'}: values must be 0 or 1")
    splits: Dict[str, List[Track]] = {}
    for split, fname in names.items():
        entries = _load_npy(root / fname).reshape(-1)
        tracks = []
        for i, entry in enumerate(entries):
            where = f"{root / fname}[{i}]"
            parts = str(entry).split("\t")
            if len(parts) != 2 or not parts[0].strip().isdigit():
                raise AnnotationFormatError(f"{where}: expected '<index><TAB><path>', got {str(entry)[:60]!r}")
            ix = int(parts[0])
            if ix >= binary.shape[0]:
                raise AnnotationFormatError(f"{where}: index {ix} is past binary.npy's {binary.shape[0]} rows")
            tracks.append(Track(parts[0].strip(), parts[1].strip(), binary[ix].astype(np.float32)))
        splits[split] = tracks
    return TaggingIndex("magnatagatune", tags, splits, Path(audio_root or root))


def mtg_split_files(root: str | os.PathLike, split: str, tagset: str) -> Dict[str, Path]:
    """Paths of the three MTG-Jamendo split files for ``split`` (``split-N``) and ``tagset``."""
    if tagset not in MTG_TAGSETS:
        raise ValueError(f"data.tagset: unknown MTG-Jamendo tag set '{tagset}'; choose from {MTG_TAGSETS}")
    folder = Path(root) / "data" / "splits" / split
    return {
        s: folder / f"autotagging_{tagset}-{f}.tsv" for s, f in (("train", "train"), ("valid", "validation"), ("test", "test"))
    }


def _read_mtg_rows(path: Path) -> List[Tuple[str, str, List[str]]]:
    lines = _read_lines(path)
    if not lines:
        raise AnnotationFormatError(f"{path}: empty file")
    header = tuple(lines[0][1].split("\t"))
    if header != MTG_HEADER:
        raise AnnotationFormatError(f"{path}:1: expected header {list(MTG_HEADER)}, got {list(header)}")
    rows = []
    for lineno, line in lines[1:]:
        parts = line.split("\t")
        where = f"{path}:{lineno}"
        if len(parts) < 6:
            raise AnnotationFormatError(f"{where}: expected 5 columns and at least one tag, got {len(parts)} fields")
        try:
            float(parts[4])
        except ValueError:
            raise AnnotationFormatError(f"{where}: DURATION is not a number: {parts[4]!r}") from None
        tags = [t.strip() for t in parts[5:] if t.strip()]
        bad = [t for t in tags if "---" not in t]
        if bad or not tags:
            raise AnnotationFormatError(f"{where}: tags must look like 'category---tag', got {bad or parts[5:]}")
        rows.append((parts[0], parts[3], tags))
    return rows


def parse_mtg_jamendo(
    root: str | os.PathLike,
    split: str,
    tagset: str,
    audio_root: Optional[str | os.PathLike] = None,
    name: str = "mtg_jamendo",
) -> TaggingIndex:
    """MTG-Jamendo autotagging splits.

    Args:
        root: clone of the mtg-jamendo-dataset repository (holds ``data/splits/``).
        split: ``split-0`` .. ``split-4``.
        tagset: ``top50tags``, ``genre``, ``instrument`` or ``moodtheme``.
        audio_root: folder the PATH column is relative to (default: ``root``).
    """
    files = mtg_split_files(root, split, tagset)
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        lines = "\n".join(f"  - {p}" for p in missing)
        raise DatasetFilesError(f"MTG-Jamendo {split}/{tagset}: {len(missing)} split file(s) missing:\n{lines}\nThey come from {MTG_SOURCE}.")
    rows = {s: _read_mtg_rows(p) for s, p in files.items()}
    tags = sorted({t for _, _, ts in rows["train"] for t in ts})
    col = {t: j for j, t in enumerate(tags)}
    notes = []
    splits: Dict[str, List[Track]] = {}
    for s, rs in rows.items():
        unseen = 0
        tracks = []
        for key, path, ts in rs:
            y = np.zeros(len(tags), np.float32)
            for t in ts:
                if t in col:
                    y[col[t]] = 1.0
                else:
                    unseen += 1
            tracks.append(Track(key, path, y))
        if unseen:
            notes.append(f"{s}: {unseen} tag occurrence(s) not in the train vocabulary were ignored")
        splits[s] = tracks
    return TaggingIndex(name, tags, splits, Path(audio_root or root), notes)


def build_index(cfg: Mapping[str, Any]) -> TaggingIndex:
    """Parse the dataset named by ``cfg`` (a :class:`TaggingDataConfig`); the demo is generated on first use."""
    name = str(cfg["name"])
    audio_root = cfg["audio_root"]
    if name == "demo":
        from vcmr.data.demo_tagging import ensure_demo_dataset

        root = ensure_demo_dataset(cfg["demo"], int(cfg["sample_rate"]))
        return parse_mtg_jamendo(root, "split-0", "top50tags", audio_root=root / "audio", name="demo")
    if cfg["root"] is None:
        raise ValueError(f"data.root: required for data.name={name} (folder of the annotation files)")
    if name == "magnatagatune":
        parsers = {"pons2017": parse_mtat_pons2017, "won2020": parse_mtat_won2020}
        if cfg["split"] not in parsers:
            raise ValueError(f"data.split: MagnaTagATune split must be one of {sorted(parsers)}, got '{cfg['split']}'")
        return parsers[cfg["split"]](cfg["root"], audio_root)
    if name == "mtg_jamendo":
        return parse_mtg_jamendo(cfg["root"], str(cfg["split"]), str(cfg["tagset"]), audio_root)
    raise ValueError(f"data.name: unknown dataset '{name}' (demo, magnatagatune or mtg_jamendo)")


# --------------------------------------------------------------------------------------
# Audio access
# --------------------------------------------------------------------------------------


def cache_path(cache_dir: str | os.PathLike, rel_path: str, fmt: str) -> Path:
    """Where the cache keeps ``rel_path``: same relative folder, suffix ``.npy`` or ``.flac``."""
    suffix = ".flac" if fmt == "flac" else ".npy"
    return Path(cache_dir) / Path(rel_path).with_suffix(suffix)


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
            info_path = self.cache_dir / CACHE_INFO
            if not info_path.is_file():
                raise FileNotFoundError(
                    f"{info_path}: no audio cache here; build it with "
                    "python -m vcmr.preprocess.tagging_cache --config <your config> [overrides]"
                )
            info = json.loads(info_path.read_text())
            if int(info["sample_rate"]) != self.sample_rate:
                raise ValueError(
                    f"{info_path}: cache holds {info['sample_rate']} Hz audio but data.sample_rate={self.sample_rate}"
                )
            self.format = str(info["format"])

    def source(self, track: Track) -> Path:
        """The original audio file of ``track``."""
        return self.audio_root / track.path

    def file(self, track: Track) -> Path:
        """The file actually read: cached copy when a cache is used."""
        if self.cache_dir is None:
            return self.source(track)
        return cache_path(self.cache_dir, track.path, self.format or "int16")

    def failed(self) -> Dict[str, str]:
        """Relative path -> reason, for tracks the cache step could not decode."""
        if self.cache_dir is None or not (self.cache_dir / CACHE_FAILED).is_file():
            return {}
        out = {}
        for line in (self.cache_dir / CACHE_FAILED).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rel, _, reason = line.partition("\t")
                out[rel] = reason
        return out

    def load(self, track: Track) -> np.ndarray:
        """The whole track: ``[N]`` float32."""
        path = self.file(track)
        if self.cache_dir is None:
            return load_audio(path, self.sample_rate)
        if self.format == "flac":
            return load_audio(path, self.sample_rate)
        return _from_cached(np.load(path, mmap_mode="r"))

    def load_window(self, track: Track, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)``, zero-padded past the end: ``[length]`` float32."""
        path = self.file(track)
        if self.cache_dir is not None and self.format != "flac":
            arr = np.load(path, mmap_mode="r")
            x = _from_cached(arr[start : start + length])
        elif self.cache_dir is not None:
            import soundfile as sf

            with sf.SoundFile(str(path)) as fh:
                fh.seek(min(start, fh.frames))
                x = fh.read(frames=length, dtype="float32")
        else:
            x = load_audio(path, self.sample_rate)[start : start + length]
        return np.pad(x, (0, length - x.size)) if x.size < length else x

    def num_samples(self, track: Track) -> int:
        """Length of the track in samples (decodes the file when there is no cache)."""
        path = self.file(track)
        if self.cache_dir is not None and self.format != "flac":
            return int(np.load(path, mmap_mode="r").shape[0])
        if self.cache_dir is not None:
            import soundfile as sf

            return int(sf.info(str(path)).frames)
        return int(load_audio(path, self.sample_rate).size)


def _from_cached(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.int16:
        return np.asarray(arr, dtype=np.float32) / 32768.0
    return np.asarray(arr, dtype=np.float32)


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

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        t = self.tracks[i]
        n = self.store.num_samples(t) if self.store.cache_dir is not None else None
        if n is None:
            # No cache: one decode, then crop in memory.
            audio = self.store.load(t)
            x = self._crop(audio, audio.size)
        else:
            start = self._start(n)
            x = self.store.load_window(t, start, self.input_length)
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


class TaggingDataModule(pl.LightningDataModule):
    """Train/valid/test loaders of window crops (random for train, centred otherwise).

    Args:
        index: parsed (and filtered) dataset.
        store: audio access.
        input_length: samples per window (the encoder's input length).
        loader: :class:`~vcmr.config.DataLoaderConfig` values.
    """

    def __init__(self, index: TaggingIndex, store: AudioStore, input_length: int, loader: Mapping[str, Any]):
        super().__init__()
        self.index = index
        self.store = store
        self.input_length = int(input_length)
        self.loader_cfg = dict(loader)
        for split in SPLITS:
            if not index.splits.get(split):
                raise ValueError(f"{index.name}: split '{split}' has no usable tracks")

    def _loader(self, split: str, train: bool) -> DataLoader:
        c = self.loader_cfg
        workers = int(c["num_workers"])
        return DataLoader(
            CropDataset(self.index.splits[split], self.store, self.input_length, random_crop=train),
            batch_size=int(c["batch_size"]),
            shuffle=train,
            drop_last=train and len(self.index.splits[split]) > int(c["batch_size"]),
            num_workers=workers,
            pin_memory=bool(c["pin_memory"]),
            persistent_workers=bool(c["persistent_workers"]) and workers > 0,
            prefetch_factor=c["prefetch_factor"] if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def label_stats(index: TaggingIndex) -> Dict[str, Dict[str, float]]:
    """Per split: track count and mean positives per track (for run logs)."""
    out = {}
    for s, tracks in index.splits.items():
        y = index.labels(s)
        out[s] = {"tracks": len(tracks), "tags_per_track": float(y.sum(1).mean()) if len(tracks) else math.nan}
    return out
