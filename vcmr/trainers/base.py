"""The training skeleton every stage shares.

* run folders (``<root>/<name>/version_N``), the resolved config saved in each, ``resume``;
* loggers and callbacks built from config (registries, no branching on names);
* :class:`StageModule`: a LightningModule base that wires optimizer + schedule from the
  ``optim`` block, draws a per-rank generator for training-time randomness and routes
  train/val/test batches to one ``_step``;
* :func:`fit`: seed -> Trainer -> ``fit``; the stage files only say what is special.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    TQDMProgressBar,
)

from vcmr.config import save_config, to_container
from vcmr.data.audio_folder import RejectedFile, append_report
from vcmr.data.collate import CheckedBatch, batch_length
from vcmr.models.export import load_tensors_only
from vcmr.trainers.optim import build_optimizer, build_scheduler
from vcmr.utils import interactive, is_rank_zero, progress_interval, rank_zero_print



#: The run folder's list of files left out, at index time and (appended) during training.
REJECTED_REPORT = "rejected_files.tsv"


class TrainingDataError(RuntimeError):
    """The data cannot give one training batch, or a run ended without a training step."""


def _versions(base: Path) -> List[int]:
    return sorted(int(m.group(1)) for p in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name)))


def resolve_run_dir(output: Mapping[str, Any], resume: Optional[str]) -> Path:
    """``<root>/<name>/<version>``; nothing is created.

    With ``version: null`` the next free ``version_N`` is used, except with ``resume=last``,
    which picks the newest version that holds ``checkpoints/last.ckpt`` (a folder left by a
    run that failed before its first checkpoint is never picked). Under DDP every rank must
    get the same answer: rank 0 decides and passes it on in ``VCMR_RUN_DIR``.
    """
    fixed = os.environ.get("VCMR_RUN_DIR")
    if fixed and not is_rank_zero():
        return Path(fixed)
    base = Path(output["root"]) / output["name"]
    if output["version"] is not None:
        return base / str(output["version"])
    existing = _versions(base)
    if resume == "last":
        resumable = [v for v in existing if (base / f"version_{v}" / "checkpoints" / "last.ckpt").is_file()]
        if resumable:
            return base / f"version_{resumable[-1]}"
    nxt = existing[-1] + 1 if existing else 0
    return base / f"version_{nxt}"


def resolve_ckpt_path(resume: Optional[str], run_dir: Path) -> Optional[str]:
    """``null`` -> fresh start; ``last`` -> ``<run_dir>/checkpoints/last.ckpt`` if present; else a path.

    A checkpoint to resume from is first read tensors-only
    (:func:`vcmr.models.export.load_tensors_only`, whatever the environment says), so a file carrying pickled code is refused before Lightning opens it.
    """
    if resume is None:
        return None
    if resume == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            rank_zero_print(f"resume=last: no earlier run with a checkpoint; starting a new run in {run_dir}")
            return None
        path = last
    else:
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume: checkpoint file not found: {resume}")
    load_tensors_only(path)
    return str(path)


def _tensorboard(cfg: Mapping[str, Any], run_dir: Path) -> Any:
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")


def _csv(cfg: Mapping[str, Any], run_dir: Path) -> Any:
    from lightning_fabric.loggers.logger import rank_zero_experiment
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class KeepingWriter(ExperimentWriter):
        """Lightning's writer deletes an existing ``metrics.csv``; a resumed run (the same run
        folder) appends to it instead, widening the header when new columns appear."""

        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                import csv

                with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                    self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    class KeepingCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> ExperimentWriter:  # noqa: D102
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = KeepingWriter(log_dir=self.log_dir)
            return self._experiment

    return KeepingCSVLogger(save_dir=str(run_dir), name="csv", version="")


def _wandb(cfg: Mapping[str, Any], run_dir: Path) -> Any:
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise ImportError("logger.name=wandb needs the wandb package: pip install 'vcmr[wandb]'") from exc
    from pytorch_lightning.loggers import WandbLogger

    return WandbLogger(project=str(cfg["project"]), save_dir=str(run_dir), name=run_dir.parent.name)


#: ``logger.name`` -> factory(logger block, run folder); ``none`` logs nothing.
LOGGERS: Dict[str, Callable[[Mapping[str, Any], Path], Any]] = {
    "tensorboard": _tensorboard,
    "csv": _csv,
    "wandb": _wandb,  # honours WANDB_MODE=offline
    "none": lambda cfg, run_dir: False,
}


def build_logger(cfg: Mapping[str, Any], run_dir: Path) -> Any:
    """The logger ``LOGGERS[logger.name]`` writing under ``run_dir``."""
    name = str(cfg["name"]).lower()
    if name not in LOGGERS:
        raise ValueError(f"logger.name: unknown logger '{cfg['name']}' (choose from {sorted(LOGGERS)})")
    return LOGGERS[name](cfg, run_dir)


class LineProgressBar(ProgressBar):
    """Training progress as plain lines for logs (SLURM files, pipes): one line every
    ``interval`` seconds during an epoch (step, rate, ETA, metrics), and one after each
    validation, instead of carriage-return redraws."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = float(interval)
        self._enabled = True
        self._t0 = self._last = 0.0

    def disable(self) -> None:  # noqa: D102
        self._enabled = False

    def enable(self) -> None:  # noqa: D102
        self._enabled = True

    def _metrics(self, trainer: pl.Trainer, module: pl.LightningModule) -> str:
        items = self.get_metrics(trainer, module).items()
        return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in items if k != "v_num")

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:  # noqa: D102
        self._t0 = self._last = time.monotonic()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: D102
        now = time.monotonic()
        if not self._enabled or not is_rank_zero() or now - self._last < self.interval:
            return
        self._last = now
        done, total = batch_idx + 1, self.total_train_batches
        rate = done / max(now - self._t0, 1e-9)
        eta = f"{(total - done) / rate:.0f} s" if isinstance(total, int) and total > 0 else "?"
        print(f"epoch {trainer.current_epoch}  step {done}/{total}  {rate:.2f} it/s  epoch ETA {eta}  "
              f"{self._metrics(trainer, module)}", flush=True)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:  # noqa: D102
        if self._enabled and is_rank_zero() and not trainer.sanity_checking:
            print(f"epoch {trainer.current_epoch} validated ({time.monotonic() - self._t0:.0f} s)  "
                  f"{self._metrics(trainer, module)}", flush=True)


