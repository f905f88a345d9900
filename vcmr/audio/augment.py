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
over the batch: each example is transformed once, resampled by keeping or zero-padding bins
(with a short roll-off at the band edge), multiplied by the frequency responses of its filter,
delay and reverb on the output grid, and transformed back (:func:`spectral_run`); the FFT
sizes are fixed per chain (:func:`pass_sizes`), so cached responses serve every batch. The
pass works on the zero-extended clip, so it is the transforms' composition without the cut
back to the clip's length between them; a WSOLA stretch runs before the pass, ahead of the
filter and delay that the chain's order puts first.

The transforms at the head of the chain that act sample by sample (polarity, noise, gain) are
applied while the crop is cut, one copy per example (:meth:`AugmentationChain.head`), with the
bits of running them one by one.

All randomness is drawn from the optional ``torch.Generator`` given to ``forward``, so a
seeded generator gives identical outputs. Inside the chain, transforms write into the
chain's own buffer in place; the caller's batch is never modified.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from vcmr.audio import cpu_fft
from vcmr.audio.dsp import check_batch, crop, crop_offsets, fast_pass_len, pitch_grid, random_crop, real_fft, real_ifft, resample_taper
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

    def head(self) -> List[str]:
        """The transforms the chain applies while it cuts the random crop: the
        :attr:`~vcmr.audio.transforms.RandomTransform.pointwise` ones at the start of the chain
        (CLMR's polarity, noise and gain), none unless ``fuse``.

        Their scalings are multiplied into one factor per example, applied as the crop is
        copied (one pass over the batch instead of one per transform); an example that another
        transform of the head picks (noise) is cut and scaled first, then transformed. The
        draws and the output's bits are those of the transforms run one by one: the product of
        a sign flip and at most one other factor is exact, and an example that would collect a
        second factor is scaled by the first before.
        """
        names: List[str] = []
        if self.fuse:
            for name, t in self.transforms.items():
                if not t.pointwise:
                    break
                names.append(name)
        return names

    def forward_with_params(
        self, x: Tensor, generator: Optional[torch.Generator] = None, step_seconds: Optional[Dict[str, float]] = None
    ) -> Tuple[Tensor, Dict[str, Params]]:
        """Like :meth:`forward`, also returning every transform's draws by name.

        ``step_seconds``, if given, receives the wall time of each step (waiting for the GPU
        at its end): ``"crop"`` joined by ``+`` with the transforms of :meth:`head`, then each
        of :meth:`runs` after them, named like ``"filter+delay+pitch+reverb"``.
        """
        check_batch(x)
        if x.shape[-1] < self.crop_length:
            raise ValueError(
                f"crop_length ({self.crop_length} samples) is longer than the input "
                f"({x.shape[-1]} samples): load longer clips or lower crop_length"
            )
        drawn: Dict[str, Params] = {}
        head = self.head()
        timer = _StepTimer(x.device, step_seconds)
        if head:
            out = self._crop_head(x, head, generator, drawn)
        else:
            out = random_crop(x, self.crop_length, generator)
            if self.transforms and out.data_ptr() == x.data_ptr():
                out = out.clone()  # the transforms below write into `out`, never into the caller's x
        timer.done("+".join(["crop"] + head))
        for run in self.runs()[len(head) :]:
            if len(run) == 1:
                out, drawn[run[0]] = self.transforms[run[0]].forward_with_params(out, generator, inplace=True)
            else:
                drawn.update(spectral_run(out, [(name, self.transforms[name]) for name in run], generator))
            timer.done("+".join(run))
        return out, drawn

    def _crop_head(
        self, x: Tensor, names: List[str], generator: Optional[torch.Generator], drawn: Dict[str, Params]
    ) -> Tensor:
        """The random crop with the transforms ``names`` of :meth:`head`: ``[B, 1, crop_length]``."""
        b, _, t_in = x.shape
        length = self.crop_length
        start = crop_offsets(b, t_in, length, generator).cpu().tolist()
        # Each example's factor not applied yet, and whether it is a sign (+-1).
        pending = torch.ones(b, dtype=x.dtype)
        signs = torch.ones(b, dtype=torch.bool)
        cut: Dict[int, Tensor] = {}  # examples cut (and transformed) already: [1, length]

        def take(rows: List[int]) -> Tensor:
            """Examples ``rows`` cut (or as cut before) times their pending factor, which is reset."""
            parts = [cut[r] if r in cut else x[r, :, start[r] : start[r] + length] for r in rows]
            idx = torch.tensor(rows, dtype=torch.long)
            sub = torch.stack(parts).mul_(pending[idx].to(x.device).view(-1, 1, 1))
            pending[idx] = 1
            signs[idx] = True
            return sub

        for name in names:
            tr = self.transforms[name]
            params = drawn[name] = tr.draw(b, generator)
            idx = torch.nonzero(params["apply"].cpu()).view(-1)
            if idx.numel() == 0:
                continue
            sub = {k: v[idx.to(v.device)] for k, v in params.items() if k != "apply"}
            factor = tr.scale(sub, x)
            if factor is not None:
                factor = factor.detach().to("cpu", x.dtype).expand(idx.numel())
                sign = factor.abs() == 1
                clash = idx[~sign & ~signs[idx]]
                if clash.numel():
                    rows = clash.tolist()
                    for r, y in zip(rows, take(rows)):
                        cut[r] = y
                pending[idx] *= factor
                signs[idx] &= sign
            else:
                rows = idx.tolist()
                y = tr.apply(take(rows), sub, generator).to(x.dtype)
                for j, r in enumerate(rows):
                    cut[r] = y[j]

        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
            # One copy (or product) per example, straight from the input's window.
            out = torch.empty(b, 1, length, dtype=x.dtype)
            xv, ov, pv = x.numpy(), out.numpy(), pending.numpy()
            for r in range(b):
                src = cut[r].numpy() if r in cut else xv[r, :, start[r] : start[r] + length]
                if pv[r] == 1:
                    np.copyto(ov[r], src)
                else:
                    np.multiply(src, pv[r], out=ov[r])
            return out
        out = crop(x, torch.tensor(start, device=x.device), length) * pending.to(x.device).view(b, 1, 1)
        if cut:
            rows = sorted(cut)
            idx = torch.tensor(rows, device=x.device)
            out = out.index_copy(0, idx, torch.stack([cut[r] for r in rows]) * pending[rows].to(x.device).view(-1, 1, 1))
        return out

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


