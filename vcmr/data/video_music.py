"""Stage-2 data: audio crops paired with the CLIP features of the seconds they cover.

The dataset builder's manifest is the index: only videos with status ``ok`` are used
(the others are counted and reported). Each video is assigned to the train or
validation split by a hash of its id, so adding videos never moves existing ones.

Alignment rule. Audio segment ``j`` of a video covers seconds
``[j * seg, (j + 1) * seg)`` of the kept window, and feature row ``k`` covers second
``k`` of the same window. A crop of ``L`` samples starting at sample ``o`` of segment
``j`` spans ``[t0, t0 + L/sr)`` with ``t0 = j * seg + o / sr``. Its video context is
the ``S = round(L / sr)`` whole seconds centred on the crop::

    first_row = round(t0 + L / (2 * sr) - S / 2), clamped to [0, n_rows - S]

e.g. 98,415 samples at 16 kHz (6.15 s) map to 6 rows.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vcmr.audio.io import AudioDecodeError, audio_info, load_audio
from vcmr.data.collate import BadItem, drop_bad_items
from vcmr.data.loaders import build_loader
from vcmr.utils import hash_split


def feature_rows(start_sample: int, length: int, sample_rate: int, n_rows: int) -> Tuple[int, int]:
    """``(first_row, n)`` of the feature rows a crop covers (see module docstring).

    Args:
        start_sample: crop start, in samples from the start of the kept window.
        length: crop length in samples.
        sample_rate: audio rate (Hz).
        n_rows: rows (seconds) available in the feature array.
    """
    n = max(1, int(round(length / sample_rate)))
    if n > n_rows:
        raise ValueError(f"a crop of {length / sample_rate:.2f}s needs {n} feature rows, video has {n_rows}")
    centre = (start_sample + length / 2) / sample_rate
    first = int(np.floor(centre - n / 2 + 0.5))
    return min(max(first, 0), n_rows - n), n


@dataclasses.dataclass(frozen=True)
class Segment:
    """One audio segment file of a video and where it sits in the kept window."""

    video_id: str
    audio_path: str
    feature_path: str
    index: int
    start_sample: int
    n_samples: int
    n_rows: int
    relpath: str = ""  # audio_path relative to the dataset folder, as reports name it


class VideoMusicDataset(Dataset):
    """Items ``{"audio": [1, L] float32, "video": [S, F] float32, "video_id": str}``, or a
    :class:`~vcmr.data.collate.BadItem` when the audio segment fails to decode.

    Args:
        segments: usable segments.
        sample_rate: audio rate (Hz); must match the files.
        audio_length: crop length ``L`` in samples.
        random_crop: uniform random crop offset (train) or the centre (validation).

    The crop is taken here, not on the device, so that the features can be matched to
    exactly the samples the encoder sees; device-side augmentations keep the length.
    """

    def __init__(self, segments: Sequence[Segment], sample_rate: int, audio_length: int, random_crop: bool):
        self.segments = list(segments)
        self.sample_rate = sample_rate
        self.audio_length = audio_length
        self.random_crop = random_crop
        self._features: Dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.segments)

    def _load_features(self, path: str) -> np.ndarray:
        arr = self._features.get(path)
        if arr is None:
            arr = np.load(path, mmap_mode="r")
            self._features[path] = arr
        return arr

    def __getitem__(self, idx: int) -> Dict[str, Any] | BadItem:
        seg = self.segments[idx]
        span = seg.n_samples - self.audio_length
        offset = int(torch.randint(0, span + 1, ()).item()) if self.random_crop else span // 2
        try:
            x = load_audio(
                seg.audio_path, self.sample_rate, offset=offset / self.sample_rate,
                duration=self.audio_length / self.sample_rate,
            )
        except AudioDecodeError as exc:
            return BadItem(seg.relpath or seg.audio_path, f"failed to decode during training: {exc.reason}")
        feats = self._load_features(seg.feature_path)
        first, n = feature_rows(seg.start_sample + offset, self.audio_length, self.sample_rate, seg.n_rows)
        video = np.array(feats[first : first + n], dtype=np.float32)  # copy out of the memory map
        return {"audio": torch.from_numpy(x).unsqueeze(0), "video": torch.from_numpy(video), "video_id": seg.video_id}


def index_dataset(
    root: str | os.PathLike, sample_rate: int, audio_length: int
) -> Tuple[List[Segment], Dict[str, int]]:
    """Segments of every ``ok`` video in a builder output folder, and counts by status.

    Raises:
        FileNotFoundError / ValueError naming the folder or file when the manifest or
        an output it lists is missing or inconsistent.
    """
    from vcmr.data.manifest import read_manifest

    root = Path(root)
    records = read_manifest(root)
    counts: Dict[str, int] = {}
    segments: List[Segment] = []
    for rec in records:
        counts[rec.status] = counts.get(rec.status, 0) + 1
        if rec.status != "ok":
            continue
        feat_path = root / rec.feature_path
        if not feat_path.is_file():
            raise FileNotFoundError(f"{root}: manifest lists {rec.feature_path} for {rec.video_id}, which is missing")
        n_rows = int(rec.feature_shape[0])
        start = 0
        for j, rel in enumerate(rec.audio_paths):
            path = root / rel
            info = audio_info(path)
            if info.sample_rate != sample_rate:
                raise ValueError(
                    f"{path}: audio is {info.sample_rate} Hz but data.sample_rate={sample_rate}; "
                    "rebuild the dataset or change data.sample_rate"
                )
            n = int(round(info.duration * sample_rate))
            if n >= audio_length:
                segments.append(Segment(rec.video_id, str(path), str(feat_path), j, start, n, n_rows, rel))
            start += n
    return segments, counts


class VideoMusicDataModule(pl.LightningDataModule):
    """Train/validation loaders over a builder output folder.

    Validation uses one item per validation video (the centre crop of its middle
    segment), so retrieval metrics rank whole videos against each other.
    """

    def __init__(
        self,
        root: str,
        sample_rate: int,
        audio_length: int,
        val_fraction: float,
        loader: Mapping[str, Any],
    ):
        super().__init__()
        self.root = root
        self.sample_rate = sample_rate
        self.audio_length = audio_length
        self.val_fraction = val_fraction
        self.loader = dict(loader)
        self.train_segments: List[Segment] = []
        self.val_segments: List[Segment] = []
        self.counts: Dict[str, int] = {}
        self._ready = False

    def setup(self, stage: Optional[str] = None) -> None:
        if self._ready:
            return
        segments, self.counts = index_dataset(self.root, self.sample_rate, self.audio_length)
        by_video: Dict[str, List[Segment]] = {}
        for seg in segments:
            by_video.setdefault(seg.video_id, []).append(seg)
        for vid, segs in sorted(by_video.items()):
            if hash_split(vid, self.val_fraction) == "val":
                self.val_segments.append(segs[len(segs) // 2])
            else:
                self.train_segments.extend(segs)
        if not self.train_segments or not self.val_segments:
            raise RuntimeError(
                f"data.root: {self.root} gives {len(self.train_segments)} training segments and "
                f"{len(self.val_segments)} validation videos; both must be non-empty (status counts: {self.counts})"
            )
        self._ready = True

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        return build_loader(ds, self.loader, train, collate_fn=drop_bad_items)

    def train_dataloader(self) -> DataLoader:
        ds = VideoMusicDataset(self.train_segments, self.sample_rate, self.audio_length, True)
        return self._loader(ds, train=True)

    def val_dataloader(self) -> DataLoader:
        ds = VideoMusicDataset(self.val_segments, self.sample_rate, self.audio_length, False)
        return self._loader(ds, train=False)
