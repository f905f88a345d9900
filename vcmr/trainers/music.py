"""Stage 1: self-supervised contrastive music pretraining (SimCLR / NT-Xent on raw audio).

Each batch is a set of clips ``[B, 1, clip_length]``. On the training device, the
augmentation chain crops and augments every clip twice; the encoder and projection
head embed both views and NT-Xent pulls the two views of a clip together, with the
other clips of the *global* batch (all DDP ranks) as negatives.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from vcmr.audio.augment import AugmentConfig, build_augmentation
from vcmr.config import (
    CallbacksConfig,
    ComponentConfig,
    DataLoaderConfig,
    LoggerConfig,
    OptimConfig,
    OutputConfig,
    TrainerConfig,
    above,
    at_least,
    in_range,
    one_of,
    required,
    to_container,
)
from vcmr.data.audio_folder import AudioFolderDataModule, append_report
from vcmr.losses import NTXentLoss
from vcmr.models.build import build_component, component_spec
from vcmr.models.export import save_encoder
from vcmr.models.projection import ProjectionHead
from vcmr.trainers.base import StageModule, best_checkpoint, final_metrics, fit, prepare_run, seed_run
from vcmr.utils import rank_zero_print


@dataclasses.dataclass
class MusicDataConfig:
    root: str = MISSING
    sample_rate: int = required(at_least(1000))
    clip_length: int = required(at_least(1))
    val_fraction: float = required(in_range(0, 1))
    extensions: List[str] = MISSING
    verify: str = required(one_of("full", "header"))
    index_workers: int = required(at_least(0))
    loader: DataLoaderConfig = MISSING
    group_by: str = MISSING  # none | parent (vcmr.data.audio_folder.GROUP_KEYS)


@dataclasses.dataclass
class DemoMusicConfig:
    n_songs: int = MISSING
    song_seconds: float = MISSING


@dataclasses.dataclass
class ProjectionConfig:
    hidden_dim: int = MISSING
    out_dim: int = MISSING


@dataclasses.dataclass
class MusicModelConfig:
    audio_encoder: ComponentConfig = MISSING
    projection: ProjectionConfig = MISSING


@dataclasses.dataclass
class ContrastiveLossConfig:
    temperature: float = required(above(0))
    global_negatives: bool = MISSING


@dataclasses.dataclass
class MusicPretrainConfig:
    """Schema of ``config/mus_pretrain.yaml``."""

    seed: int = MISSING
    resume: Optional[str] = MISSING
    data: MusicDataConfig = MISSING
    demo: DemoMusicConfig = MISSING
    model: MusicModelConfig = MISSING
    loss: ContrastiveLossConfig = MISSING
    augment: AugmentConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    callbacks: CallbacksConfig = MISSING
    logger: LoggerConfig = MISSING
    output: OutputConfig = MISSING


def view_match_accuracy(z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """Share of rows whose most similar other-view embedding is their own pair (both directions).

    z_i, z_j: ``[B, D]`` embeddings of two views of the same ``B`` clips.
    """
    z_i = nn.functional.normalize(z_i.float(), dim=1)
    z_j = nn.functional.normalize(z_j.float(), dim=1)
    sim = z_i @ z_j.T
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * ((sim.argmax(1) == target).float().mean() + (sim.argmax(0) == target).float().mean())


class MusicContrastiveModule(StageModule):
    """Wires encoder, projection head, augmentations and loss; owns no hyperparameters.

    Args:
        encoder: waveform encoder ``[B, 1, T] -> [B, F]``.
        projector: head ``[B, F] -> [B, D]``.
        loss: callable ``loss(z_i=..., z_j=...) -> scalar``.
        augment: ``augment(x, generator) -> [B, 1, T]`` crop + augmentation chain.
        optim: the ``optim`` config block.
        seed: seed of the validation augmentations (same views every epoch) and base of the
            per-rank training generators.
    """

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        loss: nn.Module,
        augment: nn.Module,
        optim: Mapping[str, Any],
        seed: int,
    ):
        super().__init__(optim, seed)
        self.encoder = encoder
        self.projector = projector
        self.loss = loss
        self.augment = augment

    def forward(self, x_i: torch.Tensor, x_j: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Two views ``[B, 1, T]`` -> ``{"z_i": [B, D], "z_j": [B, D]}``."""
        return {"z_i": self.projector(self.encoder(x_i)), "z_j": self.projector(self.encoder(x_j))}

    def _step(self, batch: torch.Tensor, batch_idx: int, stage: str) -> torch.Tensor:
        if stage == "train":
            gen = self.train_generator
        else:
            gen = torch.Generator().manual_seed(self.seed + batch_idx)
        x_i = self.augment(batch, generator=gen)
        x_j = self.augment(batch, generator=gen)
        out = self(x_i, x_j)
        loss = self.loss(**out)
        n = batch.shape[0]
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=not on_step, on_step=on_step, on_epoch=True)
        if stage != "train":
            acc = view_match_accuracy(out["z_i"], out["z_j"])
            self.log(f"{stage}/view_top1", acc, prog_bar=True, batch_size=n, sync_dist=True)
        return loss