class _StepTimer:
    """Wall seconds of consecutive steps into ``into`` (nothing when it is ``None``)."""

    def __init__(self, device: torch.device, into: Optional[Dict[str, float]]):
        self.device, self.into = device, into
        self.last = time.perf_counter() if into is not None else 0.0

    def done(self, name: str) -> None:
        if self.into is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.into[name] = now - self.last
        self.last = now


def _has_resampler(chain: AugmentationChain, names: List[str]) -> bool:
    return any(chain.transforms[n].spectral_role == "resample" for n in names)


#: Rows of the pass whose responses are computed and applied at once (see spectral_run).
RESPONSE_ROWS = 4
#: Rows that a CPU FFT call of the pass transforms at once: scipy's pocketFFT runs 4 rows of
#: float32 side by side in vector registers (about 2 ms for 4 rows of 129,600 points, 2.4 ms
#: for two, 1.3 ms for one), so a call of more than one row gets a multiple of 4 rows; a
#: single row is transformed alone.
SIMD_ROWS = 4


def _row_chunks(mask: Tensor, size: int) -> List[Tuple[int, int]]:
    """``(start, stop)`` of the runs of true values of ``mask: [n]`` bool, cut into pieces of at
    most ``size``."""
    edges = torch.diff(torch.nn.functional.pad(mask.to(torch.int8), (1, 1))).nonzero().view(-1).tolist()
    return [(a, min(a + size, stop)) for start, stop in zip(edges[::2], edges[1::2]) for a in range(start, stop, size)]


#: A pitch shift with at most this many possible factors gets FFT sizes that fit all of them
#: (the same sizes for every batch); one with more (pitch in cents) gets sizes for the factors
#: its batch drew.
FIXED_GRID_MAX = 64


