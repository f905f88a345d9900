"""Make a beat-cut music video for a song from a clip library.

    python -m vcmr.scripts.make_video                          # demo song + demo clip library
    python -m vcmr.scripts.make_video --config config/make_video.yaml \
        song=<audio file> library=<clip library> output=<file.mp4> [choose.temperature=0.3 seed=1]
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import CONFIG_DIR, load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vcmr.assembly.beats import BeatError
    from vcmr.assembly.choose import ChoiceError
    from vcmr.assembly.pipeline import LibraryMismatchError, MakeVideoConfig, make_video
    from vcmr.assembly.render import RenderError
    from vcmr.audio.io import AudioDecodeError
    from vcmr.demo.assembly import prepare
    from vcmr.retrieval.library import LibraryError

    cfg = load_cli_config(argv, str(CONFIG_DIR / "make_video_demo.yaml"), MakeVideoConfig)
    try:
        r = make_video(prepare(cfg))
    except (AudioDecodeError, BeatError, ChoiceError, LibraryError, LibraryMismatchError, RenderError,
            FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\n{r['n_shots']} shots at {r['tempo']:.1f} BPM, {r['duration']:.1f} s of video rendered in "
          f"{r['render_seconds']:.1f} s ({r['realtime_factor']:.1f}x real time)")
    print(f"  video     {r['video']}")
    print(f"  page      {r['page']}")
    print(f"  timeline  {r['timeline']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
