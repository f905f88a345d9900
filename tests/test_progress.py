"""Progress reads well in logs: plain lines (no carriage returns) when the output is not a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from vcmr.utils import interactive, progress_bar


def test_plain_lines_in_a_log(monkeypatch):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0")
    buf = io.StringIO()
    for _ in progress_bar(range(4), desc="work", unit="file", file=buf):
        pass
    text = buf.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("work: 0/4 (0%)") and lines[-1].startswith("work: 4/4 (100%)")
    assert sum(line.startswith("work: 4/4") for line in lines) == 1  # the final count printed once


def test_lines_are_rate_limited(monkeypatch):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "3600")
    buf = io.StringIO()
    bar = progress_bar(total=1000, desc="slow", file=buf)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert buf.getvalue().splitlines() == [buf.getvalue().splitlines()[0], buf.getvalue().splitlines()[-1]]
    assert buf.getvalue().splitlines()[-1].startswith("slow: 1000/1000")


def test_no_extra_lines_between_intervals(monkeypatch):
    """tqdm's monitor thread refreshes bars whose ``miniters`` grew; in a log that printed an
    extra line a few seconds after each interval's line."""
    import time

    import tqdm

    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0.2")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0.05)
    buf = io.StringIO()
    bar = progress_bar(total=100, desc="steady", file=buf)
    end = time.monotonic() + 0.25
    while time.monotonic() < end:  # fast updates: one line at 0.2 s
        bar.update(1)
        time.sleep(0.002)
    time.sleep(0.15)  # no update for less than one interval: no line
    printed = len(buf.getvalue().splitlines())
    bar.close()
    assert printed == 2, buf.getvalue()  # the first line and the one at 0.2 s


def test_terminal_detection_can_be_forced(monkeypatch):
    buf = io.StringIO()
    assert not interactive(buf)
    monkeypatch.setenv("VCMR_PROGRESS", "bars")
    assert interactive(buf)
    monkeypatch.setenv("VCMR_PROGRESS", "lines")
    assert not interactive(sys.stderr)


def test_training_prints_lines_not_bar_frames(tmp_path, monkeypatch, capsys):
    from vcmr.audio.io import save_audio
    from vcmr.config import CONFIG_DIR, load_config
    from vcmr.demo.synth import random_spec, render
    from vcmr.trainers.music import MusicPretrainConfig, train

    sys.path.insert(0, str(Path(__file__).parent / "trainers"))
    from tiny import stage1_overrides

    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0")
    rng = np.random.default_rng(3)
    for i in range(8):
        save_audio(tmp_path / "songs" / f"s{i}.wav", render(random_spec(rng), 16000, 1.0), 16000)
    cfg = load_config(CONFIG_DIR / "mus_pretrain.yaml", stage1_overrides(
        tmp_path / "songs", tmp_path / "runs",
        ["trainer.enable_progress_bar=true", "trainer.max_epochs=1", "data.val_fraction=0.25", "data.loader.batch_size=2"],
    ), MusicPretrainConfig)
    train(cfg)
    out = capsys.readouterr().out
    assert "\r" not in out
    assert "epoch 0  step 1/" in out and "it/s" in out
    assert "epoch 0 validated" in out and "val/loss" in out
