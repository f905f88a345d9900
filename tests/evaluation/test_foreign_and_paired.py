"""Published tagging heads (VCMR stage 3, CLMR linear evaluation) give the original model's
song-level outputs; paired evaluation scores several checkpoints on the same tracks."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.data.tagging import AudioStore
from vcmr.evaluation.tagging import EvaluationConfig, evaluate, evaluate_tagger
from vcmr.models.tagger import load_any_tagger, load_foreign_tagger


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


SR = 8000


class VcmrSampleCNN(nn.Module):
    """VCMR's layout (all_blocks; first conv 5/stride 5; 1x1 last conv), tiny."""

    def __init__(self, ch=(8, 16, 16), first=8, out=12):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv1d(1, first, 5, stride=5), nn.BatchNorm1d(first), nn.ReLU())]
        c_in = first
        for c in ch:
            blocks.append(nn.Sequential(nn.Conv1d(c_in, c, 3, padding="same"), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(3, 3)))
            c_in = c
        blocks.append(nn.Sequential(nn.Conv1d(c_in, out, 1), nn.BatchNorm1d(out), nn.ReLU()))
        self.all_blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.all_blocks(x).squeeze(-1)


class VcmrSupervised(nn.Module):
    """VCMR's SupervisedLearning: encoder, projector (Dropout 0.3, Linear, ReLU, Linear), model = both."""

    def __init__(self, n_tags=2, hidden=6):
        super().__init__()
        self.encoder = VcmrSampleCNN()
        self.projector = nn.Sequential(nn.Dropout(0.3), nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, n_tags))
        self.model = nn.Sequential(self.encoder, self.projector)


class ClmrSampleCNN(nn.Module):
    """CLMR's layout (sequential; fc replaced by Identity after SimCLR wrapping), tiny."""

    def __init__(self, ch=(8, 8, 12), first=8):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv1d(1, first, 3, stride=3), nn.BatchNorm1d(first), nn.ReLU())]
        c_in = first
        for c in ch:
            blocks.append(nn.Sequential(nn.Conv1d(c_in, c, 3, padding=1), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(3, 3)))
            c_in = c
        blocks.append(nn.Sequential(nn.Conv1d(c_in, c_in, 3, padding=1), nn.BatchNorm1d(c_in), nn.ReLU()))
        self.sequential = nn.Sequential(*blocks)

    def forward(self, x):
        out = self.sequential(x)
        return out.reshape(x.shape[0], -1)


class ClmrLinearEvaluation(nn.Module):
    """CLMR's LinearEvaluation: encoder + model = Sequential(Linear) (or the finetuner_mlp head)."""

    def __init__(self, n_tags=2, mlp=False):
        super().__init__()
        self.encoder = ClmrSampleCNN()
        d = 12
        self.model = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_tags)) if mlp else nn.Sequential(nn.Linear(d, n_tags))


def randomise(module, seed):
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        if isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 1.0)
    return module.eval()


def save_lightning(path, module, extra=None):
    torch.save({"pytorch-lightning_version": "1.8.6", "state_dict": module.state_dict(),
                "hyper_parameters": argparse.Namespace(lr=1e-3, **(extra or {}))}, path)
    return path


def original_song_outputs(forward, audio, window, overlap, drop_last_chunk_rule):
    """The originals' song-level outputs: VCMR's SongSplitter (unfold) or CLMR's concat_clip, mean of sigmoids."""
    x = torch.from_numpy(audio)
    if drop_last_chunk_rule == "vcmr":
        wins = x.unfold(0, window, int(np.around((1 - overlap) * window)))
    else:  # CLMR concat_clip: split into chunks of `window`, drop the last one
        wins = torch.stack(torch.split(x, window)[:-1])
    with torch.no_grad():
        return torch.sigmoid(forward(wins[:, None])).mean(0).numpy()


