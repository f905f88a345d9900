"""Train and score a retrieval model: VM-NET, the siamese clip matcher, its regression baseline,
or VCMR's joint model, on the same split.

    python -m vcmr.scripts.train_retrieval model=vmnet            # demo data, CPU
    python -m vcmr.scripts.train_retrieval model=siamese|regression|vcmr
    python -m vcmr.scripts.train_retrieval model=vmnet recipes.vmnet.audio_features=stage2_audio
    python -m vcmr.scripts.train_retrieval --config config/train_retrieval.yaml model=vmnet data.root=<builder output>

See docs/seed_models.md.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import CONFIG_DIR, load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vcmr.demo.features import prepare_training
    from vcmr.trainers.retrieval import TrainRetrievalConfig, train
    from vcmr.utils import rank_zero_print

    cfg = load_cli_config(argv, str(CONFIG_DIR / "train_retrieval_demo.yaml"), TrainRetrievalConfig)
    result = train(prepare_training(cfg))
    rank_zero_print(f"\n  run folder   {result['run_dir']}")
    rank_zero_print(f"  checkpoint   {result['checkpoint']}")
    rank_zero_print(f"  export       {result['export']}")
    rank_zero_print(f"  results      {result['results_json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
