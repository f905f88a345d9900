"""Clip and music libraries: embeddings of many files in a vector index plus a metadata table.

``build(cfg)`` embeds every file of ``input`` (a folder, searched recursively, or a list
file of paths) with a stage-2 model and writes one library folder::

    library.yaml            kind, model (path, sha256, spec), frame encoder, sample rate, settings,
                            and, once assembled, the counts
    library.sqlite          metadata tables (see TABLES), row = the vector's id in the index
    clips.index             (kind clips) FAISS index of the clip embeddings
    songs.index             (kind music) FAISS index of the song embeddings
    windows.index           (kind music) FAISS index of the song-window embeddings
    thumbs/<clip_id>.jpg    (kind clips) the clip's middle frame
    parts/<item_id>.npz     per-file embeddings and spans, written once per file
    records/<item_id>.json  per-file outcome (ok | rejected | failed, reason), written last

**Clips** (``kind: clips``, video files). Each video is decoded once: the frames for the
frame encoder, the frames for scene detection (PySceneDetect ``ContentDetector``, the
builder's ``scenes`` settings) and the thumbnail frames come from one pass. Clips never
straddle a scene cut. A scene of length ``L`` gives ``floor(L / clip_seconds)``
consecutive clips of ``clip_seconds`` from its start; what is left (or the whole scene,
when it is shorter than one clip) gives one more clip of ``floor(rest)`` whole seconds if
that is at least ``min_clip_seconds``, and is skipped otherwise. A clip's embedding is the
temporal encoder over its own per-second frame features (row ``k`` = frames in
``[start + k, start + k + 1)``, the dataset builder's rule aligned to the clip's start).
A video without any clip is recorded as ``rejected``.

**Music** (``kind: music``, audio files or the audio track of videos): the embedder's
song windows (``hop_seconds``; ``null`` = half a window) and the song embedding.

A library grows: a run with more (or other) input files adds them to what the folder holds.

**Resuming and sharding.** A file's outputs (part, thumbnails) are written atomically and
its record last, so a killed build loses at most the files in flight; a re-run skips every
file with a record (``retry_failed=true`` retries failed ones). The index files and the
table are assembled at the end from the parts, in sorted id order, so a resumed build gives
the same library as an uninterrupted one. ``shard=i/N`` processes the files whose id hashes
to shard ``i`` and does not assemble; ``merge=true`` assembles the library from all parts.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import math
import os
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

from vcmr.config import ConfigError, above, at_least, in_range, one_of, required, to_container
from vcmr.utils import atomic_path, atomic_write_text, progress_bar

FORMAT = "vcmr.library/1"
LIBRARY_FILE = "library.yaml"
TABLE_FILE = "library.sqlite"
RECORDS_DIR = "records"
PARTS_DIR = "parts"
THUMBS_DIR = "thumbs"
STATUSES = ("ok", "rejected", "failed")

# --------------------------------------------------------------------------------------
# Config schema (values in config/library.yaml)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class LibraryScenesConfig:
    """PySceneDetect ``ContentDetector`` on frames sampled at ``fps``, scaled to ``short_side``."""

    threshold: float = required(above(0))
    min_scene_len: float = required(at_least(0))
    fps: float = required(above(0))
    short_side: int = required(at_least(16))


@dataclasses.dataclass
class ThumbsConfig:
    """Thumbnail frames sampled at ``fps`` (the one nearest a clip's middle is kept), shorter
    side ``short_side`` pixels (never upscaled), JPEG ``quality``."""

    fps: float = required(above(0))
    short_side: int = required(at_least(16))
    quality: int = required(in_range(1, 100, closed_high=True))


@dataclasses.dataclass
class IndexConfig:
    """``kind`` (flat | hnsw | ivf) and the parameters of each kind in ``params``."""

    kind: str = required(one_of("flat", "hnsw", "ivf"))
    params: Dict[str, Dict[str, Any]] = MISSING


@dataclasses.dataclass
class EmbedderConfig:
    """Arguments of :class:`vcmr.retrieval.embedder.Embedder`."""

    device: str = MISSING
    precision: str = required(one_of("fp32", "fp16", "bf16"))
    batch_size: int = required(at_least(1))
    frame_batch_size: int = required(at_least(1))
    interpolation: str = MISSING
    decoder_threads: int = required(at_least(0))
    end_tolerance: float = required(at_least(0))


@dataclasses.dataclass
class CheckConfig:
    """Self-retrieval check after assembly: each video's own soundtrack as the query
    (see :mod:`vcmr.retrieval.check`); ``max_items`` null checks every item."""

    self_retrieval: bool = MISSING
    ks: List[int] = MISSING
    max_items: Optional[int] = required(at_least(1))


@dataclasses.dataclass
class LibraryConfig:
    """Schema of ``config/library.yaml``."""

    kind: str = required(one_of("clips", "music"))
    input: str = MISSING
    output: str = MISSING
    model: str = MISSING
    shard: str = MISSING
    merge: bool = MISSING
    retry_failed: bool = MISSING
    progress: bool = MISSING
    clip_seconds: int = required(at_least(1))
    min_clip_seconds: int = required(at_least(1))
    hop_seconds: Optional[float] = required(above(0))
    scenes: LibraryScenesConfig = dataclasses.field(default_factory=LibraryScenesConfig)
    thumbs: ThumbsConfig = dataclasses.field(default_factory=ThumbsConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    embedder: EmbedderConfig = dataclasses.field(default_factory=EmbedderConfig)
    check: CheckConfig = dataclasses.field(default_factory=CheckConfig)
    demo: Dict[str, Any] = dataclasses.field(default_factory=dict)


class LibraryError(ValueError):
    """A library folder is missing, incomplete, empty or inconsistent with the request."""


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MediaSource:
    """One input file and its id (relative path without extension, ``/`` -> ``__``)."""

    item_id: str
    path: str


def read_sources(input_path: str | os.PathLike, extensions: Sequence[str]) -> List[MediaSource]:
    """Files of a folder (recursive, sorted, by extension) or of a list file (one path per
    line, relative to the list's folder; ``#`` starts a comment).

    Raises:
        ConfigError: the input does not exist, a listed file is missing, or two files get
            the same id.
    """
    from vcmr.preprocess.download import local_video_id

    p = Path(input_path)
    out: Dict[str, MediaSource] = {}

    def add(item_id: str, path: Path, where: str) -> None:
        if item_id in out and out[item_id].path != str(path):
            raise ConfigError(f"{where}: '{out[item_id].path}' and '{path}' map to the same id '{item_id}'; rename one")
        out[item_id] = MediaSource(item_id, str(path))

    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.suffix.lower() in extensions and f.is_file() and not f.name.startswith("."):
                add(local_video_id(f.relative_to(p)), f.resolve(), str(p))
    elif p.is_file():
        for lineno, raw in enumerate(p.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            f = Path(line) if Path(line).is_absolute() else p.parent / line
            if not f.is_file():
                raise ConfigError(f"{p}:{lineno}: '{line}' is not a file")
            rel = f.relative_to(p.parent) if not Path(line).is_absolute() else Path(f.name)
            add(local_video_id(rel), f.resolve(), f"{p}:{lineno}")
    else:
        raise ConfigError(f"input: '{p}' is neither a folder nor a list file")
    return list(out.values())


# --------------------------------------------------------------------------------------
# Clips within scenes
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipSpan:
    """A clip: ``start`` (s), ``seconds`` (whole), index of its ``scene``."""

    start: float
    seconds: int
    scene: int

    @property
    def end(self) -> float:
        return self.start + self.seconds


def cut_clips(scenes: Sequence[Tuple[float, float]], clip_seconds: int, min_clip_seconds: int) -> List[ClipSpan]:
    """Clips inside scenes (see the module docstring for the rule).

    Args:
        scenes: ``(start, end)`` seconds of each scene, in order.
        clip_seconds: length of a full clip (whole seconds).
        min_clip_seconds: shortest clip kept from a scene's remainder or a short scene.
    """
    if clip_seconds < 1 or not 1 <= min_clip_seconds <= clip_seconds:
        raise ConfigError(
            f"clip_seconds={clip_seconds}, min_clip_seconds={min_clip_seconds}: need 1 <= min_clip_seconds <= clip_seconds"
        )
    eps = 1e-6
    clips = []
    for s, (a, b) in enumerate(scenes):
        length = b - a
        n_full = int(math.floor(length / clip_seconds + eps))
        for j in range(n_full):
            clips.append(ClipSpan(round(a + j * clip_seconds, 6), clip_seconds, s))
        rest = int(math.floor(length - n_full * clip_seconds + eps))
        if rest >= min_clip_seconds:
            clips.append(ClipSpan(round(a + n_full * clip_seconds, 6), rest, s))
    return clips


def clip_id(item_id: str, k: int) -> str:
    return f"{item_id}_c{k:04d}"


# --------------------------------------------------------------------------------------
# Per-file work of each kind
# --------------------------------------------------------------------------------------


def _part_path(root: Path, item_id: str) -> Path:
    return root / PARTS_DIR / f"{item_id}.npz"


def _save_part(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_part(root: str | os.PathLike, item_id: str) -> Dict[str, np.ndarray]:
    """The arrays of one file's part (``parts/<item_id>.npz``)."""
    path = _part_path(Path(root), item_id)
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise LibraryError(f"{path}: missing or unreadable part ({exc}); re-run the build to redo it") from exc


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


class ClipsKind:
    """Video files -> scene-bounded clips, one index (``clips``)."""

    name = "clips"
    indexes = ("clips",)

    @staticmethod
    def extensions() -> Tuple[str, ...]:
        from vcmr.video.probe import VIDEO_EXTENSIONS

        return tuple(VIDEO_EXTENSIONS)

    def process(self, src: MediaSource, embedder, cfg: DictConfig, root: Path) -> Dict[str, Any]:
        from vcmr.video.features import video_stream_info
        from vcmr.video.frames import FrameGrid
        from vcmr.video.scenes import SceneTracker

        info = video_stream_info(src.path)
        sc, th = cfg.scenes, cfg.thumbs
        short = min(int(th.short_side), min(info.width, info.height)) if info.width and info.height else int(th.short_side)
        grids = [FrameGrid(float(sc.fps), int(sc.short_side), False), FrameGrid(float(th.fps), short, False)]
        tracker = SceneTracker(float(sc.fps), float(sc.threshold), float(sc.min_scene_len))
        thumbs: List[Tuple[float, bytes]] = []

        def on_sample(smp) -> None:
            if smp.grid == 1:
                tracker.add(smp.index, smp.image)
            else:
                thumbs.append((smp.time, _jpeg(smp.image, int(th.quality))))

        frames = embedder.encode_frames(src.path, 0.0, info.duration, grids, on_sample)
        scenes = tracker.finish(frames.duration).scenes
        clips = cut_clips(scenes, int(cfg.clip_seconds), int(cfg.min_clip_seconds))
        facts = {"duration": round(float(frames.duration), 3), "n_scenes": len(scenes)}
        if not clips:
            return {**facts, "status": "rejected", "n_entries": 0,
                    "reason": f"no clip: every scene is shorter than min_clip_seconds={cfg.min_clip_seconds} s"}
        vectors = embedder.encode_features([embedder.span_features(frames, c.start, c.seconds) for c in clips])
        times = np.array([t for t, _ in thumbs])
        for k, c in enumerate(clips):
            inside = np.flatnonzero((times >= c.start) & (times < c.end))
            pick = inside[np.argmin(np.abs(times[inside] - (c.start + c.end) / 2))] if inside.size else (
                int(np.argmin(np.abs(times - (c.start + c.end) / 2))))
            with atomic_path(root / THUMBS_DIR / f"{clip_id(src.item_id, k)}.jpg") as tmp:
                tmp.write_bytes(thumbs[pick][1])
        _save_part(_part_path(root, src.item_id), {
            "vectors": vectors.astype(np.float32),
            "starts": np.array([c.start for c in clips], np.float64),
            "ends": np.array([c.end for c in clips], np.float64),
            "scenes": np.array([c.scene for c in clips], np.int64),
            "scene_bounds": np.array(scenes, np.float64).reshape(-1, 2),
        })
        return {**facts, "status": "ok", "reason": "", "n_entries": len(clips)}

    def assemble(self, root: Path, records: Sequence[Dict[str, Any]], dim: int) -> Tuple[Dict[str, np.ndarray], Dict[str, List[tuple]]]:
        vecs, rows = [], []
        for rec in records:
            if rec["status"] != "ok":
                continue
            part = load_part(root, rec["item_id"])
            vecs.append(part["vectors"])
            bounds = part["scene_bounds"]
            for k, (a, b, s) in enumerate(zip(part["starts"], part["ends"], part["scenes"])):
                cid = clip_id(rec["item_id"], k)
                rows.append((len(rows), cid, rec["item_id"], rec["source"], float(a), float(b), float(b - a), int(s),
                             float(bounds[s, 0]), float(bounds[s, 1]), f"{THUMBS_DIR}/{cid}.jpg"))
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        return {"clips": vectors}, {"clips": rows}


class MusicKind:
    """Audio files (or the audio track of videos) -> song windows + song embeddings."""

    name = "music"
    indexes = ("songs", "windows")

    @staticmethod
    def extensions() -> Tuple[str, ...]:
        from vcmr.audio.io import AUDIO_EXTENSIONS

        return tuple(sorted(AUDIO_EXTENSIONS))

    def process(self, src: MediaSource, embedder, cfg: DictConfig, root: Path) -> Dict[str, Any]:
        emb = embedder.embed_audio(src.path, hop_seconds=cfg.hop_seconds)
        _save_part(_part_path(root, src.item_id), {
            "windows": emb.windows, "starts": emb.starts, "ends": emb.ends, "song": emb.song[None],
        })
        return {"status": "ok", "reason": "", "duration": round(float(emb.duration), 3), "n_scenes": 0,
                "n_entries": int(len(emb.windows))}

    def assemble(self, root: Path, records: Sequence[Dict[str, Any]], dim: int) -> Tuple[Dict[str, np.ndarray], Dict[str, List[tuple]]]:
        songs, windows, song_rows, window_rows = [], [], [], []
        for rec in records:
            if rec["status"] != "ok":
                continue
            part = load_part(root, rec["item_id"])
            s = len(song_rows)
            song_rows.append((s, rec["item_id"], rec["source"], float(rec["duration"]), len(part["windows"]),
                              len(window_rows)))
            songs.append(part["song"])
            windows.append(part["windows"])
            for k, (a, b) in enumerate(zip(part["starts"], part["ends"])):
                window_rows.append((len(window_rows), rec["item_id"], s, k, float(a), float(b)))
        empty = np.zeros((0, dim), np.float32)
        return (
            {"songs": np.concatenate(songs) if songs else empty, "windows": np.concatenate(windows) if windows else empty},
            {"songs": song_rows, "windows": window_rows},
        )


#: Library kinds by name (``kind`` in the config).
KINDS: Dict[str, Any] = {"clips": ClipsKind(), "music": MusicKind()}

#: SQLite tables: name -> column definitions. ``row`` is the vector's id in the index of
#: the same name; ``status`` has one row per input file.
TABLES: Dict[str, str] = {
    "clips": "row INTEGER PRIMARY KEY, clip_id TEXT UNIQUE NOT NULL, video_id TEXT NOT NULL, source TEXT NOT NULL, "
             "start REAL NOT NULL, end REAL NOT NULL, duration REAL NOT NULL, scene INTEGER NOT NULL, "
             "scene_start REAL NOT NULL, scene_end REAL NOT NULL, thumb TEXT NOT NULL",
    "songs": "row INTEGER PRIMARY KEY, song_id TEXT UNIQUE NOT NULL, source TEXT NOT NULL, duration REAL NOT NULL, "
             "n_windows INTEGER NOT NULL, first_window INTEGER NOT NULL",
    "windows": "row INTEGER PRIMARY KEY, song_id TEXT NOT NULL, song_row INTEGER NOT NULL, window INTEGER NOT NULL, "
               "start REAL NOT NULL, end REAL NOT NULL",
    "status": "item_id TEXT PRIMARY KEY, source TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, "
              "duration REAL NOT NULL, n_scenes INTEGER NOT NULL, n_entries INTEGER NOT NULL, seconds REAL NOT NULL",
}


# --------------------------------------------------------------------------------------
# Records, settings, assembly
# --------------------------------------------------------------------------------------


def _record_path(root: Path, item_id: str) -> Path:
    return root / RECORDS_DIR / f"{item_id}.json"


def read_records(root: str | os.PathLike) -> Dict[str, Dict[str, Any]]:
    """Every per-file record of a library folder, by id (sorted)."""
    folder = Path(root) / RECORDS_DIR
    out = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(p.read_text())
            out[rec["item_id"]] = rec
        except (OSError, ValueError, KeyError) as exc:
            raise LibraryError(f"{p}: malformed record ({exc}); delete it to redo that file") from exc
    return dict(sorted(out.items()))


def settings_view(cfg: DictConfig, embedder) -> Dict[str, Any]:
    """What shapes a library's contents (compared across runs into the same folder)."""
    view: Dict[str, Any] = {
        "kind": str(cfg.kind),
        "model_sha256": embedder.model_sha256,
        "frame_encoder": embedder.frame_encoder_spec,
        "sample_rate": embedder.sample_rate,
        "interpolation": str(cfg.embedder.interpolation),
    }
    if cfg.kind == "clips":
        view.update(clip_seconds=int(cfg.clip_seconds), min_clip_seconds=int(cfg.min_clip_seconds),
                    scenes=to_container(cfg.scenes), thumbs=to_container(cfg.thumbs))
    else:
        view.update(hop_seconds=cfg.hop_seconds)
    return json.loads(json.dumps(view))


def _library_yaml(cfg: DictConfig, embedder, assembled: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    doc = {
        "format": FORMAT,
        "kind": str(cfg.kind),
        "input": str(cfg.input),
        "model": embedder.model_info(),
        "frame_encoder": embedder.frame_encoder_spec,
        "settings": to_container(cfg),
        "view": settings_view(cfg, embedder),
    }
    if assembled is not None:
        doc["assembled"] = assembled
    return json.loads(json.dumps(doc))


def read_library_yaml(root: str | os.PathLike) -> Dict[str, Any]:
    """``library.yaml`` of a library folder as a plain dict.

    Raises:
        LibraryError: the folder or its ``library.yaml`` is missing or malformed.
    """
    root = Path(root)
    path = root / LIBRARY_FILE
    if not root.is_dir():
        raise LibraryError(f"{root}: library folder not found")
    if not path.is_file():
        raise LibraryError(f"{root}: not a library (no {LIBRARY_FILE}); build one with python -m vcmr.scripts.build_library")
    try:
        doc = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:
        raise LibraryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("kind") not in KINDS:
        raise LibraryError(f"{path}: not a {FORMAT} library file")
    return doc


def _write_yaml(path: Path, doc: Mapping[str, Any]) -> None:
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(dict(doc))))


def _check_or_save_settings(root: Path, cfg: DictConfig, embedder) -> None:
    """Refuse to mix outputs of different settings (or another model) in one folder."""
    path = root / LIBRARY_FILE
    mine = settings_view(cfg, embedder)
    if path.is_file():
        theirs = read_library_yaml(root).get("view", {})
        diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diff:
            raise LibraryError(
                f"{path}: this library was built with different {', '.join(diff)}"
                + (" (another model)" if "model_sha256" in diff else "")
                + "; use a new output folder or the same settings"
            )
        doc = read_library_yaml(root)
        if "assembled" in doc:  # keep the counts of the assembled library until it is re-assembled
            _write_yaml(path, _library_yaml(cfg, embedder, doc["assembled"]))
            return
    _write_yaml(path, _library_yaml(cfg, embedder))


def _write_tables(path: Path, tables: Mapping[str, Sequence[tuple]]) -> None:
    with atomic_path(path) as tmp:
        con = sqlite3.connect(str(tmp))
        try:
            for name, rows in tables.items():
                con.execute(f"CREATE TABLE {name} ({TABLES[name]})")
                n = TABLES[name].count(",") + 1
                con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * n)})", rows)
            con.commit()
        finally:
            con.close()


