"""One trainer for the music <-> video retrieval models: VM-NET, the siamese clip matcher,
the regression baseline and VCMR's joint model.

``python -m vcmr.scripts.train_retrieval model=<name>`` picks a recipe from :data:`RECIPES`.
A recipe says which cached features it trains on, how it builds its model and loss from its
``recipes.<name>`` config block, how a batch becomes the model's inputs, and how it embeds
the evaluation set. Every recipe is scored the same way afterwards, on the validation side
of the stage-2 split rule (a hash of the video id with ``data.val_fraction``), so all models
are compared on the same videos:

* the retrieval protocol of :mod:`vcmr.evaluation.retrieval` (levels that apply to the
  model, both directions, Recall@K, median/mean rank, chance levels);
* VM-NET's own protocol (its ``eval.py``): Recall@K of track embeddings inside batches of
  ``vmnet_protocol.batch_size`` (1,000 in VM-NET; smaller on the demo) -- :func:`inbatch_recall`.

Adding a recipe
---------------
Subclass :class:`Recipe` (or :class:`PairRecipe` for a model trained on cached feature
pairs), give it an ``Args`` dataclass for its config block, and add one line to
:data:`RECIPES` and a block ``recipes.<name>`` to the config (``config/retrieval/<name>.yaml``,
included by ``config/train_retrieval.yaml``). The trainer calls, in this order:

``Recipe(args, cfg)``
    ``args``: the ``recipes.<name>`` block as a plain dict, checked against ``Args`` (errors
    name the key); ``cfg``: the whole config (``features`` blocks, ``data``, ...).
``recipe.run(ctx) -> RecipeResult``
    :class:`PairRecipe` implements it: :meth:`~PairRecipe.feature_kinds` are extracted into
    the cache where missing (:func:`vcmr.preprocess.features.extract_features`), then
    ``load_split`` (train and validation :class:`~vcmr.data.feature_cache.PairArrays`),
    ``build_model(train)`` (fits input transforms on the training split), ``build_loss()``,
    Lightning training where each batch goes ``forward_inputs(batch, stage, step, gen)`` ->
    ``model(**inputs)`` -> ``loss(**outputs)["loss"]``, the best checkpoint by
    ``val/a2v/R@1``, ``embed(model, val)`` and the export (one safetensors file,
    :func:`vcmr.models.export.save_spec_model`).

A model is any ``nn.Module`` with ``encode_audio(a, normalize=True)``,
``encode_video(v, normalize=True)``, a ``spec`` (``{"name", "args"}`` of
:data:`vcmr.models.registry.MODULES`) and ``forward(**inputs) -> dict`` = the loss's keyword
arguments. :attr:`Recipe.levels` lists the protocol levels that apply (``("track",)`` for a
model with one embedding per video).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import Tensor, nn

from vcmr.config import (
    CallbacksConfig,
    ConfigError,
    LoggerConfig,
    OptimConfig,
    OutputConfig,
    TrainerConfig,
    to_container,
)
from vcmr.data.feature_cache import FeatureTransform, PairArrays, PairDataModule, load_features
from vcmr.data.manifest import VideoRecord, read_manifest
from vcmr.metrics.retrieval import cross_modal_retrieval
from vcmr.trainers.base import StageModule, best_checkpoint, final_metrics, fit, prepare_run, seed_run
from vcmr.trainers.retrieval_ut import UTCMVMRRecipe
from vcmr.utils import atomic_write_text, hash_split, rank_zero_print

# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class RetrievalTrainDataConfig:
    """``root``: builder output folder (or ``demo``); ``val_fraction``: the stage-2 split rule's
    share of validation videos (the evaluation set); ``num_workers``: DataLoader workers."""

    root: str = MISSING
    val_fraction: float = MISSING
    num_workers: int = MISSING


@dataclasses.dataclass
class RetrievalProtocolConfig:
    """The protocol of :mod:`vcmr.evaluation.retrieval` (levels a model does not have are skipped)."""

    levels: List[str] = MISSING
    ks: List[int] = MISSING
    gallery_sizes: List[int] = MISSING
    n_galleries: int = MISSING
    seed: int = MISSING
    ties: str = MISSING


@dataclasses.dataclass
class VMNetProtocolConfig:
    """VM-NET's in-batch Recall@K: ``batch_size`` tracks per batch (VM-NET: 1000), ``ks``, shuffle ``seed``."""

    batch_size: int = MISSING
    ks: List[int] = MISSING
    seed: int = MISSING


