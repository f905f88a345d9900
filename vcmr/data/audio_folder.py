"""A folder of audio files as a contrastive-pretraining dataset.

Files are found recursively and checked once, at setup: files that cannot be decoded or
are shorter than one clip are listed in a report and never reach a DataLoader worker.
Entries that cannot be audio files are reported too, never skipped silently and never
opened: broken links and link loops, FIFOs, sockets and devices named like audio files,
linked folders (not followed, as before) and folders this user may not list. Links to
files are followed wherever they point.

The train/validation split is decided by a hash of a group key (:func:`split_key`): the
file's path relative to the root (``group_by: none``), or its parent folder (``group_by:
parent``, so the segments of one video, ``audio/<id>/<id>_<jj>.wav`` in the dataset
builder's output, stay on one side). Adding files never moves existing ones between splits.

Index once (:func:`shared_index`): the verdicts are cached in a JSON file keyed by the
folder's listing (every candidate's path, size and change times) and the check settings,
so an unchanged folder is never checked twice. Under DDP one process checks and the others
receive its result: through ``torch.distributed`` when a process group is up, else through
the cache file named in ``$VCMR_AUDIO_INDEX`` (inherited by the ranks Lightning starts) or,
for ranks started beside it (``torchrun``, SLURM), the first process of each machine
(``LOCAL_RANK`` 0) checks and the others wait for its cache file.

A file that passes the check but fails to decode during training is not fatal: the
dataset returns a :class:`~vcmr.data.collate.BadItem` and the batch loses that item (see
:mod:`vcmr.data.collate`).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import errno
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vcmr.audio.io import AudioDecodeError, audio_info, file_kind, load_audio, verify_audio
from vcmr.data.collate import BadItem, drop_bad_items
from vcmr.data.loaders import build_loader
from vcmr.utils import PERMISSION_DENIED, atomic_write_text, cache_dir, hash_split, progress_bar

#: Bump when the index format or the checks change, so older cached indexes are not reused.
INDEX_VERSION = 1
#: Environment variable naming this job's index file for the ranks it starts.
INDEX_ENV = "VCMR_AUDIO_INDEX"
#: Seconds a process waits for the index of the first process on its machine, and between looks.
INDEX_WAIT_S = 24 * 3600.0
INDEX_POLL_S = 1.0


@dataclasses.dataclass(frozen=True)
class AudioFile:
    """A usable file: ``path`` absolute, ``relpath`` relative to the root, ``duration`` in s."""

    path: str
    relpath: str
    duration: float


@dataclasses.dataclass(frozen=True)
class RejectedFile:
    """A file (or folder, ``relpath`` ending in ``/``) left out, with the reason."""

    relpath: str
    reason: str


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What a recursive scan found: candidate audio ``files`` (sorted) and ``problems``,
    entries that can never be used (see the module docstring)."""

    files: List[Path]
    problems: List[RejectedFile]


def _extensions(extensions: Sequence[str]) -> set:
    return {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}


