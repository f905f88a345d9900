"""The music <-> video retrieval protocol: segment level and track level, fixed galleries.

Definitions (``docs/retrieval_evaluation.md`` has the long form):

* **Test set.** The ``ok`` videos of a dataset builder output, restricted to one side of
  the stage-2 split rule (:func:`vcmr.utils.hash_split` of the video id and
  ``val_fraction``, as :class:`vcmr.data.video_music.VideoMusicDataModule` splits):
  ``split=val`` (the videos stage 2 never trained on), ``train``, or ``all``. Every audio segment at least one model window long is used.
* **Segment pair.** One centred crop of ``L = model.input_length`` samples from each audio
  segment, and the ``S = round(L / sr)`` feature rows centred on it (the stage-2 alignment
  rule, :func:`vcmr.data.video_music.feature_rows`), through ``encode_audio`` and
  ``encode_video``. Both embeddings are L2-normalised.
* **Track embeddings.** A video's song embedding is the mean of its segments' normalised
  audio embeddings, re-normalised; its video embedding is the same pooling of the video
  side.
* **Levels** (:data:`LEVELS`), each in both directions, ``a2v`` (audio queries, video
  gallery) and ``v2a``:

  - ``segment``: each segment against the segments of the other modality (one-to-one);
  - ``segment_to_track``: each segment against one embedding per track of the other
    modality (many-to-one: a query is right when its own track ranks within K);
  - ``track``: song embeddings against video embeddings (one-to-one).

* **Galleries.** ``full`` (every item of the level: segments or tracks) and random
  galleries of ``protocol.gallery_sizes`` items, ``protocol.n_galleries`` seeded draws each
  (:func:`gallery_draws`), scores averaged over draws. The queries of a draw are those
  whose true item is in it. A size not smaller than the set is skipped and marked so.
* **Scores.** Recall@K, median and mean rank (1-based, ties counted pessimistically), and
  the chance level of the gallery (:func:`vcmr.metrics.retrieval.chance_levels`).

:func:`evaluate_embeddings` computes every number from the embeddings alone, so it can be
checked against a naive loop; :func:`evaluate` loads the model and data, embeds, scores,
writes the results JSON and prints the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from vcmr.audio.io import load_audio
from vcmr.config import to_container
from vcmr.data.video_music import Segment, feature_rows, index_dataset
from vcmr.metrics.retrieval import TIE_RULES, chance_levels, rank_in_gallery, rank_summary
from vcmr.models.export import find_model_file, load_model
from vcmr.utils import atomic_write_text, hash_split, progress_bar

#: The dataset builder's record of its settings, in the data folder.
BUILDER_CONFIG = "preprocess_config.yaml"
DIRECTIONS = ("a2v", "v2a")
POOLING = "mean of the L2-normalised segment embeddings of a track, re-normalised"
CROP_RULE = (
    "one centred crop of the model input length per audio segment, paired with the round(L/sr) "
    "feature rows centred on it (stage-2 alignment rule)"
)

#: Which videos form the test set: split name -> predicate(video_id, val_fraction).
SPLITS: Dict[str, Callable[[str, float], bool]] = {
    "val": lambda vid, f: hash_split(vid, f) == "val",
    "train": lambda vid, f: hash_split(vid, f) == "train",
    "all": lambda vid, f: True,
}


def _devices() -> Dict[str, Callable[[], str]]:
    return {
        "auto": lambda: "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": lambda: "cpu",
        "cuda": lambda: "cuda",
    }


def resolve_device(name: str) -> str:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    devices = _devices()
    if name not in devices:
        raise ValueError(f"device: unknown device '{name}'; choose from {sorted(devices)}")
    return devices[name]()


# --------------------------------------------------------------------------------------
# Embeddings of the test set
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class EmbeddedSet:
    """Segment-pair embeddings of a test set.

    Attributes:
        audio: ``[N, D]`` float32 unit rows, one per segment.
        video: ``[N, D]`` float32 unit rows, the video context of the same segment.
        track: ``[N]`` int64 index into ``track_ids`` of each segment's video.
        track_ids: the video ids, sorted.
    """

    audio: np.ndarray
    video: np.ndarray
    track: np.ndarray
    track_ids: List[str]

    def __post_init__(self) -> None:
        n = self.audio.shape[0]
        if self.audio.ndim != 2 or self.video.shape != self.audio.shape or self.track.shape != (n,):
            raise ValueError(
                f"audio [N, D], video [N, D] and track [N] must agree, got {self.audio.shape}, "
                f"{self.video.shape}, {self.track.shape}"
            )
        if n and (self.track.min() < 0 or self.track.max() >= len(self.track_ids)):
            raise ValueError(f"track indices must lie in [0, {len(self.track_ids)})")
        if n and len(np.unique(self.track)) != len(self.track_ids):
            raise ValueError("every track id needs at least one segment")


def pool_tracks(emb: np.ndarray, track: np.ndarray, n_tracks: int) -> np.ndarray:
    """Track embeddings: mean of each track's L2-normalised rows, re-normalised.

    Args:
        emb: ``[N, D]`` segment embeddings.
        track: ``[N]`` track index of each row, all of ``0 .. n_tracks - 1`` present.
        n_tracks: ``T``.

    Returns:
        ``[T, D]`` float32 unit rows.
    """
    x = emb.astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((n_tracks, x.shape[1]))
    np.add.at(sums, track, x)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return sums.astype(np.float32)


@dataclasses.dataclass
class LevelTask:
    """One direction of one level: queries, the item each belongs to, one gallery row per item."""

    queries: np.ndarray
    query_item: np.ndarray
    gallery: np.ndarray


def _segment(e: EmbeddedSet, songs: np.ndarray, videos: np.ndarray) -> Dict[str, LevelTask]:
    items = np.arange(e.audio.shape[0])
    return {"a2v": LevelTask(e.audio, items, e.video), "v2a": LevelTask(e.video, items, e.audio)}


def _segment_to_track(e: EmbeddedSet, songs: np.ndarray, videos: np.ndarray) -> Dict[str, LevelTask]:
    return {"a2v": LevelTask(e.audio, e.track, videos), "v2a": LevelTask(e.video, e.track, songs)}


def _track(e: EmbeddedSet, songs: np.ndarray, videos: np.ndarray) -> Dict[str, LevelTask]:
    items = np.arange(songs.shape[0])
    return {"a2v": LevelTask(songs, items, videos), "v2a": LevelTask(videos, items, songs)}


#: Protocol levels: name -> (segment embeddings, song embeddings, video-track embeddings) -> tasks.
LEVELS: Dict[str, Callable[[EmbeddedSet, np.ndarray, np.ndarray], Dict[str, LevelTask]]] = {
    "segment": _segment,
    "segment_to_track": _segment_to_track,
    "track": _track,
}


def gallery_draws(n_items: int, size: int, n_draws: int, seed: int) -> List[np.ndarray]:
    """``n_draws`` sorted random subsets of ``size`` distinct items out of ``n_items``.

    Draw ``d`` is the ``d``-th ``choice`` of ``numpy.random.default_rng([seed, size])``, so
    a gallery size gives the same draws whatever else is evaluated.
    """
    if not 1 <= size <= n_items:
        raise ValueError(f"gallery size {size} must be in [1, {n_items}]")
    rng = np.random.default_rng([int(seed), int(size)])
    return [np.sort(rng.choice(n_items, size=size, replace=False)) for _ in range(n_draws)]


def _score_draw(task: LevelTask, sel: np.ndarray, ks: Sequence[int], ties: str) -> Tuple[Dict[str, float], int]:
    """Scores of one gallery (``sel``: sorted item indices) and its number of queries."""
    position = np.full(task.gallery.shape[0], -1, dtype=np.int64)
    position[sel] = np.arange(len(sel))
    targets = position[task.query_item]
    keep = targets >= 0
    ranks = rank_in_gallery(
        torch.from_numpy(np.ascontiguousarray(task.queries[keep])),
        torch.from_numpy(np.ascontiguousarray(task.gallery[sel])),
        torch.from_numpy(targets[keep]),
        ties=ties,
    )
    return rank_summary(ranks, ks), int(keep.sum())


def evaluate_embeddings(
    emb: EmbeddedSet,
    levels: Sequence[str],
    ks: Sequence[int],
    gallery_sizes: Sequence[int],
    n_galleries: int,
    seed: int,
    ties: str = "pessimistic",
) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Every score of the protocol from the embeddings.

    Returns:
        ``{level: {gallery: entry}}`` with gallery ``"full"`` and ``str(size)`` for each
        size. An entry is ``{"n_items", "n_galleries", "n_queries": {dir: mean per draw},
        "a2v": {"R@k", "median_rank", "mean_rank"}, "v2a": {...}, "chance": {...}}``
        (scores averaged over draws), or ``{"n_items", "skipped": reason}``.
    """
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise ValueError(f"protocol.levels: unknown {unknown}; choose from {list(LEVELS)}")
    if ties not in TIE_RULES:
        raise ValueError(f"protocol.ties: must be one of {TIE_RULES}, got {ties!r}")
    if n_galleries < 1:
        raise ValueError(f"protocol.n_galleries must be >= 1, got {n_galleries}")
    if emb.audio.shape[0] == 0:
        raise ValueError("no segments to evaluate")
    n_tracks = len(emb.track_ids)
    songs = pool_tracks(emb.audio, emb.track, n_tracks)
    videos = pool_tracks(emb.video, emb.track, n_tracks)
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for level in levels:
        tasks = LEVELS[level](emb, songs, videos)
        n_items = tasks["a2v"].gallery.shape[0]
        galleries: Dict[str, Optional[List[np.ndarray]]] = {"full": [np.arange(n_items)]}
        for size in gallery_sizes:
            ok = int(size) < n_items
            galleries[str(int(size))] = gallery_draws(n_items, int(size), n_galleries, seed) if ok else None
        out[level] = {}
        for name, draws in galleries.items():
            if draws is None:
                out[level][name] = {
                    "n_items": n_items,
                    "skipped": f"a gallery of {name} is not smaller than the {n_items} items of the set (see 'full')",
                }
                continue
            entry: Dict[str, Any] = {"n_items": n_items, "n_galleries": len(draws), "n_queries": {}}
            for d, task in tasks.items():
                scored = [_score_draw(task, sel, ks, ties) for sel in draws]
                entry[d] = {key: float(np.mean([s[key] for s, _ in scored])) for key in scored[0][0]}
                entry["n_queries"][d] = float(np.mean([q for _, q in scored]))
            entry["chance"] = chance_levels(len(draws[0]), ks)
            out[level][name] = entry
    return out


