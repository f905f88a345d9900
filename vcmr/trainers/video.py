"""Stage 2: video-conditioned music pretraining.

The music encoder (from a stage-1 export, a CLMR/VCMR checkpoint, or scratch) is
trained so that the embedding of a music crop lands near the embedding of the CLIP
features of the seconds of video it came from. The video side is a temporal encoder
(LSTM, VCMR's LSTM + flatten, or Transformer) over per-second CLIP features. The loss
(``loss.name``) is a symmetric cross-modal InfoNCE, or VCMR's NT-Xent over the 2N x 2N
audio/video matrix, with global-batch negatives, optionally plus a weighted music NT-Xent
term between two augmented views of each crop.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
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
from vcmr.data.video_music import VideoMusicDataModule
from vcmr.losses import CrossModalInfoNCE, CrossModalNTXent, NTXentLoss, VideoMusicLoss, gather_with_grad
from vcmr.metrics.retrieval import cross_modal_retrieval
from vcmr.models.build import FROZEN_BN, build_music_video_model
from vcmr.models.export import MODEL_FILE, save_encoder, save_model
from vcmr.models.joint import MusicVideoModel
from vcmr.trainers.base import StageModule, best_checkpoint, final_metrics, fit, prepare_run, seed_run
from vcmr.utils import rank_zero_print

#: The dataset builder's record of its settings, in the data folder.
BUILDER_CONFIG = "preprocess_config.yaml"


@dataclasses.dataclass
class VideoDataConfig:
    root: str = MISSING
    sample_rate: int = required(at_least(1000))
    audio_length: int = required(at_least(1))
    val_fraction: float = required(in_range(0, 1))
    loader: DataLoaderConfig = MISSING


@dataclasses.dataclass
class ProjectionHeadsConfig:
    hidden_dim: int = MISSING
    out_dim: int = MISSING


def _cross_modal_infonce(lc: Mapping[str, Any]) -> nn.Module:
    return CrossModalInfoNCE(
        lc["temperature"], lc["learnable_temperature"], lc["max_inverse_temperature"], gather=lc["global_negatives"]
    )


def _cross_modal_ntxent(lc: Mapping[str, Any]) -> nn.Module:
    if lc["learnable_temperature"]:
        raise ValueError(
            "loss.learnable_temperature: cross_modal_ntxent has a fixed temperature (VCMR's); set it to false"
        )
    return CrossModalNTXent(lc["temperature"], gather=lc["global_negatives"])


#: ``loss.name`` -> the audio<->video term built from the ``loss`` block.
CROSS_MODAL_LOSSES: Dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "cross_modal_infonce": _cross_modal_infonce,  # symmetric CLIP-style InfoNCE, N - 1 negatives per anchor
    "cross_modal_ntxent": _cross_modal_ntxent,  # VCMR: NT-Xent over the 2N x 2N matrix, 2N - 2 negatives
}


@dataclasses.dataclass
class VideoModelConfig:
    audio_init: str = MISSING
    audio_encoder: ComponentConfig = MISSING
    freeze_blocks: int = required(at_least(0))
    frozen_bn: str = required(one_of(*FROZEN_BN))
    video_encoder: str = MISSING
    video_encoders: Dict[str, Dict[str, Any]] = MISSING
    projection: ProjectionHeadsConfig = MISSING


@dataclasses.dataclass
class VideoLossConfig:
    name: str = required(one_of(*CROSS_MODAL_LOSSES))
    temperature: float = required(above(0))
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
    callbacks: CallbacksConfig = MISSING
    logger: LoggerConfig = MISSING
    output: OutputConfig = MISSING


class VideoMusicModule(StageModule):
    """Wires the joint model, the augmentations and the loss.

    Args:
        model: :class:`~vcmr.models.joint.MusicVideoModel`; ``model(audio, video, audio_view2)``
            returns the keyword arguments of ``loss``.
        loss: :class:`~vcmr.losses.VideoMusicLoss`.
        augment: device-side augmentation chain (length-preserving here).
        optim: the ``optim`` config block.
        retrieval_ks: Recall@K cut-offs for validation.
        seed: base seed of the per-rank augmentation generators.
    """

    def __init__(
        self,
        model: MusicVideoModel,
        loss: VideoMusicLoss,
        augment: nn.Module,
        optim: Mapping[str, Any],
        retrieval_ks: List[int],
        seed: int = 0,
    ):
        super().__init__(optim, seed)
        self.model = model
        self.loss = loss
        self.augment = augment
        self.retrieval_ks = list(retrieval_ks)
        self._val_audio: List[torch.Tensor] = []
        self._val_video: List[torch.Tensor] = []

    def forward(
        self, audio: torch.Tensor, video: torch.Tensor, audio_view2: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """Returns ``{"audio": [B, D], "video": [B, D]}`` (+ ``"audio_view2"``), unnormalised."""
        return self.model(audio, video, audio_view2)

    def _step(self, batch: Dict[str, Any], batch_idx: int, stage: str) -> torch.Tensor:
        x, v = batch["audio"], batch["video"]
        n = x.shape[0]
        if stage == "train":
            gen = self.train_generator
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

    def on_validation_epoch_start(self) -> None:
        self._val_audio, self._val_video = [], []

    def on_validation_epoch_end(self) -> None:
        if not self._val_audio:
            return
        a = torch.cat(self._val_audio)
        v = torch.cat(self._val_video)
        if self.trainer.world_size > 1:
            # Rank the whole validation set, not each rank's share (ranks may hold different
            # numbers of items when a batch lost unreadable files).
            a, v = gather_with_grad(a), gather_with_grad(v)
        metrics = cross_modal_retrieval(a, v, ks=self.retrieval_ks)
        for key, value in metrics.items():
            self.log(f"val/{key}", float(value), prog_bar=key in ("a2v/R@1", "v2a/R@1"), sync_dist=False)
        self._val_audio, self._val_video = [], []


def frame_encoder_of(data_root: str) -> Optional[Dict[str, Any]]:
    """The frame encoder (``{name, args}``) and frame settings the dataset at ``data_root`` was built with.

    Read from the builder's ``preprocess_config.yaml``; ``None`` when the folder has none
    (a dataset assembled by other means).
    """
    path = Path(data_root) / BUILDER_CONFIG
    if not path.is_file():
        return None
    frames = OmegaConf.to_container(OmegaConf.load(path)).get("frames", {})
    name = frames.get("encoder")
    return {
        "name": name,
        "args": (frames.get("encoders") or {}).get(name, {}),
        "fps": frames.get("fps"),
        "normalize": frames.get("normalize"),
    }


def build_module_from_config(cfg: DictConfig) -> VideoMusicModule:
    """The stage-2 LightningModule: the joint model of ``cfg.model``, the loss and the augmentations."""
    model = build_music_video_model(cfg.model, cfg.data.sample_rate, cfg.data.audio_length)
    lc = cfg.loss
    cross = CROSS_MODAL_LOSSES[str(lc.name)](lc)
    music = NTXentLoss(lc.music_temperature, gather=lc.global_negatives) if lc.music_weight > 0 else None
    loss = VideoMusicLoss(cross, lc.music_weight, music)
    augment = build_augmentation(cfg.augment, cfg.data.sample_rate, model.input_length)
    return VideoMusicModule(model, loss, augment, to_container(cfg.optim), list(cfg.retrieval_ks), seed=cfg.seed)


def export_model(model: MusicVideoModel, cfg: DictConfig, run_dir: Path, data_root: str) -> Dict[str, str]:
    """Write ``export/model.safetensors`` (the joint model, one file) and ``export/audio_encoder.safetensors``
    (the music encoder alone, read by stage 3 and :func:`vcmr.load_encoder`)."""
    out = Path(run_dir) / "export"
    extra = {"sample_rate": cfg.data.sample_rate, "stage": "video_pretrain", "run_dir": str(run_dir)}
    spec = model.spec["audio_encoder"]
    frame_encoder = frame_encoder_of(data_root)
    paths = {
        "model": save_model(out / MODEL_FILE, model, {**extra, "frame_encoder": frame_encoder}),
        "audio_encoder": save_encoder(out / "audio_encoder.safetensors", model.audio_encoder, spec["name"], spec["args"], extra),
    }
    return {k: str(v) for k, v in paths.items()}


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Run stage 2 as configured (``data.root``: a dataset builder output folder).

    Returns:
        ``run_dir``, ``checkpoint`` (best by validation a2v R@1), ``exports`` (paths of
        ``model`` and ``audio_encoder``), ``metrics`` (final logged values), ``data`` (status
        counts of the manifest) and ``data_root``.
    """
    seed_run(cfg)
    module = build_module_from_config(cfg)  # a bad model setting fails before a run folder exists
    run_dir, ckpt_path = prepare_run(cfg, cfg.resume)
    root = cfg.data.root
    dm = VideoMusicDataModule(
        root, cfg.data.sample_rate, cfg.data.audio_length, cfg.data.val_fraction, to_container(cfg.data.loader)
    )
    dm.setup("fit")
    excluded = {k: v for k, v in dm.counts.items() if k != "ok"}
    rank_zero_print(
        f"Data: {root}\n  {dm.counts.get('ok', 0)} usable videos ({len(dm.train_segments)} training segments, "
        f"{len(dm.val_segments)} validation videos); excluded: {excluded or 'none'}"
    )
    trainer = fit(cfg, module, dm, run_dir, ckpt_path)
    exports: Dict[str, str] = {}
    if trainer.is_global_zero:
        exports = export_model(module.model, cfg, run_dir, root)
    return {
        "run_dir": run_dir,
        "checkpoint": best_checkpoint(trainer),
        "exports": exports,
        "metrics": final_metrics(trainer),
        "data": dm.counts,
        "data_root": root,
    }
