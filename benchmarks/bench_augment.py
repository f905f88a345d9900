"""Throughput of the batched augmentation chain against a per-example audiomentations chain.

Both chains use the probabilities and parameter ranges of the same config
(``config/augment/clmr.yaml`` by default) on the same synthetic music, in the same run:

* torch: :func:`vcmr.audio.augment.build_augmentation`, whole batches on ``--device``;
* reference: audiomentations, one clip at a time on the CPU (PolarityInversion,
  AddGaussianSNR, Gain, OneOf(HighPassFilter, LowPassFilter), a numpy delay (audiomentations
  has none), PitchShift, ApplyImpulseResponse over synthetic room responses written to a
  temporary folder), after a numpy random crop.

Run by hand (needs the ``dev`` extra for audiomentations)::

    python benchmarks/bench_augment.py --batch 32 --n-clips 128 --device auto

It prints clips per second for each chain and the speed-up of the torch chain.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import torch
from tqdm import tqdm

from vcmr.audio.augment import build_augmentation, synthetic_rir
from vcmr.audio.io import save_audio
from vcmr.config import load_config
from vcmr.data.synth import random_spec, render

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "augment" / "clmr.yaml"), help="augment YAML")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the torch chain")
    ap.add_argument("--n-clips", type=int, default=128, help="clips timed per chain (rounded up to whole batches)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cpu, plus cuda when available)")
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--clip-length", type=int, default=98415, help="output samples per clip (the crop)")
    ap.add_argument("--input-length", type=int, default=114415, help="samples per clip before the crop")
    ap.add_argument("--n-songs", type=int, default=8, help="distinct synthetic songs, cycled")
    ap.add_argument(
        "--pitch-method",
        default="signalsmith_stretch",
        choices=["signalsmith_stretch", "librosa_phase_vocoder"],
        help="audiomentations PitchShift method",
    )
    ap.add_argument("--n-irs", type=int, default=8, help="synthetic impulse responses for the reference")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def make_songs(n: int, sample_rate: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seconds = length / sample_rate + 0.01
    return np.stack([render(random_spec(rng), sample_rate, seconds)[:length] for _ in range(n)]).astype(np.float32)


def reference_chain(cfg, sample_rate: int, ir_dir: Path, pitch_method: str) -> Callable[[np.ndarray], np.ndarray]:
    """The same chain, per example, from audiomentations (+ numpy delay)."""
    from audiomentations import (
        AddGaussianSNR,
        ApplyImpulseResponse,
        Compose,
        Gain,
        HighPassFilter,
        LowPassFilter,
        OneOf,
        PitchShift,
        PolarityInversion,
    )

    f = cfg.filter
    rolloff = 6 * f.order  # Butterworth: 6 dB per octave per order
    before_delay = Compose(
        [
            PolarityInversion(p=cfg.polarity.p),
            AddGaussianSNR(min_snr_db=cfg.noise.min_snr_db, max_snr_db=cfg.noise.max_snr_db, p=cfg.noise.p),
            Gain(min_gain_db=cfg.gain.min_db, max_gain_db=cfg.gain.max_db, p=cfg.gain.p),
            OneOf(
                [
                    HighPassFilter(f.highpass_min_hz, f.highpass_max_hz, rolloff, rolloff, p=1.0),
                    LowPassFilter(f.lowpass_min_hz, f.lowpass_max_hz, rolloff, rolloff, p=1.0),
                ],
                weights=[f.highpass_prob, 1.0 - f.highpass_prob],
                p=f.p,
            ),
        ]
    )
    after_delay = Compose(
        [
            PitchShift(cfg.pitch.min_semitones, cfg.pitch.max_semitones, method=pitch_method, p=cfg.pitch.p),
            ApplyImpulseResponse(ir_path=str(ir_dir), p=cfg.reverb.p, leave_length_unchanged=True),
        ]
    )
    d = cfg.delay
    delays_ms = np.arange(d.min_ms, d.max_ms + d.step_ms / 2, d.step_ms)
    rng = np.random.default_rng(1)

    def run(x: np.ndarray) -> np.ndarray:
        y = before_delay(samples=x, sample_rate=sample_rate)
        if rng.random() < d.p:
            offset = int(round(rng.choice(delays_ms) * sample_rate / 1000.0))
            echo = np.zeros_like(y)
            echo[offset:] = y[: len(y) - offset]
            y = y + d.volume * echo
        return after_delay(samples=y.astype(np.float32), sample_rate=sample_rate)

    return run


class TorchTimer:
    """Times the batched chain on one device, one batch per call (host-to-device copy included)."""

    def __init__(self, chain, songs: np.ndarray, batch: int, device: str, seed: int):
        self.dev = torch.device(device)
        self.chain = copy.deepcopy(chain).to(self.dev)
        self.x = torch.from_numpy(songs[np.arange(batch) % len(songs)]).unsqueeze(1)
        self.gen = torch.Generator(device=self.dev).manual_seed(seed)
        self.seconds = 0.0
        self.clips = 0
        self.chain(self.x.to(self.dev), self.gen)  # warm-up: kernels, FFT plans
        self._sync()

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def step(self) -> None:
        start = time.perf_counter()
        out = self.chain(self.x.to(self.dev, non_blocking=True), self.gen)
        self._sync()
        self.seconds += time.perf_counter() - start
        self.clips += out.shape[0]
        assert out.shape == (self.x.shape[0], 1, self.chain.crop_length)


class ReferenceTimer:
    """Times the audiomentations chain, one clip at a time after a numpy random crop."""

    def __init__(self, run: Callable, songs: np.ndarray, clip_length: int, seed: int):
        self.run, self.songs, self.clip_length = run, songs, clip_length
        self.rng = np.random.default_rng(seed)
        self.seconds = 0.0
        self.clips = 0
        run(songs[0, :clip_length])  # warm-up: impulse-response files, caches

    def step(self, n: int) -> None:
        start = time.perf_counter()
        for _ in range(n):
            song = self.songs[self.clips % len(self.songs)]
            offset = self.rng.integers(0, song.shape[0] - self.clip_length + 1)
            out = self.run(song[offset : offset + self.clip_length])
            assert out.shape == (self.clip_length,)
            self.clips += 1
        self.seconds += time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config).augment
    sr = args.sample_rate
    if args.input_length < args.clip_length:
        raise SystemExit(f"--input-length ({args.input_length}) must be >= --clip-length ({args.clip_length})")
    songs = make_songs(args.n_songs, sr, args.input_length, args.seed)
    devices: List[str] = ["cpu"] if args.device in ("auto", "cpu") else [args.device]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append("cuda")

    print(
        f"clips of {args.clip_length} samples at {sr} Hz (cropped from {args.input_length}); "
        f"config {args.config}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    # Other processes on the machine slow both chains; torch's threads suffer most.
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    chain = build_augmentation(cfg, sr, args.clip_length)
    torch_timers = {d: TorchTimer(chain, songs, args.batch, d, args.seed) for d in devices}

    with tempfile.TemporaryDirectory() as tmp:
        # Synthetic room responses spanning the config's RT60 range, as wav files.
        ir_len = int(round(cfg.reverb.ir_length_s * sr))
        rt60 = torch.linspace(cfg.reverb.min_rt60_s, cfg.reverb.max_rt60_s, args.n_irs, dtype=torch.float64)
        irs = synthetic_rir(rt60, ir_len, sr, torch.Generator().manual_seed(args.seed))
        for i in range(args.n_irs):
            save_audio(Path(tmp) / f"ir_{i}.wav", irs[i, 0].numpy(), sr)
        ref = ReferenceTimer(reference_chain(cfg, sr, Path(tmp), args.pitch_method), songs, args.clip_length, args.seed)
        # Interleave the chains batch by batch so that a busy machine slows them alike.
        for _ in tqdm(range(max(1, -(-args.n_clips // args.batch))), desc="batches", leave=False):
            for timer in torch_timers.values():
                timer.step()
            ref.step(args.batch)

    print(f"load average after:  {os.getloadavg()[0]:.2f}")
    ref_rate = ref.clips / ref.seconds
    for device, timer in torch_timers.items():
        rate = timer.clips / timer.seconds
        print(f"torch batched chain   [{device:>4}, batch {args.batch:3d}]: {rate:9.1f} clips/s")
    print(f"audiomentations chain [ cpu, per example ]: {ref_rate:9.1f} clips/s  (PitchShift {args.pitch_method})")
    for device, timer in torch_timers.items():
        print(f"speed-up torch {device} / audiomentations: {timer.clips / timer.seconds / ref_rate:6.1f}x")


if __name__ == "__main__":
    main()
