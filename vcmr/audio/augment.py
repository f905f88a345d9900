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

Consecutive transforms that are linear and time-invariant (filter, delay, reverb) and a pitch
shift whose last step is band-limited resampling (``wsola``, ``resample``) run as one FFT pass
over the batch: each example is transformed once, multiplied by the frequency responses of its
filter and delay, resampled by keeping or zero-padding bins, multiplied by its reverb's response
and transformed back (:func:`spectral_run`). The pass works on the zero-extended clip, so it is
the transforms' composition without the cut back to the clip's length between them; a WSOLA
stretch runs before the pass, ahead of the filter and delay that the chain's order puts first.

All randomness is drawn from the optional ``torch.Generator`` given to ``forward``, so a
seeded generator gives identical outputs. Inside the chain, transforms write into the
chain's own buffer in place; the caller's batch is never modified.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from vcmr.audio.dsp import check_batch, fast_pass_len, pitch_grid, random_crop, rfft_padded
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
        fuse: run consecutive spectral transforms as one FFT pass (:func:`spectral_run`);
            ``False`` applies every transform on its own (same draws).
    """

    def __init__(
        self, crop_length: int, transforms: Optional[Mapping[str, RandomTransform]] = None, fuse: bool = True
    ):
        super().__init__()
        if crop_length <= 0:
            raise ConfigError(f"crop_length must be a positive number of samples, got {crop_length}")
        self.crop_length = int(crop_length)
        self.transforms = nn.ModuleDict(dict(transforms or {}))
        self.fuse = bool(fuse)

    def runs(self) -> List[List[str]]:
        """The transforms' names in chain order, grouped into what runs together: a run of
        several is one FFT pass (spectral transforms, at most one resampling pitch shift)."""
        groups: List[List[str]] = []
        open_run = False
        for name, t in self.transforms.items():
            role = t.spectral_role if self.fuse else ""
            if role and open_run and not (role == "resample" and _has_resampler(self, groups[-1])):
                groups[-1].append(name)
            else:
                groups.append([name])
            open_run = bool(role)
        return groups

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
        for run in self.runs():
            if len(run) == 1:
                out, drawn[run[0]] = self.transforms[run[0]].forward_with_params(out, generator, inplace=True)
            else:
                drawn.update(spectral_run(out, [(name, self.transforms[name]) for name in run], generator))
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
        return f"crop_length={self.crop_length}, fuse={self.fuse}"


def _has_resampler(chain: AugmentationChain, names: List[str]) -> bool:
    return any(chain.transforms[n].spectral_role == "resample" for n in names)


def spectral_run(
    x: Tensor, run: List[Tuple[str, RandomTransform]], generator: Optional[torch.Generator] = None
) -> Dict[str, Params]:
    """Apply consecutive spectral transforms to ``x: [B, 1, T]`` in place, in one FFT pass.

    Each transform draws as it would on its own (mask, parameters, then whatever
    :meth:`RandomTransform.spectral_state` draws), in order, so the stream of ``generator``
    is the same as when the transforms run one by one. Then, for every example that any of
    them picked: its signal (a WSOLA stretch or a span of the clip where the run's pitch shift
    picked it, else the clip) is zero-padded to an FFT size ``n_in``, transformed, multiplied
    by the responses of the transforms before the pitch shift, resampled (its bins are cut or
    zero-padded to the output size ``n_out``; the pitch factor is ``n_in / n_out``), multiplied
    by the responses of the transforms after it, transformed back and cut to ``T``. ``n_out``
    leaves room for every response's extent, so no output wraps around into the clip.
    Examples sharing ``n_in`` share each FFT call.

    Args:
        x: ``[B, 1, T]`` float waveform, overwritten with the result.
        run: ``(name, transform)`` in chain order; each with a ``spectral_role``, at most one
            ``"resample"``.
        generator: source of every draw.

    Returns:
        name -> draws (as :meth:`RandomTransform.forward_with_params` returns them).
    """
    check_batch(x)
    b, _, t = x.shape
    dev = x.device
    drawn: Dict[str, Params] = {}
    picked: Dict[str, Tensor] = {}
    states = {}
    subs: Dict[str, Params] = {}
    for name, tr in run:
        params = tr.draw(b, generator)
        drawn[name] = params
        idx = torch.nonzero(params["apply"].cpu()).view(-1)
        picked[name] = idx
        if idx.numel():
            sub = {k: v[idx.to(v.device)] for k, v in params.items() if k != "apply"}
            subs[name] = sub
            states[name] = tr.spectral_state(sub, t, dev, generator) if tr.spectral_role == "lti" else sub
    any_picked = torch.zeros(b, dtype=torch.bool)
    for idx in picked.values():
        any_picked[idx] = True
    sel = torch.nonzero(any_picked).view(-1)
    if sel.numel() == 0:
        return drawn

    roles = [tr.spectral_role for _, tr in run]
    cut = roles.index("resample") if "resample" in roles else len(run)
    pitch = run[cut] if cut < len(run) and run[cut][0] in subs else None
    # Padding of each example: the extents of what picked it (those before the pitch shift
    # scaled to output time); the run's output size holds the largest.
    ratio = torch.ones(b, dtype=torch.float64)
    if pitch is not None:
        ratio[picked[pitch[0]]] = pitch[1].target_ratio(subs[pitch[0]])
    scale = pitch[1].time_scale(ratio) if pitch is not None else torch.ones(b, dtype=torch.float64)
    extent = torch.zeros(b, dtype=torch.float64)
    for i, (name, tr) in enumerate(run):
        if name in subs and i != cut:
            ext = tr.spectral_extent(subs[name]).double()
            if i < cut:
                ext = ext * (torch.clamp(scale, min=1.0) / ratio)[picked[name]]
            extent[picked[name]] += ext
    # Every FFT call has a cost of its own (its plan) besides the per-row work, so the rows
    # share sizes: one output size for the run, one input size per pitch factor. The needed
    # length is rounded up to 1/64 of the clip, so that sizes recur from batch to batch.
    quantum = max(1, t // 64)
    need = t + quantum * math.ceil(float(extent[sel].max()) / quantum)
    n_in = torch.zeros(b, dtype=torch.long)
    shifted = torch.zeros(b, dtype=torch.bool)
    if pitch is not None:
        p_idx = picked[pitch[0]]
        shifted[p_idx] = True
        factors = sorted(set(ratio[p_idx].tolist()))
        n_out, sizes_in = pitch_grid(need, tuple(factors))
        in_of = dict(zip(factors, sizes_in))
        n_in[:] = n_out
        n_in[p_idx] = torch.tensor([in_of[r] for r in ratio[p_idx].tolist()])
        eff = n_in.double() / n_out  # the pitch factor each example gets
        scale = pitch[1].time_scale(eff)
        lengths = torch.clamp(torch.ceil(t * eff[p_idx]).long(), max=n_in[p_idx])
        spans = pitch[1].span(x[p_idx.to(dev), 0], eff[p_idx], lengths, int(lengths.max()))
        # Past its own length a span holds no signal: zeros, the room the responses ring into.
        past = torch.arange(spans.shape[-1], device=dev).view(1, -1) >= lengths.to(dev).view(-1, 1)
        spans.masked_fill_(past, 0.0)  # spans is a fresh tensor (or a view of one)
        span_row = torch.full((b,), -1, dtype=torch.long)
        span_row[p_idx] = torch.arange(p_idx.numel())
    else:
        n_out = fast_pass_len(need)
        n_in[:] = n_out
    # Position of each example in each transform's picked sub-batch (-1: not picked).
    rows_of = {}
    for name, _ in run:
        r = torch.full((b,), -1, dtype=torch.long)
        r[picked[name]] = torch.arange(picked[name].numel())
        rows_of[name] = r
    # Resampling maps input bin k to output bin k, so a response on the input grid is the same
    # response on the output grid with its frequencies multiplied by the pitch factor and its
    # delays divided by it: every response is computed and applied once, on the output grid,
    # for the whole run.
    warp_dev, scale_dev = (n_in.double() / n_out).to(dev), scale.to(dev)
    ones = torch.ones(b, dtype=torch.float64, device=dev)

    # Forward FFTs: one call per input size (and per source: the pitch shift's spans or the
    # clips); each spectrum is then cut or zero-padded to the output size (the resampling).
    n_bins = n_out // 2 + 1
    spec_out = torch.empty(sel.numel(), n_bins, dtype=torch.complex64, device=dev)
    where = torch.full((b,), -1, dtype=torch.long)
    where[sel] = torch.arange(sel.numel())
    keys = n_in[sel] * 2 + shifted[sel].long()
    for key in torch.unique(keys).tolist():
        group = sel[keys == key]
        size_in = key >> 1
        if key & 1:
            src = spans.index_select(0, span_row[group].to(dev))
        else:
            src = x.index_select(0, group.to(dev))[:, 0].float()
        spec = rfft_padded(src, size_in)
        if size_in != n_out:
            spec = spec[:, :n_bins] if spec.shape[-1] >= n_bins else torch.nn.functional.pad(spec, (0, n_bins - spec.shape[-1]))
            spec = spec * (n_out / size_in)
        spec_out.index_copy_(0, where[group].to(dev), spec)
    # The responses, in chain order (they commute; the order only fixes rounding).
    for i, (name, tr) in enumerate(run):
        if i == cut or name not in subs:
            continue
        r = rows_of[name][sel]
        hit = torch.nonzero(r >= 0).view(-1)
        rows_b = sel[hit].to(dev)
        before = i < cut
        resp = tr.spectral_response(
            states[name], r[hit], n_out, scale_dev[rows_b] if before else ones[rows_b],
            warp_dev[rows_b] if before else ones[rows_b],
        )
        if hit.numel() == sel.numel():
            spec_out.mul_(resp)
        else:
            h = hit.to(dev)
            spec_out.index_copy_(0, h, spec_out.index_select(0, h).mul_(resp))
    y = torch.fft.irfft(spec_out, n=n_out)[:, :t]
    x.index_copy_(0, sel.to(dev), y.unsqueeze(1).to(x.dtype))
    return drawn


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


__all__ = ["AugmentConfig", "AugmentationChain", "build_augmentation", "spectral_run", "validate_config"]
