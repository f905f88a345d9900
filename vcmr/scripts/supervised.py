"""Stage 3: supervised tagging (linear probe, MLP head or fine-tuning) + song-level scores.

With no arguments, fine-tunes a small SampleCNN on the generated demo tagging set (CPU,
a few minutes) and prints the scores::

    python -m vcmr.scripts.supervised
    python -m vcmr.scripts.supervised --config config/supervised.yaml \\
        data.name=magnatagatune data.root=<dir> model.audio_init=<export|checkpoint> model.mode=mlp
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

from vcmr.config import load_cli_config
from vcmr.data.tagging import DatasetFilesError
from vcmr.demo.tagging import prepare

DEFAULT_CONFIG = "supervised_demo.yaml"


def run_tagging_command(
    argv: Optional[Sequence[str]], default_config: str, schema: Type, command: Callable[[Any], Dict[str, Any]],
    paths: Sequence[Tuple[str, str]] = (),
) -> Dict[str, Any]:
    """``[--config FILE] key=value ...`` -> config -> demo set prepared (``data.name=demo``) ->
    ``command(cfg)``; prints ``paths`` (label, result key) and the song-level scores.
    Missing annotation files end the process with ``data error: ...`` naming them."""
    cfg = load_cli_config(argv, default_config, schema)
    try:
        result = command(prepare(cfg))
    except DatasetFilesError as exc:
        sys.exit(f"data error: {exc}")
    if "roc_auc" in result:  # rank 0 only
        for label, key in paths:
            print(f"{label} {result[key]}")
        print(f"{cfg.data.subset} song-level ROC-AUC {100 * result['roc_auc']:.2f}  PR-AUC {100 * result['pr_auc']:.2f}")
    return result


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``[--config FILE] key=value ...``, train, print the scores."""
    from vcmr.trainers.supervised import SupervisedConfig, train

    paths = (("\nbest checkpoint:", "best_checkpoint"), ("encoder export: ", "encoder_export"))
    return run_tagging_command(argv, DEFAULT_CONFIG, SupervisedConfig, train, paths)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point of stage 3: exit status 0 on success."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
