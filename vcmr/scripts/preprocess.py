"""Build a music-video dataset (stage-2 data), or the demo one when run without arguments.

    python -m vcmr.scripts.preprocess --config config/preprocess.yaml input=video_list.txt output=data/mv
    python -m vcmr.scripts.preprocess --config config/preprocess.yaml input=... output=... shard=3/16
    python -m vcmr.scripts.preprocess --config config/preprocess.yaml output=data/mv merge=true
    python -m vcmr.scripts.preprocess          # demo videos + tiny random CLIP, into the cache folder

See docs/dataset_builder.md.
"""

from __future__ import annotations

from typing import Optional, Sequence

from vcmr.config import cli_errors, load_cli_config
from vcmr.preprocess.builder import PreprocessConfig, build


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = load_cli_config(argv, "preprocess_demo.yaml", PreprocessConfig)
    if cfg.demo.enabled:
        from vcmr.demo.videos import ensure_demo_dataset

        root = ensure_demo_dataset(cfg)
        print(f"demo music-video dataset: {root} (manifest: {root / 'manifest.csv'})")
        return 0
    with cli_errors():
        print(build(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