def assemble(root: str | os.PathLike, cfg: DictConfig, embedder) -> Dict[str, Any]:
    """Build the index files and ``library.sqlite`` from every record and part of ``root``.

    Returns:
        The ``assembled`` block written to ``library.yaml`` (counts and file names).
    """
    from vcmr.retrieval.index import VectorIndex

    root = Path(root)
    records = list(read_records(root).values())
    if not records:
        raise LibraryError(f"{root}: no records to assemble (expected {root / RECORDS_DIR}/*.json)")
    kind = KINDS[str(cfg.kind)]
    vectors, rows = kind.assemble(root, records, embedder.embed_dim)
    index_kind = str(cfg.index.kind)
    params = dict(to_container(cfg.index.params).get(index_kind) or {})
    files = {}
    for name in kind.indexes:
        index = VectorIndex(embedder.embed_dim, index_kind, **params)
        index.add(vectors[name])
        files[name] = index.save(root / f"{name}.index").name
    status_rows = [(r["item_id"], r["source"], r["status"], r["reason"], float(r.get("duration", 0.0)),
                    int(r.get("n_scenes", 0)), int(r.get("n_entries", 0)), float(r.get("seconds", 0.0)))
                   for r in records]
    _write_tables(root / TABLE_FILE, {**rows, "status": status_rows})
    counts = collections.Counter(r["status"] for r in records)
    assembled = {
        "n_items": len(records),
        "counts": {s: int(counts.get(s, 0)) for s in STATUSES},
        "n_entries": {name: int(len(vectors[name])) for name in kind.indexes},
        "indexes": files,
        "index": {"kind": index_kind, "params": params},
        "table": TABLE_FILE,
    }
    _write_yaml(root / LIBRARY_FILE, _library_yaml(cfg, embedder, assembled))
    return assembled


