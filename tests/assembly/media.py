"""Generated media for assembly tests: flat-colour clips and click-track songs."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import List

import numpy as np

from vcmr.audio.io import save_audio
from vcmr.video.writer import write_video


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours of distinct hues, alternating bright and dark."""
    out = []
    for i in range(n):
        v = 0.95 if i % 2 == 0 else 0.55
        out.append(np.array(colorsys.hsv_to_rgb(i / n, 0.9, v)) * 255)
    return np.array(out, np.uint8)


def flat_clip(path: Path, color: np.ndarray, seconds: float, fps: int = 12, width: int = 64, height: int = 48,
              audio: bool = False) -> Path:
    """A clip of one flat colour (plus a faint moving bar, so it is not a still)."""
    n = int(round(seconds * fps))

    def frames():
        for i in range(n):
            img = np.empty((height, width, 3), np.uint8)
            img[:] = color
            x = (2 * i) % (width - 4)
            img[: height // 8, x : x + 4] = np.clip(color.astype(int) + 12, 0, 255)
            yield img

    sr = 8000
    sound = (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sr)) / sr)).astype(np.float32) if audio else None
    return write_video(path, frames(), fps, sound, sr if audio else 0, crf=18)


def flat_library(folder: Path, n: int, seconds: float, **kw) -> List[Path]:
    """``n`` flat-colour clips ``clip_XX.mp4`` of distinct colours."""
    folder.mkdir(parents=True, exist_ok=True)
    return [flat_clip(folder / f"clip_{i:02d}.mp4", c, seconds, **kw) for i, c in enumerate(palette(n))]


def click_song(path: Path, bpm: float, seconds: float, sr: int = 22050, first: float = 0.25,
               stereo: bool = False) -> Path:
    """A click track (accent every 4th beat) over a quiet chord, as wav."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.08 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 277.2 * t) + np.sin(2 * np.pi * 329.6 * t))
    period = 60.0 / bpm
    for k, bt in enumerate(np.arange(first, seconds - 0.1, period)):
        i = int(round(bt * sr))
        m = min(int(0.04 * sr), y.size - i)
        amp = 0.6 if k % 4 == 0 else 0.3
        y[i : i + m] += amp * np.sin(2 * np.pi * 1500 * t[:m]) * np.exp(-t[:m] * 80)
    y = (0.9 * y / np.abs(y).max()).astype(np.float32)
    if not stereo:
        save_audio(path, y, sr)
        return path
    import soundfile as sf

    sf.write(str(path), np.stack([y, 0.5 * y], axis=1), sr, subtype="PCM_16")
    return path


#: Audio rate of the tiny test model: a 729-sample window is 0.36 s.
MODEL_SR = 2000
TINY_CLIP = {"name": "tiny_clip", "args": {"embed_dim": 16, "image_size": 32, "patch_size": 8, "width": 32,
                                           "layers": 1, "head_width": 16, "seed": 0},
             "fps": 5.0, "normalize": False}


def tiny_model(path: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny joint model export (SampleCNN on 729 samples at 2 kHz, LSTM on 16-dim features)."""
    import torch

    from vcmr.models.export import save_model
    from vcmr.models.joint import build_joint_model

    spec = {
        "audio_encoder": {"name": "samplecnn", "args": {
            "input_length": 729, "first_block": {"out_channels": 8, "kernel_size": 3}, "n_blocks": 5,
            "channels": [8, 8, 16, 16, 16], "kernel_size": 3, "pool_size": 3,
            "last_block": {"out_channels": 16, "kernel_size": 1}}},
        "video_encoder": {"name": "lstm", "args": {"input_dim": 16, "hidden_dim": 8, "num_layers": 1, "dropout": 0.0,
                                                    "out_dim": None, "pooling": "last"}},
        "audio_projector": {"name": "projection", "args": {"in_dim": 16, "hidden_dim": 16, "out_dim": 8}},
        "video_projector": {"name": "projection", "args": {"in_dim": 8, "hidden_dim": 16, "out_dim": 8}},
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_joint_model(spec)
    extra = {"sample_rate": MODEL_SR, "stage": "video_pretrain", "frame_encoder": TINY_CLIP}
    return save_model(path, model.eval(), extra)


def scene_video(path: Path, colors: np.ndarray, scene_seconds: float, fps: int = 12, width: int = 64,
                height: int = 48) -> Path:
    """A video of ``len(colors)`` flat-colour scenes of ``scene_seconds`` each (hard cuts between them)."""
    per = int(round(scene_seconds * fps))

    def frames():
        for c in colors:
            for i in range(per):
                img = np.empty((height, width, 3), np.uint8)
                img[:] = c
                x = (2 * i) % (width - 4)
                img[: height // 8, x : x + 4] = np.clip(c.astype(int) + 12, 0, 255)
                yield img

    return write_video(path, frames(), fps, None, 0, crf=18)
