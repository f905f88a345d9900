"""Song-level evaluation of a stage-3 checkpoint: results JSON, per-tag table and chart.

    python -m vcmr.scripts.evaluation --config config/evaluation.yaml checkpoint=<run dir or .ckpt> data.subset=test

``config/evaluation.yaml`` points at the demo data; for MagnaTagATune or MTG-Jamendo pass
the same ``data.*`` settings the model was trained with.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import load_cli_config
from vcmr.data.tagging import DatasetFilesError

DEFAULT_CONFIG = "evaluation.yaml"


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``[--config FILE] key=value ...`` and evaluate the checkpoint."""
    from vcmr.evaluation import EvaluationConfig, evaluate

    cfg = load_cli_config(argv, DEFAULT_CONFIG, EvaluationConfig)
    try:
        result = evaluate(cfg)
    except DatasetFilesError as exc:  # missing annotation files: the message says which and where from
        sys.exit(f"data error: {exc}")
    print(f"{cfg.data.subset} song-level ROC-AUC {100 * result['roc_auc']:.2f}  PR-AUC {100 * result['pr_auc']:.2f}")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: exit status 0 on success."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