# --------------------------------------------------------------------------------------
# Model + data -> embeddings
# --------------------------------------------------------------------------------------


def select_segments(
    root: str | Path, sample_rate: int, audio_length: int, split: str, val_fraction: Optional[float]
) -> Tuple[List[Segment], Dict[str, int], int]:
    """Usable segments of the test-set videos, status counts, and the number of test videos."""
    if split not in SPLITS:
        raise ValueError(f"data.split: unknown split '{split}'; choose from {sorted(SPLITS)}")
    segments, counts = index_dataset(root, sample_rate, audio_length)
    keep = SPLITS[split]
    chosen = [s for s in segments if keep(s.video_id, float(val_fraction or 0.0))]
    return chosen, counts, len({s.video_id for s in chosen})


def _check_frame_encoder(model_meta: Mapping[str, Any], root: Path) -> None:
    """Refuse a dataset whose frame features come from another frame encoder than the model's."""
    trained = model_meta.get("frame_encoder")
    path = root / BUILDER_CONFIG
    if not trained or not path.is_file():
        return
    frames = OmegaConf.to_container(OmegaConf.load(path)).get("frames", {}) or {}
    name = frames.get("encoder")
    args = (frames.get("encoders") or {}).get(name, {})
    if name != trained.get("name") or args != trained.get("args"):
        raise ValueError(
            f"{path}: features come from frame encoder {name} {args}, but {model_meta.get('path')} was trained "
            f"on {trained.get('name')} {trained.get('args')}; evaluate on data built with the model's frame encoder"
        )


