"""Small helpers shared by every layer: atomic file writes, cache folder, rank-0 printing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def cache_dir() -> Path:
    """Folder for generated demo data: ``$VCMR_CACHE`` or ``~/.cache/vcmr``."""
    root = os.environ.get("VCMR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vcmr")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing) for the ``with`` block.

    Serialises processes that fill the same cache folder (e.g. DDP ranks asking for the
    same demo data). POSIX ``flock``; a no-op where ``fcntl`` is missing (Windows).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: Prefix of the hidden folders that hold files being written (see :func:`atomic_path`).
TMP_PREFIX = ".tmp-"


def is_hidden(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """True when a part of ``path`` (below ``root``, if given) starts with a dot.

    Recursive scans skip such paths: they hold files being written or left by a killed writer.
    """
    p = Path(path)
    parts = p.relative_to(root).parts if root is not None else p.parts
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for ``path``; rename it onto ``path`` on success.

    The temporary file has ``path``'s own name (so writers that infer a format from the
    extension still can) inside a hidden sibling folder ``.tmp-XXXX/``: it never matches a
    glob of the destination folder (``records/*.json``), and recursive scans skip hidden
    folders (:func:`is_hidden`). The writer creates the file, so it gets the process
    umask's permissions, like any other file. A crash or exception leaves ``path``
    untouched (absent or the previous version) and removes the temporary folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=path.parent))
    tmp_path = tmp_dir / path.name
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise FileNotFoundError(f"{path}: the writer produced no file")
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def is_rank_zero() -> bool:
    """True on the process that should print and write shared files (global rank 0)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return True


def rank_zero_print(*args: object) -> None:
    """``print`` on global rank 0 only."""
    if is_rank_zero():
        print(*args, flush=True)


def stable_hash64(key: str) -> int:
    """A 64-bit integer from the SHA-1 of ``key`` (UTF-8): the same on every machine and run."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def hash_split(key: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for ``key`` (a file path or a video id), from :func:`stable_hash64`.

    Stable and seed-free: adding items never moves existing ones between the splits.
    """
    return "val" if stable_hash64(key) / 2**64 < val_fraction else "train"


class MediaFileError(RuntimeError):
    """A media file cannot be used. ``path`` and ``reason`` are attributes."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


#: Reason given for a file this user may not read (never reported as a damaged file).
PERMISSION_DENIED = "permission denied (this user cannot read the file)"


def open_container(path: str | os.PathLike, error: type, reason: str = "cannot open container") -> "av.container.InputContainer":  # noqa: F821
    """``av.open(path)`` for reading; a failure raises ``error(path, f"{reason}: <cause>")``, or
    ``error(path, PERMISSION_DENIED)`` when the file may not be read."""
    import av

    try:
        return av.open(str(path))
    except PermissionError as exc:  # also av.error.PermissionError
        raise error(path, PERMISSION_DENIED) from exc
    except Exception as exc:
        raise error(path, f"{reason}: {exc}") from exc


def stream_seconds(container: object, stream: object) -> float:
    """Duration the headers give for a PyAV ``stream``: its own, else the container's, else NaN."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return float("nan")


#: Seconds between two progress lines when the output is not a terminal (``$VCMR_PROGRESS_SECONDS``).
PROGRESS_SECONDS = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines: ``$VCMR_PROGRESS_SECONDS`` or :data:`PROGRESS_SECONDS`."""
    try:
        return max(0.0, float(os.environ.get("VCMR_PROGRESS_SECONDS", PROGRESS_SECONDS)))
    except ValueError:
        return PROGRESS_SECONDS


def interactive(stream: object = None) -> bool:
    """True when progress goes to a terminal (bars are redrawn); False in logs and pipes (plain lines).

    ``$VCMR_PROGRESS=bars`` or ``lines`` forces one or the other.
    """
    forced = os.environ.get("VCMR_PROGRESS", "").lower()
    if forced in ("bars", "lines"):
        return forced == "bars"
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(*args: object, **kwargs: object):
    """A ``tqdm`` progress bar on a terminal; elsewhere (a SLURM log, a pipe) the same object
    printing one plain line every :func:`progress_interval` seconds, with rate and ETA,
    instead of carriage-return redraws. Arguments are ``tqdm``'s.

    In plain-line mode a bar made with ``leave=False`` (a short step inside a longer one,
    e.g. one file's batches) prints nothing unless it runs longer than one interval: a log
    gets no pair of lines per file.
    """
    from tqdm import tqdm

    if interactive(kwargs.get("file")):
        return tqdm(*args, **kwargs)

    class _Lines(tqdm):
        _printed = -1
        monitor_interval = 0  # tqdm's monitor thread would refresh between intervals: extra lines

        def display(self, msg: object = None, pos: object = None) -> bool:
            if msg is not None and not msg:  # a clear request (leave=False): nothing to erase
                return True
            self._printed = self.n
            self.fp.write(self.format_meter(**self.format_dict) + "\n")
            self.fp.flush()
            return True

        def close(self) -> None:
            if self.disable:
                return
            if self._printed != self.n and (self.leave or self._printed >= 0):  # the final count, once
                self.display()
            self.disable = True
            self._decr_instances(self)

    kwargs.setdefault("mininterval", progress_interval())
    if kwargs.get("leave", True) is False:
        kwargs.setdefault("delay", kwargs["mininterval"])
    kwargs["maxinterval"] = 0  # miniters never raised from elapsed time
    kwargs["dynamic_ncols"] = False
    kwargs.setdefault(
        "bar_format", "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
    )
    return _Lines(*args, **kwargs)
