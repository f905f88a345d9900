"""Stage 3: supervised tagging on top of a music encoder, and ``train(cfg)``.

The tagger, its training modes (``linear``, ``mlp``, ``finetune``) and its checkpoint
format are in :mod:`vcmr.models.tagger`. What this stage adds on the shared skeleton of
:mod:`vcmr.trainers.base`:

* loss: multi-label binary cross-entropy on logits, one window per track and step; for
  single-label data (GTZAN, ``single_label``) a softmax cross-entropy (:data:`TASK_LOSSES`);
* validation/test: macro ROC-AUC and PR-AUC over tags (one window per track: centred, or
  random with ``data.val_crop: random``), logged as ``val/roc_auc`` and ``val/pr_auc``, plus
  ``val/accuracy`` for single-label data; ``val/loss`` too (the configs monitor
  ``val/pr_auc`` for checkpointing and early stopping, in the ``callbacks`` block; VCMR's
  recipe stops on ``val/loss`` and reduces the learning rate on it, ``optim.schedule: plateau``);
* optimizer groups: the head at ``optim.lr``, a trained encoder at ``model.encoder_lr``;
* after fitting, the best checkpoint is reloaded, its encoder exported to
  ``<run>/encoder.safetensors``, and ``data.subset`` scored song by song
  (:func:`vcmr.evaluation.tagging.evaluate_split`) into ``<run>/song_eval_<subset>/``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from vcmr.config import (
    CallbacksConfig,
    ComponentConfig,
    LoggerConfig,
    OptimConfig,
    OutputConfig,
    TrainerConfig,
    one_of,
    required,
    to_container,
)
from vcmr.data.tagging import TaggingData, TaggingDataConfig, TaggingDataModule, open_tagging_data
from vcmr.evaluation.tagging import ACTIVATIONS, SongEvalConfig, evaluate_split
from vcmr.metrics.classification import classification_scores
from vcmr.metrics.tagging import tagging_scores
from vcmr.models.export import save_encoder
from vcmr.models.tagger import CKPT_KEY, FROZEN_BN_MODES, Tagger, build_tagger, load_tagger
from vcmr.trainers.base import StageModule, best_checkpoint, fit, start_run
from vcmr.trainers.optim import check_schedule
from vcmr.utils import atomic_write_text, is_rank_zero, rank_zero_print


class OneHotCrossEntropy(nn.Module):
    """Softmax cross-entropy of ``[B, C]`` logits against one-hot ``[B, C]`` targets."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target.argmax(dim=1))


#: ``TaggingIndex.task`` -> training loss.
TASK_LOSSES: Dict[str, Callable[[], nn.Module]] = {
    "multilabel": nn.BCEWithLogitsLoss,
    "single_label": OneHotCrossEntropy,
}


@dataclasses.dataclass
class SupervisedModelConfig:
    """Encoder source, training mode and heads (:func:`vcmr.models.tagger.build_tagger`)."""

    audio_init: str = MISSING
    audio_encoder: ComponentConfig = dataclasses.field(default_factory=ComponentConfig)
    pool_size: int = MISSING
    mode: str = MISSING
    frozen_bn: str = required(one_of(*FROZEN_BN_MODES))
    finetune_head: str = MISSING
    heads: Dict[str, Dict[str, Any]] = MISSING
    encoder_lr: float = MISSING


