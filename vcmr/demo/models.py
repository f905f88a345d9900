"""The demo stage-2 model: found under ``runs/``, or trained once on the demo music videos.

Commands that need a joint music-video model accept ``model=demo``; :func:`ensure_demo_model`
turns that word into the newest demo export, and :func:`prepare` does it (and
``data.root=demo``) for the retrieval evaluation config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import DictConfig

from vcmr.config import CONFIG_DIR, load_config, with_values
from vcmr.utils import rank_zero_print

#: The stage-2 demo config; its ``output.name`` is the folder searched under ``runs/``.
DEMO_STAGE2_CONFIG = "vid_pretrain_demo.yaml"
DEMO_RUN_NAME = "vid_pretrain_demo"
EXPORT_GLOB = f"**/{DEMO_RUN_NAME}/version_*/export/model.safetensors"


def find_demo_models(runs: str | os.PathLike = "runs") -> List[Path]:
    """Every demo stage-2 export under ``runs`` (``runs/demo/vid_pretrain_demo/...`` of the
    end-to-end demo, ``runs/vid_pretrain_demo/...`` of the stand-alone stage-2 demo), newest first."""
    root = Path(runs)
    if not root.is_dir():
        return []
    return sorted(root.glob(EXPORT_GLOB), key=lambda p: (p.stat().st_mtime, str(p)), reverse=True)


def ensure_demo_model(runs: str | os.PathLike = "runs", overrides: Sequence[str] = ()) -> Path:
    """The newest demo stage-2 export under ``runs``, training the stage-2 demo once if there is none.

    Args:
        runs: folder searched (and, when training, ``output.root`` of the new run).
        overrides: extra ``key=value`` overrides of ``config/vid_pretrain_demo.yaml`` for
            the training run.

    Returns:
        Path of ``.../vid_pretrain_demo/version_N/export/model.safetensors``.
    """
    found = find_demo_models(runs)
    if found:
        return found[0]
    from vcmr.demo.videos import prepare as prepare_videos
    from vcmr.trainers.video import VideoPretrainConfig, train

    rank_zero_print(
        f"No demo stage-2 model under {Path(runs)}/ (looked for {EXPORT_GLOB}); training the stage-2 demo "
        f"({DEMO_STAGE2_CONFIG}) once into {Path(runs) / DEMO_RUN_NAME}/ - a few minutes on CPU."
    )
    cfg = load_config(CONFIG_DIR / DEMO_STAGE2_CONFIG, [f"output.root={runs}", *overrides], VideoPretrainConfig)
    result = train(prepare_videos(cfg))
    path = Path(result["exports"]["model"])
    rank_zero_print(f"Demo stage-2 model: {path}")
    return path


#: The config whose ``demo.cfg_overrides`` define the demo library set (160 videos of 24 s),
#: used by the seed-model, feature and library demos.
DEMO_LIBRARY_SET_CONFIG = "train_retrieval_demo.yaml"


def _dataset_of(config: str) -> Path:
    from vcmr.demo.videos import ensure_demo_dataset

    # Only the demo block is read: no schema, so this does not depend on training settings.
    cfg = load_config(CONFIG_DIR / config)
    return ensure_demo_dataset(list(cfg.demo.get("cfg_overrides", [])))


def demo_dataset() -> Path:
    """The stage-2 demo music-video dataset, built with the dataset settings of the stage-2 demo config."""
    return _dataset_of(DEMO_STAGE2_CONFIG)


def demo_library_set() -> Path:
    """The demo library set: longer videos (24 s) than the stage-2 set, the same generated songs
    for the first 160, and validation videos the stage-2 demo model holds out too."""
    return _dataset_of(DEMO_LIBRARY_SET_CONFIG)


def prepare(cfg: DictConfig, runs: Optional[str | os.PathLike] = None) -> DictConfig:
    """A retrieval-evaluation config with ``model=demo`` and ``data.root=demo`` made concrete.

    ``model: demo`` becomes :func:`ensure_demo_model` (``runs`` defaults to ``./runs``) and
    ``data.root: demo`` the demo dataset (:func:`demo_dataset`). Other values are kept.
    """
    values = {}
    if str(cfg.model) == "demo":
        values["model"] = str(ensure_demo_model(runs if runs is not None else "runs"))
    if str(cfg.data.root) == "demo":
        values["data.root"] = str(demo_dataset())
    return with_values(cfg, values) if values else cfg
