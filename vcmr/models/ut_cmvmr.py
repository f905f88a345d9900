"""Rhythm- and motion-aware clip-sequence matcher in the style of UT-CMVMR (Mao et al. 2023).

A song and a video are each a sequence of up to ``max_clip`` clips (4 s by default). Per
clip the model receives a content feature (audio: e.g. log-mel statistics; video: e.g. the
mean CLIP frame embedding) plus quantised timing tokens: the song's rhythm classes (beat
count, beat strength, beat interval; :mod:`vcmr.audio.rhythm`) and the video's motion class
(optical-flow magnitude; :mod:`vcmr.video.motion`).

Per side::

    content [B, C, F] -> clip encoder (MLP)  -> [B, C, d]   (pretrained on the unified target)
                       + rhythm / motion token embeddings (nn.Embedding; add_rhythm / add_motion)
                       + sinusoidal clip-position encoding
                       -> Transformer sequence encoder (padding masked) -> [B, C, d]

**Two-tower retrieval** (``encode_audio`` / ``encode_video``): the masked mean of each
side's sequence through a linear projection, L2-normalised -> ``[B, D]``. These vectors go
into a gallery index (music gallery: one vector per song) and are what the retrieval
protocol scores.

**Cross-attention** (``cross_scores``): for a (video, song) pair, each side's clip tokens
attend to the other's (one co-attention block per ``cross_layers``), are mean-pooled,
projected and compared by cosine similarity. It needs both sequences, so it is a
late-interaction score over pairs: trained jointly with the two-tower loss, and at retrieval
time used to re-rank the two-tower shortlist of a query (``cross_scores(query, shortlist)``)
or to score a whole gallery when it is small. The two-tower vectors do not depend on it.

**Unified target** (``text_outputs``): the clip encoders' outputs, mean-pooled over the
clips, through a linear head predict a sentence embedding of the tags of the pair (both
sides predict the same vector), so the two clip encoders are pretrained towards one space
before matching.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Class counts of the rhythm tokens with the default quantisation (beat count, strength, interval).
DEFAULT_RHYTHM_CLASSES = (18, 49, 65)
#: Class count of the motion token with the default quantisation.
DEFAULT_MOTION_CLASSES = 64


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """``[n, d]`` fixed sinusoidal position encodings (Vaswani et al.)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, C, d]`` over the clips where ``mask [B, C]`` is true -> ``[B, d]``."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class ClipEncoder(nn.Module):
    """Per-clip content feature -> clip token: ``Linear -> GELU -> Dropout -> Linear -> LayerNorm``."""

    def __init__(self, in_dim: int, hidden_dim: int, d_model: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, d_model),
            nn.LayerNorm(d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, in_dim]`` -> ``[B, C, d_model]``."""
        return self.net(x)


class CoAttentionBlock(nn.Module):
    """Each sequence attends to the other (pre-norm, residual), then a feed-forward per side."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.norm_a, self.norm_v = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.a_from_v = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.v_from_a = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ff_a = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(ff_dim, d_model))
        self.ff_v = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(ff_dim, d_model))

    def forward(self, a: Tensor, a_mask: Tensor, v: Tensor, v_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``a: [P, Ca, d]``, ``v: [P, Cv, d]`` with validity masks ``[P, C*]`` -> updated ``(a, v)``."""
        na, nv = self.norm_a(a), self.norm_v(v)
        a = a + self.a_from_v(na, nv, nv, key_padding_mask=~v_mask, need_weights=False)[0]
        v = v + self.v_from_a(nv, na, na, key_padding_mask=~a_mask, need_weights=False)[0]
        return a + self.ff_a(a), v + self.ff_v(v)


class UTCMVMR(nn.Module):
    """Clip-sequence music-video matcher with rhythm and motion tokens (module docstring).

    Args:
        audio_dim: per-clip audio content feature size.
        video_dim: per-clip video content feature size.
        d_model: clip token width.
        clip_hidden: hidden width of the clip encoders.
        n_heads: attention heads (sequence encoders and cross-attention).
        n_layers: Transformer layers of each sequence encoder.
        ff_dim: feed-forward width of the Transformer layers.
        cross_layers: co-attention blocks of the cross-attention scorer.
        embed_dim: size ``D`` of the retrieval embeddings.
        max_clip: most clips per side (UT-CMVMR: 7).
        dropout: dropout rate everywhere.
        add_rhythm: add the rhythm-token embeddings to the audio clip tokens.
        add_motion: add the motion-token embeddings to the video clip tokens.
        rhythm_classes: class counts of the three rhythm tokens.
        motion_classes: class count of the motion token.
        text_dim: size of the unified target (sentence embedding); 0 builds no text heads.
    """

    def __init__(
        self,
        audio_dim: int,
        video_dim: int,
        d_model: int,
        clip_hidden: int,
        n_heads: int,
        n_layers: int,
        ff_dim: int,
        cross_layers: int,
        embed_dim: int,
        max_clip: int,
        dropout: float,
        add_rhythm: bool,
        add_motion: bool,
        rhythm_classes: Sequence[int] = DEFAULT_RHYTHM_CLASSES,
        motion_classes: int = DEFAULT_MOTION_CLASSES,
        text_dim: int = 0,
    ):
        super().__init__()
        if len(rhythm_classes) != 3:
            raise ValueError(f"rhythm_classes must give 3 class counts (beats, strength, interval), got {rhythm_classes}")
        self.spec: Dict[str, Any] = {"name": "ut_cmvmr", "args": {
            "audio_dim": int(audio_dim), "video_dim": int(video_dim), "d_model": int(d_model),
            "clip_hidden": int(clip_hidden), "n_heads": int(n_heads), "n_layers": int(n_layers),
            "ff_dim": int(ff_dim), "cross_layers": int(cross_layers), "embed_dim": int(embed_dim),
            "max_clip": int(max_clip), "dropout": float(dropout), "add_rhythm": bool(add_rhythm),
            "add_motion": bool(add_motion), "rhythm_classes": [int(c) for c in rhythm_classes],
            "motion_classes": int(motion_classes), "text_dim": int(text_dim),
        }}
        self.max_clip = int(max_clip)
        self.add_rhythm = bool(add_rhythm)
        self.add_motion = bool(add_motion)
        self.rhythm_classes: List[int] = [int(c) for c in rhythm_classes]
        self.motion_classes = int(motion_classes)
        # Input standardisation of the content features (identity until set_input_stats).
        self.register_buffer("audio_mean", torch.zeros(audio_dim))
        self.register_buffer("audio_std", torch.ones(audio_dim))
        self.register_buffer("video_mean", torch.zeros(video_dim))
        self.register_buffer("video_std", torch.ones(video_dim))
        self.audio_clip = ClipEncoder(audio_dim, clip_hidden, d_model, dropout)
        self.video_clip = ClipEncoder(video_dim, clip_hidden, d_model, dropout)
        self.rhythm_embed = nn.ModuleList([nn.Embedding(c, d_model) for c in self.rhythm_classes]) if add_rhythm else None
        self.motion_embed = nn.Embedding(self.motion_classes, d_model) if add_motion else None
        self.register_buffer("positions", sinusoidal_positions(self.max_clip, d_model), persistent=False)

        def encoder() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_dim, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

        self.audio_seq = encoder()
        self.video_seq = encoder()
        self.audio_proj = nn.Linear(d_model, embed_dim)
        self.video_proj = nn.Linear(d_model, embed_dim)
        self.cross = nn.ModuleList([CoAttentionBlock(d_model, n_heads, ff_dim, dropout) for _ in range(cross_layers)])
        self.cross_audio_proj = nn.Linear(d_model, embed_dim)
        self.cross_video_proj = nn.Linear(d_model, embed_dim)
        self.text_dim = int(text_dim)
        self.audio_text = nn.Linear(d_model, text_dim) if text_dim > 0 else None
        self.video_text = nn.Linear(d_model, text_dim) if text_dim > 0 else None

    @property
    def embed_dim(self) -> int:
        return int(self.audio_proj.out_features)

    @torch.no_grad()
    def set_input_stats(self, audio_mean: Tensor, audio_std: Tensor, video_mean: Tensor, video_std: Tensor) -> None:
        """Standardise content features as ``(x - mean) / std`` (stats of the training clips; kept in exports)."""
        for name, value in (("audio_mean", audio_mean), ("audio_std", audio_std), ("video_mean", video_mean),
                            ("video_std", video_std)):
            buf = getattr(self, name)
            value = torch.as_tensor(value, dtype=buf.dtype)
            if value.shape != buf.shape:
                raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(value.shape)}")
            if name.endswith("std") and bool((value <= 0).any()):
                raise ValueError(f"{name} must be > 0")
            buf.copy_(value)

    # ---- inputs ---------------------------------------------------------------------------

    def _check(self, x: Tensor, mask: Optional[Tensor], name: str) -> Tensor:
        if x.dim() != 3 or x.shape[1] < 1 or x.shape[1] > self.max_clip:
            raise ValueError(f"{name} must be [B, C, F] with 1 <= C <= max_clip={self.max_clip}, got {tuple(x.shape)}")
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"{name}_mask must be [B, C] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError(f"{name}_mask: every row needs at least one valid clip")
        return mask.bool()

    def _tokens(self, tokens: Optional[Tensor], shape: torch.Size, name: str, classes: Sequence[int]) -> Tensor:
        if tokens is None:
            raise ValueError(f"{name} tokens are required when add_{name} is on")
        want = tuple(shape) + ((len(classes),) if name == "rhythm" else ())
        if tuple(tokens.shape) != want:
            raise ValueError(f"{name} tokens must have shape {want}, got {tuple(tokens.shape)}")
        tokens = tokens.long()
        top = torch.as_tensor(classes, device=tokens.device)
        if bool((tokens < 0).any()) or bool((tokens >= top).any()):
            raise ValueError(f"{name} tokens out of range: classes {list(classes)}")
        return tokens

    # ---- clip encoders (unified target) -----------------------------------------------------

    def audio_clips(self, audio: Tensor) -> Tensor:
        """``audio: [B, C, audio_dim]`` -> clip tokens ``[B, C, d]`` (no rhythm, no position)."""
        return self.audio_clip((audio - self.audio_mean) / self.audio_std)

    def video_clips(self, video: Tensor) -> Tensor:
        """``video: [B, C, video_dim]`` -> clip tokens ``[B, C, d]`` (no motion, no position)."""
        return self.video_clip((video - self.video_mean) / self.video_std)

    def text_outputs(self, audio: Tensor, video: Tensor, audio_mask: Optional[Tensor] = None,
                     video_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Unified-target predictions ``{"audio_text": [B, T], "video_text": [B, T]}`` from the clip encoders."""
        if self.audio_text is None or self.video_text is None:
            raise ValueError("the model has no text heads (text_dim=0)")
        am = self._check(audio, audio_mask, "audio")
        vm = self._check(video, video_mask, "video")
        return {"audio_text": self.audio_text(masked_mean(self.audio_clips(audio), am)),
                "video_text": self.video_text(masked_mean(self.video_clips(video), vm))}

    # ---- sequences ------------------------------------------------------------------------

    def audio_sequence(self, audio: Tensor, rhythm: Optional[Tensor] = None,
                       audio_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``audio [B, C, audio_dim]``, ``rhythm [B, C, 3]`` int -> ``([B, C, d], mask [B, C])``."""
        mask = self._check(audio, audio_mask, "audio")
        h = self.audio_clips(audio)
        if self.rhythm_embed is not None:
            r = self._tokens(rhythm, audio.shape[:2], "rhythm", self.rhythm_classes)
            h = h + sum(emb(r[..., i]) for i, emb in enumerate(self.rhythm_embed))
        h = h + self.positions[: h.shape[1]]
        return self.audio_seq(h, src_key_padding_mask=~mask), mask

    def video_sequence(self, video: Tensor, motion: Optional[Tensor] = None,
                       video_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``video [B, C, video_dim]``, ``motion [B, C]`` int -> ``([B, C, d], mask [B, C])``."""
        mask = self._check(video, video_mask, "video")
        h = self.video_clips(video)
        if self.motion_embed is not None:
            h = h + self.motion_embed(self._tokens(motion, video.shape[:2], "motion", [self.motion_classes]))
        h = h + self.positions[: h.shape[1]]
        return self.video_seq(h, src_key_padding_mask=~mask), mask

    def encode_audio(self, audio: Tensor, rhythm: Optional[Tensor] = None, audio_mask: Optional[Tensor] = None,
                     normalize: bool = True) -> Tensor:
        """Two-tower song embedding ``[B, D]`` (unit rows when ``normalize``)."""
        h, m = self.audio_sequence(audio, rhythm, audio_mask)
        z = self.audio_proj(masked_mean(h, m))
        return F.normalize(z, dim=-1) if normalize else z

    def encode_video(self, video: Tensor, motion: Optional[Tensor] = None, video_mask: Optional[Tensor] = None,
                     normalize: bool = True) -> Tensor:
        """Two-tower video embedding ``[B, D]`` (unit rows when ``normalize``)."""
        h, m = self.video_sequence(video, motion, video_mask)
        z = self.video_proj(masked_mean(h, m))
        return F.normalize(z, dim=-1) if normalize else z

    # ---- cross-attention --------------------------------------------------------------------

    def cross_pairs(self, a: Tensor, a_mask: Tensor, v: Tensor, v_mask: Tensor) -> Tensor:
        """Cosine scores ``[P]`` of ``P`` aligned (song, video) sequence pairs ``[P, C, d]``."""
        for block in self.cross:
            a, v = block(a, a_mask, v, v_mask)
        za = F.normalize(self.cross_audio_proj(masked_mean(a, a_mask)), dim=-1)
        zv = F.normalize(self.cross_video_proj(masked_mean(v, v_mask)), dim=-1)
        return (za * zv).sum(-1)

    def cross_scores(self, video_seq: Tensor, video_mask: Tensor, audio_seq: Tensor, audio_mask: Tensor,
                     chunk_pairs: int = 4096) -> Tensor:
        """Late-interaction scores of every video against every song.

        Args:
            video_seq, video_mask: ``[Q, Cv, d]`` / ``[Q, Cv]`` from :meth:`video_sequence`.
            audio_seq, audio_mask: ``[G, Ca, d]`` / ``[G, Ca]`` from :meth:`audio_sequence`.
            chunk_pairs: pairs per co-attention pass (bounds memory).

        Returns:
            ``[Q, G]`` cosine scores in ``[-1, 1]`` (row = video query, column = song).
        """
        q, g = video_seq.shape[0], audio_seq.shape[0]
        qi = torch.arange(q, device=video_seq.device).repeat_interleave(g)
        gi = torch.arange(g, device=video_seq.device).repeat(q)
        out = []
        for s in range(0, q * g, chunk_pairs):
            i, j = qi[s : s + chunk_pairs], gi[s : s + chunk_pairs]
            out.append(self.cross_pairs(audio_seq[j], audio_mask[j], video_seq[i], video_mask[i]))
        return torch.cat(out).view(q, g)

    def forward(self, audio: Tensor, video: Tensor, rhythm: Optional[Tensor] = None, motion: Optional[Tensor] = None,
                audio_mask: Optional[Tensor] = None, video_mask: Optional[Tensor] = None,
                with_cross: bool = True) -> Dict[str, Tensor]:
        """Training outputs: ``{"audio": [B, D], "video": [B, D]}`` unnormalised two-tower embeddings
        and ``"cross": [B, B]`` cross-attention scores of every video (row) against every song
        of the batch (column), the keyword arguments of :class:`vcmr.losses.UTCMVMRLoss`
        (with the batch's song ids)."""
        a, am = self.audio_sequence(audio, rhythm, audio_mask)
        v, vm = self.video_sequence(video, motion, video_mask)
        out = {"audio": self.audio_proj(masked_mean(a, am)), "video": self.video_proj(masked_mean(v, vm))}
        if with_cross and len(self.cross) > 0:
            out["cross"] = self.cross_scores(v, vm, a, am)
        return out