@dataclasses.dataclass
class TrainRetrievalConfig:
    """Schema of ``config/train_retrieval.yaml``."""

    seed: int = MISSING
    resume: Optional[str] = MISSING
    model: str = MISSING
    data: RetrievalTrainDataConfig = MISSING
    demo: Dict[str, Any] = MISSING
    features: Dict[str, Dict[str, Any]] = MISSING
    recipes: Dict[str, Dict[str, Any]] = MISSING
    protocol: RetrievalProtocolConfig = MISSING
    vmnet_protocol: VMNetProtocolConfig = MISSING
    progress: bool = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    callbacks: CallbacksConfig = MISSING
    logger: LoggerConfig = MISSING
    output: OutputConfig = MISSING


def check_args(schema: Type, args: Mapping[str, Any], where: str) -> Any:
    """``args`` validated against the dataclass ``schema``; errors name ``where.<key>``."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), dict(args))
        missing = sorted(OmegaConf.missing_keys(node))
        if missing:
            raise ConfigError(f"{where}: required key(s) without a value: {', '.join(missing)}")
        return OmegaConf.to_object(node)
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf's validation errors
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{where}.{key}: {str(exc).splitlines()[0]}") from None


def effective_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the picked recipe's ``optim`` and ``trainer`` overrides merged in (what is saved and run)."""
    if cfg.model not in RECIPES:
        raise ConfigError(f"model: unknown retrieval model '{cfg.model}'; choose from {sorted(RECIPES)}")
    if cfg.model not in cfg.recipes:
        raise ConfigError(f"recipes.{cfg.model}: no config block for model '{cfg.model}'")
    block = cfg.recipes[cfg.model]
    out = OmegaConf.merge(cfg, {})
    OmegaConf.set_readonly(out, False)
    for key in ("optim", "trainer"):
        over = block.get(key) or {}
        try:
            out[key] = OmegaConf.merge(out[key], over)
        except Exception as exc:
            raise ConfigError(f"recipes.{cfg.model}.{key}: {str(exc).splitlines()[0]}") from None
    OmegaConf.set_readonly(out, True)
    return out


# --------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunContext:
    """What a recipe gets: the effective config, the dataset, the split and the run folder."""

    cfg: DictConfig
    root: Path
    records: Dict[str, VideoRecord]
    train_ids: List[str]
    val_ids: List[str]
    run_dir: Path
    ckpt_path: Optional[str]


@dataclasses.dataclass
class RecipeResult:
    """What a recipe hands back: validation embeddings and where the model went.

    ``embedded`` is a :class:`vcmr.evaluation.retrieval.EmbeddedSet` (unit rows, one per
    evaluation unit, with the video each belongs to).
    """

    embedded: Any
    export: Optional[str]
    checkpoint: Optional[str]
    metrics: Dict[str, float]
    counts: Dict[str, int]


class Recipe:
    """Base of the entries of :data:`RECIPES` (module docstring)."""

    #: Schema of the ``recipes.<name>`` block.
    Args: Type = type(None)
    #: Protocol levels that apply to the model.
    levels: Tuple[str, ...] = ("segment", "segment_to_track", "track")

    def __init__(self, name: str, args: Mapping[str, Any], cfg: DictConfig) -> None:
        self.name = name
        self.args = check_args(self.Args, args, f"recipes.{name}")
        self.cfg = cfg

    def run(self, ctx: RunContext) -> RecipeResult:  # pragma: no cover - interface
        raise NotImplementedError


@dataclasses.dataclass
class TransformArgs:
    """A fitted input transform: ``standardize``, ``pca_dim`` (``null``: none), ``l2``."""

    standardize: bool = MISSING
    pca_dim: Optional[int] = MISSING
    l2: bool = MISSING


def fit_transform(rows: np.ndarray, spec: TransformArgs, where: str) -> FeatureTransform:
    """A :class:`FeatureTransform` fitted on ``rows [N, D]`` (errors name ``where``)."""
    try:
        return FeatureTransform(spec.standardize, spec.pca_dim, spec.l2).fit(rows)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def transform_spec(spec: TransformArgs) -> Dict[str, Any]:
    return {"standardize": spec.standardize, "pca_dim": spec.pca_dim, "l2": spec.l2}


