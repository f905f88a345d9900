"""A generated benchmark where *when* things happen is the only signal, and its ablation.

Every song has the same sound (one sustained chord pad, the same percussive hit) and every
video the same picture (one periodic colour texture, the same palette). What differs is
timing: a song is a sequence of ``n_clips`` clips of ``clip_seconds``, each with its own
tempo drawn from ``tempos`` (the hits fall at ``clip start + (i + 0.5) * 60 / tempo``); a
video of that song pans its texture by ``burst_px`` pixels in a short burst of
``burst_seconds`` starting on every hit, so its motion follows the song's beats. Several
videos share one song (``videos_per_song``); they differ by the part of the texture shown
and the pan direction, which carry no information about the song. A model that only sees
clip content has nothing to match; rhythm tokens of the song and motion tokens of the video
do match.

Files (``<cache>/<name>_<hash>/``; :func:`ensure_timing_dataset`):

* ``videos/t<song>_<k>.mp4``: h264 + AAC, ``n_clips * clip_seconds + 2 * lead_seconds`` long,
  the pattern starting after ``lead_seconds`` (the builder keeps the middle window, so the
  kept window is the pattern);
* ``videos/timing_specs.jsonl``: per video ``video_id``, ``song_id``, ``tempos`` (per clip),
  ``direction``, ``offset``;
* ``dataset/``: the music-video builder's output on those videos (``manifest.csv``, audio
  segments, per-second frame features), plus ``song_ids.tsv`` (``video_id<TAB>song_id``, the
  many-to-one pairing) and ``tags.tsv`` (``video_id<TAB>tag;tag``: the tempo word of every clip).

:func:`run_ablation` trains the ``ut_cmvmr`` recipe of the retrieval trainer once per variant
(content only, + rhythm, + motion, + both) and scores video queries against the music gallery
(one embedding per song, many-to-one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from omegaconf import MISSING, DictConfig

from vcmr.utils import atomic_write_text, cache_dir, file_lock, progress_bar
from vcmr.video.writer import write_video

SPECS_NAME = "timing_specs.jsonl"
SONG_IDS_NAME = "song_ids.tsv"
TAGS_NAME = "tags.tsv"
#: Bumped whenever the generator's output changes, so cached datasets are rebuilt.
GENERATOR_VERSION = 1
#: Names of the tempo classes in the tags (slowest first).
TEMPO_WORDS = ("very slow", "slow", "moderate", "lively", "fast", "very fast", "frantic", "extreme")


@dataclasses.dataclass
class TimingSettings:
    """The generated set (the ``dataset:`` block of ``config/timing_ablation.yaml``).

    Attributes:
        name: folder name prefix under the cache folder.
        n_songs: number of songs.
        videos_per_song: videos made for each song (many-to-one).
        n_clips: clips per song.
        clip_seconds: clip length, seconds.
        lead_seconds: extra seconds before and after the pattern (trimmed by the builder).
        tempos: the tempo choices of a clip, beats per minute.
        sample_rate: audio rate, Hz.
        size: frame side, pixels (even).
        fps: video frame rate.
        texture_period: side of the periodic texture, pixels.
        burst_px: texture shift of one motion burst, pixels.
        burst_seconds: duration of one burst, seconds.
        hit_db: level of the percussive hits relative to the pad, dB.
        seed: master seed.
        crf: x264 quality.
    """

    name: str = MISSING
    n_songs: int = MISSING
    videos_per_song: int = MISSING
    n_clips: int = MISSING
    clip_seconds: float = MISSING
    lead_seconds: float = MISSING
    tempos: List[float] = MISSING
    sample_rate: int = MISSING
    size: int = MISSING
    fps: int = MISSING
    texture_period: int = MISSING
    burst_px: float = MISSING
    burst_seconds: float = MISSING
    hit_db: float = MISSING
    seed: int = MISSING
    crf: int = MISSING

    @property
    def duration(self) -> float:
        return self.n_clips * self.clip_seconds + 2 * self.lead_seconds


@dataclasses.dataclass(frozen=True)
class VideoPlan:
    """One video: its id, its song, the song's per-clip tempos, and the non-informative choices."""

    video_id: str
    song_id: str
    tempos: Tuple[float, ...]
    direction: Tuple[int, int]
    offset: Tuple[int, int]


