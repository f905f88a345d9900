"""VM-NET (Hong et al., ICMR 2018): a two-branch music/video embedding network.

Branches, as in ``csehong/VM-NET`` (``embed_network_music.py`` with 3 layers,
``embed_network_video.py`` with 2): fully connected layers with an activation and dropout
after each hidden layer, a last linear layer to ``embed_dim`` (512), batch normalisation
(VM-NET: momentum 0.01, epsilon 1e-3) and L2 normalisation::

    music: in -> 2048 -> 1024 -> 512 -> BN -> L2        (audio_hidden = [2048, 1024])
    video: in -> 2048 -> 512 -> BN -> L2                (video_hidden = [2048])

VM-NET feeds its networks with ``keep_prob = 0.9``, i.e. dropout 0.1. Its ``train.py``
builds the branches with ``is_linear=True`` (no activation between the layers); the refined
fork and the paper use ReLU: ``activation`` picks (``relu``, ``tanh`` or ``none``).

Each branch starts with an :class:`InputTransform`, the global normalisation -> PCA -> L2
fitted on the training split (:class:`vcmr.data.feature_cache.FeatureTransform`), held as
buffers so an export maps raw features to embeddings by itself.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

#: ``activation`` name -> module factory.
ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


def activation(name: str) -> nn.Module:
    """``ACTIVATIONS[name]()`` with an error naming the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown '{name}'; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(in_dim: int, widths: Sequence[int], act: str, dropout: float, last_activation: bool) -> nn.Sequential:
    """``Linear -> activation -> Dropout`` per width; the last layer gets the activation only if
    ``last_activation`` and never dropout."""
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: List[nn.Module] = []
    d = int(in_dim)
    for i, w in enumerate(widths):
        layers.append(nn.Linear(d, int(w)))
        last = i == len(widths) - 1
        if not last or last_activation:
            layers.append(activation(act))
        if not last and dropout > 0:
            layers.append(nn.Dropout(float(dropout)))
        d = int(w)
    return nn.Sequential(*layers)


class InputTransform(nn.Module):
    """``x -> ((x - mean) / scale) @ components.T`` (then L2 when ``l2``), over the last axis.

    The buffers start as the identity (mean 0, scale 1, no PCA) and are filled from a fitted
    :class:`~vcmr.data.feature_cache.FeatureTransform` with :meth:`load_arrays`; they are
    saved with the model.

    Args:
        in_dim: size of the raw rows.
        pca_dim: components kept (``None``: no PCA, ``out_dim = in_dim``).
        l2: L2-normalise the output rows.
    """

    def __init__(self, in_dim: int, pca_dim: Optional[int] = None, l2: bool = False) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.pca_dim = None if pca_dim is None else int(pca_dim)
        self.l2 = bool(l2)
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("scale", torch.ones(self.in_dim))
        if self.pca_dim is not None:
            self.register_buffer("components", torch.zeros(self.pca_dim, self.in_dim))

    @property
    def out_dim(self) -> int:
        return self.pca_dim if self.pca_dim is not None else self.in_dim

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> "InputTransform":
        """Copy ``mean``, ``scale`` (and ``components``) of a fitted transform into the buffers."""
        for key in ("mean", "scale") + (("components",) if self.pca_dim is not None else ()):
            if key not in arrays:
                raise KeyError(f"InputTransform: fitted arrays lack '{key}'")
            src = torch.as_tensor(np.asarray(arrays[key]), dtype=torch.float32)
            dst = getattr(self, key)
            if src.shape != dst.shape:
                raise ValueError(f"InputTransform.{key}: expected shape {tuple(dst.shape)}, got {tuple(src.shape)}")
            dst.copy_(src)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"InputTransform expects rows of {self.in_dim}, got shape {tuple(x.shape)}")
        z = (x.float() - self.mean) / self.scale
        if self.pca_dim is not None:
            z = z @ self.components.t()
        return nn.functional.normalize(z, dim=-1) if self.l2 else z

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, pca_dim={self.pca_dim}, l2={self.l2}"


