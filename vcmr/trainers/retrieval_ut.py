"""The ``ut_cmvmr`` recipe of the retrieval trainer: rhythm- and motion-aware clip-sequence matching.

``python -m vcmr.scripts.train_retrieval model=ut_cmvmr`` runs :class:`UTCMVMRRecipe`
(registered in :data:`vcmr.trainers.retrieval.RECIPES`; it implements that module's recipe
interface without importing it, since that module imports this one):

1. **Features** (cached, extracted where missing): per-second audio content rows
   (``audio_features``, e.g. ``clip_audio``), per-second video content rows
   (``video_features``: ``frames`` = the builder's ``features/<id>.npy``, or a cache kind),
   per-clip ``rhythm`` and ``motion`` (:mod:`vcmr.preprocess.rhythm_motion`).
2. **Clips**: clip ``k`` of a video averages content rows ``[k * clip_seconds, (k + 1) *
   clip_seconds)`` and takes clip ``k`` of the rhythm and motion arrays. A video gives
   windows of up to ``max_clip`` consecutive clips (training: every ``train_hop`` clips;
   evaluation: the first window).
3. **Songs** (many-to-one): ``song_ids`` names a TSV file ``video_id<TAB>song_id`` (header
   line first; a relative path is read from ``data.root``); without it every video is its
   own song. Videos of one song are positives of each other's song in the loss.
4. **Unified target** (when ``tags`` names a tag file and ``pretrain.epochs > 0``): the
   clip encoders are first trained to predict the text embedding of each video's tags
   (:mod:`vcmr.models.text`; :class:`vcmr.losses.UnifiedTargetLoss`), then the matcher is
   trained on top (``pretrain.freeze`` keeps the clip encoders fixed). Tag file: TSV
   ``id<TAB>tags`` with a header line, ``id`` a video id, tags separated by ``;``
   (``timbre---saw`` style tags read "saw timbre").
5. **Matching**: :class:`vcmr.models.ut_cmvmr.UTCMVMR` with :class:`vcmr.losses.UTCMVMRLoss`.
6. **Evaluation**: the trainer's protocol (track level) on the two-tower embeddings of the
   validation videos, and the **music gallery** (many-to-one): every validation video is a
   query against one embedding per song of the dataset (the mean of the normalised audio
   embeddings of the song's videos, re-normalised), ranked with
   :func:`vcmr.metrics.retrieval.rank_in_gallery` (ties pessimistic); ``score: cross``
   ranks by the cross-attention scores instead. Written to
   ``<run>/evaluation/music_gallery.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vcmr.audio.rhythm import RhythmSettings, rhythm_tokens
from vcmr.config import ConfigError, to_container
from vcmr.data.feature_cache import load_features
from vcmr.losses import ManyToOneInfoNCE, UnifiedTargetLoss, UTCMVMRLoss
from vcmr.metrics.retrieval import chance_levels, rank_in_gallery, rank_summary
from vcmr.models.ut_cmvmr import UTCMVMR
from vcmr.trainers.base import StageModule, best_checkpoint, final_metrics, fit
from vcmr.utils import atomic_write_text, rank_zero_print
from vcmr.video.motion import MotionSettings, motion_tokens

#: ``video_features`` value meaning the builder's per-second frame features.
FRAMES = "frames"
#: ``score`` values of the music-gallery evaluation.
SCORES = ("two_tower", "cross")
#: ``select`` values: the weights evaluated after training.
SELECT = ("best", "last")


# --------------------------------------------------------------------------------------
# Configuration (``recipes.ut_cmvmr``)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class UTModelArgs:
    d_model: int = MISSING
    clip_hidden: int = MISSING
    n_heads: int = MISSING
    n_layers: int = MISSING
    ff_dim: int = MISSING
    cross_layers: int = MISSING
    embed_dim: int = MISSING
    dropout: float = MISSING


@dataclasses.dataclass
class UTLossArgs:
    temperature: float = MISSING
    cross_weight: float = MISSING
    cross_temperature: float = MISSING
    gather: bool = MISSING


@dataclasses.dataclass
class UTTextArgs:
    """``encoder``: a name of :data:`vcmr.models.text.TEXT_ENCODERS`; ``encoders``: their arguments."""

    encoder: str = MISSING
    encoders: Dict[str, Dict[str, Any]] = MISSING


@dataclasses.dataclass
class UTPretrainArgs:
    epochs: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    freeze: bool = MISSING


@dataclasses.dataclass
class UTArgs:
    """``recipes.ut_cmvmr`` (``config/retrieval/ut_cmvmr.yaml`` documents every key)."""

    audio_features: str = MISSING
    video_features: str = MISSING
    rhythm_features: str = MISSING
    motion_features: str = MISSING
    clip_seconds: int = MISSING
    max_clip: int = MISSING
    train_hop: int = MISSING
    add_rhythm: bool = MISSING
    add_motion: bool = MISSING
    standardize: bool = MISSING
    song_ids: Optional[str] = MISSING
    tags: Optional[str] = MISSING
    text: UTTextArgs = MISSING
    pretrain: UTPretrainArgs = MISSING
    model: UTModelArgs = MISSING
    loss: UTLossArgs = MISSING
    score: str = MISSING
    select: str = MISSING
    batch_size: int = MISSING
    optim: Dict[str, Any] = MISSING
    trainer: Dict[str, Any] = MISSING


def parse_args(args: Mapping[str, Any], where: str) -> UTArgs:
    """``args`` checked against :class:`UTArgs`; errors name ``where.<key>``."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(UTArgs), dict(args))
    except Exception as exc:  # omegaconf's validation errors
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{where}.{key}: {str(exc).splitlines()[0]}") from None
    missing = sorted(OmegaConf.missing_keys(node))
    if missing:
        raise ConfigError(f"{where}: required key(s) without a value: {', '.join(missing)}")
    out: UTArgs = OmegaConf.to_object(node)
    if out.score not in SCORES:
        raise ConfigError(f"{where}.score: must be one of {SCORES}, got '{out.score}'")
    if out.select not in SELECT:
        raise ConfigError(f"{where}.select: must be one of {SELECT}, got '{out.select}'")
    for name in ("clip_seconds", "max_clip", "train_hop", "batch_size"):
        if getattr(out, name) < 1:
            raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(out, name)}")
    return out