DIRECTIONS: Tuple[Tuple[int, int], ...] = ((1, 0), (-1, 0), (0, 1), (0, -1))


def plan_videos(s: TimingSettings) -> List[VideoPlan]:
    """Every video of the set, in order; the same settings give the same plan."""
    rng = np.random.default_rng([s.seed, 1])
    out = []
    for i in range(s.n_songs):
        tempos = tuple(float(t) for t in rng.choice(s.tempos, size=s.n_clips))
        for k in range(s.videos_per_song):
            d = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
            off = (int(rng.integers(s.texture_period)), int(rng.integers(s.texture_period)))
            out.append(VideoPlan(f"t{i:03d}_{k}", f"song{i:03d}", tempos, d, off))
    return out


def beat_times(tempos: Sequence[float], s: TimingSettings) -> np.ndarray:
    """Hit times in seconds from the start of the file: ``lead + c * clip + (i + 0.5) * 60 / tempo``."""
    out = []
    for c, tempo in enumerate(tempos):
        period = 60.0 / float(tempo)
        start = s.lead_seconds + c * s.clip_seconds
        out.extend(start + (np.arange(int(np.floor(s.clip_seconds / period - 0.5)) + 1) + 0.5) * period)
    return np.asarray([t for t in out if t < s.lead_seconds + s.n_clips * s.clip_seconds], dtype=np.float64)


def render_song(tempos: Sequence[float], s: TimingSettings) -> np.ndarray:
    """``[N]`` float32 mono: the shared pad plus the shared hit on every beat, peak 0.9."""
    sr = s.sample_rate
    n = int(round(s.duration * sr))
    t = np.arange(n) / sr
    pad = sum(np.sin(2 * np.pi * f * t) / (1 + i) for i, f in enumerate((220.0, 261.63, 329.63, 440.0)))
    fade = np.minimum(1.0, np.minimum(t, s.duration - t) / 0.5)  # no onset at the ends
    out = 0.25 * pad * fade
    m = int(0.12 * sr)
    th = np.arange(m) / sr
    noise = np.random.default_rng(12345).standard_normal(m)  # the same hit everywhere
    hit = np.sin(2 * np.pi * np.cumsum(80 + 160 * np.exp(-th * 40)) / sr) * np.exp(-th * 25)
    hit = hit + 0.4 * noise * np.exp(-th * 120)
    hit *= 0.25 * 10 ** (s.hit_db / 20) / np.max(np.abs(hit)) * 4
    for b in beat_times(tempos, s):
        i = int(round(b * sr))
        j = min(n, i + m)
        out[i:j] += hit[: j - i]
    return (0.9 * out / np.max(np.abs(out))).astype(np.float32)


def texture(s: TimingSettings) -> np.ndarray:
    """The shared periodic texture ``[P, P, 3]`` uint8 (low-pass noise through a fixed palette)."""
    p = s.texture_period
    rng = np.random.default_rng(777)  # the same picture for every video
    spec = np.fft.fft2(rng.standard_normal((p, p)))
    f = np.fft.fftfreq(p)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    field = np.real(np.fft.ifft2(spec * np.exp(-((r / 0.06) ** 2))))
    field = (field - field.min()) / (field.max() - field.min())
    a, b = np.array([30.0, 60.0, 160.0]), np.array([250.0, 170.0, 60.0])  # blue -> orange
    return (a + field[..., None] * (b - a)).astype(np.uint8)


def pan_offsets(beats: np.ndarray, s: TimingSettings) -> np.ndarray:
    """``[n_frames]`` texture shift in pixels: ``burst_px`` per beat, eased over ``burst_seconds``."""
    n = int(round(s.duration * s.fps))
    t = np.arange(n) / s.fps
    x = np.clip((t[:, None] - beats[None, :]) / s.burst_seconds, 0.0, 1.0)
    ease = x * x * (3 - 2 * x)  # smoothstep
    return s.burst_px * ease.sum(axis=1)


