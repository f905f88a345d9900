"""Random batched transforms: one ``nn.Module`` per augmentation, with its config schema.

Each transform draws, per example of ``x: [B, 1, T]``, whether it is applied (probability
``p``) and its parameters, then calls the matching function of :mod:`vcmr.audio.dsp` on the
picked examples only (index-select, process, scatter back). Sign flips and gains are one
multiplication of the whole batch by per-example factors instead (1 for examples not picked,
which leaves them bit for bit unchanged).

All randomness comes from the optional ``torch.Generator`` given to ``forward`` (small
parameter tensors on the generator's device, then moved), so a seeded generator gives
identical outputs.

Every transform owns its config dataclass (``Config``: the keys of its block under
``augment:``), checks those keys in :meth:`RandomTransform.validate` and is built from them by
:meth:`RandomTransform.from_config`. :data:`TRANSFORMS` lists them in chain order; adding a
transform is one class here, one line in :data:`TRANSFORMS` and one block in
``config/augment/*.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import Tensor, nn

from vcmr.audio.dsp import (
    FILTER_PAD_PERIODS,
    PITCH_METHODS,
    add_noise,
    butterworth_on_grid,
    check_batch,
    delay,
    delay_response,
    frequency_filter,
    gain,
    pitch_shift,
    pitch_span,
    polarity_inversion,
    reverb,
    rir_bank,
    rir_bank_spectra,
    wsola_sizes,
    wsola_splices,
    wsola_stretch,
)
from vcmr.audio.dsp_clmr import add_noise_std, mix_delay, sinc_filter, sinc_half_size, sox_reverb
from vcmr.config import ConfigError

#: Draws of one transform for a batch: ``[B]`` tensors by name (``"apply"``: the mask).
Params = Dict[str, Tensor]

# --------------------------------------------------------------------------------------
# Draws and config checks shared by the transforms
# --------------------------------------------------------------------------------------


def _draw_device(generator: Optional[torch.Generator]) -> torch.device:
    """Where random tensors are drawn: the generator's device, or the CPU (global RNG)."""
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(n: int, low: float, high: float, generator: Optional[torch.Generator]) -> Tensor:
    """``[n]`` float64 values uniform in ``[low, high)``."""
    dev = _draw_device(generator)
    return low + (high - low) * torch.rand(n, generator=generator, device=dev, dtype=torch.float64)


