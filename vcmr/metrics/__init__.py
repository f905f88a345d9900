"""Evaluation metrics, each checked against a naive or scikit-learn reference.

* :mod:`vcmr.metrics.retrieval`: Recall@K and rank statistics for cross-modal retrieval.
* :mod:`vcmr.metrics.tagging`: macro ROC-AUC / PR-AUC for multi-label tagging.
"""
