"""Search a library with a song or a video: nearest and farthest items, whole query and per window.

* A **clip library** takes a song (any audio file, or the audio track of a video): the
  song embedding (and, with ``per_window``, each window's embedding) is searched for the
  ``k`` nearest clips and the ``k`` farthest clips (lowest cosine similarity, an exact
  search for every index kind).
* A **music library** takes a video: the video embedding (the cosine centroid of its clip
  embeddings) and, with ``per_window``, each clip is searched for the ``k`` nearest and
  farthest songs.

The query is embedded with the library's own model (``library.yaml`` records its path
and SHA-256); another model is refused. Results are a plain dict (schema
``vcmr.search/1``, see ``docs/retrieval.md``) that :func:`format_text` prints and
:func:`vcmr.retrieval.html.write_page` turns into a page.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from omegaconf import MISSING, DictConfig

from vcmr.config import above, at_least, one_of, required
from vcmr.retrieval.library import TABLE_FILE, EmbedderConfig, LibraryError, read_library_yaml

SCHEMA = "vcmr.search/1"
FORMATS = ("text", "json")
MEDIA_MODES = ("link", "copy")

#: Per library kind: the index searched with the whole query, its metadata table, and the
#: modality of the query.
QUERY_KIND = {"clips": "song", "music": "video"}
TARGET_INDEX = {"clips": "clips", "music": "songs"}


@dataclasses.dataclass
class SearchConfig:
    """Schema of ``config/search.yaml``."""

    library: str = MISSING
    query: str = MISSING
    k: int = required(at_least(1))
    per_window: bool = MISSING
    format: str = required(one_of(*FORMATS))
    html: Optional[str] = MISSING
    html_media: str = required(one_of(*MEDIA_MODES))
    model: Optional[str] = MISSING
    hop_seconds: Optional[float] = required(above(0))
    clip_seconds: Optional[int] = required(at_least(1))
    progress: bool = MISSING
    embedder: EmbedderConfig = dataclasses.field(default_factory=EmbedderConfig)
    demo: Dict[str, Any] = dataclasses.field(default_factory=dict)


class Library:
    """An assembled library opened for search.

    Raises:
        LibraryError: the folder is not a library, is not assembled yet, or is empty.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.doc = read_library_yaml(self.root)
        self.kind: str = self.doc["kind"]
        assembled = self.doc.get("assembled")
        if not assembled or not (self.root / TABLE_FILE).is_file():
            raise LibraryError(
                f"{self.root}: library not assembled yet (a sharded build needs a final merge=true run, "
                "an interrupted one a re-run)"
            )
        self.n_entries: Dict[str, int] = {k: int(v) for k, v in assembled["n_entries"].items()}
        if self.n_entries[TARGET_INDEX[self.kind]] == 0:
            counts = assembled.get("counts", {})
            raise LibraryError(
                f"{self.root}: the library is empty: no usable file among {assembled.get('n_items', 0)} "
                f"({', '.join(f'{k} {v}' for k, v in counts.items())}; see the status table of {TABLE_FILE})"
            )
        self.model_sha256: str = self.doc["model"]["sha256"]
        self.model_path: str = self.doc["model"]["path"]
        self._indexes: Dict[str, Any] = {}

    def index(self, name: str):
        """The :class:`~vcmr.retrieval.index.VectorIndex` ``<name>.index`` (loaded once)."""
        from vcmr.retrieval.index import VectorIndex

        if name not in self._indexes:
            self._indexes[name] = VectorIndex.load(self.root / self.doc["assembled"]["indexes"][name])
        return self._indexes[name]

    def rows(self, table: str, ids: Sequence[int]) -> List[Dict[str, Any]]:
        """Metadata rows of ``table`` for index ids ``ids``, in that order."""
        con = sqlite3.connect(f"file:{self.root / TABLE_FILE}?mode=ro", uri=True)
        try:
            con.row_factory = sqlite3.Row
            wanted = sorted({int(i) for i in ids})
            got = {}
            for s in range(0, len(wanted), 500):
                chunk = wanted[s : s + 500]
                q = f"SELECT * FROM {table} WHERE row IN ({', '.join('?' * len(chunk))})"
                got.update({r["row"]: dict(r) for r in con.execute(q, chunk)})
        finally:
            con.close()
        missing = [i for i in wanted if i not in got]
        if missing:
            raise LibraryError(f"{self.root / TABLE_FILE}: table {table} lacks rows {missing[:5]} of the index")
        return [got[int(i)] for i in ids]


def check_model(library: Library, embedder) -> None:
    """Refuse to search a library with a model other than the one it was built with."""
    if embedder.model_sha256 != library.model_sha256:
        raise LibraryError(
            f"{library.root}: the library was built with model {library.model_path} (sha256 "
            f"{library.model_sha256[:12]}...) but the query model is {embedder.model_path} (sha256 "
            f"{embedder.model_sha256[:12]}...); search with the library's model or rebuild the library"
        )