def build_callbacks(cfg: Mapping[str, Any], run_dir: Path, with_logger: bool, progress_bar: bool) -> List[Callback]:
    """Callbacks from the ``callbacks`` block: best checkpoint by ``checkpoint.monitor``, an
    always-current ``last.ckpt`` (for ``resume=last``), optional early stopping, the
    learning-rate monitor (when a logger is set) and the progress bar."""
    ck = cfg["checkpoint"]
    callbacks: List[Callback] = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename=str(ck["filename"]),
            monitor=str(ck["monitor"]),
            mode=str(ck["mode"]),
            save_top_k=int(ck["save_top_k"]),
        ),
        # A separate unmonitored callback keeps last.ckpt current every epoch (the
        # monitored one only refreshes "last" when the best checkpoint changes).
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None, save_top_k=1,
            enable_version_counter=False,
        ),
    ]
    es = cfg.get("early_stopping")
    if es is not None:
        callbacks.append(
            EarlyStopping(monitor=str(es["monitor"]), mode=str(es["mode"]), patience=int(es["patience"]),
                          min_delta=float(es["min_delta"]))
        )
    if with_logger and cfg["lr_monitor"]:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if progress_bar:
        # Redrawn bars on a terminal; plain lines every few seconds in logs and pipes.
        callbacks.append(TQDMProgressBar(refresh_rate=1) if interactive(sys.stdout) else LineProgressBar(progress_interval()))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """A Trainer from ``cfg.trainer``, ``cfg.logger`` and ``cfg.callbacks``, writing into ``run_dir``."""
    t = to_container(cfg.trainer)
    logger = build_logger(cfg.logger, run_dir)
    callbacks = build_callbacks(to_container(cfg.callbacks), run_dir, bool(logger), bool(t["enable_progress_bar"]))
    callbacks.extend(extra_callbacks)
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
        enable_model_summary=False,
        **t,
    )