@pytest.fixture
def songs(tmp_path):
    rng = np.random.default_rng(0)
    from vcmr.data.tagging import Track

    tracks = []
    for i in range(10):
        n = int(rng.integers(1500, 2600))
        save_audio(tmp_path / f"{i}.wav", (0.5 * rng.standard_normal(n)).astype(np.float32), SR)
        y = np.array([i % 2, (i // 2) % 2], np.float32)
        tracks.append(Track(str(i), f"{i}.wav", y))
    return tmp_path, tracks


def test_vcmr_stage3_checkpoint(songs, tmp_path):
    root, tracks = songs
    orig = randomise(VcmrSupervised(), 1)
    path = save_lightning(tmp_path / "vcmr_stage3.ckpt", orig)
    tagger, meta = load_any_tagger(path)
    assert meta["layout"] == "vcmr_mlp" and meta["n_tags"] == 2 and meta["tags"] is None
    assert tagger.input_length == 135 and tagger.head.net[1].out_features == 6
    x = torch.randn(4, 1, 135)
    with torch.no_grad():
        torch.testing.assert_close(tagger(x), orig.model(x))
    store = AudioStore(root, SR)
    cfg = {"overlaps": [0.5], "aggregations": ["mean"], "batch_size": 8, "last_window": "drop"}
    out = evaluate_tagger(tagger, tracks, store, ["a", "b"], cfg)
    for i, t in enumerate(tracks):
        ref = original_song_outputs(orig.model, store.load(t), 135, 0.5, "vcmr")
        np.testing.assert_allclose(out["predictions"]["overlap=0.5/mean"][i], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mlp", [False, True])
def test_clmr_linear_evaluation_checkpoint_and_two_files(songs, tmp_path, mlp):
    root, tracks = songs
    orig = randomise(ClmrLinearEvaluation(mlp=mlp), 2)
    one = save_lightning(tmp_path / "finetuner.ckpt", orig)
    encoder_pt = tmp_path / "clmr_checkpoint.pt"
    torch.save({f"encoder.{k}": v for k, v in orig.encoder.state_dict().items()}, encoder_pt)
    head_pt = tmp_path / "finetuner_checkpoint.pt"
    torch.save(orig.model.state_dict(), head_pt)  # CLMR's bare finetuner file: 0.weight, 0.bias (, 2.*)
    store = AudioStore(root, SR)
    cfg = {"overlaps": [0.0], "aggregations": ["mean"], "batch_size": 8, "last_window": "drop"}

    def forward(x):
        return orig.model(orig.encoder(x))

    for spec in (one, f"{encoder_pt}::{head_pt}"):
        tagger, meta = load_any_tagger(spec)
        assert meta["layout"] == ("clmr_mlp" if mlp else "clmr_linear")
        out = evaluate_tagger(tagger, tracks, store, ["a", "b"], cfg)
        for i, t in enumerate(tracks):
            audio = store.load(t)
            if audio.size % 81 == 0:
                continue  # CLMR then drops a full last chunk too; not a case of these lengths
            ref = original_song_outputs(forward, audio, 81, 0.0, "clmr")
            np.testing.assert_allclose(out["predictions"]["overlap=0/mean"][i], ref, rtol=1e-5, atol=1e-6)


def test_unknown_head_layout_lists_keys(tmp_path):
    orig = randomise(VcmrSupervised(), 3)
    state = {k: v for k, v in orig.state_dict().items() if not k.startswith(("projector", "model.1"))}
    torch.save({"state_dict": state}, tmp_path / "no_head.ckpt")
    with pytest.raises(ValueError, match=r"no VCMR or CLMR tagging head found \(first keys: encoder.all_blocks"):
        load_foreign_tagger(tmp_path / "no_head.ckpt")


def write_index(root, tracks):
    """MTG-Jamendo-style split files so the evaluation command reads the songs as real data."""
    folder = root / "data" / "splits" / "split-0"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["g---a", "g---b"]
    lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for t in tracks:
        tags = [n for n, y in zip(names, t.labels) if y] or ["g---a"]
        lines.append("\t".join([t.key, "x", "y", t.path, "1.0", *tags]))
    for f in ("train", "validation", "test"):
        (folder / f"autotagging_top50tags-{f}.tsv").write_text("\n".join(lines) + "\n")
    (root / "groups.yaml").write_text("groups:\n  first: [g---a]\n  second: [g---b]\n")


def test_paired_evaluation_report(songs, tmp_path):
    root, tracks = songs
    write_index(root, tracks)
    vcmr_ckpt = save_lightning(tmp_path / "vcmr_stage3.ckpt", randomise(VcmrSupervised(), 4))
    clmr_ckpt = save_lightning(tmp_path / "clmr_linear.ckpt", randomise(ClmrLinearEvaluation(), 5))
    out = tmp_path / "cmp"
    cfg = load_config(CONFIG_DIR / "evaluation.yaml", [
        f"checkpoint={vcmr_ckpt}", f"compare=[{clmr_ckpt}]", "labels=[vcmr,clmr]", "data.name=mtg_jamendo",
        f"data.root={root}", "data.split=split-0", f"data.sample_rate={SR}", f"output_dir={out}",
        f"evaluation.tag_groups={root / 'groups.yaml'}", "evaluation.overlaps=[0.0,0.5]", "evaluation.chart=false",
        "evaluation.device=cpu", "evaluation.last_window=drop",
    ], EvaluationConfig)
    result = evaluate(cfg)
    comp = json.loads(Path(result["comparison_json"]).read_text())
    assert comp["models"] == ["vcmr", "clmr"] and comp["primary"] == "overlap=0/mean"
    rows = comp["settings"]["overlap=0/mean"]["rows"]
    assert set(rows) == {"all", "first", "second"}
    # Each column equals that model's own report, written next to it, on the same tracks.
    for label in ("vcmr", "clmr"):
        own = json.loads((out / label / "results.json").read_text())
        assert own["data"]["n_tracks"] == 10
        assert rows["all"][label]["roc_auc"] == own["results"]["overlap=0/mean"]["overall"]["roc_auc"]
        assert rows["first"][label]["pr_auc"] == own["results"]["overlap=0/mean"]["groups"]["first"]["pr_auc"]
    d = comp["settings"]["overlap=0/mean"]["delta_to_first"]["clmr"]["all"]["roc_auc"]
    assert d == pytest.approx(rows["all"]["clmr"]["roc_auc"] - rows["all"]["vcmr"]["roc_auc"])
    # Two different encoders really were used: the models disagree.
    assert rows["all"]["vcmr"]["roc_auc"] != rows["all"]["clmr"]["roc_auc"]
    tsv = (out / "comparison.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:4] == ["group", "n_tags", "vcmr:roc_auc", "vcmr:pr_auc"] and len(tsv) == 4
    assert (out / "comparison.png").stat().st_size > 5000
    single = evaluate(load_config(CONFIG_DIR / "evaluation.yaml", [
        f"checkpoint={clmr_ckpt}", "data.name=mtg_jamendo", f"data.root={root}", "data.split=split-0",
        f"data.sample_rate={SR}", f"output_dir={tmp_path / 'single'}", "evaluation.overlaps=[0.0,0.5]",
        "evaluation.chart=false", "evaluation.device=cpu", "evaluation.last_window=drop", "evaluation.tag_groups=null",
    ], EvaluationConfig))
    assert single["roc_auc"] == rows["all"]["clmr"]["roc_auc"]
    with pytest.raises(ValueError, match="labels: 1 names for 2 checkpoints"):
        evaluate(load_config(CONFIG_DIR / "evaluation.yaml", [
            f"checkpoint={vcmr_ckpt}", f"compare=[{clmr_ckpt}]", "labels=[only]", "data.name=mtg_jamendo",
            f"data.root={root}", "data.split=split-0", f"data.sample_rate={SR}", "evaluation.tag_groups=null",
        ], EvaluationConfig))
