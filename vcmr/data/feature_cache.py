"""Cached per-video features, the transforms fitted on them, and paired arrays for training.

Cache layout (written by :mod:`vcmr.preprocess.features`, read here)::

    <dataset>/feature_cache/<kind>/<video_id>.npy   one float32 array per ok video
    <dataset>/feature_cache/<kind>/settings.json    {"kind", "settings"}: what the arrays depend on
    <dataset>/feature_cache/<kind>/failures.tsv     video_id <TAB> reason, of the last run

``kind`` is a name of :data:`vcmr.preprocess.features.EXTRACTORS`; the shape of the
arrays is the extractor's (documented there).

:class:`FeatureTransform` is the global normalisation -> PCA -> L2 step that VM-NET applies
to its inputs: fitted on the training split only, saved as ``.npz``, and copied into the
model (:class:`vcmr.models.vmnet.InputTransform`) so an export is self-contained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vcmr.utils import atomic_path

CACHE_DIR = "feature_cache"
SETTINGS_FILE = "settings.json"
FAILURES_FILE = "failures.tsv"


class FeatureCacheError(FileNotFoundError):
    """A cached feature is missing, was made with other settings, or has the wrong shape."""


def kind_dir(root: str | os.PathLike, kind: str) -> Path:
    """``<root>/feature_cache/<kind>``."""
    return Path(root) / CACHE_DIR / kind


def feature_path(root: str | os.PathLike, kind: str, video_id: str) -> Path:
    """``<root>/feature_cache/<kind>/<video_id>.npy``."""
    return kind_dir(root, kind) / f"{video_id}.npy"


def read_settings(root: str | os.PathLike, kind: str) -> Optional[Dict[str, Any]]:
    """The ``settings.json`` of a cache folder (``None`` when there is none)."""
    path = kind_dir(root, kind) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FeatureCacheError(f"{path}: not valid JSON ({exc})") from exc


def read_failures(root: str | os.PathLike, kind: str) -> Dict[str, str]:
    """``{video_id: reason}`` of the videos the last extraction run could not do."""
    path = kind_dir(root, kind) / FAILURES_FILE
    if not path.is_file():
        return {}
    out: Dict[str, str] = {}
    for line in path.read_text().splitlines()[1:]:
        vid, _, reason = line.partition("\t")
        out[vid] = reason
    return out


def load_features(
    root: str | os.PathLike, kind: str, video_ids: Sequence[str], settings: Optional[Mapping[str, Any]] = None
) -> Dict[str, np.ndarray]:
    """The cached arrays of ``video_ids``.

    Args:
        root: dataset folder.
        kind: cache kind (extractor name).
        video_ids: the videos wanted.
        settings: when given, the cache's recorded settings must equal them.

    Returns:
        ``{video_id: float32 array}``.

    Raises:
        FeatureCacheError: a file is missing (the message says how to make it), or the
            settings differ (naming the keys).
    """
    if settings is not None:
        recorded = read_settings(root, kind)
        if recorded is not None and recorded.get("settings") != json.loads(json.dumps(dict(settings))):
            diff = settings_diff(recorded.get("settings") or {}, settings)
            raise FeatureCacheError(
                f"{kind_dir(root, kind)}: cached '{kind}' features were made with other settings ({diff}); "
                f"re-run `python -m vcmr.scripts.extract_features input={root} kind={kind} overwrite=true`"
            )
    failures = read_failures(root, kind)
    out: Dict[str, np.ndarray] = {}
    for vid in video_ids:
        path = feature_path(root, kind, vid)
        if not path.is_file():
            why = f" (last extraction failed: {failures[vid]})" if vid in failures else ""
            raise FeatureCacheError(
                f"{path}: no cached '{kind}' features for video {vid}{why}; run "
                f"`python -m vcmr.scripts.extract_features input={root} kind={kind}`"
            )
        out[vid] = np.load(path).astype(np.float32, copy=False)
    return out


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``"key: old -> new, ..."`` for the keys whose values differ."""
    new = json.loads(json.dumps(dict(new)))
    keys = sorted(set(old) | set(new))
    parts = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(parts) or "none"


# --------------------------------------------------------------------------------------
# Fitted transform: global normalisation -> PCA -> L2
# --------------------------------------------------------------------------------------


