"""Choose one library clip per shot, by what the music sounds like.

Rules (also in ``docs/music_video.md``):

* **Shot query.** The song is embedded once (:meth:`vcmr.retrieval.embedder.Embedder.embed_audio`)
  with windows of the model's input length every ``choose.hop`` seconds. A shot's query
  is the mean of the unit window embeddings weighted by the seconds each window overlaps
  the shot, normalised again; a shot that no window overlaps (impossible while windows
  cover the song) takes the window whose centre is nearest to its own.
* **Candidates.** The library's index returns the ``top_n`` clips with the highest cosine
  similarity to the query. A clip qualifies for a shot when
  (a) it lasts at least the shot (plus the crossfade), (b) it has not been used before in
  this video (unless ``allow_repeats``), (c) it does not come from the source video of the
  previous shot (when ``avoid_same_source``), and (d) it lies inside one scene of its
  source (``scene_start <= start`` and ``end <= scene_end``): clips never straddle a cut by
  construction of the library, and this is checked on its metadata. When none of the top
  ``top_n`` qualifies, the whole library is ranked for that shot.
* **Pick.** ``temperature == 0``: the best-scoring qualifying clip. ``temperature > 0``:
  sampled among the qualifying clips of the top ``top_n`` with probabilities
  ``softmax(score / temperature)``, from a generator seeded with ``seed`` (the same seed
  gives the same video).
* **Feasibility.** Before choosing, without repeats: the ``k``-th longest shot needs at
  least ``k`` clips that are long enough (one per shot, nested by length). Otherwise a
  :class:`ChoiceError` says how many clips are needed, how many qualify, and to pass
  ``choose.allow_repeats=true``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

SearchFn = Callable[[np.ndarray, int], Tuple[np.ndarray, np.ndarray]]


class ChoiceError(ValueError):
    """No clip can be chosen for a shot under the constraints (the message says why and what to change)."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """A library clip: ``[start, end)`` seconds of ``source`` inside scene ``scene`` spanning
    ``[scene_start, scene_end)``; ``clip_id`` is its row in the library's index, ``name`` the
    library's own id of the clip (e.g. ``<video>_c0003``)."""

    clip_id: int
    video_id: str
    source: str
    start: float
    end: float
    scene: int
    scene_start: float
    scene_end: float
    name: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def within_scene(self) -> bool:
        return self.scene_start - 1e-6 <= self.start and self.end <= self.scene_end + 1e-6


@dataclasses.dataclass(frozen=True)
class ChooseSettings:
    """The ``choose:`` config block.

    Attributes:
        hop: seconds between the song's embedding windows.
        top_n: candidates asked from the index per shot.
        temperature: 0 picks the best; > 0 samples ``softmax(score / temperature)``.
        allow_repeats: a clip may be used more than once.
        avoid_same_source: two consecutive shots never show the same source video.
        in_point: key of :data:`IN_POINT_RULES` (``best_window``, ``start``, ``middle``).
        seed: seed of the sampling generator.
    """

    hop: float
    top_n: int
    temperature: float
    allow_repeats: bool
    avoid_same_source: bool
    in_point: str
    seed: int

    @classmethod
    def from_config(cls, node, seed: int) -> "ChooseSettings":
        return cls(hop=float(node.hop), top_n=int(node.top_n), temperature=float(node.temperature),
                   allow_repeats=bool(node.allow_repeats), avoid_same_source=bool(node.avoid_same_source),
                   in_point=str(node.in_point), seed=int(seed))


@dataclasses.dataclass(frozen=True)
class Choice:
    """The clip chosen for a shot, its cosine ``score`` and its ``rank`` among the shot's candidates (0 = best)."""

    clip: Clip
    score: float
    rank: int


