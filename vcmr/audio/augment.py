"""Batched waveform augmentation chain for contrastive music pretraining (CLMR's chain).

The chain works on a whole batch ``x: [B, 1, T]`` float waveform on whatever device ``x``
lives on (CPU or GPU), with one independent draw per example: whether each transform is
applied (probability ``p``) and its parameters. It is an ``nn.Module`` without state, meant
to be called by a training step after the batch has reached the training device::

    chain = build_augmentation(cfg.augment, sample_rate=16000, crop_length=59049)
    x1 = chain(batch, generator)   # [B, 1, T_in] -> [B, 1, crop_length]

Order of the chain: random crop (always), then the transforms of
:data:`vcmr.audio.transforms.TRANSFORMS` in registry order (CLMR's: polarity inversion ->
additive white noise -> gain -> high- or low-pass filter -> delay (echo) -> pitch shift ->
reverb). The signal processing itself lives in :mod:`vcmr.audio.dsp`.

All randomness is drawn from the optional ``torch.Generator`` given to ``forward``, so a
seeded generator gives identical outputs. Inside the chain, transforms write into the
chain's own buffer in place; the caller's batch is never modified.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from vcmr.audio.dsp import check_batch, random_crop
from vcmr.audio.transforms import TRANSFORMS, Params, RandomTransform, check_probability
from vcmr.config import ConfigError

#: Schema of the ``augment:`` block: ``enabled: bool`` (false: only the random crop), then one
#: field per entry of :data:`TRANSFORMS`, typed by that transform's ``Config`` dataclass.
#: Every key is required; the values live in ``config/augment/*.yaml``.
AugmentConfig = dataclasses.make_dataclass(
    "AugmentConfig",
    [("enabled", bool, dataclasses.field(default=MISSING))]
    + [(name, cls.Config, dataclasses.field(default=MISSING)) for name, cls in TRANSFORMS.items()],
)
AugmentConfig.__module__ = __name__
AugmentConfig.__doc__ = "The whole chain. With ``enabled: false`` only the random crop is applied."


class AugmentationChain(nn.Module):
    """Random crop followed by the random transforms, in order.

    Args:
        crop_length: output length in samples.
        transforms: name -> transform, applied in insertion order (empty: crop only).
    """

    def __init__(self, crop_length: int, transforms: Optional[Mapping[str, RandomTransform]] = None):
        super().__init__()
        if crop_length <= 0:
            raise ConfigError(f"crop_length must be a positive number of samples, got {crop_length}")
        self.crop_length = int(crop_length)
        self.transforms = nn.ModuleDict(dict(transforms or {}))

    def forward_with_params(
        self, x: Tensor, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Dict[str, Params]]:
        """Like :meth:`forward`, also returning every transform's draws by name."""
        check_batch(x)
        if x.shape[-1] < self.crop_length:
            raise ValueError(
                f"crop_length ({self.crop_length} samples) is longer than the input "
                f"({x.shape[-1]} samples): load longer clips or lower crop_length"
            )
        out = random_crop(x, self.crop_length, generator)
        if self.transforms and out.data_ptr() == x.data_ptr():
            out = out.clone()  # the transforms below write into `out`, never into the caller's x
        drawn: Dict[str, Params] = {}
        for name, transform in self.transforms.items():
            out, drawn[name] = transform.forward_with_params(out, generator, inplace=True)
        return out, drawn

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Augment a batch.

        Args:
            x: ``[B, 1, T_in]`` float waveform, ``T_in >= crop_length``, on any device.
            generator: source of every random draw; seed it for reproducible output.

        Returns:
            ``[B, 1, crop_length]`` on ``x``'s device.
        """
        return self.forward_with_params(x, generator)[0]

    def extra_repr(self) -> str:
        return f"crop_length={self.crop_length}"


def validate_config(cfg: Mapping | DictConfig, sample_rate: int, crop_length: int) -> DictConfig:
    """Check an augmentation config against :data:`AugmentConfig` and value ranges.

    Types, unknown and missing keys are checked here, then every block's ``p``, then each
    transform's other keys (:meth:`RandomTransform.validate`), in registry order.

    Args:
        cfg: the ``augment`` block (or a mapping holding it under ``augment``).
        sample_rate: samples per second of the waveforms.
        crop_length: output length in samples.

    Returns:
        The typed config. Raises :class:`ConfigError` naming the offending key.
    """
    if isinstance(cfg, (Mapping, DictConfig)) and "augment" in cfg and "enabled" not in cfg:
        cfg = cfg["augment"]
    if not isinstance(cfg, (Mapping, DictConfig)):
        raise ConfigError(f"augment: expected a mapping, got {type(cfg).__name__}")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(AugmentConfig), cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
        raise ConfigError(f"augment.{key}: {msg}") from None
    missing = sorted(OmegaConf.missing_keys(typed))
    if missing:
        raise ConfigError("augment: required key(s) without a value: " + ", ".join(f"augment.{k}" for k in missing))
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
    if crop_length <= 0:
        raise ConfigError(f"crop_length must be a positive number of samples, got {crop_length}")
    if not typed.enabled:
        # A disabled chain only crops: its transform ranges never meet this sample rate.
        return typed
    for name in TRANSFORMS:
        check_probability(typed[name], f"augment.{name}")
    for name, cls in TRANSFORMS.items():
        cls.validate(typed[name], f"augment.{name}", sample_rate, crop_length)
    return typed


def build_augmentation(cfg: Mapping | DictConfig, sample_rate: int, crop_length: int) -> AugmentationChain:
    """Build the chain from an ``augment`` config block (see ``config/augment/clmr.yaml``).

    Args:
        cfg: values of :data:`AugmentConfig` (a mapping or ``DictConfig``, or a mapping
            holding them under ``augment``).
        sample_rate: samples per second of the waveforms the chain will see.
        crop_length: output length in samples.

    Returns:
        The chain; with ``enabled: false`` it only crops. Transforms with ``p: 0`` are left out.
    """
    c = validate_config(cfg, sample_rate, crop_length)
    transforms: Dict[str, RandomTransform] = {}
    if c.enabled:
        for name, cls in TRANSFORMS.items():
            if c[name].p > 0:
                transforms[name] = cls.from_config(c[name], sample_rate)
    return AugmentationChain(crop_length, transforms)


__all__ = ["AugmentConfig", "AugmentationChain", "build_augmentation", "validate_config"]