def _choice(n: int, values: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """``[n]`` values drawn uniformly (with replacement) from ``values: [K]``."""
    dev = _draw_device(generator)
    idx = torch.randint(len(values), (n,), generator=generator, device=dev)
    return values.to(dev)[idx]


def _randn_like(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like ``x``, from ``generator`` (drawn on its device)."""
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, dtype=x.dtype, device=generator.device, generator=generator).to(x.device)


def _grid(start: float, stop: float, step: float) -> List[float]:
    """``start, start + step, ..., <= stop`` (``stop`` included up to rounding)."""
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    return [float(start) + i * float(step) for i in range(n)]


def _fail(path: str, key: str, value: Any, reason: str) -> None:
    raise ConfigError(f"{path}.{key} = {value!r}: {reason}")


def check_probability(cfg: DictConfig, path: str, key: str = "p") -> None:
    """Raise :class:`ConfigError` naming ``{path}.{key}`` unless ``cfg[key]`` is in ``[0, 1]``."""
    if not 0.0 <= cfg[key] <= 1.0:
        _fail(path, key, cfg[key], "a probability must be in [0, 1]")


def _check_range(cfg: DictConfig, path: str, lo: str, hi: str) -> None:
    if cfg[lo] > cfg[hi]:
        _fail(path, lo, cfg[lo], f"must not exceed {path}.{hi} ({cfg[hi]})")


def _config_kwargs(cfg: Mapping | DictConfig) -> Dict[str, Any]:
    return dict(OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else cfg)


# --------------------------------------------------------------------------------------
# Base class: per-example application mask + parameters
# --------------------------------------------------------------------------------------


class RandomTransform(nn.Module):
    """Applies a transform to each example with probability ``p`` (independent draws).

    Subclasses implement :meth:`sample` (parameters for all ``B`` examples, on the
    generator's device) and :meth:`apply` (the transform on the selected sub-batch), or
    :meth:`scale` for transforms that only multiply each example by a factor. Only the
    selected examples are processed; the others are returned bit-for-bit unchanged.

    A subclass sets ``Config`` (its dataclass; field names are its constructor's keyword
    arguments), overrides :meth:`validate` with checks of its keys other than ``p`` and overrides
    :meth:`from_config` if its constructor also takes the sample rate.
    """

    #: Schema of this transform's config block (every field required).
    Config: ClassVar[Type[Any]]

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        """Check the value ranges of a typed config block, except ``p``.

        ``p`` is common to every transform; :func:`check_probability` checks it (the chain
        checks every block's ``p`` before any other key).

        Args:
            cfg: the block, already merged into :attr:`Config` (types checked).
            path: its dotted key for error messages, e.g. ``"augment.noise"``.
            sample_rate: samples per second of the waveforms.
            crop_length: length in samples of the clips the transform will see.

        Raises:
            ConfigError: naming the first bad key.
        """

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomTransform":
        """Build from a (validated) config block; ``sample_rate`` in Hz."""
        return cls(**_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        """Draw the parameters of every example (``[B]`` tensors)."""
        return {}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        """Transform every example of ``x`` (``[b, 1, T]``) with its ``params`` (``[b]``)."""
        raise NotImplementedError

    def scale(self, params: Params, x: Tensor) -> Optional[Tensor]:
        """Per-example factors ``[b]`` (``x``'s dtype and device) if the transform is a pure
        scaling, else ``None`` (then :meth:`apply` is used)."""
        return None

    #: Whether each output sample depends only on the same input sample and on values of its
    #: example (a scaling, added noise): the chain may then apply the transform while it cuts
    #: its random crop, when only such transforms come before it (:meth:`AugmentationChain.head`).
    pointwise: bool = False

    # --- folding into the chain's shared FFT pass (vcmr.audio.augment) ------------------
    #: ``"lti"``: a linear time-invariant transform; the chain may apply it as a frequency
    #: response inside one FFT pass shared with its neighbours (:meth:`spectral_response`).
    #: ``"resample"``: a pitch shift whose last step is band-limited resampling, which the same
    #: pass can do (:class:`RandomPitchShift`). ``""``: applied on its own.
    spectral_role: str = ""
    #: Whether the response is defined in time (a delay: ``d`` clip samples are
    #: ``d * time_scale / warp`` output samples before a pitch shift) rather than in frequency
    #: (a filter: its ringing lasts ``1 / warp`` as long in output samples).
    spectral_time_defined: bool = False

    def spectral_extent(self) -> int:
        """Samples by which any example's output may extend beyond its input, both sides
        together, for every possible draw (the zero padding the shared FFT pass needs; one
        bound for every batch, so the pass keeps its FFT sizes from batch to batch)."""
        return 0

    def spectral_state(self, params: Params, length: int, device: torch.device, generator: Optional[torch.Generator]) -> Any:
        """What :meth:`spectral_response` needs for the picked examples (``params``: their draws).

        Called where :meth:`apply` would run, so any random draw comes at the same point of
        the generator's stream."""
        return params

    def spectral_response(self, state: Any, rows: Tensor, n: int, time_scale: Tensor, warp: Tensor) -> Tensor:
        """Frequency response ``[len(rows), n // 2 + 1]`` (real or complex) of the picked examples
        ``rows`` (indices into the picked sub-batch) on the bins of an ``n``-point real FFT.

        For a transform the chain applies before a pitch shift, the grid is the output's:
        ``warp[i]`` is the factor by which the pitch shift then multiplies frequencies (the
        transform's frequency ``f`` sits at ``f * warp``), and ``time_scale[i]`` how much longer
        than the clip the signal the transform acts on is (a WSOLA stretch), for responses
        defined in time (a delay of ``d`` samples of the clip is ``d * time_scale / warp``
        output samples). Both are 1 otherwise."""
        raise NotImplementedError

    def spectral_rows(self, state: Any, n: int) -> Any:
        """:meth:`spectral_state`'s result in the form :meth:`spectral_multiply` reads one row
        at a time, for spectra of an ``n``-point FFT (called once per batch; the built-in
        transforms make Python lists of their draws). This default returns ``state`` unchanged."""
        return state

    def spectral_multiply(self, state: Any, row: int, spec: Any, n: int, time_scale: float, warp: float) -> None:
        """Multiply one example's spectrum by its response in place, on the CPU: ``spec`` is a
        numpy complex64 ``[n // 2 + 1]``, ``state`` what :meth:`spectral_rows` returned,
        ``row`` an index into the picked sub-batch, ``time_scale`` and ``warp`` as in
        :meth:`spectral_response`.

        The chain's pass calls it where MKL transforms the pass row by row
        (:mod:`vcmr.audio.cpu_fft`). This default evaluates :meth:`spectral_response` for the
        one row; the built-in transforms multiply with compiled loops
        (:mod:`vcmr.audio.kernels`) instead."""
        f64 = torch.float64
        resp = self.spectral_response(
            state, torch.tensor([row]), n, torch.tensor([time_scale], dtype=f64), torch.tensor([warp], dtype=f64)
        )
        spec *= resp[0].numpy()

    def draw(self, batch_size: int, generator: Optional[torch.Generator] = None) -> Params:
        """The application mask (``"apply"``) and :meth:`sample` of a batch, in that order."""
        # Always draw the same amount per call so the stream does not depend on p.
        mask = torch.rand(batch_size, generator=generator, device=_draw_device(generator)) < self.p
        params = self.sample(batch_size, generator)
        params["apply"] = mask
        return params

    def forward_with_params(
        self, x: Tensor, generator: Optional[torch.Generator] = None, inplace: bool = False
    ) -> Tuple[Tensor, Params]:
        """Like :meth:`forward`, also returning the draws (``params["apply"]``: ``[B]`` bool).

        With ``inplace=True`` the result is written into ``x`` (which must not be needed
        by the caller any more); the chain does so on its own buffer to skip copies.
        """
        check_batch(x)
        b = x.shape[0]
        params = self.draw(b, generator)
        mask = params["apply"]
        idx = torch.nonzero(mask.cpu()).view(-1)
        if idx.numel() == 0:
            return x, params
        sub = {k: v[idx.to(v.device)] for k, v in params.items() if k != "apply"}
        factor = self.scale(sub, x)
        if factor is not None:
            # One pass over the batch; a factor of exactly 1 leaves an example's bits as they are.
            full = torch.ones(b, dtype=x.dtype, device=x.device)
            full[idx.to(x.device)] = factor
            full = full.view(b, 1, 1)
            return (x.mul_(full) if inplace else x * full), params
        if idx.numel() == b:
            y = self.apply(x, sub, generator)
            return (x.copy_(y) if inplace and y is not x else y), params
        idx = idx.to(x.device)
        y = self.apply(x.index_select(0, idx), sub, generator).to(x.dtype)
        return (x.index_copy_(0, idx, y) if inplace else x.index_copy(0, idx, y)), params

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``x: [B, 1, T]`` -> ``[B, 1, T]``, each example transformed with probability ``p``."""
        return self.forward_with_params(x, generator)[0]

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------------------
# The transforms, each after its config schema (values live in config/augment/*.yaml)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class PolarityConfig:
    """Multiply the waveform by -1."""

    p: float = MISSING


class RandomPolarity(RandomTransform):
    """Sign flip with probability ``p``."""

    Config = PolarityConfig
    pointwise = True

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return polarity_inversion(x)

    def scale(self, params: Params, x: Tensor) -> Optional[Tensor]:
        return torch.tensor(-1.0, dtype=x.dtype, device=x.device)


@dataclasses.dataclass
class NoiseConfig:
    """Additive white Gaussian noise at a signal-to-noise ratio drawn in dB."""

    p: float = MISSING
    min_snr_db: float = MISSING
    max_snr_db: float = MISSING


class RandomNoise(RandomTransform):
    """White Gaussian noise at an SNR drawn uniformly in ``[min_snr_db, max_snr_db]``."""

    Config = NoiseConfig
    pointwise = True

    def __init__(self, p: float, min_snr_db: float, max_snr_db: float):
        super().__init__(p)
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        _check_range(cfg, path, "min_snr_db", "max_snr_db")

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        return {"snr_db": _uniform(batch_size, self.min_snr_db, self.max_snr_db, generator)}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return add_noise(x, params["snr_db"], _randn_like(x, generator))


@dataclasses.dataclass
class GainConfig:
    """Scale by a gain drawn uniformly in dB."""

    p: float = MISSING
    min_db: float = MISSING
    max_db: float = MISSING


class RandomGain(RandomTransform):
    """Gain drawn uniformly in ``[min_db, max_db]`` decibels."""

    Config = GainConfig
    pointwise = True

    def __init__(self, p: float, min_db: float, max_db: float):
        super().__init__(p)
        self.min_db, self.max_db = float(min_db), float(max_db)

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        _check_range(cfg, path, "min_db", "max_db")

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        return {"db": _uniform(batch_size, self.min_db, self.max_db, generator)}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return gain(x, params["db"])

    def scale(self, params: Params, x: Tensor) -> Optional[Tensor]:
        # Same arithmetic as gain(), so both give the same bits.
        return torch.pow(10.0, params["db"].to(x.device, x.dtype) / 20.0)


@dataclasses.dataclass
class FilterConfig:
    """Zero-phase Butterworth high-pass (with probability ``highpass_prob``) or low-pass."""

    p: float = MISSING
    highpass_prob: float = MISSING
    order: int = MISSING
    lowpass_min_hz: float = MISSING
    lowpass_max_hz: float = MISSING
    highpass_min_hz: float = MISSING
    highpass_max_hz: float = MISSING


class RandomFilter(RandomTransform):
    """High-pass (probability ``highpass_prob``) or low-pass Butterworth, cut-off drawn uniformly."""

    Config = FilterConfig

    def __init__(
        self,
        p: float,
        sample_rate: int,
        highpass_prob: float,
        order: int,
        lowpass_min_hz: float,
        lowpass_max_hz: float,
        highpass_min_hz: float,
        highpass_max_hz: float,
    ):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.highpass_prob = float(highpass_prob)
        self.order = int(order)
        self.lowpass_range = (float(lowpass_min_hz), float(lowpass_max_hz))
        self.highpass_range = (float(highpass_min_hz), float(highpass_max_hz))

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        check_probability(cfg, path, "highpass_prob")
        if cfg.order < 1:
            _fail(path, "order", cfg.order, "the filter order must be >= 1")
        nyquist = sample_rate / 2.0
        for key in ("lowpass_min_hz", "lowpass_max_hz", "highpass_min_hz", "highpass_max_hz"):
            if not 0.0 < cfg[key] < nyquist:
                _fail(path, key, cfg[key], f"a cut-off must lie in (0, {nyquist:g}) Hz at {sample_rate} Hz")
        _check_range(cfg, path, "lowpass_min_hz", "lowpass_max_hz")
        _check_range(cfg, path, "highpass_min_hz", "highpass_max_hz")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomFilter":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        dev = _draw_device(generator)
        hp = torch.rand(batch_size, generator=generator, device=dev) < self.highpass_prob
        u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
        lo = torch.where(hp, self.highpass_range[0], self.lowpass_range[0])
        hi = torch.where(hp, self.highpass_range[1], self.lowpass_range[1])
        return {"highpass": hp, "cutoff_hz": lo + (hi - lo) * u}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return frequency_filter(x, params["cutoff_hz"], self.sample_rate, self.order, params["highpass"].to(x.device))

    spectral_role = "lti"

    def spectral_extent(self) -> int:
        lowest = min(self.lowpass_range[0], self.highpass_range[0])
        return math.ceil(2.0 * FILTER_PAD_PERIODS * self.sample_rate / lowest)

    def spectral_response(self, state: Any, rows: Tensor, n: int, time_scale: Tensor, warp: Tensor) -> Tensor:
        # Defined in Hz: a WSOLA stretch keeps frequencies; a later pitch shift moves the cut-off.
        dev = warp.device
        cutoff = state["cutoff_hz"][rows.to(state["cutoff_hz"].device)].to(dev, torch.float64) * warp
        return butterworth_on_grid(n, self.sample_rate, cutoff, self.order, state["highpass"][rows.to(state["highpass"].device)], dev)

    def spectral_rows(self, state: Any, n: int) -> Any:
        return state["cutoff_hz"].tolist(), state["highpass"].tolist()

    def spectral_multiply(self, state: Any, row: int, spec: Any, n: int, time_scale: float, warp: float) -> None:
        from vcmr.audio import kernels

        cutoff, highpass = state[0][row] * warp, state[1][row]
        kernels.mul_butterworth(spec.view(np.float32), self.sample_rate / (n * cutoff), self.order, highpass)

    def extra_repr(self) -> str:
        return f"p={self.p}, highpass_prob={self.highpass_prob}, order={self.order}"


@dataclasses.dataclass
class DelayConfig:
    """Echo: ``x + volume * x delayed``, delay drawn from ``min_ms, min_ms+step_ms, ..., max_ms``."""

    p: float = MISSING
    min_ms: float = MISSING
    max_ms: float = MISSING
    step_ms: float = MISSING
    volume: float = MISSING


class RandomDelay(RandomTransform):
    """Echo with a delay drawn from the grid ``min_ms, min_ms + step_ms, ..., max_ms``."""

    Config = DelayConfig

    def __init__(self, p: float, sample_rate: int, min_ms: float, max_ms: float, step_ms: float, volume: float):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.volume = float(volume)
        self.delays_ms = _grid(min_ms, max_ms, step_ms)

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        if cfg.min_ms < 0:
            _fail(path, "min_ms", cfg.min_ms, "a delay must be >= 0")
        if cfg.step_ms <= 0:
            _fail(path, "step_ms", cfg.step_ms, "the delay grid step must be > 0")
        _check_range(cfg, path, "min_ms", "max_ms")
        if cfg.p > 0 and cfg.max_ms * sample_rate / 1000.0 >= crop_length:
            _fail(path, "max_ms", cfg.max_ms, f"the delay must be shorter than the crop ({crop_length} samples)")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomDelay":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        ms = _choice(batch_size, torch.tensor(self.delays_ms, dtype=torch.float64), generator)
        return {"delay_ms": ms, "delay_samples": torch.round(ms * self.sample_rate / 1000.0).long()}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return delay(x, params["delay_samples"], self.volume)

    spectral_role = "lti"
    spectral_time_defined = True

    def spectral_extent(self) -> int:
        return int(round(max(self.delays_ms) * self.sample_rate / 1000.0))

    def spectral_response(self, state: Any, rows: Tensor, n: int, time_scale: Tensor, warp: Tensor) -> Tensor:
        d = state["delay_samples"][rows.to(state["delay_samples"].device)].to(warp.device).double()
        return delay_response(d * time_scale / warp, n, self.volume, warp.device)

    def spectral_rows(self, state: Any, n: int) -> Any:
        return state["delay_samples"].tolist()

    def spectral_multiply(self, state: Any, row: int, spec: Any, n: int, time_scale: float, warp: float) -> None:
        from vcmr.audio import kernels

        kernels.mul_echo(spec.view(np.float32), state[row] * time_scale / warp, n, self.volume, 1.0)


class _PitchTransform(RandomTransform):
    """What the two pitch shifts share: the method, its settings and the chain's FFT-pass hooks.

    ``method``: ``wsola`` (sox's ``pitch``: WSOLA time stretch, then band-limited resampling;
    tempo kept), ``phase_vocoder`` (the same with a phase vocoder) or ``resample``
    (playback-rate change: tempo changes too). ``n_fft``/``hop_length`` are the vocoder's STFT;
    ``segment_ms``/``search_ms``/``overlap_ms`` are WSOLA's (sox's ``tempo`` options).
    """

    def __init__(
        self,
        p: float,
        n_fft: int,
        hop_length: int,
        method: str,
        segment_ms: Optional[float],
        search_ms: Optional[float],
        overlap_ms: Optional[float],
        sample_rate: Optional[int],
        key: str,
    ):
        super().__init__(p)
        if method not in PITCH_METHODS:
            raise ConfigError(f"augment.{key}.method = {method!r}: must be one of {', '.join(PITCH_METHODS)}")
        self.n_fft, self.hop_length, self.method = int(n_fft), int(hop_length), str(method)
        self.wsola: Optional[Tuple[int, int, int]] = None
        if method == "wsola":
            if None in (segment_ms, search_ms, overlap_ms, sample_rate):
                raise ConfigError(f"augment.{key}: the wsola method needs segment_ms, search_ms, overlap_ms and the sample rate")
            self.wsola = wsola_sizes(int(sample_rate), float(segment_ms), float(search_ms), float(overlap_ms))
        self.spectral_role = "resample" if method in ("resample", "wsola") else ""

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        if cfg.hop_length <= 0 or cfg.hop_length > cfg.n_fft:
            _fail(path, "hop_length", cfg.hop_length, f"must be in [1, {path}.n_fft={cfg.n_fft}]")
        if cfg.n_fft < 2 or cfg.n_fft % 2:
            _fail(path, "n_fft", cfg.n_fft, "must be an even number >= 2")
        if cfg.method not in PITCH_METHODS:
            _fail(path, "method", cfg.method, f"must be one of {', '.join(PITCH_METHODS)}")
        if cfg.p > 0 and cfg.method == "phase_vocoder" and cfg.n_fft > crop_length:
            _fail(path, "n_fft", cfg.n_fft, f"the STFT window must not exceed the crop ({crop_length} samples)")
        for key in ("segment_ms", "search_ms", "overlap_ms"):
            if cfg[key] <= 0:
                _fail(path, key, cfg[key], "must be > 0 milliseconds")
        if cfg.p > 0 and cfg.method == "wsola":
            segment, search, overlap = wsola_sizes(sample_rate, cfg.segment_ms, cfg.search_ms, cfg.overlap_ms)
            if search < 1:
                _fail(path, "search_ms", cfg.search_ms, f"under one sample at {sample_rate} Hz")
            if 2 * overlap > segment:
                _fail(path, "segment_ms", cfg.segment_ms, f"{segment} samples hold less than twice the overlap ({overlap} samples)")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "_PitchTransform":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return pitch_shift(x, params["semitones"], self.n_fft, self.hop_length, self.method, self.wsola)

    # --- the chain's FFT pass (spectral_role "resample") ----------------------------------

    def target_ratio(self, params: Params) -> Tensor:
        """``[b]`` float64 frequency factors ``2 ** (semitones / 12)`` of the picked examples."""
        return torch.pow(2.0, params["semitones"].detach().cpu().double() / 12.0)

    def all_ratios(self) -> Tuple[float, ...]:
        """Every frequency factor :meth:`sample` can draw, ascending (as :meth:`target_ratio` computes it)."""
        return tuple(sorted(set(self.target_ratio({"semitones": self.semitone_values()}).tolist())))

    def semitone_values(self) -> Tensor:
        """``[K]`` float64: every shift in semitones :meth:`sample` can draw."""
        raise NotImplementedError

    def time_scale(self, ratio: Tensor) -> Tensor:
        """How much longer than the clip the signal that gets resampled is (``[b]``): ``ratio``
        after a WSOLA stretch, 1 for ``resample`` (a span of the clip itself)."""
        return ratio.clone() if self.method == "wsola" else torch.ones_like(ratio)

    def span(self, x: Tensor, ratio: Tensor, lengths: Tensor, length: int) -> Tensor:
        """``[b, length]`` signal whose band-limited resampling by ``ratio[b]`` is the output
        (:func:`vcmr.audio.dsp.pitch_span`); example ``b`` needs ``lengths[b]`` samples."""
        if self.method == "wsola":
            # One segment more than the longest needs: every example then ends the same way,
            # inside a cross-fade with the segment after its last (the stretch of a clip that
            # went on, cut), whether or not it is the longest of its batch.
            return wsola_stretch(x, ratio, length + self.wsola[0], *self.wsola, lengths=lengths)[:, :length]
        return pitch_span(x, length)

    def span_rows(
        self, x: Tensor, ratio: Tensor, lengths: Tensor, length: int, rows: Optional[Tensor] = None
    ) -> Callable[[int, Any, float], None]:
        """:meth:`span` on the CPU, one row at a time: the returned ``fill(j, out, scale)``
        writes ``scale * span(x[rows], ratio, lengths, length)[j, :len(out)]`` into ``out``
        (numpy float32, ``len(out) <= lengths[j]``; ``rows``: indices into ``x: [B, T]``, all
        of them if ``None``). The WSOLA search runs here for every row; each ``fill`` joins
        one row's blocks (:func:`vcmr.audio.kernels.wsola_join`)."""
        from vcmr.audio import kernels

        if self.method == "wsola":
            segment, _, overlap = self.wsola
            xp, starts = wsola_splices(x, ratio, length + segment, *self.wsola, lengths=lengths, rows=rows)
            xp_n, starts_n = xp.numpy(), starts.numpy()

            def fill_wsola(j: int, out: Any, scale: float) -> None:
                kernels.wsola_join(xp_n[j], starts_n[j], segment - overlap, overlap, scale, out)

            return fill_wsola
        span = pitch_span(x if rows is None else x.index_select(0, rows), length).numpy()

        def fill(j: int, out: Any, scale: float) -> None:
            np.multiply(span[j, : out.shape[0]], np.float32(scale), out=out)

        return fill


@dataclasses.dataclass
class PitchConfig:
    """Pitch shift by semitones drawn from ``min..max`` in ``step_semitones`` steps (0 excluded).

    ``method``: ``wsola`` (sox's pitch shift: WSOLA stretch, then resampling; keeps tempo;
    ``segment_ms``/``search_ms``/``overlap_ms`` are its settings), ``phase_vocoder`` (keeps
    tempo; ``n_fft``/``hop_length`` are its STFT) or ``resample`` (playback-rate change: also
    changes tempo).
    """

    p: float = MISSING
    min_semitones: float = MISSING
    max_semitones: float = MISSING
    step_semitones: float = MISSING
    n_fft: int = MISSING
    hop_length: int = MISSING
    method: str = MISSING
    segment_ms: float = MISSING
    search_ms: float = MISSING
    overlap_ms: float = MISSING


class RandomPitchShift(_PitchTransform):
    """Pitch shift by semitones drawn from a grid (0 excluded), batched per distinct value."""

    Config = PitchConfig

    def __init__(
        self,
        p: float,
        min_semitones: float,
        max_semitones: float,
        step_semitones: float,
        n_fft: int,
        hop_length: int,
        method: str = "phase_vocoder",
        segment_ms: Optional[float] = None,
        search_ms: Optional[float] = None,
        overlap_ms: Optional[float] = None,
        sample_rate: Optional[int] = None,
    ):
        super().__init__(p, n_fft, hop_length, method, segment_ms, search_ms, overlap_ms, sample_rate, "pitch")
        grid = _grid(min_semitones, max_semitones, step_semitones)
        self.semitones = [round(v, 9) for v in grid if abs(v) > 1e-9]

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        if cfg.step_semitones <= 0:
            _fail(path, "step_semitones", cfg.step_semitones, "the semitone grid step must be > 0")
        _check_range(cfg, path, "min_semitones", "max_semitones")
        super().validate(cfg, path, sample_rate, crop_length)

    def semitone_values(self) -> Tensor:
        return torch.tensor(self.semitones or [0.0], dtype=torch.float64)

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        if not self.semitones:
            return {"semitones": torch.zeros(batch_size, dtype=torch.float64)}
        return {"semitones": _choice(batch_size, torch.tensor(self.semitones, dtype=torch.float64), generator)}

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, method={self.method}, semitones={self.semitones}, "
            f"n_fft={self.n_fft}, hop_length={self.hop_length}, wsola={self.wsola}"
        )


@dataclasses.dataclass
class ReverbConfig:
    """Convolution with a synthetic decaying-noise room response, mixed with the dry signal.

    The responses come from a fixed bank (:func:`vcmr.audio.dsp.rir_bank`): ``rt60_steps``
    reverberation times evenly spaced from ``min_rt60_s`` to ``max_rt60_s``, each with
    ``irs_per_rt60`` independent noise draws from a generator seeded with ``bank_seed``.
    """

    p: float = MISSING
    min_rt60_s: float = MISSING
    max_rt60_s: float = MISSING
    rt60_steps: int = MISSING
    irs_per_rt60: int = MISSING
    bank_seed: int = MISSING
    min_wet: float = MISSING
    max_wet: float = MISSING
    ir_length_s: float = MISSING


class RandomReverb(RandomTransform):
    """Synthetic-room reverb: RT60 drawn uniformly from a grid, one of the bank's responses at
    that RT60, and a wet fraction drawn uniformly.

    Per example: ``rt60_s`` uniform over the ``rt60_steps`` values of the grid, the response
    ``rir_index`` uniform over the ``irs_per_rt60`` bank entries at that RT60 (the row of
    :func:`vcmr.audio.dsp.rir_bank`), ``wet`` uniform in ``[min_wet, max_wet]``. The response
    applied is the one of that RT60: the bank is a cache of responses, not an approximation
    of the draw. Inside the chain's FFT pass the responses' spectra at the pass's size are
    computed once and kept (:func:`vcmr.audio.dsp.rir_bank_spectra`).
    """

    Config = ReverbConfig

    def __init__(
        self,
        p: float,
        sample_rate: int,
        min_rt60_s: float,
        max_rt60_s: float,
        min_wet: float,
        max_wet: float,
        ir_length_s: float,
        rt60_steps: int,
        irs_per_rt60: int,
        bank_seed: int,
    ):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.rt60_range = (float(min_rt60_s), float(max_rt60_s))
        self.wet_range = (float(min_wet), float(max_wet))
        self.ir_length = max(1, int(round(ir_length_s * sample_rate)))
        steps = 1 if min_rt60_s == max_rt60_s else int(rt60_steps)
        #: The RT60 grid (seconds), a tuple so that it keys the bank caches.
        grid = torch.linspace(float(min_rt60_s), float(max_rt60_s), steps, dtype=torch.float64)
        self.rt60_grid = tuple(grid.tolist())
        self.irs_per_rt60, self.bank_seed = int(irs_per_rt60), int(bank_seed)

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        if cfg.min_rt60_s <= 0:
            _fail(path, "min_rt60_s", cfg.min_rt60_s, "a reverberation time must be > 0 seconds")
        _check_range(cfg, path, "min_rt60_s", "max_rt60_s")
        if cfg.rt60_steps < 1:
            _fail(path, "rt60_steps", cfg.rt60_steps, "the RT60 grid needs at least 1 value")
        if cfg.rt60_steps == 1 and cfg.min_rt60_s != cfg.max_rt60_s:
            _fail(path, "rt60_steps", cfg.rt60_steps, "a grid of 1 value needs min_rt60_s == max_rt60_s")
        if cfg.irs_per_rt60 < 1:
            _fail(path, "irs_per_rt60", cfg.irs_per_rt60, "the bank needs at least 1 response per RT60")
        for key in ("min_wet", "max_wet"):
            if not 0.0 <= cfg[key] <= 1.0:
                _fail(path, key, cfg[key], "the wet fraction must be in [0, 1]")
        _check_range(cfg, path, "min_wet", "max_wet")
        if cfg.ir_length_s <= 0:
            _fail(path, "ir_length_s", cfg.ir_length_s, "the impulse response length must be > 0 seconds")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomReverb":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        dev = _draw_device(generator)
        step = torch.randint(len(self.rt60_grid), (batch_size,), generator=generator, device=dev)
        draw = torch.randint(self.irs_per_rt60, (batch_size,), generator=generator, device=dev)
        return {
            "rt60_s": torch.tensor(self.rt60_grid, dtype=torch.float64, device=dev)[step],
            "rir_index": step * self.irs_per_rt60 + draw,
            "wet": _uniform(batch_size, *self.wet_range, generator),
        }

    def bank(self, device: torch.device) -> Tensor:
        """``[rt60_steps * irs_per_rt60, ir_length]`` float32 responses (row ``i``: RT60
        ``rt60_grid[i // irs_per_rt60]``), built once per device."""
        return rir_bank(self.rt60_grid, self.irs_per_rt60, self.ir_length, self.sample_rate, self.bank_seed, device)

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        rir = self.bank(x.device)[params["rir_index"].to(x.device), : x.shape[-1]]
        return reverb(x, rir.unsqueeze(1), params["wet"])

    spectral_role = "lti"

    def spectral_extent(self) -> int:
        return self.ir_length

    def spectral_response(self, state: Any, rows: Tensor, n: int, time_scale: Tensor, warp: Tensor) -> Tensor:
        # Applied after any pitch shift in the chain's order (time_scale and warp are 1).
        dev = warp.device
        rows = rows.to(state["wet"].device)
        spectra = rir_bank_spectra(
            self.rt60_grid, self.irs_per_rt60, self.ir_length, self.sample_rate, self.bank_seed, n, dev
        )
        wet = state["wet"][rows].to(dev, torch.float32).view(-1, 1)
        return spectra.index_select(0, state["rir_index"][rows].to(dev)).mul_(wet).add_(1.0 - wet)

    def spectral_rows(self, state: Any, n: int) -> Any:
        spectra = rir_bank_spectra(
            self.rt60_grid, self.irs_per_rt60, self.ir_length, self.sample_rate, self.bank_seed, n, torch.device("cpu")
        )
        # The bank as float32 pairs [rows, 2 (n // 2 + 1)], looked up once per batch.
        return state["rir_index"].tolist(), state["wet"].float().tolist(), spectra.numpy().view(np.float32)

    def spectral_multiply(self, state: Any, row: int, spec: Any, n: int, time_scale: float, warp: float) -> None:
        from vcmr.audio import kernels

        kernels.mul_mix(spec.view(np.float32), state[2][state[0][row]], state[1][row])

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, rt60_s={self.rt60_range} in {len(self.rt60_grid)} steps, irs_per_rt60={self.irs_per_rt60}, "
            f"wet={self.wet_range}, ir_length={self.ir_length}"
        )


# --------------------------------------------------------------------------------------
# CLMR-exact variants of five transforms (config/augment/clmr_exact.yaml); the signal
# processing is in vcmr.audio.dsp_clmr. Each sits next to its fast sibling in TRANSFORMS.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class NoiseStdConfig:
    """CLMR's noise: white Gaussian noise with std ``r * std(x)``, ``r`` uniform in ``[min_std_ratio, max_std_ratio]``."""

    p: float = MISSING
    min_std_ratio: float = MISSING
    max_std_ratio: float = MISSING


class RandomNoiseStd(RandomTransform):
    """Additive white noise whose std is a uniformly drawn fraction of the example's std (CLMR's ``Noise``)."""

    Config = NoiseStdConfig
    pointwise = True

    def __init__(self, p: float, min_std_ratio: float, max_std_ratio: float):
        super().__init__(p)
        self.ratio_range = (float(min_std_ratio), float(max_std_ratio))

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        if cfg.min_std_ratio < 0:
            _fail(path, "min_std_ratio", cfg.min_std_ratio, "a noise std ratio must be >= 0")
        _check_range(cfg, path, "min_std_ratio", "max_std_ratio")

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        return {"std_ratio": _uniform(batch_size, *self.ratio_range, generator)}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return add_noise_std(x, params["std_ratio"], _randn_like(x, generator))

    def extra_repr(self) -> str:
        return f"p={self.p}, std_ratio={self.ratio_range}"


@dataclasses.dataclass
class SincFilterConfig:
    """CLMR's filter: julius' windowed-sinc high-pass (probability ``highpass_prob``) or low-pass."""

    p: float = MISSING
    highpass_prob: float = MISSING
    zeros: float = MISSING
    lowpass_min_hz: float = MISSING
    lowpass_max_hz: float = MISSING
    highpass_min_hz: float = MISSING
    highpass_max_hz: float = MISSING


class RandomSincFilter(RandomTransform):
    """Windowed-sinc (Hann, ``zeros`` zero crossings per side) high- or low-pass, cut-off drawn uniformly."""

    Config = SincFilterConfig

    def __init__(
        self,
        p: float,
        sample_rate: int,
        highpass_prob: float,
        zeros: float,
        lowpass_min_hz: float,
        lowpass_max_hz: float,
        highpass_min_hz: float,
        highpass_max_hz: float,
    ):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.highpass_prob = float(highpass_prob)
        self.zeros = float(zeros)
        self.lowpass_range = (float(lowpass_min_hz), float(lowpass_max_hz))
        self.highpass_range = (float(highpass_min_hz), float(highpass_max_hz))

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        check_probability(cfg, path, "highpass_prob")
        if cfg.zeros <= 0:
            _fail(path, "zeros", cfg.zeros, "the number of zero crossings must be > 0")
        _check_range(cfg, path, "lowpass_min_hz", "lowpass_max_hz")
        _check_range(cfg, path, "highpass_min_hz", "highpass_max_hz")
        if cfg.p == 0:
            return  # an unused block may hold another sample rate's ranges
        nyquist = sample_rate / 2.0
        for key in ("lowpass_min_hz", "lowpass_max_hz", "highpass_min_hz", "highpass_max_hz"):
            if not 0.0 < cfg[key] < nyquist:
                _fail(path, key, cfg[key], f"a cut-off must lie in (0, {nyquist:g}) Hz at {sample_rate} Hz")
        taps = 2 * sinc_half_size(min(cfg.lowpass_min_hz, cfg.highpass_min_hz) / sample_rate, cfg.zeros) + 1
        if taps > crop_length:
            _fail(path, "zeros", cfg.zeros, f"the longest filter ({taps} taps) exceeds the crop ({crop_length} samples)")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomSincFilter":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        dev = _draw_device(generator)
        hp = torch.rand(batch_size, generator=generator, device=dev) < self.highpass_prob
        u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
        lo = torch.where(hp, self.highpass_range[0], self.lowpass_range[0])
        hi = torch.where(hp, self.highpass_range[1], self.lowpass_range[1])
        return {"highpass": hp, "cutoff_hz": lo + (hi - lo) * u}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return sinc_filter(x, params["cutoff_hz"], self.sample_rate, params["highpass"].to(x.device), self.zeros)

    def extra_repr(self) -> str:
        return f"p={self.p}, highpass_prob={self.highpass_prob}, zeros={self.zeros}"


@dataclasses.dataclass
class MixDelayConfig:
    """CLMR's delay: ``(x + volume * x delayed) / 2``, delay from ``min_ms, min_ms + step_ms, ... < stop_ms``."""

    p: float = MISSING
    min_ms: float = MISSING
    stop_ms: float = MISSING
    step_ms: float = MISSING
    volume: float = MISSING


class RandomMixDelay(RandomTransform):
    """``(x + volume * x[t - d]) / 2``; ``d = int(ms * sample_rate / 1000)``, ``ms`` from ``numpy.arange(min_ms, stop_ms, step_ms)``."""

    Config = MixDelayConfig

    def __init__(self, p: float, sample_rate: int, min_ms: float, stop_ms: float, step_ms: float, volume: float):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.volume = float(volume)
        n = int(math.ceil((float(stop_ms) - float(min_ms)) / float(step_ms) - 1e-9))
        self.delays_ms = [float(min_ms) + i * float(step_ms) for i in range(max(n, 0))]

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        if cfg.step_ms <= 0:
            _fail(path, "step_ms", cfg.step_ms, "the delay grid step must be > 0")
        if cfg.stop_ms <= cfg.min_ms:
            _fail(path, "stop_ms", cfg.stop_ms, f"must exceed {path}.min_ms ({cfg.min_ms}); the grid stops before it")
        if cfg.p > 0:
            if int(cfg.min_ms * sample_rate / 1000.0) < 1:
                _fail(path, "min_ms", cfg.min_ms, f"the shortest delay is under one sample at {sample_rate} Hz")
            if cfg.stop_ms * sample_rate / 1000.0 >= crop_length:
                _fail(path, "stop_ms", cfg.stop_ms, f"the delay must be shorter than the crop ({crop_length} samples)")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomMixDelay":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        ms = _choice(batch_size, torch.tensor(self.delays_ms, dtype=torch.float64), generator)
        # int(): truncation, as CLMR's calc_offset.
        return {"delay_ms": ms, "delay_samples": torch.floor(ms * self.sample_rate / 1000.0 + 1e-9).long()}

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return mix_delay(x, params["delay_samples"], self.volume)

    spectral_role = "lti"
    spectral_time_defined = True

    def spectral_extent(self) -> int:
        return int(math.floor(max(self.delays_ms, default=0.0) * self.sample_rate / 1000.0 + 1e-9))

    def spectral_response(self, state: Any, rows: Tensor, n: int, time_scale: Tensor, warp: Tensor) -> Tensor:
        d = state["delay_samples"][rows.to(state["delay_samples"].device)].to(warp.device).double()
        return delay_response(d * time_scale / warp, n, self.volume, warp.device).mul_(0.5)

    def spectral_rows(self, state: Any, n: int) -> Any:
        return state["delay_samples"].tolist()

    def spectral_multiply(self, state: Any, row: int, spec: Any, n: int, time_scale: float, warp: float) -> None:
        from vcmr.audio import kernels

        kernels.mul_echo(spec.view(np.float32), state[row] * time_scale / warp, n, self.volume, 0.5)

    def extra_repr(self) -> str:
        return f"p={self.p}, delays_ms={self.delays_ms}, volume={self.volume}"


@dataclasses.dataclass
class PitchCentsConfig:
    """CLMR's pitch shift: an integer number of cents drawn uniformly in ``[min_cents, max_cents]`` (0 included).

    ``method`` and its settings as in :class:`PitchConfig`; ``wsola`` is sox's own algorithm.
    """

    p: float = MISSING
    min_cents: int = MISSING
    max_cents: int = MISSING
    n_fft: int = MISSING
    hop_length: int = MISSING
    method: str = MISSING
    segment_ms: float = MISSING
    search_ms: float = MISSING
    overlap_ms: float = MISSING


class RandomPitchCents(_PitchTransform):
    """Pitch shift by ``c`` cents, ``c`` a uniform integer in ``[min_cents, max_cents]`` (``random.randint``)."""

    Config = PitchCentsConfig

    def __init__(
        self,
        p: float,
        min_cents: int,
        max_cents: int,
        n_fft: int,
        hop_length: int,
        method: str,
        segment_ms: Optional[float] = None,
        search_ms: Optional[float] = None,
        overlap_ms: Optional[float] = None,
        sample_rate: Optional[int] = None,
    ):
        super().__init__(p, n_fft, hop_length, method, segment_ms, search_ms, overlap_ms, sample_rate, "pitch_cents")
        self.cents_range = (int(min_cents), int(max_cents))

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        _check_range(cfg, path, "min_cents", "max_cents")
        super().validate(cfg, path, sample_rate, crop_length)

    def semitone_values(self) -> Tensor:
        lo, hi = self.cents_range
        return torch.arange(lo, hi + 1, dtype=torch.float64) / 100.0

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        lo, hi = self.cents_range
        dev = _draw_device(generator)
        cents = torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=dev)
        return {"cents": cents, "semitones": cents.double() / 100.0}

    def extra_repr(self) -> str:
        return f"p={self.p}, cents={self.cents_range}, method={self.method}, n_fft={self.n_fft}, hop_length={self.hop_length}, wsola={self.wsola}"


@dataclasses.dataclass
class SoxReverbConfig:
    """CLMR's reverb: sox ``reverb`` with reverberance, HF damping and room scale (percent) drawn
    as uniform integers in ``[min, max]``; ``stereo_depth``, ``pre_delay_ms`` and ``wet_gain_db`` fixed."""

    p: float = MISSING
    min_reverberance: int = MISSING
    max_reverberance: int = MISSING
    min_damping: int = MISSING
    max_damping: int = MISSING
    min_room_scale: int = MISSING
    max_room_scale: int = MISSING
    stereo_depth: float = MISSING
    pre_delay_ms: float = MISSING
    wet_gain_db: float = MISSING


class RandomSoxReverb(RandomTransform):
    """sox's Freeverb-style reverb (:func:`vcmr.audio.dsp_clmr.sox_reverb`), parameters per example."""

    Config = SoxReverbConfig
    _KEYS = ("reverberance", "damping", "room_scale")

    def __init__(
        self,
        p: float,
        sample_rate: int,
        min_reverberance: int,
        max_reverberance: int,
        min_damping: int,
        max_damping: int,
        min_room_scale: int,
        max_room_scale: int,
        stereo_depth: float,
        pre_delay_ms: float,
        wet_gain_db: float,
    ):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.ranges = {
            "reverberance": (int(min_reverberance), int(max_reverberance)),
            "damping": (int(min_damping), int(max_damping)),
            "room_scale": (int(min_room_scale), int(max_room_scale)),
        }
        self.stereo_depth, self.pre_delay_ms, self.wet_gain_db = float(stereo_depth), float(pre_delay_ms), float(wet_gain_db)

    @classmethod
    def validate(cls, cfg: DictConfig, path: str, sample_rate: int, crop_length: int) -> None:
        for key in cls._KEYS:
            for bound in ("min", "max"):
                name = f"{bound}_{key}"
                if not 0 <= cfg[name] <= 100:
                    _fail(path, name, cfg[name], "a sox reverb percentage must be in [0, 100]")
            _check_range(cfg, path, f"min_{key}", f"max_{key}")
        if not 0 <= cfg.stereo_depth <= 100:
            _fail(path, "stereo_depth", cfg.stereo_depth, "a percentage must be in [0, 100]")
        if cfg.pre_delay_ms < 0:
            _fail(path, "pre_delay_ms", cfg.pre_delay_ms, "must be >= 0")

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, sample_rate: int) -> "RandomSoxReverb":
        return cls(sample_rate=sample_rate, **_config_kwargs(cfg))

    def sample(self, batch_size: int, generator: Optional[torch.Generator]) -> Params:
        dev = _draw_device(generator)
        return {
            k: torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=dev).double()
            for k, (lo, hi) in self.ranges.items()
        }

    def apply(self, x: Tensor, params: Params, generator: Optional[torch.Generator]) -> Tensor:
        return sox_reverb(
            x, params["reverberance"].cpu(), params["damping"].cpu(), params["room_scale"].cpu(), self.sample_rate,
            self.stereo_depth, self.pre_delay_ms, self.wet_gain_db,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, ranges={self.ranges}, stereo_depth={self.stereo_depth}"


#: Config key under ``augment:`` -> transform, in the order the chain applies them (CLMR's:
#: polarity, noise, gain, filter, delay, pitch, reverb). Each CLMR-exact variant follows its
#: fast sibling; a chain turns one of the two on (``p > 0``), so the order stays CLMR's.
TRANSFORMS: Dict[str, Type[RandomTransform]] = {
    "polarity": RandomPolarity,
    "noise": RandomNoise,
    "noise_std": RandomNoiseStd,
    "gain": RandomGain,
    "filter": RandomFilter,
    "filter_sinc": RandomSincFilter,
    "delay": RandomDelay,
    "delay_mix": RandomMixDelay,
    "pitch": RandomPitchShift,
    "pitch_cents": RandomPitchCents,
    "reverb": RandomReverb,
    "reverb_sox": RandomSoxReverb,
}


__all__ = [
    "TRANSFORMS",
    "check_probability",
    "DelayConfig",
    "FilterConfig",
    "GainConfig",
    "MixDelayConfig",
    "NoiseConfig",
    "NoiseStdConfig",
    "PitchCentsConfig",
    "Params",
    "PitchConfig",
    "PolarityConfig",
    "RandomDelay",
    "RandomFilter",
    "RandomGain",
    "RandomMixDelay",
    "RandomNoise",
    "RandomNoiseStd",
    "RandomPitchCents",
    "RandomPitchShift",
    "RandomPolarity",
    "RandomReverb",
    "RandomSincFilter",
    "RandomSoxReverb",
    "RandomTransform",
    "ReverbConfig",
    "SincFilterConfig",
    "SoxReverbConfig",
]