@torch.no_grad()
def embed_segments(
    model: torch.nn.Module,
    segments: Sequence[Segment],
    sample_rate: int,
    batch_size: int,
    device: str,
    progress: bool = True,
) -> EmbeddedSet:
    """Encode every segment pair (module docstring: centred crop + aligned feature rows)."""
    model = model.to(device).eval()
    length = int(model.input_length)
    track_ids = sorted({s.video_id for s in segments})
    track_of = {vid: i for i, vid in enumerate(track_ids)}
    audio_out: List[np.ndarray] = []
    video_out: List[np.ndarray] = []
    features: Dict[str, np.ndarray] = {}
    batch_a: List[np.ndarray] = []
    batch_v: List[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch_a))[:, None].to(device)
        v = torch.from_numpy(np.stack(batch_v)).to(device)
        audio_out.append(model.encode_audio(x).float().cpu().numpy())
        video_out.append(model.encode_video(v).float().cpu().numpy())
        batch_a.clear()
        batch_v.clear()

    for seg in progress_bar(segments, desc="retrieval protocol: embedding segments", unit="seg", disable=not progress):
        offset = (seg.n_samples - length) // 2  # the centre crop, as stage-2 validation
        crop = load_audio(seg.audio_path, sample_rate, offset=offset / sample_rate, duration=length / sample_rate)
        batch_a.append(crop)
        if seg.feature_path not in features:
            arr = np.load(seg.feature_path, mmap_mode="r")
            if arr.ndim != 2 or arr.shape[1] != model.video_input_dim:
                raise ValueError(
                    f"{seg.feature_path}: features of shape {tuple(arr.shape)}, the model takes "
                    f"[seconds, {model.video_input_dim}]"
                )
            features[seg.feature_path] = arr
        first, n = feature_rows(seg.start_sample + offset, length, sample_rate, seg.n_rows)
        batch_v.append(np.array(features[seg.feature_path][first : first + n], dtype=np.float32))
        if len(batch_a) == batch_size:
            flush()
    if batch_a:
        flush()
    dim = int(model.embed_dim)
    return EmbeddedSet(
        audio=np.concatenate(audio_out) if audio_out else np.zeros((0, dim), np.float32),
        video=np.concatenate(video_out) if video_out else np.zeros((0, dim), np.float32),
        track=np.array([track_of[s.video_id] for s in segments], dtype=np.int64),
        track_ids=track_ids,
    )


