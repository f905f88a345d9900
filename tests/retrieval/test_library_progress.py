"""A library build in a log (stderr not a terminal) prints plain progress lines, no bar redraws."""

from __future__ import annotations

import sys
from pathlib import Path

from vcmr.config import CONFIG_DIR, load_config
from vcmr.retrieval.library import LibraryConfig, build

sys.path.insert(0, str(Path(__file__).parent))
from retrieval_media import colour_video, tiny_model  # noqa: E402


def test_library_build_prints_lines_not_bar_frames(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0")
    monkeypatch.delenv("VCMR_PROGRESS", raising=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    colour_video(videos / "a.mp4", [0, 0, 1, 1])
    colour_video(videos / "b.mp4", [2, 2, 3, 3, 3])
    cfg = load_config(CONFIG_DIR / "library.yaml", [
        "progress=true", "clip_seconds=2", "min_clip_seconds=1", "scenes.short_side=32", "thumbs.short_side=32",
        "embedder.batch_size=4", "embedder.frame_batch_size=8", "check.self_retrieval=true", "check.ks=[1]",
        f"input={videos}", f"output={tmp_path / 'library'}", f"model={tiny_model(tmp_path / 'model')}",
    ], LibraryConfig)
    summary = build(cfg)
    assert summary.counts == {"ok": 2}
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert "\r" not in text
    lines = text.splitlines()
    # The outer bar: a first line, then one per file, with rate and ETA fields.
    outer = [ln for ln in lines if ln.startswith("clips -> library: ")]
    assert outer[0].startswith("clips -> library: 0/2 (0%)") and outer[-1].startswith("clips -> library: 2/2 (100%)")
    assert "file/s" in outer[-1] or "s/file" in outer[-1]
    assert sum(ln.startswith("clips -> library: 2/2") for ln in outer) == 1
    # The check after assembly prints its own lines.
    assert any(ln.startswith("self-retrieval queries: 2/2") for ln in lines)
