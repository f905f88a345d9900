"""Procedural demo music: deterministic, and the note cache never changes a song."""

from __future__ import annotations

import numpy as np
import pytest

from vcmr.demo import synth
from vcmr.demo.synth import SongSpec, random_spec, render


def test_cached_notes_give_the_uncached_song():
    specs = [random_spec(np.random.default_rng(i)) for i in range(3)]
    synth._tone.cache_clear()
    synth._kick.cache_clear()
    cold = [render(s, 8000, 6.0) for s in specs]
    warm = [render(s, 8000, 6.0) for s in reversed(specs)][::-1]
    for a, b in zip(cold, warm):
        np.testing.assert_array_equal(a, b)
    assert synth._tone.cache_info().hits > 0


def test_cached_notes_are_read_only():
    note = synth._tone("saw", 440.0, 800, 8000)
    with pytest.raises(ValueError):
        note[0] = 1.0


@pytest.mark.parametrize("key", [0, 5])
def test_song_peak_and_tonic_pedal(key):
    spec = SongSpec(timbre="sine", drums="none", tempo=120.0, key=key, mode="major", seed=1)
    y = render(spec, 8000, 4.0)
    assert y.dtype == np.float32 and y.shape == (32000,)
    assert np.max(np.abs(y)) == pytest.approx(0.9, abs=1e-6)
    # The bass holds the tonic an octave below A3 + key in every bar (bar 1: chord I, bar 2: chord V).
    tonic = 110.0 * 2 ** (key / 12)
    freqs = np.fft.rfftfreq(16000, 1 / 8000)
    low = (freqs > 60) & (freqs < 200)
    for bar in (y[:16000], y[16000:]):
        mag = np.abs(np.fft.rfft(bar * np.hanning(16000)))
        assert freqs[low][np.argmax(mag[low])] == pytest.approx(tonic, abs=1.0)
