"""Throughput of the batched augmentation chains against a per-example audiomentations chain.

Three chains, in the same run, on the same synthetic music and the same batches:

* default: :func:`vcmr.audio.augment.build_augmentation` from ``--config``
  (``config/augment/clmr.yaml``: WSOLA pitch shift, filter, delay, pitch and reverb in one
  FFT pass), whole batches on ``--device``;
* CLMR-exact: the same from ``--exact-config`` (``config/augment/clmr_exact.yaml``: julius
  sinc filter, CLMR's delay, pitch in cents, sox's reverb);
* reference: audiomentations, one clip at a time on the CPU, with the probabilities and
  ranges of ``--config`` (PolarityInversion, AddGaussianSNR, Gain, OneOf(HighPassFilter,
  LowPassFilter), a numpy delay (audiomentations has none), PitchShift,
  ApplyImpulseResponse over synthetic room responses written to a temporary folder), after a
  numpy random crop. It is single-threaded numpy/scipy (and signalsmith-stretch's C++).

For each torch thread count in ``--threads`` (set with ``torch.set_num_threads`` in this
process) the chains take turns batch by batch, ``--reps`` batches each, so that load from
other processes slows them alike; rates are medians over the batches. Before measuring, the
script waits (up to ``--max-wait-s``) for the 1-minute load average to drop below
``--max-load`` and prints it either way, and again after each thread count.

The CPU FFTs are MKL's with kept plans where torch ships MKL (:mod:`vcmr.audio.cpu_fft`; the
header names the backend); ``VCMR_CPU_FFT=pocketfft`` measures scipy's pocketFFT instead.

The script sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it (see the comment at
the imports); ``OMP_WAIT_POLICY=ACTIVE python benchmarks/bench_augment.py`` measures torch's
default spinning threads.

Run by hand (needs the ``dev`` extra for audiomentations)::

    python benchmarks/bench_augment.py --batch 32 --reps 10 --threads 1 2

It prints clips per second of every chain and the ratios to audiomentations side by side,
then each chain's milliseconds per batch step by step (a step is the random crop with the
transforms applied while cutting it, one transform, or the transforms the chain runs in one
FFT pass, named ``a+b+c``).
"""

from __future__ import annotations

import os

