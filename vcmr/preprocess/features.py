"""Per-video feature extraction over a dataset builder output, cached and resumable.

``python -m vcmr.scripts.extract_features input=<builder output> kind=<name>`` runs
:func:`extract_features` for every ``ok`` video of the manifest and writes
``<input>/feature_cache/<kind>/<video_id>.npy`` (layout: :mod:`vcmr.data.feature_cache`).

Extractors (:data:`EXTRACTORS`, an explicit registry; shapes per video, ``S`` = rows of the
builder's ``features/<id>.npy``, i.e. seconds of the kept window):

==================  =====================================  ========================================
kind                what                                   array
==================  =====================================  ========================================
``vmnet_audio``     VM-NET's hand-crafted music vector     ``[6 · rows_per_source]`` (1140 by default)
                    of the kept window's audio             (:func:`vcmr.audio.handcrafted.vmnet_track_features`)
``vmnet_video``     mean, std, top-k ordinal statistics    ``[(2 + top_k) · F]`` (3584 for CLIP, k=5)
                    of the per-second frame features       (:func:`vcmr.video.stats.video_level_stats`)
``clip_audio``      per-second log-mel statistics          ``[S, 2 · n_mels]``, row k = second k
                    (music input of the clip matcher)      (:func:`vcmr.audio.handcrafted.persecond_logmel`)
``stage2_audio``    the project's learned music features:  ``[F_a]`` (512 for SampleCNN)
                    a stage-2 export's audio encoder, mean
                    over windows of the kept window
``rhythm``          per-clip beat count, strength,         ``[n_clips, 7]``
                    interval, tempo and their classes      (:mod:`vcmr.preprocess.rhythm_motion`)
``motion``          per-clip optical-flow magnitude        ``[n_clips, bins + 2]``
                    histogram, mean and class              (:mod:`vcmr.preprocess.rhythm_motion`)
==================  =====================================  ========================================

Adding an extractor
-------------------
Write a class whose constructor takes the extractor's argument block (a mapping, from the
``features.<kind>`` block of the config) and which has

* ``settings() -> dict``: JSON-serialisable description of everything its output depends
  on; it is recorded in ``settings.json`` and a later run with other settings stops with
  the differing keys named (``overwrite=true`` recomputes);
* ``__call__(record: VideoRecord, root: Path) -> np.ndarray``: the array of one video
  (``record`` paths are relative to ``root``); raise any exception with a clear message
  for a video that cannot be done: it is recorded in ``failures.tsv`` with its reason and
  retried by the next run;

then add one line to :data:`EXTRACTORS` and its argument block to
``config/retrieval/features.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence

import numpy as np
from omegaconf import MISSING

from vcmr.data.feature_cache import (
    FAILURES_FILE,
    SETTINGS_FILE,
    FeatureCacheError,
    feature_path,
    kind_dir,
    read_settings,
    settings_diff,
)
from vcmr.data.manifest import VideoRecord, read_manifest
from vcmr.preprocess.rhythm_motion import MotionExtractor, RhythmExtractor
from vcmr.utils import atomic_save_npy, atomic_write_text, progress_bar


class Extractor(Protocol):
    """What :data:`EXTRACTORS` builds (see the module docstring)."""

    def settings(self) -> Dict[str, Any]: ...

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray: ...


def _audio_paths(record: VideoRecord, root: Path) -> List[Path]:
    if not record.audio_paths:
        raise ValueError(f"{record.video_id}: the manifest lists no audio segments")
    return [root / p for p in record.audio_paths]


def _frame_features(record: VideoRecord, root: Path) -> np.ndarray:
    if not record.feature_path:
        raise ValueError(f"{record.video_id}: the manifest lists no feature file")
    path = root / record.feature_path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: frame features listed in the manifest are missing")
    arr = np.load(path)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"{path}: expected [seconds, dim] frame features, got shape {arr.shape}")
    return arr


class VMNetAudioExtractor:
    """``vmnet_audio``: VM-NET's hand-crafted per-track music vector of the kept window.

    Args (``features.vmnet_audio``): the fields of :class:`vcmr.audio.handcrafted.VMNetAudioSettings`.
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        from vcmr.audio.handcrafted import VMNetAudioSettings

        self.s = VMNetAudioSettings.from_mapping(args)

    def settings(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.s)

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray:
        from vcmr.audio.handcrafted import vmnet_track_features_file

        return vmnet_track_features_file(_audio_paths(record, root), self.s)