def input_transform(in_dim: int, spec: Optional[Mapping[str, Any]]) -> InputTransform:
    """An :class:`InputTransform` from ``{"pca_dim", "l2"}`` (``None``: identity)."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - {"pca_dim", "l2", "standardize"})
    if unknown:
        raise KeyError(f"input transform: unknown key(s) {unknown} (known: standardize, pca_dim, l2)")
    return InputTransform(in_dim, spec.get("pca_dim"), bool(spec.get("l2", False)))


class VMNet(nn.Module):
    """VM-NET's two branches (module docstring).

    Args:
        audio_dim: size of the raw music features (VM-NET: 1140).
        video_dim: size of the raw video-level features (here ``7 · 512`` before PCA).
        audio_hidden: hidden widths of the music branch (VM-NET: ``[2048, 1024]``, 3 FC in all).
        video_hidden: hidden widths of the video branch (VM-NET: ``[2048]``, 2 FC in all).
        embed_dim: joint space size (VM-NET: 512).
        dropout: dropout after each hidden layer (VM-NET: keep probability 0.9 -> 0.1).
        activation: ``relu``, ``tanh`` or ``none``.
        batch_norm: batch normalisation before the L2 normalisation (VM-NET: yes).
        audio_transform: ``{"pca_dim", "l2"}`` of the music input transform (``None``: identity).
        video_transform: the same for the video input.
    """

    def __init__(
        self,
        audio_dim: int,
        video_dim: int,
        audio_hidden: Sequence[int] = (2048, 1024),
        video_hidden: Sequence[int] = (2048,),
        embed_dim: int = 512,
        dropout: float = 0.1,
        activation: str = "relu",
        batch_norm: bool = True,
        audio_transform: Optional[Mapping[str, Any]] = None,
        video_transform: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.audio_input = input_transform(audio_dim, audio_transform)
        self.video_input = input_transform(video_dim, video_transform)
        self.audio_branch = mlp(self.audio_input.out_dim, [*audio_hidden, embed_dim], activation, dropout, False)
        self.video_branch = mlp(self.video_input.out_dim, [*video_hidden, embed_dim], activation, dropout, False)
        # TensorFlow's batch_norm(decay=0.99, epsilon=1e-3) is PyTorch's momentum 0.01.
        self.audio_bn = nn.BatchNorm1d(embed_dim, eps=1e-3, momentum=0.01) if batch_norm else nn.Identity()
        self.video_bn = nn.BatchNorm1d(embed_dim, eps=1e-3, momentum=0.01) if batch_norm else nn.Identity()
        self.audio_dim, self.video_dim, self._embed_dim = int(audio_dim), int(video_dim), int(embed_dim)
        self.spec: Dict[str, Any] = {
            "name": "vmnet",
            "args": {
                "audio_dim": int(audio_dim), "video_dim": int(video_dim), "audio_hidden": [int(w) for w in audio_hidden],
                "video_hidden": [int(w) for w in video_hidden], "embed_dim": int(embed_dim), "dropout": float(dropout),
                "activation": str(activation), "batch_norm": bool(batch_norm),
                "audio_transform": dict(audio_transform) if audio_transform else None,
                "video_transform": dict(video_transform) if video_transform else None,
            },
        }

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def encode_audio(self, a: Tensor, normalize: bool = True) -> Tensor:
        """``a: [B, audio_dim]`` raw music features -> ``[B, embed_dim]`` (unit rows when ``normalize``)."""
        z = self.audio_bn(self.audio_branch(self.audio_input(a)))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_video(self, v: Tensor, normalize: bool = True) -> Tensor:
        """``v: [B, video_dim]`` raw video-level features -> ``[B, embed_dim]``."""
        z = self.video_bn(self.video_branch(self.video_input(v)))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def forward(self, audio: Tensor, video: Tensor) -> Dict[str, Tensor]:
        """The keyword arguments of :class:`vcmr.losses.VMNetLoss`: unit embeddings ``audio``,
        ``video`` ``[B, embed_dim]`` and the branches' transformed inputs ``audio_features``,
        ``video_features`` (the low-level features of the structure constraint)."""
        fa, fv = self.audio_input(audio), self.video_input(video)
        za = nn.functional.normalize(self.audio_bn(self.audio_branch(fa)), dim=-1)
        zv = nn.functional.normalize(self.video_bn(self.video_branch(fv)), dim=-1)
        return {"audio": za, "video": zv, "audio_features": fa.detach(), "video_features": fv.detach()}


__all__ = ["ACTIVATIONS", "InputTransform", "VMNet", "activation", "input_transform", "mlp"]


# --------------------------------------------------------------------------------------
# Deployment: media in, embeddings out (VM-NET's Embedding() object)
# --------------------------------------------------------------------------------------


def _vmnet_audio_frontend(settings: Mapping[str, Any]) -> Tuple[int, int, Callable[[np.ndarray], np.ndarray]]:
    from vcmr.audio.handcrafted import VMNetAudioSettings, vmnet_track_features

    s = VMNetAudioSettings.from_mapping(settings)
    return s.sample_rate, s.n_samples, lambda y: vmnet_track_features(y, s)


def _clip_audio_frontend(settings: Mapping[str, Any], clip_seconds: int) -> Tuple[int, int, Callable[[np.ndarray], np.ndarray]]:
    from vcmr.audio.handcrafted import LogMelSettings, persecond_logmel

    s = LogMelSettings.from_mapping(settings)
    return s.sample_rate, clip_seconds * s.sample_rate, lambda y: persecond_logmel(y, s, clip_seconds)


#: Audio feature kind -> (settings, clip seconds) -> (sample rate, window samples, waveform [L] -> features).
AUDIO_FRONTENDS: Dict[str, Callable[..., Tuple[int, int, Callable[[np.ndarray], np.ndarray]]]] = {
    "vmnet_audio": lambda settings, clip_seconds: _vmnet_audio_frontend(settings),
    "clip_audio": _clip_audio_frontend,
}


def _video_stats_frontend(settings: Mapping[str, Any], clip_seconds: int) -> Callable[[Tensor], Tensor]:
    from vcmr.video.stats import video_level_stats_torch

    top_k = int(settings["top_k"])
    return lambda v: video_level_stats_torch(v, top_k)


def _video_rows_frontend(settings: Mapping[str, Any], clip_seconds: int) -> Callable[[Tensor], Tensor]:
    def rows(v: Tensor) -> Tensor:
        # A clip shorter than the model's clip repeats its last second; a longer one keeps its start.
        if v.shape[1] < clip_seconds:
            v = torch.cat([v, v[:, -1:].expand(-1, clip_seconds - v.shape[1], -1)], dim=1)
        return v[:, :clip_seconds]

    return rows


#: Video feature kind -> (settings, clip seconds) -> ([B, S, F] per-second rows -> the model's video input).
VIDEO_FRONTENDS: Dict[str, Callable[[Mapping[str, Any], int], Callable[[Tensor], Tensor]]] = {
    "vmnet_video": _video_stats_frontend,
    "frame_rows": _video_rows_frontend,
}


class MediaModel(nn.Module):
    """A feature-input retrieval model behind its feature front ends, with the interface of
    :class:`~vcmr.models.joint.MusicVideoModel` that :class:`vcmr.retrieval.embedder.Embedder`
    uses: ``encode_audio([B, 1, input_length] waveform at meta["sample_rate"])``,
    ``encode_video([B, S, F] per-second frame features)``, ``input_length``,
    ``video_input_dim``, ``embed_dim``, ``spec`` and ``meta``.

    The front ends recompute the features the model was trained on: the audio window goes
    through its audio feature extractor (e.g. VM-NET's hand-crafted vector of
    ``duration`` seconds, or the clip matcher's per-second log-mel statistics of
    ``clip_seconds``), the per-second rows through the video one (VM-NET's statistics, or the
    rows themselves, padded/cut to ``clip_seconds``).

    Args:
        model: the trained model (``encode_audio``/``encode_video`` on features).
        deploy: ``{"audio": {"kind", "settings"}, "video": {"kind", "settings"},
            "clip_seconds", "video_input_dim"}`` as recorded in the export's ``meta``.
        meta: the export's ``meta`` (``sample_rate`` is set here from the audio front end).
    """

    def __init__(self, model: nn.Module, deploy: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        audio, video = deploy["audio"], deploy["video"]
        for side, spec, table in (("audio", audio, AUDIO_FRONTENDS), ("video", video, VIDEO_FRONTENDS)):
            if spec["kind"] not in table:
                raise ValueError(
                    f"{side} features '{spec['kind']}' have no media front end (known: {sorted(table)}); "
                    "embed this model's features with `python -m vcmr.scripts.extract_features` instead"
                )
        clip = int(deploy.get("clip_seconds") or 0)
        sr, length, self._audio_fn = AUDIO_FRONTENDS[audio["kind"]](audio["settings"], clip)
        self._video_fn = VIDEO_FRONTENDS[video["kind"]](video["settings"], clip)
        self.model = model
        self._input_length = int(length)
        self._video_input_dim = int(deploy["video_input_dim"])
        self.spec = dict(getattr(model, "spec", {}))
        self.meta: Dict[str, Any] = {**dict(meta or {}), "sample_rate": int(sr)}

    @property
    def input_length(self) -> int:
        return self._input_length

    @property
    def video_input_dim(self) -> int:
        return self._video_input_dim

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    def encode_audio(self, x: Tensor, normalize: bool = True) -> Tensor:
        """``x: [B, 1, input_length]`` waveform -> ``[B, D]``."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"expected a waveform batch [B, 1, L], got shape {tuple(x.shape)}")
        feats = np.stack([self._audio_fn(row) for row in x[:, 0].detach().float().cpu().numpy()])
        ref = next(self.model.parameters())
        return self.model.encode_audio(torch.from_numpy(feats).to(ref.device), normalize=normalize)

    def encode_video(self, v: Tensor, normalize: bool = True, lengths: Optional[Tensor] = None) -> Tensor:
        """``v: [B, S, F]`` per-second frame features -> ``[B, D]`` (``lengths`` is not supported)."""
        if lengths is not None:
            raise ValueError("MediaModel.encode_video takes unpadded clips (lengths=None)")
        return self.model.encode_video(self._video_fn(v.float()), normalize=normalize)


__all__ += ["AUDIO_FRONTENDS", "MediaModel", "VIDEO_FRONTENDS"]