class RetrievalModule(StageModule):
    """Wires a retrieval model, its loss and its recipe's batch preparation.

    Validation logs the loss parts and the retrieval metrics of the whole validation set
    (``val/a2v/R@1`` ..., with ``val/chance/*``), from ``encode_audio``/``encode_video``.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, recipe: "PairRecipe", optim: Mapping[str, Any],
                 ks: Sequence[int], seed: int) -> None:
        super().__init__(optim, seed)
        self.model = model
        self.loss = loss
        self.recipe = recipe
        self.ks = [int(k) for k in ks]
        self._val: List[Tuple[Tensor, Tensor]] = []

    def _step(self, batch: Dict[str, Any], batch_idx: int, stage: str) -> Tensor:
        inputs = self.recipe.forward_inputs(batch, stage, int(self.global_step), self.train_generator)
        parts = self.loss(**self.model(**inputs))
        n = batch["audio"].shape[0]
        for key, value in parts.items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "loss", batch_size=n, on_step=stage == "train",
                     on_epoch=True)
        if stage == "val":
            self._val.append((self.model.encode_audio(batch["audio"]).detach().float(),
                              self.model.encode_video(batch["video"]).detach().float()))
        return parts["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        a = torch.cat([x for x, _ in self._val])
        v = torch.cat([y for _, y in self._val])
        for key, value in cross_modal_retrieval(a, v, ks=self.ks).items():
            self.log(f"val/{key}", float(value), prog_bar=key in ("a2v/R@1", "v2a/R@1"))
        self._val = []


class PairRecipe(Recipe):
    """A model trained on pairs of cached features (VM-NET, the clip matcher, the regression).

    Subclasses implement :meth:`feature_kinds`, :meth:`load_split`, :meth:`build_model`,
    :meth:`build_loss` and may override :meth:`forward_inputs`; ``Args`` must have
    ``batch_size`` (plus ``optim``/``trainer`` override blocks, merged by the trainer).
    """

    def feature_kinds(self) -> List[str]:
        """Cache kinds (:data:`vcmr.preprocess.features.EXTRACTORS`) the recipe reads."""
        raise NotImplementedError

    def load_split(self, ctx: RunContext, video_ids: Sequence[str], train: bool) -> PairArrays:
        """The pairs of ``video_ids`` (``train`` picks the training clip layout, if any)."""
        raise NotImplementedError

    def build_model(self, train: PairArrays) -> nn.Module:
        raise NotImplementedError

    def build_loss(self) -> nn.Module:
        raise NotImplementedError

    def forward_inputs(self, batch: Dict[str, Any], stage: str, step: int,
                       generator: Optional[torch.Generator]) -> Dict[str, Any]:
        """Keyword arguments of ``model.forward`` for a batch (default: ``audio`` and ``video``)."""
        return {"audio": batch["audio"], "video": batch["video"]}

    def features_of(self, kind: str) -> Dict[str, Any]:
        """The ``features.<kind>`` argument block as a dict (empty for kinds without one)."""
        return to_container(self.cfg.features[kind]) if kind in self.cfg.features else {}

    def deploy(self, ctx: RunContext) -> Dict[str, Any]:
        """The feature front ends that turn media into the model's inputs
        (:class:`vcmr.models.vmnet.MediaModel`): ``{"audio": {kind, settings}, "video": {kind,
        settings}, "clip_seconds", "video_input_dim"}``."""
        raise NotImplementedError

    def export_extra(self, ctx: RunContext) -> Dict[str, Any]:
        """What besides the weights the export records: the feature settings of each kind, the
        front ends for media input, and the frame encoder the video features came from."""
        from vcmr.trainers.video import frame_encoder_of

        return {"features": {k: self.features_of(k) for k in self.feature_kinds()}, "deploy": self.deploy(ctx),
                "frame_encoder": frame_encoder_of(str(ctx.root))}

    @torch.no_grad()
    def embed(self, model: nn.Module, pairs: PairArrays, batch_size: int = 256) -> Any:
        """Unit embeddings of every pair of ``pairs`` -> :class:`vcmr.evaluation.retrieval.EmbeddedSet`."""
        from vcmr.evaluation.retrieval import EmbeddedSet

        model.eval()
        za, zv = [], []
        for i in range(0, len(pairs), batch_size):
            za.append(model.encode_audio(torch.from_numpy(pairs.audio[i : i + batch_size])).float().numpy())
            zv.append(model.encode_video(torch.from_numpy(pairs.video[i : i + batch_size])).float().numpy())
        return EmbeddedSet(np.concatenate(za), np.concatenate(zv), pairs.track.copy(), list(pairs.track_ids))

    def ensure_features(self, ctx: RunContext) -> Dict[str, str]:
        """Extract the missing cached features of the split's videos; ``{video_id: reason}`` of failures."""
        from vcmr.preprocess.features import extract_features

        failed: Dict[str, str] = {}
        for kind in self.feature_kinds():
            if kind not in ctx.cfg.features:
                raise ConfigError(f"features.{kind}: no argument block for the '{kind}' features recipe "
                                  f"'{self.name}' reads")
            summary = extract_features(ctx.root, kind, to_container(ctx.cfg.features[kind]),
                                       progress=bool(ctx.cfg.progress), video_ids=ctx.train_ids + ctx.val_ids)
            if summary.done or summary.failures:
                rank_zero_print(summary)
            failed.update({vid: f"{kind}: {why}" for vid, why in summary.failures.items()})
        return failed

    def run(self, ctx: RunContext) -> RecipeResult:
        from vcmr.models.export import save_spec_model

        failed = self.ensure_features(ctx)
        train_ids = [v for v in ctx.train_ids if v not in failed]
        val_ids = [v for v in ctx.val_ids if v not in failed]
        train = self.load_split(ctx, train_ids, train=True)
        val = self.load_split(ctx, val_ids, train=False)
        counts = {"train_videos": len(train.track_ids), "val_videos": len(val.track_ids),
                  "train_pairs": len(train), "val_pairs": len(val), "feature_failures": len(failed)}
        rank_zero_print(f"Recipe '{self.name}': {counts}" + (f"; left out: {failed}" if failed else ""))
        model = self.build_model(train)
        module = RetrievalModule(model, self.build_loss(), self, to_container(ctx.cfg.optim),
                                 list(ctx.cfg.protocol.ks), int(ctx.cfg.seed))
        dm = PairDataModule(train, val, int(self.args.batch_size), int(ctx.cfg.data.num_workers))
        trainer = fit(ctx.cfg, module, dm, ctx.run_dir, ctx.ckpt_path)
        best = best_checkpoint(trainer)
        metrics = final_metrics(trainer)
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        model = module.model.eval()
        export = None
        if trainer.is_global_zero:
            extra = {"recipe": self.name, "stage": "retrieval", "run_dir": str(ctx.run_dir), **self.export_extra(ctx)}
            export = str(save_spec_model(ctx.run_dir / "export" / "model.safetensors", model, extra))
        return RecipeResult(self.embed(model, val), export, best, metrics, counts)