def library_embedder(library: Library, cfg: DictConfig, model: Optional[str] = None):
    """The embedder of the library's model (or of ``model``, which must be the same file content)."""
    from vcmr.retrieval.library import make_embedder

    path = model if model not in (None, "") else library.model_path
    if not Path(path).exists():
        raise LibraryError(
            f"{library.root}: the library's model {path} is missing; pass model=<a copy of that export> "
            f"(sha256 {library.model_sha256[:12]}...)"
        )
    embedder = make_embedder(cfg, model=str(path))
    embedder.progress = bool(cfg.get("progress", False))
    check_model(library, embedder)
    return embedder


def _hits(library: Library, table: str, scores: np.ndarray, ids: np.ndarray) -> List[Dict[str, Any]]:
    rows = library.rows(table, ids.tolist())
    out = []
    for rank, (score, row) in enumerate(zip(scores.tolist(), rows), 1):
        hit = {"rank": rank, "score": round(float(score), 6), **row}
        if "thumb" in hit:
            hit["thumb"] = str((library.root / hit["thumb"]).resolve())
        out.append(hit)
    return out


def _neighbours(library: Library, name: str, vectors: np.ndarray, k: int) -> List[Dict[str, List[Dict[str, Any]]]]:
    index = library.index(name)
    near_s, near_i = index.search(vectors, k)
    far_s, far_i = index.search_farthest(vectors, k)
    table = name
    return [
        {"nearest": _hits(library, table, near_s[q], near_i[q]), "farthest": _hits(library, table, far_s[q], far_i[q])}
        for q in range(len(vectors))
    ]


def search(cfg: DictConfig, embedder=None) -> Dict[str, Any]:
    """Run one search as configured (``library``, ``query``, ``k``, ``per_window``...).

    Returns:
        The result dict (schema :data:`SCHEMA`).

    Raises:
        LibraryError: not a library, not assembled, empty, or built with another model.
        AudioDecodeError / MediaError: the query file cannot be decoded (names the file).
    """
    if int(cfg.k) < 1:
        raise LibraryError(f"k must be >= 1, got {cfg.k}")
    library = Library(str(cfg.library))
    if embedder is None:
        embedder = library_embedder(library, cfg, cfg.model)
    else:
        check_model(library, embedder)
    query = Path(str(cfg.query))
    target = TARGET_INDEX[library.kind]
    if library.kind == "clips":
        emb = embedder.embed_audio(query, hop_seconds=cfg.hop_seconds)
        whole, parts, starts, ends, duration = emb.song, emb.windows, emb.starts, emb.ends, emb.duration
    else:
        emb = embedder.embed_video(query, clip_seconds=cfg.clip_seconds)
        whole, parts, starts, ends, duration = emb.video, emb.clips, emb.starts, emb.ends, float(emb.ends[-1])
    k = min(int(cfg.k), library.n_entries[target])
    result: Dict[str, Any] = {
        "schema": SCHEMA,
        "library": {"path": str(library.root.resolve()), "kind": library.kind, "n_entries": library.n_entries[target],
                    "model_sha256": library.model_sha256},
        "query": {"path": str(query.resolve()), "kind": QUERY_KIND[library.kind], "duration": round(duration, 3),
                  "n_windows": int(len(parts))},
        "k": k,
        "whole": _neighbours(library, target, whole[None], k)[0],
    }
    if cfg.per_window:
        per = _neighbours(library, target, parts, k)
        result["windows"] = [
            {"window": i, "start": round(float(a), 3), "end": round(float(b), 3), **p}
            for i, (a, b, p) in enumerate(zip(starts, ends, per))
        ]
    return result


def _hit_line(hit: Dict[str, Any]) -> str:
    if "clip_id" in hit:
        return (f"  {hit['rank']:>3}  {hit['score']:+.3f}  {hit['video_id']}  {hit['start']:.1f}-{hit['end']:.1f} s  "
                f"scene {hit['scene']}  {hit['source']}")
    return f"  {hit['rank']:>3}  {hit['score']:+.3f}  {hit['song_id']}  ({hit['duration']:.1f} s)  {hit['source']}"


def format_text(result: Dict[str, Any]) -> str:
    """A readable listing of a search result."""
    q, lib = result["query"], result["library"]
    what = "clips" if lib["kind"] == "clips" else "songs"
    lines = [
        f"query: {q['path']} ({q['kind']}, {q['duration']:.1f} s, {q['n_windows']} windows)",
        f"library: {lib['path']} ({lib['n_entries']} {what})",
        f"nearest {what} (whole {q['kind']}):",
        *(_hit_line(h) for h in result["whole"]["nearest"]),
        f"farthest {what}:",
        *(_hit_line(h) for h in result["whole"]["farthest"]),
    ]
    for w in result.get("windows", []):
        best, worst = w["nearest"][0], w["farthest"][0]
        name = "clip_id" if "clip_id" in best else "song_id"
        lines.append(f"window {w['window']:>3} {w['start']:7.2f}-{w['end']:7.2f} s  nearest {best[name]} "
                     f"{best['score']:+.3f}  farthest {worst[name]} {worst['score']:+.3f}")
    return "\n".join(lines)


__all__ = ["FORMATS", "Library", "MEDIA_MODES", "SCHEMA", "SearchConfig", "check_model", "format_text",
           "library_embedder", "search"]
