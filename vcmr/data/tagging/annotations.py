"""Annotations of the music tagging datasets: MagnaTagATune (two published splits), MTG-Jamendo.

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
GTZAN ``filtered``  ``{train,valid,test}_filtered.txt``: one ``<genre>/<genre>.    github.com/jongpillee/music_dataset_split,
                    <nnnnn>.wav`` path per line (443 / 197 / 290 tracks)          ``GTZAN_split/`` (the fault-filtered split
                                                                                  of Kereliuk et al. 2015; the lists
                                                                                  torchaudio's GTZAN, and so CLMR, uses)
single label        ``csv``: ``labels.csv`` with the header ``path,label,split``   your own data
                    (``split``: train, valid or test); ``folders``:
                    ``{train,valid,test}/<class>/<audio files>``
==================  ===========================================================  ==========================================

**Tasks.** MagnaTagATune and MTG-Jamendo are multi-label (``task = "multilabel"``: any
number of tags per track). GTZAN and the generic single-label data are single-label
(``task = "single_label"``): every track's label row is one-hot over the classes, training
uses a softmax cross-entropy, and evaluation reports accuracy and per-class accuracy next
to the macro ROC-AUC / PR-AUC of the class scores. Class order: GTZAN's ten genres in
alphabetical order (as torchaudio's ``gtzan_genres``); the generic data: the sorted class
names of the train split (a valid/test track of another class is an error).

The label lists of ``*_gt_mtt.tsv`` are parsed as numbers, never evaluated as code. The
``pons2017`` files carry no tag names; their column order is the one musicnn-training
publishes in ``data/index/mtt/output_labels_mtt.txt`` (:data:`PONS2017_TAGS`).

MTG-Jamendo tag vocabulary: every ``category---tag`` string that occurs in the *train*
file, sorted by Python string order (so ``genre---*`` < ``instrument---*`` <
``mood/theme---*``). It is stable for a given train file. Validation/test tags absent
from train are ignored (and counted in :attr:`TaggingIndex.notes`).

Audio paths in the files are relative to ``data.audio_root`` (the folder holding the
mp3s). :data:`DATASETS` maps ``data.name`` to the parser of that dataset's files.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from vcmr.audio.io import AUDIO_EXTENSIONS

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


class DatasetFilesError(FileNotFoundError):
    """Annotation files of a dataset are missing; the message lists them and their source."""


class AnnotationFormatError(ValueError):
    """An annotation file does not have the published format (message names file:line)."""


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
    #: ``multilabel`` (tags) or ``single_label`` (one-hot classes): see the module docstring.
    task: str = "multilabel"

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


# --------------------------------------------------------------------------------------
# Single-label datasets: GTZAN (fault-filtered split) and a generic folder / CSV layout
# --------------------------------------------------------------------------------------

GTZAN_SOURCE = "https://github.com/jongpillee/music_dataset_split (GTZAN_split/)"
#: torchaudio's ``gtzan_genres`` order (alphabetical).
GTZAN_GENRES: Tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock",
)
#: Counts of the fault-filtered split files (train, valid, test).
GTZAN_FILTERED_SIZES = {"train": 443, "valid": 197, "test": 290}
SINGLE_LABEL_SPLITS = ("csv", "folders")
CSV_HEADER = ("path", "label", "split")


def _one_hot(j: int, n: int) -> np.ndarray:
    y = np.zeros(n, np.float32)
    y[j] = 1.0
    return y


def parse_gtzan(root: str | os.PathLike, audio_root: Optional[str | os.PathLike] = None) -> TaggingIndex:
    """GTZAN with the fault-filtered split (Kereliuk, Sturm & Larsen, 2015), as CLMR uses it.

    Args:
        root: folder with ``train_filtered.txt``, ``valid_filtered.txt``, ``test_filtered.txt``.
        audio_root: folder the listed ``<genre>/<genre>.<nnnnn>.wav`` paths are relative to
            (default: ``root``); e.g. the ``genres/`` folder of the dataset.

    Raises:
        DatasetFilesError: a list file is missing (named, with its source).
        AnnotationFormatError: a line is not ``<genre>/<file>`` with a GTZAN genre, or a track repeats.
    """
    root = Path(root)
    names = {s: f"{s}_filtered.txt" for s in ("train", "valid", "test")}
    _require(root, list(names.values()), GTZAN_SOURCE, "GTZAN (fault-filtered split)")
    col = {g: j for j, g in enumerate(GTZAN_GENRES)}
    seen: Dict[str, str] = {}
    splits: Dict[str, List[Track]] = {}
    notes: List[str] = []
    for split, fname in names.items():
        tracks = []
        for lineno, line in _read_lines(root / fname):
            where = f"{root / fname}:{lineno}"
            path = line.strip()
            genre = path.split("/", 1)[0]
            if "/" not in path or genre not in col:
                raise AnnotationFormatError(f"{where}: expected '<genre>/<file>' with a GTZAN genre, got {path[:60]!r}")
            if path in seen:
                raise AnnotationFormatError(f"{where}: {path} is already listed in {seen[path]}")
            seen[path] = where
            tracks.append(Track(Path(path).stem, path, _one_hot(col[genre], len(GTZAN_GENRES))))
        if len(tracks) != GTZAN_FILTERED_SIZES[split]:
            notes.append(f"{split}: {len(tracks)} tracks, the published list has {GTZAN_FILTERED_SIZES[split]}")
        splits[split] = tracks
    return TaggingIndex("gtzan", list(GTZAN_GENRES), splits, Path(audio_root or root), notes, task="single_label")


def _single_label_index(name: str, rows: Dict[str, List[Tuple[str, str, str]]], audio_root: Path) -> TaggingIndex:
    """rows: split -> [(path, label, where)]; classes are the sorted labels of the train split."""
    classes = sorted({label for _, label, _ in rows["train"]})
    if not classes:
        raise AnnotationFormatError(f"{name}: the train split has no tracks")
    col = {c: j for j, c in enumerate(classes)}
    splits: Dict[str, List[Track]] = {}
    for split, items in rows.items():
        tracks = []
        for path, label, where in items:
            if label not in col:
                raise AnnotationFormatError(f"{where}: class '{label}' has no track in the train split (classes: {classes})")
            tracks.append(Track(path, path, _one_hot(col[label], len(classes))))
        splits[split] = tracks
    return TaggingIndex(name, classes, splits, audio_root, task="single_label")


def parse_single_label_csv(root: str | os.PathLike, audio_root: Optional[str | os.PathLike] = None) -> TaggingIndex:
    """``<root>/labels.csv``: header ``path,label,split``, one track per row; paths relative to ``audio_root``."""
    root = Path(root)
    _require(root, ["labels.csv"], "your dataset (docs/supervised.md, single-label data)", "single-label CSV")
    path = root / "labels.csv"
    rows: Dict[str, List[Tuple[str, str, str]]] = {s: [] for s in ("train", "valid", "test")}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = tuple(h.strip() for h in next(reader, ()))
        if header != CSV_HEADER:
            raise AnnotationFormatError(f"{path}:1: expected the header {','.join(CSV_HEADER)}, got {','.join(header)!r}")
        for lineno, row in enumerate(reader, 2):
            if not any(c.strip() for c in row):
                continue
            where = f"{path}:{lineno}"
            if len(row) != 3 or not row[0].strip() or not row[1].strip():
                raise AnnotationFormatError(f"{where}: expected 'path,label,split', got {','.join(row)[:60]!r}")
            split = row[2].strip()
            if split not in rows:
                raise AnnotationFormatError(f"{where}: split must be train, valid or test, got {split!r}")
            rows[split].append((row[0].strip(), row[1].strip(), where))
    return _single_label_index("single_label", rows, Path(audio_root or root))


def parse_single_label_folders(root: str | os.PathLike, audio_root: Optional[str | os.PathLike] = None) -> TaggingIndex:
    """``<root>/{train,valid,test}/<class>/<audio files>`` (searched recursively inside each class folder)."""
    root = Path(audio_root or root)
    missing = [s for s in ("train", "valid", "test") if not (root / s).is_dir()]
    if missing:
        raise DatasetFilesError(
            f"single-label folders: {root} lacks the split folder(s) {missing}; "
            "expected <root>/{train,valid,test}/<class>/<audio files> (docs/supervised.md)"
        )
    exts = set(AUDIO_EXTENSIONS) | {".au"}
    rows: Dict[str, List[Tuple[str, str, str]]] = {}
    for split in ("train", "valid", "test"):
        items = []
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(folder.rglob("*")):
                if f.is_file() and f.suffix.lower() in exts and not f.name.startswith("."):
                    items.append((f.relative_to(root).as_posix(), folder.name, str(f)))
        rows[split] = items
    return _single_label_index("single_label", rows, root)


#: ``data.split`` of the generic single-label data -> its parser.
SINGLE_LABEL_LAYOUTS: Dict[str, Callable[..., TaggingIndex]] = {
    "csv": parse_single_label_csv,
    "folders": parse_single_label_folders,
}


#: ``data.split`` of MagnaTagATune -> parser of that split's files.
MTAT_SPLITS: Dict[str, Callable[..., TaggingIndex]] = {"pons2017": parse_mtat_pons2017, "won2020": parse_mtat_won2020}


def _magnatagatune(cfg: Mapping[str, Any]) -> TaggingIndex:
    split = str(cfg["split"])
    if split not in MTAT_SPLITS:
        raise ValueError(f"data.split: MagnaTagATune split must be one of {sorted(MTAT_SPLITS)}, got '{split}'")
    return MTAT_SPLITS[split](cfg["root"], cfg["audio_root"])


def _mtg_jamendo(cfg: Mapping[str, Any]) -> TaggingIndex:
    return parse_mtg_jamendo(cfg["root"], str(cfg["split"]), str(cfg["tagset"]), cfg["audio_root"])


def _gtzan(cfg: Mapping[str, Any]) -> TaggingIndex:
    if str(cfg["split"]) != "filtered":
        raise ValueError(f"data.split: GTZAN has the fault-filtered split only ('filtered'), got '{cfg['split']}'")
    return parse_gtzan(cfg["root"], cfg["audio_root"])


def _single_label(cfg: Mapping[str, Any]) -> TaggingIndex:
    layout = str(cfg["split"])
    if layout not in SINGLE_LABEL_LAYOUTS:
        raise ValueError(f"data.split: single-label data comes as {sorted(SINGLE_LABEL_LAYOUTS)}, got '{layout}'")
    return SINGLE_LABEL_LAYOUTS[layout](cfg["root"], cfg["audio_root"])


#: ``data.name`` -> parser of the dataset's annotation files, given the ``data`` block.
DATASETS: Dict[str, Callable[[Mapping[str, Any]], TaggingIndex]] = {
    "magnatagatune": _magnatagatune,
    "mtg_jamendo": _mtg_jamendo,
    "gtzan": _gtzan,
    "single_label": _single_label,
}


def build_index(cfg: Mapping[str, Any]) -> TaggingIndex:
    """Parse the dataset named by ``cfg`` (a :class:`~vcmr.data.tagging.TaggingDataConfig`).

    The index is named ``data.report_name`` when set, else ``data.name``.
    """
    name = str(cfg["name"])
    if name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset '{name}' (choose from {sorted(DATASETS)})")
    if cfg["root"] is None:
        raise ValueError(f"data.root: required for data.name={name} (folder of the annotation files)")
    index = DATASETS[name](cfg)
    return dataclasses.replace(index, name=str(cfg["report_name"])) if cfg["report_name"] else index
