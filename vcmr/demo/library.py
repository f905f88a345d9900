"""The demo clip and music libraries, and the demo search: ``demo`` values made concrete.

``input: demo`` is the folder of generated demo music videos (the ``videos/`` folder next to
the demo library set, :func:`vcmr.demo.models.demo_library_set`), ``model: demo`` the newest
demo stage-2 export (:func:`vcmr.demo.models.ensure_demo_model`, trained once if missing),
and ``output: demo`` ``<demo.output_root>/<kind>_<model sha256[:10]>``, so a newer demo
model gets a library of its own. For the search, ``library: demo`` is that library (built
if missing) and ``query: demo`` the first demo video the model did not train on; the clip
library hears its soundtrack, the music library sees its picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from omegaconf import DictConfig

from vcmr.config import CONFIG_DIR, load_config, with_values

DEMO_LIBRARY_CONFIG = "library_demo.yaml"


def demo_videos() -> Path:
    """The generated demo music videos of the demo library set (built or reused)."""
    from vcmr.demo.models import demo_library_set

    return demo_library_set().parent / "videos"


def _sha256(path: str) -> str:
    from vcmr.models.export import find_model_file
    from vcmr.retrieval.embedder import file_sha256

    return file_sha256(find_model_file(path))


def prepare(cfg: DictConfig) -> DictConfig:
    """A library config with ``input``, ``model`` and ``output`` set to ``demo`` made concrete."""
    values: Dict[str, Any] = {}
    runs = str(cfg.demo.get("runs", "runs"))
    if str(cfg.model) == "demo":
        from vcmr.demo.models import ensure_demo_model

        values["model"] = str(ensure_demo_model(runs))
    if str(cfg.input) == "demo":
        values["input"] = str(demo_videos())
    if str(cfg.output) == "demo":
        model = values.get("model", str(cfg.model))
        root = cfg.demo.get("output_root", "runs/library_demo")
        values["output"] = str(Path(str(root)) / f"{cfg.kind}_{_sha256(model)[:10]}")
    return with_values(cfg, values) if values else cfg


def ensure_demo_library(kind: str = "clips", overrides: Sequence[str] = ()) -> Path:
    """The demo library of ``kind`` (``clips`` or ``music``), built once and then reused."""
    from vcmr.retrieval.library import LibraryConfig, build, read_library_yaml

    cfg = prepare(load_config(CONFIG_DIR / DEMO_LIBRARY_CONFIG, [f"kind={kind}", *overrides], LibraryConfig))
    root = Path(str(cfg.output))
    if (root / "library.yaml").is_file() and "assembled" in read_library_yaml(root):
        return root
    summary = build(cfg)
    print(summary)
    if summary.check is not None:
        from vcmr.retrieval.check import format_check

        print(format_check(summary.check, list(cfg.check.ks)))
    return root


def held_out_query(library: Path, model: Optional[str] = None) -> Path:
    """The source file of the first library item (sorted ids) that the model did not train on.

    Uses the model run's ``data.val_fraction`` and the stage-2 split rule
    (:func:`vcmr.utils.hash_split` of the video id); falls back to the first item.
    """
    from vcmr.retrieval.check import held_out_ids
    from vcmr.retrieval.library import read_library_yaml, read_records

    records = [r for r in read_records(library).values() if r["status"] == "ok"]
    if not records:
        raise ValueError(f"{library}: no usable item to take a demo query from")
    model_path = model or read_library_yaml(library)["model"]["path"]
    held = held_out_ids(model_path, [r["item_id"] for r in records])
    pick = next((r for r in records if r["item_id"] in held), records[0])
    return Path(pick["source"])


def prepare_search(cfg: DictConfig) -> DictConfig:
    """A search config with ``library``/``query`` set to ``demo`` made concrete (and the demo
    page path when ``html`` is unset)."""
    values: Dict[str, Any] = {}
    library = str(cfg.library)
    if library == "demo":
        library = str(ensure_demo_library(str(cfg.demo.get("kind", "clips"))))
        values["library"] = library
        if cfg.html in (None, ""):
            values["html"] = str(cfg.demo.get("html", "runs/search_demo/search.html"))
    if str(cfg.query) == "demo":
        values["query"] = str(held_out_query(Path(library), None if cfg.model in (None, "") else str(cfg.model)))
    return with_values(cfg, values) if values else cfg


__all__ = ["demo_videos", "ensure_demo_library", "held_out_query", "prepare", "prepare_search"]