def draw_frames(plan: VideoPlan, s: TimingSettings, tex: np.ndarray) -> Iterator[np.ndarray]:
    """``[size, size, 3]`` uint8 frames of one video."""
    shifts = np.round(pan_offsets(beat_times(plan.tempos, s), s)).astype(np.int64)
    idx = np.arange(s.size)
    p = s.texture_period
    for sh in shifts:
        ys = (plan.offset[1] + idx + plan.direction[1] * sh) % p
        xs = (plan.offset[0] + idx + plan.direction[0] * sh) % p
        yield np.ascontiguousarray(tex[ys][:, xs])


def _spec_line(plan: VideoPlan) -> str:
    return json.dumps({"video_id": plan.video_id, "song_id": plan.song_id, "tempos": list(plan.tempos),
                       "direction": list(plan.direction), "offset": list(plan.offset)}, sort_keys=True)


def clip_tags(tempos: Sequence[float], s: TimingSettings) -> List[str]:
    """Tags of a song: ``clipK---<tempo word>`` for every clip (the words of :data:`TEMPO_WORDS`)."""
    order = sorted(set(float(t) for t in s.tempos))
    return [f"clip{k + 1}---{TEMPO_WORDS[order.index(float(t)) % len(TEMPO_WORDS)].replace(' ', '_')}"
            for k, t in enumerate(tempos)]


def make_timing_videos(folder: str | os.PathLike, s: TimingSettings, progress: bool = True) -> Path:
    """Write the videos and ``timing_specs.jsonl`` (last: its presence means the folder is complete)."""
    folder = Path(folder)
    plans = plan_videos(s)
    specs = folder / SPECS_NAME
    if specs.is_file() and len(specs.read_text().splitlines()) == len(plans):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tex = texture(s)
    songs: Dict[str, np.ndarray] = {}
    for plan in progress_bar(plans, desc="timing videos", unit="video", disable=not progress):
        path = folder / f"{plan.video_id}.mp4"
        if path.is_file():
            continue
        if plan.song_id not in songs:
            songs = {plan.song_id: render_song(plan.tempos, s)}  # keep one song in memory
        write_video(path, draw_frames(plan, s, tex), s.fps, songs[plan.song_id], s.sample_rate, crf=s.crf)
    atomic_write_text(specs, "\n".join(_spec_line(p) for p in plans) + "\n")
    return folder


