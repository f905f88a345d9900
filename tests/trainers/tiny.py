"""Tiny stage configs for fast CPU tests (same code paths, small numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import List

TINY_ENCODER = [
    "model.encoder.args.input_length=729",
    "model.encoder.args.first_block={out_channels: 8, kernel_size: 3}",
    "model.encoder.args.n_blocks=5",
    "model.encoder.args.channels=[8, 8, 16, 16, 16]",
    "model.encoder.args.last_block={out_channels: 16, kernel_size: 1}",
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