def prepare_run(cfg: DictConfig, resume: Optional[str]) -> tuple[Path, Optional[str]]:
    """Choose the run folder and check the resume checkpoint; creates nothing (see :func:`fit`)."""
    run_dir = resolve_run_dir(cfg.output, resume)
    return run_dir, resolve_ckpt_path(resume, run_dir)


def open_run(cfg: DictConfig, run_dir: Path) -> None:
    """Create the run folder and save the resolved config in it (rank 0); spawned DDP ranks reuse it."""
    os.environ["VCMR_RUN_DIR"] = str(run_dir)
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")


def check_trainable(loader: Any, world_size: int, what: str = "training examples") -> int:
    """Number of training batches per device; raises :class:`TrainingDataError` when it is 0.

    ``loader`` is the training DataLoader (its dataset length, batch size and ``drop_last``
    decide); under DDP each of the ``world_size`` ranks gets ``ceil(n / world_size)`` items.
    """
    n = len(loader.dataset)
    per_rank = math.ceil(n / max(1, world_size))
    bs = int(loader.batch_size)
    batches = per_rank // bs if loader.drop_last else math.ceil(per_rank / bs)
    if batches == 0:
        raise TrainingDataError(
            f"{n} {what} give no full training batch of data.loader.batch_size={bs} on {world_size} device(s) "
            f"({per_rank} per device; the last partial batch is dropped so every rank sees equal batches). "
            "Lower data.loader.batch_size, use fewer devices, or add data."
        )
    return batches


