"""Stage 3: supervised tagging on top of a music encoder, and ``train(cfg)``.

Training modes (``model.mode``):

* ``linear``: frozen encoder (eval mode, no gradients) + one linear layer;
* ``mlp``: frozen encoder + the VCMR head (dropout, D -> hidden -> n_tags);
* ``finetune``: encoder and head trained together; the encoder has its own learning
  rate ``model.encoder_lr`` (the head uses ``optim.lr``); head named by ``model.finetune_head``.

The encoder comes from ``model.encoder``: ``scratch`` (built from ``model.scratch_encoder``,
randomly initialised) or a file :func:`vcmr.models.export.load_encoder_with_meta` reads
(a vcmr export, a CLMR or a VCMR checkpoint).

Loss: multi-label binary cross-entropy on logits. Checkpointing and early stopping
follow validation PR-AUC (``val/pr_auc``, macro over tags, one centred window per
track). After training, the best checkpoint is reloaded, its encoder exported to
``<run>/encoder.safetensors``, and the ``data.subset`` split is scored song by song
(:mod:`vcmr.evaluation`).

Checkpoints carry a ``vcmr_tagger`` entry (tags, encoder and head specs, sample rate)
so that :func:`load_tagger` rebuilds the model from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch
from omegaconf import MISSING, DictConfig
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from vcmr.config import (
    ComponentConfig,
    LoggerConfig,
    OptimConfig,
    OutputConfig,
    TrainerConfig,
    to_container,
)
from vcmr.data.tagging import AudioStore, TaggingDataConfig, TaggingDataModule, build_index, drop_unusable
from vcmr.evaluation import SongEvalConfig, evaluate_tagger, load_tag_groups, print_report, write_report
from vcmr.metrics.tagging import tagging_scores
from vcmr.models.export import load_encoder_with_meta, save_encoder
from vcmr.models.heads import Tagger, build_head
from vcmr.models.registry import build_module
from vcmr.trainers.common import build_trainer, is_rank_zero, prepare_run, rank_zero_print
from vcmr.trainers.optim import build_optimizer, build_scheduler
from vcmr.utils import atomic_write_text

MODES = ("linear", "mlp", "finetune")
CKPT_KEY = "vcmr_tagger"
CKPT_FORMAT = "tagger/1"
#: Attribute under which the LightningModule holds the tagger: state_dict keys start with it.
TAGGER_PREFIX = "tagger."
MONITOR = "val/pr_auc"


# --------------------------------------------------------------------------------------
# Config schema
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class SupervisedModelConfig:
    """Encoder source, training mode and heads."""

    encoder: str = MISSING
    scratch_encoder: ComponentConfig = dataclasses.field(default_factory=ComponentConfig)
    pool_size: int = MISSING
    mode: str = MISSING
    finetune_head: str = MISSING
    heads: Dict[str, Dict[str, Any]] = MISSING
    encoder_lr: float = MISSING


@dataclasses.dataclass
class EarlyStoppingConfig:
    """Stop when ``val/pr_auc`` has not improved by ``min_delta`` for ``patience`` validations."""

    patience: int = MISSING
    min_delta: float = MISSING


@dataclasses.dataclass
class SupervisedConfig:
    """Schema of ``config/supervised.yaml``."""

    seed: int = MISSING
    resume: Optional[str] = MISSING
    data: TaggingDataConfig = dataclasses.field(default_factory=TaggingDataConfig)
    model: SupervisedModelConfig = dataclasses.field(default_factory=SupervisedModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    evaluation: SongEvalConfig = dataclasses.field(default_factory=SongEvalConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)


# --------------------------------------------------------------------------------------
# Model building
# --------------------------------------------------------------------------------------


def build_encoder(model_cfg: Mapping[str, Any], sample_rate: int) -> Tuple[nn.Module, Dict[str, Any]]:
    """The encoder named by ``model.encoder`` and its ``{"name", "args"}`` spec.

    Raises:
        ValueError: an export recorded a sample rate other than ``data.sample_rate``.
    """
    source = str(model_cfg["encoder"])
    if source == "scratch":
        spec = {"name": str(model_cfg["scratch_encoder"]["name"]), "args": to_container(model_cfg["scratch_encoder"]["args"])}
        return build_module(spec["name"], spec["args"]), spec
    module, meta = load_encoder_with_meta(source, pool_size=int(model_cfg["pool_size"]))
    sr = meta.get("sample_rate")
    if sr is not None and int(sr) != int(sample_rate):
        raise ValueError(
            f"model.encoder: {source} was trained at {sr} Hz but data.sample_rate={sample_rate}; "
            "set data.sample_rate to match the encoder"
        )
    return module, {"name": meta["name"], "args": meta["args"]}


def build_tagger(
    model_cfg: Mapping[str, Any], n_tags: int, sample_rate: int
) -> Tuple[Tagger, Dict[str, Any]]:
    """Encoder + head for ``model.mode``; returns the tagger and its checkpoint metadata."""
    mode = str(model_cfg["mode"])
    if mode not in MODES:
        raise ValueError(f"model.mode: unknown mode '{mode}'; choose from {MODES}")
    encoder, enc_spec = build_encoder(model_cfg, sample_rate)
    head_name = mode if mode != "finetune" else str(model_cfg["finetune_head"])
    heads = to_container(model_cfg["heads"])
    if head_name not in heads:
        raise ValueError(f"model.heads: no arguments for head '{head_name}' (have {sorted(heads)})")
    head_args = dict(heads[head_name] or {})
    head = build_head(head_name, int(encoder.output_dim), n_tags, head_args)
    tagger = Tagger(encoder, head, freeze_encoder=(mode != "finetune"))
    meta = {
        "format": CKPT_FORMAT,
        "encoder": enc_spec,
        "head": {"name": head_name, "args": head_args},
        "mode": mode,
        "sample_rate": int(sample_rate),
        "n_tags": int(n_tags),
    }
    return tagger, meta


# --------------------------------------------------------------------------------------
# LightningModule
# --------------------------------------------------------------------------------------


class SupervisedTagging(pl.LightningModule):
    """Wires a :class:`~vcmr.models.heads.Tagger`, a loss and the optimizer.

    Args:
        tagger: encoder + head; ``tagger(x)`` gives ``[B, T]`` logits.
        loss: module ``loss(logits [B, T], targets [B, T]) -> scalar``.
        optim: :class:`~vcmr.config.OptimConfig` values (``lr`` is the head's rate).
        encoder_lr: learning rate of the encoder when it is trained.
        meta: stored in every checkpoint under ``vcmr_tagger`` (plain types only).
        tags: tag names, for logging per-tag metrics and the checkpoint.
    """

    def __init__(
        self,
        tagger: Tagger,
        loss: nn.Module,
        optim: Mapping[str, Any],
        encoder_lr: float,
        meta: Mapping[str, Any],
        tags: List[str],
    ) -> None:
        super().__init__()
        self.tagger = tagger
        self.loss = loss
        self.optim_cfg = dict(optim)
        self.encoder_lr = float(encoder_lr)
        self.meta = {**dict(meta), "tags": list(tags)}
        self.tags = list(tags)
        self._outputs: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, L]`` -> ``[B, T]`` logits."""
        return self.tagger(x)

    def _step(self, batch: Tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.tagger(x)
        loss = self.loss(logits, y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, batch_size=x.shape[0],
                 sync_dist=stage != "train", prog_bar=stage == "train")
        if stage in self._outputs:
            self._outputs[stage].append((torch.sigmoid(logits.detach()).float(), y.detach().float()))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:  # noqa: D102
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:  # noqa: D102
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:  # noqa: D102
        return self._step(batch, "test")

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

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._epoch_metrics("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._epoch_metrics("test")

    def configure_optimizers(self):  # noqa: D102
        groups = [{"params": [p for p in self.tagger.head.parameters() if p.requires_grad], "lr": float(self.optim_cfg["lr"])}]
        enc = [p for p in self.tagger.encoder.parameters() if p.requires_grad]
        if enc:
            groups.append({"params": enc, "lr": self.encoder_lr})
        optimizer = build_optimizer(groups, self.optim_cfg)
        total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, self.optim_cfg, total)}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:  # noqa: D102
        checkpoint[CKPT_KEY] = self.meta


# --------------------------------------------------------------------------------------
# Loading a trained tagger
# --------------------------------------------------------------------------------------


def find_checkpoint(path: str | Path) -> Path:
    """A ``.ckpt`` file, or a run folder (its ``checkpoints/best-*.ckpt``, else ``last.ckpt``)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        best = sorted(folder.glob("best-*.ckpt"), key=lambda f: f.stat().st_mtime)
        if best:
            return best[-1]
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
        raise FileNotFoundError(f"{p}: no best-*.ckpt or last.ckpt in {folder}")
    raise FileNotFoundError(f"checkpoint: {p} does not exist")


def load_tagger(path: str | Path) -> Tuple[Tagger, Dict[str, Any]]:
    """Rebuild a trained tagger from a checkpoint written by :func:`train`.

    Returns:
        ``(tagger, meta)`` in eval mode; ``meta`` has ``tags``, ``encoder``, ``head``,
        ``mode``, ``sample_rate`` and ``path`` (the checkpoint file read).
    """
    ckpt_path = find_checkpoint(path)
    try:
        ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{ckpt_path}: cannot be read as a tensors-only checkpoint ({exc})") from exc
    meta = ckpt.get(CKPT_KEY) if isinstance(ckpt, Mapping) else None
    if not meta or meta.get("format") != CKPT_FORMAT:
        raise ValueError(f"{ckpt_path}: not a supervised tagging checkpoint (no '{CKPT_KEY}' entry)")
    encoder = build_module(meta["encoder"]["name"], meta["encoder"]["args"])
    head = build_head(meta["head"]["name"], int(encoder.output_dim), len(meta["tags"]), meta["head"]["args"])
    tagger = Tagger(encoder, head, freeze_encoder=meta["mode"] != "finetune")
    state = {k[len(TAGGER_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(TAGGER_PREFIX)}
    tagger.load_state_dict(state, strict=True)
    return tagger.eval(), {**meta, "path": str(ckpt_path)}


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train a tagger as ``cfg`` says, then score ``data.subset`` song by song.

    Returns:
        ``{"run_dir", "best_checkpoint", "encoder_export", "val/pr_auc" (best), "song": {...},
        "roc_auc", "pr_auc"}`` where ``song`` holds the overall scores per (overlap, aggregation)
        and ``roc_auc``/``pr_auc`` of the primary setting (first overlap, first aggregation).
    """
    pl.seed_everything(int(cfg.seed), workers=True)
    sample_rate = int(cfg.data.sample_rate)
    index = build_index(cfg.data)
    store = AudioStore(index.audio_root, sample_rate, cfg.data.cache.dir)
    index, report = drop_unusable(index, store)
    rank_zero_print(
        f"{index.name}: {len(index.tags)} tags; "
        + ", ".join(f"{s} {len(t)} tracks" for s, t in index.splits.items())
        + f" ({report.summary()})"
    )
    for note in index.notes:
        rank_zero_print(f"  note: {note}")
    tagger, meta = build_tagger(cfg.model, len(index.tags), sample_rate)
    module = SupervisedTagging(
        tagger, nn.BCEWithLogitsLoss(), to_container(cfg.optim), float(cfg.model.encoder_lr), meta, index.tags
    )
    datamodule = TaggingDataModule(index, store, tagger.input_length, to_container(cfg.data.loader))

    run_dir, ckpt_path = prepare_run(cfg, cfg.resume)
    stopper = EarlyStopping(
        monitor=MONITOR, mode="max", patience=int(cfg.early_stopping.patience),
        min_delta=float(cfg.early_stopping.min_delta),
    )
    trainer = build_trainer(cfg, run_dir, monitor=MONITOR, mode="max", extra_callbacks=[stopper])
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    ckpt_cb = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    result: Dict[str, Any] = {"run_dir": str(run_dir), "best_checkpoint": best}
    best_score = ckpt_cb.best_model_score
    result[MONITOR] = float(best_score) if best_score is not None else float("nan")
    if not is_rank_zero():
        return result

    best_tagger, best_meta = load_tagger(best)
    export = save_encoder(
        run_dir / "encoder.safetensors", best_tagger.encoder, best_meta["encoder"]["name"],
        best_meta["encoder"]["args"], extra={"sample_rate": sample_rate, "stage": "supervised", "mode": best_meta["mode"]},
    )
    result["encoder_export"] = str(export)
    subset = str(cfg.data.subset)
    groups = load_tag_groups(cfg.evaluation.tag_groups, index.tags)
    song = evaluate_tagger(
        best_tagger, index.splits[subset], store, index.tags, to_container(cfg.evaluation), groups,
        device="cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu",
    )
    out_dir = run_dir / f"song_eval_{subset}"
    write_report(
        song, out_dir, header={"checkpoint": best, "subset": subset, "data_sha256": index.fingerprint(subset)},
        chart=bool(cfg.evaluation.chart),
    )
    print_report(song, title=f"{index.name} {subset}: song-level scores ({meta['mode']})")
    result["song"] = {k: v["overall"] for k, v in song["results"].items()}
    primary = song["results"][song["primary"]]["overall"]
    result["roc_auc"], result["pr_auc"] = primary["roc_auc"], primary["pr_auc"]
    atomic_write_text(run_dir / "scores.json", json.dumps(result, indent=2))
    return result