# --------------------------------------------------------------------------------------
# Configuration and the command
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class RetrievalDataConfig:
    """``root``: builder output folder; ``split``: ``val`` | ``train`` | ``all``;
    ``val_fraction``: ``null`` reads ``data.val_fraction`` from the model's run ``config.yaml``."""

    root: str = MISSING
    split: str = MISSING
    val_fraction: Optional[float] = MISSING


@dataclasses.dataclass
class ProtocolConfig:
    """Levels, Recall@K cut-offs, gallery sizes, random draws per size, their seed, tie rule."""

    levels: List[str] = MISSING
    ks: List[int] = MISSING
    gallery_sizes: List[int] = MISSING
    n_galleries: int = MISSING
    seed: int = MISSING
    ties: str = MISSING


@dataclasses.dataclass
class RetrievalEvalConfig:
    """Schema of ``config/eval_retrieval.yaml``."""

    model: str = MISSING
    data: RetrievalDataConfig = dataclasses.field(default_factory=RetrievalDataConfig)
    protocol: ProtocolConfig = dataclasses.field(default_factory=ProtocolConfig)
    batch_size: int = MISSING
    device: str = MISSING
    progress: bool = MISSING
    output: Optional[str] = MISSING


def run_folder(model_file: Path) -> Path:
    """``<run>`` of ``<run>/export/model.safetensors``; the file's own folder otherwise."""
    return model_file.parent.parent if model_file.parent.name == "export" else model_file.parent


