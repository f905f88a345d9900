"""The end-to-end demo: stage 1 -> dataset builder -> stage 2 -> stage 3, on generated data.

Each stage runs its own demo config; each hands over to the next through its export, as
a real project would (stage-1 ``encoder.safetensors`` initialises stage 2, whose
``audio_encoder.safetensors`` is the frozen encoder of the stage-3 tagger).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

from vcmr.config import CONFIG_DIR, load_config
from vcmr.utils import rank_zero_print


def run_demo(output_root: str = "runs/demo", stage3_mode: str = "finetune", extra: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the three demo stages in order; returns each stage's result.

    Args:
        output_root: parent folder of the three run folders.
        stage3_mode: ``linear``, ``mlp`` or ``finetune`` for the tagging stage.
        extra: overrides applied to every stage (keys they all share, e.g. ``trainer.max_epochs=1``).
    """
    from vcmr.demo import music, tagging, videos
    from vcmr.trainers.music import MusicPretrainConfig
    from vcmr.trainers.music import train as train_music
    from vcmr.trainers.supervised import SupervisedConfig
    from vcmr.trainers.supervised import train as train_supervised
    from vcmr.trainers.video import VideoPretrainConfig
    from vcmr.trainers.video import train as train_video

    common = [f"output.root={output_root}", *extra]
    rank_zero_print("=== Stage 1: contrastive music pretraining on generated songs ===")
    cfg1 = load_config(CONFIG_DIR / "mus_pretrain_demo.yaml", common, MusicPretrainConfig)
    r1 = train_music(music.prepare(cfg1))

    rank_zero_print("\n=== Dataset builder + stage 2: video-conditioned pretraining ===")
    from_stage1 = list(load_config(CONFIG_DIR / "vid_pretrain_demo.yaml").demo.get("from_stage1", []))
    cfg2 = load_config(
        CONFIG_DIR / "vid_pretrain_demo.yaml", [*from_stage1, *common, f"model.audio_init={r1['export']}"],
        VideoPretrainConfig,
    )
    r2 = train_video(videos.prepare(cfg2))

    rank_zero_print("\n=== Stage 3: tagging with the stage-2 encoder ===")
    cfg3 = load_config(
        CONFIG_DIR / "supervised_demo.yaml",
        [
            *common,
            f"model.audio_init={r2['exports']['audio_encoder']}",
            f"model.mode={stage3_mode}",
            f"data.sample_rate={cfg2.data.sample_rate}",
        ],
        SupervisedConfig,
    )
    r3 = train_supervised(tagging.prepare(cfg3))

    m1, m2 = r1["metrics"], r2["metrics"]
    rank_zero_print("\n=== Demo summary ===")
    rank_zero_print(f"stage 1  val/view_top1 {m1.get('val/view_top1', float('nan')):.3f}   export {r1['export']}")
    rank_zero_print(
        "stage 2  R@1 a2v {:.3f} v2a {:.3f} (chance {:.3f}); median rank a2v {:.1f} v2a {:.1f} (chance {:.1f})".format(
            m2.get("val/a2v/R@1", float("nan")), m2.get("val/v2a/R@1", float("nan")),
            m2.get("val/chance/R@1", float("nan")), m2.get("val/a2v/median_rank", float("nan")),
            m2.get("val/v2a/median_rank", float("nan")), m2.get("val/chance/median_rank", float("nan")),
        )
    )
    rank_zero_print(f"         export {r2['exports'].get('audio_encoder')}")
    if "roc_auc" in r3:
        rank_zero_print(
            f"stage 3  song-level ROC-AUC {100 * r3['roc_auc']:.2f}  PR-AUC {100 * r3['pr_auc']:.2f} "
            f"({stage3_mode}, from the stage-2 encoder)   run {r3['run_dir']}"
        )
    return {"stage1": r1, "stage2": r2, "stage3": r3}