def frame_dim(ctx: RunContext) -> int:
    """Size of the builder's per-second frame features (from the manifest)."""
    dims = {int(r.feature_shape[1]) for r in ctx.records.values()}
    if len(dims) != 1:
        raise ValueError(f"data.root: {ctx.root} mixes frame-feature sizes {sorted(dims)}")
    return dims.pop()


def _require_rows(arrays: Mapping[str, np.ndarray], kind: str, ndim: int) -> None:
    for vid, a in arrays.items():
        if a.ndim != ndim:
            raise ValueError(f"cached '{kind}' features of {vid} have shape {a.shape}; expected {ndim} axes")


# --- VM-NET ---------------------------------------------------------------------------


@dataclasses.dataclass
class VMNetArgs:
    """``recipes.vmnet`` (VM-NET's defaults in ``config/retrieval/vmnet.yaml``)."""

    audio_features: str = MISSING
    video_features: str = MISSING
    audio_transform: TransformArgs = MISSING
    video_transform: TransformArgs = MISSING
    audio_hidden: List[int] = MISSING
    video_hidden: List[int] = MISSING
    embed_dim: int = MISSING
    keep_prob: float = MISSING
    activation: str = MISSING
    batch_norm: bool = MISSING
    margin: float = MISSING
    top_q: int = MISSING
    structure_k: int = MISSING
    weights: Dict[str, float] = MISSING
    batch_size: int = MISSING
    optim: Dict[str, Any] = MISSING
    trainer: Dict[str, Any] = MISSING


