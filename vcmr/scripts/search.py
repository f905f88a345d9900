"""Search a library with a song or a video: nearest and farthest clips (or songs), with scores.

    python -m vcmr.scripts.search                                   # demo library, a demo song, a page
    python -m vcmr.scripts.search library=libraries/mv query=song.mp3 k=5 per_window=true
    python -m vcmr.scripts.search library=libraries/mv query=song.mp3 format=json
    python -m vcmr.scripts.search library=libraries/mv query=song.mp3 html=out/song.html

See docs/retrieval.md (JSON schema, page).
"""

from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from vcmr.config import load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vcmr.demo.library import prepare_search
    from vcmr.retrieval.html import write_page
    from vcmr.retrieval.search import SearchConfig, format_text, search
    from vcmr.utils import MediaFileError

    cfg = load_cli_config(argv, "search.yaml", SearchConfig)
    try:
        cfg = prepare_search(cfg)
        result = search(cfg)
    except (ValueError, MediaFileError) as exc:  # LibraryError, EmbedderError, decode errors: all name the culprit
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if cfg.format == "json" else format_text(result))
    if cfg.html:
        page = write_page(result, cfg.html, cfg.html_media)
        print(f"page: {page} (open it in a browser)", file=sys.stderr if cfg.format == "json" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
