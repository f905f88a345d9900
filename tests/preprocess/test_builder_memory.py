"""Memory bounds of the music-video builder: a decode worker streams the encoder frames
(already at the encoder's size) into a spool file; the parent encodes them one batch at
a time; nothing large crosses the process boundary and no frame file outlives the run."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from vcmr.preprocess import builder
from vcmr.preprocess.builder import build, job_settings
from vcmr.preprocess.download import VideoSource
from vcmr.preprocess.video_job import analyse, read_frame_batches
from vcmr.video.encoders import build_frame_encoder
from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.probe import MediaError

COLORS = [0, 1, 1, 2, 2, 2, 3, 3]  # 8 s; the 4 s window starts at 2 s


def _spools(root: Path) -> list:
    return sorted(p.name for p in root.glob(".tmp-frames-*"))


def test_worker_streams_encoder_sized_frames_to_a_file(make_video, video_dir, tmp_path, tiny_cfg):
    path = make_video("clip.mp4", COLORS, size=96, motion=True)  # source frames larger than the encoder's
    cfg = tiny_cfg(video_dir, tmp_path / "ds")
    spool = tmp_path / "spool"
    spool.mkdir()
    s = job_settings(cfg, 32, tmp_path / "ds", spool)
    res = analyse(VideoSource("clip", path=str(path), url=None), str(tmp_path / "ds"), s)
    assert res.record is None and (res.n_frames, res.frame_size) == (20, 32)
    # What goes back to the parent is small: a path and the rows, not a window of frames.
    assert len(pickle.dumps(res)) < 4096
    raw = Path(res.frames_path).read_bytes()
    assert Path(res.frames_path).parent == spool and len(raw) == 20 * 32 * 32 * 3
    frames = np.frombuffer(raw, np.uint8).reshape(20, 32, 32, 3)
    ref = np.stack([smp.image for smp in iter_samples(path, 2.0, 4.0, [FrameGrid(5.0, 32, True)])])
    np.testing.assert_array_equal(frames, ref)
    np.testing.assert_array_equal(res.rows, np.repeat(np.arange(4), 5))
    # Read back in batches of at most 8 frames, in order.
    batches = [b.copy() for b in read_frame_batches(res.frames_path, 20, 32, 8)]
    assert [len(b) for b in batches] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate(batches), ref)


def test_truncated_frame_file_is_an_error(tmp_path):
    path = tmp_path / "x.rgb"
    path.write_bytes(bytes(2 * 4 * 4 * 3 + 5))
    with pytest.raises(MediaError, match="x.rgb.*ends after 2 of 3 frames"):
        list(read_frame_batches(path, 3, 4, 2))


def test_rejected_or_failed_video_leaves_no_frame_file(make_video, video_dir, tmp_path, tiny_cfg):
    one_shot = make_video("still.mp4", [4] * 8)  # one 8 s scene > 3.5 s: rejected after decoding
    silent = make_video("silent.mp4", COLORS, audio=False)  # fails at the audio step
    cfg = tiny_cfg(video_dir, tmp_path / "ds")
    spool = tmp_path / "spool"
    spool.mkdir()
    s = job_settings(cfg, 32, tmp_path / "ds", spool)
    for vid, path, status in (("still", one_shot, "rejected"), ("silent", silent, "failed")):
        res = analyse(VideoSource(vid, path=str(path), url=None), str(tmp_path / "ds"), s)
        assert res.record is not None and res.record.status == status and res.frames_path is None
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_parent_encodes_one_batch_of_encoder_sized_frames_at_a_time(make_video, video_dir, tmp_path, tiny_cfg,
                                                                      workers):
    for name in ("a.mp4", "b.mp4"):
        make_video(name, COLORS, size=96, motion=True)
    make_video("still.mp4", [4] * 8)
    root = tmp_path / "ds"
    cfg = tiny_cfg(video_dir, root, f"num_workers={workers}", "frames.batch_size=8")
    enc = build_frame_encoder(cfg.frames.encoder, builder.encoder_args(cfg), device="cpu")
    seen = []
    encode = enc.encode_frames

    def spy(frames, batch_size):
        seen.append(frames.shape)
        assert _spools(root), "frames are read from the run's spool folder"
        return encode(frames, batch_size)

    enc.encode_frames = spy
    assert build(cfg, encoder=enc).counts == {"ok": 2, "rejected": 1}
    # 2 videos x 20 frames, in batches of at most 8, each frame at the encoder's 32 x 32.
    assert seen == [(8, 32, 32, 3), (8, 32, 32, 3), (4, 32, 32, 3)] * 2
    assert _spools(root) == []  # the spool folder goes with the run


def test_spool_dir_is_configurable_and_cleaned(make_video, video_dir, tmp_path, tiny_cfg):
    make_video("a.mp4", COLORS)
    spool = tmp_path / "scratch" / "node-local"
    ref = build(tiny_cfg(video_dir, tmp_path / "ref"))
    out = build(tiny_cfg(video_dir, tmp_path / "ds", f"frames.spool_dir={spool}"))
    assert out.counts == ref.counts == {"ok": 1}
    assert spool.is_dir() and list(spool.iterdir()) == [] and _spools(tmp_path / "ds") == []
    np.testing.assert_array_equal(np.load(tmp_path / "ds" / "features" / "a.npy"),
                                  np.load(tmp_path / "ref" / "features" / "a.npy"))