class VMNetRecipe(PairRecipe):
    """VM-NET: one music vector and one video-level vector per video (track level)."""

    Args = VMNetArgs
    levels = ("track",)

    def feature_kinds(self) -> List[str]:
        return [self.args.audio_features, self.args.video_features]

    def load_split(self, ctx: RunContext, video_ids: Sequence[str], train: bool) -> PairArrays:
        ids = list(video_ids)
        a = load_features(ctx.root, self.args.audio_features, ids)
        v = load_features(ctx.root, self.args.video_features, ids)
        _require_rows(a, self.args.audio_features, 1)
        _require_rows(v, self.args.video_features, 1)
        return PairArrays(np.stack([a[i] for i in ids]), np.stack([v[i] for i in ids]), np.arange(len(ids)), ids)

    def deploy(self, ctx: RunContext) -> Dict[str, Any]:
        a = self.args
        return {"audio": {"kind": a.audio_features, "settings": self.features_of(a.audio_features)},
                "video": {"kind": a.video_features, "settings": self.features_of(a.video_features)},
                "clip_seconds": None, "video_input_dim": frame_dim(ctx)}

    def build_model(self, train: PairArrays) -> nn.Module:
        from vcmr.models.vmnet import VMNet

        args = self.args
        ta = fit_transform(train.audio, args.audio_transform, f"recipes.{self.name}.audio_transform")
        tv = fit_transform(train.video, args.video_transform, f"recipes.{self.name}.video_transform")
        model = VMNet(
            audio_dim=train.audio.shape[1], video_dim=train.video.shape[1], audio_hidden=args.audio_hidden,
            video_hidden=args.video_hidden, embed_dim=args.embed_dim, dropout=1.0 - args.keep_prob,
            activation=args.activation, batch_norm=args.batch_norm,
            audio_transform=transform_spec(args.audio_transform), video_transform=transform_spec(args.video_transform),
        )
        model.audio_input.load_arrays(ta.arrays())
        model.video_input.load_arrays(tv.arrays())
        return model

    def build_loss(self) -> nn.Module:
        from vcmr.losses import IntraModalStructureLoss, TopQTripletLoss, VMNetLoss

        a = self.args
        return VMNetLoss(TopQTripletLoss(a.margin, a.top_q), IntraModalStructureLoss(a.structure_k), dict(a.weights))


# --- 10-second clip models ---------------------------------------------------------------


@dataclasses.dataclass
class ClipArgs:
    """Clip layout and per-second inputs shared by the clip matcher and the regression baseline."""

    audio_features: str = MISSING
    clip_seconds: int = MISSING
    train_hop: int = MISSING
    eval_hop: int = MISSING
    audio_transform: TransformArgs = MISSING
    video_transform: TransformArgs = MISSING
    batch_size: int = MISSING
    optim: Dict[str, Any] = MISSING
    trainer: Dict[str, Any] = MISSING


def clip_starts(n_rows: int, clip: int, hop: int) -> List[int]:
    """Starts of the clips of ``clip`` rows every ``hop`` rows that fit in ``n_rows`` (none if shorter)."""
    if clip < 1 or hop < 1:
        raise ValueError(f"clip_seconds and hops must be >= 1, got {clip} and {hop}")
    return list(range(0, n_rows - clip + 1, hop))


class ClipRecipe(PairRecipe):
    """Clips of ``clip_seconds`` per-second rows: audio from a per-second cache kind, video from
    the builder's ``features/<id>.npy`` rows (the same seconds of the kept window).

    Training clips start every ``train_hop`` seconds, evaluation clips every ``eval_hop``;
    a video shorter than one clip gives none (counted). The library's clip spans come from the
    same per-second rows (the builder path), so a clip here is what a library clip of whole
    seconds in the kept window holds.
    """

    def feature_kinds(self) -> List[str]:
        return [self.args.audio_features]

    def load_split(self, ctx: RunContext, video_ids: Sequence[str], train: bool) -> PairArrays:
        a_all = load_features(ctx.root, self.args.audio_features, list(video_ids))
        _require_rows(a_all, self.args.audio_features, 2)
        c = int(self.args.clip_seconds)
        hop = int(self.args.train_hop if train else self.args.eval_hop)
        audio, video, track, ids = [], [], [], []
        for vid in video_ids:
            rec = ctx.records[vid]
            v = np.load(ctx.root / rec.feature_path).astype(np.float32)
            a = a_all[vid]
            n = min(len(a), len(v))
            starts = clip_starts(n, c, hop)
            if not starts:
                continue
            for s in starts:
                audio.append(a[s : s + c])
                video.append(v[s : s + c])
                track.append(len(ids))
            ids.append(vid)
        if not audio:
            raise ValueError(f"recipes.{self.name}: no video of the split has {c} seconds (clip_seconds)")
        return PairArrays(np.stack(audio), np.stack(video), np.array(track), ids)

    def deploy(self, ctx: RunContext) -> Dict[str, Any]:
        a = self.args
        return {"audio": {"kind": a.audio_features, "settings": self.features_of(a.audio_features)},
                "video": {"kind": "frame_rows", "settings": {}}, "clip_seconds": int(a.clip_seconds),
                "video_input_dim": frame_dim(ctx)}

    def fitted_transforms(self, train: PairArrays) -> Tuple[FeatureTransform, FeatureTransform]:
        """Per-second transforms fitted on the rows of the training clips."""
        a = self.args
        ta = fit_transform(train.audio.reshape(-1, train.audio.shape[-1]), a.audio_transform,
                           f"recipes.{self.name}.audio_transform")
        tv = fit_transform(train.video.reshape(-1, train.video.shape[-1]), a.video_transform,
                           f"recipes.{self.name}.video_transform")
        return ta, tv


