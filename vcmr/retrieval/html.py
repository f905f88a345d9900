"""A self-contained HTML page for a search result: the query, then the nearest and farthest items.

The page uses inline CSS and a few lines of inline JavaScript, makes no external request
and refers to media by relative paths only: everything it shows sits in a folder next to
it (``<page stem>_files/``): the query, the source videos (or songs) of the results, and
the clip thumbnails. Sources are symbolic links by default (``media="link"``: no copy of
large videos) or copies (``media="copy"``: a folder that can be moved or zipped);
thumbnails are always copied.

A clip card shows its thumbnail, score and span; clicking it plays the source video from
the clip's start to its end (``src="...mp4#t=start,end"``, plus a seek for browsers that
ignore media fragments). Per-window rows link each thumbnail to the same span and play
the query window from its start.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import quote

from vcmr.utils import atomic_path, atomic_write_text

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

CSS = """
:root { --fg:#1d1f24; --muted:#5d6470; --line:#dfe3ea; --bg:#f6f7f9; --card:#fff; --near:#1f7a4d; --far:#a23b2a; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 20px 32px 12px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 22px; }
h2 { margin: 0 0 12px; font-size: 17px; }
h2 small { font-weight: normal; color: var(--muted); }
.meta { margin: 0; color: var(--muted); font-size: 13px; }
main { padding: 16px 32px 40px; max-width: 1400px; }
section { margin: 18px 0 26px; }
.query { display: flex; gap: 18px; align-items: center; flex-wrap: wrap; background: var(--card);
         border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; }
.query audio { width: 420px; max-width: 100%; }
.query video { width: 320px; max-width: 100%; border-radius: 6px; background: #000; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
.card .media { position: relative; aspect-ratio: 16 / 10; background: #111; cursor: pointer; }
.card img, .card video { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
.card video { display: none; }
.card.playing video { display: block; }
.card.playing img, .card.playing .play { display: none; }
.play { position: absolute; right: 8px; bottom: 8px; width: 30px; height: 30px; border-radius: 50%;
        background: rgba(0,0,0,.55); color: #fff; font-size: 13px; line-height: 30px; text-align: center; }
.rank { position: absolute; left: 8px; top: 8px; background: rgba(0,0,0,.6); color: #fff; font-size: 12px;
        padding: 1px 7px; border-radius: 10px; }
.info { padding: 8px 10px 10px; font-size: 13px; }
.info .name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.info .span { color: var(--muted); }
.score { display: flex; align-items: center; gap: 8px; margin-top: 6px; font-variant-numeric: tabular-nums; }
.bar { flex: 1; height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; }
.bar i { display: block; height: 100%; }
.near .bar i { background: var(--near); }
.far .bar i { background: var(--far); }
.songs .card { display: flex; flex-direction: column; }
.songs audio { width: 100%; margin-top: 6px; }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: middle; font-size: 13px; }
th { color: var(--muted); font-weight: 600; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
.strip { display: flex; gap: 6px; flex-wrap: wrap; }
.strip a { display: block; text-decoration: none; color: var(--fg); text-align: center; font-size: 11px; }
.strip img { display: block; width: 64px; height: 40px; object-fit: cover; border-radius: 4px; background: #111; }
.strip span.s { display: inline-block; padding: 2px 6px; border-radius: 4px; background: var(--bg); }
button.seek { border: 1px solid var(--line); background: var(--card); border-radius: 4px; cursor: pointer; padding: 2px 8px; }
"""

JS = """
document.querySelectorAll('.card[data-start]').forEach(function (card) {
  var v = card.querySelector('video'), s = parseFloat(card.dataset.start), e = parseFloat(card.dataset.end);
  card.querySelector('.media').addEventListener('click', function () {
    if (card.classList.contains('playing')) return;
    card.classList.add('playing');
    v.currentTime = s; v.play();
  });
  v.addEventListener('timeupdate', function () { if (v.currentTime >= e) { v.pause(); } });
});
document.querySelectorAll('button.seek').forEach(function (b) {
  b.addEventListener('click', function () {
    var q = document.getElementById('query'); q.currentTime = parseFloat(b.dataset.t); q.play();
  });
});
"""


class _Media:
    """Files referenced by the page, placed in ``<page dir>/<folder>/`` (each source once)."""

    def __init__(self, page: Path, mode: str) -> None:
        if mode not in ("link", "copy"):
            raise ValueError(f"html media mode must be 'link' or 'copy', got {mode!r}")
        self.page_dir = page.parent
        self.folder = f"{page.stem}_files"
        self.mode = mode
        self.names: Dict[str, str] = {}
        (self.page_dir / self.folder).mkdir(parents=True, exist_ok=True)

    def add(self, src: str | os.PathLike, name: str, always_copy: bool = False) -> str:
        """Place ``src`` as ``name`` (once per source) and return its page-relative URL."""
        src = Path(src).resolve()
        key = str(src)
        if key not in self.names:
            stem, suffix = Path(name).stem, Path(name).suffix
            safe = _SAFE.sub("_", stem).strip("._") or "media"
            taken = set(self.names.values())
            candidate, n = f"{safe}{suffix}", 1
            while candidate in taken:
                candidate, n = f"{safe}_{n}{suffix}", n + 1
            dst = self.page_dir / self.folder / candidate
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            if self.mode == "copy" or always_copy:
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
            else:
                os.symlink(src, dst)
            self.names[key] = candidate
        return f"{quote(self.folder)}/{quote(self.names[key])}"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _score(score: float, side: str) -> str:
    pct = max(0.0, min(100.0, (float(score) + 1.0) * 50.0))
    return f'<div class="score {side}"><span>{score:+.3f}</span><div class="bar"><i style="width:{pct:.1f}%"></i></div></div>'


def _clip_card(hit: Mapping[str, Any], media: _Media, side: str) -> str:
    src = media.add(hit["source"], f"{hit['video_id']}{Path(hit['source']).suffix}")
    thumb = media.add(hit["thumb"], f"thumbs/{Path(hit['thumb']).name}", always_copy=True)
    a, b = float(hit["start"]), float(hit["end"])
    return (
        f'<div class="card {side}" data-start="{a:.3f}" data-end="{b:.3f}">'
        f'<div class="media" title="play {a:.1f}-{b:.1f} s">'
        f'<img src="{thumb}" alt="{_e(hit["clip_id"])}" loading="lazy">'
        f'<video controls preload="none" src="{src}#t={a:.3f},{b:.3f}"></video>'
        f'<span class="rank">#{hit["rank"]}</span><span class="play">&#9654;</span></div>'
        f'<div class="info"><div class="name" title="{_e(hit["source"])}">{_e(hit["video_id"])}</div>'
        f'<div class="span">{a:.1f}&ndash;{b:.1f} s &middot; scene {int(hit["scene"])}</div>'
        f'{_score(hit["score"], side)}</div></div>'
    )


def _song_card(hit: Mapping[str, Any], media: _Media, side: str) -> str:
    src = media.add(hit["source"], f"{hit['song_id']}{Path(hit['source']).suffix}")
    return (
        f'<div class="card {side}"><div class="info"><div class="name" title="{_e(hit["source"])}">'
        f'#{hit["rank"]} {_e(hit["song_id"])}</div><div class="span">{float(hit["duration"]):.1f} s</div>'
        f'{_score(hit["score"], side)}<audio controls preload="none" src="{src}"></audio></div></div>'
    )


def _strip(hits: List[Mapping[str, Any]], media: _Media) -> str:
    cells = []
    for h in hits:
        if "clip_id" in h:
            src = media.add(h["source"], f"{h['video_id']}{Path(h['source']).suffix}")
            thumb = media.add(h["thumb"], f"thumbs/{Path(h['thumb']).name}", always_copy=True)
            a, b = float(h["start"]), float(h["end"])
            cells.append(
                f'<a href="{src}#t={a:.3f},{b:.3f}" target="_blank" title="{_e(h["clip_id"])} {a:.1f}-{b:.1f} s">'
                f'<img src="{thumb}" alt="{_e(h["clip_id"])}" loading="lazy">{h["score"]:+.2f}</a>'
            )
        else:
            src = media.add(h["source"], f"{h['song_id']}{Path(h['source']).suffix}")
            cells.append(f'<a href="{src}" target="_blank"><span class="s">{_e(h["song_id"])} {h["score"]:+.2f}</span></a>')
    return f'<div class="strip">{"".join(cells)}</div>'


def render_page(result: Mapping[str, Any], page: Path, media_mode: str = "link") -> str:
    """The page's HTML; places the media it refers to next to ``page``."""
    media = _Media(page, media_mode)
    q, lib = result["query"], result["library"]
    clips = lib["kind"] == "clips"
    what = "clips" if clips else "songs"
    qsrc = media.add(q["path"], f"query{Path(q['path']).suffix}")
    player = (f'<audio id="query" controls preload="metadata" src="{qsrc}"></audio>' if clips
              # the fragment makes browsers show a frame before playback instead of a black box
              else f'<video id="query" controls preload="metadata" src="{qsrc}#t=0.1"></video>')
    card = _clip_card if clips else _song_card
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vcmr search: {_e(Path(q['path']).name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{what.capitalize()} for the {_e(q['kind'])} <em>{_e(Path(q['path']).name)}</em></h1>",
        f'<p class="meta">library {_e(Path(lib["path"]).name)} &middot; {lib["n_entries"]} {what} &middot; '
        f'model sha256 {_e(lib["model_sha256"][:12])} &middot; k = {result["k"]} &middot; scores are cosine similarities</p>'
        "</header><main>",
        f'<section class="query">{player}<div><b>Query {_e(q["kind"])}</b><br>'
        f'<span class="meta">{q["duration"]:.1f} s &middot; {q["n_windows"]} windows</span></div></section>',
        f'<section class="{what}"><h2>Nearest {what} <small>(whole {_e(q["kind"])}, highest similarity first)</small></h2>'
        f'<div class="grid">{"".join(card(h, media, "near") for h in result["whole"]["nearest"])}</div></section>',
        f'<section class="{what}"><h2>Farthest {what} <small>(lowest similarity first)</small></h2>'
        f'<div class="grid">{"".join(card(h, media, "far") for h in result["whole"]["farthest"])}</div></section>',
    ]
    windows = result.get("windows") or []
    if windows:
        rows = "".join(
            f'<tr><td class="t"><button class="seek" data-t="{w["start"]:.3f}" title="play this window">&#9654;</button> '
            f'{w["start"]:.1f}&ndash;{w["end"]:.1f} s</td><td>{_strip(w["nearest"], media)}</td>'
            f'<td>{_strip(w["farthest"], media)}</td></tr>'
            for w in windows
        )
        parts.append(
            f'<section><h2>Per window <small>({len(windows)} windows of the query)</small></h2><table>'
            f'<tr><th>window</th><th>nearest {what}</th><th>farthest {what}</th></tr>{rows}</table></section>'
        )
    parts.append(f"</main><script>{JS}</script></body></html>")
    return "\n".join(parts)


def write_page(result: Mapping[str, Any], page: str | os.PathLike, media: str = "link") -> Path:
    """Write the page of a search result (and its media folder); returns the page path."""
    page = Path(page)
    if page.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{page}: the page needs an .html extension")
    page.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page, render_page(result, page, media))
    return page


__all__ = ["render_page", "write_page"]
