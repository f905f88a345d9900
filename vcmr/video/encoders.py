"""Frame encoders: CLIP image towers behind one interface, picked from an explicit registry.

``FRAME_ENCODERS`` maps a config name to a class:

* ``open_clip``: any open_clip model name and pretrained tag (default ``ViT-B-32`` /
  ``openai``), or a local checkpoint file as ``pretrained``.
* ``hf_clip``: a Hugging Face ``transformers`` CLIP (hub id or local directory).
* ``tiny_clip``: a small, randomly initialised open_clip ``CLIP`` built from a few sizes
  and a seed (same seed, same weights); for demos, tests and offline runs.

Each encoder takes ``[B, H, W, 3]`` uint8 RGB frames and does the CLIP preprocessing in
torch on its own device, batched: resize (shorter side to the model's input size,
bicubic, antialiased), centre crop, scale to [0, 1], normalise with the model's mean/std.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: CLIP's normalisation statistics (the OpenAI training set), used when a checkpoint
#: carries none of its own.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrameEncoderError(RuntimeError):
    """A frame encoder cannot be built or its weights cannot be loaded."""


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FrameEncoderError(f"device '{device}': no CUDA GPU is available here; use device=cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FrameEncoderError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


class FrameEncoder(nn.Module):
    """Base class: CLIP-style preprocessing plus an image tower.

    Subclasses set ``image_size`` (pixels), ``embed_dim``, ``mean``/``std`` and implement
    :meth:`encode_pixels`.
    """

    image_size: int
    embed_dim: int

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 RGB -> ``[B, 3, S, S]`` float32 normalised, ``S = image_size``."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, H, W, 3] uint8, got shape {tuple(frames.shape)}")
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        s = self.image_size
        h, w = x.shape[-2:]
        if min(h, w) != s:
            scale = s / min(h, w)
            size = (max(s, round(h * scale)), max(s, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
            h, w = size
        top, left = (h - s) // 2, (w - s) // 2
        x = x[:, :, top : top + s, left : left + s]
        return (x - self.mean) / self.std

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` normalised -> ``[B, embed_dim]`` image embeddings."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 RGB frames -> ``[B, embed_dim]`` float32 embeddings (on CPU)."""
        return self.encode_pixels(self.preprocess(frames)).float().cpu()

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        """Encode ``[N, H, W, 3]`` uint8 frames in batches -> ``[N, embed_dim]`` float32."""
        out = np.zeros((len(frames), self.embed_dim), np.float32)
        for i in range(0, len(frames), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch_size]))
            if self.device.type == "cuda":
                chunk = chunk.pin_memory()
            out[i : i + len(chunk)] = self(chunk).numpy()
        return out


def _image_size(value: Any) -> int:
    if isinstance(value, (tuple, list)):
        return int(value[0])
    return int(value)


class OpenClipEncoder(FrameEncoder):
    """open_clip image tower.

    Args:
        model_name: open_clip architecture, e.g. ``ViT-B-32``.
        pretrained: open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``...) or the
            path of a local checkpoint file; ``None`` keeps random weights.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
    """

    def __init__(self, model_name: str, pretrained: Optional[str], device: str = "auto"):
        try:
            import open_clip
        except ImportError as exc:
            raise FrameEncoderError("the open_clip encoder needs open_clip_torch: pip install 'vcmr[video]'") from exc
        mean, std = CLIP_MEAN, CLIP_STD
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained or None, device="cpu")
        except Exception as exc:
            local = pretrained is not None and Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"}
            where = f"local checkpoint '{pretrained}'" if local else f"pretrained tag '{pretrained}'"
            raise FrameEncoderError(
                f"cannot load open_clip model '{model_name}' with {where}: {exc}. Offline machines: download "
                "the checkpoint elsewhere (e.g. open_clip_pytorch_model.bin from the model's hub page) and set "
                "frames.encoders.open_clip.pretrained=/path/to/checkpoint"
            ) from exc
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        super().__init__(mean, std)
        # Only the image tower is kept: the text tower would double the memory for nothing.
        self.visual = model.visual.eval()
        del model
        self.image_size = _image_size(self.visual.image_size)
        self.embed_dim = int(self.visual.output_dim)
        self.to(resolve_device(device))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