@dataclasses.dataclass
class SiameseArgs(ClipArgs):
    """``recipes.siamese``."""

    layers: List[int] = MISSING
    dropout: float = MISSING
    activation: str = MISSING
    projection_dim: Optional[int] = MISSING
    margin: float = MISSING
    l1: float = MISSING
    l2: float = MISSING
    reduction: str = MISSING


class SiameseRecipe(ClipRecipe):
    """The siamese clip matcher: contrastive loss on alternating matching / non-matching batches."""

    Args = SiameseArgs

    def build_model(self, train: PairArrays) -> nn.Module:
        from vcmr.models.siamese import SiameseMatcher

        a = self.args
        ta, tv = self.fitted_transforms(train)
        model = SiameseMatcher(
            clip_seconds=a.clip_seconds, audio_dim=train.audio.shape[-1], video_dim=train.video.shape[-1],
            layers=a.layers, dropout=a.dropout, activation=a.activation, projection_dim=a.projection_dim,
            audio_transform=transform_spec(a.audio_transform), video_transform=transform_spec(a.video_transform),
        )
        model.audio_input.load_arrays(ta.arrays())
        model.video_input.load_arrays(tv.arrays())
        return model

    def build_loss(self) -> nn.Module:
        from vcmr.losses import SiameseContrastiveLoss

        a = self.args
        return SiameseContrastiveLoss(a.margin, a.l1, a.l2, a.reduction)

    def forward_inputs(self, batch: Dict[str, Any], stage: str, step: int,
                       generator: Optional[torch.Generator]) -> Dict[str, Any]:
        """Training alternates matching and non-matching batches (:func:`vcmr.losses.contrastive_pairs`);
        validation scores matching pairs."""
        from vcmr.losses import contrastive_pairs

        n = batch["audio"].shape[0]
        idx, match = contrastive_pairs(n, step if stage == "train" else 0, generator)
        idx = idx.to(batch["video"].device)
        return {"audio": batch["audio"], "video": batch["video"][idx], "match": match.to(batch["audio"].device)}


@dataclasses.dataclass
class RegressionArgs(ClipArgs):
    """``recipes.regression``."""

    hidden: List[int] = MISSING
    dropout: float = MISSING
    activation: str = MISSING
    final_activation: str = MISSING


class RegressionRecipe(ClipRecipe):
    """The regression baseline: audio clip -> video clip features, MSE."""

    Args = RegressionArgs

    def build_model(self, train: PairArrays) -> nn.Module:
        from vcmr.models.siamese import RegressionBaseline

        a = self.args
        ta, tv = self.fitted_transforms(train)
        model = RegressionBaseline(
            clip_seconds=a.clip_seconds, audio_dim=train.audio.shape[-1], video_dim=train.video.shape[-1],
            hidden=a.hidden, dropout=a.dropout, activation=a.activation, final_activation=a.final_activation,
            audio_transform=transform_spec(a.audio_transform), video_transform=transform_spec(a.video_transform),
        )
        model.audio_input.load_arrays(ta.arrays())
        model.video_input.load_arrays(tv.arrays())
        return model

    def build_loss(self) -> nn.Module:
        from vcmr.losses import RegressionMSELoss

        return RegressionMSELoss()


# --- VCMR's joint model ------------------------------------------------------------------


@dataclasses.dataclass
class JointArgs:
    """``recipes.vcmr``: ``export`` (a stage-2 export or run folder; ``null`` trains stage 2
    with ``stage2_config`` + ``stage2_overrides`` on this data and split), ``batch_size`` and
    ``device`` of the embedding pass, and ``optim``/``trainer`` (unused: stage 2 has its own)."""

    export: Optional[str] = MISSING
    stage2_config: str = MISSING
    stage2_overrides: List[str] = MISSING
    batch_size: int = MISSING
    device: str = MISSING
    optim: Dict[str, Any] = MISSING
    trainer: Dict[str, Any] = MISSING


