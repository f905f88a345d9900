"""The siamese clip matcher and its regression baseline (10-second clips).

The seed (``viviehn/mv-gen``, "Just Press Play") embeds 10-second audio and video clips,
each given as ten per-second feature vectors of 128 values flattened to 1280 (AudioSet
VGGish for audio, YouTube-8M's PCA'd Inception features for video).

:class:`SiameseMatcher`: one subnetwork of fully connected layers ``[1024, 256, 128, 128]``
with ``tanh`` after every layer, **shared by both modalities** (the seed reuses the same
variables for audio and video), trained with a contrastive loss
(:class:`vcmr.losses.SiameseContrastiveLoss`). "Dropout 0.9" is a *drop rate* there: the
seed builds its layers with ``tf.layers.dropout(rate=...)`` and its write-up says the rates
were "drastically increased" from 0.3/0.4 to 0.9 against overfitting; so ``dropout=0.9``
drops 90 % of the units (after each layer but the last). The flattened inputs of both
modalities must have one size to share the subnetwork; when they differ, each modality
first goes through its own linear projection to ``projection_dim`` (``None`` when the sizes
are equal: no projection, as in the seed).

:class:`RegressionBaseline`: 4 fully connected layers with ``tanh`` and dropout 0.3 that
regress the flattened audio clip onto the flattened video clip (MSE,
:class:`vcmr.losses.RegressionMSELoss`); retrieval compares the predicted video features
with the real ones by cosine similarity.

Per-second inputs first pass an :class:`~vcmr.models.vmnet.InputTransform` fitted on the
training clips (e.g. standardisation, and PCA of the 512-d CLIP rows to 128 like
YouTube-8M's features), then are flattened.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from torch import Tensor, nn

from vcmr.models.vmnet import input_transform, mlp


def _flat(x: Tensor, seconds: int, name: str) -> Tensor:
    if x.dim() != 3 or x.shape[1] != seconds:
        raise ValueError(f"{name} must be [B, {seconds}, F] per-second features, got shape {tuple(x.shape)}")
    return x.flatten(1)


class SiameseMatcher(nn.Module):
    """Shared-subnetwork clip matcher (module docstring).

    Args:
        clip_seconds: rows per clip (seed: 10).
        audio_dim: per-second audio feature size.
        video_dim: per-second video feature size.
        layers: widths of the shared subnetwork (seed: ``[1024, 256, 128, 128]``).
        dropout: drop rate after each layer but the last (seed: 0.9).
        activation: after every layer (seed: ``tanh``).
        projection_dim: size of the per-modality input projections, used only when the
            flattened audio and video sizes differ (required then).
        audio_transform: ``{"pca_dim", "l2"}`` of the per-second audio transform.
        video_transform: the same for the video rows.
    """

    def __init__(
        self,
        clip_seconds: int,
        audio_dim: int,
        video_dim: int,
        layers: Sequence[int] = (1024, 256, 128, 128),
        dropout: float = 0.9,
        activation: str = "tanh",
        projection_dim: Optional[int] = None,
        audio_transform: Optional[Mapping[str, Any]] = None,
        video_transform: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.clip_seconds = int(clip_seconds)
        self.audio_input = input_transform(audio_dim, audio_transform)
        self.video_input = input_transform(video_dim, video_transform)
        fa = self.clip_seconds * self.audio_input.out_dim
        fv = self.clip_seconds * self.video_input.out_dim
        if fa != fv:
            if projection_dim is None:
                raise ValueError(
                    f"flattened audio ({fa}) and video ({fv}) clips differ in size: set projection_dim so each "
                    "modality is projected to one size before the shared subnetwork"
                )
            self.audio_projection: nn.Module = nn.Linear(fa, int(projection_dim))
            self.video_projection: nn.Module = nn.Linear(fv, int(projection_dim))
            shared_in = int(projection_dim)
        else:
            self.audio_projection = nn.Identity()
            self.video_projection = nn.Identity()
            shared_in = fa
        self.shared = mlp(shared_in, list(layers), activation, dropout, last_activation=True)
        self._embed_dim = int(layers[-1])
        self.spec: Dict[str, Any] = {
            "name": "siamese",
            "args": {
                "clip_seconds": self.clip_seconds, "audio_dim": int(audio_dim), "video_dim": int(video_dim),
                "layers": [int(w) for w in layers], "dropout": float(dropout), "activation": str(activation),
                "projection_dim": None if projection_dim is None else int(projection_dim),
                "audio_transform": dict(audio_transform) if audio_transform else None,
                "video_transform": dict(video_transform) if video_transform else None,
            },
        }

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def encode_audio(self, a: Tensor, normalize: bool = True) -> Tensor:
        """``a: [B, clip_seconds, audio_dim]`` -> ``[B, embed_dim]`` (unit rows when ``normalize``)."""
        z = self.shared(self.audio_projection(_flat(self.audio_input(a), self.clip_seconds, "audio")))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_video(self, v: Tensor, normalize: bool = True) -> Tensor:
        """``v: [B, clip_seconds, video_dim]`` -> ``[B, embed_dim]``."""
        z = self.shared(self.video_projection(_flat(self.video_input(v), self.clip_seconds, "video")))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def regularized_weights(self) -> List[Tensor]:
        """Every trainable parameter (the seed regularises all its variables)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, audio: Tensor, video: Tensor, match: Tensor) -> Dict[str, Any]:
        """The keyword arguments of :class:`vcmr.losses.SiameseContrastiveLoss`: unnormalised
        ``audio``/``video`` embeddings (Euclidean distances, as the seed), the pair labels
        ``match`` and the ``weights`` to regularise."""
        return {
            "audio": self.encode_audio(audio, normalize=False),
            "video": self.encode_video(video, normalize=False),
            "match": match,
            "weights": self.regularized_weights(),
        }


