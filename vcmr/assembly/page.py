"""A self-contained HTML page for a music video: the video, the song's waveform with beat
marks and shot boundaries, and under it the chosen clips as a strip of thumbnails.

Everything is inline (SVG waveform, CSS, a few lines of script) except the video and the
thumbnails, which are referenced by paths relative to the page, so the folder can be
moved or served as is. Clicking a thumbnail plays the video from that shot; a playhead
follows the video over the waveform.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from vcmr.assembly.timeline import Timeline
from vcmr.utils import atomic_write_text


@dataclasses.dataclass(frozen=True)
class PageSettings:
    """Layout of the page (the ``page:`` config block).

    Attributes:
        px_per_second: horizontal scale of the waveform and the strip.
        waveform_height: waveform height in pixels.
        strip_height: thumbnail strip height in pixels.
        min_width: narrowest timeline in pixels (short songs are stretched to it).
    """

    px_per_second: float
    waveform_height: int
    strip_height: int
    min_width: int

    @classmethod
    def from_config(cls, node) -> "PageSettings":
        return cls(**{f.name: getattr(node, f.name) for f in dataclasses.fields(cls)})


def waveform_peaks(y: np.ndarray, n_columns: int) -> np.ndarray:
    """``[n_columns, 2]`` (min, max) of ``y`` over ``n_columns`` equal spans."""
    n_columns = max(1, int(n_columns))
    edges = np.linspace(0, y.size, n_columns + 1).astype(np.int64)
    out = np.zeros((n_columns, 2), np.float32)
    for i in range(n_columns):
        seg = y[edges[i] : max(edges[i + 1], edges[i] + 1)]
        if seg.size:
            out[i] = (seg.min(), seg.max())
    return out


def _waveform_svg(peaks: np.ndarray, tl: Timeline, width: int, height: int) -> str:
    mid = height / 2.0
    scale = (height / 2.0 - 2) / max(float(np.abs(peaks).max()), 1e-6)
    xs = np.arange(peaks.shape[0]) + 0.5
    top = " ".join(f"{x:.1f},{mid - p * scale:.1f}" for x, p in zip(xs, peaks[:, 1]))
    bottom = " ".join(f"{x:.1f},{mid - p * scale:.1f}" for x, p in zip(xs[::-1], peaks[::-1, 0]))
    sx = width / tl.duration
    down = set(tl.downbeats)
    marks = []
    for i, t in enumerate(tl.beats):
        x = t * sx
        cls = "down" if i in down else "beat"
        marks.append(f'<line class="{cls}" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}"/>')
    for sh in tl.shots[1:]:
        x = sh.start * sx
        marks.append(f'<line class="cut" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}"/>')
    return (
        f'<svg class="wave" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><rect width="{width}" height="{height}" class="bg"/>'
        f'<polygon class="env" points="{top} {bottom}"/>{"".join(marks)}'
        f'<line id="playhead" x1="0" x2="0" y1="0" y2="{height}"/></svg>'
    )


def _fmt_time(t: float) -> str:
    m, s = divmod(t, 60.0)
    return f"{int(m)}:{s:05.2f}"


def render_page(
    tl: Timeline, y: np.ndarray, video_rel: str, thumbs_rel: List[Optional[str]], s: PageSettings, title: str,
    poster_rel: Optional[str] = None,
) -> str:
    """The page's HTML.

    Args:
        tl: the timeline.
        y: ``[N]`` mono waveform of the whole song (any rate).
        video_rel: the mp4's path relative to the page.
        thumbs_rel: per shot, the thumbnail's path relative to the page (or ``None``).
        s: layout.
        title: page title.
        poster_rel: the video's poster image relative to the page (default: the first thumbnail).
    """
    width = int(max(s.min_width, round(tl.duration * s.px_per_second)))
    peaks = waveform_peaks(y, width)
    svg = _waveform_svg(peaks, tl, width, s.waveform_height)
    sx = width / tl.duration
    tiles = []
    for sh, th in zip(tl.shots, thumbs_rel):
        left, w = sh.start * sx, (sh.end - sh.start) * sx
        tip = html.escape(
            f"shot {sh.index}: {_fmt_time(sh.start)}-{_fmt_time(sh.end)} | clip {sh.clip_id} (row {sh.clip_row}) "
            f"{sh.in_point:.2f}-{sh.out_point:.2f} s of {Path(sh.source).name} | score {sh.score:.3f}"
        )
        img = f'<img src="{html.escape(th)}" alt="shot {sh.index}">' if th else ""
        tiles.append(
            f'<div class="tile" style="left:{left:.1f}px;width:{max(w - 1, 1):.1f}px" title="{tip}" '
            f'onclick="seek({sh.start:.3f})">{img}<span>{sh.index}</span></div>'
        )
    rows = "".join(
        f"<tr onclick=\"seek({sh.start:.3f})\"><td>{sh.index}</td><td>{_fmt_time(sh.start)}</td>"
        f"<td>{sh.end - sh.start:.2f}</td><td>{len(sh.beats)}</td><td>{sh.clip_id}</td>"
        f"<td>{html.escape(sh.video_id)}</td><td>{html.escape(Path(sh.source).name)}</td>"
        f"<td>{sh.in_point:.2f}&ndash;{sh.out_point:.2f}</td><td>{sh.score:.3f}</td></tr>"
        for sh in tl.shots
    )
    h = html.escape
    first = poster_rel or (thumbs_rel[0] if thumbs_rel else None)
    poster = f' poster="{h(first)}"' if first else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{h(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 20px; background: #111; color: #ddd; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} .facts {{ color: #999; margin-bottom: 12px; }}
video {{ width: 100%; max-width: 960px; max-height: 60vh; background: #000; display: block; margin-bottom: 14px; }}
.timeline {{ overflow-x: auto; border: 1px solid #333; background: #181818; }}
.inner {{ position: relative; width: {width}px; }}
.wave .bg {{ fill: #1d1d1d; }} .wave .env {{ fill: #4f8fd6; }}
.wave .beat {{ stroke: #888; stroke-width: 0.6; opacity: 0.5; }}
.wave .down {{ stroke: #ddd; stroke-width: 1; opacity: 0.8; }}
.wave .cut {{ stroke: #ff5a36; stroke-width: 2; }}
#playhead {{ stroke: #ffe066; stroke-width: 2; }}
.strip {{ position: relative; height: {s.strip_height}px; margin-top: 2px; }}
.tile {{ position: absolute; top: 0; height: 100%; overflow: hidden; cursor: pointer; background: #333;
        border-left: 2px solid #ff5a36; box-sizing: border-box; }}
.tile img {{ height: 100%; width: 100%; object-fit: cover; display: block; }}
.tile span {{ position: absolute; left: 2px; bottom: 1px; font-size: 10px; color: #fff;
             text-shadow: 0 0 3px #000; }}
.legend {{ margin: 6px 0 16px; color: #999; font-size: 12px; }}
.legend b {{ display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin: 0 4px 0 10px; }}
table {{ border-collapse: collapse; font-size: 12px; }} td, th {{ padding: 2px 8px; text-align: right; }}
th {{ color: #aaa; border-bottom: 1px solid #444; }} tr:hover td {{ background: #2a2a2a; cursor: pointer; }}
</style></head><body>
<h1>{h(title)}</h1>
<div class="facts">{h(Path(tl.song).name)} &middot; {_fmt_time(tl.duration)} &middot; {tl.tempo:.1f} BPM &middot;
{len(tl.beats)} beats &middot; {tl.n_shots} shots &middot; {h(Path(tl.library).name)}</div>
<video id="v" controls preload="metadata"{poster} src="{h(video_rel)}"></video>
<div class="timeline"><div class="inner">{svg}<div class="strip">{"".join(tiles)}</div></div></div>
<div class="legend"><b style="background:#888"></b>beat<b style="background:#ddd"></b>downbeat
<b style="background:#ff5a36"></b>cut (shot boundary)<b style="background:#ffe066"></b>playhead
&mdash; click a thumbnail or a row to play from that shot</div>
<table><tr><th>shot</th><th>start</th><th>length s</th><th>beats</th><th>clip</th><th>video</th><th>source</th>
<th>in&ndash;out s</th><th>score</th></tr>{rows}</table>
<script>
const v = document.getElementById("v"), ph = document.getElementById("playhead"), k = {sx:.6f};
function seek(t) {{ v.currentTime = t; v.play(); }}
v.addEventListener("timeupdate", () => {{ const x = v.currentTime * k; ph.setAttribute("x1", x); ph.setAttribute("x2", x); }});
</script>
</body></html>
"""


def write_page(
    path: str | os.PathLike, tl: Timeline, y: np.ndarray, video: str | os.PathLike,
    thumbnails: List[Optional[Path]], s: PageSettings, title: str, poster: Optional[Path] = None,
) -> Path:
    """Write the page atomically; ``video`` and ``thumbnails`` are made relative to its folder."""
    path = Path(path)
    base = path.parent.resolve()

    def rel(p: Optional[Path | str]) -> Optional[str]:
        return None if p is None else Path(os.path.relpath(Path(p).resolve(), base)).as_posix()

    atomic_write_text(path, render_page(tl, y, rel(video), [rel(t) for t in thumbnails], s, title, rel(poster)))
    return path