def read_timing_specs(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """``timing_specs.jsonl`` (a file or the folder holding it) -> records in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / SPECS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: timing specs not found (written by vcmr.demo.timing)")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                out.append({k: rec[k] for k in ("video_id", "song_id", "tempos", "direction", "offset")})
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: malformed spec line: {exc}") from exc
    return out


def builder_overrides(s: TimingSettings) -> List[str]:
    """``config/preprocess_demo.yaml`` overrides that keep exactly the pattern: a window of
    ``n_clips * clip_seconds`` in one audio segment per clip, no scene rule in the way."""
    window = int(round(s.n_clips * s.clip_seconds))
    if window != s.n_clips * s.clip_seconds:
        raise ValueError(f"dataset: n_clips * clip_seconds must be whole seconds, got {s.n_clips * s.clip_seconds}")
    return [
        f"window.seconds={window}", f"scenes.max_scene_seconds={s.duration + 1}",
        f"audio.segment_seconds={s.clip_seconds}", f"audio.n_segments={s.n_clips}", f"audio.sample_rate={s.sample_rate}",
    ]


def _key(s: TimingSettings, builder: Sequence[str]) -> str:
    view = {"settings": dataclasses.asdict(s), "builder": list(builder), "version": GENERATOR_VERSION}
    return hashlib.sha1(json.dumps(view, sort_keys=True).encode()).hexdigest()[:10]


def ensure_timing_dataset(s: TimingSettings, builder: Sequence[str] = (), root: Optional[str | os.PathLike] = None,
                          progress: bool = True) -> Path:
    """Generate the videos and build the dataset from them (reused when complete).

    Args:
        s: the set's settings.
        builder: extra ``key=value`` overrides of ``config/preprocess_demo.yaml`` (after
            :func:`builder_overrides`).
        root: parent folder; default :func:`vcmr.utils.cache_dir`.
        progress: progress bars.

    Returns:
        The dataset folder (``manifest.csv``, ``song_ids.tsv``, ``tags.tsv``, ...).
    """
    from omegaconf import OmegaConf

    from vcmr.config import load_config
    from vcmr.preprocess.builder import PreprocessConfig, build

    overrides = builder_overrides(s) + list(builder)
    base = (Path(root) if root is not None else cache_dir()) / f"{s.name}_{_key(s, overrides)}"
    videos, dataset = base / "videos", base / "dataset"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        make_timing_videos(videos, s, progress)
        cfg = load_config("preprocess_demo.yaml", [*overrides, f"progress={str(progress).lower()}"],
                          schema=PreprocessConfig)
        summary = build(OmegaConf.merge(cfg, {"input": str(videos), "output": str(dataset)}))
        if summary.processed:
            print(summary)
        specs = read_timing_specs(videos)
        atomic_write_text(dataset / SONG_IDS_NAME,
                          "video_id\tsong_id\n" + "".join(f"{r['video_id']}\t{r['song_id']}\n" for r in specs))
        atomic_write_text(dataset / TAGS_NAME, "id\ttags\n" + "".join(
            f"{r['video_id']}\t{';'.join(clip_tags(r['tempos'], s))}\n" for r in specs))
    return dataset


# --------------------------------------------------------------------------------------
# Tags of the demo music videos (the unified target of ``model=ut_cmvmr`` on the demo)
# --------------------------------------------------------------------------------------

#: The recipe key that may say ``demo``.
UT_TAGS = "recipes.ut_cmvmr.tags"


def write_demo_tags(dataset: str | os.PathLike) -> Path:
    """``<dataset>/tags.tsv`` from the demo videos' planted attributes (``specs.jsonl``):
    ``video_id<TAB>timbre---saw;drums---rock;mode---minor;tempo---fast`` per video."""
    from vcmr.demo.synth import SongSpec, spec_labels
    from vcmr.demo.videos import read_specs

    dataset = Path(dataset)
    fields = [f.name for f in dataclasses.fields(SongSpec)]
    lines = ["id\ttags"]
    for vid, rec in sorted(read_specs(dataset).items()):
        lines.append(f"{vid}\t{';'.join(spec_labels(SongSpec(**{k: rec[k] for k in fields})))}")
    path = dataset / TAGS_NAME
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def prepare_demo_tags(cfg: DictConfig) -> DictConfig:
    """A ``train_retrieval`` config for ``model=ut_cmvmr`` whose ``tags`` is ``demo``, with the
    demo dataset's tag file written (:func:`write_demo_tags`) and named; others unchanged."""
    from omegaconf import OmegaConf

    from vcmr.config import with_values

    if cfg.model != "ut_cmvmr" or OmegaConf.select(cfg, UT_TAGS) != "demo":
        return cfg
    return with_values(cfg, {UT_TAGS: str(write_demo_tags(cfg.data.root))})


# --------------------------------------------------------------------------------------
# The ablation: content only, + rhythm, + motion, + both
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class TimingAblationConfig:
    """Schema of ``config/timing_ablation.yaml``.

    ``dataset``: the generated set; ``builder``: extra overrides of the dataset builder;
    ``train_config``: the retrieval trainer's config of one run (``model=ut_cmvmr``),
    ``train_overrides``: overrides of it for every run; ``variants``: name -> overrides of
    one variant; ``seeds``: every variant is trained once per seed and the scores averaged;
    ``output``: folder of the runs and of ``ablation.json`` / ``ablation.md``; ``threads``:
    torch CPU threads (0 keeps torch's default; the runs are many small steps, where one
    thread is often fastest).
    """

    dataset: TimingSettings = MISSING
    builder: List[str] = MISSING
    train_config: str = MISSING
    train_overrides: List[str] = MISSING
    variants: Dict[str, List[str]] = MISSING
    seeds: List[int] = MISSING
    output: str = MISSING
    progress: bool = MISSING
    threads: int = MISSING


def settings_of(node: Any) -> TimingSettings:
    """A :class:`TimingSettings` from a config node or mapping."""
    from vcmr.config import to_container

    d = to_container(node) if isinstance(node, DictConfig) else dict(node)
    return TimingSettings(**{f.name: d[f.name] for f in dataclasses.fields(TimingSettings)})


def mean_scores(runs: Sequence[Mapping[str, Any]], score: str) -> Dict[str, float]:
    """Mean of each score over runs (``music_gallery.json`` contents)."""
    keys = list(runs[0][score])
    return {k: float(np.mean([r[score][k] for r in runs])) for k in keys}


def std_scores(runs: Sequence[Mapping[str, Any]], score: str) -> Dict[str, float]:
    """Standard deviation (over runs) of each score."""
    keys = list(runs[0][score])
    return {k: float(np.std([r[score][k] for r in runs])) for k in keys}


#: Column groups of the ablation table: scoring -> header.
SCORINGS = {"two_tower": "two-tower", "cross": "cross-attention"}


def format_ablation(results: Mapping[str, Any]) -> str:
    """The ablation as a Markdown table: one row per variant (then chance), for each scoring of
    the music gallery R@k and the median rank (mean ± std over seeds when there are several)."""
    ks = [k for k in results["chance"] if k.startswith("R@")]
    scorings = [sc for sc in SCORINGS if all(sc in row for row in results["variants"].values())]
    multi = len(results["seeds"]) > 1
    head = ["variant"] + [f"{SCORINGS[sc]} {k}" for sc in scorings for k in [*ks, "median rank"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results["variants"].items():
        cells = []
        for sc in scorings:
            mean, sd = row[sc]["mean"], row[sc]["std"]
            cells += [f"{mean[k]:.3f}" + (f" ± {sd[k]:.3f}" if multi else "") for k in ks]
            cells.append(f"{mean['median_rank']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ch = results["chance"]
    lines.append("| chance | " + " | ".join(
        [c for _ in scorings for c in [*(f"{ch[k]:.3f}" for k in ks), f"{ch['median_rank']:.1f}"]]) + " |")
    return "\n".join(lines)


def run_ablation(cfg: DictConfig, dataset: Optional[str | os.PathLike] = None) -> Dict[str, Any]:
    """Generate (or reuse) the timing set and train every variant of ``cfg.variants`` per seed.

    Args:
        cfg: a :class:`TimingAblationConfig` config.
        dataset: an already built timing dataset (skips generation).

    Returns:
        ``{"dataset", "n_queries", "n_songs", "chance", "seeds", "score", "variants": {name:
        {"two_tower": {"mean", "std"}, "cross": {"mean", "std"}, "runs"}}, "table"}``; also
        written to ``<output>/ablation.json`` and ``<output>/ablation.md``.
    """
    import torch

    from vcmr.config import load_config
    from vcmr.trainers.retrieval import TrainRetrievalConfig, train

    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    s = settings_of(cfg.dataset)
    root = Path(dataset) if dataset is not None else ensure_timing_dataset(s, list(cfg.builder),
                                                                          progress=bool(cfg.progress))
    out_dir = Path(cfg.output)
    variants: Dict[str, Any] = {}
    info: Dict[str, Any] = {}
    for name, overrides in cfg.variants.items():
        runs = []
        for seed in cfg.seeds:
            run_cfg = load_config(cfg.train_config, [
                *cfg.train_overrides, *overrides, f"data.root={root}", f"seed={int(seed)}",
                f"output.root={out_dir}", f"output.name={name}", f"output.version=seed_{int(seed)}",
                f"progress={str(bool(cfg.progress)).lower()}"], schema=TrainRetrievalConfig)
            result = train(run_cfg)
            gallery = json.loads((Path(result["run_dir"]) / "evaluation" / "music_gallery.json").read_text())
            score = str(run_cfg.recipes.ut_cmvmr.score)
            runs.append({"seed": int(seed), "run_dir": str(result["run_dir"]), **gallery})
            info = {"n_queries": gallery["n_queries"], "n_songs": gallery["n_songs"], "chance": gallery["chance"],
                    "score": score}
        variants[name] = {sc: {"mean": mean_scores(runs, sc), "std": std_scores(runs, sc)}
                          for sc in SCORINGS if all(sc in r for r in runs)}
        variants[name]["runs"] = runs
    results = {"dataset": str(root), "seeds": [int(x) for x in cfg.seeds], **info, "variants": variants}
    results["table"] = format_ablation(results)
    atomic_write_text(out_dir / "ablation.json", json.dumps(results, indent=1))
    atomic_write_text(out_dir / "ablation.md", results["table"] + "\n")
    return results
