"""Training throughput on one device: the figures to read before a long stage-1 or stage-2 run.

Every part uses the project's own builders and configs (``config/mus_pretrain.yaml``,
``config/vid_pretrain.yaml``; ``--mus-set`` / ``--vid-set`` take ``key=value`` overrides):

1. ``stage1``: the stage-1 training step, clips/s. The module is
   :func:`vcmr.trainers.music.build_module_from_config`'s (SampleCNN + projection head,
   NT-Xent, the augmentation chain); one step moves a raw-audio batch ``[B, 1, clip_length]``
   (pinned on CUDA) to the device, calls the module's own ``training_step`` (two augmented
   views on the device, forward, loss), then backward, the config's optimizer and its
   per-step schedule, as Lightning's automatic optimisation does (Lightning's own hooks,
   logging and progress bar are not run). Variants: ``fp32``; ``bf16-mixed``
   (``torch.autocast(bfloat16)`` around ``training_step``, as ``trainer.precision=bf16-mixed``);
   each again with ``torch.compile`` on the encoder and the projection head (on CUDA, or
   with ``--compile``). A variant that runs out of memory, or one other than fp32 that fails
   (a compile error, an op without bfloat16 support), is reported in its row and the run goes
   on. On CUDA the
   GPU utilisation is sampled during the timed steps (``torch.cuda.utilization()``, needs
   pynvml) and the peak allocated memory is reported.
2. ``augment``: the augmentation chain alone on the device (both views of a batch, its copy
   to the device included, as in the step), clips/s, next to what the step consumes.
3. ``data``: the stage-1 DataLoader as training builds it
   (:class:`vcmr.data.audio_folder.AudioFolderDataModule`: its dataset, ``data.loader``'s
   workers, batch size, prefetching), clips/s delivered, next to what the step consumes. It
   reads demo songs written by :func:`vcmr.demo.music.ensure_demo_music` into a temporary
   folder (``data.root=<folder>`` reads that folder instead).
4. ``clip``: CLIP image tower (``config/preprocess.yaml``'s open_clip model, ViT-B-32, random
   weights), frames/s in fp32, fp16 (CUDA only) and bf16 (autocast, as the embedder does),
   for the tower alone on device pixels and through :meth:`FrameEncoder.encode_frames`
   (uint8 frames from host memory to embeddings back on the host, as the dataset builder
   calls it), ``--clip-batch`` frames per call.
5. ``stage2``: the stage-2 training step (:func:`vcmr.trainers.video.build_module_from_config`:
   the joint model, loss and augmentations), steps/s and videos/s, on synthetic per-second
   CLIP features ``[B, round(audio_length / sample_rate), input_dim]`` and demo audio, same
   variants as stage 1 (``torch.compile`` on the joint model).

Rates are medians over ``--steps`` timed steps after ``--warmup`` untimed ones, with the
device synchronised around each step (the data loader: items delivered over whole rounds
of its workers). Everything is printed as plain tables at the end of the run.

Not measured: Lightning's per-step overhead (hooks, ``self.log``, callbacks, progress bar),
validation, checkpointing, DDP; the steps reuse one host batch (the loader is measured on its
own, alone, reading files from the page cache); stage 2 reads no feature files. ``--quick``
swaps in the small demo SampleCNN (``config/model/samplecnn_demo_small.yaml``) on 1.5 s clips:
its numbers only show that every part runs.

    python benchmarks/bench_train.py --device cuda
    python benchmarks/bench_train.py --device cuda --parts stage1,data --mus-set data.root=/data/audio
    python benchmarks/bench_train.py --quick          # tiny settings, CPU, well under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("stage1", "augment", "data", "clip", "stage2")
#: --quick: the project's small SampleCNN (same layer kinds, 19,683 samples) and short clips.
QUICK_ENCODER = ROOT / "config" / "model" / "samplecnn_demo_small.yaml"
QUICK_CLIP_LENGTH = 24000  # stage-1 samples read per example (1.5 s at 16 kHz)
QUICK = {"steps": 2, "warmup": 1, "batch": 4, "clip_batch": 1}
CLIP_REFERENCE = (
    "reference: clip-retrieval reports ~1,500 images/s on an RTX 3080 (ViT-B/32 inference); "
    "target >= 3,000 frames/s on an H100"
)
#: (label, bf16 autocast, torch.compile); labels never hold two spaces in a row (table columns).
VARIANTS = (("fp32", False, False), ("bf16-mixed", True, False),
            ("fp32 + compile", False, True), ("bf16-mixed + compile", True, True))
Outcome = Union["Timing", str]  # a measurement, or why the row was skipped


_START = time.perf_counter()


def log(msg: str) -> None:
    """A progress line with the seconds since the start (plain, flushed: readable in logs and pipes)."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Arguments and configs