# --------------------------------------------------------------------------------------
# Files: song ids and tags
# --------------------------------------------------------------------------------------


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else root / p


def read_tsv_pairs(path: Path, what: str) -> Dict[str, str]:
    """A two-column TSV file with a header line -> ``{first column: second column}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line without two tab-separated columns, or a repeated id (file and line named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    out: Dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines()[1:], 2):
        if not line.strip():
            continue
        key, sep, value = line.partition("\t")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{path}:{lineno}: expected 'id<TAB>{what}', got {line!r}")
        if key.strip() in out:
            raise ValueError(f"{path}:{lineno}: id '{key.strip()}' appears twice")
        out[key.strip()] = value.strip()
    return out


def read_song_ids(path: Path) -> Dict[str, str]:
    """``video_id<TAB>song_id`` lines -> ``{video_id: song_id}``."""
    return read_tsv_pairs(path, "song_id")


def read_tags(path: Path) -> Dict[str, List[str]]:
    """``id<TAB>tag;tag;...`` lines -> ``{id: [tag, ...]}``."""
    return {k: [t.strip() for t in v.split(";") if t.strip()] for k, v in read_tsv_pairs(path, "tags").items()}


# --------------------------------------------------------------------------------------
# Clip sequences
# --------------------------------------------------------------------------------------


def clip_means(rows: np.ndarray, n_clips: int, clip_seconds: int) -> np.ndarray:
    """``[n_clips, F]``: clip ``k`` is the mean of per-second rows ``[k * c, (k + 1) * c)``."""
    return rows[: n_clips * clip_seconds].reshape(n_clips, clip_seconds, -1).mean(axis=1)


class ClipSequences(Dataset):
    """Windows of up to ``max_clip`` clips, one row per window.

    Attributes:
        audio: ``[N, C, Fa]`` float32 clip content (zeros past ``mask``).
        video: ``[N, C, Fv]`` float32.
        rhythm: ``[N, C, 3]`` int64 rhythm classes.
        motion: ``[N, C]`` int64 motion classes.
        mask: ``[N, C]`` bool, valid clips.
        song: ``[N]`` int64 index into ``song_names``.
        video_index: ``[N]`` int64 index into ``video_ids``.
        text: ``[N, T]`` float32 tag embeddings, or ``None``.
    """

    def __init__(self, audio, video, rhythm, motion, mask, song, video_index, video_ids, song_names, text=None):
        self.audio, self.video = audio.astype(np.float32), video.astype(np.float32)
        self.rhythm, self.motion = rhythm.astype(np.int64), motion.astype(np.int64)
        self.mask = mask.astype(bool)
        self.song, self.video_index = song.astype(np.int64), video_index.astype(np.int64)
        self.video_ids, self.song_names = list(video_ids), list(song_names)
        self.text = None if text is None else text.astype(np.float32)

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        item = {"audio": torch.from_numpy(self.audio[i]), "video": torch.from_numpy(self.video[i]),
                "rhythm": torch.from_numpy(self.rhythm[i]), "motion": torch.from_numpy(self.motion[i]),
                "mask": torch.from_numpy(self.mask[i]), "song": int(self.song[i]),
                "video_index": int(self.video_index[i])}
        if self.text is not None:
            item["text"] = torch.from_numpy(self.text[i])
        return item

    def subset(self, rows: np.ndarray) -> "ClipSequences":
        """The windows ``rows`` (e.g. those with tags)."""
        return ClipSequences(self.audio[rows], self.video[rows], self.rhythm[rows], self.motion[rows],
                             self.mask[rows], self.song[rows], self.video_index[rows], self.video_ids,
                             self.song_names, None if self.text is None else self.text[rows])


def build_sequences(
    audio_rows: Mapping[str, np.ndarray],
    video_rows: Mapping[str, np.ndarray],
    rhythm: Mapping[str, np.ndarray],
    motion: Mapping[str, np.ndarray],
    video_ids: Sequence[str],
    song_of: Mapping[str, str],
    song_names: Sequence[str],
    clip_seconds: int,
    max_clip: int,
    hop: Optional[int],
    text: Optional[Mapping[str, np.ndarray]] = None,
) -> ClipSequences:
    """Clip windows of ``video_ids`` (``hop=None``: the first window only).

    A video contributes ``n = min(len(rhythm), len(motion), seconds // clip_seconds)`` clips;
    a video with none is an error naming it.
    """
    song_index = {s: i for i, s in enumerate(song_names)}
    rows: Dict[str, list] = {k: [] for k in ("audio", "video", "rhythm", "motion", "mask", "song", "vi", "text")}
    for vi, vid in enumerate(video_ids):
        a, v = audio_rows[vid], video_rows[vid]
        seconds = min(len(a), len(v))
        n = min(len(rhythm[vid]), len(motion[vid]), seconds // clip_seconds)
        if n < 1:
            raise ValueError(f"video {vid}: no whole clip of {clip_seconds} s in its features")
        ca, cv = clip_means(a, n, clip_seconds), clip_means(v, n, clip_seconds)
        cr, cm = rhythm_tokens(rhythm[vid][:n]), motion_tokens(motion[vid][:n])
        starts = [0] if hop is None or n <= max_clip else list(range(0, n - max_clip + 1, hop))
        for s in starts:
            c = min(max_clip, n - s)
            pad = max_clip - c
            rows["audio"].append(np.pad(ca[s : s + c], ((0, pad), (0, 0))))
            rows["video"].append(np.pad(cv[s : s + c], ((0, pad), (0, 0))))
            rows["rhythm"].append(np.pad(cr[s : s + c], ((0, pad), (0, 0))))
            rows["motion"].append(np.pad(cm[s : s + c], (0, pad)))
            rows["mask"].append(np.arange(max_clip) < c)
            rows["song"].append(song_index[song_of[vid]])
            rows["vi"].append(vi)
            if text is not None:
                rows["text"].append(text[vid])
    return ClipSequences(
        np.stack(rows["audio"]), np.stack(rows["video"]), np.stack(rows["rhythm"]), np.stack(rows["motion"]),
        np.stack(rows["mask"]), np.array(rows["song"]), np.array(rows["vi"]), video_ids, song_names,
        np.stack(rows["text"]) if text is not None else None,
    )


class SequenceDataModule(pl.LightningDataModule):
    """Shuffled training batches (last partial batch dropped) and one validation batch of every window."""

    def __init__(self, train: ClipSequences, val: ClipSequences, batch_size: int, num_workers: int = 0):
        super().__init__()
        if len(train) < 2 or len(val) < 2:
            raise ValueError(f"need at least 2 training and 2 validation windows, got {len(train)} and {len(val)}")
        self.train_set, self.val_set = train, val
        self.batch_size = min(int(batch_size), len(train))
        self.num_workers = int(num_workers)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=len(self.val_set), shuffle=False, num_workers=self.num_workers)


# --------------------------------------------------------------------------------------
# Lightning modules: unified-target pretraining, matching
# --------------------------------------------------------------------------------------


def _inputs(batch: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    return {"audio": batch["audio"], "video": batch["video"], "rhythm": batch["rhythm"], "motion": batch["motion"],
            "audio_mask": batch["mask"], "video_mask": batch["mask"]}


class UnifiedTargetModule(StageModule):
    """Trains the clip encoders and text heads of a :class:`UTCMVMR` on tag embeddings."""

    def __init__(self, model: UTCMVMR, optim: Mapping[str, Any], seed: int):
        super().__init__(optim, seed)
        self.model = model
        self.loss = UnifiedTargetLoss()

    def param_groups(self) -> List[Dict[str, Any]]:
        parts = (self.model.audio_clip, self.model.video_clip, self.model.audio_text, self.model.video_text)
        return [{"params": [p for m in parts for p in m.parameters() if p.requires_grad]}]

    def _step(self, batch: Dict[str, Any], batch_idx: int, stage: str) -> Tensor:
        out = self.model.text_outputs(batch["audio"], batch["video"], batch["mask"], batch["mask"])
        parts = self.loss(**out, target=batch["text"])
        for key, value in parts.items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "loss", batch_size=batch["audio"].shape[0],
                     on_step=stage == "train", on_epoch=True)
        return parts["loss"]


def music_gallery_ranks(model: UTCMVMR, queries: ClipSequences, gallery: ClipSequences, score: str,
                        batch_size: int = 256) -> Tuple[Tensor, int]:
    """Ranks of each query video's song in a gallery of one embedding per song (many-to-one).

    Args:
        model: the matcher (eval mode).
        queries: one window per query video; ``song`` indexes ``gallery.song_names``.
        gallery: windows whose audio embeds the songs: a song's embedding is the mean of the
            normalised embeddings of its windows, re-normalised (``two_tower``), or its first
            window (``cross``).
        score: ``two_tower`` (inner products of unit embeddings) or ``cross`` (cross-attention scores).

    Returns:
        ``([Q]`` int64 ranks in ``1 .. G]``, ``G`` = number of songs with a window).
    """
    songs = np.unique(gallery.song)
    position = {int(s): i for i, s in enumerate(songs)}
    missing = sorted({gallery.song_names[s] for s in queries.song if int(s) not in position})
    if missing:
        raise ValueError(f"query songs without a gallery entry: {missing[:5]}")
    targets = torch.tensor([position[int(s)] for s in queries.song])

    def batches(ds: ClipSequences):
        for i in range(0, len(ds), batch_size):
            sl = slice(i, i + batch_size)
            yield (torch.from_numpy(ds.audio[sl]), torch.from_numpy(ds.video[sl]), torch.from_numpy(ds.rhythm[sl]),
                   torch.from_numpy(ds.motion[sl]), torch.from_numpy(ds.mask[sl]))

    with torch.no_grad():
        if score == "two_tower":
            za = torch.cat([model.encode_audio(a, r, m) for a, _, r, _, m in batches(gallery)]).double()
            zv = torch.cat([model.encode_video(v, mo, m) for _, v, _, mo, m in batches(queries)]).double()
            sums = torch.zeros(len(songs), za.shape[1], dtype=torch.float64)
            sums.index_add_(0, torch.tensor([position[int(s)] for s in gallery.song]), za)
            song_emb = torch.nn.functional.normalize(sums, dim=1)
            return rank_in_gallery(zv, song_emb, targets), len(songs)
        first = np.array([int(np.flatnonzero(gallery.song == s)[0]) for s in songs])
        g = gallery.subset(first)
        a_seq = [model.audio_sequence(a, r, m) for a, _, r, _, m in batches(g)]
        v_seq = [model.video_sequence(v, mo, m) for _, v, _, mo, m in batches(queries)]
        a, am = torch.cat([x for x, _ in a_seq]), torch.cat([m for _, m in a_seq])
        v, vm = torch.cat([x for x, _ in v_seq]), torch.cat([m for _, m in v_seq])
        scores = model.cross_scores(v, vm, a, am).double()
        return rank_in_gallery(scores, torch.eye(len(songs), dtype=torch.float64), targets), len(songs)


class UTMatchingModule(StageModule):
    """Wires the matcher and its loss; validation logs the retrieval of each validation video's
    own song (``val/a2v/*``, ``val/v2a/*``) and the music gallery of the validation songs
    (``val/music_gallery/*``)."""

    def __init__(self, model: UTCMVMR, loss: UTCMVMRLoss, optim: Mapping[str, Any], ks: Sequence[int], seed: int):
        super().__init__(optim, seed)
        self.model = model
        self.loss = loss
        self.ks = [int(k) for k in ks]
        self._val: List[Dict[str, Tensor]] = []

    def _step(self, batch: Dict[str, Any], batch_idx: int, stage: str) -> Tensor:
        out = self.model(**_inputs(batch), with_cross=self.loss.cross_weight > 0)
        parts = self.loss(**out, song=batch["song"])
        n = batch["audio"].shape[0]
        for key, value in parts.items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "loss", batch_size=n, on_step=stage == "train",
                     on_epoch=True)
        if stage == "val":
            self._val.append({"audio": out["audio"].detach(), "video": out["video"].detach(), "song": batch["song"]})
        return parts["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def on_validation_epoch_end(self) -> None:
        from vcmr.metrics.retrieval import cross_modal_retrieval

        if not self._val:
            return
        a = torch.nn.functional.normalize(torch.cat([x["audio"] for x in self._val]).float(), dim=1)
        v = torch.nn.functional.normalize(torch.cat([x["video"] for x in self._val]).float(), dim=1)
        song = torch.cat([x["song"] for x in self._val])
        for key, value in cross_modal_retrieval(a, v, ks=self.ks).items():
            self.log(f"val/{key}", float(value), prog_bar=key == "v2a/R@1")
        songs, inverse = torch.unique(song, return_inverse=True)
        sums = torch.zeros(len(songs), a.shape[1], device=a.device).index_add_(0, inverse, a)
        ranks = rank_in_gallery(v, torch.nn.functional.normalize(sums, dim=1), inverse)
        for key, value in rank_summary(ranks, self.ks).items():
            self.log(f"val/music_gallery/{key}", float(value), prog_bar=key == "R@1")
        self._val = []


# --------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class UTResult:
    """What the trainer reads off a recipe's run (``vcmr.trainers.retrieval.RecipeResult``'s fields)
    plus the music-gallery scores."""

    embedded: Any
    export: Optional[str]
    checkpoint: Optional[str]
    metrics: Dict[str, float]
    counts: Dict[str, int]
    music_gallery: Dict[str, Any]


class UTCMVMRRecipe:
    """The ``ut_cmvmr`` entry of :data:`vcmr.trainers.retrieval.RECIPES` (module docstring)."""

    #: Protocol levels that apply: one embedding pair per video.
    levels: Tuple[str, ...] = ("track",)
    Args: Type = UTArgs

    def __init__(self, name: str, args: Mapping[str, Any], cfg: DictConfig) -> None:
        self.name = name
        self.args = parse_args(args, f"recipes.{name}")
        self.cfg = cfg

    # ---- features ---------------------------------------------------------------------------

    def feature_kinds(self) -> List[str]:
        a = self.args
        kinds = [a.audio_features, a.rhythm_features, a.motion_features]
        return kinds + ([a.video_features] if a.video_features != FRAMES else [])

    def _block(self, kind: str) -> Dict[str, Any]:
        if kind not in self.cfg.features:
            raise ConfigError(f"features.{kind}: no argument block for the '{kind}' features recipe '{self.name}' reads")
        return to_container(self.cfg.features[kind])

    def token_classes(self) -> Tuple[List[int], int]:
        """Rhythm and motion class counts of the configured feature settings (clip lengths checked)."""
        rb, mb = self._block(self.args.rhythm_features), self._block(self.args.motion_features)
        rs = RhythmSettings.from_config(rb)
        ms = MotionSettings.from_config({f.name: mb.get(f.name) for f in dataclasses.fields(MotionSettings)})
        for kind, clip in ((self.args.rhythm_features, rs.clip_seconds), (self.args.motion_features, ms.clip_seconds)):
            if float(clip) != float(self.args.clip_seconds):
                raise ConfigError(f"features.{kind}.clip_seconds ({clip}) differs from recipes.{self.name}."
                                  f"clip_seconds ({self.args.clip_seconds})")
        return list(rs.n_classes), int(ms.bins)

    def ensure_features(self, root: Path, video_ids: Sequence[str], progress: bool) -> Dict[str, str]:
        """Extract the missing cached features; ``{video_id: reason}`` of failures."""
        from vcmr.preprocess.features import extract_features

        failed: Dict[str, str] = {}
        for kind in self.feature_kinds():
            summary = extract_features(root, kind, self._block(kind), progress=progress, video_ids=list(video_ids))
            if summary.done or summary.failures:
                rank_zero_print(summary)
            failed.update({vid: f"{kind}: {why}" for vid, why in summary.failures.items()})
        return failed

    def _rows(self, root: Path, records: Mapping[str, Any], ids: Sequence[str]) -> Tuple[Dict, Dict, Dict, Dict]:
        a = self.args
        audio = load_features(root, a.audio_features, ids)
        if a.video_features == FRAMES:
            video = {}
            for vid in ids:
                path = root / records[vid].feature_path
                if not records[vid].feature_path or not path.is_file():
                    raise FileNotFoundError(f"{path}: frame features of {vid} listed in the manifest are missing")
                video[vid] = np.load(path).astype(np.float32)
        else:
            video = load_features(root, a.video_features, ids)
        rhythm = load_features(root, a.rhythm_features, ids)
        motion = load_features(root, a.motion_features, ids)
        for kind, arrays in ((a.audio_features, audio), (a.video_features, video)):
            bad = [vid for vid, x in arrays.items() if x.ndim != 2]
            if bad:
                raise ValueError(f"'{kind}' features must be per-second rows [seconds, F]; {bad[0]} has shape "
                                 f"{arrays[bad[0]].shape}")
        return audio, video, rhythm, motion

    # ---- songs and tags ---------------------------------------------------------------------

    def songs(self, root: Path, ids: Sequence[str]) -> Dict[str, str]:
        """``{video_id: song_id}`` (every video its own song without a ``song_ids`` file)."""
        if self.args.song_ids is None:
            return {v: v for v in ids}
        path = _resolve(root, self.args.song_ids)
        table = read_song_ids(path)
        missing = [v for v in ids if v not in table]
        if missing:
            raise ValueError(f"{path}: no song id for {len(missing)} video(s), e.g. {missing[:5]}")
        return {v: table[v] for v in ids}

    def text_targets(self, root: Path, ids: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
        """``{video_id: tag embedding}`` of the videos with tags, or ``None`` (no unified target)."""
        from vcmr.models.text import build_text_encoder, encode_tags

        a = self.args
        if a.tags is None or a.pretrain.epochs < 1:
            return None
        path = _resolve(root, a.tags)
        tags = read_tags(path)
        have = [v for v in ids if tags.get(v)]
        if not have:
            raise ValueError(f"{path}: none of the {len(ids)} videos has tags")
        if a.text.encoder not in a.text.encoders:
            raise ConfigError(f"recipes.{self.name}.text.encoders: no block for encoder '{a.text.encoder}'")
        encoder = build_text_encoder(a.text.encoder, a.text.encoders[a.text.encoder])
        emb = encode_tags(encoder, [tags[v] for v in have])
        return {v: emb[i] for i, v in enumerate(have)}

    # ---- model ------------------------------------------------------------------------------

    def build_model(self, train: ClipSequences, text_dim: int) -> UTCMVMR:
        a, m = self.args, self.args.model
        rhythm_classes, motion_classes = self.token_classes()
        model = UTCMVMR(
            audio_dim=train.audio.shape[-1], video_dim=train.video.shape[-1], d_model=m.d_model,
            clip_hidden=m.clip_hidden, n_heads=m.n_heads, n_layers=m.n_layers, ff_dim=m.ff_dim,
            cross_layers=m.cross_layers, embed_dim=m.embed_dim, max_clip=a.max_clip, dropout=m.dropout,
            add_rhythm=a.add_rhythm, add_motion=a.add_motion, rhythm_classes=rhythm_classes,
            motion_classes=motion_classes, text_dim=text_dim,
        )
        if a.standardize:
            stats = []
            for x in (train.audio, train.video):
                rows = x[train.mask].astype(np.float64)
                stats += [torch.from_numpy(rows.mean(0)).float(), torch.from_numpy(rows.std(0) + 1e-6).float()]
            model.set_input_stats(*stats)
        return model

    def build_loss(self) -> UTCMVMRLoss:
        lc = self.args.loss
        return UTCMVMRLoss(ManyToOneInfoNCE(lc.temperature, lc.gather), lc.cross_weight, lc.cross_temperature)

    # ---- run --------------------------------------------------------------------------------

    def pretrain(self, ctx: Any, model: UTCMVMR, train: ClipSequences, val: ClipSequences) -> Dict[str, float]:
        """Unified-target pretraining of the clip encoders on the windows with tags."""
        a = self.args.pretrain
        tr, va = train, val
        cfg = OmegaConf.merge(ctx.cfg, {
            "trainer": {"max_epochs": int(a.epochs), "max_steps": -1},
            "optim": {"lr": float(a.lr)},
            "callbacks": {"checkpoint": {"monitor": "val/loss", "mode": "min"}, "early_stopping": None},
        })
        module = UnifiedTargetModule(model, to_container(cfg.optim), int(ctx.cfg.seed))
        dm = SequenceDataModule(tr, va, int(a.batch_size), int(ctx.cfg.data.num_workers))
        trainer = fit(cfg, module, dm, Path(ctx.run_dir) / "pretrain", None)
        if self.args.pretrain.freeze:
            for part in (model.audio_clip, model.video_clip):
                part.requires_grad_(False)
        return {f"pretrain/{k}": v for k, v in final_metrics(trainer).items()}

    def run(self, ctx: Any) -> UTResult:
        from vcmr.models.export import save_spec_model

        a = self.args
        root = Path(ctx.root)
        failed = self.ensure_features(root, list(ctx.train_ids) + list(ctx.val_ids), bool(ctx.cfg.progress))
        train_ids = [v for v in ctx.train_ids if v not in failed]
        val_ids = [v for v in ctx.val_ids if v not in failed]
        ids = train_ids + val_ids
        song_of = self.songs(root, ids)
        song_names = sorted(set(song_of.values()))
        audio, video, rhythm, motion = self._rows(root, ctx.records, ids)
        text = self.text_targets(root, ids)

        def seqs(which: Sequence[str], hop: Optional[int], with_text: bool) -> ClipSequences:
            t = None
            if with_text and text is not None:
                which = [v for v in which if v in text]
                t = text
            return build_sequences(audio, video, rhythm, motion, which, song_of, song_names, a.clip_seconds,
                                   a.max_clip, hop, t)

        train = seqs(train_ids, a.train_hop, False)
        val = seqs(val_ids, None, False)
        gallery = seqs(ids, None, False)  # one window per video of the dataset: the songs' audio
        text_dim = next(iter(text.values())).shape[0] if text else 0
        counts = {"train_videos": len(train_ids), "val_videos": len(val_ids), "train_windows": len(train),
                  "val_windows": len(val), "songs": len(song_names), "feature_failures": len(failed),
                  "tagged_videos": len(text) if text else 0}
        rank_zero_print(f"Recipe '{self.name}': {counts}" + (f"; left out: {failed}" if failed else ""))
        model = self.build_model(train, text_dim)
        metrics: Dict[str, float] = {}
        if text is not None:
            tagged_val = [v for v in val_ids if v in text]
            if len(tagged_val) < 2:
                raise ValueError(f"recipes.{self.name}.tags: {len(tagged_val)} validation video(s) have tags; "
                                 "the unified-target pretraining needs at least 2 (or set pretrain.epochs=0)")
            metrics.update(self.pretrain(ctx, model, seqs(train_ids, a.train_hop, True), seqs(val_ids, None, True)))
        module = UTMatchingModule(model, self.build_loss(), to_container(ctx.cfg.optim), list(ctx.cfg.protocol.ks),
                                  int(ctx.cfg.seed))
        dm = SequenceDataModule(train, val, a.batch_size, int(ctx.cfg.data.num_workers))
        trainer = fit(ctx.cfg, module, dm, Path(ctx.run_dir), ctx.ckpt_path)
        best = best_checkpoint(trainer)
        metrics.update(final_metrics(trainer))
        if a.select == "best" and best:
            module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        model = module.model.eval()
        export = None
        if trainer.is_global_zero:
            extra = {"recipe": self.name, "stage": "retrieval", "run_dir": str(ctx.run_dir),
                     "clip_seconds": a.clip_seconds, "song_ids": a.song_ids, "tags": a.tags,
                     "features": {k: self._block(k) for k in self.feature_kinds()}}
            export = str(save_spec_model(Path(ctx.run_dir) / "export" / "model.safetensors", model, extra))
        gallery_scores = self.evaluate_gallery(model, val, gallery, list(ctx.cfg.protocol.ks))
        gallery_scores["weights"] = a.select if (a.select == "last" or not best) else "best"
        out = Path(ctx.run_dir) / "evaluation" / "music_gallery.json"
        atomic_write_text(out, json.dumps(gallery_scores, indent=1))
        rank_zero_print(format_gallery(gallery_scores))
        metrics.update({f"music_gallery/{k}": float(v) for k, v in gallery_scores[a.score].items()})
        return UTResult(self.embed(model, val), export, best, metrics, counts, gallery_scores)

    def evaluate_gallery(self, model: UTCMVMR, val: ClipSequences, gallery: ClipSequences,
                         ks: Sequence[int]) -> Dict[str, Any]:
        """Music-gallery scores of the validation videos, both scorings, with chance levels."""
        out: Dict[str, Any] = {"n_queries": len(val), "query_ids": list(val.video_ids)}
        for score in SCORES:
            if score == "cross" and len(model.cross) == 0:
                continue
            ranks, n_songs = music_gallery_ranks(model, val, gallery, score)
            out[score] = rank_summary(ranks, ks)
            out["n_songs"] = n_songs
            out["chance"] = chance_levels(n_songs, ks)
        return out

    @torch.no_grad()
    def embed(self, model: UTCMVMR, val: ClipSequences) -> Any:
        """One two-tower (song, video) pair per validation video -> ``EmbeddedSet``."""
        from vcmr.evaluation.retrieval import EmbeddedSet

        t = {k: torch.from_numpy(getattr(val, k)) for k in ("audio", "video", "rhythm", "motion", "mask")}
        za = model.encode_audio(t["audio"], t["rhythm"], t["mask"]).float().numpy()
        zv = model.encode_video(t["video"], t["motion"], t["mask"]).float().numpy()
        return EmbeddedSet(za, zv, val.video_index.copy(), list(val.video_ids))


def format_gallery(scores: Mapping[str, Any]) -> str:
    """A small table of the music-gallery scores."""
    ks = [k for k in scores["chance"] if k.startswith("R@")]
    head = f"{'score':<10}" + "".join(f"{k:>8}" for k in ks) + f"{'medR':>8}"
    lines = [f"Music gallery (many-to-one): {scores['n_queries']} video queries, {scores['n_songs']} songs", head]
    for name in (*SCORES, "chance"):
        if name in scores:
            row = scores[name]
            lines.append(f"{name:<10}" + "".join(f"{row[k]:8.3f}" for k in ks) + f"{row['median_rank']:8.1f}")
    return "\n".join(lines)


__all__ = [
    "ClipSequences", "SequenceDataModule", "UTArgs", "UTCMVMRRecipe", "UTMatchingModule", "UTResult",
    "UnifiedTargetModule", "build_sequences", "clip_means", "format_gallery", "music_gallery_ranks",
    "parse_args", "read_song_ids", "read_tags",
]
