"""Stage 3: supervised tagging (linear probe, MLP head or fine-tuning) + song-level scores.

With no arguments, fine-tunes a small SampleCNN on the generated demo tagging set (CPU,
a few minutes) and prints the scores::

    python -m vcmr.scripts.supervised
    python -m vcmr.scripts.supervised --config config/supervised.yaml \\
        data.name=magnatagatune data.root=<dir> model.encoder=<export|checkpoint> model.mode=mlp
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import load_cli_config
from vcmr.data.tagging import DatasetFilesError

DEFAULT_CONFIG = "supervised_demo.yaml"


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``[--config FILE] key=value ...``, train, print the scores."""
    from vcmr.trainers.supervised import SupervisedConfig, train

    cfg = load_cli_config(argv, DEFAULT_CONFIG, SupervisedConfig)
    try:
        result = train(cfg)
    except DatasetFilesError as exc:  # missing annotation files: the message says which and where from
        sys.exit(f"data error: {exc}")
    if "roc_auc" in result:
        print(f"\nbest checkpoint: {result['best_checkpoint']}")
        print(f"encoder export:  {result['encoder_export']}")
        print(f"{cfg.data.subset} song-level ROC-AUC {100 * result['roc_auc']:.2f}  PR-AUC {100 * result['pr_auc']:.2f}")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: exit status 0 on success."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
