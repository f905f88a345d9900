"""With ``logger.name=csv``, resuming keeps the metrics logged before (issue 15, item 10):
Lightning's CSV writer deleted ``metrics.csv`` when it found one in the run folder."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from vcmr.audio.io import save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.demo.synth import random_spec, render
from vcmr.trainers.base import build_logger
from vcmr.trainers.music import MusicPretrainConfig, train

sys.path.insert(0, str(Path(__file__).parent.parent / "trainers"))
from tiny import stage1_overrides  # noqa: E402

SR = 16000


def _rows(run: Path) -> list:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_resumed_run_keeps_the_first_sessions_metrics(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(10):
        save_audio(tmp_path / "songs" / f"s{i}.wav", render(random_spec(rng), SR, 1.5), SR)

    def cfg(*extra):
        return load_config(CONFIG_DIR / "mus_pretrain.yaml",
                           stage1_overrides(tmp_path / "songs", tmp_path / "runs", list(extra)), MusicPretrainConfig)

    first = train(cfg("trainer.max_epochs=1"))
    before = _rows(Path(first["run_dir"]))
    assert {r["epoch"] for r in before if r.get("val/loss")} == {"0"}
    second = train(cfg("trainer.max_epochs=2", "resume=last"))
    assert second["run_dir"] == first["run_dir"]
    after = _rows(Path(second["run_dir"]))
    assert {r["epoch"] for r in after if r.get("val/loss")} == {"0", "1"}  # before: only epoch 1
    # The first session's rows are still there, value for value.
    assert [{k: r[k] for k in before[0]} for r in after[: len(before)]] == before


def test_a_new_column_widens_the_kept_file(tmp_path):
    first = build_logger({"name": "csv"}, tmp_path)
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    second = build_logger({"name": "csv"}, tmp_path)  # a resumed session, same run folder
    second.log_metrics({"a": 2.0, "b": 3.0}, step=1)
    second.save()
    rows = _rows(tmp_path)
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("0", "1.0", ""), ("1", "2.0", "3.0")]
