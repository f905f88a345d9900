"""Music <-> video retrieval protocol: segment and track level, fixed galleries, both directions.

    python -m vcmr.scripts.eval_retrieval                  # the demo stage-2 model on the demo videos
    python -m vcmr.scripts.eval_retrieval model=<export file | run folder> data.root=<builder output> \
        data.split=val|train|all device=cuda

Prints the protocol table and writes the results JSON (docs/retrieval_evaluation.md).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import load_cli_config

DEFAULT_CONFIG = "eval_retrieval.yaml"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: exit status 0 on success, 1 on a model or data error."""
    from vcmr.data.manifest import ManifestError
    from vcmr.demo.models import prepare
    from vcmr.evaluation.retrieval import RetrievalEvalConfig, evaluate
    from vcmr.models.export import CheckpointError
    from vcmr.utils import MediaFileError

    cfg = load_cli_config(argv, DEFAULT_CONFIG, RetrievalEvalConfig)
    try:
        result = evaluate(prepare(cfg))  # model=demo / data.root=demo: found or made on first use
    except (CheckpointError, ManifestError, MediaFileError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"evaluated {result['n_videos']} videos ({result['n_segments']} segments): {result['results_json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