@dataclasses.dataclass
class SupervisedConfig:
    """Schema of ``config/supervised.yaml``."""

    seed: int = MISSING
    resume: Optional[str] = MISSING
    data: TaggingDataConfig = dataclasses.field(default_factory=TaggingDataConfig)
    model: SupervisedModelConfig = dataclasses.field(default_factory=SupervisedModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    callbacks: CallbacksConfig = dataclasses.field(default_factory=CallbacksConfig)
    evaluation: SongEvalConfig = dataclasses.field(default_factory=SongEvalConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)


class SupervisedTagging(StageModule):
    """Wires a :class:`~vcmr.models.tagger.Tagger`, a loss and the optimizer groups.

    Args:
        tagger: encoder + head; ``tagger(x)`` gives ``[B, T]`` logits.
        loss: module ``loss(logits [B, T], targets [B, T]) -> scalar``.
        optim: :class:`~vcmr.config.OptimConfig` values (``lr`` is the head's rate).
        encoder_lr: learning rate of the encoder when it is trained.
        meta: stored in every checkpoint under ``vcmr_tagger`` (plain types only); its
            ``task`` (``multilabel`` or ``single_label``) picks the validation activation.
        tags: tag names, for the metrics and the checkpoint.
        seed: base seed of :class:`~vcmr.trainers.base.StageModule`; this stage draws no
            training-time randomness of its own (crops are drawn in the DataLoader workers).
    """

    def __init__(
        self,
        tagger: Tagger,
        loss: nn.Module,
        optim: Mapping[str, Any],
        encoder_lr: float,
        meta: Mapping[str, Any],
        tags: List[str],
        seed: int = 0,
    ) -> None:
        super().__init__(optim, seed)
        self.tagger = tagger
        self.loss = loss
        self.encoder_lr = float(encoder_lr)
        self.meta = {**dict(meta), "tags": list(tags)}
        self.tags = list(tags)
        self.task = str(self.meta.get("task", "multilabel"))
        self._activation = ACTIVATIONS[self.task]
        self._outputs: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, L]`` -> ``[B, T]`` logits."""
        return self.tagger(x)

    def _step(self, batch: Tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.tagger(x)
        loss = self.loss(logits, y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, batch_size=x.shape[0],
                 sync_dist=stage != "train", prog_bar=stage == "train")
        if stage in self._outputs:
            self._outputs[stage].append((self._activation(logits.detach()).float(), y.detach().float()))
        return loss

    def _epoch_metrics(self, stage: str) -> None:
        outputs, self._outputs[stage] = self._outputs[stage], []
        if not outputs or self.trainer.sanity_checking:
            return
        probs = torch.cat([p for p, _ in outputs])
        target = torch.cat([t for _, t in outputs])
        if self.trainer.world_size > 1:
            # Ranks may hold different counts; DistributedSampler pads evenly, so gather works.
            probs = self.all_gather(probs).reshape(-1, probs.shape[-1])
            target = self.all_gather(target).reshape(-1, target.shape[-1])
        # Every rank holds the gathered arrays, so every rank logs the same value (no sync needed).
        scores = tagging_scores(target.cpu().numpy(), probs.cpu().numpy(), self.tags)
        self.log(f"{stage}/roc_auc", scores.overall["roc_auc"])
        self.log(f"{stage}/pr_auc", scores.overall["pr_auc"], prog_bar=True)
        if self.task == "single_label":
            acc = classification_scores(target.cpu().numpy(), probs.cpu().numpy(), self.tags)["accuracy"]
            self.log(f"{stage}/accuracy", acc, prog_bar=True)

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._epoch_metrics("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._epoch_metrics("test")

    def param_groups(self) -> List[Dict[str, Any]]:
        """The head at ``optim.lr``; the encoder, when it is trained, at ``encoder_lr``."""
        groups = [{"params": [p for p in self.tagger.head.parameters() if p.requires_grad], "lr": float(self.optim_cfg["lr"])}]
        enc = [p for p in self.tagger.encoder.parameters() if p.requires_grad]
        if enc:
            groups.append({"params": enc, "lr": self.encoder_lr})
        return groups

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:  # noqa: D102
        checkpoint[CKPT_KEY] = self.meta


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train a tagger as ``cfg`` says, then score ``data.subset`` song by song.

    ``cfg.data`` must name real files: the demo set is generated and pointed at by
    :func:`vcmr.demo.tagging.prepare` beforehand.

    Returns:
        ``{"run_dir", "best_checkpoint", <monitor> (best value of callbacks.checkpoint.monitor,
        val/pr_auc in the shipped configs), "encoder_export", "song": {...}, "roc_auc", "pr_auc"}``
        where ``song`` holds the overall scores per (overlap, aggregation) and
        ``roc_auc``/``pr_auc`` those of the primary setting (first overlap, first aggregation).
    """
    check_schedule(to_container(cfg.optim))
    run_dir, ckpt_path = start_run(cfg)
    data = open_tagging_data(cfg.data)
    rank_zero_print(data.summary())
    for note in data.index.notes:
        rank_zero_print(f"  note: {note}")
    sample_rate = int(cfg.data.sample_rate)
    tags = data.index.tags
    tagger, meta = build_tagger(cfg.model, len(tags), sample_rate)
    meta["task"] = data.index.task
    module = SupervisedTagging(
        tagger, TASK_LOSSES[data.index.task](), to_container(cfg.optim), float(cfg.model.encoder_lr), meta, tags,
        int(cfg.seed),
    )
    datamodule = TaggingDataModule(
        data.index, data.store, tagger.input_length, to_container(cfg.data.loader), val_crop=str(cfg.data.val_crop)
    )
    trainer = fit(cfg, module, datamodule, run_dir, ckpt_path)

    best = best_checkpoint(trainer)
    best_score = trainer.checkpoint_callback.best_model_score
    result: Dict[str, Any] = {"run_dir": str(run_dir), "best_checkpoint": best}
    result[str(cfg.callbacks.checkpoint.monitor)] = float(best_score) if best_score is not None else float("nan")
    if not is_rank_zero():
        return result

    best_tagger, best_meta = load_tagger(best)
    export = save_encoder(
        run_dir / "encoder.safetensors", best_tagger.encoder, best_meta["encoder"]["name"],
        best_meta["encoder"]["args"], extra={"sample_rate": sample_rate, "stage": "supervised", "mode": best_meta["mode"]},
    )
    result["encoder_export"] = str(export)
    subset = str(cfg.data.subset)

    def header(evaluated: TaggingData) -> Dict[str, Any]:
        return {"checkpoint": best, "subset": subset, "data_sha256": evaluated.index.fingerprint(subset)}

    song = evaluate_split(
        best_tagger, best_meta, cfg.data, cfg.evaluation, run_dir / f"song_eval_{subset}", header, label=f"({meta['mode']})"
    )
    result["song"], result["roc_auc"], result["pr_auc"] = song["song"], song["roc_auc"], song["pr_auc"]
    if "accuracy" in song:
        result["accuracy"] = song["accuracy"]
    atomic_write_text(run_dir / "scores.json", json.dumps(result, indent=2))
    return result
