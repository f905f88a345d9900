"""Generator of hostile media for the reliability tests: files and folder entries that are
broken in the ways real collections are (small, fast, deterministic).

Each maker writes one entry and returns its path. :func:`make_corpus` writes them all under
one folder and returns ``{relpath: part of the reason the index must give}``.
"""

from __future__ import annotations

import os
import socket
import struct
from fractions import Fraction
from pathlib import Path
from typing import Dict

import numpy as np
import soundfile as sf

from vcmr.audio.io import save_audio


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def aac_mp4(path: Path, seconds: float, sr: int = 16000, faststart: bool = True) -> Path:
    """An mp4 with one AAC track (the index, ``moov``, at the front when ``faststart``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    x = tone(seconds, sr)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        st = out.add_stream("aac", rate=sr, layout="mono")
        hop = 1024
        for i in range(0, x.size, hop):
            frame = av.AudioFrame.from_ndarray(x[None, i : i + hop].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def truncated_mp4(path: Path, seconds: float = 3.0, sr: int = 16000, keep: float = 0.0) -> Path:
    """An mp4 whose header is intact (it announces ``seconds``) but whose sample data is cut
    after ``keep`` (a fraction) of it: a download or copy that stopped early.

    ``keep=0`` leaves no audio data at all, so every window fails to decode; ``keep=0.5`` is
    "an mp4 cut in half".
    """
    aac_mp4(path, seconds, sr, faststart=True)
    data = path.read_bytes()
    mdat = data.index(b"mdat") - 4  # the box header: 4-byte size, then the type
    payload = len(data) - (mdat + 8)
    path.write_bytes(data[: mdat + 8 + int(keep * payload)])
    return path


def loud_float_wav(path: Path, peak: float = 60.0, seconds: float = 1.0, sr: int = 16000) -> Path:
    """A float wav whose samples reach ``peak`` (a mis-scaled export)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, amp=peak), sr, subtype="FLOAT")
    return path


def nan_wav(path: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    """A float wav with NaN and Inf samples in the middle."""
    x = tone(seconds, sr)
    x[x.size // 2] = np.nan
    x[x.size // 2 + 1] = np.inf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype="FLOAT")
    return path


def tiny_rate_wav(path: Path, rate: int = 2, n_samples: int = 2000) -> Path:
    """A 16-bit wav whose header claims ``rate`` Hz (4 KB that would read as a 1,000 s song)."""
    save_audio(path, np.zeros(n_samples, np.float32), 16000)
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ") + 8
    data[fmt + 4 : fmt + 8] = struct.pack("<I", rate)  # sample rate
    data[fmt + 8 : fmt + 12] = struct.pack("<I", rate * 2)  # byte rate (mono, 16 bit)
    path.write_bytes(bytes(data))
    return path


def long_wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    """A long 16-bit wav written in pieces (for memory checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = tone(10.0, sr)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as fh:
        for _ in range(int(seconds // 10)):
            fh.write(block)
    return path


def unreadable(path: Path) -> Path:
    """Mode 000: only a process with CAP_DAC_OVERRIDE (root) can still read it."""
    os.chmod(path, 0)
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def unix_socket(path: Path) -> Path:
    """A bound Unix socket left in the folder (the socket object is closed, the entry stays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    return path


#: Entries of :func:`make_corpus` whose header is intact (their data is not).
HEADER_INTACT = ("cut.mp4", "nan.wav")


def make_corpus(root: Path, sr: int = 16000) -> Dict[str, str]:
    """Every hostile entry under ``root``, none of them usable, and a folder beside ``root``
    that a link inside points to. Returns ``{relpath: part of the reason}`` as the index
    reports it; folders end with ``/``. The headers of :data:`HEADER_INTACT` are fine:
    header verification keeps them and only decoding (``verify=full``, or training) fails.
    """
    root.mkdir(parents=True, exist_ok=True)
    expected: Dict[str, str] = {}
    truncated_mp4(root / "cut.mp4", keep=0.0, sr=sr)
    expected["cut.mp4"] = "no audio samples decoded"
    nan_wav(root / "nan.wav", sr=sr)
    expected["nan.wav"] = "NaN or Inf"
    tiny_rate_wav(root / "two_hz.wav")
    expected["two_hz.wav"] = "bad header: sample rate 2 Hz"
    (root / "empty.wav").write_bytes(b"")
    expected["empty.wav"] = "empty"
    (root / "junk.mp3").write_bytes(b"\x00not audio at all" * 64)
    expected["junk.mp3"] = "cannot"
    os.symlink("nowhere.wav", root / "broken_link.wav")
    expected["broken_link.wav"] = "broken link"
    os.symlink("loop_b.wav", root / "loop_a.wav")
    os.symlink("loop_a.wav", root / "loop_b.wav")
    expected["loop_a.wav"] = expected["loop_b.wav"] = "link loop"
    fifo(root / "pipe.wav")
    expected["pipe.wav"] = "not a regular file (fifo)"
    unix_socket(root / "sock.wav")
    expected["sock.wav"] = "not a regular file (socket)"
    outside = root.parent / f"{root.name}_outside"
    save_audio(outside / "song.wav", tone(1.0, sr), sr)
    os.symlink(os.path.relpath(outside, root), root / "linked_folder")
    expected["linked_folder/"] = "linked folder not followed"
    save_audio(root / "locked" / "song.wav", tone(1.0, sr), sr)
    unreadable(root / "locked")
    expected["locked/"] = "permission denied"
    return expected
