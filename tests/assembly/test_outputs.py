"""Timeline JSON, the HTML page, library rows -> clips, and the demo song."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vcmr.assembly.page import PageSettings, waveform_peaks, write_page
from vcmr.assembly.pipeline import clips_from_rows, output_paths
from vcmr.assembly.timeline import Timeline, TimelineShot, read_timeline, write_timeline


def timeline():
    shots = [TimelineShot(0, 0.0, 2.0, [0, 1, 2, 3], [0, 50], 7, "vidA_c0001", "vidA", "/lib/a.mp4", 3.0, 5.0, 0.41, "t/0.jpg"),
             TimelineShot(1, 2.0, 3.5, [4, 5, 6], [50, 88], 2, "vidB_c0000", "vidB", "/lib/b&c.mp4", 0.0, 1.5, 0.38, None)]
    return Timeline(song="/songs/s.wav", duration=3.5, tempo=120.0, beats=[0.0, .5, 1, 1.5, 2, 2.5, 3],
                    downbeats=[0, 4], beat_strength=[2.0, 1, 1, 1, 2, 1, 1], shots=shots, video="s.mp4", fps=25,
                    library="/libs/l", model={"sha256": "ab"}, settings={"seed": 0})


def test_timeline_round_trip(tmp_path):
    tl = timeline()
    p = write_timeline(tmp_path / "x" / "timeline.json", tl)
    d = json.loads(p.read_text())
    assert d["format"] == "vcmr_timeline/1" and d["n_shots"] == 2 and d["tempo"] == 120.0
    assert d["shots"][1]["source"] == "/lib/b&c.mp4" and d["shots"][0]["beats"] == [0, 1, 2, 3]
    assert read_timeline(p) == tl
    assert not list(p.parent.glob(".*"))
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="bad.json"):
        read_timeline(tmp_path / "bad.json")


def test_waveform_peaks_match_naive():
    y = np.random.default_rng(0).standard_normal(1003).astype(np.float32)
    p = waveform_peaks(y, 10)
    edges = np.linspace(0, 1003, 11).astype(int)
    for i in range(10):
        assert p[i, 0] == y[edges[i]:edges[i + 1]].min() and p[i, 1] == y[edges[i]:edges[i + 1]].max()


def test_page_has_marks_tiles_and_relative_paths(tmp_path):
    tl = timeline()
    (tmp_path / "t").mkdir()
    thumb = tmp_path / "t" / "0.jpg"
    thumb.write_bytes(b"jpg")
    page = write_page(tmp_path / "s.html", tl, np.sin(np.arange(8000) / 9.0), tmp_path / "s.mp4", [thumb, None],
                      PageSettings(px_per_second=100.0, waveform_height=80, strip_height=40, min_width=200), "S")
    html = page.read_text()
    assert 'src="s.mp4"' in html and 'src="t/0.jpg"' in html and str(tmp_path) not in html
    assert html.count('class="down"') == 2 and html.count('class="beat"') == 5 and html.count('class="cut"') == 1
    assert html.count('class="tile"') == 2 and "b&amp;c.mp4" in html
    assert 'width="350"' in html  # 3.5 s at 100 px/s


def test_clips_from_rows_derives_scene_spans():
    rows = [
        {"row": 0, "clip_id": "a_c0000", "video_id": "a", "source": "a.mp4", "start": 0.0, "end": 3.0, "scene": 0},
        {"row": 1, "video_id": "a", "source": "a.mp4", "start": 3.0, "end": 6.0, "scene": 0},
        {"row": 2, "video_id": "a", "source": "a.mp4", "start": 7.5, "end": 10.5, "scene": 2},
        {"row": 3, "video_id": "b", "source": "b.mp4", "start": 1.0, "end": 4.0, "scene": 1},
        # straddles the cut at 10.0 where scene 3 of b starts
        {"row": 4, "video_id": "b", "source": "b.mp4", "start": 8.0, "end": 11.0, "scene": 2},
        {"row": 5, "video_id": "b", "source": "b.mp4", "start": 10.0, "end": 12.0, "scene": 3},
    ]
    clips = clips_from_rows(list(reversed(rows)))
    assert [c.clip_id for c in clips] == list(range(6)) and clips[0].name == "a_c0000" and clips[1].name == ""
    assert (clips[1].scene_start, clips[1].scene_end) == (0.0, 7.5)
    assert [c.within_scene for c in clips] == [True, True, True, True, False, True]
    with pytest.raises(ValueError, match="0..N-1"):
        clips_from_rows(rows[1:])


def test_output_paths(tmp_path):
    p = output_paths(tmp_path / "v.mp4")
    assert p["page"] == tmp_path / "v.html" and p["timeline"] == tmp_path / "v_files" / "timeline.json"
    with pytest.raises(ValueError, match="must end in .mp4"):
        output_paths(tmp_path / "v.mov")


def test_demo_song_is_generated_once(tmp_path):
    from vcmr.audio.io import load_audio
    from vcmr.demo.assembly import ensure_demo_song

    s = {"seconds": 3.0, "tempo": 120.0, "timbre": "pluck", "drums": "rock", "key": 2, "mode": "minor", "seed": 1,
         "sample_rate": 8000}
    p = ensure_demo_song(s, tmp_path)
    assert p.is_file() and load_audio(p, 8000).size == 24000
    mtime = p.stat().st_mtime_ns
    assert ensure_demo_song(s, tmp_path) == p and p.stat().st_mtime_ns == mtime
    assert ensure_demo_song({**s, "tempo": 100.0}, tmp_path) != p
    with pytest.raises(KeyError, match="tempo"):
        ensure_demo_song({k: v for k, v in s.items() if k != "tempo"}, tmp_path)
