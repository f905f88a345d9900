"""Demo music videos: real mp4 files (h264 + AAC) whose picture follows their music.

Each video renders a :class:`~vcmr.demo.synth.SongSpec` with :func:`vcmr.demo.synth.render`
and draws frames whose look is tied to the planted attributes, strongly enough for a tiny
random CLIP to pick up:

* key (0..11)   -> background hue (``key / 12`` of the colour wheel);
* timbre        -> shape and colour of the moving objects (circle, square, triangle,
  ring, cross; one hue per timbre);
* drums         -> number of objects (none 1, rock 2, four_on_floor 3, breakbeat 4);
* tempo         -> motion speed (one orbit per bar) and a size pulse on every beat;
* mode          -> minor keys add dark horizontal stripes.

Shots last ``min_shot..max_shot`` seconds and alternate between a bright/saturated and a
dark/washed-out look with a new framing, which gives hard cuts for scene detection; a
``oneshot_fraction`` of the videos has no cut at all (the builder's scene rule rejects
them). ``<videos_dir>/specs.jsonl`` holds one JSON object per video: ``video_id``, the
SongSpec fields, ``cuts`` (seconds) and ``oneshot``.

:func:`ensure_demo_dataset` generates the videos and runs the music-video builder with
``config/preprocess_demo.yaml`` into the cache folder, reusing what is already there.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from omegaconf import DictConfig

from vcmr.config import with_values
from vcmr.demo.synth import DRUM_PATTERNS, SYNTH_VERSION, TIMBRES, SongSpec, random_spec, render
from vcmr.utils import atomic_path, atomic_write_text, cache_dir, file_lock, progress_bar
from vcmr.video.writer import write_video

SPECS_NAME = "specs.jsonl"
#: Bumped when the generator's output changes, so cached demo datasets are rebuilt.
GENERATOR_VERSION = 2


@dataclasses.dataclass(frozen=True)
class DemoVideoSettings:
    """Sizes of the generated videos (``demo.*`` in ``config/preprocess_demo.yaml``).

    Attributes:
        n_videos: number of videos.
        seed: master seed (video ``i`` uses specs drawn from it in order).
        duration: seconds per video.
        size: frame width = height in pixels (even).
        fps: video frame rate.
        sample_rate: audio rate of the AAC track, Hz.
        min_shot: shortest shot, seconds.
        max_shot: longest shot, seconds.
        oneshot_fraction: share of videos without any cut.
        crf: x264 constant rate factor (quality).
        aac_coder: FFmpeg AAC coder of the sound track (``fast``, ``twoloop``, ``anmr``).
    """

    n_videos: int
    seed: int
    duration: float
    size: int
    fps: int
    sample_rate: int
    min_shot: float
    max_shot: float
    oneshot_fraction: float
    crf: int
    aac_coder: str

    @classmethod
    def from_config(cls, node: Any) -> "DemoVideoSettings":
        return cls(**{f.name: getattr(node, f.name) for f in dataclasses.fields(cls)})


def _shapes_mask(kind: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if kind == "sine":  # circle
        return dx * dx + dy * dy < r * r
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) < r * 0.85
    if kind == "saw":  # triangle pointing up
        return (dy < r * 0.8) & (np.abs(dx) < (dy + r) * 0.6)
    if kind == "pluck":  # ring
        d2 = dx * dx + dy * dy
        return (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    # organ: cross
    t = r * 0.33
    return ((np.abs(dx) < t) & (np.abs(dy) < r)) | ((np.abs(dy) < t) & (np.abs(dx) < r))


def _shots(rng: np.random.Generator, s: DemoVideoSettings, oneshot: bool) -> List[float]:
    """Cut times in seconds (empty for a one-shot video)."""
    if oneshot:
        return []
    cuts, t = [], 0.0
    while True:
        t += float(rng.uniform(s.min_shot, s.max_shot))
        if t >= s.duration - 0.5:
            return cuts
        cuts.append(round(t, 3))


def draw_frames(spec: SongSpec, cuts: Sequence[float], s: DemoVideoSettings, rng: np.random.Generator):
    """Yield ``[size, size, 3]`` uint8 RGB frames, ``duration * fps`` of them."""
    n = int(round(s.duration * s.fps))
    yy, xx = np.mgrid[0 : s.size, 0 : s.size].astype(np.float32)
    hue = spec.key / 12.0
    fg_hue = (TIMBRES.index(spec.timbre) + 0.5) / len(TIMBRES)
    n_obj = 1 + DRUM_PATTERNS.index(spec.drums)
    beat = 60.0 / spec.tempo
    bounds = [0.0, *cuts, s.duration + 1.0]
    # Per-shot framing: look (bright/dark), orbit centre, orbit radius, object scale.
    looks = []
    for k in range(len(bounds) - 1):
        bright = k % 2 == 0
        looks.append(dict(
            bg=np.array(colorsys.hsv_to_rgb(hue, 0.85 if bright else 0.45, 0.75 if bright else 0.35)) * 255,
            fg=np.array(colorsys.hsv_to_rgb(fg_hue, 0.35 if bright else 0.9, 1.0)) * 255,
            cx=s.size * rng.uniform(0.4, 0.6), cy=s.size * rng.uniform(0.4, 0.6),
            orbit=s.size * rng.uniform(0.18, 0.3), scale=s.size * rng.uniform(0.08, 0.13),
        ))
    stripes = ((yy // max(2, s.size // 12)) % 2 == 0) if spec.mode == "minor" else None
    for i in range(n):
        t = i / s.fps
        shot = int(np.searchsorted(bounds, t, side="right") - 1)
        lk = looks[shot]
        img = np.empty((s.size, s.size, 3), np.float32)
        img[:] = lk["bg"]
        if stripes is not None:
            img[stripes] *= 0.55
        phase = 2 * np.pi * t / (4 * beat)  # one orbit per bar: speed follows tempo
        pulse = 1.0 + 0.35 * np.exp(-((t % beat) / beat) * 6.0)  # grows on every beat
        for j in range(n_obj):
            a = phase + 2 * np.pi * j / n_obj
            cx = lk["cx"] + lk["orbit"] * np.cos(a)
            cy = lk["cy"] + lk["orbit"] * np.sin(a)
            img[_shapes_mask(spec.timbre, xx, yy, cx, cy, lk["scale"] * pulse)] = lk["fg"]
        yield np.clip(img, 0, 255).astype(np.uint8)


def write_demo_video(path: str | os.PathLike, frames, audio: np.ndarray, s: DemoVideoSettings) -> Path:
    """Encode frames (h264) and mono audio (AAC) into an mp4 with the index at the front."""
    return write_video(path, frames, s.fps, audio, s.sample_rate, crf=s.crf, aac_coder=s.aac_coder)


def _spec_record(video_id: str, spec: SongSpec, cuts: Sequence[float], oneshot: bool) -> Dict[str, Any]:
    return {"video_id": video_id, **dataclasses.asdict(spec), "cuts": list(cuts), "oneshot": oneshot}


def read_specs(path: str | os.PathLike) -> Dict[str, Dict[str, Any]]:
    """``specs.jsonl`` (a file, or a folder holding it) -> ``{video_id: record}``."""
    path = Path(path)
    if path.is_dir():
        path = path / SPECS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: demo specs not found (written by vcmr.demo.videos)")
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                out[rec["video_id"]] = rec
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: malformed spec line: {exc}") from exc
    return out


def _make_one(path: str, spec: SongSpec, cuts: List[float], index: int, s: DemoVideoSettings) -> str:
    audio = render(spec, s.sample_rate, s.duration)
    draw_rng = np.random.default_rng([s.seed, index, 1])
    write_demo_video(path, draw_frames(spec, cuts, s, draw_rng), audio, s)
    return path


def make_demo_videos(
    folder: str | os.PathLike, s: DemoVideoSettings, progress: bool = True, num_workers: int = 0
) -> Path:
    """Write ``demo_XXXX.mp4`` files and ``specs.jsonl`` into ``folder``.

    Videos already present (complete, thanks to atomic writes) are kept; ``specs.jsonl``
    is written last, so its presence with ``n_videos`` lines means the folder is complete.
    ``num_workers > 0`` renders in that many processes; the files do not depend on it.
    """
    folder = Path(folder)
    specs_path = folder / SPECS_NAME
    if specs_path.is_file() and len(read_specs(specs_path)) == s.n_videos:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(s.seed)
    lines, jobs = [], []
    for i in range(s.n_videos):
        vid = f"demo_{i:04d}"
        spec = random_spec(rng)
        vrng = np.random.default_rng([s.seed, i])
        oneshot = bool(vrng.random() < s.oneshot_fraction)
        cuts = _shots(vrng, s, oneshot)
        lines.append(json.dumps(_spec_record(vid, spec, cuts, oneshot), sort_keys=True))
        path = folder / f"{vid}.mp4"
        if not path.is_file():
            jobs.append((str(path), spec, cuts, i, s))
    bar = progress_bar(total=len(jobs), desc="demo videos", unit="video", disable=not progress)
    if num_workers > 0 and len(jobs) > 1:
        import concurrent.futures as cf
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool:
            for fut in cf.as_completed([pool.submit(_make_one, *job) for job in jobs]):
                fut.result()
                bar.update(1)
    else:
        for job in jobs:
            _make_one(*job)
            bar.update(1)
    bar.close()
    atomic_write_text(specs_path, "\n".join(lines) + "\n")
    return folder


def _demo_key(cfg) -> str:
    from omegaconf import OmegaConf

    from vcmr.preprocess.builder import output_view

    view = output_view(cfg)
    view["demo"] = OmegaConf.to_container(cfg.demo, resolve=True)
    view["demo"].pop("enabled", None)
    view["generator_version"] = GENERATOR_VERSION
    view["synth_version"] = SYNTH_VERSION  # a changed soundtrack is a new dataset too
    return hashlib.sha1(json.dumps(view, sort_keys=True).encode()).hexdigest()[:10]


def ensure_demo_dataset(cfg_overrides: Sequence[str] | Any = (), config: str = "preprocess_demo.yaml",
                        root: Optional[str | os.PathLike] = None) -> Path:
    """Generate the demo music videos and build the stage-2 dataset from them.

    Args:
        cfg_overrides: ``key=value`` overrides of the demo config, or an already loaded
            :class:`~vcmr.preprocess.builder.PreprocessConfig` config.
        config: YAML file (default ``config/preprocess_demo.yaml``).
        root: parent folder; default :func:`vcmr.utils.cache_dir`. The videos go to
            ``<root>/<demo.name>_<hash>/videos`` and the dataset to ``.../dataset``,
            where the hash covers every setting that changes the outputs.

    Returns:
        The dataset dir: ``manifest.csv``, ``preprocess_config.yaml``, ``audio/``,
        ``features/``, and ``specs.jsonl`` (the planted attributes per video id).
        A complete earlier build is reused as is.
    """
    from omegaconf import OmegaConf

    from vcmr.config import load_config
    from vcmr.preprocess.builder import PreprocessConfig, build

    cfg = cfg_overrides if isinstance(cfg_overrides, DictConfig) else load_config(
        config, list(cfg_overrides), schema=PreprocessConfig
    )
    base = Path(root) if root is not None else cache_dir()
    base = base / f"{cfg.demo.name}_{_demo_key(cfg)}"
    videos, dataset = base / "videos", base / "dataset"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):  # several processes (e.g. DDP ranks) may ask at once
        make_demo_videos(videos, DemoVideoSettings.from_config(cfg.demo), bool(cfg.progress), int(cfg.num_workers))
        run_cfg = OmegaConf.merge(cfg, {"input": str(videos), "output": str(dataset)})
        summary = build(run_cfg)
        if summary.processed:
            print(summary)
        specs = dataset / SPECS_NAME
        if not specs.is_file():
            with atomic_path(specs) as tmp:
                shutil.copyfile(videos / SPECS_NAME, tmp)
    return dataset


def prepare(cfg: DictConfig) -> DictConfig:
    """A stage-2 config whose ``data.root`` is ``demo``, with it replaced by the demo music-video dataset.

    The dataset is built (or reused) by :func:`ensure_demo_dataset` with the ``demo`` block's
    ``cfg_overrides``. Any other config is returned unchanged.
    """
    if cfg.data.root != "demo":
        return cfg
    root = ensure_demo_dataset(list(cfg.demo.get("cfg_overrides", [])))
    return with_values(cfg, {"data.root": str(root)})


__all__ = [
    "prepare",
    "DemoVideoSettings", "draw_frames", "write_demo_video", "make_demo_videos", "read_specs",
    "ensure_demo_dataset", "TIMBRES", "SPECS_NAME",
]
