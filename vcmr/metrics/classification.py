"""Single-label classification metrics at song level: accuracy and per-class accuracy.

Labels come as one-hot rows ``[N, C]`` (the tagging index's label matrix of a single-label
dataset such as GTZAN); predictions as scores ``[N, C]`` (probabilities or logits). The
predicted class is the arg-max of a row; ties go to the lowest class index (``numpy.argmax``).
Per-class accuracy is the share of a class's tracks predicted as that class (its recall);
a class without tracks in the split gets ``NaN`` and is left out of ``balanced_accuracy``.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np


def one_hot_targets(y_true: np.ndarray) -> np.ndarray:
    """``[N, C]`` one-hot rows -> ``[N]`` class indices; raises unless every row has exactly one 1."""
    y = np.asarray(y_true)
    if y.ndim != 2:
        raise ValueError(f"expected one-hot labels [N, C], got shape {y.shape}")
    if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
        raise ValueError("single-label metrics need exactly one positive label per track")
    return y.argmax(axis=1)


def classification_scores(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str]) -> Dict[str, Any]:
    """Accuracy, balanced accuracy, per-class accuracy and the confusion matrix.

    Args:
        y_true: ``[N, C]`` one-hot labels.
        y_score: ``[N, C]`` scores; the prediction is the arg-max.
        classes: the ``C`` class names in column order.

    Returns:
        ``{"accuracy", "balanced_accuracy", "per_class": {name: {"accuracy", "n"}},
        "confusion": [[count]] (rows: true class, columns: predicted)}`` with ``NaN`` as
        ``None`` (JSON-friendly).
    """
    target = one_hot_targets(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.shape != np.asarray(y_true).shape:
        raise ValueError(f"y_true shape {np.asarray(y_true).shape} != y_score shape {scores.shape}")
    if scores.shape[1] != len(classes):
        raise ValueError(f"{scores.shape[1]} score columns but {len(classes)} class names")
    if scores.shape[0] == 0:
        raise ValueError("no tracks to evaluate")
    pred = scores.argmax(axis=1)
    c = len(classes)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (target, pred), 1)
    per_class: Dict[str, Dict[str, Any]] = {}
    for j, name in enumerate(classes):
        n = int(confusion[j].sum())
        per_class[name] = {"accuracy": float(confusion[j, j] / n) if n else None, "n": n}
    defined = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "accuracy": float((pred == target).mean()),
        "balanced_accuracy": float(np.mean(defined)) if defined else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


__all__ = ["classification_scores", "one_hot_targets"]
