"""Tiny stage configs for fast CPU tests (same code paths, small numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import List

TINY_ENCODER = [
    "model.audio_encoder.args.input_length=729",
    "model.audio_encoder.args.first_block={out_channels: 8, kernel_size: 3}",
    "model.audio_encoder.args.n_blocks=5",
    "model.audio_encoder.args.channels=[8, 8, 16, 16, 16]",
    "model.audio_encoder.args.last_block={out_channels: 16, kernel_size: 1}",
]


def stage1_overrides(data_root: Path, out_root: Path, extra: List[str] = ()) -> List[str]:
    return [
        f"data.root={data_root}",
        "data.sample_rate=16000",
        "data.clip_length=2400",
        "data.val_fraction=0.3",
        "data.index_workers=1",
        "data.loader.batch_size=4",
        "data.loader.num_workers=0",
        "data.loader.pin_memory=false",
        "data.loader.persistent_workers=false",
        "data.loader.prefetch_factor=null",
        *TINY_ENCODER,
        "model.projection.hidden_dim=16",
        "model.projection.out_dim=8",
        "augment.pitch.n_fft=256",
        "augment.pitch.hop_length=64",
        "augment.reverb.ir_length_s=0.02",
        "augment.delay.min_ms=5",
        "augment.delay.max_ms=20",
        "augment.delay.step_ms=5",
        "optim.warmup_steps=2",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger.name=csv",
        f"output.root={out_root}",
        "output.name=tiny",
        *extra,
    ]


def make_builder_output(root: Path, n_videos: int = 12, sample_rate: int = 16000, segment_s: float = 2.0,
                        n_segments: int = 3, dim: int = 8, seed: int = 0) -> Path:
    """A dataset folder in the builder's documented layout (manifest.csv, audio/, features/).

    Each video gets a random "colour" vector; its frame features are that vector plus noise,
    and its audio is a tone whose pitch is tied to the same colour, so there is a real
    audio-video correspondence to learn.
    """
    import numpy as np

    from vcmr.audio.io import save_audio
    from vcmr.data.manifest import VideoRecord, write_manifest

    rng = np.random.default_rng(seed)
    records = []
    n = int(segment_s * sample_rate)
    for v in range(n_videos):
        vid = f"vid{v:03d}"
        colour = rng.standard_normal(dim).astype(np.float32)
        freq = 200.0 * 2 ** (v % 12 / 12)
        paths = []
        for j in range(n_segments):
            t = (np.arange(n) + j * n) / sample_rate
            x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(n)
            rel = f"audio/{vid}/{vid}_{j:02d}.wav"
            save_audio(root / rel, x.astype(np.float32), sample_rate)
            paths.append(rel)
        rows = int(segment_s * n_segments)
        feats = colour[None] + 0.1 * rng.standard_normal((rows, dim)).astype(np.float32)
        (root / "features").mkdir(parents=True, exist_ok=True)
        np.save(root / "features" / f"{vid}.npy", feats.astype(np.float32))
        records.append(VideoRecord(vid, "ok", "", 30.0, 2, 5.0, 0.0, float(rows), n_segments, feats.shape,
                                   tuple(paths), f"features/{vid}.npy"))
    records.append(VideoRecord("broken", "failed", "no audio stream", 0.0, 0, 0.0, 0.0, 0.0, 0, (0, 0), (), ""))
    write_manifest(root / "manifest.csv", records)
    return root


def stage2_overrides(data_root: Path, out_root: Path, dim: int = 8, extra: List[str] = ()) -> List[str]:
    return [
        f"data.root={data_root}",
        "data.audio_length=729",
        "data.val_fraction=0.3",
        "data.loader.batch_size=4",
        "data.loader.num_workers=0",
        "data.loader.pin_memory=false",
        "data.loader.persistent_workers=false",
        "data.loader.prefetch_factor=null",
        "model.audio_init=none",
        *TINY_ENCODER,
        "model.freeze_blocks=2",
        f"model.video_encoders.lstm.input_dim={dim}",
        "model.video_encoders.lstm.hidden_dim=8",
        f"model.video_encoders.transformer.input_dim={dim}",
        "model.video_encoders.transformer.d_model=16",
        "model.video_encoders.transformer.nhead=2",
        "model.video_encoders.transformer.dim_feedforward=32",
        "model.projection.hidden_dim=16",
        "model.projection.out_dim=8",
        "optim.warmup_steps=2",
        "optim.lr=0.003",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger.name=csv",
        f"output.root={out_root}",
        "output.name=tiny2",
        *extra,
    ]
