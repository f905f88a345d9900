from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from vcmr.video.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    FRAME_ENCODERS,
    FrameEncoderError,
    HFClipEncoder,
    OpenClipEncoder,
    TinyClipEncoder,
    build_frame_encoder,
    build_tiny_clip,
)

TINY = dict(embed_dim=24, image_size=32, patch_size=8, width=32, layers=1, head_width=16, seed=3)


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_registry_names_and_errors():
    assert set(FRAME_ENCODERS) == {"open_clip", "hf_clip", "tiny_clip"}
    with pytest.raises(FrameEncoderError, match="unknown frame encoder 'clip'"):
        build_frame_encoder("clip", {})
    with pytest.raises(FrameEncoderError, match="bad arguments"):
        build_frame_encoder("tiny_clip", {**TINY, "depth": 3}, device="cpu")


def test_tiny_clip_deterministic_and_seeded():
    a = build_frame_encoder("tiny_clip", TINY, device="cpu")
    b = build_frame_encoder("tiny_clip", TINY, device="cpu")
    c = build_frame_encoder("tiny_clip", {**TINY, "seed": 4}, device="cpu")
    x = _frames(5, 40, 56)
    ea, eb, ec = (e.encode_frames(x, batch_size=2) for e in (a, b, c))
    assert ea.shape == (5, 24) and ea.dtype == np.float32
    np.testing.assert_array_equal(ea, eb)
    assert np.abs(ea - ec).max() > 1e-3
    # Building does not disturb the global RNG.
    torch.manual_seed(0)
    r1 = torch.rand(3)
    torch.manual_seed(0)
    build_frame_encoder("tiny_clip", TINY, device="cpu")
    np.testing.assert_array_equal(r1, torch.rand(3))


def test_batching_does_not_change_results():
    enc = TinyClipEncoder(**TINY, device="cpu")
    x = _frames(7, 32, 32, seed=1)
    np.testing.assert_allclose(enc.encode_frames(x, 7), enc.encode_frames(x, 3), atol=1e-5)


def test_preprocess_matches_torchvision_reference():
    enc = TinyClipEncoder(**TINY, device="cpu")
    x = _frames(3, 48, 80, seed=2)
    got = enc.preprocess(torch.from_numpy(x))
    assert got.shape == (3, 3, 32, 32)
    for i in range(3):
        img = torch.from_numpy(x[i]).permute(2, 0, 1).float() / 255.0
        ref = TF.resize(img, 32, interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
        ref = TF.center_crop(ref, [32, 32])
        ref = TF.normalize(ref, CLIP_MEAN, CLIP_STD)
        torch.testing.assert_close(got[i], ref, atol=1e-4, rtol=1e-4)


def test_preprocess_rejects_bad_shape():
    enc = TinyClipEncoder(**TINY, device="cpu")
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        enc.preprocess(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def _register_tiny_open_clip(tmp_path: Path) -> str:
    import open_clip

    name = "vcmr-test-tiny"
    cfg = {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return name


def test_open_clip_local_checkpoint_roundtrip(tmp_path: Path):
    name = _register_tiny_open_clip(tmp_path)
    tiny = TinyClipEncoder(**TINY, device="cpu")
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_tiny_clip(**TINY).state_dict(), ckpt)
    enc = build_frame_encoder("open_clip", {"model_name": name, "pretrained": str(ckpt)}, device="cpu")
    assert isinstance(enc, OpenClipEncoder)
    assert (enc.image_size, enc.embed_dim) == (32, 24)
    x = _frames(4, 32, 32, seed=5)
    np.testing.assert_allclose(enc.encode_frames(x, 4), tiny.encode_frames(x, 4), atol=1e-5)


def test_open_clip_missing_weights_says_how_to_pass_a_file(tmp_path: Path):
    name = _register_tiny_open_clip(tmp_path)
    with pytest.raises(FrameEncoderError, match="frames.encoders.open_clip.pretrained=/path/to/checkpoint"):
        OpenClipEncoder(name, str(tmp_path / "missing.pt"), device="cpu")


def test_hf_clip_local_directory(tmp_path: Path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=20, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    ref = CLIPVisionModelWithProjection(cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    enc = HFClipEncoder(str(tmp_path / "hf"), device="cpu")
    assert (enc.image_size, enc.embed_dim) == (32, 20)
    x = _frames(3, 32, 32, seed=6)
    pixels = enc.preprocess(torch.from_numpy(x))
    with torch.no_grad():
        want = ref(pixel_values=pixels).image_embeds.numpy()
    np.testing.assert_allclose(enc.encode_frames(x, 2), want, atol=1e-5)


def test_hf_clip_offline_error_names_the_local_folder_key(tmp_path: Path):
    with pytest.raises(FrameEncoderError, match="frames.encoders.hf_clip.model=/path/to/folder"):
        HFClipEncoder(str(tmp_path / "no-such-model"), device="cpu")
