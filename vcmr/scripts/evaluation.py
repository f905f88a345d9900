"""Song-level evaluation of a stage-3 checkpoint: results JSON, per-tag table and chart.

    python -m vcmr.scripts.evaluation --config config/evaluation.yaml checkpoint=<run dir or .ckpt> data.subset=test

``config/evaluation.yaml`` points at the demo data; for MagnaTagATune or MTG-Jamendo pass
the same ``data.*`` settings the model was trained with.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.scripts.supervised import run_tagging_command

DEFAULT_CONFIG = "evaluation.yaml"


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``[--config FILE] key=value ...`` and evaluate the checkpoint."""
    from vcmr.evaluation.tagging import EvaluationConfig, evaluate

    return run_tagging_command(argv, DEFAULT_CONFIG, EvaluationConfig, evaluate)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point of the evaluation: exit status 0 on success."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