class VMNetVideoExtractor:
    """``vmnet_video``: mean, std and top-``top_k`` ordinal statistics of the per-second frame features.

    Args (``features.vmnet_video``): ``top_k`` (VM-NET: 5).
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        unknown = sorted(set(args) - {"top_k"})
        if unknown or "top_k" not in args:
            raise KeyError(f"features.vmnet_video: needs exactly 'top_k', got {sorted(args)}")
        self.top_k = int(args["top_k"])

    def settings(self) -> Dict[str, Any]:
        return {"top_k": self.top_k}

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray:
        from vcmr.video.stats import video_level_stats

        return video_level_stats(_frame_features(record, root), self.top_k)


class ClipAudioExtractor:
    """``clip_audio``: per-second log-mel statistics, one row per row of the frame features.

    Args (``features.clip_audio``): the fields of :class:`vcmr.audio.handcrafted.LogMelSettings`.
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        from vcmr.audio.handcrafted import LogMelSettings

        self.s = LogMelSettings.from_mapping(args)

    def settings(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.s)

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray:
        from vcmr.audio.handcrafted import load_concatenated, persecond_logmel

        y, _ = load_concatenated(_audio_paths(record, root), self.s.sample_rate)
        n_rows = int(record.feature_shape[0])
        if n_rows < 1:
            raise ValueError(f"{record.video_id}: the manifest records no feature rows")
        return persecond_logmel(y, self.s, n_rows)


#: Representations ``stage2_audio`` can read off a joint model: waveform batch -> [B, F].
REPRESENTATIONS: Dict[str, Callable[[Any, Any], Any]] = {
    "encoder": lambda model, x: model.audio_encoder(x),
    "joint": lambda model, x: model.encode_audio(x, normalize=True),
}


