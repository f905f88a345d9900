"""Stage 2: video-conditioned music pretraining.

The music encoder (from a stage-1 export, a CLMR/VCMR checkpoint, or scratch) is
trained so that the embedding of a music crop lands near the embedding of the CLIP
features of the seconds of video it came from. The video side is a temporal encoder
(LSTM or Transformer) over per-second CLIP features. The loss is a symmetric
cross-modal InfoNCE with global-batch negatives, optionally plus a weighted music
NT-Xent term between two augmented views of each crop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

import pytorch_lightning as pl
import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from vcmr.audio.augment import AugmentConfig, build_augmentation
from vcmr.config import (
    ComponentConfig,
    DataLoaderConfig,
    LoggerConfig,
    OptimConfig,
    OutputConfig,
    TrainerConfig,
    to_container,
)
from vcmr.data.video_music import VideoMusicDataModule
from vcmr.losses import CrossModalInfoNCE, NTXentLoss, VideoMusicLoss
from vcmr.metrics.retrieval import cross_modal_retrieval
from vcmr.models import build_module
from vcmr.models.export import load_encoder_with_meta, save_encoder
from vcmr.models.projection import ProjectionHead
from vcmr.trainers.common import build_trainer, prepare_run, rank_zero_print
from vcmr.trainers.optim import build_optimizer, build_scheduler


@dataclasses.dataclass
class VideoDataConfig:
    root: str = MISSING
    sample_rate: int = MISSING
    audio_length: int = MISSING
    val_fraction: float = MISSING
    loader: DataLoaderConfig = MISSING


@dataclasses.dataclass
class ProjectionHeadsConfig:
    hidden_dim: int = MISSING
    out_dim: int = MISSING


@dataclasses.dataclass
class VideoModelConfig:
    audio_init: str = MISSING
    audio_encoder: ComponentConfig = MISSING
    freeze_blocks: int = MISSING
    video_encoder: str = MISSING
    video_encoders: Dict[str, Dict[str, Any]] = MISSING
    projection: ProjectionHeadsConfig = MISSING


@dataclasses.dataclass
class VideoLossConfig:
    temperature: float = MISSING
    learnable_temperature: bool = MISSING
    max_inverse_temperature: float = MISSING
    music_weight: float = MISSING
    music_temperature: float = MISSING
    global_negatives: bool = MISSING


@dataclasses.dataclass
class VideoPretrainConfig:
    """Schema of ``config/vid_pretrain.yaml``."""

    seed: int = MISSING
    resume: Optional[str] = MISSING
    data: VideoDataConfig = MISSING
    demo: Dict[str, Any] = MISSING
    model: VideoModelConfig = MISSING
    loss: VideoLossConfig = MISSING
    augment: AugmentConfig = MISSING
    retrieval_ks: List[int] = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    output: OutputConfig = MISSING


class VideoMusicModule(pl.LightningModule):
    """Wires the two encoders, their heads, the augmentations and the loss.

    Args:
        audio_encoder: ``[B, 1, L] -> [B, F_a]``.
        audio_projector: ``[B, F_a] -> [B, D]``.
        video_encoder: ``[B, S, F_v] -> [B, H]``.
        video_projector: ``[B, H] -> [B, D]``.
        loss: :class:`~vcmr.losses.VideoMusicLoss`.
        augment: device-side augmentation chain (length-preserving here).
        optim: the ``optim`` config block.
        retrieval_ks: Recall@K cut-offs for validation.
    """

    def __init__(
        self,
        audio_encoder: nn.Module,
        audio_projector: nn.Module,
        video_encoder: nn.Module,
        video_projector: nn.Module,
        loss: VideoMusicLoss,
        augment: nn.Module,
        optim: Mapping[str, Any],
        retrieval_ks: List[int],
        seed: int = 0,
    ):
        super().__init__()
        self.audio_encoder = audio_encoder
        self.audio_projector = audio_projector
        self.video_encoder = video_encoder
        self.video_projector = video_projector
        self.loss = loss
        self.augment = augment
        self.optim_cfg = dict(optim)
        self.retrieval_ks = list(retrieval_ks)
        self.seed = seed
        self._train_gen: Optional[torch.Generator] = None
        self._val_audio: List[torch.Tensor] = []
        self._val_video: List[torch.Tensor] = []

    def on_train_start(self) -> None:
        # Per-rank augmentation draws (a shared seed would repeat them on every rank).
        self._train_gen = torch.Generator().manual_seed(self.seed + 1_000_003 * (self.global_rank + 1))

    def encode_audio(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``[B, 1, L]`` waveform -> ``[B, D]`` joint-space embedding."""
        z = self.audio_projector(self.audio_encoder(x))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_video(self, v: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``[B, S, F]`` per-second CLIP features -> ``[B, D]`` joint-space embedding."""
        z = self.video_projector(self.video_encoder(v))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def forward(
        self, audio: torch.Tensor, video: torch.Tensor, audio_view2: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """Returns ``{"audio": [B, D], "video": [B, D]}`` (+ ``"audio_view2"``), unnormalised."""
        out = {"audio": self.encode_audio(audio, False), "video": self.encode_video(video, False)}
        if audio_view2 is not None:
            out["audio_view2"] = self.encode_audio(audio_view2, False)
        return out

    def _step(self, batch: Dict[str, Any], batch_idx: int, stage: str) -> torch.Tensor:
        x, v = batch["audio"], batch["video"]
        n = x.shape[0]
        if stage == "train":
            gen = self._train_gen
            view2 = self.augment(x, generator=gen) if self.loss.music_weight > 0 else None
            out = self(self.augment(x, generator=gen), v, view2)
            parts = self.loss(**out)
        else:
            # Validation measures the clean crops: no augmentation, cross-modal term only.
            out = self(x, v)
            parts = self.loss.cross_modal(out["audio"], out["video"])
            self._val_audio.append(out["audio"].detach().float())
            self._val_video.append(out["video"].detach().float())
        on_step = stage == "train"
        for key, value in parts.items():
            self.log(
                f"{stage}/{key}", value, prog_bar=key == "loss", batch_size=n, on_step=on_step, on_epoch=True,
                sync_dist=not on_step,
            )
        return parts["loss"]

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, batch_idx, "val")

    def on_validation_epoch_start(self) -> None:
        self._val_audio, self._val_video = [], []

    def on_validation_epoch_end(self) -> None:
        if not self._val_audio:
            return
        a = torch.cat(self._val_audio)
        v = torch.cat(self._val_video)
        if self.trainer.world_size > 1:
            # Rank the whole validation set, not each rank's share.
            a = self.all_gather(a).flatten(0, 1)
            v = self.all_gather(v).flatten(0, 1)
        metrics = cross_modal_retrieval(a, v, ks=self.retrieval_ks)
        for key, value in metrics.items():
            self.log(f"val/{key}", float(value), prog_bar=key in ("a2v/R@1", "v2a/R@1"), sync_dist=False)
        self._val_audio, self._val_video = [], []

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = build_optimizer(params, self.optim_cfg)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, self.optim_cfg, self.trainer.estimated_stepping_batches)}


def build_audio_encoder(cfg: DictConfig) -> tuple[nn.Module, str, Dict[str, Any]]:
    """The audio encoder: from ``model.audio_init`` (a file) or fresh from ``model.audio_encoder``."""
    init = cfg.model.audio_init
    if init in ("none", "scratch", ""):
        args = to_container(cfg.model.audio_encoder.args)
        return build_module(cfg.model.audio_encoder.name, args), cfg.model.audio_encoder.name, args
    encoder, meta = load_encoder_with_meta(init)
    sr = meta.get("sample_rate")
    if sr is not None and int(sr) != cfg.data.sample_rate:
        raise ValueError(f"model.audio_init: {init} was trained at {sr} Hz but data.sample_rate={cfg.data.sample_rate}")
    return encoder.train(), meta["name"], meta["args"]


def video_encoder_args(cfg: DictConfig) -> Dict[str, Any]:
    """Arguments of the video encoder that ``model.video_encoder`` picks from ``model.video_encoders``."""
    name = cfg.model.video_encoder
    if name not in cfg.model.video_encoders:
        raise ValueError(
            f"model.video_encoder: '{name}' has no argument block in model.video_encoders "
            f"(known: {sorted(cfg.model.video_encoders)})"
        )
    return to_container(cfg.model.video_encoders[name])


def build_module_from_config(cfg: DictConfig) -> tuple[VideoMusicModule, str, Dict[str, Any]]:
    """The stage-2 LightningModule, plus the audio encoder's registry name and args."""
    audio_encoder, audio_name, audio_args = build_audio_encoder(cfg)
    input_length = int(getattr(audio_encoder, "input_length", cfg.data.audio_length))
    if input_length != cfg.data.audio_length:
        raise ValueError(
            f"data.audio_length={cfg.data.audio_length} but the audio encoder takes {input_length} samples"
        )
    if cfg.model.freeze_blocks > 0:
        audio_encoder.freeze_blocks(cfg.model.freeze_blocks)
    video_encoder = build_module(cfg.model.video_encoder, video_encoder_args(cfg))
    proj = cfg.model.projection
    audio_projector = ProjectionHead(audio_encoder.output_dim, proj.hidden_dim, proj.out_dim)
    video_projector = ProjectionHead(video_encoder.output_dim, proj.hidden_dim, proj.out_dim)
    lc = cfg.loss
    cross = CrossModalInfoNCE(
        lc.temperature, lc.learnable_temperature, lc.max_inverse_temperature, gather=lc.global_negatives
    )
    music = NTXentLoss(lc.music_temperature, gather=lc.global_negatives) if lc.music_weight > 0 else None
    loss = VideoMusicLoss(cross, lc.music_weight, music)
    augment = build_augmentation(cfg.augment, cfg.data.sample_rate, input_length)
    module = VideoMusicModule(
        audio_encoder, audio_projector, video_encoder, video_projector, loss, augment,
        to_container(cfg.optim), list(cfg.retrieval_ks), seed=cfg.seed,
    )
    return module, audio_name, audio_args


def export_module(module: VideoMusicModule, cfg: DictConfig, run_dir: Any, audio_name: str, audio_args: Dict[str, Any]) -> Dict[str, str]:
    """Write the audio encoder, the video encoder and both projection heads as exports."""
    out = run_dir / "export"
    proj = cfg.model.projection
    extra = {"sample_rate": cfg.data.sample_rate, "stage": "video_pretrain", "run_dir": str(run_dir)}
    paths = {
        "audio_encoder": save_encoder(out / "audio_encoder.safetensors", module.audio_encoder, audio_name, audio_args, extra),
        "video_encoder": save_encoder(
            out / "video_encoder.safetensors", module.video_encoder, cfg.model.video_encoder,
            video_encoder_args(cfg), extra,
        ),
        "audio_projection": save_encoder(
            out / "audio_projection.safetensors", module.audio_projector, "projection",
            {"in_dim": module.audio_encoder.output_dim, "hidden_dim": proj.hidden_dim, "out_dim": proj.out_dim}, extra,
        ),
        "video_projection": save_encoder(
            out / "video_projection.safetensors", module.video_projector, "projection",
            {"in_dim": module.video_encoder.output_dim, "hidden_dim": proj.hidden_dim, "out_dim": proj.out_dim}, extra,
        ),
    }
    return {k: str(v) for k, v in paths.items()}


def resolve_data_root(cfg: DictConfig) -> str:
    """``data.root``, or the demo music-video dataset (built or reused) when it is ``demo``."""
    if cfg.data.root != "demo":
        return cfg.data.root
    from vcmr.data.demo_videos import ensure_demo_dataset

    return str(ensure_demo_dataset(**to_container(cfg.demo)))


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Run stage 2 as configured.

    Returns:
        ``run_dir``, ``checkpoint`` (best by validation a2v R@1), ``exports`` (paths),
        ``metrics`` (final logged values) and ``data`` (status counts of the manifest).
    """
    pl.seed_everything(cfg.seed, workers=True)
    module, audio_name, audio_args = build_module_from_config(cfg)
    run_dir, ckpt_path = prepare_run(cfg, cfg.resume)
    root = resolve_data_root(cfg)
    dm = VideoMusicDataModule(
        root, cfg.data.sample_rate, cfg.data.audio_length, cfg.data.val_fraction, to_container(cfg.data.loader)
    )
    dm.setup("fit")
    excluded = {k: v for k, v in dm.counts.items() if k != "ok"}
    rank_zero_print(
        f"Data: {root}\n  {dm.counts.get('ok', 0)} usable videos ({len(dm.train_segments)} training segments, "
        f"{len(dm.val_segments)} validation videos); excluded: {excluded or 'none'}"
    )
    trainer = build_trainer(cfg, run_dir, monitor="val/a2v/R@1", mode="max")
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    exports: Dict[str, str] = {}
    if trainer.is_global_zero:
        exports = export_module(module, cfg, run_dir, audio_name, audio_args)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "run_dir": run_dir,
        "checkpoint": getattr(trainer.checkpoint_callback, "best_model_path", "") or None,
        "exports": exports,
        "metrics": metrics,
        "data": dm.counts,
        "data_root": root,
    }
