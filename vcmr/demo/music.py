"""The built-in demo music dataset: procedurally generated songs, no download.

Written on first use under ``vcmr.utils.cache_dir()``; a ``songs.jsonl`` file lists each
song's :class:`~vcmr.demo.synth.SongSpec`, and a ``.complete`` marker (written last)
tells later runs that the folder can be reused as is. Two deliberately unusable files
(an empty file and one that is not audio) are included so that the demo shows how a
folder with broken files is handled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

import numpy as np

from vcmr.audio.io import save_audio
from vcmr.demo.synth import SYNTH_VERSION, random_spec, render
from vcmr.config import with_values
from vcmr.utils import atomic_write_bytes, atomic_write_text, cache_dir, progress_bar

BROKEN_FILES = {"broken/empty.wav": b"", "broken/not_audio.mp3": b"this is not an mp3 file\n" * 40}


def ensure_demo_music(
    n_songs: int,
    song_seconds: float,
    sample_rate: int,
    seed: int = 0,
    root: Optional[str | os.PathLike] = None,
    include_broken: bool = True,
) -> Path:
    """Generate (or reuse) the demo songs and return their folder.

    Args:
        n_songs: number of songs.
        song_seconds: length of each song in seconds.
        sample_rate: rate of the written wav files (Hz).
        seed: seed of the song specs.
        root: parent folder; default ``cache_dir() / "demo_music"``.
        include_broken: also write the two unusable files of :data:`BROKEN_FILES`.
    """
    base = Path(root) if root is not None else cache_dir() / "demo_music"
    tag = f"v{SYNTH_VERSION}_n{n_songs}_s{song_seconds:g}_sr{sample_rate}_seed{seed}"
    folder = base / (tag if include_broken else tag + "_clean")
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng) for _ in range(n_songs)]
    rows = []
    for i, spec in enumerate(progress_bar(specs, desc="Generating demo music", unit="song")):
        rel = f"songs/song_{i:04d}.wav"
        out = folder / rel
        if not out.is_file():
            save_audio(out, render(spec, sample_rate, song_seconds), sample_rate)
        rows.append(json.dumps({"path": rel, **dataclasses.asdict(spec)}))
    if include_broken:
        for rel, payload in BROKEN_FILES.items():
            atomic_write_bytes(folder / rel, payload)
    atomic_write_text(folder / "songs.jsonl", "\n".join(rows) + "\n")
    atomic_write_text(marker, "ok\n")
    return folder


def prepare(cfg: DictConfig) -> DictConfig:
    """A stage-1 config whose ``data.root`` is ``demo``, with it replaced by the generated demo songs.

    Uses the ``demo`` block (``n_songs``, ``song_seconds``) and ``data.sample_rate``. Any
    other config is returned unchanged.
    """
    if cfg.data.root != "demo":
        return cfg
    folder = ensure_demo_music(int(cfg.demo.n_songs), float(cfg.demo.song_seconds), int(cfg.data.sample_rate))
    return with_values(cfg, {"data.root": str(folder)})