# --------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated subset of {','.join(PARTS)} (default all)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 20; --quick 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --quick 1)")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size of both stages and the loader "
                         "(default: each config's data.loader.batch_size; --quick 4)")
    ap.add_argument("--clip-batch", type=int, default=None,
                    help="CLIP frames per call (default 256 on cuda, 8 on cpu; --quick 1)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile on CPU (always tried on CUDA)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny settings: small batch, 2 steps, the small demo SampleCNN on 1.5 s clips, CLIP batch 1")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--mus-config", default=str(ROOT / "config" / "mus_pretrain.yaml"), help="stage-1 config")
    ap.add_argument("--vid-config", default=str(ROOT / "config" / "vid_pretrain.yaml"), help="stage-2 config")
    ap.add_argument("--mus-set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage-1 config override (repeatable)")
    ap.add_argument("--vid-set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage-2 config override (repeatable)")
    args = ap.parse_args(argv)
    device_arg = args.device

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--parts: unknown part(s) {unknown or '(none given)'}; choose from {','.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts]
    try:
        args.device = torch.device(args.device)
    except (RuntimeError, ValueError):
        args.device = None
    if args.device is None or args.device.type not in ("cpu", "cuda"):
        ap.error(f"--device: cpu, cuda or cuda:N, got {device_arg!r}")
    if args.device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                     "use --device cpu")
        if args.device.index is not None and args.device.index >= torch.cuda.device_count():
            ap.error(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s) here")
        if args.device.index is None:
            args.device = torch.device("cuda", torch.cuda.current_device())
    on_cuda = args.device.type == "cuda"
    for name, full, quick in (("steps", 20, QUICK["steps"]), ("warmup", 3, QUICK["warmup"]),
                              ("clip_batch", 256 if on_cuda else 8, QUICK["clip_batch"])):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.batch is None and args.quick:
        args.batch = QUICK["batch"]
    for name, low in (("steps", 1), ("warmup", 0), ("batch", 2), ("clip_batch", 1), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            ap.error(f"--{name.replace('_', '-')}: must be >= {low}, got {value}")
    args.compile = args.compile or on_cuda
    return args


def quick_overrides(stage: int) -> List[str]:
    """``--quick``: the small demo SampleCNN (``config/model/samplecnn_demo_small.yaml``) and short clips."""
    spec = OmegaConf.to_container(OmegaConf.load(QUICK_ENCODER))["model"]["audio_encoder"]
    out = [f"model.audio_encoder.name={spec['name']}"]
    out += [f"model.audio_encoder.args.{k}={_yaml_value(v)}" for k, v in spec["args"].items()]
    if stage == 1:
        out.append(f"data.clip_length={QUICK_CLIP_LENGTH}")
    else:
        out.append(f"data.audio_length={spec['args']['input_length']}")
    return out


def _yaml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return str(v)


def load_stage_configs(args: argparse.Namespace) -> Tuple[Optional[DictConfig], Optional[DictConfig]]:
    """The stage-1 and stage-2 configs the selected parts need (``None`` for one not needed).

    ``data.root`` defaults to ``demo`` (demo songs in a temporary folder, see :func:`bench_data`).
    A bad key or value ends the run with ``config error: ...`` (exit status 2).
    """
    from vcmr.config import cli_errors, load_config

    batch = [f"data.loader.batch_size={args.batch}"] if args.batch is not None else []
    mus = vid = None
    with cli_errors():
        if {"stage1", "augment", "data"} & set(args.parts):
            from vcmr.trainers.music import MusicPretrainConfig

            quick = quick_overrides(1) if args.quick else []
            mus = load_config(args.mus_config, ["data.root=demo", *quick, *batch, *args.mus_set], MusicPretrainConfig)
        if "stage2" in args.parts:
            from vcmr.trainers.video import VideoPretrainConfig

            quick = quick_overrides(2) if args.quick else []
            vid = load_config(args.vid_config, ["data.root=demo", *quick, *batch, *args.vid_set], VideoPretrainConfig)
    return mus, vid


def check_builds(mus: Optional[DictConfig], vid: Optional[DictConfig]) -> None:
    """Build each needed stage module once, so that a value the builders refuse (a clip shorter
    than the encoder input, a delay longer than the crop...) ends the run before any measurement,
    as ``config error: ...`` (exit status 2)."""
    if mus is not None:
        from vcmr.trainers.music import build_module_from_config

        _check(lambda: build_module_from_config(mus), "stage 1")
    if vid is not None:
        from vcmr.trainers.video import build_module_from_config as build_video

        _check(lambda: build_video(vid), "stage 2")


def _check(build: Callable[[], Any], stage: str) -> None:
    try:
        build()
    except ValueError as exc:  # vcmr.config.ConfigError is one too
        print(f"config error ({stage}): {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Seconds of each timed step, plus what was sampled around them (CUDA only)."""

    seconds: List[float]
    gpu_util: Optional[float] = None  # mean % during the timed steps
    peak_bytes: Optional[int] = None  # peak allocated device memory

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, items: int) -> float:
        """Items per second at the median step time."""
        return items / self.median


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class UtilSampler:
    """Samples ``torch.cuda.utilization()`` every 50 ms in a thread; ``mean`` is ``None`` where it
    cannot be read (no CUDA, no pynvml)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: List[float] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.ok = device.type == "cuda" and _utilization_works(device)

    def __enter__(self) -> "UtilSampler":
        if self.ok:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(float(torch.cuda.utilization(self.device)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.samples) if self.samples else None


def _utilization_works(device: torch.device) -> bool:
    try:
        torch.cuda.utilization(device)
        return True
    except Exception:  # ModuleNotFoundError (pynvml), NVML errors: reported as n/a
        return False


def measure(step: Callable[[], Any], warmup: int, steps: int, device: torch.device, desc: str) -> Timing:
    """Run ``step`` ``warmup`` times, then time ``steps`` calls (synchronised), sampling GPU use."""
    from vcmr.utils import progress_bar

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds: List[float] = []
    with UtilSampler(device) as util:
        for _ in progress_bar(range(steps), desc=desc, unit="step", leave=False):
            start = time.perf_counter()
            step()
            sync(device)
            seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Timing(seconds, util.mean, peak)


def release(device: torch.device) -> None:
    """Free what the last measurement held (modules, optimizer state, compiled graphs)."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------
# Training steps (stages 1 and 2)
# --------------------------------------------------------------------------------------


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def pinned(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.pin_memory() if device.type == "cuda" else x


class TrainStep:
    """One training step of a stage LightningModule, the way Lightning's automatic optimisation
    runs it: batch to the device, ``zero_grad``, ``training_step`` (under bf16 autocast for
    ``bf16-mixed``), ``backward``, ``optimizer.step``, the per-step schedule.

    Args:
        module: the stage module, on ``device``, in training mode.
        host_batch: the batch as the DataLoader hands it over (host memory).
        bf16: autocast to bfloat16 around ``training_step``.
        total_steps: length of the learning-rate schedule.
    """

    def __init__(self, module: Any, host_batch: Any, device: torch.device, bf16: bool, total_steps: int) -> None:
        from vcmr.trainers.optim import build_optimizer, build_scheduler

        self.module, self.host_batch, self.device, self.bf16 = module, host_batch, device, bf16
        self.optimizer = build_optimizer(module.param_groups(), module.optim_cfg)
        sched = build_scheduler(self.optimizer, module.optim_cfg, total_steps)
        self.scheduler = sched["scheduler"] if sched.get("interval") == "step" else None
        self.index = 0

    def __call__(self) -> None:
        batch = to_device(self.host_batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.module.training_step(batch, self.index)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.index += 1


def short_error(exc: BaseException) -> str:
    """``Type: first sentence of the message`` on one line, at most about 100 characters."""
    text = " ".join(str(exc).split())
    text = text.split(". ")[0]
    if len(text) > 100:
        text = text[:97].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}"


def skip_reason(args: argparse.Namespace, bf16: bool, compiled: bool) -> Optional[str]:
    if compiled and not args.compile:
        return "skipped: compile is measured on cuda, or with --compile"
    if bf16 and args.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "skipped: this GPU has no bfloat16"
    return None


def bench_steps(
    args: argparse.Namespace, tag: str, build: Callable[[], Any], compile_attrs: Sequence[str], host_batch: Any,
    seed: int,
) -> Dict[str, Outcome]:
    """Every variant of :data:`VARIANTS` for one stage: a fresh module each, from the same seed.

    Args:
        build: makes the stage module (fresh weights).
        compile_attrs: its submodules that ``torch.compile`` wraps in the compiled variants.
        host_batch: the batch the loader would hand over, in host memory.
    """
    out: Dict[str, Outcome] = {}
    for label, bf16, compiled in VARIANTS:
        reason = skip_reason(args, bf16, compiled)
        if reason is not None:
            out[label] = reason
            continue
        log(f"[{tag}] {label}: {args.warmup} warm-up + {args.steps} timed steps"
            + (" (the warm-up compiles)" if compiled else ""))
        torch.manual_seed(seed)
        module = build().to(args.device)
        module.train()
        module.on_train_start()  # the per-rank augmentation generator, as at the start of fit
        if compiled:
            for name in compile_attrs:
                getattr(module, name).compile()
        step = TrainStep(module, host_batch, args.device, bf16, args.warmup + args.steps)
        try:
            out[label] = measure(step, args.warmup, args.steps, args.device, f"{tag} {label}")
        except torch.cuda.OutOfMemoryError:
            reason = "failed: out of memory at this batch size"
            log(f"[{tag}] {label}: {reason}")
            out[label] = reason
        except Exception as exc:
            if label == "fp32":  # the baseline must run: its failure is a bug, not a finding
                raise
            reason = f"failed: {short_error(exc)}"
            log(f"[{tag}] {label}: {reason}")
            out[label] = reason
        del module, step
        release(args.device)
    return out


def demo_audio(n: int, length: int, sample_rate: int, seed: int) -> torch.Tensor:
    """``[n, 1, length]`` float32 waveforms of demo songs (:mod:`vcmr.demo.synth`), at most 8 distinct."""
    from vcmr.demo.synth import random_spec, render

    rng = np.random.default_rng(seed)
    seconds = length / sample_rate + 0.01
    songs = [render(random_spec(rng), sample_rate, seconds)[:length] for _ in range(min(n, 8))]
    return torch.from_numpy(np.stack([songs[i % len(songs)] for i in range(n)])).unsqueeze(1)


def stage1_batch(cfg: DictConfig, device: torch.device) -> torch.Tensor:
    """``[B, 1, data.clip_length]``: what the stage-1 loader hands the step."""
    b = int(cfg.data.loader.batch_size)
    return pinned(demo_audio(b, int(cfg.data.clip_length), int(cfg.data.sample_rate), int(cfg.seed)), device)


def bench_stage1(args: argparse.Namespace, cfg: DictConfig) -> Dict[str, Outcome]:
    from vcmr.trainers.music import build_module_from_config

    return bench_steps(args, "stage1", lambda: build_module_from_config(cfg), ("encoder", "projector"),
                       stage1_batch(cfg, args.device), int(cfg.seed))


def bench_augment(args: argparse.Namespace, cfg: DictConfig) -> Timing:
    """The chain alone: both views of one batch per step, as ``training_step`` draws them."""
    from vcmr.trainers.music import build_module_from_config

    log(f"[augment] {args.warmup} warm-up + {args.steps} timed batches (2 views each)")
    module = build_module_from_config(cfg).to(args.device)
    module.on_train_start()
    chain, gen, host = module.augment, module.train_generator, stage1_batch(cfg, args.device)

    def step() -> None:
        x = host.to(args.device, non_blocking=True)
        chain(x, generator=gen)
        chain(x, generator=gen)

    timing = measure(step, args.warmup, args.steps, args.device, "augment")
    module = chain = None  # frees the device memory (the closure above holds the names)
    release(args.device)
    return timing


def bench_stage2(args: argparse.Namespace, cfg: DictConfig) -> Dict[str, Outcome]:
    from vcmr.trainers.video import build_module_from_config

    b, length, sr = int(cfg.data.loader.batch_size), int(cfg.data.audio_length), int(cfg.data.sample_rate)
    name = str(cfg.model.video_encoder)
    enc_args = cfg.model.video_encoders.get(name)
    if enc_args is None or "input_dim" not in enc_args:
        raise SystemExit(f"stage 2: model.video_encoders.{name}.input_dim is needed for the synthetic CLIP features")
    seconds = max(1, round(length / sr))  # the stage-2 data's rule (vcmr.data.video_music.feature_rows)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    batch = {
        "audio": pinned(demo_audio(b, length, sr, int(cfg.seed)), args.device),
        "video": pinned(torch.randn(b, seconds, int(enc_args["input_dim"]), generator=gen), args.device),
        "video_id": [f"video{i:05d}" for i in range(b)],
    }
    return bench_steps(args, "stage2", lambda: build_module_from_config(cfg), ("model",), batch, int(cfg.seed))


# --------------------------------------------------------------------------------------
# Data supply (stage-1 DataLoader)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DataRate:
    clips_per_s: float
    workers: int
    first_batch_s: float
    batches: int
    root: str


def demo_folder(cfg: DictConfig, tmp: Path, n_files: int) -> Path:
    """``n_files`` demo songs long enough for one clip: up to 8 distinct ones from
    :func:`vcmr.demo.music.ensure_demo_music`, the rest hard links (copies where links fail) to them."""
    import shutil

    from vcmr.demo.music import ensure_demo_music

    sr = int(cfg.data.sample_rate)
    seconds = max(float(cfg.demo.song_seconds), int(cfg.data.clip_length) / sr + 1.0)
    distinct = min(n_files, 8)
    folder = ensure_demo_music(distinct, seconds, sr, seed=int(cfg.seed), root=tmp, include_broken=False)
    songs = sorted((folder / "songs").glob("*.wav"))
    (folder / "copies").mkdir(exist_ok=True)
    for k in range(n_files - distinct):
        dst = folder / "copies" / f"copy_{k:05d}.wav"
        try:
            os.link(songs[k % len(songs)], dst)
        except OSError:
            shutil.copyfile(songs[k % len(songs)], dst)
    return folder


def bench_data(args: argparse.Namespace, cfg: DictConfig) -> DataRate:
    """Clips/s the stage-1 training DataLoader delivers.

    The loader is the one training builds (:class:`AudioFolderDataModule`, ``data.loader``), with
    ``data.verify=header`` (setup only) and, on a CPU device, ``pin_memory`` off. Nothing else runs
    meanwhile: batches are taken as fast as they come. The first ``workers * prefetch_factor + 1``
    batches (or ``--warmup``, if more) are not timed: the workers' start and whatever they
    prefetched meanwhile. The rate is then counted over whole rounds of the workers (at least 5,
    or ``--steps`` batches), as batches come back in order while the workers finish them in parallel.
    """
    from vcmr.config import to_container
    from vcmr.data.audio_folder import INDEX_ENV, AudioFolderDataModule
    from vcmr.data.collate import CheckedBatch, batch_length

    loader_cfg = to_container(cfg.data.loader)
    if args.device.type != "cuda":
        loader_cfg["pin_memory"] = False
    workers, batch = int(loader_cfg["num_workers"]), int(loader_cfg["batch_size"])
    per_round = max(1, workers)
    n_timed = per_round * max(5, math.ceil(args.steps / per_round))
    backlog = workers * int(loader_cfg["prefetch_factor"] or 0) if workers > 0 else 0
    n_skip = max(args.warmup, backlog + 1)
    saved_env = os.environ.get(INDEX_ENV)
    with tempfile.TemporaryDirectory(prefix="vcmr-bench-train-") as tmp:
        root = str(cfg.data.root)
        if root == "demo":
            n_files = math.ceil((n_skip + n_timed + 1) * batch / max(0.05, 1.0 - float(cfg.data.val_fraction))) + 4
            log(f"[data] writing {n_files} demo song files to {tmp}")
            root = str(demo_folder(cfg, Path(tmp), n_files))
        dm = AudioFolderDataModule(
            root=root, sample_rate=int(cfg.data.sample_rate), clip_length=int(cfg.data.clip_length),
            val_fraction=float(cfg.data.val_fraction), extensions=list(cfg.data.extensions), verify="header",
            index_workers=int(cfg.data.index_workers), loader=loader_cfg, group_by=str(cfg.data.group_by),
            index_cache=Path(tmp) / "index",
        )
        try:
            dm.setup("fit")
        finally:
            if saved_env is None:
                os.environ.pop(INDEX_ENV, None)
            else:
                os.environ[INDEX_ENV] = saved_env
        log(f"[data] {workers} workers, batch {batch}: {n_skip} batch(es) skipped, then {n_timed} timed")

        def batches() -> Any:
            while True:  # epochs, for folders smaller than the measurement
                yield from loader

        loader = dm.train_dataloader()
        start = time.perf_counter()
        it = batches()
        next(it)
        first = time.perf_counter() - start
        for _ in range(n_skip - 1):
            next(it)
        items, t0 = 0, time.perf_counter()
        for _ in range(n_timed):
            b = next(it)
            items += batch_length(b.data if isinstance(b, CheckedBatch) else b)
        seconds = time.perf_counter() - t0
        it.close()
        it = loader = dm = None  # shuts the (persistent) workers down before the folder goes
        gc.collect()
    return DataRate(items / seconds, workers, first, n_timed, "demo (temporary)" if cfg.data.root == "demo" else root)


# --------------------------------------------------------------------------------------
# CLIP frame encoding
# --------------------------------------------------------------------------------------

CLIP_PRECISIONS = (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16))


