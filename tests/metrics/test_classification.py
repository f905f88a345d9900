"""Single-label metrics against scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score

from vcmr.metrics.classification import classification_scores, one_hot_targets


def test_against_sklearn():
    rng = np.random.default_rng(0)
    n, c = 200, 5
    target = rng.integers(0, c, n)
    target[target == 4] = 3  # class 4 has no track
    scores = rng.random((n, c)) + 0.8 * np.eye(c)[target]
    onehot = np.eye(c)[target]
    out = classification_scores(onehot, scores, list("abcde"))
    pred = scores.argmax(1)
    assert out["accuracy"] == pytest.approx(accuracy_score(target, pred))
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(target, pred))
    recall = recall_score(target, pred, labels=[0, 1, 2, 3], average=None)
    assert [out["per_class"][k]["accuracy"] for k in "abcd"] == pytest.approx(list(recall))
    assert out["per_class"]["e"] == {"accuracy": None, "n": 0}
    assert out["confusion"] == confusion_matrix(target, pred, labels=range(5)).tolist()


def test_errors():
    with pytest.raises(ValueError, match="exactly one positive"):
        one_hot_targets(np.array([[1, 1, 0]]))
    with pytest.raises(ValueError, match="class names"):
        classification_scores(np.eye(3), np.eye(3), ["a", "b"])
