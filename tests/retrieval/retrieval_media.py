"""Tiny models and generated media shared by the retrieval tests (embedder, library, search)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from vcmr.models.export import save_model
from vcmr.models.joint import build_joint_model
from vcmr.video.writer import write_video

#: Audio rate of the tiny models: a 729-sample window is 0.36 s, the video context 1 s.
SAMPLE_RATE = 2000
FEAT_DIM = 16

TINY_CLIP: Dict[str, object] = {
    "name": "tiny_clip",
    "args": {"embed_dim": FEAT_DIM, "image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
             "head_width": 16, "seed": 0},
    "fps": 5.0,
    "normalize": False,
}

#: Distinct colours; consecutive entries differ enough for the scene detector to see a cut.
PALETTE = np.array(
    [[230, 30, 30], [30, 200, 40], [40, 60, 230], [240, 220, 30], [220, 40, 220], [30, 210, 220],
     [250, 250, 250], [20, 20, 20]],
    np.uint8,
)


def tiny_spec(feat_dim: int = FEAT_DIM, video_encoder: str = "lstm") -> Dict[str, Dict[str, object]]:
    """Spec of a small joint model: SampleCNN on 729 samples, an LSTM (or transformer) on ``feat_dim`` features."""
    video = (
        {"name": "lstm", "args": {"input_dim": feat_dim, "hidden_dim": 8, "num_layers": 1, "dropout": 0.0,
                                  "out_dim": None, "pooling": "last"}}
        if video_encoder == "lstm" else
        {"name": "transformer", "args": {"input_dim": feat_dim, "d_model": 16, "nhead": 2, "num_layers": 1,
                                         "dim_feedforward": 32, "dropout": 0.0, "max_len": 64, "pooling": "mean",
                                         "out_dim": None}}
    )
    video_out = 8 if video_encoder == "lstm" else 16
    return {
        "audio_encoder": {"name": "samplecnn", "args": {
            "input_length": 729, "first_block": {"out_channels": 8, "kernel_size": 3}, "n_blocks": 5,
            "channels": [8, 8, 16, 16, 16], "kernel_size": 3, "pool_size": 3,
            "last_block": {"out_channels": 16, "kernel_size": 1}}},
        "video_encoder": video,
        "audio_projector": {"name": "projection", "args": {"in_dim": 16, "hidden_dim": 16, "out_dim": 8}},
        "video_projector": {"name": "projection", "args": {"in_dim": video_out, "hidden_dim": 16, "out_dim": 8}},
    }


def tiny_model(folder: Path, seed: int = 0, frame_encoder: Optional[dict] = TINY_CLIP,
               sample_rate: int = SAMPLE_RATE, name: str = "model.safetensors", video_encoder: str = "lstm") -> Path:
    """Save a randomly initialised tiny joint model (seeded) and return the file."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_joint_model(tiny_spec(video_encoder=video_encoder))
    extra = {"sample_rate": sample_rate, "stage": "video_pretrain", "frame_encoder": frame_encoder}
    return save_model(Path(folder) / name, model.eval(), extra)


def tone(seconds: float, sample_rate: int, freqs: Sequence[float]) -> np.ndarray:
    """A tone whose frequency is ``freqs[k]`` during second ``k`` (float32, peak 0.4)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    f = np.asarray(freqs, dtype=float)[np.minimum(t.astype(int), len(freqs) - 1)]
    return (0.4 * np.sin(2 * np.pi * np.cumsum(f) / sample_rate)).astype(np.float32)


def colour_video(path: Path, colours: Sequence[int], fps: int = 10, size: int = 32, sample_rate: int = 16000,
                 audio: bool = True, shift: float = 0.0) -> Path:
    """An mp4 whose picture is ``PALETTE[colours[k]]`` during second ``k`` (plus a moving bar),
    with a tone per second. ``shift`` moves every colour change later by that many seconds."""
    frames: List[np.ndarray] = []
    n = int(len(colours) * fps)
    for i in range(n):
        t = i / fps - shift
        c = colours[min(max(int(np.floor(t + 1e-9)), 0), len(colours) - 1)]
        img = np.broadcast_to(PALETTE[c], (size, size, 3)).copy()
        x = i % (size - 4)
        img[: size // 4, x : x + 4] = 255 - PALETTE[c]
        frames.append(img)
    freqs = [220.0 * 2 ** (c / 12) for c in colours]
    return write_video(path, frames, fps, tone(len(colours), sample_rate, freqs) if audio else None,
                       sample_rate, crf=12)