def clip_model_name() -> str:
    """The dataset builder's open_clip model (``frames.encoders.open_clip.model_name``)."""
    cfg = OmegaConf.load(ROOT / "config" / "preprocess.yaml")
    return str(cfg.frames.encoders.open_clip.model_name)


def bench_clip(args: argparse.Namespace) -> Tuple[str, int, Dict[str, Union[Tuple[Timing, Timing], str]]]:
    """The model's name, its input size (pixels) and per precision: (the tower on normalised device
    pixels ``[B, 3, S, S]``, ``encode_frames`` from host uint8 frames ``[B, S, S, 3]``), or why skipped."""
    from vcmr.video.encoders import OpenClipEncoder

    name, dev, b = clip_model_name(), args.device, args.clip_batch
    log(f"[clip] building {name} with random weights on {dev}")
    enc = OpenClipEncoder(name, None, device=str(dev))
    s = enc.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(b, 3, s, s, generator=gen).to(dev)
    frames = torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8, generator=gen).numpy()
    out: Dict[str, Union[Tuple[Timing, Timing], str]] = {}
    for label, dtype in CLIP_PRECISIONS:
        if dtype is torch.float16 and dev.type != "cuda":
            out[label] = "skipped: fp16 is measured on cuda only"
            continue
        if dtype is torch.bfloat16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            out[label] = "skipped: this GPU has no bfloat16"
            continue
        autocast = lambda: torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731

        def tower() -> None:
            with torch.no_grad(), autocast():
                enc.encode_pixels(pixels)

        def from_frames() -> None:
            with autocast():
                enc.encode_frames(frames, b)

        log(f"[clip] {label}: {args.warmup} warm-up + {args.steps} timed batches of {b}, tower then from frames")
        out[label] = (measure(tower, args.warmup, args.steps, dev, f"clip {label} tower"),
                      measure(from_frames, args.warmup, args.steps, dev, f"clip {label} frames"))
    enc = None  # frees the device memory (the closures above hold the name)
    release(dev)
    return name, s, out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    """Columns two spaces apart (a cell never holds two spaces in a row); the first and last
    columns left-aligned, the rest right-aligned."""
    print()
    print(title)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    last = len(headers) - 1
    for r in [headers, *rows]:
        cells = [str(c).ljust(w) if i in (0, last) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells).rstrip())
    for note in notes:
        print(note)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor})"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(args: argparse.Namespace, mus: Optional[DictConfig], vid: Optional[DictConfig]) -> None:
    print("vcmr training benchmark")
    print(f"  torch {torch.__version__}, python {platform.python_version()}, "
          f"device {args.device}: {device_name(args.device)}")
    print(f"  threads: torch {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op; "
          f"{os.cpu_count()} CPU cores")
    if args.device.type == "cuda":
        print(f"  CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, float32 matmul precision "
              f"'{torch.get_float32_matmul_precision()}', cuDNN TF32 {torch.backends.cudnn.allow_tf32}, "
              f"cuDNN benchmark {torch.backends.cudnn.benchmark}")
    steps = f"{args.steps} timed step{'s' * (args.steps != 1)}"
    print(f"  parts: {','.join(args.parts)}; {args.warmup} warm-up + {steps} each"
          + ("; --quick (small demo SampleCNN, short clips)" if args.quick else ""))
    if mus is not None:
        enc = mus.model.audio_encoder.args
        print(f"  stage 1: {args.mus_config}, batch {mus.data.loader.batch_size}, clips of {mus.data.clip_length} "
              f"samples cropped to {enc.input_length} at {mus.data.sample_rate} Hz, optimizer {mus.optim.name}")
    if vid is not None:
        print(f"  stage 2: {args.vid_config}, batch {vid.data.loader.batch_size}, "
              f"audio {vid.data.audio_length} samples, "
              f"video encoder {vid.model.video_encoder}, loss {vid.loss.name}")
    sys.stdout.flush()


