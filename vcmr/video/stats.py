"""VM-NET's video-level features from per-second frame features.

VM-NET summarises a video's frame features with, per dimension, the mean, the standard
deviation and the top-``k`` ordinal statistics (the ``k`` largest values over time, largest
first; VM-NET: ``k = 5``). Here the frame features are the dataset builder's per-second
rows (``features/<id>.npy``, ``[S, F]``, CLIP frame embeddings averaged per second).

Layout of the output, ``(2 + k) · F`` float32 values::

    mean (F) | std (F) | 1st largest (F) | 2nd largest (F) | ... | k-th largest (F)

The standard deviation is the population one (``ddof = 0``). A video with fewer than ``k``
rows repeats its smallest value for the missing ordinal statistics. The global
normalisation, PCA and L2 that follow are fitted on the training split
(:class:`vcmr.data.feature_cache.FeatureTransform`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def video_level_stats(features: np.ndarray, top_k: int) -> np.ndarray:
    """Mean, standard deviation and top-``k`` ordinal statistics per dimension.

    Args:
        features: ``[S, F]`` per-second frame features, ``S >= 1``.
        top_k: number of ordinal statistics (VM-NET: 5).

    Returns:
        ``[(2 + top_k) · F]`` float32 (layout in the module docstring).

    Raises:
        ValueError: ``features`` is not a finite ``[S >= 1, F]`` array, or ``top_k < 0``.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"features must be [S >= 1, F], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    desc = -np.sort(-x, axis=0)  # [S, F], largest first
    if desc.shape[0] < top_k:
        desc = np.concatenate([desc, np.repeat(desc[-1:], top_k - desc.shape[0], axis=0)])
    parts = [x.mean(axis=0), x.std(axis=0)] + [desc[i] for i in range(top_k)]
    return np.concatenate(parts).astype(np.float32)


def video_level_stats_torch(features: Tensor, top_k: int) -> Tensor:
    """:func:`video_level_stats` on a batch: ``[B, S, F]`` -> ``[B, (2 + top_k) · F]`` (same layout)."""
    if features.dim() != 3 or features.shape[1] < 1:
        raise ValueError(f"features must be [B, S >= 1, F], got shape {tuple(features.shape)}")
    x = features.float()
    desc = torch.sort(x, dim=1, descending=True).values
    if desc.shape[1] < top_k:
        desc = torch.cat([desc, desc[:, -1:].expand(-1, top_k - desc.shape[1], -1)], dim=1)
    parts = [x.mean(dim=1), x.std(dim=1, unbiased=False)] + [desc[:, i] for i in range(top_k)]
    return torch.cat(parts, dim=1)


def stats_dim(feature_dim: int, top_k: int) -> int:
    """Length of the video-level vector: ``(2 + top_k) · feature_dim``."""
    return (2 + int(top_k)) * int(feature_dim)


__all__ = ["stats_dim", "video_level_stats", "video_level_stats_torch"]
