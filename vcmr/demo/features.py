"""Demo inputs of the feature extraction and retrieval-training commands.

The word ``demo`` in those configs becomes generated files here, and nowhere below this
package: ``input=demo`` / ``data.root=demo`` is the demo library set
(:func:`vcmr.demo.videos.ensure_demo_dataset` with the ``demo.cfg_overrides`` of the config:
160 videos of 24 s, whose validation videos the stage-2 demo model holds out too), and a
stage-2 model given as ``demo`` (``features.stage2_audio.model``, ``recipes.vcmr.export``)
is the newest demo export under ``runs/``, trained once if there is none
(:func:`vcmr.demo.models.ensure_demo_model`). A demo model is only looked for when the run
uses it.
"""

from __future__ import annotations

from typing import Dict, List

from omegaconf import DictConfig, OmegaConf


DEMO = "demo"
#: Config keys naming a stage-2 model that may be ``demo``.
STAGE2_AUDIO_MODEL = "features.stage2_audio.model"
VCMR_EXPORT = "recipes.vcmr.export"


def _dataset(cfg: DictConfig) -> str:
    from vcmr.demo.videos import ensure_demo_dataset

    return str(ensure_demo_dataset(list(cfg.demo.get("cfg_overrides", []))))


def _model(runs: str) -> str:
    from vcmr.demo.models import ensure_demo_model

    return str(ensure_demo_model(runs))


def _with_values(cfg: DictConfig, values: Dict[str, str]) -> DictConfig:
    """A read-only copy of ``cfg`` with existing dotted keys set."""
    out = OmegaConf.merge(cfg, {})
    OmegaConf.set_readonly(out, False)
    for key, value in values.items():
        OmegaConf.update(out, key, value, merge=False)
    OmegaConf.set_readonly(out, True)
    return out


def _resolve(cfg: DictConfig, root_key: str, model_keys: List[str], runs: str) -> DictConfig:
    values: Dict[str, str] = {}
    if OmegaConf.select(cfg, root_key) == DEMO:
        values[root_key] = _dataset(cfg)
    for key in model_keys:
        if OmegaConf.select(cfg, key) == DEMO:
            values[key] = _model(runs)
    return _with_values(cfg, values) if values else cfg


def prepare_extraction(cfg: DictConfig, runs: str = "runs") -> DictConfig:
    """An ``extract_features`` config with ``input=demo`` (and a ``demo`` stage-2 model when
    ``stage2_audio`` is extracted) made concrete."""
    kinds = [k.strip() for k in str(cfg.kind).split(",")]
    return _resolve(cfg, "input", [STAGE2_AUDIO_MODEL] if "stage2_audio" in kinds else [], runs)


def prepare_training(cfg: DictConfig, runs: str = "runs") -> DictConfig:
    """A ``train_retrieval`` config with ``data.root=demo`` and the ``demo`` models the picked
    recipe uses made concrete."""
    block = cfg.recipes.get(cfg.model, {}) if cfg.get("recipes") else {}
    keys = []
    if block.get("audio_features") == "stage2_audio" or block.get("video_features") == "stage2_audio":
        keys.append(STAGE2_AUDIO_MODEL)
    if cfg.model == "vcmr":
        keys.append(VCMR_EXPORT)
    from vcmr.demo.timing import prepare_demo_tags

    return prepare_demo_tags(_resolve(cfg, "data.root", keys, runs))


__all__ = ["prepare_extraction", "prepare_training"]
