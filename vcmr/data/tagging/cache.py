"""The decoded-audio cache of a tagging dataset: the one place that reads and writes its format.

Layout of ``data.cache.dir`` (written by :mod:`vcmr.preprocess.tagging_cache`)::

    <relative path>.npy       mono audio, int16 (x * 32768, clipped) or float16; read
                              memory-mapped, so a crop touches only its samples
    <relative path>.flac      mono 16-bit FLAC (format ``flac``)
    cache_info.json           {"sample_rate": Hz, "format": "int16" | "float16" | "flac"}
    failed.tsv                relative path<TAB>reason, for sources that could not be decoded
    cache_report.json         counts of the last build

``<relative path>`` is the track's path in the annotation files with its suffix replaced.
A cache holds one sample rate and one format; it is never mixed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from vcmr.audio.io import load_audio, save_audio
from vcmr.utils import atomic_save_npy, atomic_write_text

CACHE_INFO = "cache_info.json"
CACHE_FAILED = "failed.tsv"
CACHE_REPORT = "cache_report.json"
CACHE_FORMATS = ("int16", "float16", "flac")


def cache_path(cache_dir: str | os.PathLike, rel_path: str, fmt: str) -> Path:
    """Where the cache keeps ``rel_path``: same relative folder, suffix ``.npy`` or ``.flac``."""
    suffix = ".flac" if fmt == "flac" else ".npy"
    return Path(cache_dir) / Path(rel_path).with_suffix(suffix)


def read_info(cache_dir: str | os.PathLike, sample_rate: int) -> str:
    """The format of the cache in ``cache_dir``, checked to hold ``sample_rate`` audio.

    Raises:
        FileNotFoundError: no cache there (the message says how to build one).
        ValueError: the cache holds another sample rate.
    """
    info_path = Path(cache_dir) / CACHE_INFO
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path}: no audio cache here; build it with "
            "python -m vcmr.preprocess.tagging_cache --config <your config> [overrides]"
        )
    info = json.loads(info_path.read_text())
    if int(info["sample_rate"]) != int(sample_rate):
        raise ValueError(f"{info_path}: cache holds {info['sample_rate']} Hz audio but data.sample_rate={sample_rate}")
    return str(info["format"])


def claim(cache_dir: str | os.PathLike, sample_rate: int, fmt: str) -> None:
    """Record ``sample_rate`` and ``fmt`` in a new cache, or check that an existing one matches."""
    if fmt not in CACHE_FORMATS:
        raise ValueError(f"data.cache.format: unknown format '{fmt}'; choose from {CACHE_FORMATS}")
    info_path = Path(cache_dir) / CACHE_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if int(info["sample_rate"]) != sample_rate or info["format"] != fmt:
            raise ValueError(
                f"{info_path}: this cache holds {info['format']} audio at {info['sample_rate']} Hz; "
                f"asked for {fmt} at {sample_rate} Hz. Use another data.cache.dir."
            )
    else:
        atomic_write_text(info_path, json.dumps({"sample_rate": sample_rate, "format": fmt}, indent=2))


def read_failed(cache_dir: str | os.PathLike) -> Dict[str, str]:
    """Relative path -> reason, for the tracks the cache step could not decode."""
    path = Path(cache_dir) / CACHE_FAILED
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rel, _, reason = line.partition("\t")
            out[rel] = reason
    return out


def write_failed(cache_dir: str | os.PathLike, failed: Mapping[str, str]) -> None:
    """Write ``failed.tsv`` (relative path -> reason)."""
    atomic_write_text(Path(cache_dir) / CACHE_FAILED, "".join(f"{r}\t{why}\n" for r, why in failed.items()))


def write_report(cache_dir: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """Write ``cache_report.json``."""
    atomic_write_text(Path(cache_dir) / CACHE_REPORT, json.dumps(dict(report), indent=2))


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _to_float32(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.int16:
        return np.asarray(arr, dtype=np.float32) / 32768.0
    return np.asarray(arr, dtype=np.float32)


def write_audio(path: str | os.PathLike, x: np.ndarray, sample_rate: int, fmt: str) -> None:
    """Store ``x`` (``[N]`` float32 at ``sample_rate``) at ``path`` in format ``fmt``, atomically."""
    if fmt == "flac":
        save_audio(path, x, sample_rate)
    else:
        atomic_save_npy(path, _to_int16(x) if fmt == "int16" else x.astype(np.float16))


def read_audio(path: str | os.PathLike, fmt: str, sample_rate: int) -> np.ndarray:
    """A whole cached track: ``[N]`` float32."""
    if fmt == "flac":
        return load_audio(path, sample_rate)
    return _to_float32(np.load(path, mmap_mode="r"))


def read_window(path: str | os.PathLike, fmt: str, start: int, length: int) -> np.ndarray:
    """Samples ``[start, start + length)`` of a cached track (fewer past its end): float32."""
    if fmt != "flac":
        return _to_float32(np.load(path, mmap_mode="r")[start : start + length])
    import soundfile as sf

    with sf.SoundFile(str(path)) as fh:
        fh.seek(min(start, fh.frames))
        return fh.read(frames=length, dtype="float32")


def num_samples(path: str | os.PathLike, fmt: str) -> int:
    """Length of a cached track in samples (read from the header only)."""
    if fmt != "flac":
        return int(np.load(path, mmap_mode="r").shape[0])
    import soundfile as sf

    return int(sf.info(str(path)).frames)
