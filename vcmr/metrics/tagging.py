"""Multi-label tagging metrics: ROC-AUC and PR-AUC (average precision), macro-averaged.

Both scores are computed per tag from the ranking of the tracks by predicted score, the
same way scikit-learn's ``roc_auc_score`` and ``average_precision_score`` do (tied scores
share a threshold), and then averaged over tags with equal weight ("macro").

**Rule for degenerate tags.** A tag whose column in the evaluated split has no positive,
or no negative, example has no defined ROC-AUC (and no meaningful average precision). Such
a tag gets ``NaN`` for both scores, is listed in ``undefined``, and is left out of every
macro average (overall and per group). scikit-learn, by contrast, warns and returns NaN
(or raises, depending on the version) for ROC-AUC and scores a no-positive column 0 for
average precision; on the remaining tags the numbers are identical.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np


def _check_pair(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_score shape {y_score.shape}")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("y_score contains NaN or Inf")
    values = np.unique(y_true)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(f"y_true must be binary 0/1, found values {values[:5].tolist()}")
    return y_true.astype(bool), y_score


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of one tag.

    Computed as the Mann-Whitney statistic: the probability that a random positive
    scores higher than a random negative, ties counting one half (average ranks).

    Args:
        y_true: ``[N]`` 0/1 labels.
        y_score: ``[N]`` scores (any monotone scale: logits or probabilities).

    Returns:
        The AUC in [0, 1], or ``NaN`` when ``y_true`` has only one class.
    """
    pos, score = _check_pair(y_true, y_score)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(score.size, dtype=np.float64)
    # Average rank (1-based) within each run of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [score.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step rule) of one tag.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds in
    decreasing order, where ``P_k``/``R_k`` are precision and recall when every track
    scoring at least the k-th threshold is called positive.

    Args:
        y_true: ``[N]`` 0/1 labels.
        y_score: ``[N]`` scores.

    Returns:
        AP in [0, 1], or ``NaN`` when ``y_true`` has only one class (see module rule).
    """
    pos, score = _check_pair(y_true, y_score)
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == pos.size:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s, p = score[order], pos[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(p)[last_of_run].astype(np.float64)
    called = (last_of_run + 1).astype(np.float64)
    precision = tp / called
    recall = tp / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


@dataclasses.dataclass
class TaggingScores:
    """Scores of one evaluation.

    Attributes:
        overall: ``{"roc_auc": float, "pr_auc": float}`` macro over defined tags.
        groups: group name -> same dict, macro over the group's defined tags
            (``NaN`` when none is defined), plus ``n_tags``.
        per_tag: tag -> ``{"roc_auc", "pr_auc", "n_pos"}``.
        undefined: tags left out of the averages (one class only in this split).
    """

    overall: Dict[str, float]
    groups: Dict[str, Dict[str, float]]
    per_tag: Dict[str, Dict[str, float]]
    undefined: List[str]

    def to_dict(self) -> dict:
        """JSON-friendly copy (NaN becomes ``None``)."""

        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            if isinstance(x, float) and math.isnan(x):
                return None
            return x

        return clean(dataclasses.asdict(self))


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def tagging_scores(
    y_true: np.ndarray,
    y_score: np.ndarray,
    tags: Sequence[str],
    groups: Optional[Mapping[str, Sequence[str]]] = None,
) -> TaggingScores:
    """Macro ROC-AUC / PR-AUC overall, per tag group and per tag.

    Args:
        y_true: ``[N, T]`` 0/1 labels of N tracks.
        y_score: ``[N, T]`` predicted scores.
        tags: the T tag names, in column order.
        groups: optional group -> tag names; every name must be in ``tags``.

    Returns:
        :class:`TaggingScores`. Tags with a single class in ``y_true`` are ``NaN`` and
        excluded from the averages (module docstring).
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"expected [N, T] arrays of equal shape, got {y_true.shape} and {y_score.shape}")
    if y_true.shape[1] != len(tags):
        raise ValueError(f"{y_true.shape[1]} label columns but {len(tags)} tag names")
    if y_true.shape[0] == 0:
        raise ValueError("no tracks to evaluate")
    per_tag: Dict[str, Dict[str, float]] = {}
    for j, tag in enumerate(tags):
        per_tag[tag] = {
            "roc_auc": roc_auc(y_true[:, j], y_score[:, j]),
            "pr_auc": average_precision(y_true[:, j], y_score[:, j]),
            "n_pos": int(np.asarray(y_true[:, j]).sum()),
        }
    undefined = [t for t in tags if math.isnan(per_tag[t]["roc_auc"])]
    overall = {
        "roc_auc": _nanmean([per_tag[t]["roc_auc"] for t in tags]),
        "pr_auc": _nanmean([per_tag[t]["pr_auc"] for t in tags]),
    }
    out_groups: Dict[str, Dict[str, float]] = {}
    for name, members in (groups or {}).items():
        unknown = [t for t in members if t not in per_tag]
        if unknown:
            raise KeyError(f"tag group '{name}': tags not in the vocabulary: {unknown}")
        out_groups[name] = {
            "roc_auc": _nanmean([per_tag[t]["roc_auc"] for t in members]),
            "pr_auc": _nanmean([per_tag[t]["pr_auc"] for t in members]),
            "n_tags": len(members),
        }
    return TaggingScores(overall=overall, groups=out_groups, per_tag=per_tag, undefined=undefined)
