"""Music-video builder end to end: outputs, alignment, resumability, sharding, workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vcmr.audio.io import load_audio
from vcmr.config import ConfigError
from vcmr.preprocess import builder
from vcmr.preprocess.builder import average_per_second, build, parse_shard, shard_of
from vcmr.data.manifest import COLUMNS, ManifestError, read_manifest
from vcmr.utils import atomic_path
from vcmr.video.encoders import build_frame_encoder
from vcmr.video.frames import FrameGrid, iter_samples

# Solid colours per second; the 4 s window of an 8 s video starts at 2 s.
COLORS = [0, 1, 1, 2, 2, 2, 3, 3]


def _encoder(cfg):
    return build_frame_encoder(cfg.frames.encoder, builder.encoder_args(cfg), device="cpu")


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[spec.argmax()])


def test_outputs_and_alignment(make_video, video_dir, tmp_path, tiny_cfg, palette):
    freqs = [300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0]
    path = make_video("clip.mp4", COLORS, freqs=freqs)
    cfg = tiny_cfg(video_dir, tmp_path / "ds")
    summary = build(cfg)
    assert summary.counts == {"ok": 1} and summary.processed == 1

    (rec,) = read_manifest(tmp_path / "ds")
    assert rec.video_id == "clip" and rec.status == "ok" and rec.reason == ""
    assert rec.duration == pytest.approx(8.0, abs=0.1)
    assert (rec.window_start, rec.window_duration, rec.n_segments) == (2.0, 4.0, 2)
    assert rec.feature_shape == (4, 16) and rec.feature_path == "features/clip.npy"
    assert rec.audio_paths == ("audio/clip/clip_00.wav", "audio/clip/clip_01.wav")
    # The window shows seconds 2..5 (colours 1, 2, 2, 2): one cut, at 1 s of the window.
    assert rec.n_scenes == 2 and rec.longest_scene == pytest.approx(3.0)

    root = tmp_path / "ds"
    # Audio: 16-bit wav, segment j = seconds [2 + 2j, 4 + 2j) of the file.
    window = load_audio(path, 16000, offset=2.0, duration=4.0)
    for j, rel in enumerate(rec.audio_paths):
        x, sr = sf.read(root / rel, dtype="float32")
        assert sr == 16000 and x.shape == (32000,) and sf.info(root / rel).subtype == "PCM_16"
        np.testing.assert_allclose(x, window[j * 32000 : (j + 1) * 32000], atol=2 / 32768)
        for half in range(2):  # each second carries the tone of its source second
            sec = x[half * 16000 + 2000 : (half + 1) * 16000 - 2000]
            assert _peak_hz(sec, 16000) == pytest.approx(freqs[2 + 2 * j + half], abs=8)

    # Features: row k <-> second 2 + k of the file, i.e. colours 1, 2, 2, 2.
    feats = np.load(root / rec.feature_path)
    assert feats.dtype == np.float32 and feats.shape == (4, 16)
    enc = _encoder(cfg)
    pure = enc.encode_frames(np.stack([np.broadcast_to(c, (32, 32, 3)) for c in palette[:4]]).astype(np.uint8), 4)
    nearest = [int(np.argmin(np.linalg.norm(pure - row, axis=1))) for row in feats]
    assert nearest == [1, 2, 2, 2]
    np.testing.assert_allclose(feats[1], feats[2], atol=1e-4)
    np.testing.assert_allclose(feats[2], feats[3], atol=1e-4)
    assert np.linalg.norm(feats[0] - feats[1]) > 50 * np.linalg.norm(feats[1] - feats[2]) + 1e-3

    # Naive reference: decode the window, encode frame by frame, mean per second.
    grid = FrameGrid(5.0, enc.image_size, True)
    per_sec = {k: [] for k in range(4)}
    for s in iter_samples(path, 2.0, 4.0, [grid]):
        assert 0.0 <= s.time < 4.0
        per_sec[int(np.floor(s.time))].append(enc.encode_frames(s.image[None], 1)[0])
    ref = np.stack([np.mean(per_sec[k], axis=0) for k in range(4)])
    assert all(len(v) == 5 for v in per_sec.values())
    np.testing.assert_allclose(feats, ref, atol=1e-4)

    # The resolved config is saved beside the data with the keys stage 2 reads.
    from omegaconf import OmegaConf

    saved = OmegaConf.load(root / "preprocess_config.yaml")
    assert saved.audio.sample_rate == 16000 and saved.audio.segment_seconds == 2.0
    assert list(Path(root / "manifest.csv").read_text().splitlines()[0].split(",")) == list(COLUMNS)


def test_average_per_second_reference():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10, 3)).astype(np.float32)
    rows = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    got = average_per_second(emb, rows, 3, normalize=False)
    for k in range(3):
        np.testing.assert_allclose(got[k], emb[rows == k].mean(0), rtol=1e-6)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(average_per_second(emb, rows, 3, normalize=True)[2], unit[5:].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"rows without frames: \[3\]"):
        average_per_second(emb, rows, 4, normalize=False)


def test_rerun_skips_done_and_redoes_missing(make_video, video_dir, tmp_path, tiny_cfg):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(name, COLORS)
    cfg = tiny_cfg(video_dir, tmp_path / "ds")
    assert build(cfg).processed == 3
    again = build(cfg)
    assert (again.processed, again.skipped, again.counts) == (0, 3, {"ok": 3})
    (tmp_path / "ds" / "records" / "b.json").unlink()
    (tmp_path / "ds" / "features" / "c.npy").unlink()  # a listed output vanished: redo it
    third = build(cfg)
    assert third.processed == 2 and third.counts == {"ok": 3}
    assert len(read_manifest(tmp_path / "ds")) == 3


def test_killed_run_leaves_nothing_counted_as_done(make_video, video_dir, tmp_path, tiny_cfg, monkeypatch):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(name, COLORS)
    cfg = tiny_cfg(video_dir, tmp_path / "ds")
    real = builder.atomic_save_npy

    def dies_while_writing_b(path, array):
        if Path(path).stem == "b":
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half an array")
                raise KeyboardInterrupt  # the process is killed mid-write
        real(path, array)

    monkeypatch.setattr(builder, "atomic_save_npy", dies_while_writing_b)
    with pytest.raises(KeyboardInterrupt):
        build(cfg)
    root = tmp_path / "ds"
    assert (root / "records" / "a.json").is_file()
    assert not (root / "records" / "b.json").exists() and not (root / "features" / "b.npy").exists()
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]

    monkeypatch.setattr(builder, "atomic_save_npy", real)
    summary = build(cfg)
    assert summary.processed == 2 and summary.counts == {"ok": 3}
    assert np.load(root / "features" / "b.npy").shape == (4, 16)


def test_config_change_in_same_dataset_is_refused(make_video, video_dir, tmp_path, tiny_cfg):
    make_video("a.mp4", COLORS)
    build(tiny_cfg(video_dir, tmp_path / "ds"))
    with pytest.raises(ConfigError, match="different audio"):
        build(tiny_cfg(video_dir, tmp_path / "ds", "audio.segment_seconds=1", "audio.n_segments=4"))


def test_shards_partition_and_merge(make_video, video_dir, tmp_path, tiny_cfg):
    names = [f"v{i}" for i in range(6)]
    for n in names:
        make_video(f"{n}.mp4", COLORS)
    assert parse_shard("3/16") == (3, 16)
    for bad in ("3", "2/2", "a/b", "-1/3"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    want = {n: int(hashlib.sha1(n.encode()).hexdigest()[:16], 16) % 2 for n in names}
    assert {n: shard_of(n, 2) for n in names} == want
    assert len(set(want.values())) == 2  # both shards get work with these ids

    root = tmp_path / "ds"
    for i in range(2):
        s = build(tiny_cfg(video_dir, root, f"shard={i}/2"))
        part = read_manifest(root / f"manifest.shard-{i}-of-2.csv")
        assert sorted(r.video_id for r in part) == sorted(n for n in names if want[n] == i)
        assert s.processed == len(part)
    assert not (root / "manifest.csv").exists()
    merged = build(tiny_cfg(video_dir, root, "merge=true"))
    assert merged.total == 6 and merged.counts == {"ok": 6}
    recs = read_manifest(root)
    assert [r.video_id for r in recs] == sorted(names)

    single = tmp_path / "single"
    build(tiny_cfg(video_dir, single))
    for r, s in zip(recs, read_manifest(single)):
        assert r == s
        np.testing.assert_array_equal(np.load(root / r.feature_path), np.load(single / s.feature_path))


def test_worker_processes_give_the_same_outputs(make_video, video_dir, tmp_path, tiny_cfg, warm_start_method):
    for name in ("a.mp4", "b.mp4"):
        make_video(name, COLORS, motion=True)
    make_video("bad.mp4", COLORS, audio=False)
    build(tiny_cfg(video_dir, tmp_path / "serial"))
    par = build(tiny_cfg(video_dir, tmp_path / "par", "num_workers=2", "max_pending=2",
                         f"start_method={warm_start_method}"))
    assert par.counts == {"ok": 2, "failed": 1}
    for a, b in zip(read_manifest(tmp_path / "serial"), read_manifest(tmp_path / "par")):
        assert a == b
        if a.status == "ok":
            np.testing.assert_array_equal(np.load(tmp_path / "serial" / a.feature_path),
                                          np.load(tmp_path / "par" / b.feature_path))


def test_real_clip_through_the_builder(tmp_path, tiny_cfg, real_clip):
    folder = tmp_path / "real"
    folder.mkdir()
    clip = real_clip("bigbuckbunny.mp4")  # 1280x720 h264 + AAC 48 kHz, 5.3 s
    (folder / "bbb.mp4").symlink_to(clip)
    (folder / "bikes.mp4").symlink_to(real_clip("bikes.mp4"))  # h264 without sound
    summary = build(tiny_cfg(folder, tmp_path / "ds", "scenes.max_scene_seconds=30"))
    recs = {r.video_id: r for r in read_manifest(tmp_path / "ds")}
    assert summary.counts == {"ok": 1, "failed": 1}
    assert recs["bikes"].status == "failed" and recs["bikes"].reason == "no audio stream"
    bbb = recs["bbb"]
    assert bbb.status == "ok" and bbb.feature_shape == (4, 16)
    assert bbb.window_start == pytest.approx((bbb.duration - 4.0) / 2, abs=1e-3)
    feats = np.load(tmp_path / "ds" / bbb.feature_path)
    assert np.isfinite(feats).all() and np.abs(np.diff(feats, axis=0)).max() > 0
    window = load_audio(clip, 16000, offset=bbb.window_start, duration=4.0)
    seg1, _ = sf.read(tmp_path / "ds" / bbb.audio_paths[1], dtype="float32")
    np.testing.assert_allclose(seg1, window[32000:], atol=2 / 32768)
    assert np.abs(seg1).max() > 0.01


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path)
    bad = tmp_path / "manifest.csv"
    bad.write_text("video_id,status\nx,ok\n")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(tmp_path)
    bad.write_text(",".join(COLUMNS) + "\nx,ok,,abc,1,1,0,4,2,4x16,a.wav;b.wav,f.npy\n")
    with pytest.raises(ManifestError, match=r"manifest.csv:2: malformed row"):
        read_manifest(bad)


def test_input_and_output_are_required(tmp_path, tiny_cfg):
    with pytest.raises(ConfigError, match="input: required"):
        build(tiny_cfg("null", tmp_path / "ds"))
    with pytest.raises(ConfigError, match="output: required"):
        build(tiny_cfg(tmp_path, "null"))
