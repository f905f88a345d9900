"""Stage 1: contrastive music pretraining.

    python -m vcmr.scripts.mus_pretrain                       # demo run on generated music
    python -m vcmr.scripts.mus_pretrain --config config/mus_pretrain.yaml \
        data.root=/data/audio trainer.devices=4 trainer.strategy=ddp
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import CONFIG_DIR, load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    default = str(CONFIG_DIR / "mus_pretrain_demo.yaml")
    from vcmr.demo.music import prepare
    from vcmr.trainers.music import MusicPretrainConfig, train
    from vcmr.utils import rank_zero_print

    cfg = load_cli_config(argv, default, MusicPretrainConfig)
    result = train(prepare(cfg))

    rank_zero_print("\nStage 1 finished.")
    for key in ("val/loss", "val/view_top1"):
        if key in result["metrics"]:
            rank_zero_print(f"  {key:<16}{result['metrics'][key]:.4f}")
    rank_zero_print(f"  run folder      {result['run_dir']}")
    rank_zero_print(f"  config          {result['run_dir'] / 'config.yaml'}")
    rank_zero_print(f"  checkpoint      {result['checkpoint']}")
    rank_zero_print(f"  exported encoder {result['export']}")
    rank_zero_print(f"  TensorBoard     tensorboard --logdir {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
