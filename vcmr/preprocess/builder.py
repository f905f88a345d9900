"""Music-video dataset builder: videos -> aligned audio segments + per-second CLIP features.

``build(cfg)`` reads the input (a YouTube id/URL list or a folder of videos), keeps this
shard's videos that have no record yet, and processes them: decode workers (processes,
``num_workers``) download, probe, decode the kept window once, detect scenes and write the
audio segments; the sampled frames (already at the encoder's input size) wait in a raw
frame file in the run's spool folder (``frames.spool_dir``); the parent reads them back
one batch at a time, encodes the batches on the encoder's device, averages them per second
and writes ``features/<id>.npy``; the per-video JSON record is written last. The CSV
manifest is assembled from the records at the end. Memory therefore does not grow with
the window, the video's length or ``max_pending`` (which bounds the spooled frame files).

Dataset layout (paths relative to ``output``)::

    preprocess_config.yaml          resolved config of the builder
    manifest.csv                    one row per video (manifest.shard-I-of-N.csv per shard)
    records/<id>.json               per-video record, written after the video's outputs
    audio/<id>/<id>_<jj>.wav        segment jj of the kept window, 16-bit PCM
    features/<id>.npy               [window seconds, embed dim] float32
    downloads/<id>.<ext>            yt-dlp downloads (list input only)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import ctypes
import ctypes.util
import dataclasses
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

from vcmr.config import ConfigError, above, at_least, one_of, required, save_config, to_container
from vcmr.preprocess.download import (
    DownloadSettings,
    VideoSource,
    find_download,
    read_inputs,
    require_yt_dlp,
    yt_dlp_download,
)
from vcmr.data.manifest import (
    MANIFEST_NAME,
    VideoRecord,
    failed,
    read_records,
    write_manifest,
    write_record,
)
from vcmr.preprocess.video_job import (
    SHORT_RULES,
    Analysis,
    JobSettings,
    analyse,
    feature_relpath,
    read_frame_batches,
)
from vcmr.utils import TMP_PREFIX, atomic_save_npy, progress_bar, stable_hash64
from vcmr.video.features import average_per_second

CONFIG_NAME = "preprocess_config.yaml"

# --------------------------------------------------------------------------------------
# Config schema (values live in config/preprocess.yaml)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class WindowConfig:
    """Kept window: the middle ``seconds`` of each video; ``short_rule`` for shorter ones."""

    seconds: float = required((lambda v: v > 0 and float(v) == int(v), "must be a positive whole number of seconds"))
    short_rule: str = required(one_of(*SHORT_RULES))


@dataclasses.dataclass
class ScenesConfig:
    """PySceneDetect ContentDetector on frames sampled at ``fps``, scaled to ``short_side``."""

    threshold: float = required(above(0))
    min_scene_len: float = required(at_least(0))
    max_scene_seconds: float = required(above(0))
    fps: float = required(above(0))
    short_side: int = required(at_least(16))


@dataclasses.dataclass
class AudioSegmentsConfig:
    """Mono audio at ``sample_rate`` cut into ``n_segments`` files of ``segment_seconds``."""

    sample_rate: int = required(at_least(1000))
    segment_seconds: float = required(above(0))
    n_segments: int = required(at_least(1))
    format: str = required(one_of("wav", "flac"))


@dataclasses.dataclass
class FramesConfig:
    """Frames sampled at ``fps``, encoded by ``encoder`` (arguments in ``encoders[encoder]``)
    and averaged per second. Decoded frames wait for the encoder in a temporary folder
    inside ``spool_dir`` (``None``: the output directory)."""

    fps: float = required(above(0))
    interpolation: str = MISSING
    decoder_threads: int = required(at_least(0))
    end_tolerance: float = required(at_least(0))
    batch_size: int = required(at_least(1))
    normalize: bool = MISSING
    device: str = MISSING
    encoder: str = MISSING
    encoders: Dict[str, Dict[str, Any]] = MISSING
    spool_dir: Optional[str] = MISSING


@dataclasses.dataclass
class DownloadConfig:
    """yt-dlp settings; ``dir`` null means ``<output>/downloads``."""

    dir: Optional[str] = MISSING
    format: str = MISSING
    retries: int = MISSING
    socket_timeout: float = MISSING


@dataclasses.dataclass
class DemoConfig:
    """Generated demo music videos (see :mod:`vcmr.demo.videos`)."""

    enabled: bool = MISSING
    name: str = MISSING
    n_videos: int = MISSING
    seed: int = MISSING
    duration: float = MISSING
    size: int = MISSING
    fps: int = MISSING
    sample_rate: int = MISSING
    min_shot: float = MISSING
    max_shot: float = MISSING
    oneshot_fraction: float = MISSING
    crf: int = MISSING
    aac_coder: str = MISSING


@dataclasses.dataclass
class PreprocessConfig:
    """Schema of ``config/preprocess.yaml``."""

    input: Optional[str] = MISSING
    output: Optional[str] = MISSING
    shard: str = MISSING
    merge: bool = MISSING
    retry_failed: bool = MISSING
    num_workers: int = required(at_least(0))
    max_pending: int = required(at_least(1))
    start_method: str = MISSING
    progress: bool = MISSING
    window: WindowConfig = dataclasses.field(default_factory=WindowConfig)
    scenes: ScenesConfig = dataclasses.field(default_factory=ScenesConfig)
    audio: AudioSegmentsConfig = dataclasses.field(default_factory=AudioSegmentsConfig)
    frames: FramesConfig = dataclasses.field(default_factory=FramesConfig)
    download: DownloadConfig = dataclasses.field(default_factory=DownloadConfig)
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)


#: Keys whose values shape the outputs; a dataset dir refuses a run that changes them.
OUTPUT_KEYS = ("window", "scenes", "audio", "frames.fps", "frames.normalize", "frames.encoder")


def encoder_args(cfg: DictConfig) -> Dict[str, Any]:
    """Arguments of the picked frame encoder, ``frames.encoders[frames.encoder]``."""
    name = cfg.frames.encoder
    if name not in cfg.frames.encoders:
        raise ConfigError(f"frames.encoders: no argument block for the picked encoder '{name}'")
    return dict(to_container(cfg.frames.encoders[name]))


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def parse_shard(spec: str) -> Tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        i, n = (int(p) for p in str(spec).split("/"))
    except ValueError:
        raise ConfigError(f"shard: '{spec}' is not of the form i/N (e.g. 0/1, 3/16)") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard: '{spec}' needs 0 <= i < N")
    return i, n


def shard_of(video_id: str, n_shards: int) -> int:
    """Deterministic shard of a video id (SHA-1 of the id, modulo ``n_shards``)."""
    return stable_hash64(video_id) % n_shards


def manifest_name(shard: Tuple[int, int]) -> str:
    i, n = shard
    return MANIFEST_NAME if n == 1 else f"manifest.shard-{i}-of-{n}.csv"


def _validate(cfg: DictConfig) -> None:
    """Checks across keys (each key's own range is checked by the schema when the config is loaded)."""
    if cfg.audio.n_segments * cfg.audio.segment_seconds > cfg.window.seconds + 1e-9:
        raise ConfigError(
            f"audio: {cfg.audio.n_segments} segments of {cfg.audio.segment_seconds} s do not fit "
            f"the {cfg.window.seconds} s window"
        )
    if cfg.frames.encoder not in cfg.frames.encoders:
        raise ConfigError(
            f"frames.encoder: '{cfg.frames.encoder}' has no argument block in frames.encoders "
            f"(known: {sorted(cfg.frames.encoders)})"
        )


def output_view(cfg: DictConfig) -> Dict[str, Any]:
    """The settings that shape a dataset's outputs (compared across runs)."""
    view = {k: to_container(OmegaConf.select(cfg, k)) for k in OUTPUT_KEYS}
    view["frames.encoder_args"] = to_container(OmegaConf.select(cfg, f"frames.encoders.{cfg.frames.encoder}"))
    return view


def _check_or_save_config(cfg: DictConfig, root: Path) -> None:
    """Refuse to mix outputs of different settings in one dataset dir; save the config."""
    path = root / CONFIG_NAME
    if path.is_file():
        mine, theirs = output_view(cfg), output_view(OmegaConf.load(path))
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff:
            raise ConfigError(
                f"{path}: this dataset was built with different {', '.join(diff)}; use a new output dir "
                "or the same settings"
            )
    save_config(cfg, path)


def job_settings(cfg: DictConfig, frame_size: int, root: Path, spool_dir: str | Path) -> JobSettings:
    """Worker settings from the config; ``frame_size`` is the encoder's input size,
    ``spool_dir`` the folder of this run's frame files."""
    ddir = cfg.download.dir if cfg.download.dir else str(root / "downloads")
    return JobSettings(
        window_seconds=float(cfg.window.seconds),
        short_rule=str(cfg.window.short_rule),
        scene_threshold=float(cfg.scenes.threshold),
        scene_min_len=float(cfg.scenes.min_scene_len),
        scene_max_seconds=float(cfg.scenes.max_scene_seconds),
        scene_fps=float(cfg.scenes.fps),
        scene_short_side=int(cfg.scenes.short_side),
        sample_rate=int(cfg.audio.sample_rate),
        segment_seconds=float(cfg.audio.segment_seconds),
        n_segments=int(cfg.audio.n_segments),
        audio_format=str(cfg.audio.format),
        frame_fps=float(cfg.frames.fps),
        frame_size=int(frame_size),
        interpolation=str(cfg.frames.interpolation),
        decoder_threads=int(cfg.frames.decoder_threads),
        end_tolerance=float(cfg.frames.end_tolerance),
        download=DownloadSettings(
            dir=ddir, format=str(cfg.download.format), retries=int(cfg.download.retries),
            socket_timeout=float(cfg.download.socket_timeout),
        ),
        spool_dir=str(spool_dir),
    )


@contextlib.contextmanager
def spool_folder(cfg: DictConfig, root: Path) -> Iterator[Path]:
    """A fresh hidden folder for this run's frame files in ``frames.spool_dir`` (or the
    output directory); removed at the end with whatever a crashed worker left in it."""
    parent = Path(cfg.frames.spool_dir) if cfg.frames.spool_dir not in (None, "") else root
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}frames-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"frames.spool_dir: cannot create a folder in '{parent}': {exc}") from exc
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Encoding a window frees hundreds of MB of activations in pieces that glibc would
    otherwise keep, leaving the process's resident size at its peak between videos.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def _is_done(rec: VideoRecord, root: Path, retry_failed: bool) -> bool:
    if rec.status == "failed":
        return not retry_failed
    if rec.status == "ok":
        paths = [rec.feature_path, *rec.audio_paths]
        return all((root / p).is_file() for p in paths)
    return True