# --------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class LibrarySummary:
    """What a build run did (``assembled`` is None for a shard of a sharded build)."""

    output: Path
    kind: str
    total: int
    processed: int
    counts: Dict[str, int]
    reasons: Dict[str, int]
    assembled: Optional[Dict[str, Any]]
    seconds: float
    check: Optional[Dict[str, Any]] = None

    def __str__(self) -> str:
        lines = [
            f"library: {self.output} ({self.kind})",
            f"files: {self.total} ({self.processed} processed now, {self.total - self.processed} already done) "
            f"in {self.seconds:.1f} s",
            "status: " + ", ".join(f"{k} {self.counts.get(k, 0)}" for k in STATUSES),
        ]
        lines += [f"  {n:5d}  {reason}" for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])]
        if self.assembled is None:
            lines.append("shard done: assemble the library with merge=true once every shard has finished")
        else:
            lines.append("entries: " + ", ".join(f"{k} {v}" for k, v in self.assembled["n_entries"].items())
                         + f" (index {self.assembled['index']['kind']})")
        return "\n".join(lines)


def _is_done(rec: Optional[Dict[str, Any]], root: Path, retry_failed: bool) -> bool:
    if rec is None:
        return False
    if rec["status"] == "failed":
        return not retry_failed
    if rec["status"] == "ok":
        return _part_path(root, rec["item_id"]).is_file()
    return True