class Stage2AudioExtractor:
    """``stage2_audio``: learned music features of a stage-2 export, per track.

    The kept window's audio (at the model's sample rate) is cut into windows of
    ``model.input_length`` samples every ``hop_fraction`` of a window (the last window
    aligned to the end); each goes through the model and the track vector is the mean of
    the window vectors.

    Args (``features.stage2_audio``): ``model`` (export file or run folder),
    ``representation`` (``encoder``: the music encoder's output, before the projection head;
    ``joint``: the L2-normalised joint-space embedding), ``hop_fraction``, ``batch_size``,
    ``device``.
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        keys = {"model", "representation", "hop_fraction", "batch_size", "device"}
        unknown, missing = sorted(set(args) - keys), sorted(keys - set(args))
        if unknown or missing:
            raise KeyError(f"features.stage2_audio: unknown key(s) {unknown}, missing key(s) {missing}")
        if not args["model"]:
            raise ValueError("features.stage2_audio.model: give a stage-2 export (file or run folder)")
        if args["representation"] not in REPRESENTATIONS:
            raise ValueError(
                f"features.stage2_audio.representation: '{args['representation']}' is not one of {sorted(REPRESENTATIONS)}"
            )
        if not 0 < float(args["hop_fraction"]) <= 1:
            raise ValueError(f"features.stage2_audio.hop_fraction must be in (0, 1], got {args['hop_fraction']}")
        import hashlib

        from vcmr.models.export import find_model_file, load_model

        self.path = find_model_file(str(args["model"]))
        self.model = load_model(self.path).to(str(args["device"]))
        self.args = dict(args)
        self.sample_rate = int(self.model.meta["sample_rate"])
        self._fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def settings(self) -> Dict[str, Any]:
        return {
            "model": str(self.path), "model_sha256": self._fingerprint,
            "representation": self.args["representation"], "hop_fraction": float(self.args["hop_fraction"]),
            "sample_rate": self.sample_rate,
        }

    def __call__(self, record: VideoRecord, root: Path) -> np.ndarray:
        import torch

        from vcmr.audio.handcrafted import load_concatenated

        y, _ = load_concatenated(_audio_paths(record, root), self.sample_rate)
        length = int(self.model.input_length)
        if y.size < length:
            y = np.pad(y, (0, length - y.size))
        hop = max(1, int(round(float(self.args["hop_fraction"]) * length)))
        starts = list(range(0, y.size - length + 1, hop))
        if starts[-1] + length < y.size:
            starts.append(y.size - length)
        rep = REPRESENTATIONS[str(self.args["representation"])]
        out = []
        bs = int(self.args["batch_size"])
        with torch.inference_mode():
            for i in range(0, len(starts), bs):
                x = torch.from_numpy(np.stack([y[s : s + length] for s in starts[i : i + bs]]))[:, None]
                out.append(rep(self.model, x.to(str(self.args["device"]))).float().cpu().numpy())
        return np.concatenate(out).mean(axis=0).astype(np.float32)


#: kind -> constructor taking the ``features.<kind>`` argument block.
EXTRACTORS: Dict[str, Callable[[Mapping[str, Any]], Extractor]] = {
    "vmnet_audio": VMNetAudioExtractor,
    "vmnet_video": VMNetVideoExtractor,
    "clip_audio": ClipAudioExtractor,
    "stage2_audio": Stage2AudioExtractor,
    "rhythm": RhythmExtractor,  # per-clip beat count/strength/interval, [n_clips, 7] (vcmr.audio.rhythm)
    "motion": MotionExtractor,  # per-clip optical-flow histogram + token, [n_clips, bins + 2] (vcmr.video.motion)
}


def build_extractor(kind: str, args: Mapping[str, Any]) -> Extractor:
    """``EXTRACTORS[kind](args)`` with an error naming the kind."""
    if kind not in EXTRACTORS:
        raise KeyError(f"kind: unknown feature extractor '{kind}'; choose from {sorted(EXTRACTORS)}")
    return EXTRACTORS[kind](args)


@dataclasses.dataclass
class ExtractionSummary:
    """Outcome of one run for one kind."""

    kind: str
    folder: Path
    done: int
    skipped: int
    failures: Dict[str, str]

    def __str__(self) -> str:
        lines = [
            f"features '{self.kind}' -> {self.folder}: {self.done} extracted, {self.skipped} already cached, "
            f"{len(self.failures)} failed"
        ]
        for vid, reason in sorted(self.failures.items())[:10]:
            lines.append(f"  failed {vid}: {reason}")
        if len(self.failures) > 10:
            lines.append(f"  ... and {len(self.failures) - 10} more (see {self.folder / FAILURES_FILE})")
        return "\n".join(lines)


def ok_records(root: str | Path) -> List[VideoRecord]:
    """The manifest's videos with status ``ok``, in manifest order."""
    return [r for r in read_manifest(root) if r.status == "ok"]


