"""Song-level evaluation: window rule, aggregation, metrics vs scikit-learn, reports, evaluate(cfg)."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.data.tagging import PONS2017_TAGS, AudioStore, TaggingIndex, Track
from vcmr.evaluation.report import write_report
from vcmr.evaluation.tagging import (
    EvaluationConfig,
    TrackTooShortError,
    aggregate,
    evaluate,
    evaluate_tagger,
    load_tag_groups,
    resolve_device,
    split_windows,
    window_starts,
)
from vcmr.models.heads import LinearHead
from vcmr.models.tagger import CKPT_FORMAT, CKPT_KEY, TAGGER_PREFIX, Tagger


@pytest.mark.parametrize("n, window, overlap", [(100, 10, 0.0), (105, 10, 0.0), (105, 10, 0.5), (1000, 27, 0.3), (27, 27, 0.5)])
def test_windows_cover_the_whole_track(n, window, overlap):
    starts = window_starts(n, window, overlap)
    covered = np.zeros(n, bool)
    for s in starts:
        assert 0 <= s and s + window <= n
        covered[s : s + window] = True
    assert covered.all()
    hop = max(1, round(window * (1 - overlap)))
    assert np.all(np.diff(starts)[:-1] == hop)
    assert starts[-1] == n - window  # last window ends at the last sample


def test_last_partial_window_rule():
    assert window_starts(100, 10, 0.0).tolist() == list(range(0, 100, 10))  # exact fit: no extra window
    assert window_starts(105, 10, 0.0).tolist() == list(range(0, 100, 10)) + [95]
    assert window_starts(105, 10, 0.5).tolist() == list(range(0, 96, 5))  # 95 + 10 = 105: fits
    assert window_starts(107, 10, 0.5).tolist() == list(range(0, 96, 5)) + [97]
    assert window_starts(10, 10, 0.5).tolist() == [0]
    x = np.arange(25, dtype=np.float32)
    w = split_windows(x, 10, 0.0)
    np.testing.assert_array_equal(w, np.stack([x[0:10], x[10:20], x[15:25]]))


def test_short_track_and_bad_overlap_fail_clearly():
    with pytest.raises(TrackTooShortError, match="song.mp3: 9 samples is shorter than one model window of 10"):
        window_starts(9, 10, 0.0, name="song.mp3")
    with pytest.raises(ValueError, match="overlap"):
        window_starts(100, 10, 1.0)


def test_aggregate():
    p = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4]])
    np.testing.assert_allclose(aggregate(p, "mean"), p.mean(0))
    np.testing.assert_allclose(aggregate(p, "max"), [0.5, 0.9])
    with pytest.raises(ValueError, match="median"):
        aggregate(p, "median")


def test_one_device_rule(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="evaluation.device"):
        resolve_device("gpu")


class LoudnessTagger(nn.Module):
    """Logit of tag 0 = mean |x| of the window, tag 1 = minus it (deterministic)."""

    input_length = 400

    def forward(self, x):
        a = x.abs().mean(dim=(1, 2))
        return torch.stack([50 * (a - 0.25), -50 * (a - 0.25)], dim=1)


@pytest.fixture
def loud_index(tmp_path):
    rng = np.random.default_rng(0)
    tracks = []
    for i in range(12):
        n = int(rng.integers(900, 2000))
        amp = rng.uniform(0.05, 0.5)
        x = np.full(n, amp, np.float32) * np.sign(np.sin(np.arange(n) * 0.3))
        x[: n // 3] *= rng.uniform(0.2, 1.0)  # windows differ, so mean and max differ
        save_audio(tmp_path / f"{i}.wav", x, 8000)
        loud = float(amp > 0.25) if i % 4 else float(amp <= 0.25)  # a few label flips
        tracks.append(Track(str(i), f"{i}.wav", np.array([loud, 1 - loud], np.float32)))
    return TaggingIndex("loud", ["tag---loud", "tag---quiet"], {"train": tracks, "valid": tracks, "test": tracks}, tmp_path)


def test_evaluate_tagger_equals_sklearn_on_aggregated_predictions(loud_index):
    store = AudioStore(loud_index.audio_root, 8000)
    cfg = {"overlaps": [0.0, 0.5], "aggregations": ["mean", "max"], "batch_size": 3}
    out = evaluate_tagger(LoudnessTagger(), loud_index.splits["test"], store, loud_index.tags, cfg)
    assert set(out["results"]) == {"overlap=0/mean", "overlap=0/max", "overlap=0.5/mean", "overlap=0.5/max"}
    assert out["primary"] == "overlap=0/mean"
    y = out["labels"]
    for key, r in out["results"].items():
        pred = out["predictions"][key]
        assert pred.shape == (12, 2)
        assert r["overall"]["roc_auc"] == pytest.approx(roc_auc_score(y, pred, average="macro"), abs=1e-12)
        assert r["overall"]["pr_auc"] == pytest.approx(average_precision_score(y, pred, average="macro"), abs=1e-12)
    # Check one track's aggregation by hand.
    audio = store.load(loud_index.splits["test"][0])
    wins = torch.from_numpy(split_windows(audio, 400, 0.5))[:, None]
    probs = torch.sigmoid(LoudnessTagger()(wins)).numpy()
    np.testing.assert_allclose(out["predictions"]["overlap=0.5/max"][0], probs.max(0), rtol=1e-5)
    np.testing.assert_allclose(out["predictions"]["overlap=0.5/mean"][0], probs.mean(0), rtol=1e-5)


def test_evaluate_tagger_rejects_short_tracks(loud_index, tmp_path):
    save_audio(tmp_path / "short.wav", np.zeros(300, np.float32), 8000)
    short = Track("s", "short.wav", np.array([1, 0], np.float32))
    with pytest.raises(TrackTooShortError, match="short.wav"):
        evaluate_tagger(LoudnessTagger(), [short], AudioStore(tmp_path, 8000), loud_index.tags,
                        {"overlaps": [0.0], "aggregations": ["mean"], "batch_size": 4})


def test_tag_groups():
    assert load_tag_groups(None, ["a"]) == {}
    groups = load_tag_groups("prefix", ["drums---rock", "drums---none", "tempo---fast", "plain"])
    assert groups == {"drums": ["drums---rock", "drums---none"], "tempo": ["tempo---fast"]}
    mtat = load_tag_groups("tag_groups/mtat.yaml", list(PONS2017_TAGS))
    assert set(mtat) == {"genre", "instrument", "mood", "vocals"}
    members = [t for g in mtat.values() for t in g]
    assert sorted(members) == sorted(PONS2017_TAGS)  # every tag in exactly one group
    with pytest.raises(ValueError, match="does not have"):
        load_tag_groups("tag_groups/mtat.yaml", list(PONS2017_TAGS)[:-1])
    with pytest.raises(FileNotFoundError):
        load_tag_groups("nope.yaml", ["a"])


def test_write_report(loud_index, tmp_path):
    store = AudioStore(loud_index.audio_root, 8000)
    cfg = {"overlaps": [0.0], "aggregations": ["mean"], "batch_size": 8}
    out = evaluate_tagger(LoudnessTagger(), loud_index.splits["test"], store, loud_index.tags, cfg, {"tag": loud_index.tags})
    path = write_report(out, tmp_path / "rep", {"checkpoint": {"sha256": "x"}}, chart=True)
    doc = json.loads(path.read_text())
    assert doc["checkpoint"] == {"sha256": "x"} and "predictions" not in doc
    assert doc["results"]["overlap=0/mean"]["groups"]["tag"]["n_tags"] == 2
    assert "last one ends before the track" in doc["rule"]
    tsv = (tmp_path / "rep" / "per_tag.tsv").read_text().splitlines()
    assert tsv[0] == "tag\tn_pos\troc_auc\tpr_auc" and len(tsv) == 3
    assert (tmp_path / "rep" / "per_tag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_checkpoint(path, tags, sample_rate=8000):
    """A checkpoint in the layout train() writes, for a tiny SampleCNN + linear head."""
    from vcmr.models import build_module

    args = {"input_length": 243, "first_block": {"out_channels": 4, "kernel_size": 3}, "n_blocks": 4,
            "channels": [4, 4, 8, 8], "kernel_size": 3, "pool_size": 3, "last_block": {"out_channels": 8, "kernel_size": 1}}
    tagger = Tagger(build_module("samplecnn", args), LinearHead(8, len(tags)), freeze_encoder=True)
    meta = {"format": CKPT_FORMAT, "encoder": {"name": "samplecnn", "args": args}, "head": {"name": "linear", "args": {}},
            "mode": "linear", "sample_rate": sample_rate, "n_tags": len(tags), "tags": list(tags)}
    state = {TAGGER_PREFIX + k: v for k, v in tagger.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, CKPT_KEY: meta}, path)
    return tagger.eval()


def test_evaluate_config_end_to_end(loud_index, tmp_path):
    # An MTG-style dataset on disk, and a checkpoint trained on its tags.
    root = tmp_path / "mtg"
    folder = root / "data" / "splits" / "split-0"
    folder.mkdir(parents=True)
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    rows = "".join(f"track_{i}\ta\tb\t{i}.wav\t0.2\t{'tag---loud' if t.labels[0] else 'tag---quiet'}\n"
                   for i, t in enumerate(loud_index.splits["test"]))
    for name in ("train", "validation", "test"):
        (folder / f"autotagging_top50tags-{name}.tsv").write_text(header + rows)
    tags = ["tag---loud", "tag---quiet"]
    ckpt = tmp_path / "run" / "checkpoints" / "best-epoch=000-step=1.ckpt"
    tagger = _write_checkpoint(ckpt, tags)
    (tmp_path / "run" / "config.yaml").write_text("seed: 1\n")
    overrides = [f"checkpoint={tmp_path / 'run'}", "data.name=mtg_jamendo", f"data.root={root}",
                 f"data.audio_root={loud_index.audio_root}", "data.split=split-0", "data.sample_rate=8000",
                 "data.subset=valid", "evaluation.device=cpu", "evaluation.overlaps=[0.5]", "evaluation.aggregations=[max]"]
    cfg = load_config(CONFIG_DIR / "evaluation.yaml", overrides, EvaluationConfig)
    result = evaluate(cfg)
    doc = json.loads(open(result["results_json"]).read())
    assert result["results_json"].endswith("run/evaluation/valid/results.json")
    import hashlib

    assert doc["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert doc["training_config"]["sha256"] == hashlib.sha256(b"seed: 1\n").hexdigest()
    assert len(doc["config"]["sha256"]) == 64 and doc["config"]["values"]["data"]["subset"] == "valid"
    assert doc["data"]["n_tracks"] == 12 and doc["data"]["subset"] == "valid" and len(doc["data"]["sha256"]) == 64
    assert doc["tags"] == tags and doc["primary"] == "overlap=0.5/max"
    # Same numbers as running the loaded model by hand and scoring with scikit-learn.
    store = AudioStore(loud_index.audio_root, 8000)
    pred, y = [], []
    for t in loud_index.splits["test"]:
        w = torch.from_numpy(split_windows(store.load(t), 243, 0.5))[:, None]
        with torch.no_grad():
            pred.append(torch.sigmoid(tagger(w)).numpy().max(0))
        y.append(t.labels)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(np.array(y), np.array(pred), average="macro"), abs=1e-6)
    assert (tmp_path / "run" / "evaluation" / "valid" / "per_tag.png").is_file()
    # Tags that differ from the checkpoint's are refused.
    _write_checkpoint(ckpt, ["tag---a", "tag---b"])
    with pytest.raises(ValueError, match="differ"):
        evaluate(cfg)
    _write_checkpoint(ckpt, tags, sample_rate=16000)
    with pytest.raises(ValueError, match="16000 Hz"):
        evaluate(cfg)


def test_evaluation_yaml_demo_block_matches_training_demo():
    ev = OmegaConf.load(CONFIG_DIR / "evaluation.yaml")
    sup = load_config(CONFIG_DIR / "supervised_demo.yaml")
    assert OmegaConf.to_container(ev.data.demo) == OmegaConf.to_container(sup.data.demo)
    assert ev.data.sample_rate == sup.data.sample_rate and ev.data.name == sup.data.name