@dataclasses.dataclass
class BuildSummary:
    """What a run did. ``counts``/``reasons`` cover the whole manifest (this shard)."""

    output: Path
    manifest: Path
    total: int
    processed: int
    skipped: int
    counts: Dict[str, int]
    reasons: Dict[str, int]
    seconds: float

    def __str__(self) -> str:
        lines = [
            f"dataset: {self.output}",
            f"manifest: {self.manifest}",
            f"videos: {self.total} ({self.processed} processed now, {self.skipped} already done) in {self.seconds:.1f} s",
            "status: " + ", ".join(f"{k} {self.counts.get(k, 0)}" for k in ("ok", "rejected", "failed")),
        ]
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {n:5d}  {reason}")
        return "\n".join(lines)


def _summarise(root: Path, manifest: Path, records: Sequence[VideoRecord], processed: int, t0: float) -> BuildSummary:
    counts = collections.Counter(r.status for r in records)
    reasons = collections.Counter(f"{r.status}: {r.reason.split(':')[0]}" for r in records if r.status != "ok")
    return BuildSummary(
        output=root, manifest=manifest, total=len(records), processed=processed,
        skipped=len(records) - processed, counts=dict(counts), reasons=dict(reasons),
        seconds=time.perf_counter() - t0,
    )


def merge(root: str | Path) -> Path:
    """Assemble ``<root>/manifest.csv`` from every per-video record (all shards)."""
    root = Path(root)
    records = read_records(root)
    if not records:
        raise ConfigError(f"{root}: no records to merge (expected {root / 'records'}/*.json)")
    return write_manifest(root / MANIFEST_NAME, records.values())


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _run_jobs(
    jobs: Sequence[VideoSource],
    cfg: DictConfig,
    root: Path,
    settings: JobSettings,
    downloader: Callable,
) -> Iterator[Analysis]:
    """Yield worker results as they complete (in-process when ``num_workers == 0``)."""
    if cfg.num_workers == 0:
        for src in jobs:
            yield analyse(src, str(root), settings, downloader)
        return
    ctx = multiprocessing.get_context(cfg.start_method)
    pending: Dict[cf.Future, VideoSource] = {}
    todo = list(jobs)[::-1]
    limit = max(int(cfg.max_pending), int(cfg.num_workers))
    with cf.ProcessPoolExecutor(max_workers=int(cfg.num_workers), mp_context=ctx) as pool:
        while todo or pending:
            suspects: List[VideoSource] = []
            broken = False
            while todo and len(pending) < limit:
                src = todo.pop()
                try:
                    pending[pool.submit(analyse, src, str(root), settings, downloader)] = src
                except cf.process.BrokenProcessPool:
                    # The pool broke between two submissions: this video never started.
                    todo.append(src)
                    broken = True
                    break
            if not broken:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    src = pending.pop(fut)
                    try:
                        yield fut.result()
                    except cf.process.BrokenProcessPool:
                        suspects.append(src)
                        broken = True
                    except Exception as exc:  # e.g. a result that cannot be sent back
                        yield Analysis(src.video_id, record=failed(src.video_id, "failed", f"worker error: {exc!r}"))
            if broken:
                # A worker died (e.g. a decoder crash) and took the pool with it. Which
                # video did it is unknown: rerun each in-flight video alone, then go on
                # with the rest in a fresh pool.
                suspects.extend(pending.values())
                pending.clear()
                for sus in suspects:
                    yield _run_isolated(sus, ctx, root, settings, downloader)
                yield from _run_jobs(todo[::-1], cfg, root, settings, downloader)
                return