class FeatureTransform:
    """``x -> ((x - mean) / scale) @ components.T``, then optionally L2-normalised rows.

    Fitted on the training split only. Standardisation uses the per-dimension mean and
    (population) standard deviation; dimensions with ``std < eps`` keep scale 1. PCA is
    the SVD of the standardised training matrix; each component's sign is fixed so its
    largest-magnitude coefficient is positive (so a fit is deterministic).

    Args:
        standardize: subtract the mean and divide by the standard deviation.
        pca_dim: number of principal components kept (``None``: no PCA).
        l2: L2-normalise the output rows.
        eps: smallest standard deviation treated as non-zero.
    """

    def __init__(self, standardize: bool, pca_dim: Optional[int], l2: bool, eps: float = 1e-8) -> None:
        if pca_dim is not None and int(pca_dim) < 1:
            raise ValueError(f"pca_dim must be >= 1 or None, got {pca_dim}")
        self.standardize = bool(standardize)
        self.pca_dim = None if pca_dim is None else int(pca_dim)
        self.l2 = bool(l2)
        self.eps = float(eps)
        self.mean: Optional[np.ndarray] = None
        self.scale: Optional[np.ndarray] = None
        self.components: Optional[np.ndarray] = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def in_dim(self) -> int:
        self._check_fitted()
        return int(self.mean.shape[0])

    @property
    def out_dim(self) -> int:
        self._check_fitted()
        return int(self.components.shape[0]) if self.components is not None else self.in_dim

    def fit(self, x: np.ndarray) -> "FeatureTransform":
        """Fit on ``[N, D]`` training rows.

        Raises:
            ValueError: ``x`` is not ``[N >= 2, D]`` and finite, or ``pca_dim`` exceeds ``min(N, D)``.
        """
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
            raise ValueError(f"FeatureTransform.fit needs finite [N >= 2, D] rows, got shape {x.shape}")
        n, d = x.shape
        if self.standardize:
            mean = x.mean(axis=0)
            std = x.std(axis=0)
            scale = np.where(std < self.eps, 1.0, std)
        else:
            mean, scale = np.zeros(d), np.ones(d)
        self.mean, self.scale = mean.astype(np.float32), scale.astype(np.float32)
        self.components = None
        if self.pca_dim is not None:
            if self.pca_dim > min(n, d):
                raise ValueError(
                    f"pca_dim={self.pca_dim} exceeds min(training rows, dims) = min({n}, {d}); lower pca_dim"
                )
            z = (x - mean) / scale
            z = z - z.mean(axis=0)  # already centred when standardised; PCA always centres
            _, _, vt = np.linalg.svd(z, full_matrices=False)
            comps = vt[: self.pca_dim]
            signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
            self.components = (comps * signs[:, None]).astype(np.float32)
        return self

    def _check_fitted(self) -> None:
        if self.mean is None:
            raise RuntimeError("FeatureTransform is not fitted (call fit or load)")

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``[N, D]`` -> ``[N, out_dim]`` float32 (also ``[..., D]``: leading axes are kept)."""
        self._check_fitted()
        x = np.asarray(x, np.float64)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"FeatureTransform was fitted on {self.in_dim}-dim rows, got shape {x.shape}")
        z = (x - self.mean) / self.scale
        if self.components is not None:
            z = z @ self.components.T.astype(np.float64)
        if self.l2:
            z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
        return z.astype(np.float32)

    def arrays(self) -> Dict[str, np.ndarray]:
        """``mean``, ``scale`` and ``components`` (``[K, D]``; identity-free: absent without PCA)."""
        self._check_fitted()
        out = {"mean": self.mean, "scale": self.scale}
        if self.components is not None:
            out["components"] = self.components
        return out

    def config(self) -> Dict[str, Any]:
        return {"standardize": self.standardize, "pca_dim": self.pca_dim, "l2": self.l2, "eps": self.eps}

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (arrays + settings as JSON), atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a FeatureTransform is saved as .npz")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, config=np.array(json.dumps(self.config())), **self.arrays())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureTransform":
        """Read a file written by :meth:`save`.

        Raises:
            FeatureCacheError: the file is missing or lacks an entry (named).
        """
        path = Path(path)
        if not path.is_file():
            raise FeatureCacheError(f"{path}: transform file not found")
        with np.load(path, allow_pickle=False) as z:
            for key in ("config", "mean", "scale"):
                if key not in z:
                    raise FeatureCacheError(f"{path}: no '{key}' entry (not a FeatureTransform file)")
            t = cls(**json.loads(str(z["config"])))
            t.mean, t.scale = z["mean"], z["scale"]
            t.components = z["components"] if "components" in z else None
        return t


# --------------------------------------------------------------------------------------
# Paired arrays for training and evaluation
# --------------------------------------------------------------------------------------


class PairArrays(Dataset):
    """Row ``i`` of ``audio`` pairs with row ``i`` of ``video``; ``track[i]`` is the row's video.

    Args:
        audio: ``[N, ...]`` float32 audio-side inputs.
        video: ``[N, ...]`` float32 video-side inputs.
        track: ``[N]`` int64 index into ``track_ids``.
        track_ids: video ids.
    """

    def __init__(self, audio: np.ndarray, video: np.ndarray, track: np.ndarray, track_ids: Sequence[str]) -> None:
        if len(audio) != len(video) or len(audio) != len(track):
            raise ValueError(f"audio ({len(audio)}), video ({len(video)}) and track ({len(track)}) rows differ")
        self.audio = np.ascontiguousarray(audio, dtype=np.float32)
        self.video = np.ascontiguousarray(video, dtype=np.float32)
        self.track = np.asarray(track, dtype=np.int64)
        self.track_ids = list(track_ids)

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return {
            "audio": torch.from_numpy(self.audio[idx]),
            "video": torch.from_numpy(self.video[idx]),
            "track": int(self.track[idx]),
        }


class PairDataModule(pl.LightningDataModule):
    """Training batches of ``batch_size`` (capped at the training set size, last partial batch
    dropped) and one validation batch holding the whole validation set, so validation
    retrieval ranks every validation item against every other."""

    def __init__(self, train: PairArrays, val: PairArrays, batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        if len(train) < 2 or len(val) < 2:
            raise ValueError(f"need at least 2 training and 2 validation pairs, got {len(train)} and {len(val)}")
        self.train_set, self.val_set = train, val
        self.batch_size = min(int(batch_size), len(train))
        self.num_workers = int(num_workers)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=len(self.val_set), shuffle=False, num_workers=self.num_workers)


__all__: List[str] = [
    "CACHE_DIR", "FAILURES_FILE", "SETTINGS_FILE", "FeatureCacheError", "FeatureTransform", "PairArrays",
    "PairDataModule", "feature_path", "kind_dir", "load_features", "read_failures", "read_settings",
    "settings_diff",
]
