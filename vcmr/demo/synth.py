"""Procedural music for demos and tests: chords, bass, melody and drums.

A :class:`SongSpec` fixes the musical attributes that demo datasets plant as labels:
timbre of the melody/chord instrument, drum pattern, tempo, key and mode. ``render``
turns a spec into a mono float32 waveform; the same spec and seed give the same audio.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Sequence, Tuple

import numpy as np

#: Bumped whenever ``render`` changes its output, so cached demo data is regenerated.
SYNTH_VERSION = 3

TIMBRES: Tuple[str, ...] = ("sine", "square", "saw", "pluck", "organ")
DRUM_PATTERNS: Tuple[str, ...] = ("none", "rock", "four_on_floor", "breakbeat")
MODES: Tuple[str, ...] = ("major", "minor")

_SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
# Chord roots as scale degrees (0-based): I-V-vi-IV and i-VI-III-VII.
_PROGRESSIONS = {"major": [0, 4, 5, 3], "minor": [0, 5, 2, 6]}
# 16-step patterns: (kick, snare, hihat)
_DRUMS: Dict[str, Tuple[str, str, str]] = {
    "none": ("." * 16, "." * 16, "." * 16),
    "rock": ("x.......x.x.....", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "four_on_floor": ("x...x...x...x...", "....x.......x...", "..x...x...x...x."),
    "breakbeat": ("x.....x...x.....", "....x..x.x..x..x", "xxxxxxxxxxxxxxxx"),
}


@dataclasses.dataclass(frozen=True)
class SongSpec:
    """Musical attributes of one generated song.

    Attributes:
        timbre: one of :data:`TIMBRES`.
        drums: one of :data:`DRUM_PATTERNS`.
        tempo: beats per minute.
        key: tonic as semitones above A3 (0..11).
        mode: ``major`` or ``minor``.
        seed: seed for the melody and small variations.
    """

    timbre: str
    drums: str
    tempo: float
    key: int
    mode: str
    seed: int

    def __post_init__(self) -> None:
        if self.timbre not in TIMBRES:
            raise ValueError(f"unknown timbre '{self.timbre}'; choose from {TIMBRES}")
        if self.drums not in _DRUMS:
            raise ValueError(f"unknown drum pattern '{self.drums}'; choose from {DRUM_PATTERNS}")
        if self.mode not in _SCALES:
            raise ValueError(f"unknown mode '{self.mode}'; choose from {MODES}")
        if not 30 <= self.tempo <= 300:
            raise ValueError(f"tempo {self.tempo} bpm outside 30..300")


def random_spec(rng: np.random.Generator, tempo_range: Tuple[float, float] = (70.0, 160.0)) -> SongSpec:
    """Draw a spec with every attribute uniform over its choices."""
    return SongSpec(
        timbre=str(rng.choice(TIMBRES)),
        drums=str(rng.choice(DRUM_PATTERNS)),
        tempo=float(rng.uniform(*tempo_range)),
        key=int(rng.integers(0, 12)),
        mode=str(rng.choice(MODES)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _midi_hz(semitones_above_a3: np.ndarray | float) -> np.ndarray:
    return 220.0 * 2.0 ** (np.asarray(semitones_above_a3, dtype=np.float64) / 12.0)


def _partials(phase: np.ndarray, freq: float, sr: int, partials: Sequence[Tuple[float, float]]) -> np.ndarray:
    """Sum of ``weight * sin(k * phase)`` over the partials below Nyquist (no aliasing)."""
    out = np.zeros_like(phase)
    for k, weight in partials:
        if k * freq < 0.45 * sr:
            out += weight * np.sin(k * phase)
    return out


@functools.lru_cache(maxsize=512)
def _tone(timbre: str, freq: float, n: int, sr: int) -> np.ndarray:
    """One note, ``[n]`` float32 (read-only: songs reuse the same notes, so they are cached)."""
    t = np.arange(n) / sr
    phase = 2 * np.pi * freq * t
    if timbre == "sine":
        wave = np.sin(phase)
        env = np.minimum(1.0, t / 0.01) * np.exp(-t * 1.5)
    elif timbre == "square":
        wave = _partials(phase, freq, sr, [(k, 1.0 / k) for k in (1, 3, 5, 7, 9)]) * (4 / np.pi) * 0.6
        env = np.minimum(1.0, t / 0.005) * np.exp(-t * 2.0)
    elif timbre == "saw":
        wave = _partials(phase, freq, sr, [(k, (-1) ** (k + 1) / k) for k in range(1, 12)]) * (2 / np.pi) * 0.7
        env = np.minimum(1.0, t / 0.03) * np.exp(-t * 1.0)
    elif timbre == "pluck":
        wave = sum(
            np.sin(k * phase) * np.exp(-t * 4 * k) / k for k in range(1, 8) if k * freq < 0.45 * sr
        )
        env = np.minimum(1.0, t / 0.002) * np.exp(-t * 6.0)
    else:  # organ: drawbar-like harmonics, sustained, slight vibrato
        vib_phase = phase * (1 + 0.004 * np.sin(2 * np.pi * 5.5 * t))
        wave = _partials(vib_phase, freq, sr, [(0.5, 0.5), (1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2)]) / 2.5
        env = np.minimum(1.0, t / 0.02)
    wave = np.asarray(wave, dtype=np.float64)
    # Release ramp avoids clicks at the note end.
    rel = min(n, int(0.01 * sr))
    if rel > 0:
        env[-rel:] *= np.linspace(1.0, 0.0, rel)
    note = (wave * env).astype(np.float32)
    note.flags.writeable = False
    return note


@functools.lru_cache(maxsize=8)
def _kick(n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f = 50 + 100 * np.exp(-t * 30)
    kick = (np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * 12)).astype(np.float32)
    kick.flags.writeable = False
    return kick


def _drum(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":
        return _kick(n, sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n).astype(np.float32)
    if kind == "snare":
        body = np.sin(2 * np.pi * 190 * t) * np.exp(-t * 25)
        return (0.5 * noise * np.exp(-t * 18) + 0.5 * body).astype(np.float32)
    # hihat: first difference whitens the noise towards high frequencies
    hp = np.diff(noise, prepend=0.0)
    return (0.25 * hp * np.exp(-t * 60)).astype(np.float32)


def _add(out: np.ndarray, x: np.ndarray, start: int, gain: float) -> None:
    if start >= out.size:
        return
    end = min(out.size, start + x.size)
    out[start:end] += gain * x[: end - start]


def render(spec: SongSpec, sample_rate: int, duration: float) -> np.ndarray:
    """Render ``duration`` seconds of ``spec`` as ``[N]`` float32 at ``sample_rate``, peak 0.9."""
    rng = np.random.default_rng(spec.seed)
    n = int(round(duration * sample_rate))
    out = np.zeros(n, np.float32)
    beat = 60.0 / spec.tempo
    scale = _SCALES[spec.mode]
    prog = _PROGRESSIONS[spec.mode]
    n_bars = int(np.ceil(duration / (4 * beat))) + 1

    def degree_semitones(deg: int) -> int:
        octave, idx = divmod(deg, 7)
        return spec.key + 12 * octave + scale[idx]

    for bar in range(n_bars):
        bar_start = bar * 4 * beat
        root = prog[bar % len(prog)]
        chord = [degree_semitones(root + d) for d in (0, 2, 4)]
        # Chord pad: whole bar.
        for semi in chord:
            _add(out, _tone(spec.timbre, float(_midi_hz(semi)), int(4 * beat * sample_rate), sample_rate),
                 int(bar_start * sample_rate), 0.12)
        # Bass on every beat: a pedal on the tonic, one octave down, so that even a crop
        # shorter than the progression names the key.
        for b in range(4):
            f = float(_midi_hz(spec.key - 12))
            _add(out, _tone("sine", f, int(beat * sample_rate * 0.9), sample_rate),
                 int((bar_start + b * beat) * sample_rate), 0.3)
        # Melody: eighth notes from the scale, stepping near chord tones.
        deg = root + 7
        for e in range(8):
            if rng.random() < 0.15:
                continue
            deg = int(np.clip(deg + rng.choice([-2, -1, 0, 1, 2]), 5, 16))
            f = float(_midi_hz(degree_semitones(deg)))
            _add(out, _tone(spec.timbre, f, int(beat / 2 * sample_rate * 0.95), sample_rate),
                 int((bar_start + e * beat / 2) * sample_rate), 0.22)
        # Drums on a 16-step grid.
        for name, pattern, gain in zip(("kick", "snare", "hihat"), _DRUMS[spec.drums], (0.8, 0.5, 0.35)):
            for step, ch in enumerate(pattern):
                if ch == "x":
                    _add(out, _drum(name, int(0.25 * sample_rate), sample_rate, rng),
                         int((bar_start + step * beat / 4) * sample_rate), gain)
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.9 * out / peak).astype(np.float32)


def spec_labels(spec: SongSpec) -> List[str]:
    """Tag strings planted by a spec, e.g. ``["timbre---saw", "drums---rock", "mode---minor", "tempo---fast"]``."""
    speed = "fast" if spec.tempo >= 115 else "slow"
    return [f"timbre---{spec.timbre}", f"drums---{spec.drums}", f"mode---{spec.mode}", f"tempo---{speed}"]
