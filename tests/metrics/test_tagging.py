"""Tagging metrics against scikit-learn, and the rule for degenerate tags."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vcmr.metrics.tagging import average_precision, roc_auc, tagging_scores


def _random_case(rng, n, ties):
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1  # both classes present
    s = rng.integers(0, 4, n).astype(float) if ties else rng.standard_normal(n)
    return y, s


@pytest.mark.parametrize("ties", [False, True])
def test_single_tag_scores_equal_sklearn(ties):
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, s = _random_case(rng, int(rng.integers(2, 80)), ties)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_known_values():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == pytest.approx(0.75)
    # thresholds 0.8 (P=1, R=.5), 0.4 (P=.5), 0.35 (P=2/3, R=1): AP = .5*1 + .5*2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert roc_auc(y, -s) == pytest.approx(0.25)
    assert roc_auc(y, np.zeros(4)) == pytest.approx(0.5)  # all tied


def test_macro_scores_equal_sklearn_on_same_arrays():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 12)) < 0.3).astype(int)
    score = y * 0.8 + rng.random((200, 12))
    tags = [f"t{i}" for i in range(12)]
    out = tagging_scores(y, score, tags)
    assert out.overall["roc_auc"] == pytest.approx(roc_auc_score(y, score, average="macro"), abs=1e-12)
    assert out.overall["pr_auc"] == pytest.approx(average_precision_score(y, score, average="macro"), abs=1e-12)
    for j, t in enumerate(tags):
        assert out.per_tag[t]["roc_auc"] == pytest.approx(roc_auc_score(y[:, j], score[:, j]), abs=1e-12)
        assert out.per_tag[t]["n_pos"] == int(y[:, j].sum())
    assert out.undefined == []


def test_groups_are_macro_over_their_tags():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 4)) < 0.5).astype(int)
    score = rng.random((80, 4))
    out = tagging_scores(y, score, ["a", "b", "c", "d"], {"g1": ["a", "c"], "g2": ["d"]})
    assert out.groups["g1"]["roc_auc"] == pytest.approx(roc_auc_score(y[:, [0, 2]], score[:, [0, 2]], average="macro"))
    assert out.groups["g2"]["pr_auc"] == pytest.approx(average_precision_score(y[:, 3], score[:, 3]))
    assert out.groups["g1"]["n_tags"] == 2
    with pytest.raises(KeyError, match="g3"):
        tagging_scores(y, score, ["a", "b", "c", "d"], {"g3": ["zzz"]})


def test_tag_without_positives_is_excluded_from_averages():
    rng = np.random.default_rng(3)
    y = (rng.random((60, 5)) < 0.4).astype(int)
    y[:, 2] = 0  # no positive in this split
    y[:, 4] = 1  # no negative in this split
    score = rng.random((60, 5))
    out = tagging_scores(y, score, list("abcde"), {"g": ["b", "c"]})
    assert math.isnan(out.per_tag["c"]["roc_auc"]) and math.isnan(out.per_tag["c"]["pr_auc"])
    assert math.isnan(out.per_tag["e"]["roc_auc"])
    assert out.undefined == ["c", "e"]
    keep = [0, 1, 3]
    assert out.overall["roc_auc"] == pytest.approx(roc_auc_score(y[:, keep], score[:, keep], average="macro"))
    assert out.overall["pr_auc"] == pytest.approx(average_precision_score(y[:, keep], score[:, keep], average="macro"))
    assert out.groups["g"]["roc_auc"] == pytest.approx(roc_auc_score(y[:, 1], score[:, 1]))
    # scikit-learn scores the no-positive column 0 for average precision (and warns);
    # our rule leaves it out instead, so the macro averages differ exactly there.
    sk_ap = average_precision_score(y, score, average=None)
    assert sk_ap[2] == 0.0
    assert out.per_tag["a"]["pr_auc"] == pytest.approx(sk_ap[0])
    d = out.to_dict()
    assert d["per_tag"]["c"]["roc_auc"] is None


def test_bad_input_raises():
    with pytest.raises(ValueError, match="shape"):
        tagging_scores(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="binary"):
        roc_auc(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0, 1]), np.array([np.nan, 0.2]))
    with pytest.raises(ValueError, match="tag names"):
        tagging_scores(np.zeros((3, 2)), np.zeros((3, 2)), ["a"])