# torch's OpenMP worker threads sleep between parallel regions instead of spinning: on a
# machine shared with other busy processes, a spinning thread takes a core from the thread
# that runs the chain's sequential steps (the WSOLA search), which made 2-thread runs several
# times slower than 1-thread ones. Read when torch loads its OpenMP runtime, so before
# `import torch`; a value set in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Dict, List, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vcmr.audio import cpu_fft  # noqa: E402
from vcmr.audio.augment import AugmentationChain, build_augmentation  # noqa: E402
from vcmr.audio.dsp import synthetic_rir  # noqa: E402
from vcmr.audio.io import save_audio  # noqa: E402
from vcmr.utils import progress_bar  # noqa: E402
from vcmr.config import load_config  # noqa: E402
from vcmr.demo.synth import random_spec, render  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "augment" / "clmr.yaml"), help="augment YAML (default chain)")
    ap.add_argument(
        "--exact-config",
        default=str(ROOT / "config" / "augment" / "clmr_exact.yaml"),
        help="augment YAML of the CLMR-exact chain ('' leaves it out)",
    )
    ap.add_argument("--batch", type=int, default=32, help="batch size of the torch chains (= clips per turn)")
    ap.add_argument("--reps", type=int, default=7, help="timed batches per chain and thread count")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts to measure")
    ap.add_argument("--device", default="cpu", help="device of the torch chains (cpu or cuda)")
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--clip-length", type=int, default=98415, help="output samples per clip (the crop)")
    ap.add_argument("--input-length", type=int, default=114415, help="samples per clip before the crop")
    ap.add_argument("--n-songs", type=int, default=8, help="distinct synthetic songs, cycled")
    ap.add_argument(
        "--pitch-method",
        default="signalsmith_stretch",
        choices=["signalsmith_stretch", "librosa_phase_vocoder"],
        help="audiomentations PitchShift method (signalsmith_stretch is its default)",
    )
    ap.add_argument("--n-irs", type=int, default=8, help="synthetic impulse responses for the reference")
    ap.add_argument("--max-load", type=float, default=2.5, help="wait while the 1-minute load average is above this")
    ap.add_argument("--max-wait-s", type=float, default=600.0, help="longest wait for the load to drop")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def make_songs(n: int, sample_rate: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seconds = length / sample_rate + 0.01
    return np.stack([render(random_spec(rng), sample_rate, seconds)[:length] for _ in range(n)]).astype(np.float32)


def wait_for_quiet(max_load: float, max_wait_s: float) -> float:
    """Wait until the 1-minute load average is <= ``max_load`` (or ``max_wait_s`` passed)."""
    start = time.monotonic()
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() - start < max_wait_s:
        print(f"load average {load:.2f} > {max_load}: waiting ({time.monotonic() - start:.0f} s so far)", flush=True)
        time.sleep(min(30.0, max(1.0, max_wait_s - (time.monotonic() - start))))
        load = os.getloadavg()[0]
    return load


def reference_chain(cfg, sample_rate: int, ir_dir: Path, pitch_method: str) -> List[Tuple[str, Callable]]:
    """The same chain, per example, from audiomentations (+ numpy delay), as named steps."""
    from audiomentations import (
        AddGaussianSNR,
        ApplyImpulseResponse,
        Gain,
        HighPassFilter,
        LowPassFilter,
        OneOf,
        PitchShift,
        PolarityInversion,
    )

    f = cfg.filter
    rolloff = 6 * f.order  # Butterworth: 6 dB per octave per order
    d = cfg.delay
    delays_ms = np.arange(d.min_ms, d.max_ms + d.step_ms / 2, d.step_ms)
    rng = np.random.default_rng(1)

    def echo(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if rng.random() >= d.p:
            return samples
        offset = int(round(rng.choice(delays_ms) * sample_rate / 1000.0))
        out = samples.copy()
        out[offset:] += d.volume * samples[: len(samples) - offset]
        return out

    return [
        ("polarity", PolarityInversion(p=cfg.polarity.p)),
        ("noise", AddGaussianSNR(min_snr_db=cfg.noise.min_snr_db, max_snr_db=cfg.noise.max_snr_db, p=cfg.noise.p)),
        ("gain", Gain(min_gain_db=cfg.gain.min_db, max_gain_db=cfg.gain.max_db, p=cfg.gain.p)),
        (
            "filter",
            OneOf(
                [
                    HighPassFilter(f.highpass_min_hz, f.highpass_max_hz, rolloff, rolloff, p=1.0),
                    LowPassFilter(f.lowpass_min_hz, f.lowpass_max_hz, rolloff, rolloff, p=1.0),
                ],
                weights=[f.highpass_prob, 1.0 - f.highpass_prob],
                p=f.p,
            ),
        ),
        ("delay", echo),
        ("pitch", PitchShift(cfg.pitch.min_semitones, cfg.pitch.max_semitones, method=pitch_method, p=cfg.pitch.p)),
        ("reverb", ApplyImpulseResponse(ir_path=str(ir_dir), p=cfg.reverb.p, leave_length_unchanged=True)),
    ]


class TorchTimer:
    """Times the batched chain, one batch per call, and each of its steps.

    The steps are the chain's own, timed by the chain
    (:meth:`AugmentationChain.forward_with_params` with ``step_seconds``): the crop with the
    transforms applied while cutting it (``crop+polarity+noise+gain``), then each transform or
    FFT pass (``a+b+c``).
    """

    def __init__(self, chain: AugmentationChain, songs: np.ndarray, batch: int, device: str, seed: int):
        self.dev = torch.device(device)
        self.chain = copy.deepcopy(chain).to(self.dev)
        self.x = torch.from_numpy(songs[np.arange(batch) % len(songs)]).unsqueeze(1).to(self.dev)
        self.gen = torch.Generator(device=self.dev).manual_seed(seed)
        self.rates: List[float] = []
        self.parts: Dict[str, List[float]] = {}
        # Warm-up (FFT plans, cached windows and sizes, compiled loops).
        self.chain(self.x, torch.Generator(device=self.dev).manual_seed(seed))

    def step(self) -> None:
        acc: Dict[str, float] = {}
        start = time.perf_counter()
        out, _ = self.chain.forward_with_params(self.x, self.gen, step_seconds=acc)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        seconds = time.perf_counter() - start
        assert out.shape == (self.x.shape[0], 1, self.chain.crop_length)
        self.rates.append(out.shape[0] / seconds)
        for name, s in acc.items():
            self.parts.setdefault(name, []).append(s)


class ReferenceTimer:
    """Times the audiomentations chain, one clip at a time after a numpy random crop."""

    def __init__(self, steps: List[Tuple[str, Callable]], songs: np.ndarray, clip_length: int, sr: int, seed: int):
        self.steps, self.songs, self.clip_length, self.sr = steps, songs, clip_length, sr
        self.rng = np.random.default_rng(seed)
        self.rates: List[float] = []
        self.parts: Dict[str, List[float]] = {"crop": []} | {name: [] for name, _ in steps}
        self.clips = 0
        self._run_clip({})  # warm-up: impulse-response files, caches

    def _run_clip(self, acc: Dict[str, float]) -> None:
        start = time.perf_counter()
        song = self.songs[self.clips % len(self.songs)]
        offset = self.rng.integers(0, song.shape[0] - self.clip_length + 1)
        y = song[offset : offset + self.clip_length].copy()
        acc["crop"] = acc.get("crop", 0.0) + time.perf_counter() - start
        for name, transform in self.steps:
            start = time.perf_counter()
            y = transform(samples=y, sample_rate=self.sr).astype(np.float32, copy=False)
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - start
        assert y.shape == (self.clip_length,)
        self.clips += 1

    def step(self, n: int) -> None:
        acc: Dict[str, float] = {}
        start = time.perf_counter()
        for _ in range(n):
            self._run_clip(acc)
        self.rates.append(n / (time.perf_counter() - start))
        for name, s in acc.items():
            self.parts[name].append(s)


def median_ms(values: List[float]) -> float:
    return 1000.0 * statistics.median(values) if values else float("nan")


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config).augment
    sr = args.sample_rate
    if args.input_length < args.clip_length:
        raise SystemExit(f"--input-length ({args.input_length}) must be >= --clip-length ({args.clip_length})")
    songs = make_songs(args.n_songs, sr, args.input_length, args.seed)
    chains = {"default": build_augmentation(cfg, sr, args.clip_length)}
    if args.exact_config:
        chains["CLMR-exact"] = build_augmentation(load_config(args.exact_config).augment, sr, args.clip_length)

    print(
        f"clips of {args.clip_length} samples at {sr} Hz (cropped from {args.input_length}); "
        f"default chain {args.config}; CLMR-exact chain {args.exact_config or '-'}; torch {torch.__version__}; "
        f"device {args.device}; batch {args.batch}; {args.reps} batches per chain; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; CPU FFTs: {cpu_fft.backend()}"
    )
    load = wait_for_quiet(args.max_load, args.max_wait_s)
    print(f"load average before: {load:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min) on {os.cpu_count()} CPUs")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # Synthetic room responses spanning the config's RT60 range, as wav files.
        ir_len = int(round(cfg.reverb.ir_length_s * sr))
        rt60 = torch.linspace(cfg.reverb.min_rt60_s, cfg.reverb.max_rt60_s, args.n_irs, dtype=torch.float64)
        irs = synthetic_rir(rt60, ir_len, sr, torch.Generator().manual_seed(args.seed))
        for i in range(args.n_irs):
            save_audio(Path(tmp) / f"ir_{i}.wav", irs[i, 0].numpy(), sr)
        for n_threads in args.threads:
            torch.set_num_threads(n_threads)
            timers = {name: TorchTimer(c, songs, args.batch, args.device, args.seed) for name, c in chains.items()}
            steps = reference_chain(cfg, sr, Path(tmp), args.pitch_method)
            ref = ReferenceTimer(steps, songs, args.clip_length, sr, args.seed)
            load_before = os.getloadavg()[0]
            # Interleave the chains batch by batch so that a busy machine slows them alike.
            for _ in progress_bar(range(args.reps), desc=f"{n_threads} thread(s)", leave=False):
                for timer in timers.values():
                    timer.step()
                ref.step(args.batch)
            results.append((n_threads, timers, ref, load_before, os.getloadavg()[0]))

    ref_name = f"audiomentations (PitchShift {args.pitch_method})"
    names = list(chains)
    print(f"\n{'torch threads':<14s}{'load 1 min':>12s}" + "".join(f"{n + ' clips/s':>22s}" for n in names)
          + f"{'audiomentations clips/s':>26s}" + "".join(f"{n + ' ratio':>20s}" for n in names))
    for n_threads, timers, ref, load_before, load_after in results:
        ref_rate = statistics.median(ref.rates)
        rates = [statistics.median(timers[n].rates) for n in names]
        print(f"{n_threads:<14d}{f'{load_before:.1f}-{load_after:.1f}':>12s}" + "".join(f"{r:22.1f}" for r in rates)
              + f"{ref_rate:26.1f}" + "".join(f"{r / ref_rate:19.2f}x" for r in rates))
    print(f"(reference: {ref_name}, per example; ratio = torch clips/s / audiomentations clips/s)")
    for n_threads, timers, ref, _, _ in results:
        print(f"\n== ms per batch of {args.batch} (median), torch threads: {n_threads}")
        for name, timer in list(timers.items()) + [(ref_name, ref)]:
            print(f"  {name}:")
            for step, values in timer.parts.items():
                print(f"    {step:<44s}{median_ms(values):10.1f}")


if __name__ == "__main__":
    main()
