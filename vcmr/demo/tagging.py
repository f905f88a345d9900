"""Demo tagging dataset: procedurally generated songs with planted tags.

Each song is rendered by :func:`vcmr.demo.synth.render` from a random
:class:`~vcmr.demo.synth.SongSpec`; its tags are the spec's attributes in the
``category---value`` form of :func:`vcmr.demo.synth.spec_labels`, restricted to the
configured categories (``timbre``, ``drums``, ``tempo``, ``mode``).

To make the ``tempo`` tags learnable from a short window, tempi are drawn from two
disjoint ranges (``tempo_slow`` and ``tempo_fast``, in BPM) either side of the 115 BPM
boundary that ``spec_labels`` uses.

The set is written once to ``<cache_dir>/demo_tagging/<hash of the settings>/`` in the
MTG-Jamendo layout, so it goes through the same parser as the real data::

    audio/<nn>/<id>.wav                                    16-bit PCM at the sample rate
    data/splits/split-0/autotagging_top50tags-{train,validation,test}.tsv
    complete.json                                          written last; marks a finished set

:func:`prepare` is what the stage-3 commands call: for ``data.name: demo`` it makes sure
the set exists and returns the config pointing at it as MTG-Jamendo data (named ``demo``
in logs and reports); the data, training and evaluation code never see the word ``demo``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, List, Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vcmr.audio.io import save_audio
from vcmr.demo.synth import DRUM_PATTERNS, MODES, SYNTH_VERSION, TIMBRES, SongSpec, render, spec_labels
from vcmr.utils import atomic_write_text, cache_dir, progress_bar

CATEGORIES = ("timbre", "drums", "tempo", "mode")
SPLIT_FILES = (("train", "train"), ("valid", "validation"), ("test", "test"))
#: The MTG-Jamendo ``data.split`` and ``data.tagset`` the set is written as.
SPLIT = "split-0"
TAGSET = "top50tags"


def _settings(cfg: Mapping[str, Any], sample_rate: int) -> dict:
    s = {
        "n_train": int(cfg["n_train"]),
        "n_valid": int(cfg["n_valid"]),
        "n_test": int(cfg["n_test"]),
        "duration": float(cfg["duration"]),
        "seed": int(cfg["seed"]),
        "categories": [str(c) for c in cfg["categories"]],
        "tempo_slow": [float(x) for x in cfg["tempo_slow"]],
        "tempo_fast": [float(x) for x in cfg["tempo_fast"]],
        "sample_rate": int(sample_rate),
        "synth_version": SYNTH_VERSION,  # a changed synthesiser gives a new folder
    }
    unknown = [c for c in s["categories"] if c not in CATEGORIES]
    if unknown or not s["categories"]:
        raise ValueError(f"data.demo.categories: unknown or empty {unknown or s['categories']}; choose from {CATEGORIES}")
    lo_s, hi_s = s["tempo_slow"]
    lo_f, hi_f = s["tempo_fast"]
    if not (lo_s <= hi_s < 115.0 <= lo_f <= hi_f):
        raise ValueError("data.demo.tempo_slow must end below 115 BPM and tempo_fast start at or above it")
    if min(s["n_train"], s["n_valid"], s["n_test"]) < 1 or s["duration"] <= 0:
        raise ValueError("data.demo: every split needs at least one song and duration must be > 0")
    return s


def demo_spec(rng: np.random.Generator, settings: Mapping[str, Any]) -> SongSpec:
    """A random spec with the tempo drawn from the slow or the fast range (equal odds)."""
    rng_range = settings["tempo_fast"] if rng.random() < 0.5 else settings["tempo_slow"]
    return SongSpec(
        timbre=str(rng.choice(TIMBRES)),
        drums=str(rng.choice(DRUM_PATTERNS)),
        tempo=float(rng.uniform(*rng_range)),
        key=int(rng.integers(0, 12)),
        mode=str(rng.choice(MODES)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def demo_tags(spec: SongSpec, categories: List[str]) -> List[str]:
    """The spec's ``category---value`` tags for the chosen categories."""
    return [t for t in spec_labels(spec) if t.split("---", 1)[0] in categories]


def ensure_demo_dataset(cfg: Mapping[str, Any], sample_rate: int, root: Path | None = None) -> Path:
    """Generate the demo set if it is not there yet; return its folder.

    Args:
        cfg: :class:`~vcmr.data.tagging.DemoTaggingConfig` values (``data.demo``).
        sample_rate: Hz of the written audio.
        root: parent folder (default :func:`vcmr.utils.cache_dir`).
    """
    settings = _settings(cfg, sample_rate)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(root or cache_dir()) / "demo_tagging" / digest
    if (out / "complete.json").is_file():
        return out
    rng = np.random.default_rng(settings["seed"])
    counts = {"train": settings["n_train"], "valid": settings["n_valid"], "test": settings["n_test"]}
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
    rows = {s: [header] for s in counts}
    total = sum(counts.values())
    with progress_bar(total=total, desc="demo tagging set", unit="song") as bar:
        i = 0
        for split, n in counts.items():
            for _ in range(n):
                spec = demo_spec(rng, settings)
                rel = f"{i % 100:02d}/{i}.wav"
                save_audio(out / "audio" / rel, render(spec, sample_rate, settings["duration"]), sample_rate)
                tags = "\t".join(demo_tags(spec, settings["categories"]))
                rows[split].append(f"track_{i:07d}\tartist_{i:06d}\talbum_{i:06d}\t{rel}\t{settings['duration']:.1f}\t{tags}")
                i += 1
                bar.update(1)
    splits_dir = out / "data" / "splits" / SPLIT
    for split, fname in SPLIT_FILES:
        atomic_write_text(splits_dir / f"autotagging_{TAGSET}-{fname}.tsv", "\n".join(rows[split]) + "\n")
    atomic_write_text(out / "complete.json", json.dumps(settings, indent=2))
    return out


def prepare(cfg: DictConfig) -> DictConfig:
    """Point a stage-3 config at the demo tagging set when ``data.name`` is ``demo``.

    Generates the set on first use (:func:`ensure_demo_dataset`, from ``data.demo`` and
    ``data.sample_rate``) and returns a copy of ``cfg`` whose ``data`` block reads it as
    MTG-Jamendo files (``name: mtg_jamendo``, ``root``, ``audio_root``, ``split``,
    ``tagset``), reported under the name ``demo`` unless ``data.report_name`` is set.
    Any other config is returned unchanged.
    """
    if str(cfg.data.name) != "demo":
        return cfg
    root = ensure_demo_dataset(cfg.data.demo, int(cfg.data.sample_rate))
    data = {
        "name": "mtg_jamendo",
        "report_name": cfg.data.report_name or "demo",
        "root": str(root),
        "audio_root": str(root / "audio"),
        "split": SPLIT,
        "tagset": TAGSET,
    }
    return OmegaConf.merge(cfg, {"data": data})