class RegressionBaseline(nn.Module):
    """Audio clip -> video clip feature regression (module docstring).

    Args:
        clip_seconds: rows per clip.
        audio_dim: per-second audio feature size.
        video_dim: per-second video feature size; the output has ``clip_seconds · video
            out_dim`` values (after the video transform).
        hidden: widths of the 3 hidden layers (the 4th layer is the output).
        dropout: after each hidden layer (seed: 0.3).
        activation: after each hidden layer (seed: ``tanh``).
        final_activation: after the output layer (the seed's last layer has ``tanh`` too,
            its targets lying in [-2, 2]; ``none`` for standardised targets).
        audio_transform / video_transform: per-second input transforms.
    """

    def __init__(
        self,
        clip_seconds: int,
        audio_dim: int,
        video_dim: int,
        hidden: Sequence[int] = (1024, 512, 256),
        dropout: float = 0.3,
        activation: str = "tanh",
        final_activation: str = "none",
        audio_transform: Optional[Mapping[str, Any]] = None,
        video_transform: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        from vcmr.models.vmnet import activation as make_activation

        self.clip_seconds = int(clip_seconds)
        self.audio_input = input_transform(audio_dim, audio_transform)
        self.video_input = input_transform(video_dim, video_transform)
        out = self.clip_seconds * self.video_input.out_dim
        self.net = nn.Sequential(
            mlp(self.clip_seconds * self.audio_input.out_dim, [*hidden, out], activation, dropout, False),
            make_activation(final_activation),
        )
        self._embed_dim = out
        self.spec: Dict[str, Any] = {
            "name": "regression",
            "args": {
                "clip_seconds": self.clip_seconds, "audio_dim": int(audio_dim), "video_dim": int(video_dim),
                "hidden": [int(w) for w in hidden], "dropout": float(dropout), "activation": str(activation),
                "final_activation": str(final_activation),
                "audio_transform": dict(audio_transform) if audio_transform else None,
                "video_transform": dict(video_transform) if video_transform else None,
            },
        }

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def encode_audio(self, a: Tensor, normalize: bool = True) -> Tensor:
        """``a: [B, clip_seconds, audio_dim]`` -> predicted flattened video features ``[B, embed_dim]``."""
        z = self.net(_flat(self.audio_input(a), self.clip_seconds, "audio"))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_video(self, v: Tensor, normalize: bool = True) -> Tensor:
        """``v: [B, clip_seconds, video_dim]`` -> its transformed, flattened features ``[B, embed_dim]``."""
        z = _flat(self.video_input(v), self.clip_seconds, "video")
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def forward(self, audio: Tensor, video: Tensor) -> Dict[str, Tensor]:
        """The keyword arguments of :class:`vcmr.losses.RegressionMSELoss`."""
        return {"prediction": self.encode_audio(audio, normalize=False),
                "target": self.encode_video(video, normalize=False)}


__all__ = ["RegressionBaseline", "SiameseMatcher"]