def build_tiny_clip(
    embed_dim: int, image_size: int, patch_size: int, width: int, layers: int, head_width: int, seed: int
) -> nn.Module:
    """A small randomly initialised open_clip ``CLIP`` (ViT image tower, one-layer text
    tower), drawn from ``seed`` without touching the global RNG. Its state dict loads into
    open_clip models registered with the same config."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return open_clip.CLIP(
            embed_dim=int(embed_dim),
            vision_cfg=CLIPVisionCfg(
                layers=int(layers), width=int(width), head_width=int(head_width),
                patch_size=int(patch_size), image_size=int(image_size),
            ),
            text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=int(head_width), heads=1, layers=1),
        ).eval()


class TinyClipEncoder(FrameEncoder):
    """Image tower of :func:`build_tiny_clip`: small, random, deterministic per seed.

    Args:
        embed_dim: output embedding size.
        image_size: input resolution in pixels.
        patch_size: ViT patch size in pixels.
        width: transformer width.
        layers: transformer depth.
        head_width: width per attention head.
        seed: weights are drawn from this seed (the global RNG is left untouched).
        device: ``auto``, ``cpu``, ``cuda``...
    """

    def __init__(
        self,
        embed_dim: int,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        head_width: int,
        seed: int,
        device: str = "auto",
    ):
        super().__init__(CLIP_MEAN, CLIP_STD)
        self.visual = build_tiny_clip(embed_dim, image_size, patch_size, width, layers, head_width, seed).visual
        self.image_size = int(image_size)
        self.embed_dim = int(embed_dim)
        self.to(resolve_device(device))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


class HFClipEncoder(FrameEncoder):
    """Hugging Face ``transformers`` CLIP vision tower with its projection.

    Args:
        model: hub id (e.g. ``openai/clip-vit-base-patch32``) or a local directory holding
            a ``CLIPModel`` or ``CLIPVisionModelWithProjection`` (``save_pretrained``).
        device: ``auto``, ``cpu``, ``cuda``...
    """

    def __init__(self, model: str, device: str = "auto"):
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as exc:
            raise FrameEncoderError("the hf_clip encoder needs transformers: pip install 'vcmr[video]'") from exc
        try:
            net = CLIPVisionModelWithProjection.from_pretrained(model)
        except Exception as exc:
            raise FrameEncoderError(
                f"cannot load Hugging Face CLIP '{model}': {exc}. Offline machines: copy the model folder "
                "(config.json + weights) here and set frames.encoders.hf_clip.model=/path/to/folder"
            ) from exc
        mean, std = CLIP_MEAN, CLIP_STD
        if Path(model).is_dir() and (Path(model) / "preprocessor_config.json").is_file():
            import json

            pcfg = json.loads((Path(model) / "preprocessor_config.json").read_text())
            mean, std = tuple(pcfg.get("image_mean", mean)), tuple(pcfg.get("image_std", std))
        super().__init__(mean, std)
        self.model = net.eval()
        self.image_size = _image_size(net.config.image_size)
        self.embed_dim = int(net.config.projection_dim)
        self.to(resolve_device(device))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).image_embeds


FRAME_ENCODERS: Dict[str, Type[FrameEncoder]] = {
    "open_clip": OpenClipEncoder,
    "hf_clip": HFClipEncoder,
    "tiny_clip": TinyClipEncoder,
}


def build_frame_encoder(name: str, args: Mapping[str, Any], device: str = "auto") -> FrameEncoder:
    """Build the encoder registered as ``name`` with keyword ``args`` on ``device``."""
    if name not in FRAME_ENCODERS:
        raise FrameEncoderError(f"unknown frame encoder '{name}'; choose from {sorted(FRAME_ENCODERS)}")
    kwargs = dict(args)
    kwargs.setdefault("device", device)
    cls = FRAME_ENCODERS[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise FrameEncoderError(f"frame encoder '{name}': bad arguments {sorted(kwargs)}: {exc}") from exc
    return cls(**kwargs)
