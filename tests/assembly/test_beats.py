"""Beat grid and shot cutting on generated click tracks with known beats."""

from __future__ import annotations

import numpy as np
import pytest

from vcmr.assembly.beats import BEAT_TRACKERS, BeatError, BeatSettings, analyse, make_shots, shot_boundaries

SR = 22050
HOP = 512


def settings(**kw) -> BeatSettings:
    base = dict(tracker="librosa", sample_rate=SR, hop_length=HOP, start_bpm=120.0, tightness=100.0, snap_window=0.05, snap_hop=64,
                beats_per_bar=4, beats_per_shot=4, min_shot_beats=2.0, split_enabled=False,
                split_threshold=1.5, split_min_beats=1.0)
    base.update(kw)
    return BeatSettings(**base)


def click_track(bpm: float, first: float, duration: float, accent_phase: int = 0, accents=()) -> tuple:
    """Clicks at ``first + k * 60 / bpm``; every 4th (from ``accent_phase``) louder; extra loud beats in ``accents``."""
    import librosa

    period = 60.0 / bpm
    times = np.arange(first, duration - 0.05, period)
    y = np.zeros(int(duration * SR), np.float32)
    for k, t in enumerate(times):
        loud = 1.0 if k % 4 == accent_phase else 0.35
        if k in accents:
            loud = 3.0
        c = librosa.clicks(times=[0.0], sr=SR, click_freq=1500.0, click_duration=0.05, length=int(0.06 * SR))
        i = int(round(t * SR))
        y[i : i + c.size] += loud * c[: y.size - i]
    return y / np.abs(y).max() * 0.9, times


def test_registry_is_explicit():
    assert set(BEAT_TRACKERS) == {"librosa"}
    with pytest.raises(KeyError, match="beats.tracker"):
        analyse(np.zeros(SR, np.float32), SR, settings(tracker="madmom"))


@pytest.mark.parametrize("bpm", [100.0, 128.0])
def test_click_track_beats_tempo_downbeats(bpm):
    y, truth = click_track(bpm, first=0.37, duration=24.0, accent_phase=1)
    grid = analyse(y, SR, settings(start_bpm=110.0))
    frame = HOP / SR
    assert abs(grid.tempo - bpm) < 1.0
    # Every true beat away from the edges has a tracked beat within one analysis frame.
    inner = truth[(truth > 1.0) & (truth < 23.0)]
    err = np.abs(grid.beats[None, :] - inner[:, None]).min(axis=1)
    assert err.max() <= frame, err.max()
    # Downbeats are the accented clicks (every 4th, starting with the second click).
    accented = truth[1::4]
    for d in grid.downbeats:
        assert np.abs(accented - grid.beats[d]).min() <= frame
    assert grid.beats_per_bar == 4 and np.all(np.diff(grid.downbeats) == 4)


def test_shots_cover_song_and_start_on_downbeats():
    y, truth = click_track(120.0, first=0.6, duration=20.0, accent_phase=2)
    s = settings()
    grid = analyse(y, SR, s)
    shots = make_shots(grid, s)
    b = shot_boundaries(shots)
    assert b[0] == 0.0 and b[-1] == pytest.approx(y.size / SR)
    assert np.all(np.diff(b) > 0)
    downs = grid.beats[grid.downbeats]
    for t in b[1:-1]:  # every inner boundary is a downbeat
        assert np.abs(downs - t).min() < 1e-9
    # Lead-in 0.6 + 2 beats = 1.6 s before the first downbeat: >= 2 beats, its own shot.
    assert shots[0].end == pytest.approx(downs[0])
    for sh in shots[1:-1]:
        assert len(sh.beats) == 4 and sh.duration == pytest.approx(2.0, abs=HOP / SR)
    assert [sh.index for sh in shots] == list(range(len(shots)))


def test_short_lead_in_and_tail_are_merged():
    y, _ = click_track(120.0, first=0.2, duration=16.6, accent_phase=0)
    s = settings(min_shot_beats=2.0)
    grid = analyse(y, SR, s)
    shots = make_shots(grid, s)
    downs = grid.beats[grid.downbeats]
    # Lead-in of 0.2 s (< 2 beats = 1 s) is merged: the first shot ends at the second downbeat.
    assert shots[0].start == 0.0 and shots[0].end == pytest.approx(downs[1])
    # Tail after the last downbeat (0.6 s) is merged into the last shot.
    assert shots[-1].end == pytest.approx(y.size / SR)
    assert shots[-1].duration > 2.0


def test_strong_beats_split_shots():
    y, truth = click_track(120.0, first=0.5, duration=20.0, accent_phase=0, accents=(9, 18))
    s = settings(split_enabled=True, split_threshold=4.0, split_min_beats=1.0)
    grid = analyse(y, SR, s)
    plain = make_shots(grid, settings())
    split = make_shots(grid, s)
    b = shot_boundaries(split)
    for k in (9, 18):  # beats 9 and 18 are not downbeats (phase 0) and become cuts
        assert np.abs(b - truth[k]).min() <= HOP / SR
    assert len(split) == len(plain) + 2


def test_song_shorter_than_one_shot():
    y, _ = click_track(60.0, first=0.1, duration=3.5)
    s = settings(start_bpm=60.0)
    grid = analyse(y, SR, s)
    with pytest.raises(BeatError, match="shorter than one shot"):
        make_shots(grid, s)


def test_silence_has_no_beats():
    with pytest.raises(BeatError, match="beat"):
        analyse(np.zeros(5 * SR, np.float32), SR, settings())
