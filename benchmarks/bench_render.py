"""Render speed and peak memory of the music-video renderer, a 1-minute and a 5-minute song.

A generated library (``--sources`` videos of ``--source-seconds`` at 640x360, 30 fps,
moving shapes on a colour per scene, h264) and generated songs (vcmr.demo.synth, 44.1 kHz)
of each length in ``--minutes`` are made once in a temporary folder. Each song is cut into
one-bar shots with the beat grid of ``config/make_video.yaml``, every shot takes a clip of
the library in turn, and :func:`vcmr.assembly.render.render_video` renders it with the
``render:`` settings of ``config/make_video.yaml`` (1280x720, 25 fps, x264 veryfast, AAC)
in a fresh process, whose peak resident memory (``VmHWM``) and wall time are reported
side by side. Memory must not grow with the song's length: frames are streamed shot by
shot and the song's audio is encoded in chunks as it is decoded.

    python benchmarks/bench_render.py [--minutes 1 5] [--width 1280 --height 720]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_source(path: Path, seconds: float, seed: int, fps: int = 30, w: int = 640, h: int = 360) -> Path:
    """Moving discs over a background whose colour changes every 4 s (a cut)."""
    from vcmr.video.writer import write_video

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    colours = rng.integers(30, 230, size=(int(seconds // 4) + 1, 3))
    centres = rng.uniform(0, 1, size=(3, 2))

    def frames():
        for i in range(int(seconds * fps)):
            t = i / fps
            img = np.empty((h, w, 3), np.uint8)
            img[:] = colours[int(t // 4)]
            for k, (cx, cy) in enumerate(centres):
                x = (cx + 0.1 * (k + 1) * t) % 1.0 * w
                y = (cy + 0.05 * np.sin(t + k)) % 1.0 * h
                img[(xx - x) ** 2 + (yy - y) ** 2 < (20 + 8 * k) ** 2] = 255 - colours[int(t // 4)]
            yield img

    return write_video(path, frames(), fps, None, 0, crf=23, preset="ultrafast")


def make_song(path: Path, seconds: float, sr: int = 44100) -> Path:
    from vcmr.audio.io import save_audio
    from vcmr.demo.synth import SongSpec, render

    spec = SongSpec(timbre="saw", drums="rock", tempo=124.0, key=4, mode="major", seed=3)
    save_audio(path, render(spec, sr, seconds), sr)
    return path


def plan(song: Path, sources: list, out_json: Path) -> None:
    """Shots of the song (beat grid of config/make_video.yaml), one source clip each, as JSON."""
    from vcmr.assembly.beats import BeatSettings, analyse, make_shots
    from vcmr.audio.io import load_audio
    from vcmr.config import CONFIG_DIR, load_config

    cfg = load_config(CONFIG_DIR / "make_video.yaml", ["song=x", "library=x", "output=x.mp4"],
                      _schema())
    bs = BeatSettings.from_config(cfg.beats)
    y = load_audio(song, bs.sample_rate)
    grid = analyse(y, bs.sample_rate, bs)
    shots = make_shots(grid, bs)
    rows = [{"path": str(sources[i % len(sources)]), "in_point": float((3 * i) % 8), "start": s.start, "end": s.end}
            for i, s in enumerate(shots)]
    out_json.write_text(json.dumps({"song": str(song), "duration": grid.duration, "tempo": grid.tempo,
                                    "shots": rows}))


def _schema():
    from vcmr.assembly.pipeline import MakeVideoConfig

    return MakeVideoConfig


def vm_hwm_mb() -> float:
    """Peak resident memory of this process in MB (``VmHWM``; unlike ``ru_maxrss`` it does not
    carry over the parent's memory across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(plan_json: Path, out: Path, overrides: list) -> None:
    """Render one planned video in this process and print a JSON line with the figures."""
    from vcmr.assembly.render import RenderSettings, ShotSource, render_video
    from vcmr.config import CONFIG_DIR, load_config

    cfg = load_config(CONFIG_DIR / "make_video.yaml", ["song=x", "library=x", "output=x.mp4", *overrides], _schema())
    p = json.loads(plan_json.read_text())
    shots = [ShotSource(r["path"], r["in_point"], r["start"], r["end"]) for r in p["shots"]]
    rss0 = vm_hwm_mb()
    res = render_video(p["song"], shots, out, p["duration"], RenderSettings.from_config(cfg.render), progress=False)
    peak = vm_hwm_mb()
    print(json.dumps({"duration": p["duration"], "n_shots": len(shots), "seconds": res.seconds,
                      "peak_mb": peak, "start_mb": rss0, "bytes": out.stat().st_size}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument("--sources", type=int, default=6)
    ap.add_argument("--source-seconds", type=float, default=20.0)
    ap.add_argument("--width", type=int, default=None, help="override render.width")
    ap.add_argument("--height", type=int, default=None, help="override render.height")
    ap.add_argument("--child", nargs=2, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--set", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.set)
        return 0
    overrides = [f"render.{k}={v}" for k, v in (("width", args.width), ("height", args.height)) if v is not None]
    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        tmp = Path(tmp)
        print(f"making {args.sources} source videos of {args.source_seconds:g} s (640x360, 30 fps)...", flush=True)
        sources = [make_source(tmp / f"src{i}.mp4", args.source_seconds, i) for i in range(args.sources)]
        results = []
        for minutes in args.minutes:
            song = make_song(tmp / f"song_{minutes:g}min.wav", minutes * 60.0)
            pj = tmp / f"plan_{minutes:g}.json"
            plan(song, sources, pj)
            print(f"rendering the {minutes:g}-minute song in a fresh process...", flush=True)
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(pj), str(tmp / f"v{minutes:g}.mp4"),
                 "--set", *overrides],
                check=True, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append((minutes, r))
    from vcmr.config import CONFIG_DIR, load_config

    cfg = load_config(CONFIG_DIR / "make_video.yaml", ["song=x", "library=x", "output=x.mp4", *overrides], _schema())
    rc = cfg.render
    print(f"\nrender: {rc.width}x{rc.height} @ {rc.fps} fps, x264 {rc.preset} crf {rc.crf}, AAC {rc.audio_bitrate // 1000} kb/s"
          f" ({os.cpu_count()} CPU cores)")
    print(f"{'song':>8} {'shots':>6} {'render s':>9} {'x real time':>12} {'peak RSS MB':>12} {'file MB':>8}")
    for minutes, r in results:
        print(f"{minutes:>6g} m {r['n_shots']:>6d} {r['seconds']:>9.1f} {r['duration'] / r['seconds']:>12.2f} "
              f"{r['peak_mb']:>12.0f} {r['bytes'] / 1e6:>8.1f}")
    if len(results) > 1:
        (m0, a), (m1, b) = results[0], results[-1]
        print(f"peak RSS {m1:g} min / {m0:g} min: {b['peak_mb'] / a['peak_mb']:.2f} (flat = 1.00)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
