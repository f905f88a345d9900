"""Build a clip library (videos) or a music library (songs) for search, or the demo one.

    python -m vcmr.scripts.build_library            # demo videos + demo stage-2 model
    python -m vcmr.scripts.build_library kind=music # their soundtracks as a music library
    python -m vcmr.scripts.build_library --config config/library.yaml \
        input=/data/videos output=libraries/mv model=runs/vid_pretrain/version_0
    ... shard=3/16   then   ... merge=true          # cluster array jobs

See docs/retrieval.md.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vcmr.demo.library import prepare
    from vcmr.retrieval.check import format_check
    from vcmr.retrieval.library import LibraryConfig, LibraryError, build

    cfg = load_cli_config(argv, "library_demo.yaml", LibraryConfig)
    try:
        summary = build(prepare(cfg))
    except LibraryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    if summary.check is not None:
        print(format_check(summary.check, list(cfg.check.ks)))
    print(f"library folder: {summary.output} (search it: python -m vcmr.scripts.search library={summary.output} query=<song>)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
