"""Pieces every training stage shares: run folders, loggers, the Lightning Trainer."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, List, Mapping, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from vcmr.config import save_config, to_container

log = logging.getLogger("vcmr")


def is_rank_zero() -> bool:
    """True on the process that should print and write shared files."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return True


def rank_zero_print(*args: Any) -> None:
    """``print`` on global rank 0 only."""
    if is_rank_zero():
        print(*args, flush=True)


def resolve_run_dir(output: Mapping[str, Any], resume: Optional[str]) -> Path:
    """``<root>/<name>/<version>``.

    With ``version: null`` a new ``version_N`` is created, except when resuming from
    ``last``, which reuses the newest existing version. Under DDP every rank must get the
    same answer, so the folder is chosen from what exists before any rank creates one
    (Lightning launches the other ranks after the config is resolved on rank 0, passing
    ``VCMR_RUN_DIR``).
    """
    fixed = os.environ.get("VCMR_RUN_DIR")
    if fixed and not is_rank_zero():
        return Path(fixed)
    base = Path(output["root"]) / output["name"]
    if output["version"] is not None:
        return base / str(output["version"])
    existing = sorted(
        (int(m.group(1)) for p in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))),
    )
    if resume == "last" and existing:
        return base / f"version_{existing[-1]}"
    nxt = existing[-1] + 1 if existing else 0
    return base / f"version_{nxt}"


def resolve_ckpt_path(resume: Optional[str], run_dir: Path) -> Optional[str]:
    """``null`` -> fresh start; ``last`` -> ``<run_dir>/checkpoints/last.ckpt`` if present; else a path."""
    if resume is None:
        return None
    if resume == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        rank_zero_print(f"resume=last: no checkpoint at {last}; starting from scratch")
        return None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"resume: checkpoint file not found: {resume}")
    return resume


def build_logger(cfg: Mapping[str, Any], run_dir: Path) -> Any:
    """``logger.name``: ``tensorboard`` (default), ``wandb`` (honours ``WANDB_MODE=offline``), ``csv`` or ``none``."""
    name = str(cfg["name"]).lower()
    if name == "none":
        return False
    if name == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError as exc:
            raise ImportError("logger.name=wandb needs the wandb package: pip install 'vcmr[wandb]'") from exc
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(project=str(cfg["project"]), save_dir=str(run_dir), name=run_dir.parent.name)
    raise ValueError(f"logger.name: unknown logger '{cfg['name']}' (tensorboard, wandb, csv or none)")


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    monitor: str,
    mode: str,
    extra_callbacks: Optional[List[Callback]] = None,
) -> pl.Trainer:
    """A Trainer from ``cfg.trainer`` writing checkpoints to ``<run_dir>/checkpoints``.

    Keeps ``last.ckpt`` (for ``resume=last``, rewritten every epoch) and the best
    checkpoint by ``monitor``.
    """
    t = to_container(cfg.trainer)
    callbacks: List[Callback] = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="best-{epoch:03d}-{step}",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
        ),
        # A separate unmonitored callback keeps last.ckpt current every epoch (the
        # monitored one only refreshes "last" when the best checkpoint changes).
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None, save_top_k=1,
            enable_version_counter=False,
        ),
    ]
    logger = build_logger(cfg.logger, run_dir)
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if t["enable_progress_bar"]:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    callbacks.extend(extra_callbacks or [])
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
        accelerator=t["accelerator"],
        devices=t["devices"],
        num_nodes=t["num_nodes"],
        strategy=t["strategy"],
        precision=t["precision"],
        max_epochs=t["max_epochs"],
        max_steps=t["max_steps"],
        accumulate_grad_batches=t["accumulate_grad_batches"],
        gradient_clip_val=t["gradient_clip_val"],
        log_every_n_steps=t["log_every_n_steps"],
        check_val_every_n_epoch=t["check_val_every_n_epoch"],
        limit_train_batches=t["limit_train_batches"],
        limit_val_batches=t["limit_val_batches"],
        num_sanity_val_steps=t["num_sanity_val_steps"],
        deterministic=t["deterministic"],
        enable_progress_bar=t["enable_progress_bar"],
        enable_model_summary=False,
    )


def prepare_run(cfg: DictConfig, resume: Optional[str]) -> tuple[Path, Optional[str]]:
    """Pick the run folder, save the resolved config in it, and resolve the resume path."""
    run_dir = resolve_run_dir(cfg.output, resume)
    os.environ["VCMR_RUN_DIR"] = str(run_dir)  # DDP ranks spawned later reuse the same folder
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    return run_dir, resolve_ckpt_path(resume, run_dir)