def process_one(src: MediaSource, embedder, cfg: DictConfig, root: Path) -> Dict[str, Any]:
    """Embed one file and write its outputs; problems come back as a rejected/failed record."""
    from vcmr.utils import MediaFileError

    t0 = time.perf_counter()
    base = {"item_id": src.item_id, "source": src.path}
    try:
        out = KINDS[str(cfg.kind)].process(src, embedder, cfg, root)
    except MediaFileError as exc:
        out = {"status": "failed", "reason": exc.reason}
    except Exception as exc:  # one bad file must not stop the build; keep the cause
        out = {"status": "failed", "reason": f"unexpected error: {traceback.format_exception_only(type(exc), exc)[-1].strip()}"}
    rec = {"duration": 0.0, "n_scenes": 0, "n_entries": 0, **base, **out,
           "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_text(_record_path(root, src.item_id), json.dumps(rec, indent=1, sort_keys=True))
    return rec


def make_embedder(cfg: DictConfig, model: Optional[str] = None):
    """The :class:`~vcmr.retrieval.embedder.Embedder` an ``embedder:`` config block describes."""
    from vcmr.retrieval.embedder import Embedder

    e = cfg.embedder
    return Embedder(
        model if model is not None else str(cfg.model), device=str(e.device), precision=str(e.precision),
        batch_size=int(e.batch_size), frame_batch_size=int(e.frame_batch_size), progress=False,
        interpolation=str(e.interpolation), decoder_threads=int(e.decoder_threads),
        end_tolerance=float(e.end_tolerance),
    )


def build(cfg: DictConfig, embedder=None) -> LibrarySummary:
    """Build (or continue, or merge) a library as configured.

    Args:
        cfg: a :class:`LibraryConfig` config.
        embedder: an :class:`~vcmr.retrieval.embedder.Embedder` to reuse; ``None`` builds
            it from ``cfg.model`` and ``cfg.embedder``.

    Returns:
        A :class:`LibrarySummary`.
    """
    from vcmr.preprocess.builder import parse_shard, shard_of

    t0 = time.perf_counter()
    if str(cfg.kind) not in KINDS:
        raise ConfigError(f"kind: '{cfg.kind}' is not one of {sorted(KINDS)}")
    if str(cfg.index.kind) not in to_container(cfg.index.params):
        raise ConfigError(f"index.params: no parameter block for index.kind '{cfg.index.kind}'")
    root = Path(str(cfg.output))
    shard = parse_shard(str(cfg.shard))
    embedder = embedder if embedder is not None else make_embedder(cfg)
    root.mkdir(parents=True, exist_ok=True)
    _check_or_save_settings(root, cfg, embedder)
    kind = KINDS[str(cfg.kind)]
    existing = read_records(root)
    processed = 0
    wanted = set(existing)
    if not cfg.merge:
        sources = [s for s in read_sources(str(cfg.input), kind.extensions()) if shard_of(s.item_id, shard[1]) == shard[0]]
        wanted = {s.item_id for s in sources}
        todo = [s for s in sources if not _is_done(existing.get(s.item_id), root, bool(cfg.retry_failed))]
        status: collections.Counter = collections.Counter()
        bar = progress_bar(total=len(todo), desc=f"{kind.name} -> {root.name}", unit="file", disable=not cfg.progress,
                   file=sys.stderr, dynamic_ncols=True)
        for src in todo:
            rec = process_one(src, embedder, cfg, root)
            existing[src.item_id] = rec
            processed += 1
            status[rec["status"]] += 1
            bar.set_postfix(status, refresh=False)
            bar.update(1)
        bar.close()
    # Like the dataset builder: a shard reports its own files, a whole run every file of the folder.
    records = [r for i, r in existing.items() if i in wanted] if shard[1] > 1 else list(existing.values())
    counts = collections.Counter(r["status"] for r in records)
    reasons = collections.Counter(f"{r['status']}: {r['reason'].split(':')[0]}" for r in records if r["status"] != "ok")
    assembled = None
    if cfg.merge or shard[1] == 1:
        assembled = assemble(root, cfg, embedder)
    summary = LibrarySummary(root, kind.name, len(records), processed, dict(counts), dict(reasons), assembled,
                             time.perf_counter() - t0)
    if assembled is not None and cfg.check.self_retrieval:
        from vcmr.retrieval.check import held_out_ids

        ok = [r["item_id"] for r in records if r["status"] == "ok"]
        held = held_out_ids(embedder.model_path, ok)
        summary.check = self_retrieval(root, embedder, list(cfg.check.ks), cfg.check.max_items,
                                       subsets={"held-out": held} if held else None, progress=bool(cfg.progress))
    return summary


def self_retrieval(
    root: str | Path,
    embedder,
    ks: Sequence[int],
    max_items: Optional[int] = None,
    subsets: Optional[Mapping[str, Sequence[str]]] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Self-retrieval of a library: each file's other modality as the query (see :mod:`vcmr.retrieval.check`).

    Args:
        root: library folder (assembled).
        embedder: the :class:`~vcmr.retrieval.embedder.Embedder` of the library's model.
        ks: Recall@K cut-offs.
        max_items: check only the first ``max_items`` files (sorted ids); ``None``: all.
        subsets: extra named groups of ids to report on their own (e.g. held-out videos).
        progress: progress bar.

    Returns:
        ``{"direction", "all": metrics, <subset>: metrics, "skipped": {id: reason}}``, also
        written to ``<root>/check.json``. Files whose query cannot be decoded are skipped.
    """
    from vcmr.retrieval.check import CHECK_FILE, own_item_recall
    from vcmr.utils import MediaFileError

    root = Path(root)
    kind = read_library_yaml(root)["kind"]
    records = [r for r in read_records(root).values() if r["status"] == "ok"]
    items, owners = [], []
    for rec in records:
        part = load_part(root, rec["item_id"])
        vec = part["vectors"] if kind == "clips" else part["song"]
        items.append(vec)
        owners += [rec["item_id"]] * len(vec)
    if not items:
        raise ValueError(f"{root}: no usable items to check")
    queries, q_owner, skipped = [], [], {}
    todo = records if max_items is None else records[: int(max_items)]
    for rec in progress_bar(todo, desc="self-retrieval queries", unit="file", disable=not progress, leave=False):
        try:
            if kind == "clips":
                queries.append(embedder.embed_audio(rec["source"]).song)
            else:
                queries.append(embedder.embed_video(rec["source"]).video)
            q_owner.append(rec["item_id"])
        except MediaFileError as exc:
            skipped[rec["item_id"]] = exc.reason
    if not queries:
        raise ValueError(f"{root}: no query could be decoded ({len(skipped)} skipped)")
    Q, N = np.stack(queries), np.concatenate(items)
    direction = "song -> own video's clips" if kind == "clips" else "video -> own soundtrack"
    out: Dict[str, Any] = {"direction": direction, "all": own_item_recall(Q, N, q_owner, owners, ks)}
    for name, ids in (subsets or {}).items():
        sel = [i for i, o in enumerate(q_owner) if o in set(ids)]
        if sel:
            out[name] = own_item_recall(Q[sel], N, [q_owner[i] for i in sel], owners, ks)
    out["skipped"] = skipped
    atomic_write_text(root / CHECK_FILE, json.dumps(out, indent=1))
    return out


__all__ = [
    "KINDS", "TABLES", "ClipSpan", "LibraryConfig", "LibraryError", "LibrarySummary", "MediaSource",
    "assemble", "build", "cut_clips", "load_part", "make_embedder", "read_library_yaml", "read_records",
    "read_sources", "self_retrieval", "settings_view",
]
