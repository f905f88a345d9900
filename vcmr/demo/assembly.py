"""The music-video demo: ``song: demo`` and ``library: demo`` made concrete.

``song: demo`` is a song generated with :mod:`vcmr.demo.synth` from the config's ``demo``
block (timbre, drums, tempo, key, mode, seed, length, sample rate), written once as a wav
to ``<cache>/make_video_demo/`` (``$VCMR_CACHE`` or ``~/.cache/vcmr``). ``library: demo``
is the demo clip library (:func:`vcmr.demo.library.ensure_demo_library`, built from the
demo music videos with the demo stage-2 model the first time).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Mapping

from omegaconf import DictConfig, OmegaConf

from vcmr.config import to_container
from vcmr.utils import cache_dir

#: Keys of the ``demo`` block that describe the song.
SONG_KEYS = ("seconds", "tempo", "timbre", "drums", "key", "mode", "seed", "sample_rate")


def ensure_demo_song(settings: Mapping[str, Any], root: Path | None = None) -> Path:
    """Render the demo song described by ``settings`` (the ``demo`` block) once; return the wav.

    Raises:
        KeyError: a key of :data:`SONG_KEYS` is missing from ``settings`` (named).
    """
    from vcmr.audio.io import save_audio
    from vcmr.demo.synth import SYNTH_VERSION, SongSpec, render

    missing = [k for k in SONG_KEYS if k not in settings]
    if missing:
        raise KeyError(f"demo: the demo song needs the key(s) {missing}")
    song = {k: settings[k] for k in SONG_KEYS}
    tag = hashlib.sha1(json.dumps({**song, "synth": SYNTH_VERSION}, sort_keys=True).encode()).hexdigest()[:10]
    folder = (root or cache_dir()) / "make_video_demo"
    path = folder / f"demo_song_{song['timbre']}_{song['drums']}_{float(song['tempo']):g}bpm_{tag}.wav"
    if path.is_file():
        return path
    spec = SongSpec(timbre=str(song["timbre"]), drums=str(song["drums"]), tempo=float(song["tempo"]),
                    key=int(song["key"]), mode=str(song["mode"]), seed=int(song["seed"]))
    audio = render(spec, int(song["sample_rate"]), float(song["seconds"]))
    save_audio(path, audio, int(song["sample_rate"]))
    return path


def prepare(cfg: DictConfig) -> DictConfig:
    """A ``make_video`` config with ``song: demo`` / ``library: demo`` replaced by real files."""
    values: Dict[str, Any] = {}
    if str(cfg.song) == "demo":
        values["song"] = str(ensure_demo_song(to_container(cfg.demo) or {}))
    if str(cfg.library) == "demo":
        from vcmr.demo.library import ensure_demo_library

        values["library"] = str(ensure_demo_library("clips"))
    if not values:
        return cfg
    out = OmegaConf.merge(cfg, values)
    OmegaConf.set_readonly(out, True)
    return out


__all__ = ["SONG_KEYS", "ensure_demo_song", "prepare"]