class JointRecipe(Recipe):
    """VCMR's joint model, trained by stage 2 (:func:`vcmr.trainers.video.train`, not re-implemented
    here) or given as an export, embedded by the evaluation protocol's own segment pass
    (:func:`vcmr.evaluation.retrieval.embed_segments`) on the validation videos."""

    Args = JointArgs

    def run(self, ctx: RunContext) -> RecipeResult:
        from vcmr.config import CONFIG_DIR, load_config
        from vcmr.evaluation.retrieval import embed_segments, resolve_device, select_segments
        from vcmr.models.export import find_model_file, load_model

        a = self.args
        checkpoint, metrics = None, {}
        if a.export is None:
            from vcmr.trainers.video import VideoPretrainConfig, train as train_stage2

            over = [*a.stage2_overrides, f"data.root={ctx.root}", f"data.val_fraction={ctx.cfg.data.val_fraction}",
                    f"output.root={ctx.run_dir}"]
            cfg2 = load_config(CONFIG_DIR / a.stage2_config if not Path(a.stage2_config).exists() else a.stage2_config,
                               over, VideoPretrainConfig)
            result = train_stage2(cfg2)
            export, checkpoint, metrics = result["exports"]["model"], result["checkpoint"], result["metrics"]
        else:
            export = str(find_model_file(a.export))
        model = load_model(export)
        sr = int(model.meta["sample_rate"])
        segments, status, n_videos = select_segments(ctx.root, sr, model.input_length, "val",
                                                     float(ctx.cfg.data.val_fraction))
        if not segments:
            raise ValueError(f"data.root: {ctx.root} has no validation segments for the joint model")
        emb = embed_segments(model, segments, sr, int(a.batch_size), resolve_device(a.device), bool(ctx.cfg.progress))
        counts = {"val_videos": n_videos, "val_pairs": len(segments)}
        return RecipeResult(emb, export, checkpoint, metrics, counts)


#: ``model=<name>`` -> recipe class (module docstring: how to add one).
RECIPES: Dict[str, Type[Recipe]] = {
    "vmnet": VMNetRecipe,
    "siamese": SiameseRecipe,
    "regression": RegressionRecipe,
    "vcmr": JointRecipe,
    "ut_cmvmr": UTCMVMRRecipe,  # rhythm/motion-aware clip sequences, many-to-one (docs/rhythm_motion.md)
}


def build_recipe(cfg: DictConfig) -> Recipe:
    """``RECIPES[cfg.model]`` built from ``cfg.recipes[cfg.model]``."""
    if cfg.model not in RECIPES:
        raise ConfigError(f"model: unknown retrieval model '{cfg.model}'; choose from {sorted(RECIPES)}")
    if cfg.model not in cfg.recipes:
        raise ConfigError(f"recipes.{cfg.model}: no config block for model '{cfg.model}'")
    return RECIPES[cfg.model](cfg.model, to_container(cfg.recipes[cfg.model]), cfg)


# --------------------------------------------------------------------------------------
# VM-NET's own protocol
# --------------------------------------------------------------------------------------


