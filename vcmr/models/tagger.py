"""The stage-3 tagger (a music encoder + a tagging head), how it is built from config, and
the checkpoint format both training and evaluation read.

Training modes (``model.mode``):

* ``linear``: frozen encoder (eval mode, no gradients) + one linear layer;
* ``mlp``: frozen encoder + the VCMR head (dropout, D -> hidden -> n_tags);
* ``finetune``: encoder and head trained together; head named by ``model.finetune_head``.

The encoder comes from ``model.audio_init``: ``scratch`` (built from ``model.audio_encoder``,
randomly initialised) or a file :func:`vcmr.models.build.build_audio_encoder` reads (a vcmr
export, a CLMR or a VCMR checkpoint).

Checkpoint format (``tagger/1``): a Lightning checkpoint whose ``state_dict`` holds the
tagger's weights under ``tagger.`` and whose ``vcmr_tagger`` entry holds plain metadata
(``format``, ``encoder`` and ``head`` specs, ``mode``, ``sample_rate``, ``n_tags``,
``tags``), so :func:`load_tagger` rebuilds the model from the file alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from vcmr.config import to_container
from vcmr.models.build import build_audio_encoder
from vcmr.models.export import load_encoder_with_meta, load_tensors_only
from vcmr.models.heads import build_head
from vcmr.models.registry import build_module

MODES = ("linear", "mlp", "finetune")
CKPT_KEY = "vcmr_tagger"
CKPT_FORMAT = "tagger/1"
#: Attribute under which the training LightningModule holds the tagger: state_dict keys start with it.
TAGGER_PREFIX = "tagger."


#: ``model.frozen_bn`` values: a frozen encoder's batch norms stay in eval mode (``eval``), or
#: follow the tagger's mode and keep updating their statistics in training (``train``: VCMR's
#: stage 3, where Lightning puts the whole module, frozen encoder included, in train mode).
FROZEN_BN_MODES = ("eval", "train")


class Tagger(nn.Module):
    """Encoder + head. With ``freeze_encoder`` the encoder gets no gradients and stays in
    eval mode (batch-norm statistics frozen), as a linear probe requires.

    Args:
        encoder: module mapping ``[B, 1, L]`` waveforms to ``[B, D]``; must expose
            ``input_length`` (L, samples) and ``output_dim`` (D).
        head: module mapping ``[B, D]`` to ``[B, n_tags]`` logits.
        freeze_encoder: keep the encoder fixed.
        frozen_bn: ``eval`` (default) or ``train``: whether a frozen encoder's batch norms
            keep their statistics or update them in training (:data:`FROZEN_BN_MODES`).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze_encoder: bool, frozen_bn: str = "eval") -> None:
        super().__init__()
        if frozen_bn not in FROZEN_BN_MODES:
            raise ValueError(f"model.frozen_bn: must be one of {FROZEN_BN_MODES}, got '{frozen_bn}'")
        self.encoder = encoder
        self.head = head
        self.freeze_encoder = bool(freeze_encoder)
        self.frozen_bn = frozen_bn
        if self.freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            if frozen_bn == "eval":
                self.encoder.eval()

    @property
    def input_length(self) -> int:
        """Samples per window the encoder takes."""
        return int(self.encoder.input_length)

    def train(self, mode: bool = True) -> "Tagger":
        super().train(mode)
        if self.freeze_encoder and self.frozen_bn == "eval":
            self.encoder.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, L]`` waveform -> ``[B, D]`` encoder output."""
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, L]`` waveform -> ``[B, n_tags]`` logits."""
        return self.head(self.embed(x))


def _assemble(encoder: nn.Module, head: Mapping[str, Any], n_tags: int, mode: str, frozen_bn: str = "eval") -> Tagger:
    """``encoder`` + the head ``{name, args}`` sized for it; frozen unless ``finetune``."""
    return Tagger(
        encoder, build_head(head["name"], int(encoder.output_dim), n_tags, head["args"]),
        freeze_encoder=mode != "finetune", frozen_bn=frozen_bn,
    )