class StageModule(pl.LightningModule):
    """Base of the stage LightningModules: optimizer wiring, per-rank randomness, one ``_step``.

    Args:
        optim: the ``optim`` config block (:class:`~vcmr.config.OptimConfig` values).
        seed: base seed; training-time draws (augmentations) use a generator seeded
            differently on every rank, so ranks do not repeat each other's draws.
    """

    def __init__(self, optim: Mapping[str, Any], seed: int) -> None:
        super().__init__()
        self.optim_cfg = dict(optim)
        self.seed = int(seed)
        self.train_generator: Optional[torch.Generator] = None
        #: Training steps run on data, and steps skipped because a batch had no good item.
        self.data_steps = 0
        self.skipped_steps = 0
        self._skipping = False

    def on_train_start(self) -> None:  # noqa: D102
        self.train_generator = torch.Generator().manual_seed(self.seed + 1_000_003 * (self.global_rank + 1))

    def _step(self, batch: Any, batch_idx: int, stage: str) -> torch.Tensor:
        """One batch of ``stage`` (``train``, ``val`` or ``test``); returns the loss."""
        raise NotImplementedError

    def _good_items(self, batch: Any, stage: str) -> Any:
        """The batch ``_step`` sees: a :class:`~vcmr.data.collate.CheckedBatch` is unwrapped.

        Its dropped items are counted in ``<stage>/bad_items`` (summed over the epoch and the
        ranks) and their files appended to the run's ``rejected_files.tsv`` (rank 0). Returns
        ``None`` when some rank has no good item left: every rank then skips the step (the
        losses gather across ranks, so no rank may run one alone).
        """
        if not isinstance(batch, CheckedBatch):
            return batch
        bad = list(batch.bad)
        n_bad, empty = len(bad), int(batch_length(batch.data) == 0)
        self.log(f"{stage}/bad_items", float(n_bad), on_step=False, on_epoch=True, reduce_fx="sum",
                 batch_size=1, sync_dist=True)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flags = torch.tensor([n_bad, empty], dtype=torch.long, device=self.device)
            dist.all_reduce(flags)
            if int(flags[0]) > 0:
                every: List[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(every, bad)
                bad = [item for part in every for item in part]
            empty = int(flags[1])
        if bad and self.global_rank == 0:
            self._report_bad(bad, stage)
        return None if empty else batch.data

    def _report_bad(self, bad: Sequence[Any], stage: str) -> None:
        report = Path(self.trainer.default_root_dir) / REJECTED_REPORT
        entries = [RejectedFile(b.path, f"{b.reason} ({stage}, epoch {self.current_epoch})") for b in bad]
        for entry in append_report(report, entries):
            print(f"left out of a {stage} batch: {entry.relpath}: {entry.reason} (listed in {report})", flush=True)

    def _skipped_training_step(self) -> Optional[torch.Tensor]:
        """A step without data: no backward in one process (the optimizer finds no gradient
        and leaves the weights alone). Lightning cannot skip a step under DDP: there a zero loss
        that touches every trainable parameter keeps the ranks' gradient all-reduce in step, and
        :meth:`on_after_backward` drops those zero gradients so the optimizer (momentum, weight
        decay) leaves the weights alone too."""
        self.skipped_steps += 1
        if self.trainer.world_size == 1:
            return None
        self._skipping = True
        return sum((p * 0.0).sum() for p in self.parameters() if p.requires_grad)

    def on_after_backward(self) -> None:  # noqa: D102
        if self._skipping and self.trainer.accumulate_grad_batches == 1:
            for p in self.parameters():
                p.grad = None
        self._skipping = False

    def training_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:  # noqa: D102
        batch = self._good_items(batch, "train")
        if batch is None:
            return self._skipped_training_step()
        self.data_steps += 1
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:  # noqa: D102
        batch = self._good_items(batch, "val")
        return None if batch is None else self._step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:  # noqa: D102
        batch = self._good_items(batch, "test")
        return None if batch is None else self._step(batch, batch_idx, "test")

    def param_groups(self) -> List[Dict[str, Any]]:
        """Optimizer parameter groups; by default one group of every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:  # noqa: D102
        opt = build_optimizer(self.param_groups(), self.optim_cfg)
        total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, self.optim_cfg, total)}


def seed_run(cfg: DictConfig) -> None:
    """Seed Python, NumPy and torch (and DataLoader workers) from ``cfg.seed``."""
    pl.seed_everything(int(cfg.seed), workers=True)


def start_run(cfg: DictConfig) -> tuple[Path, Optional[str]]:
    """:func:`seed_run`, then :func:`prepare_run` (run folder chosen, resume checked; nothing created)."""
    seed_run(cfg)
    return prepare_run(cfg, cfg.resume)


def fit(
    cfg: DictConfig,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    run_dir: Path,
    ckpt_path: Optional[str],
    extra_callbacks: Sequence[Callback] = (),
    before_fit: Optional[Callable[[Path], None]] = None,
) -> pl.Trainer:
    """Build the Trainer, check the data gives a batch, open the run folder, fit, check a step ran.

    The run folder is created (with ``config.yaml``) only once the config, the model and the
    data have been checked. ``before_fit(run_dir)`` writes anything else that belongs in it
    before training (rank 0 only).

    Raises:
        TrainingDataError: no full training batch per device, or training ended without an
            optimizer step; nothing is exported then.
    """
    trainer = build_trainer(cfg, run_dir, extra_callbacks)
    datamodule.setup("fit")
    check_trainable(datamodule.train_dataloader(), trainer.world_size)
    open_run(cfg, run_dir)
    if before_fit is not None and is_rank_zero():
        before_fit(run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.global_step == 0 and int(cfg.trainer.max_steps) != 0:
        raise TrainingDataError(f"training ended without a single optimizer step; see {run_dir}")
    if getattr(module, "skipped_steps", 0) and not getattr(module, "data_steps", 0):
        raise TrainingDataError(
            f"training ended without a single optimizer step on data: all {module.skipped_steps} batches held only "
            f"files that failed to decode (listed in {run_dir / REJECTED_REPORT})"
        )
    return trainer


def final_metrics(trainer: pl.Trainer) -> Dict[str, float]:
    """The last logged value of every metric, as floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def best_checkpoint(trainer: pl.Trainer) -> Optional[str]:
    """Path of the best checkpoint by the monitored metric (``None`` if none was written)."""
    return getattr(trainer.checkpoint_callback, "best_model_path", "") or None
