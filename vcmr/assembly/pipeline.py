"""``make_video(cfg)``: a song and a clip library in, a beat-cut music video out.

Steps: decode the song → beat grid and shots (:mod:`vcmr.assembly.beats`) → embed the
song once and pool a query per shot → choose one clip per shot from the library and its
in-point (:mod:`vcmr.assembly.choose`) → render (:mod:`vcmr.assembly.render`) → write
``timeline.json`` and the HTML page beside the video.

Outputs for ``output=<dir>/<name>.mp4``::

    <dir>/<name>.mp4                 the video (H.264 + AAC)
    <dir>/<name>.html                the page (video, waveform with beats and cuts, thumbnails)
    <dir>/<name>_files/timeline.json per-shot song times, beats, clip, source, in/out points, score
    <dir>/<name>_files/thumbs/       one JPEG per shot (its middle frame)
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

from vcmr.assembly.beats import BEAT_TRACKERS, BeatError, BeatSettings, analyse, make_shots
from vcmr.assembly.choose import IN_POINT_RULES, ChoiceError, ChooseSettings, Clip, choose_clips, shot_queries
from vcmr.assembly.page import PageSettings, write_page
from vcmr.assembly.render import RenderSettings, ShotSource, render_video
from vcmr.assembly.timeline import Timeline, TimelineShot, write_timeline
from vcmr.config import above, at_least, in_range, one_of, required
from vcmr.utils import rank_zero_print


class LibraryMismatchError(ValueError):
    """The library was built with another model than the one given."""


# --------------------------------------------------------------------------------------
# Config schema (values in config/make_video.yaml and config/make_video_demo.yaml)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class SplitConfig:
    enabled: bool = MISSING
    threshold: float = required(above(0))
    min_beats: float = required(above(0))


@dataclasses.dataclass
class BeatsConfig:
    tracker: str = required(one_of(*BEAT_TRACKERS))
    sample_rate: int = required(at_least(1000))
    hop_length: int = required(at_least(1))
    start_bpm: float = required(above(0))
    tightness: float = required(above(0))
    snap_window: float = required(at_least(0))
    snap_hop: int = required(at_least(1))
    beats_per_bar: int = required(at_least(1))
    beats_per_shot: int = required(at_least(1))
    min_shot_beats: float = required(at_least(0))
    split: SplitConfig = MISSING


@dataclasses.dataclass
class ChooseConfig:
    hop: float = required(above(0))
    top_n: int = required(at_least(1))
    temperature: float = required(at_least(0))
    allow_repeats: bool = MISSING
    avoid_same_source: bool = MISSING
    in_point: str = required(one_of(*IN_POINT_RULES))


@dataclasses.dataclass
class RenderConfig:
    width: int = required(at_least(2))
    height: int = required(at_least(2))
    fps: int = required(at_least(1))
    crossfade: float = required(at_least(0))
    crf: int = required(in_range(0, 51, closed_high=True))
    preset: str = required(one_of("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                                  "slower", "veryslow"))
    audio_bitrate: int = required(at_least(8000))
    audio_sample_rate: int = required(at_least(0))
    interpolation: str = MISSING
    decoder_threads: int = required(at_least(0))
    thumb_height: int = required(at_least(0))


@dataclasses.dataclass
class PageConfig:
    px_per_second: float = required(above(0))
    waveform_height: int = required(at_least(10))
    strip_height: int = required(at_least(10))
    min_width: int = required(at_least(100))


@dataclasses.dataclass
class EmbedConfig:
    """How the song (and clip windows for in-points) are embedded (:class:`~vcmr.retrieval.embedder.Embedder`)."""

    device: str = MISSING
    precision: str = required(one_of("fp32", "fp16", "bf16"))
    batch_size: int = required(at_least(1))


@dataclasses.dataclass
class MakeVideoConfig:
    """``python -m vcmr.scripts.make_video`` settings.

    ``song``/``library`` may be ``demo`` (turned into files by :mod:`vcmr.demo.assembly`);
    ``model: null`` uses the model the library records.
    """

    song: str = MISSING
    library: str = MISSING
    output: str = MISSING
    model: Optional[str] = MISSING
    seed: int = MISSING
    progress: bool = MISSING
    beats: BeatsConfig = MISSING
    choose: ChooseConfig = MISSING
    render: RenderConfig = MISSING
    page: PageConfig = MISSING
    embed: EmbedConfig = MISSING
    demo: Optional[Dict[str, Any]] = None


# --------------------------------------------------------------------------------------
# The library, seen from here
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class LibraryView:
    """What clip choice needs from a clip library.

    Attributes:
        path: the library folder.
        clips: every clip, ``clips[i].clip_id == i`` (its row in the index).
        search: ``(queries [Q, D], k) -> (scores [Q, k] descending, ids [Q, k])``.
        model: what the library records about its model (``path``, ``sha256``, ...).
        features: ``clip -> [S, F]`` per-second frame features of the clip's source over
            ``[clip.start, clip.start + S)``, or ``None`` when the library keeps none.
    """

    path: Path
    clips: List[Clip]
    search: Callable[[np.ndarray, int], Any]
    model: Dict[str, Any]
    features: Optional[Callable[[Clip], np.ndarray]] = None


def clips_from_rows(rows: Sequence[Mapping[str, Any]]) -> List[Clip]:
    """:class:`Clip` records from the library's ``clips`` table rows (``row``, ``clip_id``,
    ``video_id``, ``source``, ``start``, ``end``, ``scene``), ordered by ``row``.

    The table records each clip's scene index, not the scene's span, so the span is
    derived: the library cuts clips from a scene's start, so scene ``s`` of a video starts
    at its first clip and ends where the next scene of that video that has clips starts
    (the end of its own last clip for the last one). A clip that reaches past that point
    straddles a cut and is marked unusable (:attr:`Clip.within_scene`).
    """
    by_video: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        by_video.setdefault(str(r["video_id"]), []).append(r)
    span: Dict[Tuple[str, int], Tuple[float, float]] = {}
    for vid, rs in by_video.items():
        scenes = sorted({int(r["scene"]) for r in rs})
        first = {sc: min(float(r["start"]) for r in rs if int(r["scene"]) == sc) for sc in scenes}
        last = {sc: max(float(r["end"]) for r in rs if int(r["scene"]) == sc) for sc in scenes}
        for i, sc in enumerate(scenes):
            end = first[scenes[i + 1]] if i + 1 < len(scenes) else last[sc]
            span[(vid, sc)] = (first[sc], end)
    out = []
    for r in sorted(rows, key=lambda r: int(r["row"])):
        a, b = span[(str(r["video_id"]), int(r["scene"]))]
        out.append(Clip(clip_id=int(r["row"]), video_id=str(r["video_id"]), source=str(r["source"]),
                        start=float(r["start"]), end=float(r["end"]), scene=int(r["scene"]),
                        scene_start=a, scene_end=b, name=str(r.get("clip_id", ""))))
    if [c.clip_id for c in out] != list(range(len(out))):
        raise ValueError("clips table rows are not 0..N-1 (the index ids)")
    return out


def open_library(path: str | Path) -> LibraryView:
    """Open an assembled clip library folder for clip choice.

    Raises:
        LibraryError: not a library, not assembled, empty, or a music library.
    """
    from vcmr.retrieval.library import LibraryError
    from vcmr.retrieval.search import Library

    lib = Library(path)
    if lib.kind != "clips":
        raise LibraryError(f"{lib.root}: a {lib.kind} library; a music video needs a clip library (kind=clips)")
    n = lib.n_entries["clips"]
    clips = clips_from_rows(lib.rows("clips", list(range(n))))
    index = lib.index("clips")
    return LibraryView(path=lib.root, clips=clips, search=index.search, model=dict(lib.doc.get("model") or {}))


def check_model(library: LibraryView, embedder_info: Dict[str, Any], model_arg: str) -> None:
    """Raise :class:`LibraryMismatchError` when the library records another model than ``embedder_info``."""
    rec = library.model or {}
    want, got = rec.get("sha256"), embedder_info.get("sha256")
    if want and got and want != got:
        raise LibraryMismatchError(
            f"{library.path}: the library was built with the model {rec.get('path')} (sha256 {str(want)[:12]}) but "
            f"model={model_arg} (sha256 {str(got)[:12]}) was given; its clip embeddings are in another space. "
            "Leave model unset to use the library's own model, or rebuild the library with this model"
        )
    for key in ("embed_dim", "sample_rate", "input_length"):
        if key in rec and key in embedder_info and int(rec[key]) != int(embedder_info[key]):
            raise LibraryMismatchError(
                f"{library.path}: the library's model has {key}={rec[key]} but the given model has "
                f"{key}={embedder_info[key]}; rebuild the library with this model or leave model unset"
            )


def output_paths(output: str | Path) -> Dict[str, Path]:
    """``video``, ``page``, ``files`` (folder), ``timeline`` and ``thumbs`` paths for an output ``.mp4``."""
    video = Path(output)
    if video.suffix.lower() != ".mp4":
        raise ValueError(f"output: '{output}' must end in .mp4")
    files = video.with_name(video.stem + "_files")
    return {"video": video, "page": video.with_suffix(".html"), "files": files,
            "timeline": files / "timeline.json", "thumbs": files / "thumbs", "poster": files / "poster.jpg"}


def _window_scorer(embedder, library: LibraryView) -> Callable[[Clip, np.ndarray, float], np.ndarray]:
    """Scores candidate in-points of a clip against the current shot query (set via ``.query``)."""

    def scorer(clip: Clip, cands: np.ndarray, duration: float) -> np.ndarray:
        n_rows = int(math.floor(clip.duration + 1e-6))
        if library.features is not None:
            feats = library.features(clip)
        else:
            frames = embedder.encode_frames(clip.source, clip.start, float(n_rows))
            feats = embedder.span_features(frames, clip.start, n_rows)
        span = max(1, int(round(duration)))
        rows = [int(round(c - clip.start)) for c in cands]
        windows = [feats[r : min(r + span, feats.shape[0])] for r in rows]
        windows = [w if w.shape[0] else feats[-1:] for w in windows]
        z = embedder.encode_features(windows)
        return z @ scorer.query

    scorer.query = None  # type: ignore[attr-defined]
    return scorer


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def make_video(cfg: DictConfig) -> Dict[str, Any]:
    """Make the music video described by ``cfg`` (a :class:`MakeVideoConfig`).

    Returns:
        ``{"video", "page", "timeline", "thumbs"}`` paths, ``tempo`` (BPM), ``n_shots``,
        ``duration`` (s), ``render_seconds`` and ``realtime_factor`` (song seconds per
        second of rendering), ``total_seconds``.

    Raises:
        AudioDecodeError: the song cannot be decoded (names the file).
        BeatError: no beats, or the song is shorter than one shot.
        ChoiceError: empty library, too few clips, no clip for a shot.
        LibraryMismatchError: the library was built with another model.
    """
    from vcmr.audio.io import load_audio
    from vcmr.retrieval.embedder import Embedder

    t_start = time.perf_counter()
    bs, rs = BeatSettings.from_config(cfg.beats), RenderSettings.from_config(cfg.render)
    cs, ps = ChooseSettings.from_config(cfg.choose, cfg.seed), PageSettings.from_config(cfg.page)
    rs.check()
    if cs.in_point not in IN_POINT_RULES:
        raise KeyError(f"choose.in_point: unknown rule '{cs.in_point}'; choose from {sorted(IN_POINT_RULES)}")
    paths = output_paths(cfg.output)
    song = Path(cfg.song)

    # 1. Beats and shots.
    y = load_audio(song, bs.sample_rate)
    try:
        grid = analyse(y, bs.sample_rate, bs)
        shots = make_shots(grid, bs)
    except BeatError as exc:
        raise BeatError(f"{song}: {exc}") from None
    rank_zero_print(f"{song.name}: {grid.duration:.1f} s, {grid.tempo:.1f} BPM, {grid.beats.size} beats, "
                    f"{len(shots)} shots of {bs.beats_per_shot} beats")

    # 2. Library and model.
    library = open_library(cfg.library)
    if not library.clips:
        raise ChoiceError(f"{library.path}: the clip library is empty (0 clips); build it from your videos first")
    model_arg = cfg.model if cfg.model else library.model.get("path")
    if not model_arg or not Path(str(model_arg)).exists():
        raise FileNotFoundError(
            f"{library.path}: the model the library was built with ({model_arg}) is not there; pass model=<its export>"
        )
    embedder = Embedder(str(model_arg), device=cfg.embed.device, precision=cfg.embed.precision,
                        batch_size=int(cfg.embed.batch_size), progress=bool(cfg.progress))
    check_model(library, embedder.model_info(), str(model_arg))

    # 3. Queries and choice.
    emb = embedder.embed_audio(song, hop_seconds=cs.hop)
    queries = shot_queries(emb.windows, emb.starts, emb.ends, [(s.start, s.end) for s in shots])
    choices = choose_clips(queries, [s.duration for s in shots], library.search, library.clips, cs,
                           extra=rs.crossfade)
    rule = IN_POINT_RULES[cs.in_point]
    scorer = _window_scorer(embedder, library) if cs.in_point == "best_window" else None
    in_points = []
    for sh, ch, q in zip(shots, choices, queries):
        if scorer is not None:
            scorer.query = q
        in_points.append(rule(ch.clip, sh.duration + rs.crossfade, q, scorer))

    # 4. Render.
    sources = [ShotSource(ch.clip.source, ip, sh.start, sh.end) for sh, ch, ip in zip(shots, choices, in_points)]
    result = render_video(song, sources, paths["video"], grid.duration, rs, thumbs_dir=paths["thumbs"],
                          progress=bool(cfg.progress), poster=paths["poster"])

    # 5. Timeline and page.
    thumbs = result.thumbnails if len(result.thumbnails) == len(shots) else [None] * len(shots)
    tl = Timeline(
        song=str(song), duration=grid.duration, tempo=round(grid.tempo, 3),
        beats=[round(float(t), 4) for t in grid.beats], downbeats=[int(i) for i in grid.downbeats],
        beat_strength=[round(float(v), 3) for v in grid.strength],
        shots=[
            TimelineShot(
                index=sh.index, start=round(sh.start, 4), end=round(sh.end, 4), beats=list(sh.beats),
                frames=list(fb), clip_row=ch.clip.clip_id,
                clip_id=ch.clip.name or str(ch.clip.clip_id), video_id=ch.clip.video_id, source=ch.clip.source,
                in_point=round(ip, 4), out_point=round(ip + sh.duration, 4), score=round(ch.score, 4),
                thumbnail=None if th is None else _relative(th, paths["page"].parent),
            )
            for sh, ch, ip, fb, th in zip(shots, choices, in_points, result.frame_bounds, thumbs)
        ],
        video=paths["video"].name, fps=rs.fps, library=str(library.path), model=embedder.model_info(),
        settings=OmegaConf.to_container(cfg, resolve=True),
    )
    write_timeline(paths["timeline"], tl)
    write_page(paths["page"], tl, y, paths["video"], thumbs, ps, title=f"{song.stem} — music video",
               poster=paths["poster"] if paths["poster"].is_file() else None)
    return {
        "video": paths["video"], "page": paths["page"], "timeline": paths["timeline"], "thumbs": paths["thumbs"],
        "tempo": grid.tempo, "n_shots": len(shots), "duration": grid.duration,
        "render_seconds": result.seconds, "realtime_factor": grid.duration / max(result.seconds, 1e-9),
        "total_seconds": time.perf_counter() - t_start,
    }