def build_tagger(model_cfg: Mapping[str, Any], n_tags: int, sample_rate: int) -> Tuple[Tagger, Dict[str, Any]]:
    """Encoder + head for ``model.mode``; returns the tagger and its checkpoint metadata.

    Args:
        model_cfg: the ``model`` block (``audio_init``, ``audio_encoder``, ``pool_size``,
            ``mode``, ``finetune_head``, ``heads``).
        n_tags: number of outputs.
        sample_rate: Hz of the data; an encoder file recording another rate is refused.

    Returns:
        ``(tagger, meta)``; ``meta`` is the ``vcmr_tagger`` checkpoint entry without ``tags``.
    """
    mode = str(model_cfg["mode"])
    if mode not in MODES:
        raise ValueError(f"model.mode: unknown mode '{mode}'; choose from {MODES}")
    encoder, enc_spec = build_audio_encoder(
        model_cfg["audio_init"], model_cfg["audio_encoder"], sample_rate, pool_size=int(model_cfg["pool_size"])
    )
    head_name = mode if mode != "finetune" else str(model_cfg["finetune_head"])
    heads = to_container(model_cfg["heads"])
    if head_name not in heads:
        raise ValueError(f"model.heads: no arguments for head '{head_name}' (have {sorted(heads)})")
    head = {"name": head_name, "args": dict(heads[head_name] or {})}
    frozen_bn = str(model_cfg.get("frozen_bn", "eval"))
    meta = {
        "format": CKPT_FORMAT,
        "encoder": enc_spec,
        "head": head,
        "mode": mode,
        "sample_rate": int(sample_rate),
        "n_tags": int(n_tags),
        "frozen_bn": frozen_bn,
    }
    return _assemble(encoder, head, n_tags, mode, frozen_bn), meta


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
    """Rebuild a trained tagger from a ``tagger/1`` checkpoint.

    The file is read tensors-only (:func:`~vcmr.models.export.load_tensors_only`:
    ``torch.load(weights_only=True)`` whatever the environment says).

    Args:
        path: a ``.ckpt`` file or a run folder (:func:`find_checkpoint`).

    Returns:
        ``(tagger, meta)`` in eval mode; ``meta`` has ``tags``, ``encoder``, ``head``,
        ``mode``, ``sample_rate`` and ``path`` (the checkpoint file read).

    Raises:
        CheckpointError: the file holds more than tensors and plain containers.
        ValueError: the file is not a tagger checkpoint.
    """
    ckpt_path = find_checkpoint(path)
    ckpt = load_tensors_only(ckpt_path)
    meta = ckpt.get(CKPT_KEY) if isinstance(ckpt, Mapping) else None
    if not meta or meta.get("format") != CKPT_FORMAT:
        raise ValueError(f"{ckpt_path}: not a supervised tagging checkpoint (no '{CKPT_KEY}' entry)")
    encoder = build_module(meta["encoder"]["name"], meta["encoder"]["args"])
    tagger = _assemble(encoder, meta["head"], len(meta["tags"]), meta["mode"], str(meta.get("frozen_bn", "eval")))
    state = {k[len(TAGGER_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(TAGGER_PREFIX)}
    tagger.load_state_dict(state, strict=True)
    return tagger.eval(), {**meta, "path": str(ckpt_path)}


# --------------------------------------------------------------------------------------
# Published tagging heads: VCMR stage-3 checkpoints and CLMR linear-evaluation heads
# --------------------------------------------------------------------------------------

#: Separator of an encoder file and a head file in one checkpoint string (CLMR ships them apart).
PAIR_SEPARATOR = "::"
FOREIGN_FORMAT = "foreign"


def _vcmr_mlp(state: Mapping[str, torch.Tensor], prefix: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """VCMR's head ``Sequential(Dropout(0.3), Linear(512, h), ReLU, Linear(h, n))``: indices 1 and 3,
    the same as :class:`~vcmr.models.heads.MLPHead`'s ``net``."""
    w1 = state[f"{prefix}1.weight"]
    head = {"name": "mlp", "args": {"hidden_dim": int(w1.shape[0]), "dropout": 0.3}}
    return head, {f"net.{i}.{p}": state[f"{prefix}{i}.{p}"] for i in (1, 3) for p in ("weight", "bias")}


def _clmr_linear(state: Mapping[str, torch.Tensor], prefix: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """CLMR's linear-evaluation head ``Sequential(Linear(512, n))``."""
    return {"name": "linear", "args": {}}, {f"fc.{p}": state[f"{prefix}0.{p}"] for p in ("weight", "bias")}


def _clmr_mlp(state: Mapping[str, torch.Tensor], prefix: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """CLMR's ``finetuner_mlp`` head ``Sequential(Linear(512, 512), ReLU, Linear(512, n))``: an
    :class:`~vcmr.models.heads.MLPHead` without dropout (``net.1`` <- ``0``, ``net.3`` <- ``2``)."""
    w0 = state[f"{prefix}0.weight"]
    head = {"name": "mlp", "args": {"hidden_dim": int(w0.shape[0]), "dropout": 0.0}}
    return head, {f"net.{j}.{p}": state[f"{prefix}{i}.{p}"] for i, j in ((0, 1), (2, 3)) for p in ("weight", "bias")}


#: Published head layouts, tried in order: (name, key prefix, keys that must exist, keys that
#: must not, mapping onto this project's head). A VCMR stage-3 checkpoint holds the head both
#: as ``projector.*`` and as ``model.1.*``; a CLMR linear-evaluation checkpoint as ``model.*``
#: (Lightning) or at the top level (the state dict of ``module.model``).
HEAD_LAYOUTS: Tuple[Tuple[str, str, Tuple[str, ...], Tuple[str, ...], Callable[..., Any]], ...] = (
    ("vcmr_mlp", "projector.", ("1.weight", "3.weight"), (), _vcmr_mlp),
    ("vcmr_mlp", "model.1.", ("1.weight", "3.weight"), (), _vcmr_mlp),
    ("clmr_mlp", "model.", ("0.weight", "2.weight"), (), _clmr_mlp),
    ("clmr_linear", "model.", ("0.weight",), ("2.weight",), _clmr_linear),
    ("clmr_mlp", "", ("0.weight", "2.weight"), (), _clmr_mlp),
    ("clmr_linear", "", ("0.weight",), ("2.weight",), _clmr_linear),
)


def _state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    obj = load_tensors_only(path, allowed=(argparse.Namespace,))
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_foreign_tagger(path: str | Path, head_path: Optional[str | Path] = None, pool_size: int = 3) -> Tuple[Tagger, Dict[str, Any]]:
    """A :class:`Tagger` from a published tagging checkpoint, with the original model's outputs.

    Accepted (``HEAD_LAYOUTS``): a VCMR stage-3 Lightning checkpoint (encoder
    ``encoder.all_blocks.*``, head ``projector.{1,3}.*`` / ``model.1.{1,3}.*``), a CLMR
    linear-evaluation Lightning checkpoint (``encoder.sequential.*`` + ``model.0.*``, or
    ``model.{0,2}.*`` for its MLP head), or a CLMR encoder checkpoint plus a separate head file
    (``head_path``: the finetuner checkpoint, a Lightning file or the bare ``0.weight``/``0.bias``
    state dict). The encoder is read by :func:`vcmr.models.export.load_encoder_with_meta`.

    Args:
        path: the checkpoint (encoder, and head unless ``head_path`` is given).
        head_path: a separate head file.
        pool_size: SampleCNN pool size (not stored in the files).

    Returns:
        ``(tagger, meta)`` in eval mode; ``meta`` has ``format="foreign"``, ``layout``, ``encoder``,
        ``head``, ``n_tags`` and ``path``; ``tags``, ``sample_rate`` and ``task`` are ``None``
        (the files do not record them; evaluation takes them from the data and checks the count).

    Raises:
        ValueError: no known head layout in the file (the message lists its first keys).
    """
    path = Path(path)
    encoder, enc_meta = load_encoder_with_meta(path, pool_size=pool_size)
    head_file = Path(head_path) if head_path is not None else path
    state = _state_dict(head_file)
    for layout, prefix, needed, absent, convert in HEAD_LAYOUTS:
        if all(prefix + k in state for k in needed) and not any(prefix + k in state for k in absent):
            head_spec, head_state = convert(state, prefix)
            break
    else:
        sample = ", ".join(list(state)[:8])
        raise ValueError(f"{head_file}: no VCMR or CLMR tagging head found (first keys: {sample})")
    n_tags = int(next(v for k, v in head_state.items() if k.endswith("weight") and k.startswith(("fc", "net.3"))).shape[0])
    tagger = _assemble(encoder, head_spec, n_tags, "linear" if head_spec["name"] == "linear" else "mlp")
    tagger.head.load_state_dict(head_state, strict=True)
    meta = {
        "format": FOREIGN_FORMAT, "layout": layout, "encoder": {"name": enc_meta["name"], "args": enc_meta["args"]},
        "head": head_spec, "mode": "linear" if head_spec["name"] == "linear" else "mlp", "n_tags": n_tags,
        "tags": None, "sample_rate": None, "task": None, "frozen_bn": "eval",
        "path": str(path) if head_path is None else f"{path}{PAIR_SEPARATOR}{head_file}",
    }
    return tagger.eval(), meta


def load_any_tagger(spec: str | Path, pool_size: int = 3) -> Tuple[Tagger, Dict[str, Any]]:
    """This project's stage-3 checkpoint (or run folder), or a published one.

    ``spec`` is a ``.ckpt``/run folder of this project, a VCMR/CLMR tagging checkpoint, or
    ``<encoder file>::<head file>`` for CLMR's separate files (:func:`load_foreign_tagger`).
    """
    text = str(spec)
    if PAIR_SEPARATOR in text:
        enc, head = text.split(PAIR_SEPARATOR, 1)
        return load_foreign_tagger(enc, head, pool_size)
    ckpt_path = find_checkpoint(text)
    if ckpt_path.suffix != ".safetensors":
        ckpt = load_tensors_only(ckpt_path, allowed=(argparse.Namespace,))
        if isinstance(ckpt, Mapping) and CKPT_KEY in ckpt:
            return load_tagger(ckpt_path)
    return load_foreign_tagger(ckpt_path, None, pool_size)
