"""Decoded-audio cache for tagging datasets: mp3 -> mono ``data.sample_rate`` arrays.

Decoding mp3s at every training step costs more than the model on small encoders, so
the tracks of every split are decoded once, in parallel, into
``<data.cache.dir>/<relative path>.npy`` (``int16`` or ``float16``, read with memory
mapping so a random crop touches only its samples) or ``.flac`` (16-bit).

* **Resumable:** outputs are written atomically; files already present are skipped, so
  an interrupted run continues where it stopped.
* **Bad files:** empty, truncated or undecodable files (MagnaTagATune has a few) are
  listed in ``failed.tsv`` (``relative path<TAB>reason``) and counted per split in
  ``cache_report.json``; the DataModule drops them from their split.
* ``cache_info.json`` records the sample rate and format; a cache is never mixed.

The file layout is defined, read and written by :mod:`vcmr.data.tagging.cache`.

Command (same config and overrides as training; the model keys are not used here)::

    python -m vcmr.scripts.tagging_cache --config config/supervised.yaml \\
        data.name=magnatagatune data.root=<dir> data.cache.dir=<cache dir>
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, Tuple

from vcmr.audio.io import AudioDecodeError, load_audio
from vcmr.data.tagging import TaggingIndex, cache
from vcmr.utils import progress_bar


@dataclasses.dataclass
class CacheReport:
    """Outcome of :func:`build_cache`.

    Attributes:
        converted: files decoded in this run.
        skipped: files already in the cache.
        failed: relative path -> reason.
        dropped_per_split: split -> number of its tracks that failed.
    """

    converted: int
    skipped: int
    failed: Dict[str, str]
    dropped_per_split: Dict[str, int]

    def summary(self) -> str:
        drops = ", ".join(f"{s} {n}" for s, n in self.dropped_per_split.items())
        return (
            f"{self.converted} converted, {self.skipped} already cached, {len(self.failed)} failed "
            f"(dropped per split: {drops})"
        )


def convert_file(src: str, dst: str, sample_rate: int, fmt: str) -> Tuple[str, str]:
    """Decode ``src`` to mono ``sample_rate`` and write ``dst`` atomically.

    Returns:
        ``("converted" | "skipped" | "failed", reason)``.
    """
    dst_path = Path(dst)
    if dst_path.is_file():
        return "skipped", ""
    try:
        x = load_audio(src, sample_rate)
    except AudioDecodeError as exc:
        return "failed", exc.reason
    except Exception as exc:  # a decoder crash on one file must not stop the others
        return "failed", f"{type(exc).__name__}: {exc}"
    cache.write_audio(dst_path, x, sample_rate, fmt)
    return "converted", ""


def build_cache(
    index: TaggingIndex,
    cache_dir: str | os.PathLike,
    sample_rate: int,
    fmt: str,
    num_workers: int,
    progress: bool = True,
) -> CacheReport:
    """Decode every track of ``index`` (all splits) into ``cache_dir``.

    Args:
        index: parsed dataset; paths are relative to ``index.audio_root``.
        cache_dir: output folder.
        sample_rate: Hz.
        fmt: ``int16``, ``float16`` or ``flac``.
        num_workers: processes; 0 decodes in this process.
        progress: show progress (a bar on a terminal, plain lines in a log).
    """
    cache_dir = Path(cache_dir)
    cache.claim(cache_dir, int(sample_rate), fmt)  # checks fmt before anything is written
    rel_paths = sorted({t.path for tracks in index.splits.values() for t in tracks})
    jobs = [(str(index.audio_root / r), str(cache.cache_path(cache_dir, r, fmt)), int(sample_rate), fmt) for r in rel_paths]
    status: Dict[str, Tuple[str, str]] = {}
    bar = progress_bar(total=len(jobs), desc="audio cache", unit="file", disable=not progress)
    if num_workers <= 0:
        for rel, job in zip(rel_paths, jobs):
            status[rel] = convert_file(*job)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            futures = {pool.submit(convert_file, *job): rel for rel, job in zip(rel_paths, jobs)}
            for fut in as_completed(futures):
                status[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    failed = {r: reason for r, (s, reason) in sorted(status.items()) if s == "failed"}
    cache.write_failed(cache_dir, failed)
    dropped = {s: sum(1 for t in tracks if t.path in failed) for s, tracks in index.splits.items()}
    report = CacheReport(
        converted=sum(1 for s, _ in status.values() if s == "converted"),
        skipped=sum(1 for s, _ in status.values() if s == "skipped"),
        failed=failed,
        dropped_per_split=dropped,
    )
    cache.write_report(cache_dir, dataclasses.asdict(report))
    return report
