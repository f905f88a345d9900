"""Stage 2: video-conditioned music pretraining.

    python -m vcmr.scripts.vid_pretrain                       # demo: builds/reuses demo videos
    python -m vcmr.scripts.vid_pretrain --config config/vid_pretrain.yaml \
        data.root=<builder output> model.audio_init=<export | checkpoint | none> trainer.devices=8
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import CONFIG_DIR, load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    default = str(CONFIG_DIR / "vid_pretrain_demo.yaml")
    from vcmr.demo.videos import prepare
    from vcmr.trainers.video import VideoPretrainConfig, train
    from vcmr.utils import rank_zero_print

    cfg = load_cli_config(argv, default, VideoPretrainConfig)
    result = train(prepare(cfg))
    m = result["metrics"]
    rank_zero_print("\nStage 2 finished. Validation retrieval (chance level in brackets):")
    for d in ("a2v", "v2a"):
        for k in cfg.retrieval_ks:
            key = f"val/{d}/R@{k}"
            if key in m:
                rank_zero_print(f"  {d} R@{k:<3} {m[key]:.3f}  [{m.get(f'val/chance/R@{k}', float('nan')):.3f}]")
        if f"val/{d}/median_rank" in m:
            rank_zero_print(f"  {d} median rank {m[f'val/{d}/median_rank']:.1f}  [{m.get('val/chance/median_rank', float('nan')):.1f}]")
    rank_zero_print(f"  run folder   {result['run_dir']}")
    rank_zero_print(f"  checkpoint   {result['checkpoint']}")
    for name, p in result["exports"].items():
        rank_zero_print(f"  {name:<17}{p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