def shot_queries(
    windows: np.ndarray, starts: np.ndarray, ends: np.ndarray, shots: Sequence[Tuple[float, float]]
) -> np.ndarray:
    """Pool window embeddings into one query per shot (overlap-weighted cosine centroid).

    Args:
        windows: ``[W, D]`` unit window embeddings.
        starts: ``[W]`` window starts in seconds.
        ends: ``[W]`` window ends in seconds.
        shots: ``(start, end)`` seconds per shot.

    Returns:
        ``[n_shots, D]`` float32 unit vectors.
    """
    w = np.asarray(windows, np.float64)
    w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    centres = (np.asarray(starts) + np.asarray(ends)) / 2.0
    out = np.zeros((len(shots), w.shape[1]), np.float64)
    for i, (a, b) in enumerate(shots):
        overlap = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0.0, None)
        if overlap.sum() <= 0:
            overlap = np.zeros(len(w))
            overlap[int(np.argmin(np.abs(centres - (a + b) / 2.0)))] = 1.0
        m = (overlap[:, None] * w).sum(axis=0)
        out[i] = m / max(float(np.linalg.norm(m)), 1e-12)
    return out.astype(np.float32)


def check_feasible(durations: Sequence[float], clips: Sequence[Clip], s: ChooseSettings, extra: float = 0.0) -> None:
    """Raise :class:`ChoiceError` when the shots cannot all get a clip (see the module docstring)."""
    usable = np.sort([c.duration for c in clips if c.within_scene])[::-1]
    if usable.size == 0:
        raise ChoiceError(f"the library has no usable clip ({len(clips)} clips, none inside one scene)")
    need = np.sort(np.asarray(durations, np.float64) + extra)[::-1]
    longest = float(need[0])
    if usable[0] + 1e-9 < longest:
        raise ChoiceError(
            f"the longest shot needs a clip of {longest:.2f} s but the longest clip in the library lasts "
            f"{usable[0]:.2f} s; use shorter shots (beats.beats_per_shot) or a library with longer clips"
        )
    if s.allow_repeats:
        return
    for k, d in enumerate(need, start=1):
        have = int(np.sum(usable + 1e-9 >= d))
        if have < k:
            raise ChoiceError(
                f"too few clips for this song without repeats: {len(need)} shots need {len(need)} different clips; "
                f"{k} shots last {d:.2f} s or more but only {have} of the library's {len(clips)} clips are that long "
                f"(and {usable.size} usable in all). Pass choose.allow_repeats=true, use longer shots "
                "(beats.beats_per_shot) or a larger library"
            )


def _qualifies(c: Clip, need: float, used: set, prev_video: Optional[str], s: ChooseSettings) -> bool:
    if c.duration + 1e-9 < need or not c.within_scene:
        return False
    if not s.allow_repeats and c.clip_id in used:
        return False
    return not (s.avoid_same_source and prev_video is not None and c.video_id == prev_video)