def resolve_val_fraction(cfg_value: Optional[float], split: str, model_file: Path) -> Optional[float]:
    """``data.val_fraction``, or the model's training value from ``<run>/config.yaml`` when ``null``."""
    if cfg_value is not None or split == "all":
        return cfg_value
    path = run_folder(model_file) / "config.yaml"
    value = OmegaConf.select(OmegaConf.load(path), "data.val_fraction") if path.is_file() else None
    if value is None:
        raise ValueError(
            f"data.val_fraction is null and {path} does not record data.val_fraction; "
            "set data.val_fraction to the value the model was trained with (or use data.split=all)"
        )
    return float(value)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def format_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]], ks: Sequence[int]) -> str:
    """The protocol table: one row per level, gallery and direction, chance level on the right."""
    rec = "".join(f"{'R@' + str(k):>7}" for k in ks)
    head = f"{'level':<17}{'gallery':<13}{'dir':<4}{rec}{'medR':>8}{'meanR':>8}  | chance{rec}{'medR':>8}"
    lines = [head, "-" * len(head)]
    for level, galleries in results.items():
        for name, entry in galleries.items():
            if "skipped" in entry:
                lines.append(f"{level:<17}{name:<13}skipped: not smaller than the set ({entry['n_items']} items)")
                continue
            label = f"full ({entry['n_items']})" if name == "full" else f"{name} x{entry['n_galleries']}"
            ch = entry["chance"]
            chance = "".join(f"{ch[f'R@{k}']:7.3f}" for k in ks) + f"{ch['median_rank']:8.1f}"
            for d in DIRECTIONS:
                s = entry[d]
                row = "".join(f"{s[f'R@{k}']:7.3f}" for k in ks) + f"{s['median_rank']:8.1f}{s['mean_rank']:8.1f}"
                lines.append(f"{level:<17}{label:<13}{d:<4}{row}  |       {chance}")
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> Dict[str, Any]:
    """Run the protocol for ``cfg.model`` on ``cfg.data``; write the results JSON and print the table.

    Returns:
        ``{"results_json": path, "results": {level: {gallery: entry}}, "n_videos", "n_segments"}``.
    """
    model_file = find_model_file(cfg.model)
    model = load_model(model_file)
    sample_rate = int(model.meta["sample_rate"])
    root = Path(cfg.data.root)
    split = str(cfg.data.split)
    if split not in SPLITS:
        raise ValueError(f"data.split: unknown split '{split}'; choose from {sorted(SPLITS)}")
    _check_frame_encoder(model.meta, root)
    val_fraction = resolve_val_fraction(cfg.data.val_fraction, split, model_file)
    segments, counts, n_videos = select_segments(root, sample_rate, model.input_length, split, val_fraction)
    if not segments:
        raise ValueError(
            f"data.root: {root} has no usable segments in split '{split}' (status counts {counts}, "
            f"val_fraction {val_fraction}, model window {model.input_length} samples)"
        )
    device = resolve_device(str(cfg.device))
    p = cfg.protocol
    ks = [int(k) for k in p.ks]
    emb = embed_segments(model, segments, sample_rate, int(cfg.batch_size), device, bool(cfg.progress))
    results = evaluate_embeddings(
        emb, list(p.levels), ks, [int(s) for s in p.gallery_sizes], int(p.n_galleries), int(p.seed), str(p.ties)
    )
    out = Path(cfg.output) if cfg.output else run_folder(model_file) / "evaluation" / f"retrieval_{split}.json"
    report = {
        "model": {
            "path": str(model_file), "sha256": _sha256(model_file), "sample_rate": sample_rate,
            "input_length": int(model.input_length), "embed_dim": int(model.embed_dim),
            "frame_encoder": model.meta.get("frame_encoder"),
        },
        "data": {
            "root": str(root), "split": split, "val_fraction": val_fraction, "status_counts": counts,
            "n_videos": n_videos, "n_segments": len(segments), "video_ids": emb.track_ids,
        },
        "protocol": {
            **to_container(p), "pooling": POOLING, "crop": CROP_RULE,
            "directions": {"a2v": "audio queries, video gallery", "v2a": "video queries, audio gallery"},
        },
        "results": results,
    }
    atomic_write_text(out, json.dumps(report, indent=1))
    print(
        f"\nRetrieval protocol: {model_file}\n  data {root}, split={split} "
        f"({n_videos} videos, {len(segments)} segments; ties {p.ties}; random galleries averaged over "
        f"{p.n_galleries} draws)\n"
    )
    print(format_table(results, ks))
    print(f"\nwrote {out}")
    return {"results_json": str(out), "results": results, "n_videos": n_videos, "n_segments": len(segments)}
