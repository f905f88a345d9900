"""The joint music-video model: two encoders and two projection heads into one space.

:class:`MusicVideoModel` is a plain ``nn.Module``. Training wraps it (stage 2's
LightningModule receives it); retrieval, evaluation and export use it directly, with
no Lightning import. Its ``spec`` (the ``{name, args}`` of each part) is all that is
needed to rebuild it, and travels with its weights in the single-file export
(:func:`vcmr.models.export.save_model` / :func:`vcmr.models.export.load_model`).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from torch import Tensor, nn

from vcmr.models.registry import build_module

#: The four parts of a joint model, in the order of the spec.
PARTS = ("audio_encoder", "video_encoder", "audio_projector", "video_projector")


class MusicVideoModel(nn.Module):
    """Audio encoder + video temporal encoder + a projection head for each.

    Args:
        audio_encoder: ``[B, 1, L] -> [B, F_a]`` waveform encoder exposing ``input_length``
            and ``output_dim``.
        video_encoder: ``[B, S, F_v] (+ lengths [B]) -> [B, H]`` temporal encoder over
            per-second frame features, exposing ``input_dim`` and ``output_dim``.
        audio_projector: ``[B, F_a] -> [B, D]``.
        video_projector: ``[B, H] -> [B, D]``.
        spec: ``{part: {"name", "args"}}`` describing how each part was built (kept in
            exports so :func:`build_joint_model` can rebuild the model from the file).
    """

    def __init__(
        self,
        audio_encoder: nn.Module,
        video_encoder: nn.Module,
        audio_projector: nn.Module,
        video_projector: nn.Module,
        spec: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        self.video_encoder = video_encoder
        self.audio_projector = audio_projector
        self.video_projector = video_projector
        self.spec: Dict[str, Dict[str, Any]] = {k: dict(v) for k, v in (spec or {}).items()}

    @property
    def input_length(self) -> int:
        """Samples per audio window the model takes."""
        return int(self.audio_encoder.input_length)

    @property
    def video_input_dim(self) -> int:
        """Size ``F_v`` of the per-second frame features."""
        return int(self.video_encoder.input_dim)

    @property
    def embed_dim(self) -> int:
        """Size ``D`` of the joint space."""
        return int(self.audio_projector.output_dim)

    def encode_audio(self, x: Tensor, normalize: bool = True) -> Tensor:
        """``x: [B, 1, L]`` float32 waveform -> ``[B, D]`` joint-space embedding."""
        z = self.audio_projector(self.audio_encoder(x))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_video(self, v: Tensor, normalize: bool = True, lengths: Optional[Tensor] = None) -> Tensor:
        """``v: [B, S, F_v]`` per-second frame features -> ``[B, D]`` joint-space embedding.

        ``lengths: [B]`` valid steps per row when ``v`` is right-padded (``None``: all ``S``).
        """
        h = self.video_encoder(v) if lengths is None else self.video_encoder(v, lengths)
        z = self.video_projector(h)
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def forward(self, audio: Tensor, video: Tensor, audio_view2: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Unnormalised embeddings ``{"audio": [B, D], "video": [B, D]}`` (+ ``"audio_view2"``),
        the keyword arguments of :class:`vcmr.losses.VideoMusicLoss`."""
        out = {"audio": self.encode_audio(audio, False), "video": self.encode_video(video, False)}
        if audio_view2 is not None:
            out["audio_view2"] = self.encode_audio(audio_view2, False)
        return out


def build_joint_model(spec: Mapping[str, Mapping[str, Any]]) -> MusicVideoModel:
    """Build a fresh :class:`MusicVideoModel` from ``{part: {"name", "args"}}`` for every part in :data:`PARTS`."""
    missing = [p for p in PARTS if p not in spec]
    if missing:
        raise KeyError(f"joint model spec lacks {missing}; expected the parts {list(PARTS)}")
    parts = {p: build_module(str(spec[p]["name"]), spec[p]["args"]) for p in PARTS}
    return MusicVideoModel(**parts, spec=spec)


def projection_spec(in_dim: int, args: Mapping[str, Any]) -> Dict[str, Any]:
    """``{name, args}`` of a projection head on ``in_dim`` features (``args``: hidden_dim, out_dim, ...)."""
    return {"name": "projection", "args": {"in_dim": int(in_dim), **dict(args)}}