def _fixed_grid(factors: Tuple[float, ...]) -> bool:
    """Whether a pitch shift that can draw ``factors`` gets FFT sizes fixed for every batch
    (at most :data:`FIXED_GRID_MAX` of them) rather than sizes for each batch's draws."""
    return len(factors) <= FIXED_GRID_MAX


def pass_sizes(
    run: List[Tuple[str, RandomTransform]], length: int, factors: Tuple[float, ...] = ()
) -> Tuple[int, Dict[float, int]]:
    """FFT sizes of :func:`spectral_run` for clips of ``length`` samples.

    The output size ``n_out`` holds the clip plus the largest extent every transform of the
    run can have (:meth:`RandomTransform.spectral_extent`; those before the pitch shift
    scaled to output time for the factor that lengthens them most), so it does not depend on
    the draws. With a
    pitch shift, each factor gets its input size (pitch factor ``n_in / n_out``,
    :func:`vcmr.audio.dsp.pitch_grid`): for every factor the shift can draw when there are
    at most :data:`FIXED_GRID_MAX` of them, else for ``factors`` (the batch's).

    Returns:
        ``(n_out, {factor: n_in})``.
    """
    roles = [tr.spectral_role for _, tr in run]
    cut = roles.index("resample") if "resample" in roles else len(run)
    pitch = run[cut][1] if cut < len(run) else None
    grid = pitch.all_ratios() if pitch is not None else ()
    extent = 0
    for i, (_, tr) in enumerate(run):
        if i == cut:
            continue
        stretch = 1.0
        if i < cut and grid:
            # In output samples: a delay d becomes d * time_scale / r, a filter's ringing / r.
            r = torch.tensor(grid, dtype=torch.float64)
            per = pitch.time_scale(r) / r if tr.spectral_time_defined else 1.0 / r
            stretch = max(1.0, float(per.max()))
        extent += math.ceil(tr.spectral_extent() * stretch)
    # Rounded up to 1/64 of the clip, so that sizes recur for clips of similar lengths.
    quantum = max(1, length // 64)
    need = length + quantum * math.ceil(extent / quantum)
    if pitch is None:
        return fast_pass_len(need), {}
    ratios = grid if _fixed_grid(grid) else tuple(sorted(set(factors)))
    n_out, n_in = pitch_grid(need, ratios)
    return n_out, dict(zip(ratios, n_in))


def spectral_run(
    x: Tensor, run: List[Tuple[str, RandomTransform]], generator: Optional[torch.Generator] = None
) -> Dict[str, Params]:
    """Apply consecutive spectral transforms to ``x: [B, 1, T]`` in place, in one FFT pass.

    Each transform draws as it would on its own (mask, parameters, then whatever
    :meth:`RandomTransform.spectral_state` draws), in order, so the stream of ``generator``
    is the same as when the transforms run one by one. Then, for every example that any of
    them picked: its signal (a WSOLA stretch or a span of the clip where the run's pitch shift
    picked it, else the clip) is zero-padded to an FFT size ``n_in``, transformed, resampled
    (its bins are cut or zero-padded to the output size ``n_out``; the pitch factor is
    ``n_in / n_out``), multiplied by the frequency responses of the transforms (those before
    the pitch shift on the output grid: frequencies times the pitch factor, delays divided by
    it), transformed back and cut to ``T``. ``n_out`` leaves room for every response's extent,
    so no output wraps around into the clip (:func:`pass_sizes`). The unshifted examples make
    one forward and one inverse FFT call, the shifted ones one forward call per input size and
    one inverse call (on the CPU, each of one row or a multiple of :data:`SIMD_ROWS` rows;
    with several torch threads the unshifted examples run in a second thread). On the CPU
    with MKL (:mod:`vcmr.audio.cpu_fft`) the same steps run one example at a time instead
    (:func:`_pass_by_rows`). Examples no transform picked are not touched.

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
    if not bool(any_picked.any()):
        return drawn

    roles = [tr.spectral_role for _, tr in run]
    cut = roles.index("resample") if "resample" in roles else len(run)
    pitch = run[cut] if cut < len(run) and run[cut][0] in subs else None
    ratio = torch.ones(b, dtype=torch.float64)
    if pitch is not None:
        ratio[picked[pitch[0]]] = pitch[1].target_ratio(subs[pitch[0]])
    n_out, in_of = pass_sizes(run, t, tuple(ratio[picked[pitch[0]]].tolist()) if pitch is not None else ())
    # Each example's input size (n_out: not shifted) and its place in the pass: examples are
    # ordered by input size, so that every size's rows are one slice of the pass's buffers.
    n_in = torch.full((b,), n_out, dtype=torch.long)
    shifted = torch.zeros(b, dtype=torch.bool)
    if pitch is not None:
        p_idx = picked[pitch[0]]
        shifted[p_idx] = True
        # The nearest factor of the table (a factor computed in another batch shape may differ
        # from the drawn one in its last bit).
        table = torch.tensor(list(in_of), dtype=torch.float64)
        nearest = (ratio[p_idx].view(-1, 1) - table.view(1, -1)).abs().argmin(dim=1)
        n_in[p_idx] = torch.tensor(list(in_of.values()), dtype=torch.long)[nearest]
    # Unshifted examples first, then the shifted ones by input size; within a size, by the
    # transforms that picked them (the most picking first), so that each transform's examples
    # are a few runs of consecutive rows of the pass.
    key = torch.where(any_picked, n_in + shifted.long() * (int(n_in.max()) + 1), torch.full_like(n_in, -1))
    bits = torch.zeros(b, dtype=torch.long)
    lti = [name for i, (name, _) in enumerate(run) if i != cut and name in subs]
    for rank, name in enumerate(sorted(lti, key=lambda nm: -picked[nm].numel())):
        bits[picked[name]] += 1 << (len(lti) - 1 - rank)
    within = torch.argsort(-bits, stable=True)
    order = within[torch.argsort(key[within], stable=True)][int((key < 0).sum()) :]
    n_sel = order.numel()
    eff = n_in.double() / n_out  # the pitch factor each example gets
    scale = pitch[1].time_scale(eff) if pitch is not None else torch.ones(b, dtype=torch.float64)
    warp_dev, scale_dev = eff.to(dev), scale.to(dev)
    ones = torch.ones(b, dtype=torch.float64, device=dev)

    # Each transform's draws, by row of the pass (-1: not picked).
    positions: Dict[str, Tensor] = {}
    for i, (name, _) in enumerate(run):
        if i != cut and name in subs:
            r = torch.full((b,), -1, dtype=torch.long)
            r[picked[name]] = torch.arange(picked[name].numel())
            positions[name] = r[order]
    keys_sorted = key[order]
    bounds = torch.cumsum(torch.unique_consecutive(keys_sorted, return_counts=True)[1], 0).tolist()
    n_bins = n_out // 2 + 1
    n_plain = int((~shifted[order]).sum())  # the unshifted rows come first in the pass

    rows_fft = cpu_fft.row_transforms() if dev.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() else None
    if rows_fft is not None:
        _pass_by_rows(
            x, run, cut, pitch, states, positions, order, n_plain, n_in, eff, scale, n_out, rows_fft
        )
        return drawn

    # On the CPU with several torch threads, the unshifted rows run in a second thread while
    # this one runs the WSOLA stretch (whose loop holds the GIL for short steps; the FFTs and
    # torch's operations release it), then the two share the forward FFTs of the shifted rows
    # and their responses and inverse FFT, half the rows each. Each FFT call then runs on one
    # thread (the two Python threads are the parallelism).
    pool = _pass_pool() if dev.type == "cpu" and torch.get_num_threads() > 1 else None
    workers = 1 if pool is not None else None

    def finish(first: int, last: int, spec: Tensor) -> Tensor:
        """Multiply the responses into ``spec`` (rows ``first:last`` of the pass) and transform
        back: ``[last - first, t]``. In chain order (they commute; the order only fixes
        rounding), a few consecutive rows at a time: slices of the spectrum instead of gathered
        copies, and small temporaries (on the CPU a fresh tensor of many megabytes costs page
        faults on first touch, several times the cost of the arithmetic)."""
        for i, (name, tr) in enumerate(run):
            if name not in positions:
                continue
            r = positions[name][first:last]
            before = i < cut
            for a, z in _row_chunks(r >= 0, RESPONSE_ROWS):
                rows_b = order[first + a : first + z].to(dev)
                resp = tr.spectral_response(
                    states[name], r[a:z], n_out, scale_dev[rows_b] if before else ones[rows_b],
                    warp_dev[rows_b] if before else ones[rows_b],
                )
                spec[a:z].mul_(resp)
        return real_ifft(spec, n_out, workers)[: last - first, :t]

    def plain() -> Tensor:
        """The unshifted rows, transformed at n_out."""
        buf = torch.zeros(_simd_rows(n_plain, dev), n_out, dtype=torch.float32, device=dev)
        torch.index_select(x[:, 0].float(), 0, order[:n_plain].to(dev), out=buf[:n_plain, :t])
        spec = real_fft(buf, workers)
        del buf
        return finish(0, n_plain, spec)

    def shifted_rows() -> Tensor:
        """The shifted rows: the pitch shift's signals (a WSOLA stretch or a span of the clip),
        one forward FFT per input size, each spectrum cut or zero-padded to n_bins (the
        resampling; scaled by n_out / n_in on the way in) into one array for the inverse FFT."""
        rows_p = order[n_plain:]
        lengths = torch.clamp(torch.ceil(t * eff[rows_p]).long(), max=n_in[rows_p])
        spans = pitch[1].span(x.index_select(0, rows_p.to(dev))[:, 0], eff[rows_p], lengths, int(lengths.max()))
        n_shift = n_sel - n_plain
        spec_s = torch.empty(_simd_rows(n_shift, dev), n_bins, dtype=torch.complex64, device=dev)
        spec_s[n_shift:] = 0
        groups = [(a - n_plain, z - n_plain) for a, z in zip([0] + bounds[:-1], bounds) if a >= n_plain]

        def one_size(start: int, stop: int) -> None:
            size_in = int(n_in[order[n_plain + start]])
            length = int(lengths[start])
            buf = torch.empty(_simd_rows(stop - start, dev), size_in, dtype=torch.float32, device=dev)
            torch.mul(spans[start:stop, :length], n_out / size_in, out=buf[: stop - start, :length])
            buf[: stop - start, length:] = 0.0
            buf[stop - start :] = 0.0
            spec = real_fft(buf, workers)
            del buf
            keep = min(n_bins, spec.shape[-1])
            out = spec_s[start:stop]
            out[:, :keep] = spec[: stop - start, :keep]
            del spec
            # The band edge of the resampling rolls off (a brick wall would ring through the
            # whole clip from its ends); the roll-off ends at zero, so the input's Nyquist bin
            # adds no tone on a longer grid.
            taper = resample_taper(keep, dev)
            out[:, keep - taper.shape[0] : keep] *= taper
            if keep < n_bins:
                out[:, keep:] = 0

        _share(pool, [lambda g=g: one_size(*g) for g in groups])
        if pool is None or n_shift <= SIMD_ROWS:
            return finish(n_plain, n_sel, spec_s)
        # Two halves, the first a multiple of SIMD_ROWS rows (the second keeps the padding rows).
        half = _simd_rows(n_shift // 2, dev)
        parts: List[Optional[Tensor]] = [None, None]

        def first_half() -> None:
            parts[0] = finish(n_plain, n_plain + half, spec_s[:half])

        def second_half() -> None:
            parts[1] = finish(n_plain + half, n_sel, spec_s[half:])

        _share(pool, [first_half, second_half])
        return torch.cat(parts)

    outputs: List[Tuple[int, int, Any]] = []
    if n_plain:
        outputs.append((0, n_plain, pool.submit(plain) if pool is not None and n_sel > n_plain else plain()))
    if n_sel > n_plain:
        outputs.append((n_plain, n_sel, shifted_rows()))
    for first, last, y in outputs:
        y = y.result() if isinstance(y, Future) else y
        x.index_copy_(0, order[first:last].to(dev), y.unsqueeze(1).to(x.dtype))
    return drawn


def _pass_by_rows(
    x: Tensor,
    run: List[Tuple[str, RandomTransform]],
    cut: int,
    pitch: Optional[Tuple[str, RandomTransform]],
    states: Dict[str, Any],
    positions: Dict[str, Tensor],
    order: Tensor,
    n_plain: int,
    n_in: Tensor,
    eff: Tensor,
    scale: Tensor,
    n_out: int,
    fft: "cpu_fft.RowTransforms",
) -> None:
    """:func:`spectral_run`'s transforms on the CPU with MKL, one row of the pass at a time.

    MKL transforms one row as fast per row as several, so each example goes through its
    forward transform, resampling, responses and inverse transform alone, in buffers that
    every batch reuses (they stay in the cache, and no fresh memory is touched); each
    transform multiplies its response into the row's spectrum
    (:meth:`RandomTransform.spectral_multiply`). With several torch threads the unshifted rows run in a second thread while this one runs the pitch shift's
    stretch, then the two share the shifted rows. Arguments as computed in
    :func:`spectral_run` (``order``: the batch rows of the pass, unshifted first).
    """
    t = x.shape[-1]
    n_sel = order.numel()
    n_bins = n_out // 2 + 1
    xv = x[:, 0].numpy()
    order_l = order.tolist()
    n_in_l = n_in[order].tolist()
    pool = _pass_pool() if torch.get_num_threads() > 1 else None

    # Each row's transforms (chain order): (transform, state, its row among the picked, scale, warp).
    scale_l, eff_l = scale.tolist(), eff.tolist()
    multiplies: List[List[Tuple[RandomTransform, Any, int, float, float]]] = [[] for _ in range(n_sel)]
    for i, (name, tr) in enumerate(run):
        if name not in positions:
            continue
        before = i < cut
        state = tr.spectral_rows(states[name], n_out)
        for p, r in enumerate(positions[name].tolist()):
            if r >= 0:
                row = order_l[p]
                multiplies[p].append((tr, state, r, scale_l[row] if before else 1.0, eff_l[row] if before else 1.0))

    def rows(first: int, last: int, load: Callable[[int, Dict[str, Any]], Any]) -> None:
        """Pass rows ``first:last``: ``load`` gives a row's spectrum (in the scratch buffers),
        the responses multiply it, the inverse transform writes the clip's row."""
        scratch = _scratch(n_out, int(max(n_in_l[first:last])))
        out = scratch["time"][:t]
        for i in range(first, last):
            spec, spec_at = load(i, scratch)
            for tr, state, r, time_scale, warp in multiplies[i]:
                tr.spectral_multiply(state, r, spec, n_out, time_scale, warp)
            fft.backward_at(n_out, spec_at, scratch["time_at"])
            xv[order_l[i]] = out

    def load_plain(i: int, scratch: Dict[str, Any]) -> Tuple[Any, int]:
        buf = scratch["time"]
        buf[:t] = xv[order_l[i]]
        buf[t:n_out] = 0.0
        fft.forward_at(n_out, scratch["time_at"], scratch["spec_at"])
        return scratch["spec"][:n_bins], scratch["spec_at"]

    plain_job = None
    if n_plain:
        if pool is not None and n_sel > n_plain:
            plain_job = pool.submit(rows, 0, n_plain, load_plain)
        else:
            rows(0, n_plain, load_plain)
    if n_sel > n_plain:
        assert pitch is not None
        rows_p = order[n_plain:]
        lengths = torch.clamp(torch.ceil(t * eff[rows_p]).long(), max=n_in[rows_p])
        fill = pitch[1].span_rows(x[:, 0], eff[rows_p], lengths, int(lengths.max()), rows=rows_p)
        lengths_l = lengths.tolist()
        tapers: Dict[int, Any] = {}
        # A pitch shift with a fixed grid of factors uses the same input sizes in every batch:
        # their MKL plans are kept. One with more factors (pitch in cents) draws new sizes batch
        # after batch, whose plans would cost more to make than the transforms.
        planned = _fixed_grid(pitch[1].all_ratios())

        def load_shifted(i: int, scratch: Dict[str, Any]) -> Tuple[Any, int]:
            # The pitch shift's signal, scaled by n_out / n_in, transformed at n_in; its bins
            # cut or zero-padded to n_out's (the resampling), with the band edge rolled off.
            j = i - n_plain
            size_in, length = n_in_l[i], lengths_l[j]
            buf = scratch["time"][:size_in]
            fill(j, buf[:length], n_out / size_in)
            buf[length:] = 0.0
            # The spectrum is transformed into a buffer of at least n_bins bins, whose first
            # n_bins are the output's: no copy (its own bins past size_in // 2 + 1 are zeroed).
            fwd = scratch["fwd"]
            if planned:
                fft.forward_at(size_in, scratch["time_at"], scratch["fwd_at"])
            else:
                fft.forward_unplanned(buf, fwd[: size_in // 2 + 1])
            keep = min(n_bins, size_in // 2 + 1)
            spec = fwd[:n_bins]
            taper = tapers.get(keep)
            if taper is None:
                taper = tapers[keep] = resample_taper(keep, torch.device("cpu")).numpy()
            spec[keep - taper.shape[0] : keep] *= taper
            spec[keep:] = 0.0
            return spec, scratch["fwd_at"]

        n_shift = n_sel - n_plain
        if pool is None or n_shift < 2:
            rows(n_plain, n_sel, load_shifted)
        else:
            half = n_plain + n_shift // 2
            _share(pool, [lambda: rows(n_plain, half, load_shifted), lambda: rows(half, n_sel, load_shifted)])
    if plain_job is not None:
        plain_job.result()


_SCRATCH = threading.local()


def _scratch(n_out: int, n_in_max: int) -> Dict[str, Any]:
    """This thread's buffers of :func:`_pass_by_rows`, grown to fit (kept between batches)."""
    have = getattr(_SCRATCH, "buffers", None)
    size = max(n_out, n_in_max)
    if have is None or have["time"].shape[0] < size:
        have = _SCRATCH.buffers = {
            "time": np.empty(size, dtype=np.float32),
            "spec": np.empty(size // 2 + 1, dtype=np.complex64),
            "fwd": np.empty(size // 2 + 1, dtype=np.complex64),
        }
        # Their addresses, for the transforms (cpu_fft.RowTransforms.forward_at).
        have.update({name + "_at": cpu_fft.address(have[name]) for name in ("time", "spec", "fwd")})
    return have


def _share(pool: Optional[ThreadPoolExecutor], tasks: List[Callable[[], None]]) -> None:
    """Run ``tasks`` in this thread, or in this one and ``pool``'s helper thread side by side
    (each takes the next task left; the helper may still be busy with earlier work)."""
    queue = iter(tasks)
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                task = next(queue, None)
            if task is None:
                return
            task()

    other = pool.submit(drain) if pool is not None and len(tasks) > 1 else None
    drain()
    if other is not None:
        other.result()


_POOL: Optional[ThreadPoolExecutor] = None


def _pass_pool() -> ThreadPoolExecutor:
    """The process's one helper thread of :func:`spectral_run` (created on first use)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vcmr-fft-pass")
    return _POOL


def _forget_pool() -> None:
    # A forked child (e.g. a DataLoader worker) has the parent's executor without its thread.
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _simd_rows(rows: int, device: torch.device) -> int:
    """Rows of a CPU FFT call for ``rows`` signals: with pocketFFT more than one rounded up to
    a multiple of :data:`SIMD_ROWS` (unchanged with MKL, which transforms row by row as fast,
    and on other devices)."""
    if device.type != "cpu" or rows <= 1 or cpu_fft.backend() != "pocketfft":
        return rows
    return -(-rows // SIMD_ROWS) * SIMD_ROWS


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


__all__ = [
    "AugmentConfig",
    "AugmentationChain",
    "FIXED_GRID_MAX",
    "build_augmentation",
    "pass_sizes",
    "spectral_run",
    "validate_config",
]