def inbatch_recall(
    audio: np.ndarray, video: np.ndarray, batch_size: int, ks: Sequence[int], seed: int
) -> Dict[str, Any]:
    """VM-NET's ``eval.py``: Recall@K of each item against the other modality inside its batch.

    The ``N`` pairs are shuffled with ``numpy.random.default_rng(seed)`` and cut into
    consecutive batches of ``B = min(batch_size, N)``; the last partial batch is dropped when
    there is more than one batch (VM-NET evaluates full batches). In each batch every music
    query ranks the ``B`` videos by cosine similarity and the reverse (ties counted
    pessimistically); scores are averaged over batches.

    Returns:
        ``{"batch_size": B, "n_batches", "m2v": {"R@k"}, "v2m": {...}, "chance": {"R@k": min(k, B) / B}}``.
    """
    from vcmr.metrics.retrieval import chance_levels

    n = int(audio.shape[0])
    if n < 2:
        raise ValueError(f"VM-NET protocol needs at least 2 pairs, got {n}")
    b = min(int(batch_size), n)
    order = np.random.default_rng(int(seed)).permutation(n)
    n_batches = max(1, n // b)
    m2v = {f"R@{k}": [] for k in ks}
    v2m = {f"R@{k}": [] for k in ks}
    for i in range(n_batches):
        sel = order[i * b : (i + 1) * b]
        r = cross_modal_retrieval(torch.from_numpy(audio[sel]), torch.from_numpy(video[sel]), ks=list(ks))
        for k in ks:
            m2v[f"R@{k}"].append(r[f"a2v/R@{k}"])
            v2m[f"R@{k}"].append(r[f"v2a/R@{k}"])
    chance = chance_levels(b, list(ks))
    return {
        "batch_size": b, "n_batches": n_batches,
        "m2v": {k: float(np.mean(v)) for k, v in m2v.items()},
        "v2m": {k: float(np.mean(v)) for k, v in v2m.items()},
        "chance": {f"R@{k}": chance[f"R@{k}"] for k in ks},
    }


def format_vmnet_table(res: Mapping[str, Any], ks: Sequence[int]) -> str:
    head = f"{'dir':<5}" + "".join(f"{'R@' + str(k):>8}" for k in ks)
    lines = [f"VM-NET protocol: in-batch recall, {res['n_batches']} batch(es) of {res['batch_size']} tracks", head]
    for name, label in (("m2v", "m2v"), ("v2m", "v2m"), ("chance", "rand")):
        lines.append(f"{label:<5}" + "".join(f"{res[name][f'R@{k}']:8.3f}" for k in ks))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def split_videos(root: Path, val_fraction: float) -> Tuple[Dict[str, VideoRecord], List[str], List[str]]:
    """The ``ok`` videos of a builder output, split by the stage-2 rule (sorted ids)."""
    records = {r.video_id: r for r in read_manifest(root) if r.status == "ok"}
    train = sorted(v for v in records if hash_split(v, val_fraction) == "train")
    val = sorted(v for v in records if hash_split(v, val_fraction) == "val")
    if len(train) < 2 or len(val) < 2:
        raise ValueError(
            f"data.root: {root} gives {len(train)} training and {len(val)} validation videos with "
            f"data.val_fraction={val_fraction}; both need at least 2"
        )
    return records, train, val


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train (or take) the model ``cfg.model`` and score it on the validation videos.

    Returns:
        ``run_dir``, ``export``, ``checkpoint``, ``protocol`` (``{level: {gallery: entry}}``),
        ``vmnet_protocol``, ``metrics`` (last logged training values), ``counts``,
        ``results_json`` and ``table`` (the printed protocol table).
    """
    from vcmr.evaluation.retrieval import evaluate_embeddings, format_table, pool_tracks

    cfg = effective_config(cfg)
    seed_run(cfg)
    recipe = build_recipe(cfg)  # a bad recipe block fails before a run folder exists
    root = Path(cfg.data.root)
    records, train_ids, val_ids = split_videos(root, float(cfg.data.val_fraction))
    run_dir, ckpt_path = prepare_run(cfg, cfg.resume)
    ctx = RunContext(cfg, root, records, train_ids, val_ids, run_dir, ckpt_path)
    result = recipe.run(ctx)
    p = cfg.protocol
    ks = [int(k) for k in p.ks]
    levels = [lv for lv in p.levels if lv in recipe.levels]
    emb = result.embedded
    protocol = evaluate_embeddings(emb, levels, ks, [int(s) for s in p.gallery_sizes], int(p.n_galleries),
                                   int(p.seed), str(p.ties))
    n_tracks = len(emb.track_ids)
    songs, videos = pool_tracks(emb.audio, emb.track, n_tracks), pool_tracks(emb.video, emb.track, n_tracks)
    vp = cfg.vmnet_protocol
    vmnet = inbatch_recall(songs, videos, int(vp.batch_size), [int(k) for k in vp.ks], int(vp.seed))
    table = format_table(protocol, ks)
    report = {
        "model": cfg.model, "export": result.export, "checkpoint": result.checkpoint,
        "data": {"root": str(root), "split": "val", "val_fraction": float(cfg.data.val_fraction),
                 "video_ids": list(emb.track_ids), **result.counts},
        "protocol": {**to_container(p), "levels": levels}, "results": protocol,
        "vmnet_protocol": {**to_container(vp), "results": vmnet},
    }
    out = Path(run_dir) / "evaluation" / "retrieval_val.json"
    atomic_write_text(out, json.dumps(report, indent=1))
    rank_zero_print(f"\nRetrieval ({cfg.model}) on {n_tracks} validation videos, {emb.audio.shape[0]} pairs:\n")
    rank_zero_print(table)
    rank_zero_print("\n" + format_vmnet_table(vmnet, [int(k) for k in vp.ks]))
    return {
        "run_dir": run_dir, "export": result.export, "checkpoint": result.checkpoint, "protocol": protocol,
        "vmnet_protocol": vmnet, "metrics": result.metrics, "counts": result.counts, "results_json": str(out),
        "table": table,
    }


__all__ = [
    "ClipRecipe", "JointRecipe", "PairRecipe", "RECIPES", "Recipe", "RecipeResult", "RegressionRecipe",
    "RetrievalModule", "RunContext", "SiameseRecipe", "TrainRetrievalConfig", "VMNetRecipe", "build_recipe",
    "clip_starts", "effective_config", "inbatch_recall", "split_videos", "train",
]
