"""Builder inputs: a list of YouTube ids/URLs (downloaded with yt-dlp) or a folder of videos.

List file format (see the top-level ``video_list.txt``): one YouTube video id or URL per
line; blank lines and everything after ``#`` are ignored. Accepted URL forms:
``https://www.youtube.com/watch?v=ID``, ``https://youtu.be/ID``,
``https://www.youtube.com/shorts/ID``, ``https://www.youtube.com/embed/ID``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from pathlib import Path
from typing import Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

from vcmr.utils import stable_hash64
from vcmr.video.probe import VIDEO_EXTENSIONS

_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_SAFE = re.compile(r"[^\w.-]+")


class InputError(ValueError):
    """The builder input (list file or folder) is missing or malformed."""


class DownloadError(RuntimeError):
    """One video could not be downloaded; ``reason`` is recorded in the manifest."""

    def __init__(self, video_id: str, reason: str):
        self.video_id = video_id
        self.reason = reason
        super().__init__(f"{video_id}: {reason}")


class DownloaderUnavailable(RuntimeError):
    """yt-dlp is not installed."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
    """One input video: ``path`` for a local file, else ``url`` to download."""

    video_id: str
    path: Optional[str]
    url: Optional[str]


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    """yt-dlp options (see ``download.*`` in ``config/preprocess.yaml``)."""

    dir: str
    format: str
    retries: int
    socket_timeout: float


Downloader = Callable[[VideoSource, DownloadSettings], Path]


def youtube_id(entry: str) -> Optional[str]:
    """The 11-character video id of a YouTube URL or bare id, else ``None``."""
    entry = entry.strip()
    if _YT_ID.match(entry):
        return entry
    u = urlparse(entry if "://" in entry else "https://" + entry)
    host = (u.hostname or "").lower()
    cand: Optional[str] = None
    if host.endswith("youtu.be"):
        cand = u.path.strip("/").split("/")[0]
    elif host.endswith("youtube.com") or host.endswith("youtube-nocookie.com"):
        if u.path == "/watch":
            cand = (parse_qs(u.query).get("v") or [""])[0]
        else:
            parts = [p for p in u.path.split("/") if p]
            if len(parts) >= 2 and parts[0] in ("shorts", "embed", "v", "live"):
                cand = parts[1]
    return cand if cand and _YT_ID.match(cand) else None


def read_video_list(path: str | os.PathLike) -> List[VideoSource]:
    """Parse a list file; duplicate ids are kept once. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video list not found")
    seen: Dict[str, VideoSource] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        vid = youtube_id(line)
        if vid is None:
            raise InputError(f"{path}:{lineno}: '{line}' is not a YouTube video id or URL")
        seen.setdefault(vid, VideoSource(vid, None, f"https://www.youtube.com/watch?v={vid}"))
    return list(seen.values())


def local_video_id(rel: Path) -> str:
    """Id of a local file: its relative path without extension, ``/`` -> ``__``.

    Letters and digits of any script are kept (NFC-normalised), as are ``.``, ``_`` and ``-``;
    anything else becomes ``_``. When that changes the name (or leaves nothing), the first
    16 hex digits of the SHA-1 of the relative path are appended, so two different files
    never share an id and an id does not depend on which other files exist.
    """
    stem = "__".join(unicodedata.normalize("NFC", part) for part in rel.with_suffix("").parts)
    safe = _SAFE.sub("_", stem).strip("._")
    if safe == stem:
        return safe
    digest = f"{stable_hash64(unicodedata.normalize('NFC', rel.as_posix())):016x}"
    return f"{safe}-{digest}" if safe else f"video-{digest}"


def scan_folder(folder: str | os.PathLike) -> List[VideoSource]:
    """Video files under ``folder`` (recursive, sorted). Two files with the same id raise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: input folder not found")
    out: Dict[str, VideoSource] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in VIDEO_EXTENSIONS or not p.is_file() or p.name.startswith("."):
            continue
        vid = local_video_id(p.relative_to(folder))
        if vid in out:
            raise InputError(f"{folder}: '{out[vid].path}' and '{p}' map to the same video id '{vid}'; rename one")
        out[vid] = VideoSource(vid, str(p), None)
    return list(out.values())


def read_inputs(input_path: str | os.PathLike) -> List[VideoSource]:
    """A folder is scanned for videos; a file is read as a video list."""
    p = Path(input_path)
    if p.is_dir():
        return scan_folder(p)
    if p.is_file():
        return read_video_list(p)
    raise InputError(f"input '{p}' is neither a video list file nor a folder")


def require_yt_dlp() -> None:
    """Raise :class:`DownloaderUnavailable` with install advice when yt-dlp is missing."""
    try:
        import yt_dlp  # noqa: F401
    except ImportError as exc:
        raise DownloaderUnavailable(
            "downloading YouTube videos needs yt-dlp: pip install 'vcmr[youtube]' "
            "(or pass a folder of local videos as input=...)"
        ) from exc


def find_download(source: VideoSource, settings: DownloadSettings) -> Optional[Path]:
    """A finished earlier download of ``source`` in ``settings.dir``, if any."""
    folder = Path(settings.dir)
    for ext in VIDEO_EXTENSIONS:
        p = folder / f"{source.video_id}{ext}"
        if p.is_file() and p.stat().st_size > 0:
            return p
    return None


def yt_dlp_download(source: VideoSource, settings: DownloadSettings) -> Path:
    """Download one video with yt-dlp into ``settings.dir/<video_id>.<ext>``.

    yt-dlp writes ``.part`` files and renames them when complete, so a killed download is
    never mistaken for a finished one.

    Raises:
        DownloaderUnavailable: yt-dlp is not installed.
        DownloadError: the video is unavailable, private, removed, or the network fails.
    """
    done = find_download(source, settings)
    if done is not None:
        return done
    require_yt_dlp()
    import yt_dlp

    folder = Path(settings.dir)
    folder.mkdir(parents=True, exist_ok=True)
    opts = {
        "format": settings.format,
        "outtmpl": str(folder / f"{source.video_id}.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "retries": int(settings.retries),
        "socket_timeout": float(settings.socket_timeout),
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(source.url or source.video_id, download=True)
            path = Path(ydl.prepare_filename(info))
    except Exception as exc:  # yt-dlp raises DownloadError/ExtractorError and plain network errors
        msg = str(exc).replace("\n", " ").strip()
        raise DownloadError(source.video_id, f"download failed: {msg}") from exc
    if not path.is_file():
        found = find_download(source, settings)
        if found is None:
            raise DownloadError(source.video_id, f"download failed: yt-dlp reported {path.name} but it is missing")
        path = found
    return path