def scan_folder(root: str | os.PathLike, extensions: Sequence[str]) -> FolderScan:
    """Walk ``root`` (hidden entries skipped) without opening any file.

    Candidates are regular files, and links to regular files, whose extension is in
    ``extensions``. Reported: broken links and link loops, FIFOs/sockets/devices with an
    audio extension (opening a FIFO would block forever), linked folders (not followed) and
    folders that cannot be listed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: audio folder not found: {root}")
    exts = _extensions(extensions)
    files: List[Path] = []
    problems: List[RejectedFile] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            rel = folder.relative_to(root).as_posix() + "/"
            why = PERMISSION_DENIED if isinstance(exc, PermissionError) else f"cannot list: {exc.strerror or exc}"
            problems.append(RejectedFile(rel, f"folder not listed: {why}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden, or a temporary file being written
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            audio_name = path.suffix.lower() in exts
            try:
                if entry.is_symlink():
                    try:
                        mode = os.stat(path).st_mode
                    except OSError as exc:
                        if audio_name:
                            why = {errno.ENOENT: "broken link: its target does not exist",
                                   errno.ELOOP: "link loop"}.get(exc.errno, f"link not followed: {exc.strerror or exc}")
                            problems.append(RejectedFile(rel, why))
                        continue
                    if stat.S_ISDIR(mode):
                        problems.append(RejectedFile(rel + "/", "linked folder not followed (link its files, "
                                                                 "or use the folder itself as data.root)"))
                        continue
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if stat.S_ISDIR(mode):
                        pending.append(path)
                        continue
            except OSError as exc:
                if audio_name:
                    problems.append(RejectedFile(rel, f"cannot access: {exc.strerror or exc}"))
                continue
            if not audio_name:
                continue
            if stat.S_ISREG(mode):
                files.append(path)
            else:
                problems.append(RejectedFile(rel, f"not a regular file ({file_kind(mode)}); never opened"))
    return FolderScan(sorted(files), sorted(problems, key=lambda r: r.relpath))


def find_audio_files(root: str | os.PathLike, extensions: Sequence[str]) -> List[Path]:
    """All candidate audio files under ``root`` (recursive, sorted); see :func:`scan_folder`."""
    return scan_folder(root, extensions).files


def _probe(args: Tuple[str, str, int, float, str]) -> Tuple[str, Optional[float], str]:
    path, relpath, sample_rate, min_seconds, verify = args
    try:
        if verify == "full":
            duration = verify_audio(path)  # decodes block by block: memory bounded
        else:
            duration = audio_info(path).duration
            if not np.isfinite(duration):
                return relpath, None, "duration unknown from header"
    except AudioDecodeError as exc:
        return relpath, None, exc.reason
    except Exception as exc:  # a decoder crash on a hostile file is still just a bad file
        return relpath, None, f"{type(exc).__name__}: {exc}"
    if duration < min_seconds:
        return relpath, None, f"too short: {duration:.2f}s < {min_seconds:.2f}s needed for one clip"
    return relpath, duration, ""


def index_folder(
    root: str | os.PathLike,
    extensions: Sequence[str],
    sample_rate: int,
    min_seconds: float,
    verify: str = "full",
    workers: int = 1,
    progress: bool = True,
    scan: Optional[FolderScan] = None,
) -> Tuple[List[AudioFile], List[RejectedFile]]:
    """Check every audio file under ``root`` once.

    Args:
        verify: ``full`` decodes each file completely, block by block (finds corrupt data
            anywhere; memory stays at one block per worker); ``header`` reads only headers
            (fast, for large collections; data damage is then met during training, see
            :mod:`vcmr.data.collate`).
        workers: processes used for the check.
        scan: a :func:`scan_folder` result to reuse (scanned here when ``None``).

    Returns:
        ``(usable, rejected)``, both sorted by relative path; ``rejected`` includes the
        scan's problems (broken links, FIFOs, unreadable folders, ...).
    """
    if verify not in ("full", "header"):
        raise ValueError(f"data.verify: must be 'full' or 'header', got '{verify}'")
    root = Path(root)
    scan = scan if scan is not None else scan_folder(root, extensions)
    jobs = [(str(p), p.relative_to(root).as_posix(), sample_rate, min_seconds, verify) for p in scan.files]
    results: List[Tuple[str, Optional[float], str]] = []
    bar = progress_bar(total=len(jobs), desc=f"Checking audio files ({verify})", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_probe, jobs, chunksize=4):
                results.append(res)
                bar.update()
    else:
        for job in jobs:
            results.append(_probe(job))
            bar.update()
    bar.close()
    usable = [AudioFile(str(root / rel), rel, d) for rel, d, _ in results if d is not None]
    rejected = [RejectedFile(rel, why) for rel, d, why in results if d is None] + list(scan.problems)
    return usable, sorted(rejected, key=lambda r: r.relpath)


def _settings(root: Path, extensions: Sequence[str], sample_rate: int, min_seconds: float, verify: str) -> List[Any]:
    return [INDEX_VERSION, str(root.resolve()), sorted(_extensions(extensions)), int(sample_rate),
            repr(float(min_seconds)), verify]


def index_key(
    root: Path, scan: FolderScan, extensions: Sequence[str], sample_rate: int, min_seconds: float, verify: str
) -> str:
    """Hex key of a folder's listing (paths, sizes, change times) and the check settings."""
    h = hashlib.sha1()
    h.update(json.dumps(_settings(root, extensions, sample_rate, min_seconds, verify)).encode("utf-8"))
    for path in scan.files:
        try:
            st = os.stat(path)
            facts = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        except OSError as exc:
            facts = f"error:{exc.errno}"
        h.update(f"\n{path.relative_to(root).as_posix()}\0{facts}".encode("utf-8", "surrogateescape"))
    for prob in scan.problems:
        h.update(f"\n!{prob.relpath}\0{prob.reason}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _dump_index(settings: List[Any], key: str, usable: Sequence[AudioFile], rejected: Sequence[RejectedFile]) -> str:
    return json.dumps({
        "version": INDEX_VERSION, "settings": settings, "key": key,
        "usable": [[f.relpath, f.duration] for f in usable],
        "rejected": [[r.relpath, r.reason] for r in rejected],
    })


def read_index(
    path: str | os.PathLike, root: str | os.PathLike, settings: List[Any]
) -> Tuple[List[AudioFile], List[RejectedFile]]:
    """``(usable, rejected)`` from an index file written for ``root`` with ``settings``.

    Raises:
        ValueError: the file is not an index of ``root`` with these settings in this format.
    """
    root = Path(root)
    try:
        doc = json.loads(Path(path).read_text())
        if doc["version"] != INDEX_VERSION or doc["settings"] != settings:
            raise ValueError("written for another folder, other settings or another format")
        usable = [AudioFile(str(root / rel), rel, float(d)) for rel, d in doc["usable"]]
        rejected = [RejectedFile(rel, why) for rel, why in doc["rejected"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a usable audio index of {root}: {exc}") from exc
    return usable, rejected


def index_cache_dir() -> Path:
    """Where folder indexes are cached: ``<cache>/audio_index`` (``$VCMR_CACHE`` or ``~/.cache/vcmr``)."""
    return cache_dir() / "audio_index"


def _local_rank() -> int:
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _env_index(root: Path, settings: List[Any]) -> Optional[Tuple[List[AudioFile], List[RejectedFile]]]:
    """The index named in ``$VCMR_AUDIO_INDEX`` if it was written for ``root`` and ``settings``, else None."""
    named = os.environ.get(INDEX_ENV)
    if not named or not Path(named).is_file():
        return None
    try:
        return read_index(named, root, settings)
    except ValueError:
        return None


def cached_index(
    root: str | os.PathLike,
    extensions: Sequence[str],
    sample_rate: int,
    min_seconds: float,
    verify: str,
    workers: int,
    cache: Path,
    progress: bool = True,
) -> Tuple[List[AudioFile], List[RejectedFile]]:
    """:func:`index_folder`, reusing ``cache/<key>.json`` when the listing is unchanged and
    writing it (atomically) otherwise; ``$VCMR_AUDIO_INDEX`` then names that file."""
    root = Path(root)
    scan = scan_folder(root, extensions)
    key = index_key(root, scan, extensions, sample_rate, min_seconds, verify)
    path = Path(cache) / f"{key}.json"
    settings = _settings(root, extensions, sample_rate, min_seconds, verify)
    result = None
    if path.is_file():
        try:
            result = read_index(path, root, settings)
        except ValueError:
            result = None  # damaged cache: check again
    if result is None:
        result = index_folder(root, extensions, sample_rate, min_seconds, verify, workers, progress, scan=scan)
        atomic_write_text(path, _dump_index(settings, key, *result))
    os.environ[INDEX_ENV] = str(path)
    return result


def _wait_for_index(
    root: Path, extensions: Sequence[str], sample_rate: int, min_seconds: float, verify: str, cache: Path
) -> Tuple[List[AudioFile], List[RejectedFile]]:
    """A process other than the first on its machine: wait for the first one's cache file."""
    scan = scan_folder(root, extensions)
    path = Path(cache) / f"{index_key(root, scan, extensions, sample_rate, min_seconds, verify)}.json"
    deadline = time.monotonic() + INDEX_WAIT_S
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"data.root: waited {INDEX_WAIT_S:.0f} s for the index of {root} from the first process "
                f"on this machine ({path}); did the folder change while the job started?"
            )
        time.sleep(INDEX_POLL_S)
    return read_index(path, root, _settings(root, extensions, sample_rate, min_seconds, verify))


def shared_index(
    root: str | os.PathLike,
    extensions: Sequence[str],
    sample_rate: int,
    min_seconds: float,
    verify: str,
    workers: int,
    cache: Optional[Path] = None,
    progress: bool = True,
) -> Tuple[List[AudioFile], List[RejectedFile]]:
    """The folder's index, checked by one process and shared with the others (module docstring).

    Every rank ends with the same ``(usable, rejected)``. ``cache``: the index cache folder
    (:func:`index_cache_dir` when ``None``).
    """
    import torch.distributed as dist

    root = Path(root)
    cache = Path(cache) if cache is not None else index_cache_dir()
    args = (root, extensions, sample_rate, min_seconds, verify)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        payload: List[Any] = [None]
        if dist.get_rank() == 0:
            try:
                payload = [("ok", cached_index(*args, workers, cache, progress))]
            except Exception as exc:  # every rank raises, none is left waiting
                payload = [("error", f"{type(exc).__name__}: {exc}")]
        dist.broadcast_object_list(payload, src=0)
        status, value = payload[0]
        if status != "ok":
            raise RuntimeError(f"data.root: indexing {root} failed on rank 0: {value}")
        return value
    if _local_rank() > 0:
        inherited = _env_index(root, _settings(*args))
        return inherited if inherited is not None else _wait_for_index(*args, cache)
    return cached_index(*args, workers, cache, progress)


def _tsv_field(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_report(path: str | os.PathLike, rejected: Sequence[RejectedFile]) -> None:
    """Tab-separated ``relpath<TAB>reason`` list of the files left out."""
    lines = ["relpath\treason"] + [f"{_tsv_field(r.relpath)}\t{_tsv_field(r.reason)}" for r in rejected]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_report(path: str | os.PathLike) -> List[RejectedFile]:
    """The entries of a :func:`write_report` file (``[]`` when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = [line.split("\t", 1) for line in path.read_text().splitlines()[1:] if line]
    return [RejectedFile(r[0], r[1] if len(r) > 1 else "") for r in rows]


def append_report(path: str | os.PathLike, rejected: Sequence[RejectedFile]) -> List[RejectedFile]:
    """Add entries to a report, each file once (an entry already listed keeps its reason);
    rewritten atomically. Call from one process only (rank 0). Returns the entries added."""
    entries = read_report(path)
    known = {r.relpath for r in entries}
    new = []
    for r in rejected:
        if r.relpath not in known:
            known.add(r.relpath)
            new.append(r)
    if new:
        write_report(path, entries + new)
    return new


#: ``data.group_by`` -> key of a file's relative path that decides its split.
GROUP_KEYS = {
    "none": lambda relpath: relpath,
    # Files directly under the root form their own group (their parent would be one group).
    "parent": lambda relpath: os.path.dirname(relpath) or relpath,
}


def split_key(relpath: str, group_by: str) -> str:
    """The string hashed to split ``relpath`` (posix, relative to the root) under ``group_by``."""
    if group_by not in GROUP_KEYS:
        raise ValueError(f"data.group_by: must be one of {sorted(GROUP_KEYS)}, got '{group_by}'")
    return GROUP_KEYS[group_by](relpath)


class AudioClipDataset(Dataset):
    """Fixed-length clips from a list of checked files.

    Training items start at a uniformly random offset (drawn from the worker's torch
    RNG, so Lightning's seeding makes runs reproducible); validation items are the
    centre of each file. ``__getitem__`` returns ``[1, clip_length]`` float32.
    """

    def __init__(self, files: Sequence[AudioFile], sample_rate: int, clip_length: int, random_offset: bool):
        self.files = list(files)
        self.sample_rate = sample_rate
        self.clip_length = clip_length
        self.random_offset = random_offset

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> torch.Tensor | BadItem:
        """``[1, clip_length]`` float32 clip, or a :class:`BadItem` when the file fails to decode."""
        f = self.files[idx]
        seconds = self.clip_length / self.sample_rate
        # Keep a small margin: header durations of compressed files can be approximate.
        span = max(0.0, f.duration - seconds - 0.05)
        if self.random_offset:
            offset = float(torch.rand(()).item()) * span
        else:
            offset = span / 2
        try:
            x = load_audio(f.path, self.sample_rate, offset=offset, duration=seconds)
        except AudioDecodeError as exc:
            return BadItem(f.relpath, f"failed to decode during training: {exc.reason}")
        return torch.from_numpy(x).unsqueeze(0)


class AudioFolderDataModule(pl.LightningDataModule):
    """Train/validation clips from a folder of audio files.

    Args:
        root: folder searched recursively.
        sample_rate: decode rate (Hz).
        clip_length: samples per item.
        val_fraction: share of files (by path hash) used for validation.
        extensions: file extensions to include.
        verify: ``full`` or ``header`` (see :func:`index_folder`).
        index_workers: processes for the setup check.
        index_cache: folder of cached indexes (:func:`index_cache_dir` when ``None``); see
            :func:`shared_index` (checked once, shared between DDP ranks).
        loader: DataLoader settings (batch size per device, workers, ...).
        group_by: ``none`` (split per file) or ``parent`` (per parent folder), see :func:`split_key`.
    """

    def __init__(
        self,
        root: str,
        sample_rate: int,
        clip_length: int,
        val_fraction: float,
        extensions: Sequence[str],
        verify: str,
        index_workers: int,
        loader: Mapping[str, Any],
        group_by: str = "none",
        index_cache: Optional[str | os.PathLike] = None,
    ):
        super().__init__()
        self.index_cache = Path(index_cache) if index_cache is not None else None
        split_key("", group_by)  # an unknown value fails here, before the folder is scanned
        self.group_by = group_by
        self.root = root
        self.sample_rate = sample_rate
        self.clip_length = clip_length
        self.val_fraction = val_fraction
        self.extensions = list(extensions)
        self.verify = verify
        self.index_workers = index_workers
        self.loader = dict(loader)
        self.train_files: List[AudioFile] = []
        self.val_files: List[AudioFile] = []
        self.rejected: List[RejectedFile] = []
        self._indexed = False

    def setup(self, stage: Optional[str] = None) -> None:
        if self._indexed:
            return
        usable, self.rejected = shared_index(
            self.root,
            self.extensions,
            self.sample_rate,
            min_seconds=self.clip_length / self.sample_rate + 0.1,
            verify=self.verify,
            workers=self.index_workers,
            cache=self.index_cache,
        )
        for f in usable:
            side = hash_split(split_key(f.relpath, self.group_by), self.val_fraction)
            (self.val_files if side == "val" else self.train_files).append(f)
        if not self.train_files:
            raise RuntimeError(
                f"data.root: no usable training files in {self.root} "
                f"({len(usable)} usable, {len(self.rejected)} rejected)"
            )
        self._indexed = True

    def summary(self) -> Dict[str, int]:
        """Counts of train, validation and rejected files."""
        return {"train": len(self.train_files), "val": len(self.val_files), "rejected": len(self.rejected)}

    def _loader(self, files: Sequence[AudioFile], train: bool) -> DataLoader:
        ds = AudioClipDataset(files, self.sample_rate, self.clip_length, random_offset=train)
        return build_loader(ds, self.loader, train, collate_fn=drop_bad_items)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_files, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_files, train=False)
