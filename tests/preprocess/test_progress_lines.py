"""Long preprocessing steps in a log (stderr not a terminal): plain progress lines with rate
and ETA, no carriage-return redraws."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vcmr.audio.io import save_audio
from vcmr.data.tagging import parse_mtat_pons2017
from vcmr.preprocess import builder
from vcmr.preprocess.features import extract_features
from vcmr.preprocess.tagging_cache import build_cache
from vcmr.video.encoders import build_frame_encoder
from vcmr.video.features import encode_video_frames

from .conftest import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "trainers"))
from tiny import make_builder_output  # noqa: E402


def _builder(tmp_path: Path, make_video) -> str:
    make_video("v0.mp4", [0, 0, 1, 1, 2, 2])
    make_video("v1.mp4", [3, 3, 4, 4, 5])
    cfg = tiny_config(make_video("v2.mp4", [6, 6, 7, 7, 8]).parent, tmp_path / "mv", "progress=true")
    assert builder.build(cfg).counts == {"ok": 3}
    return "videos -> mv: 3/3"


def _tagging_cache(tmp_path: Path, make_video) -> str:
    root = tmp_path / "mtat"
    t = np.arange(8000) / 8000
    for i in range(3):
        save_audio(root / f"f/clip{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), 8000)
    (root / "index_mtt.tsv").write_text("".join(f"{i}\tf/clip{i}.wav\n" for i in range(3)))
    gt = "".join(f"{i}\t[{', '.join('1.0' if k == i else '0.0' for k in range(50))}]\n" for i in range(3))
    for split in ("train", "val", "test"):
        (root / f"{split}_gt_mtt.tsv").write_text(gt)
    report = build_cache(parse_mtat_pons2017(root), tmp_path / "cache", 8000, "int16", num_workers=0, progress=True)
    assert report.converted == 3
    return "audio cache: 3/3"


def _features(tmp_path: Path, make_video) -> str:
    root = make_builder_output(tmp_path / "ds", n_videos=3)
    assert extract_features(root, "vmnet_video", {"top_k": 5}, progress=True).done == 3
    return "features vmnet_video: 3/3"


def _frames(tmp_path: Path, make_video) -> str:
    path = make_video("long.mp4", [0, 1, 2, 3])
    enc = build_frame_encoder("tiny_clip", {"embed_dim": 8, "image_size": 32, "patch_size": 8, "width": 16,
                                            "layers": 1, "head_width": 8, "seed": 0}, device="cpu")
    emb = encode_video_frames(path, enc, 5.0, 0.0, 4.0, batch_size=4, progress=True)
    assert emb.emb.shape == (20, 8)
    return "long.mp4: 20/20"


@pytest.mark.parametrize("step", [_builder, _tagging_cache, _features, _frames], ids=lambda f: f.__name__[1:])
def test_long_step_prints_lines_not_bar_frames(step, tmp_path, make_video, monkeypatch, capsys):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0")
    monkeypatch.delenv("VCMR_PROGRESS", raising=False)
    last = step(tmp_path, make_video)
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert "\r" not in text
    desc = last.split(": ")[0]
    lines = [ln for ln in text.splitlines() if ln.startswith(desc + ": ")]
    assert len(lines) >= 2, text
    assert lines[0].startswith(f"{desc}: 0/") and "(0%)" in lines[0]
    assert lines[-1].startswith(last + " (100%)")
    assert sum(ln.startswith(last) for ln in lines) == 1  # the final count, once
    assert "<" in lines[-1] and ("/s" in lines[-1] or "s/" in lines[-1])  # elapsed<remaining, rate
