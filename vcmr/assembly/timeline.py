"""The timeline of a music video: which clip plays during which part of the song.

``timeline.json`` (written atomically beside the video) holds::

    {
      "format": "vcmr_timeline/1",
      "song": "<path>", "duration": <s>, "tempo": <bpm>, "n_shots": <int>,
      "beats": [<s>, ...], "downbeats": [<beat index>, ...], "beat_strength": [...],
      "video": "<mp4 path>", "fps": <int>, "library": "<path>", "model": {...},
      "settings": {<the resolved config>},
      "shots": [
        {"index", "start", "end" (s in the song), "beats" (beat indices inside),
         "frames" [first, end) output frames, "clip_row" (the clip's id in the library
         index), "clip_id" (the library's name of the clip), "video_id", "source" (file),
         "in_point", "out_point" (s in the source file), "score" (cosine similarity),
         "thumbnail" (path relative to the page, or null)}
      ]
    }
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from vcmr.utils import atomic_write_text

TIMELINE_FORMAT = "vcmr_timeline/1"


@dataclasses.dataclass
class TimelineShot:
    """One shot; times in seconds (``start``/``end`` in the song, ``in_point``/``out_point`` in the source)."""

    index: int
    start: float
    end: float
    beats: List[int]
    frames: List[int]
    clip_row: int
    clip_id: str
    video_id: str
    source: str
    in_point: float
    out_point: float
    score: float
    thumbnail: Optional[str] = None


@dataclasses.dataclass
class Timeline:
    """Everything needed to explain (or re-render) a music video."""

    song: str
    duration: float
    tempo: float
    beats: List[float]
    downbeats: List[int]
    beat_strength: List[float]
    shots: List[TimelineShot]
    video: str = ""
    fps: int = 0
    library: str = ""
    model: Dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_shots(self) -> int:
        return len(self.shots)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        shots = d.pop("shots")
        return {"format": TIMELINE_FORMAT, **d, "n_shots": self.n_shots, "shots": shots}


def write_timeline(path: str | os.PathLike, timeline: Timeline) -> Path:
    """Write ``timeline`` as JSON through a temporary file and a rename."""
    path = Path(path)
    atomic_write_text(path, json.dumps(timeline.to_dict(), indent=1) + "\n")
    return path


def read_timeline(path: str | os.PathLike) -> Timeline:
    """Read a ``timeline.json``.

    Raises:
        ValueError: not a timeline file (names the file and what is wrong).
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read timeline JSON: {exc}") from exc
    if d.get("format") != TIMELINE_FORMAT:
        raise ValueError(f"{path}: not a {TIMELINE_FORMAT} file (format={d.get('format')!r})")
    try:
        shots = [TimelineShot(**s) for s in d.pop("shots")]
        d.pop("format")
        d.pop("n_shots", None)
        return Timeline(**d, shots=shots)
    except TypeError as exc:
        raise ValueError(f"{path}: malformed timeline: {exc}") from exc
