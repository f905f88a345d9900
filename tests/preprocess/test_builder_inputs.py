"""Builder inputs: bad files recorded with a reason, video lists, downloads."""

from __future__ import annotations

import shutil
import struct
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vcmr.utils import stable_hash64

from vcmr.preprocess.builder import build
from vcmr.preprocess.download import (
    DownloadError,
    DownloaderUnavailable,
    InputError,
    read_video_list,
    scan_folder,
    youtube_id,
)
from vcmr.data.manifest import read_manifest

COLORS = [0, 1, 1, 2, 2, 2, 3, 3]
REPO = Path(__file__).resolve().parents[2]


def _by_id(root):
    return {r.video_id: r for r in read_manifest(root)}


def test_each_bad_input_is_recorded_and_the_run_goes_on(make_video, video_dir, tmp_path, tiny_cfg):
    good = make_video("good.mp4", COLORS)
    (video_dir / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    data = good.read_bytes()
    (video_dir / "truncated.mp4").write_bytes(data[: int(len(data) * 0.45)])
    make_video("noaudio.mp4", COLORS, audio=False)
    make_video("novideo.mp4", COLORS, video=False)
    mkv = make_video("ref.mkv", COLORS)
    raw = bytearray(mkv.read_bytes())
    mkv.unlink()
    (video_dir / "badcodec.mkv").write_bytes(bytes(raw).replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    at = raw.find(b"\x44\x89")  # Matroska Segment Info "Duration"
    size = raw[at + 2] & 0x7F
    raw[at + 3 : at + 3 + size] = struct.pack(">d", 0.0) if size == 8 else struct.pack(">f", 0.0)
    (video_dir / "zero.mkv").write_bytes(bytes(raw))
    (video_dir / "empty.webm").write_bytes(b"")
    make_video("short.mp4", [0, 1, 2])  # 3 s < the 4 s window
    make_video("oneshot.mp4", [4] * 8, motion=True)  # one 4 s scene > 3.5 s
    (video_dir / "notes.txt").write_text("not a video")

    summary = build(tiny_cfg(video_dir, tmp_path / "ds"))
    recs = _by_id(tmp_path / "ds")
    assert set(recs) == {"good", "corrupt", "truncated", "noaudio", "novideo", "badcodec", "zero", "empty",
                         "short", "oneshot"}
    reasons = {k: (r.status, r.reason) for k, r in recs.items()}
    assert reasons["good"] == ("ok", "")
    assert reasons["corrupt"][0] == "failed" and reasons["corrupt"][1].startswith("cannot open container")
    assert reasons["truncated"][0] == "failed" and reasons["truncated"][1].startswith("truncated: video frames end")
    assert reasons["noaudio"] == ("failed", "no audio stream")
    assert reasons["novideo"] == ("failed", "no video stream")
    assert reasons["badcodec"][0] == "failed" and reasons["badcodec"][1].startswith("unsupported video codec")
    assert reasons["zero"][0] == "failed" and reasons["zero"][1].startswith("zero or unknown duration")
    assert reasons["empty"] == ("failed", "file is empty (0 bytes)")
    assert reasons["short"][0] == "rejected" and reasons["short"][1].startswith("too short: 3.")
    assert reasons["oneshot"][0] == "rejected" and reasons["oneshot"][1].startswith("scene too long: 4.00 s > 3.5 s")
    assert recs["oneshot"].n_scenes == 1 and recs["oneshot"].longest_scene == pytest.approx(4.0)
    for r in recs.values():
        if r.status != "ok":
            assert r.audio_paths == () and r.feature_path == "" and r.feature_shape == (0, 0)
    assert summary.counts == {"ok": 1, "failed": 7, "rejected": 2}
    assert summary.reasons["rejected: scene too long"] == 1
    text = str(summary)
    assert "failed 7" in text and "no audio stream" in text and str(summary.manifest) in text
    # No audio was written for rejected/failed videos.
    assert sorted(p.name for p in (tmp_path / "ds" / "audio").iterdir()) == ["good"]


def test_truncated_faststart_file_reports_truncation(make_video, video_dir, tmp_path, tiny_cfg):
    good = make_video("full.mp4", COLORS)
    data = good.read_bytes()
    good.unlink()
    # The index is at the front (faststart): the header still announces 8 s.
    (video_dir / "cut.mp4").write_bytes(data[: int(len(data) * 0.5)])
    build(tiny_cfg(video_dir, tmp_path / "ds"))
    (rec,) = read_manifest(tmp_path / "ds")
    assert rec.status == "failed" and rec.reason.startswith("truncated: video frames end about 4.")
    assert rec.duration == pytest.approx(8.0, abs=0.1)


def test_truncated_file_without_front_index(video_dir, tmp_path, tiny_cfg):
    from vcmr.video.writer import write_video

    # The index (moov) sits at the end of plain mp4 files: cut it off and nothing opens.
    plain = write_video(tmp_path / "plain.mp4", [np.zeros((32, 32, 3), np.uint8)] * 80, 10,
                        np.zeros(128000, np.float32), 16000, faststart=False)
    (video_dir / "cut.mp4").write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    build(tiny_cfg(video_dir, tmp_path / "ds"))
    (rec,) = read_manifest(tmp_path / "ds")
    assert rec.status == "failed" and rec.reason.startswith("cannot open container (corrupt or truncated)")


def test_short_video_rules(make_video, video_dir, tmp_path, tiny_cfg):
    make_video("five.mp4", [0, 1, 2, 3, 4], freqs=[300, 400, 500, 600, 700])  # 5 s
    build(tiny_cfg(video_dir, tmp_path / "rej", "window.seconds=8"))
    (rec,) = read_manifest(tmp_path / "rej")
    assert rec.status == "rejected" and rec.reason == "too short: 5.00 s < 8 s window"
    build(tiny_cfg(video_dir, tmp_path / "keep", "window.seconds=8", "window.short_rule=keep_whole"))
    (rec,) = read_manifest(tmp_path / "keep")
    assert rec.status == "ok"
    assert (rec.window_start, rec.window_duration, rec.n_segments, rec.feature_shape) == (0.0, 5.0, 2, (5, 16))


def test_bad_short_rule_and_segments_that_do_not_fit(make_video, video_dir, tmp_path, tiny_cfg):
    from vcmr.config import ConfigError

    make_video("a.mp4", COLORS)
    with pytest.raises(ConfigError, match="short_rule"):
        build(tiny_cfg(video_dir, tmp_path / "x", "window.short_rule=pad"))
    with pytest.raises(ConfigError, match="do not fit"):
        build(tiny_cfg(video_dir, tmp_path / "y", "audio.n_segments=3"))


# ------------------------------------------------------------------ lists and downloads


def test_youtube_ids_and_urls():
    vid = "dQw4w9WgXcQ"
    for entry in (vid, f"https://www.youtube.com/watch?v={vid}&t=42", f"https://youtu.be/{vid}?si=x",
                  f"youtube.com/shorts/{vid}", f"https://www.youtube.com/embed/{vid}", f"https://m.youtube.com/watch?v={vid}"):
        assert youtube_id(entry) == vid, entry
    for bad in ("https://vimeo.com/123", "abc", "https://www.youtube.com/watch?v=short", ""):
        assert youtube_id(bad) is None


def test_read_video_list(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# music videos\nabcdefghijk  # first\n\nhttps://youtu.be/abcdefghijk\nhttps://youtu.be/ABCDEFGHIJK\n")
    srcs = read_video_list(lst)
    assert [s.video_id for s in srcs] == ["abcdefghijk", "ABCDEFGHIJK"]
    assert srcs[0].url == "https://www.youtube.com/watch?v=abcdefghijk" and srcs[0].path is None
    lst.write_text("abcdefghijk\nnot a video\n")
    with pytest.raises(InputError, match=r"list.txt:2: 'not a video'"):
        read_video_list(lst)


def test_repository_video_list_parses():
    srcs = read_video_list(REPO / "video_list.txt")
    assert len(srcs) >= 3 and all(len(s.video_id) == 11 for s in srcs)


def test_scan_folder_ids(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("x.mp4", "a/y.MKV", "a/b/z w.webm", "a/skip.txt", "a/.hidden.mp4"):
        (tmp_path / rel).write_bytes(b"0")
    digest = f"{stable_hash64('a/b/z w.webm'):016x}"  # a name changed by sanitising gets a hash
    assert [s.video_id for s in scan_folder(tmp_path)] == [f"a__b__z_w-{digest}", "a__y", "x"]
    (tmp_path / "x.mov").write_bytes(b"0")
    with pytest.raises(InputError, match="same video id 'x'"):
        scan_folder(tmp_path)


def _local_downloader(source, settings):
    """Serves ids from a folder of local files; ids starting with 'gone' are unreachable."""
    if source.video_id.startswith("gone"):
        raise DownloadError(source.video_id, "download failed: HTTP Error 404: video unavailable")
    src = Path(settings.dir).parent / "library" / "clip.mp4"
    dst = Path(settings.dir) / f"{source.video_id}.mp4"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def test_list_input_with_downloads_and_failures(make_video, video_dir, tmp_path, tiny_cfg):
    root = tmp_path / "ds"
    (root / "library").mkdir(parents=True)
    shutil.move(make_video("clip.mp4", COLORS), root / "library" / "clip.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("okvideo0001\ngonevideo01\n")
    summary = build(tiny_cfg(lst, root), downloader=_local_downloader)
    recs = _by_id(root)
    assert recs["okvideo0001"].status == "ok"
    assert (root / "downloads" / "okvideo0001.mp4").is_file()
    assert recs["gonevideo01"].status == "failed"
    assert recs["gonevideo01"].reason == "download failed: HTTP Error 404: video unavailable"
    assert summary.reasons == {"failed: download failed": 1}
    # Failed downloads stay failed on a re-run unless retry_failed=true.
    assert build(tiny_cfg(lst, root), downloader=_local_downloader).processed == 0
    assert build(tiny_cfg(lst, root, "retry_failed=true"), downloader=_local_downloader).processed == 1


def test_missing_yt_dlp_says_what_to_install(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # import yt_dlp -> ImportError
    lst = tmp_path / "list.txt"
    lst.write_text("abcdefghijk\n")
    with pytest.raises(DownloaderUnavailable, match=r"pip install 'vcmr\[youtube\]'.*folder"):
        build(tiny_cfg(lst, tmp_path / "ds"))


def _crashing_downloader(source, settings):
    """Kills its worker process for ids starting with 'crash' (a decoder segfault, say)."""
    import os

    if source.video_id.startswith("crash"):
        os._exit(3)
    return _local_downloader(source, settings)


def test_a_crashing_worker_fails_only_its_video(make_video, tmp_path, tiny_cfg, warm_start_method):
    root = tmp_path / "ds"
    (root / "library").mkdir(parents=True)
    shutil.move(make_video("clip.mp4", COLORS), root / "library" / "clip.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("okvideo0001\ncrashvideo1\nokvideo0002\nokvideo0003\n")
    cfg = tiny_cfg(lst, root, "num_workers=1", "max_pending=2", f"start_method={warm_start_method}")
    summary = build(cfg, downloader=_crashing_downloader)
    recs = _by_id(root)
    assert summary.counts == {"ok": 3, "failed": 1}
    assert recs["crashvideo1"].reason.startswith("worker process crashed")


def test_two_unicode_files_build_with_their_sources_in_the_manifest(make_video, video_dir, tmp_path, tiny_cfg):
    colors = [0, 1, 2, 3, 4, 5]
    make_video("東京.mp4", colors)
    make_video("大阪.mp4", colors[::-1])
    assert sorted(s.video_id for s in scan_folder(video_dir)) == ["大阪", "東京"]
    build(tiny_cfg(video_dir, tmp_path / "out", "scenes.max_scene_seconds=10"))
    recs = {r.video_id: r for r in read_manifest(tmp_path / "out")}
    assert set(recs) == {"東京", "大阪"}
    assert recs["東京"].source == str(video_dir / "東京.mp4")


def _write_with_late_audio(path, colors, freqs, palette, audio_start, fps=10, size=32, sr=16000):
    """An mp4 whose audio stream starts ``audio_start`` s after the picture; tone ``freqs[k]``
    plays during presentation second ``k`` (as a player shows it)."""
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=sr)
        aus.layout = "mono"
        for i in range(len(colors) * fps):
            img = np.broadcast_to(palette[colors[i // fps]], (size, size, 3)).copy()
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        t = np.arange(int((len(colors) - audio_start) * sr)) / sr + audio_start
        f = np.asarray(freqs, float)[np.minimum(t.astype(int), len(freqs) - 1)]
        x = (0.5 * np.sin(2 * np.pi * np.cumsum(f) / sr)).astype(np.float32)
        first = int(audio_start * sr)
        for j in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(x[None, j : j + 1024], format="flt", layout="mono")
            frame.sample_rate = sr
            frame.pts = first + j
            frame.time_base = Fraction(1, sr)
            for pkt in aus.encode(frame):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)
    return path


def test_audio_starting_after_the_picture_is_aligned_by_stream_start(video_dir, tmp_path, tiny_cfg, palette):
    import json

    from vcmr.audio.io import load_audio
    from vcmr.video.probe import probe

    colors = [0, 1, 2, 3, 4, 5, 6, 7]
    freqs = [300, 400, 500, 600, 700, 800, 900, 1000]
    path = _write_with_late_audio(video_dir / "late.mp4", colors, freqs, palette, audio_start=2.0)
    info = probe(path)
    # within one AAC frame (1,024 samples of encoder priming at 16 kHz: 64 ms)
    assert abs(info.audio_offset - 2.0) < 0.08 and abs(info.usable_start - 2.0) < 0.08
    assert abs(info.duration - 6.0) < 0.1  # picture and sound overlap in [2, 8)
    build(tiny_cfg(video_dir, tmp_path / "out", "scenes.max_scene_seconds=10"))
    (rec,) = read_manifest(tmp_path / "out")
    assert rec.status == "ok", rec.reason
    assert abs(rec.window_start - 3.0) < 0.08  # the middle 4 s of the 6 s with sound
    extra = json.loads((tmp_path / "out" / "records" / "late.json").read_text())["extra"]
    assert abs(extra["audio_offset"] - 2.0) < 0.08
    seg = load_audio(tmp_path / "out" / rec.audio_paths[0], 16000)
    for k in range(2):  # presentation seconds 3 and 4 sound at 600 and 700 Hz
        spec = np.abs(np.fft.rfft(seg[k * 16000 + 2000 : (k + 1) * 16000 - 2000]))
        peak = np.argmax(spec) * 16000 / (16000 - 4000)
        assert abs(peak - freqs[3 + k]) < 15, (k, peak)
