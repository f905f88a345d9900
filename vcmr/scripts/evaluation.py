"""Song-level evaluation of stage-3 checkpoints: results JSON, per-tag table and chart.

    python -m vcmr.scripts.evaluation --config config/evaluation.yaml checkpoint=<run dir or .ckpt> data.subset=test
    python -m vcmr.scripts.evaluation checkpoint=<run A> compare=[<run B>,<run C>] labels=[a,b,c]

With ``compare``, every model is scored on the same tracks and one side-by-side report is
written (``comparison.json``, ``comparison.tsv``, ``comparison.png``). Published VCMR
stage-3 and CLMR linear-evaluation checkpoints are accepted too (``<encoder>::<head>`` for
CLMR's two files). ``config/evaluation.yaml`` points at the demo data; for MagnaTagATune,
MTG-Jamendo or GTZAN pass the same ``data.*`` settings the models were trained with.
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
