"""Embedder: windows and pooling against direct model calls, the builder's feature path, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vcmr
from vcmr.audio.io import AudioDecodeError, save_audio
from vcmr.retrieval.embedder import Embedder, EmbedderError, centroid, window_starts
from vcmr.video.encoders import build_frame_encoder
from vcmr.video.features import per_second_features
from vcmr.video.probe import MediaError

sys.path.insert(0, str(Path(__file__).parent))
from retrieval_media import SAMPLE_RATE, TINY_CLIP, colour_video, tiny_model, tone  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def embedder(model_path) -> Embedder:
    return Embedder(model_path, progress=False, batch_size=4)


def test_window_rule():
    assert window_starts(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert window_starts(11, 4, 2).tolist() == [0, 2, 4, 6, 7]  # last window aligned to the end
    assert window_starts(11, 4, 4).tolist() == [0, 4, 7]
    assert window_starts(4, 4, 2).tolist() == [0] and window_starts(3, 4, 2).tolist() == [0]
    with pytest.raises(ValueError):
        window_starts(10, 4, 0)


def test_lazy_export_and_no_lightning_import(model_path, tmp_path):
    song = tmp_path / "song.wav"
    save_audio(song, tone(1.0, SAMPLE_RATE, [300.0]), SAMPLE_RATE)
    code = (
        "import sys, vcmr\n"
        f"e = vcmr.Embedder({str(model_path)!r}, progress=False)\n"
        f"a = e.embed_audio({str(song)!r})\n"
        "assert a.windows.shape[1] == 8\n"
        "print(sorted(m for m in sys.modules if 'lightning' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert vcmr.Embedder is Embedder


def test_audio_windows_equal_direct_model_calls(embedder, tmp_path):
    sr, L = SAMPLE_RATE, embedder.input_length
    x = tone(2.0, sr, [300.0, 500.0])  # 4000 samples
    got = embedder.embed_audio(x, sample_rate=sr)
    starts = window_starts(x.size, L, L // 2)
    assert starts[-1] == x.size - L and len(got.windows) == len(starts) == 10
    with torch.no_grad():
        ref = embedder.model.encode_audio(torch.from_numpy(np.stack([x[s : s + L] for s in starts]))[:, None]).numpy()
    np.testing.assert_allclose(got.windows, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.windows, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got.starts, starts / sr)
    np.testing.assert_allclose(got.ends, (starts + L) / sr)
    mean = ref.mean(0)
    np.testing.assert_allclose(got.song, mean / np.linalg.norm(mean), atol=1e-5)
    assert got.duration == pytest.approx(2.0) and got.sample_rate == sr

    hop = embedder.embed_audio(x, sample_rate=sr, hop_seconds=0.5)
    np.testing.assert_allclose(hop.starts, [0.0, 0.5, 1.0, 1.5, (x.size - L) / sr])

    path = tmp_path / "song.wav"  # a file at the model's rate decodes to (nearly) the same array
    save_audio(path, x, sr)
    from_file = embedder.embed_audio(path)
    np.testing.assert_allclose(from_file.windows, got.windows, atol=2e-3)


def test_other_sample_rates_are_resampled(embedder):
    x = tone(2.0, SAMPLE_RATE, [300.0])
    up = np.interp(np.arange(8000) / 4000, np.arange(4000) / 2000, x).astype(np.float32)
    got = embedder.embed_audio(up, sample_rate=4000)
    assert got.windows.shape == (10, 8) and got.duration == pytest.approx(2.0)
    with pytest.raises(ValueError, match="sample_rate"):
        embedder.embed_audio(x)


def test_short_song_is_zero_padded_to_one_window(embedder):
    L = embedder.input_length
    x = tone(0.2, SAMPLE_RATE, [300.0])  # 400 samples < 729
    got = embedder.embed_audio(x, sample_rate=SAMPLE_RATE)
    assert got.windows.shape == (1, 8)
    assert got.starts.tolist() == [0.0] and got.ends.tolist() == [pytest.approx(0.2)]
    with torch.no_grad():
        ref = embedder.model.encode_audio(torch.from_numpy(np.pad(x, (0, L - x.size)))[None, None]).numpy()
    np.testing.assert_allclose(got.windows, ref, atol=1e-5)
    np.testing.assert_allclose(got.song, ref[0], atol=1e-5)


def test_unreadable_song_names_the_file(embedder, tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        embedder.embed_audio(bad)
    with pytest.raises(AudioDecodeError, match="nothing.wav: file does not exist"):
        embedder.embed_audio(tmp_path / "nothing.wav")


def test_video_features_follow_the_builder_path(embedder, tmp_path):
    path = colour_video(tmp_path / "v.mp4", [0, 1, 2, 3, 4], audio=False)
    got = embedder.embed_video(path, clip_seconds=2)
    encoder = build_frame_encoder("tiny_clip", TINY_CLIP["args"], device="cpu")
    ref = per_second_features(path, encoder, 5.0, batch_size=embedder.frame_batch_size)
    np.testing.assert_array_equal(got.features, ref)
    assert got.starts.tolist() == [0.0, 2.0, 3.0] and got.ends.tolist() == [2.0, 4.0, 5.0]
    with torch.no_grad():
        direct = embedder.model.encode_video(torch.from_numpy(np.stack([ref[0:2], ref[2:4], ref[3:5]]))).numpy()
    np.testing.assert_allclose(got.clips, direct, atol=1e-5)
    np.testing.assert_allclose(got.video, centroid(direct), atol=1e-5)

    default = embedder.embed_video(path, start=1.0, end=4.5)  # model context: 1 s clips
    assert embedder.video_context == 1
    assert default.starts.tolist() == [1.0, 2.0, 3.0] and default.features.shape == (3, 16)
    np.testing.assert_allclose(default.features, ref[1:4], atol=1e-6)

    given = embedder.embed_video(path, spans=[(0.5, 2.5), (3.0, 4.9)])  # clips of 2 s and 1 s
    assert given.starts.tolist() == [0.5, 3.0] and given.ends.tolist() == [2.5, 4.0]
    frames = embedder.encode_frames(path, 0.0, 5.0)
    with torch.no_grad():
        ref_spans = [embedder.model.encode_video(torch.from_numpy(embedder.span_features(frames, a, m)[None])).numpy()[0]
                     for a, m in ((0.5, 2), (3.0, 1))]
    np.testing.assert_allclose(given.clips, np.stack(ref_spans), atol=1e-5)
    with pytest.raises(ValueError, match="at least 1 s"):
        embedder.embed_video(path, spans=[(1.0, 1.5)])

    whole = embedder.embed_video(path, clip_seconds=9)  # shorter than one clip: one clip of every second
    assert whole.starts.tolist() == [0.0] and whole.ends.tolist() == [5.0]
    with pytest.raises(MediaError, match="less than one second"):
        embedder.embed_video(path, start=4.5)


def test_frame_encoder_must_be_the_recorded_one(model_path, tmp_path):
    same = dict(TINY_CLIP, args=dict(TINY_CLIP["args"]))
    assert Embedder(model_path, frame_encoder=same, progress=False).frame_encoder_spec == TINY_CLIP
    other = dict(TINY_CLIP, args=dict(TINY_CLIP["args"], seed=1))
    with pytest.raises(EmbedderError, match=r"args.seed 1 != 0.*tiny_clip .*'seed': 0.*tiny_clip .*'seed': 1"):
        Embedder(model_path, frame_encoder=other)
    with pytest.raises(EmbedderError, match="name 'open_clip' != 'tiny_clip'"):
        Embedder(model_path, frame_encoder={"name": "open_clip", "args": {"model_name": "ViT-B-32"}})

    bare = tiny_model(tmp_path, frame_encoder=None, name="bare.safetensors")
    with pytest.raises(EmbedderError, match="records no frame encoder"):
        Embedder(bare)
    e = Embedder(bare, frame_encoder=TINY_CLIP, progress=False)
    assert e.frame_encoder.embed_dim == 16
    with pytest.raises(EmbedderError, match=r"lacks \['fps', 'normalize'\]"):
        Embedder(bare, frame_encoder={"name": "tiny_clip", "args": TINY_CLIP["args"]})
    wrong_dim = dict(TINY_CLIP, args=dict(TINY_CLIP["args"], embed_dim=12))
    with pytest.raises(EmbedderError, match="12-dim features but the model's video encoder takes 16"):
        Embedder(bare, frame_encoder=wrong_dim, progress=False).frame_encoder


def test_precision_and_device_checks(model_path):
    with pytest.raises(EmbedderError, match="precision='fp16' runs on a CUDA GPU only"):
        Embedder(model_path, precision="fp16")
    with pytest.raises(EmbedderError, match="precision must be one of"):
        Embedder(model_path, precision="int8")


def test_model_info_records_the_file_hash(embedder, model_path):
    import hashlib

    info = embedder.model_info()
    assert info["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert info["sample_rate"] == SAMPLE_RATE and info["embed_dim"] == 8 and info["input_length"] == 729


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_gpu_matches_fp32(model_path, tmp_path, precision):
    x = tone(3.0, SAMPLE_RATE, [300.0, 500.0, 700.0])
    ref = Embedder(model_path, progress=False).embed_audio(x, sample_rate=SAMPLE_RATE)
    gpu = Embedder(model_path, device="cuda", precision=precision, progress=False)
    got = gpu.embed_audio(x, sample_rate=SAMPLE_RATE)
    assert np.min(np.sum(got.windows * ref.windows, axis=1)) > 0.99
    video = colour_video(tmp_path / "v.mp4", [0, 1, 2], audio=False)
    v_ref = Embedder(model_path, progress=False).embed_video(video)
    v_got = gpu.embed_video(video)
    assert np.min(np.sum(v_got.clips * v_ref.clips, axis=1)) > 0.99
