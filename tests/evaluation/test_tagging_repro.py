"""Song-level evaluation with the originals' rules: dropped last window, majority vote,
single-label accuracy, VCMR's MTAT tag groups."""
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, recall_score

from vcmr.audio.io import save_audio
from vcmr.data.tagging import PONS2017_TAGS, AudioStore, TaggingIndex, Track
from vcmr.evaluation.report import per_tag_table
from vcmr.evaluation.tagging import LAST_WINDOW_RULES, aggregate, evaluate_tagger, load_tag_groups, split_windows, window_starts


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# klean2050/VCMR config/mtat_tag_categories.yaml (experiments branch, 853dace), verbatim lists.
VCMR_GROUPS = {
    "genre": ["classical", "techno", "electronic", "rock", "indian", "opera", "pop", "classic", "new age", "dance",
              "country", "metal"],
    "mood": ["slow", "fast", "ambient", "loud", "quiet", "soft", "weird"],
    "instrument": ["guitar", "strings", "drums", "piano", "violin", "synth", "harpsichord", "flute", "sitar", "harp",
                   "cello"],
    "vocals": ["vocal", "female", "male", "singing", "vocals", "no vocals", "no vocal", "man", "voice", "male voice",
               "female vocal", "female voice"],
    "other": ["beat", "solo", "beats", "choir", "choral"],
}


@pytest.mark.parametrize("n, window, overlap", [(105, 10, 0.0), (107, 10, 0.5), (1000, 27, 0.3), (27, 27, 0.5), (100, 10, 0.0)])
def test_drop_rule_equals_vcmr_unfold(n, window, overlap):
    x = torch.arange(n, dtype=torch.float32)
    step = int(np.around((1 - overlap) * window))  # VCMR SongSplitter
    vcmr = x.unfold(0, window, step).numpy()
    np.testing.assert_array_equal(split_windows(x.numpy(), window, overlap, last="drop"), vcmr)
    cover = window_starts(n, window, overlap, last="cover")
    drop = window_starts(n, window, overlap, last="drop")
    assert set(drop) <= set(cover) and len(cover) - len(drop) in (0, 1)
    with pytest.raises(ValueError, match="evaluation.last_window"):
        window_starts(n, window, overlap, last="pad")


def test_majority_vote_is_vcmrs():
    p = np.array([[0.9, 0.2, 0.5], [0.6, 0.4, 0.51], [0.1, 0.8, 0.49]])
    np.testing.assert_allclose(aggregate(p, "majority_vote"), torch.round(torch.tensor(p)).mean(0).numpy())
    np.testing.assert_allclose(aggregate(p, "majority_vote"), [2 / 3, 1 / 3, 1 / 3])


def test_vcmr_tag_groups_file():
    groups = load_tag_groups("tag_groups/mtat_vcmr.yaml", list(PONS2017_TAGS))
    assert groups == VCMR_GROUPS
    grouped = [t for g in groups.values() for t in g]
    assert len(groups) == 5 and len(grouped) == len(set(grouped)) == 47
    assert set(PONS2017_TAGS) - set(grouped) == {"woman", "male vocal", "no voice"}


class ToneClassifier(torch.nn.Module):
    """Three classes from the window's mean |x| (low, middle, high level)."""

    input_length = 300

    def forward(self, x):
        a = x.abs().mean(dim=(1, 2))
        return torch.stack([-40 * (a - 0.1), -40 * (a - 0.3).abs(), 40 * (a - 0.5)], dim=1)


def test_single_label_accuracy_song_level(tmp_path):
    rng = np.random.default_rng(1)
    tracks = []
    for i in range(24):
        c = i % 3
        level = [0.08, 0.3, 0.55][c] * rng.uniform(0.6, 1.4)
        n = int(rng.integers(700, 1300))
        save_audio(tmp_path / f"{i}.wav", (level * np.sign(np.sin(np.arange(n) * 0.7))).astype(np.float32), 8000)
        tracks.append(Track(str(i), f"{i}.wav", np.eye(3, dtype=np.float32)[c]))
    index = TaggingIndex("toy", ["low", "mid", "high"], {"test": tracks}, tmp_path, task="single_label")
    cfg = {"overlaps": [0.0], "aggregations": ["mean", "majority_vote"], "batch_size": 4, "last_window": "drop"}
    out = evaluate_tagger(ToneClassifier(), tracks, AudioStore(tmp_path, 8000), index.tags, cfg, task="single_label")
    assert out["task"] == "single_label" and out["rule"] == LAST_WINDOW_RULES["drop"]
    y = out["labels"].argmax(1)
    for key, r in out["results"].items():
        pred = out["predictions"][key].argmax(1)
        assert r["overall"]["accuracy"] == pytest.approx(accuracy_score(y, pred))
        recall = recall_score(y, pred, average=None, labels=[0, 1, 2])
        assert [r["per_tag"][c]["accuracy"] for c in index.tags] == pytest.approx(list(recall))
        assert np.asarray(r["confusion"]).sum() == 24
    # Window probabilities are a softmax: each track's mean scores sum to 1.
    np.testing.assert_allclose(out["predictions"]["overlap=0/mean"].sum(1), 1.0, rtol=1e-5)
    assert "accuracy" in per_tag_table(out).splitlines()[0]
