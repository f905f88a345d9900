"""The ``rhythm`` and ``motion`` feature extractors (entries of :data:`vcmr.preprocess.features.EXTRACTORS`).

Both cover the kept window of a builder output's video, cut into clips of ``clip_seconds``:

* ``rhythm``: the window's audio (its segments, concatenated) -> ``[n_clips, 7]``
  (:func:`vcmr.audio.rhythm.rhythm_features`: beat count, strength, interval, tempo, and the
  three token classes);
* ``motion``: the window of the source video file -> ``[n_clips, bins + 2]``
  (:func:`vcmr.video.motion.video_motion`: flow-magnitude histogram, mean, token).

The source video of a record is found from the builder's ``preprocess_config.yaml``: a
folder input is scanned again (the id of a file is its relative path), a video list maps to
``<download dir>/<video_id>.<ext>``. ``videos`` (an argument of ``motion``) overrides this
with a folder holding ``<video_id>.<ext>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from vcmr.audio.rhythm import RhythmSettings, rhythm_features
from vcmr.data.manifest import VideoRecord
from vcmr.video.motion import MotionSettings, build_flow_backend, video_motion
from vcmr.video.probe import VIDEO_EXTENSIONS

#: The dataset builder's record of its settings, in the data folder.
BUILDER_CONFIG = "preprocess_config.yaml"


def _audio_paths(record: VideoRecord, root: Path) -> list:
    if not record.audio_paths:
        raise ValueError(f"{record.video_id}: the manifest lists no audio segments")
    return [root / p for p in record.audio_paths]


class RhythmExtractor:
    """``rhythm``: per-clip rhythm of the kept window's audio.

    Args (``features.rhythm``): the fields of :class:`vcmr.audio.rhythm.RhythmSettings`.
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        unknown = sorted(set(args) - {f.name for f in dataclasses.fields(RhythmSettings)})
        if unknown:
            raise KeyError(f"features.rhythm: unknown key(s) {unknown}")
        self.s = RhythmSettings.from_config(dict(args))

    def settings(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.s)

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray:
        from vcmr.audio.handcrafted import load_concatenated

        y, _ = load_concatenated(_audio_paths(record, root), self.s.sample_rate)
        try:
            return rhythm_features(y, self.s)
        except ValueError as exc:
            raise ValueError(f"{record.video_id}: {exc}") from exc


def builder_sources(root: Path) -> Dict[str, Path]:
    """``{video_id: source file}`` of a builder output, from its ``preprocess_config.yaml``.

    Raises:
        FileNotFoundError: the folder has no ``preprocess_config.yaml``.
    """
    from omegaconf import OmegaConf

    from vcmr.preprocess.download import DownloadSettings, find_download, read_inputs

    path = root / BUILDER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; the motion extractor finds source videos through the builder's config "
            "(or pass features.motion.videos=<folder with <video_id>.mp4>)"
        )
    cfg = OmegaConf.load(path)
    download = DownloadSettings(str(cfg.download.dir or root / "downloads"), "", 0, 0.0)
    out: Dict[str, Path] = {}
    for src in read_inputs(str(cfg.input)):
        found = Path(src.path) if src.path else find_download(src, download)
        if found is not None:
            out[src.video_id] = found
    return out


def video_in_folder(folder: Path, video_id: str) -> Optional[Path]:
    """``<folder>/<video_id>.<ext>`` for a known video extension, if present."""
    for ext in VIDEO_EXTENSIONS:
        p = folder / f"{video_id}{ext}"
        if p.is_file():
            return p
    return None


class MotionExtractor:
    """``motion``: per-clip optical-flow statistics of the kept window of the source video.

    Args (``features.motion``): the fields of :class:`vcmr.video.motion.MotionSettings`,
    ``backend`` (a name of :data:`vcmr.video.motion.FLOW_BACKENDS`), ``backends`` (each
    backend's arguments) and ``videos`` (``null``, or a folder of ``<video_id>.<ext>`` files).
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        fields = {f.name for f in dataclasses.fields(MotionSettings)}
        keys = fields | {"backend", "backends", "videos"}
        unknown, missing = sorted(set(args) - keys), sorted(keys - set(args))
        if unknown or missing:
            raise KeyError(f"features.motion: unknown key(s) {unknown}, missing key(s) {missing}")
        self.s = MotionSettings.from_config({k: args[k] for k in fields})
        self.backend_name = str(args["backend"])
        backends = dict(args["backends"] or {})
        if self.backend_name not in backends:
            raise KeyError(f"features.motion.backends: no argument block for backend '{self.backend_name}'")
        self.backend_args = dict(backends[self.backend_name])
        self.backend = build_flow_backend(self.backend_name, self.backend_args)
        self.videos = Path(args["videos"]) if args["videos"] else None
        self._sources: Optional[Dict[str, Path]] = None

    def settings(self) -> Dict[str, Any]:
        # Where the videos are read from does not change the features; the device does not either.
        backend = {k: v for k, v in self.backend_args.items() if k not in ("device", "batch_size")}
        return {**dataclasses.asdict(self.s), "backend": self.backend_name, "backend_args": backend}

    def source(self, record: VideoRecord, root: Path) -> Path:
        """The video file of ``record``."""
        if self.videos is not None:
            found = video_in_folder(self.videos, record.video_id)
            if found is None:
                raise FileNotFoundError(f"{self.videos}: no video file named {record.video_id}.<ext>")
            return found
        if self._sources is None:
            self._sources = builder_sources(root)
        if record.video_id not in self._sources:
            raise FileNotFoundError(f"{record.video_id}: source video not found from {root / BUILDER_CONFIG}")
        return self._sources[record.video_id]

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray:
        if record.window_duration < self.s.clip_seconds:
            raise ValueError(f"{record.video_id}: kept window of {record.window_duration} s is shorter than one clip")
        return video_motion(self.source(record, root), self.s, self.backend,
                            start=float(record.window_start), duration=float(record.window_duration))


__all__ = ["MotionExtractor", "RhythmExtractor", "builder_sources", "video_in_folder"]