def extract_features(
    root: str | Path,
    kind: str,
    args: Mapping[str, Any],
    overwrite: bool = False,
    progress: bool = True,
    video_ids: Optional[Sequence[str]] = None,
    extractor: Optional[Extractor] = None,
) -> ExtractionSummary:
    """Compute and cache ``kind`` for the ``ok`` videos of a builder output.

    Args:
        root: dataset folder (``manifest.csv``).
        kind: a name of :data:`EXTRACTORS`.
        args: the extractor's argument block.
        overwrite: drop what is cached for ``kind`` and recompute everything.
        progress: show a progress bar.
        video_ids: restrict to these videos (default: every ``ok`` video).
        extractor: an already built extractor (``args`` is then ignored).

    Returns:
        Counts and the failures (``{video_id: reason}``), also written to ``failures.tsv``.

    Raises:
        FeatureCacheError: the cache holds ``kind`` made with other settings (keys named)
            and ``overwrite`` is false.
        ManifestError: the manifest is missing or malformed.
    """
    root = Path(root)
    records = ok_records(root)
    if video_ids is not None:
        wanted = set(video_ids)
        records = [r for r in records if r.video_id in wanted]
    ext = extractor if extractor is not None else build_extractor(kind, args)
    settings = json.loads(json.dumps(ext.settings()))
    folder = kind_dir(root, kind)
    recorded = read_settings(root, kind)
    if recorded is not None and recorded.get("settings") != settings:
        if not overwrite:
            raise FeatureCacheError(
                f"{folder}: cached '{kind}' features were made with other settings "
                f"({settings_diff(recorded.get('settings') or {}, settings)}); pass overwrite=true to recompute them"
            )
    if overwrite and folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / SETTINGS_FILE, json.dumps({"kind": kind, "settings": settings}, indent=1))
    todo = [r for r in records if not feature_path(root, kind, r.video_id).is_file()]
    failures: Dict[str, str] = {}
    bar = progress_bar(todo, desc=f"features {kind}", unit="video", disable=not progress or not todo)
    for rec in bar:
        try:
            arr = np.asarray(ext(rec, root), dtype=np.float32)
            if arr.size == 0 or not np.isfinite(arr).all():
                raise ValueError(f"extractor '{kind}' returned an empty or non-finite array of shape {arr.shape}")
            atomic_save_npy(feature_path(root, kind, rec.video_id), arr)
        except Exception as exc:  # noqa: BLE001 - any failure of one video is recorded, the run goes on
            failures[rec.video_id] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    bar.close()
    lines = ["video_id\treason"] + [f"{vid}\t{reason}" for vid, reason in sorted(failures.items())]
    atomic_write_text(folder / FAILURES_FILE, "\n".join(lines) + "\n")
    return ExtractionSummary(kind, folder, len(todo) - len(failures), len(records) - len(todo), failures)


# --------------------------------------------------------------------------------------
# The command's configuration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExtractFeaturesConfig:
    """Schema of ``config/extract_features.yaml``.

    ``input``: builder output folder (or ``demo``); ``kind``: an extractor name, or several
    separated by commas; ``features``: every extractor's argument block.
    """

    input: str = MISSING
    kind: str = MISSING
    overwrite: bool = MISSING
    progress: bool = MISSING
    demo: Dict[str, Any] = MISSING
    features: Dict[str, Dict[str, Any]] = MISSING


def parse_kinds(kind: str) -> List[str]:
    """``"a,b"`` -> ``["a", "b"]``, each checked against :data:`EXTRACTORS`."""
    kinds = [k.strip() for k in str(kind).split(",") if k.strip()]
    unknown = [k for k in kinds if k not in EXTRACTORS]
    if not kinds or unknown:
        raise KeyError(f"kind: unknown feature extractor(s) {unknown or [kind]}; choose from {sorted(EXTRACTORS)}")
    return kinds


def run(cfg: Any) -> List[ExtractionSummary]:
    """The command: every kind of ``cfg.kind`` over ``cfg.input``; prints each summary."""
    from vcmr.config import to_container

    features = to_container(cfg.features)
    out = []
    for kind in parse_kinds(cfg.kind):
        if kind not in features:
            raise KeyError(f"features.{kind}: no argument block for extractor '{kind}' in the config")
        summary = extract_features(cfg.input, kind, features[kind], bool(cfg.overwrite), bool(cfg.progress))
        print(summary)
        out.append(summary)
    return out


__all__ = [
    "EXTRACTORS",
    "ClipAudioExtractor",
    "ExtractFeaturesConfig",
    "ExtractionSummary",
    "Extractor",
    "REPRESENTATIONS",
    "Stage2AudioExtractor",
    "VMNetAudioExtractor",
    "VMNetVideoExtractor",
    "build_extractor",
    "extract_features",
    "ok_records",
    "parse_kinds",
    "run",
]
