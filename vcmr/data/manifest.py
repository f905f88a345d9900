"""The music-video dataset manifest: one row per video, ``<dataset>/manifest.csv``.

The builder writes one JSON record per video under ``<dataset>/records/<video_id>.json``
after all of that video's outputs exist; the CSV manifest is assembled from those records
(at the end of every run, and by the merge step for sharded runs). A record is therefore
the "done" marker: a killed run leaves no record for a half-processed video.

CSV columns (paths are relative to the dataset dir)::

    video_id, status (ok | rejected | failed), reason, duration, n_scenes, longest_scene,
    window_start, window_duration, n_segments, feature_shape ("ROWSxDIM"),
    audio_paths (";"-separated), feature_path
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

from vcmr.utils import atomic_write_text

MANIFEST_NAME = "manifest.csv"
RECORDS_DIR = "records"
STATUSES = ("ok", "rejected", "failed")


class ManifestError(ValueError):
    """A manifest or record file is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """Outcome of one video.

    Attributes:
        video_id: YouTube id or the sanitised relative path of a local file.
        status: ``ok``, ``rejected`` (a rule said no) or ``failed`` (an error).
        reason: why it was rejected/failed; empty for ``ok``.
        duration: usable duration of the file in seconds (0 when unknown).
        n_scenes: scenes found in the kept window.
        longest_scene: longest scene in the kept window, seconds.
        window_start: start of the kept window in the file, seconds.
        window_duration: length of the kept window, seconds (a whole number).
        n_segments: audio segments written.
        feature_shape: ``(seconds, dim)`` of the frame-embedding array; ``(0, 0)`` if none.
        audio_paths: segment files, relative to the dataset dir, in time order.
        feature_path: ``.npy`` file relative to the dataset dir; empty if none.
        source: the input it came from (local file path or URL); empty in manifests
            written before this column existed.
    """

    video_id: str
    status: str
    reason: str
    duration: float
    n_scenes: int
    longest_scene: float
    window_start: float
    window_duration: float
    n_segments: int
    feature_shape: Tuple[int, int]
    audio_paths: Tuple[str, ...]
    feature_path: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got '{self.status}'")

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["feature_shape"] = list(self.feature_shape)
        d["audio_paths"] = list(self.audio_paths)
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "VideoRecord":
        return cls(
            video_id=str(d["video_id"]),
            status=str(d["status"]),
            reason=str(d["reason"]),
            duration=float(d["duration"]),
            n_scenes=int(d["n_scenes"]),
            longest_scene=float(d["longest_scene"]),
            window_start=float(d["window_start"]),
            window_duration=float(d["window_duration"]),
            n_segments=int(d["n_segments"]),
            feature_shape=(int(d["feature_shape"][0]), int(d["feature_shape"][1])),
            audio_paths=tuple(str(p) for p in d["audio_paths"]),
            feature_path=str(d["feature_path"]),
            source=str(d.get("source", "")),
        )


COLUMNS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(VideoRecord))
#: Columns added after the first manifests were written; older files without them still read.
OPTIONAL_COLUMNS: Tuple[str, ...] = ("source",)


def failed(video_id: str, status: str, reason: str, **facts: Any) -> VideoRecord:
    """A record without outputs (``rejected`` or ``failed``); ``facts`` fill known fields."""
    base = dict(
        duration=0.0, n_scenes=0, longest_scene=0.0, window_start=0.0, window_duration=0.0,
        n_segments=0, feature_shape=(0, 0), audio_paths=(), feature_path="",
    )
    base.update(facts)
    return VideoRecord(video_id=video_id, status=status, reason=reason, **base)


# --------------------------------------------------------------------------------------
# Per-video records
# --------------------------------------------------------------------------------------


def record_path(root: str | os.PathLike, video_id: str) -> Path:
    return Path(root) / RECORDS_DIR / f"{video_id}.json"


def write_record(root: str | os.PathLike, record: VideoRecord, extra: Dict[str, Any] | None = None) -> Path:
    """Write ``records/<video_id>.json`` atomically (the video's last output)."""
    path = record_path(root, record.video_id)
    payload = record.to_json()
    if extra:
        payload["extra"] = extra
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True))
    return path


def read_record(path: str | os.PathLike) -> VideoRecord:
    path = Path(path)
    try:
        return VideoRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ManifestError(f"{path}: malformed record: {exc}") from exc


def read_records(root: str | os.PathLike) -> Dict[str, VideoRecord]:
    """All records of a dataset dir, by video id (unreadable records raise)."""
    folder = Path(root) / RECORDS_DIR
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.glob("*.json")):
        rec = read_record(p)
        out[rec.video_id] = rec
    return out


# --------------------------------------------------------------------------------------
# CSV manifest
# --------------------------------------------------------------------------------------


def _row(rec: VideoRecord) -> List[str]:
    return [
        rec.video_id, rec.status, rec.reason, f"{rec.duration:.3f}", str(rec.n_scenes),
        f"{rec.longest_scene:.3f}", f"{rec.window_start:.3f}", f"{rec.window_duration:.3f}",
        str(rec.n_segments), f"{rec.feature_shape[0]}x{rec.feature_shape[1]}",
        ";".join(rec.audio_paths), rec.feature_path, rec.source,
    ]


def write_manifest(path: str | os.PathLike, records: Iterable[VideoRecord]) -> Path:
    """Write records (sorted by video id) as CSV, atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for rec in sorted(records, key=lambda r: r.video_id):
        w.writerow(_row(rec))
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def _parse_row(row: Dict[str, str]) -> VideoRecord:
    rows, _, dim = row["feature_shape"].partition("x")
    return VideoRecord(
        video_id=row["video_id"],
        status=row["status"],
        reason=row["reason"],
        duration=float(row["duration"]),
        n_scenes=int(row["n_scenes"]),
        longest_scene=float(row["longest_scene"]),
        window_start=float(row["window_start"]),
        window_duration=float(row["window_duration"]),
        n_segments=int(row["n_segments"]),
        feature_shape=(int(rows), int(dim)),
        audio_paths=tuple(p for p in row["audio_paths"].split(";") if p),
        feature_path=row["feature_path"],
        source=row.get("source") or "",
    )


def read_manifest(root: str | os.PathLike) -> List[VideoRecord]:
    """Read a dataset's manifest.

    Args:
        root: the dataset dir (reads ``<root>/manifest.csv``) or a manifest CSV file.

    Returns:
        One :class:`VideoRecord` per row, in file order (all statuses; filter on
        ``status == "ok"`` for usable videos).

    Raises:
        ManifestError: the file is missing, lacks columns, or a row does not parse; the
            message names the file (and line).
    """
    root = Path(root)
    path = root / MANIFEST_NAME if root.is_dir() else root
    if not path.is_file():
        raise ManifestError(
            f"{path}: manifest not found; build the dataset with "
            "`python -m vcmr.scripts.preprocess input=... output=...` (or merge shards with merge=true)"
        )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {missing}")
        out = []
        for row in reader:
            try:
                out.append(_parse_row(row))
            except (ValueError, TypeError) as exc:
                raise ManifestError(f"{path}:{reader.line_num}: malformed row: {exc}") from exc
    return out