def build_module_from_config(cfg: DictConfig) -> MusicContrastiveModule:
    """The stage-1 LightningModule described by ``cfg`` (fresh weights)."""
    encoder = build_component(cfg.model.audio_encoder)
    input_length = int(getattr(encoder, "input_length"))
    if cfg.data.clip_length < input_length:
        raise ValueError(
            f"data.clip_length={cfg.data.clip_length} is shorter than the encoder input "
            f"(model.audio_encoder.args.input_length={input_length})"
        )
    projector = ProjectionHead(encoder.output_dim, cfg.model.projection.hidden_dim, cfg.model.projection.out_dim)
    loss = NTXentLoss(cfg.loss.temperature, gather=cfg.loss.global_negatives)
    augment = build_augmentation(cfg.augment, cfg.data.sample_rate, input_length)
    return MusicContrastiveModule(encoder, projector, loss, augment, to_container(cfg.optim), seed=cfg.seed)


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Run stage 1 as configured.

    Returns:
        ``run_dir``, ``checkpoint`` (best), ``last_checkpoint``, ``export`` (encoder
        ``.safetensors``), ``metrics`` (final logged values) and ``data`` (file counts).
    """
    seed_run(cfg)
    module = build_module_from_config(cfg)
    run_dir, ckpt_path = prepare_run(cfg, cfg.resume)
    root = cfg.data.root
    dm = AudioFolderDataModule(
        root=root,
        sample_rate=cfg.data.sample_rate,
        clip_length=cfg.data.clip_length,
        val_fraction=cfg.data.val_fraction,
        extensions=list(cfg.data.extensions),
        verify=cfg.data.verify,
        index_workers=cfg.data.index_workers,
        loader=to_container(cfg.data.loader),
        group_by=cfg.data.group_by,
    )
    dm.setup("fit")
    counts = dm.summary()
    rank_zero_print(
        f"Data: {root}\n  {counts['train']} train files, {counts['val']} validation files, "
        f"{counts['rejected']} rejected (listed in {run_dir / 'rejected_files.tsv'})"
    )
    for r in dm.rejected[:10]:
        rank_zero_print(f"    rejected {r.relpath}: {r.reason}")
    trainer = fit(cfg, module, dm, run_dir, ckpt_path,
                  before_fit=lambda d: append_report(d / "rejected_files.tsv", dm.rejected))

    export_path = run_dir / "export" / "encoder.safetensors"
    if trainer.is_global_zero:
        spec = component_spec(cfg.model.audio_encoder)
        save_encoder(
            export_path, module.encoder, spec["name"], spec["args"],
            extra={"sample_rate": cfg.data.sample_rate, "stage": "music_pretrain", "run_dir": str(run_dir)},
        )
    return {
        "run_dir": run_dir,
        "checkpoint": best_checkpoint(trainer),
        "last_checkpoint": str(Path(run_dir) / "checkpoints" / "last.ckpt"),
        "export": export_path,
        "metrics": final_metrics(trainer),
        "data": counts,
    }