def step_rows(results: Dict[str, Outcome], batch: int, cuda: bool, per_step: bool) -> List[List[str]]:
    rows = []
    for label, r in results.items():
        if isinstance(r, str):
            rows.append([label, "-", "-"] + (["-"] if per_step else []) + (["-", "-"] if cuda else []) + [r])
            continue
        rate = [fmt_rate(1.0 / r.median)] if per_step else []
        rows.append([label, f"{1000 * r.median:.1f}", *rate, fmt_rate(r.rate(batch))]
                    + ([f"{r.gpu_util:.0f}%" if r.gpu_util is not None else "n/a",
                        f"{r.peak_bytes / 2**30:.2f}"] if cuda else []) + [""])
    return rows


def report(args: argparse.Namespace, mus: Optional[DictConfig], vid: Optional[DictConfig], res: Dict[str, Any]) -> None:
    cuda = args.device.type == "cuda"
    gpu_cols = ["GPU util", "peak GiB"] if cuda else []
    print()
    print("=" * 30 + " results " + "=" * 30)
    if "stage1" in res:
        b = int(mus.data.loader.batch_size)
        print_table(f"Stage 1 training step on {args.device} (batch {b}: to device, augment 2 views, forward, "
                    f"NT-Xent, backward, {mus.optim.name} step)",
                    ["variant", "ms/step", "clips/s", *gpu_cols, "note"], step_rows(res["stage1"], b, cuda, False))
    if {"augment", "data"} & set(res):
        b = int(mus.data.loader.batch_size)
        steps = {k: v for k, v in res.get("stage1", {}).items() if isinstance(v, Timing)}
        demand = max((v.rate(b) for v in steps.values()), default=None)
        rows = [[f"step consumes: {k}", fmt_rate(v.rate(b)), f"{v.rate(b) / demand:.2f}", ""] for k, v in steps.items()]
        if "augment" in res:
            rate = res["augment"].rate(b)
            note = f"{100 * demand / rate:.0f}% of the fastest step's time" if demand else ""
            rows.append([f"augmentation chain alone on {args.device} (2 views)", fmt_rate(rate),
                         f"{rate / demand:.2f}" if demand else "-", note])
        if "data" in res:
            d: DataRate = res["data"]
            verdict = ("keeps up" if d.clips_per_s >= demand else "too slow: the step waits for data") if demand else ""
            cores = os.cpu_count() or 1
            on = f" on {cores} CPU cores" if d.workers > cores else ""
            rows.append([f"data loader ({d.workers} workers{on})", fmt_rate(d.clips_per_s),
                         f"{d.clips_per_s / demand:.2f}" if demand else "-",
                         f"{verdict}; first batch after {d.first_batch_s:.1f} s".lstrip("; ")])
        print_table("Stage 1 supply and demand (clips/s; ratio = rate / the fastest step's consumption)",
                    ["source", "clips/s", "ratio", "note"], rows)
        if "data" in res:
            print(f"data: {res['data'].root}, {res['data'].batches} timed batches; files come from the page cache")
    if "clip" in res:
        name, size, rows_in = res["clip"]
        rows = []
        for label, r in rows_in.items():
            if isinstance(r, str):
                rows.append([label, "-", "-", r])
            else:
                rows.append([label, fmt_rate(r[0].rate(args.clip_batch)), fmt_rate(r[1].rate(args.clip_batch)),
                             "autocast" if label != "fp32" else ""])
        print_table(f"CLIP {name} image tower, random weights, batch {args.clip_batch} on {args.device} (frames/s)",
                    ["precision", "tower", "from frames", "note"], rows,
                    [f"tower: device pixels [B, 3, {size}, {size}] in; from frames: host uint8 frames to host "
                     "embeddings (FrameEncoder.encode_frames)", CLIP_REFERENCE])
    if "stage2" in res:
        b = int(vid.data.loader.batch_size)
        print_table(f"Stage 2 training step on {args.device} (batch {b}: to device, forward audio + video, "
                    f"{vid.loss.name}, backward, {vid.optim.name} step)",
                    ["variant", "ms/step", "steps/s", "videos/s", *gpu_cols, "note"],
                    step_rows(res["stage2"], b, cuda, True))
    if cuda and not any(isinstance(v, Timing) and v.gpu_util is not None
                        for part in ("stage1", "stage2") for v in res.get(part, {}).values()):
        print("GPU util n/a: torch.cuda.utilization() needs pynvml (pip install nvidia-ml-py)")
    sys.stdout.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        # The benchmark calls training_step outside a Trainer: its self.log calls are no-ops.
        warnings.filterwarnings("ignore", message=r".*self\.log\(\)` but the `self\.trainer` reference")
        # More loader workers than cores: the supply table says so next to the rate.
        warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker processes")
        return run(args)


def run(args: argparse.Namespace) -> int:
    """Measure the parts of ``args.parts`` in order, then print the tables."""
    mus, vid = load_stage_configs(args)
    check_builds(mus, vid)
    print_header(args, mus, vid)
    res: Dict[str, Any] = {}
    if "stage1" in args.parts:
        res["stage1"] = bench_stage1(args, mus)
    if "augment" in args.parts:
        res["augment"] = bench_augment(args, mus)
    if "data" in args.parts:
        res["data"] = bench_data(args, mus)
    if "clip" in args.parts:
        res["clip"] = bench_clip(args)
    if "stage2" in args.parts:
        res["stage2"] = bench_stage2(args, vid)
    report(args, mus, vid, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