def choose_clips(
    queries: np.ndarray,
    durations: Sequence[float],
    search: SearchFn,
    clips: Sequence[Clip],
    s: ChooseSettings,
    extra: float = 0.0,
) -> List[Choice]:
    """One clip per shot, in shot order (rules in the module docstring).

    Args:
        queries: ``[n_shots, D]`` unit shot queries.
        durations: seconds per shot.
        search: ``(queries [Q, D], k) -> (scores [Q, k] descending, ids [Q, k])`` over the clips;
            ``ids`` index ``clips``.
        clips: every clip of the library, ``clips[i].clip_id == i``.
        s: settings.
        extra: seconds a clip must last beyond its shot (the crossfade).

    Raises:
        ChoiceError: the constraints leave a shot without a clip.
    """
    if len(clips) == 0:
        raise ChoiceError("the clip library is empty")
    check_feasible(durations, clips, s, extra)
    rng = np.random.default_rng(s.seed)
    top = min(max(int(s.top_n), 1), len(clips))
    scores_all, ids_all = search(np.ascontiguousarray(queries, np.float32), top)
    used: set = set()
    prev: Optional[str] = None
    out: List[Choice] = []
    for i, d in enumerate(durations):
        need = float(d) + extra
        cand = [(float(sc), int(j)) for sc, j in zip(scores_all[i], ids_all[i])
                if j >= 0 and _qualifies(clips[int(j)], need, used, prev, s)]
        if not cand and top < len(clips):  # rank the whole library for this shot
            sc_full, id_full = search(np.ascontiguousarray(queries[i : i + 1], np.float32), len(clips))
            cand = [(float(sc), int(j)) for sc, j in zip(sc_full[0], id_full[0])
                    if j >= 0 and _qualifies(clips[int(j)], need, used, prev, s)]
        if not cand:
            raise ChoiceError(_why_none(i, need, clips, used, prev, s))
        if s.temperature > 0:
            sc = np.array([c[0] for c in cand], np.float64)
            p = np.exp((sc - sc.max()) / s.temperature)
            k = int(rng.choice(len(cand), p=p / p.sum()))
        else:
            k = 0
        score, cid = cand[k]
        rank = [int(j) for j in ids_all[i]].index(cid) if cid in ids_all[i] else -1
        out.append(Choice(clip=clips[cid], score=score, rank=rank))
        used.add(cid)
        prev = clips[cid].video_id
    return out


def _why_none(i: int, need: float, clips: Sequence[Clip], used: set, prev: Optional[str], s: ChooseSettings) -> str:
    long_enough = [c for c in clips if c.duration + 1e-9 >= need and c.within_scene]
    unused = [c for c in long_enough if s.allow_repeats or c.clip_id not in used]
    msg = (f"no clip qualifies for shot {i} ({need:.2f} s): {len(long_enough)} clips are long enough, "
           f"{len(unused)} of them not used yet")
    if unused and s.avoid_same_source:
        msg += (f", and all of those come from '{prev}', the source of the previous shot; "
                "pass choose.avoid_same_source=false or use a library with more source videos")
    else:
        msg += "; pass choose.allow_repeats=true or use a larger library"
    return msg


# --------------------------------------------------------------------------------------
# In-points: where inside the chosen clip the shot starts
# --------------------------------------------------------------------------------------

#: ``(clip, shot duration, shot query [D], window scorer) -> in-point (s in the source)``; the
#: scorer maps candidate in-points ``[K]`` to cosine scores ``[K]`` (``None`` where the
#: library has no per-second features).
InPointRule = Callable[[Clip, float, np.ndarray, Optional[Callable[[Clip, np.ndarray, float], np.ndarray]]], float]


def in_point_start(clip: Clip, duration: float, query: np.ndarray, scorer=None) -> float:
    """The clip's start."""
    return clip.start


def in_point_middle(clip: Clip, duration: float, query: np.ndarray, scorer=None) -> float:
    """The shot is centred in the clip."""
    return clip.start + max(clip.duration - duration, 0.0) / 2.0


def in_point_best_window(clip: Clip, duration: float, query: np.ndarray, scorer=None) -> float:
    """The whole-second offset whose video window best matches the shot's query.

    Candidate in-points are ``clip.start + k`` for whole seconds ``k`` with
    ``clip.start + k + duration <= clip.end``; each is scored by the scorer (the joint
    model's ``encode_video`` embedding of the clip's per-second features over the
    window, against the query). Without a scorer, or with a single candidate, the clip's
    start.
    """
    slack = clip.duration - duration
    n = int(np.floor(slack + 1e-6)) + 1
    if scorer is None or n <= 1:
        return clip.start
    cands = clip.start + np.arange(n, dtype=np.float64)
    scores = np.asarray(scorer(clip, cands, duration), np.float64)
    return float(cands[int(np.argmax(scores))])


#: In-point rules by name (``choose.in_point``).
IN_POINT_RULES: Dict[str, InPointRule] = {
    "best_window": in_point_best_window,
    "start": in_point_start,
    "middle": in_point_middle,
}