def _run_isolated(src: VideoSource, ctx, root: Path, settings: JobSettings, downloader: Callable) -> Analysis:
    """Process one video in its own worker process; a crash is recorded as a failure."""
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            return pool.submit(analyse, src, str(root), settings, downloader).result()
        except cf.process.BrokenProcessPool:
            return Analysis(src.video_id, record=failed(
                src.video_id, "failed", "worker process crashed: the decoder died on this file"))


def build(
    cfg: DictConfig,
    downloader: Optional[Callable[[VideoSource, DownloadSettings], Path]] = None,
    encoder: Optional[Any] = None,
) -> BuildSummary:
    """Build (or continue building) a music-video dataset.

    Args:
        cfg: a :class:`PreprocessConfig` config (``load_config(..., schema=PreprocessConfig)``).
        downloader: replaces the yt-dlp downloader for list inputs (a picklable function
            when ``num_workers > 0``).
        encoder: an already built :class:`~vcmr.video.encoders.FrameEncoder` to reuse
            (e.g. across several builds); it must be the one ``frames.encoder`` describes.
            ``None`` builds it from the config when there is work to do.

    Returns:
        A :class:`BuildSummary`; the manifest is at ``summary.manifest``.
    """
    t0 = time.perf_counter()
    if cfg.output in (None, ""):
        raise ConfigError("output: required (the dataset directory)")
    root = Path(cfg.output)
    if cfg.merge:
        path = merge(root)
        recs = list(read_records(root).values())
        return _summarise(root, path, recs, 0, t0)
    if cfg.input in (None, ""):
        raise ConfigError("input: required (a video list file or a folder of videos)")
    _validate(cfg)
    shard = parse_shard(cfg.shard)
    sources = [s for s in read_inputs(cfg.input) if shard_of(s.video_id, shard[1]) == shard[0]]
    root.mkdir(parents=True, exist_ok=True)
    _check_or_save_config(cfg, root)

    existing = read_records(root)
    origin = {s.video_id: s.path or s.url or "" for s in sources}
    todo = [s for s in sources if not (s.video_id in existing and _is_done(existing[s.video_id], root, cfg.retry_failed))]

    processed = 0
    if todo:
        ddir = Path(cfg.download.dir) if cfg.download.dir else root / "downloads"
        if downloader is None:
            downloader = yt_dlp_download
            probe_settings = DownloadSettings(str(ddir), "", 0, 0.0)
            if any(s.path is None and find_download(s, probe_settings) is None for s in todo):
                require_yt_dlp()
        if encoder is None:
            from vcmr.video.encoders import build_frame_encoder

            encoder = build_frame_encoder(cfg.frames.encoder, encoder_args(cfg), device=cfg.frames.device)
        bar = progress_bar(total=len(todo), desc=f"videos -> {root.name}", unit="video", disable=not cfg.progress,
                           file=sys.stderr)
        status = collections.Counter()
        with spool_folder(cfg, root) as spool:
            settings = job_settings(cfg, encoder.image_size, root, spool)
            for res in _run_jobs(todo, cfg, root, settings, downloader):
                rec = res.record if res.record is not None else _finish(res, encoder, cfg, root)
                rec = dataclasses.replace(rec, source=origin[rec.video_id])
                write_record(root, rec, extra={"seconds": round(res.seconds, 3), "audio_offset": res.audio_offset})
                existing[rec.video_id] = rec
                processed += 1
                status[rec.status] += 1
                bar.set_postfix(status, refresh=False)
                bar.update(1)
        bar.close()

    wanted = {s.video_id for s in sources}
    records = [r for vid, r in existing.items() if vid in wanted] if shard[1] > 1 else list(existing.values())
    path = write_manifest(root / manifest_name(shard), records)
    return _summarise(root, path, records, processed, t0)


