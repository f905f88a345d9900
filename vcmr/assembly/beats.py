"""Beat grid of a song and its cut into shots.

Rules (also in ``docs/music_video.md``):

* **Beats.** A tracker from :data:`BEAT_TRACKERS` (``librosa``: onset-strength envelope
  + dynamic-programming beat tracker) gives beat times in seconds.
* **Attacks.** The waveform is cut into blocks of ``snap_hop`` samples; a block's attack
  score is its energy minus the mean energy of the 8 blocks before it. Each beat's
  attack is the best-scoring block within ``snap_window`` seconds (at least one
  analysis frame). The tracker's beats sit on onset-envelope frames and lag the hit by
  about one frame, so with ``snap_window > 0`` each beat moves to the start of its
  attack block (it stays where no block gains energy): cuts fall on the audible hit.
* **Strength** of a beat: the square root of its attack score (an amplitude) divided by
  the median over all beats: 1.0 is a typical beat whatever the song's loudness, 2.0 a
  beat twice as loud.
* **Tempo** is ``60 / period``, where the period is the slope of a least-squares line
  through the beat times against their index (more precise than the tempogram's bins).
* **Downbeats.** The bar phase ``p`` (``0 <= p < beats_per_bar``) is the phase whose beats
  ``p, p + beats_per_bar, ...`` have the highest median strength (ties: the smallest
  ``p``; the median so that a few accents do not move every bar line); those beats are
  the downbeats.
* **Shots.** Boundaries are the beats ``i`` with ``(i - p) % beats_per_shot == 0`` (one
  bar per shot when ``beats_per_shot == beats_per_bar``, starting on a downbeat), plus
  ``0`` and the song's end. The lead-in before the first boundary beat and the tail after
  the last one are shots of their own when they last at least ``min_shot_beats`` beat
  periods, and are merged into the neighbouring shot otherwise. So the first shot starts
  at 0, the last ends at the song's end, and every other cut is on a beat.
* **Shorter shots** (``split.enabled``): inside a shot, a beat whose strength is at least
  ``split.threshold`` becomes a cut too, strongest first, when both parts keep at least
  ``split.min_beats`` beat periods.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Tuple

import numpy as np


class BeatError(ValueError):
    """The song has no usable beat grid (no beats found, or shorter than one shot)."""


@dataclasses.dataclass(frozen=True)
class BeatSettings:
    """How beats are tracked (the ``beats:`` config block).

    Attributes:
        tracker: key of :data:`BEAT_TRACKERS`.
        sample_rate: analysis sample rate in Hz.
        hop_length: samples between onset-envelope frames (the time resolution).
        start_bpm: the tracker's initial tempo guess.
        tightness: how strictly beats follow the tempo (librosa's ``tightness``).
        snap_window: each beat moves to the strongest attack within this many seconds
            of it (0 keeps the tracker's frame-quantised times).
        snap_hop: block size in samples of the attack search (its time resolution).
        beats_per_bar: beats in a bar (time signature numerator).
        beats_per_shot: beats in a regular shot.
        min_shot_beats: the lead-in or tail is a shot of its own from this many beat periods.
        split_enabled: add cuts on strong beats inside a shot.
        split_threshold: beat strength (relative to the median beat) that makes a cut.
        split_min_beats: shortest part a split may leave, in beat periods.
    """

    tracker: str
    sample_rate: int
    hop_length: int
    start_bpm: float
    tightness: float
    snap_window: float
    snap_hop: int
    beats_per_bar: int
    beats_per_shot: int
    min_shot_beats: float
    split_enabled: bool
    split_threshold: float
    split_min_beats: float

    @classmethod
    def from_config(cls, node) -> "BeatSettings":
        return cls(
            tracker=str(node.tracker), sample_rate=int(node.sample_rate), hop_length=int(node.hop_length),
            start_bpm=float(node.start_bpm), tightness=float(node.tightness),
            snap_window=float(node.snap_window), snap_hop=int(node.snap_hop),
            beats_per_bar=int(node.beats_per_bar), beats_per_shot=int(node.beats_per_shot),
            min_shot_beats=float(node.min_shot_beats), split_enabled=bool(node.split.enabled),
            split_threshold=float(node.split.threshold), split_min_beats=float(node.split.min_beats),
        )


@dataclasses.dataclass(frozen=True)
class BeatGrid:
    """Beats of a song.

    Attributes:
        beats: ``[N]`` float64 beat times in seconds, increasing.
        strength: ``[N]`` onset strength at each beat relative to the median beat.
        downbeats: ``[M]`` indices into ``beats`` of the first beat of each bar.
        bar_phase: index of the first downbeat (``0 <= bar_phase < beats_per_bar``).
        tempo: beats per minute.
        duration: song length in seconds.
        beats_per_bar: beats in a bar.
    """

    beats: np.ndarray
    strength: np.ndarray
    downbeats: np.ndarray
    bar_phase: int
    tempo: float
    duration: float
    beats_per_bar: int

    @property
    def period(self) -> float:
        """Seconds per beat."""
        return 60.0 / self.tempo


@dataclasses.dataclass(frozen=True)
class Shot:
    """One shot of the video: ``[start, end)`` seconds of the song.

    Attributes:
        index: position in the video, from 0.
        start: start time in seconds (0 or a beat time).
        end: end time in seconds (a beat time or the song's end).
        beats: indices of the beats inside ``[start, end)``.
    """

    index: int
    start: float
    end: float
    beats: Tuple[int, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


# --------------------------------------------------------------------------------------
# Trackers: (y [N] float32 mono, sample_rate, settings) -> beat times [K] in seconds
# --------------------------------------------------------------------------------------


def librosa_tracker(y: np.ndarray, sample_rate: int, s: BeatSettings) -> np.ndarray:
    """librosa's onset-strength envelope and dynamic-programming beat tracker (Ellis 2007)."""
    import librosa

    env = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=s.hop_length)
    _, frames = librosa.beat.beat_track(
        onset_envelope=env, sr=sample_rate, hop_length=s.hop_length,
        start_bpm=s.start_bpm, tightness=s.tightness, units="frames",
    )
    return librosa.frames_to_time(np.asarray(frames, dtype=int), sr=sample_rate, hop_length=s.hop_length)


#: Beat trackers by name. Stronger trackers (madmom, Beat This!) are not pip-installable
#: in a form this project can use (madmom's release needs Python < 3.10; Beat This! needs
#: torchaudio and downloads its weights), so librosa is the only entry.
BEAT_TRACKERS: Dict[str, Callable[[np.ndarray, int, BeatSettings], np.ndarray]] = {
    "librosa": librosa_tracker,
}

#: Blocks before a block whose mean energy its attack score subtracts.
_ATTACK_CONTEXT = 8


def attack_scores(y: np.ndarray, hop: int) -> np.ndarray:
    """``[N // hop]`` attack score per block of ``hop`` samples: the block's energy minus
    the mean energy of the (up to 8) blocks before it. Positive where the sound gets louder."""
    n_blocks = y.size // hop
    energy = np.square(y[: n_blocks * hop].astype(np.float64)).reshape(n_blocks, hop).sum(axis=1)
    c = np.concatenate([[0.0], np.cumsum(energy)])
    m = np.arange(n_blocks)
    lo = np.maximum(m - _ATTACK_CONTEXT, 0)
    return energy - (c[m] - c[lo]) / np.maximum(m - lo, 1)


def locate_attacks(
    scores: np.ndarray, hop: int, sample_rate: int, times: np.ndarray, window: float
) -> Tuple[np.ndarray, np.ndarray]:
    """The strongest attack within ``window`` seconds of each time.

    Returns:
        ``(attack_times [K], attack_scores [K])``: start of the best block (seconds) and
        its score, clipped at 0; where no block gains energy the input time is kept.
    """
    out = times.astype(np.float64).copy()
    val = np.zeros(times.size)
    w = max(int(round(window * sample_rate / hop)), 0)
    for k, t in enumerate(times):
        centre = int(round(t * sample_rate / hop))
        a, b = max(centre - w, 0), min(centre + w + 1, scores.size)
        if b <= a:
            continue
        j = a + int(np.argmax(scores[a:b]))
        if scores[j] > 0:
            out[k], val[k] = j * hop / sample_rate, scores[j]
    return out, val


def analyse(y: np.ndarray, sample_rate: int, s: BeatSettings) -> BeatGrid:
    """Beats, tempo and downbeats of a mono waveform.

    Args:
        y: ``[N]`` float32 mono waveform at ``sample_rate``.
        sample_rate: Hz.
        s: settings.

    Raises:
        KeyError: unknown tracker name.
        BeatError: fewer than two beats found (silence, or no pulse).
    """
    if s.tracker not in BEAT_TRACKERS:
        raise KeyError(f"beats.tracker: unknown tracker '{s.tracker}'; choose from {sorted(BEAT_TRACKERS)}")
    duration = y.size / float(sample_rate)
    times = np.asarray(BEAT_TRACKERS[s.tracker](y, sample_rate, s), dtype=np.float64)
    times = times[(times >= 0) & (times < duration)]
    if times.size < 2:
        raise BeatError(f"only {times.size} beat(s) found in {duration:.2f} s of audio (silent or no pulse?)")
    # Strength: the attack near each beat (at least one analysis frame around it).
    window = max(s.snap_window, s.hop_length / sample_rate)
    attacks, raw = locate_attacks(attack_scores(y, s.snap_hop), s.snap_hop, sample_rate, times, window)
    if s.snap_window > 0:
        times = attacks
    keep = np.concatenate([[True], np.diff(times) > 1e-9])  # two beats on one attack: keep the first
    times, raw = times[keep], raw[keep]
    raw = np.sqrt(raw)  # amplitude scale: a beat twice as loud has strength 2
    med = float(np.median(raw))
    strength = raw / med if med > 0 else np.ones_like(raw)
    n = np.arange(times.size, dtype=np.float64)
    period = float(np.polyfit(n, times, 1)[0])
    bpb = int(s.beats_per_bar)
    # Median, not mean: one accent must not move every bar line.
    typical = [float(np.median(strength[p::bpb])) if strength[p::bpb].size else -np.inf for p in range(bpb)]
    phase = int(np.argmax(typical))
    return BeatGrid(
        beats=times, strength=strength, downbeats=np.arange(phase, times.size, bpb),
        bar_phase=phase, tempo=60.0 / period, duration=duration, beats_per_bar=bpb,
    )


def make_shots(grid: BeatGrid, s: BeatSettings) -> List[Shot]:
    """Cut the song into shots on the beat grid (rules in the module docstring).

    Raises:
        BeatError: the song is shorter than one shot of ``beats_per_shot`` beats.
    """
    period = grid.period
    shot_len = s.beats_per_shot * period
    if grid.duration < shot_len:
        raise BeatError(
            f"the song lasts {grid.duration:.2f} s, shorter than one shot of {s.beats_per_shot} beats "
            f"({shot_len:.2f} s at {grid.tempo:.1f} BPM); use a longer song or a smaller beats.beats_per_shot"
        )
    beats = grid.beats
    idx = [i for i in range(beats.size) if (i - grid.bar_phase) % s.beats_per_shot == 0]
    bounds = [0.0] + [float(beats[i]) for i in idx if beats[i] > 1e-6] + [grid.duration]
    min_len = s.min_shot_beats * period
    if len(bounds) > 2 and bounds[1] - bounds[0] < min_len:
        del bounds[1]  # short lead-in: part of the first shot
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_len:
        del bounds[-2]  # short tail: part of the last shot
    if s.split_enabled:
        bounds = _split_strong(bounds, grid, s)
    shots = []
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        inside = tuple(int(i) for i in np.nonzero((beats >= a - 1e-9) & (beats < b - 1e-9))[0])
        shots.append(Shot(index=k, start=a, end=b, beats=inside))
    return shots


def _split_strong(bounds: List[float], grid: BeatGrid, s: BeatSettings) -> List[float]:
    """Add cuts on beats of strength >= ``split_threshold``, strongest first."""
    period = grid.period
    min_part = s.split_min_beats * period - 0.25 * period  # tolerance for tempo drift
    out = sorted(bounds)
    order = np.argsort(-grid.strength, kind="stable")
    for i in order:
        if grid.strength[i] < s.split_threshold:
            break
        t = float(grid.beats[i])
        k = int(np.searchsorted(out, t))
        if k == 0 or k >= len(out) or abs(out[k] - t) < 1e-6 or abs(out[k - 1] - t) < 1e-6:
            continue
        if t - out[k - 1] >= min_part and out[k] - t >= min_part:
            out.insert(k, t)
    return out


def shot_boundaries(shots: List[Shot]) -> np.ndarray:
    """``[n_shots + 1]`` boundary times in seconds: every shot start and the last end."""
    return np.array([sh.start for sh in shots] + [shots[-1].end], dtype=np.float64)