def encode_frame_file(encoder, path: str | Path, n_frames: int, size: int, batch_size: int) -> np.ndarray:
    """Encode a worker's raw frame file one batch at a time -> ``[n_frames, embed_dim]``
    float32; at most ``batch_size`` frames are in memory at once."""
    emb = np.zeros((int(n_frames), int(encoder.embed_dim)), np.float32)
    i = 0
    for batch in read_frame_batches(path, n_frames, size, batch_size):
        emb[i : i + len(batch)] = encoder.encode_frames(batch, int(batch_size))
        i += len(batch)
    return emb


def _finish(res: Analysis, encoder, cfg: DictConfig, root: Path) -> VideoRecord:
    """Encode a worker's frames, average per second, write the features; the ok record."""
    try:
        emb = encode_frame_file(encoder, res.frames_path, res.n_frames, res.frame_size, int(cfg.frames.batch_size))
    finally:
        Path(res.frames_path).unlink(missing_ok=True)
    release_memory()
    n_rows = int(res.facts["window_duration"])
    feats = average_per_second(emb, res.rows, n_rows, bool(cfg.frames.normalize))
    rel = feature_relpath(res.video_id)
    atomic_save_npy(root / rel, feats)
    return VideoRecord(
        video_id=res.video_id, status="ok", reason="", feature_shape=(int(feats.shape[0]), int(feats.shape[1])),
        feature_path=rel, **res.facts,
    )
