"""Compare VCMR's joint model with the seed retrieval models on one split of the demo data.

    python benchmarks/compare_retrieval.py                      # demo data, CPU; prints a Markdown table
    python benchmarks/compare_retrieval.py --runs runs/compare_retrieval --out table.md trainer.max_epochs=5

Every row is one ``vcmr.trainers.retrieval.train`` run of ``config/train_retrieval_demo.yaml``
(the demo library set; its validation videos are held out by the demo stage-2 model too), in this order:

1. VCMR's joint model: the demo stage-2 export under ``--runs`` (trained once there if none);
2. VM-NET on its hand-crafted music features;
3. VM-NET on the project's learned music features (that stage-2 model's audio encoder);
4. the siamese clip matcher; 5. its regression baseline.

Scores are track level (one song and one video embedding per validation video, the
``track`` level of the retrieval protocol, both directions) with their chance levels, plus
the clip/segment level where the model has one. VM-NET's in-batch protocol is printed by
each run; with fewer validation videos than its batch of 1,000 it is the track level.
Published figures of VM-NET's refined fork (their data, in-batch of 1,024) are added below
the measured rows, labelled as theirs. ``key=value`` arguments are passed to every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

#: (label, model, extra overrides)
ROWS: List[Tuple[str, str, List[str]]] = [
    ("VCMR joint model (stage 2)", "vcmr", []),
    ("VM-NET, hand-crafted music features", "vmnet", []),
    ("VM-NET, learned music features (stage-2 audio encoder)", "vmnet", ["recipes.vmnet.audio_features=stage2_audio"]),
    ("Siamese clip matcher (10-s clips)", "siamese", []),
    ("Regression baseline (10-s clips)", "regression", []),
]

#: VM-NET's refined fork (MorrisXu-Driving/Video-Music_Cross-Modal_Retrival), in-batch of 1,024, their data.
PUBLISHED = {"m2v": {"R@1": 0.026, "R@10": 0.139}, "v2m": {"R@1": 0.035, "R@10": 0.133}, "batch": 1024}


def run_one(model: str, extra: Sequence[str], runs: Path) -> Dict[str, Any]:
    from vcmr.config import CONFIG_DIR, load_config
    from vcmr.demo.features import prepare_training
    from vcmr.trainers.retrieval import TrainRetrievalConfig, train

    over = [f"model={model}", f"output.root={runs}", "logger.name=csv", "trainer.enable_progress_bar=false",
            "progress=false", *extra]
    cfg = prepare_training(load_config(CONFIG_DIR / "train_retrieval_demo.yaml", over, TrainRetrievalConfig), str(runs))
    if cfg.recipes[model].get("audio_features") == "stage2_audio":
        refresh_stage2_cache(cfg)
    start = time.time()
    result = train(cfg)
    result["seconds"] = time.time() - start
    return result


def refresh_stage2_cache(cfg: Any) -> None:
    """Recompute the cached learned music features when they come from another stage-2 model."""
    from vcmr.config import to_container
    from vcmr.data.feature_cache import read_settings
    from vcmr.preprocess.features import build_extractor, extract_features

    args = to_container(cfg.features.stage2_audio)
    ext = build_extractor("stage2_audio", args)
    recorded = read_settings(cfg.data.root, "stage2_audio")
    stale = recorded is not None and recorded.get("settings") != json.loads(json.dumps(ext.settings()))
    print(extract_features(cfg.data.root, "stage2_audio", args, overwrite=stale, progress=False, extractor=ext))


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(results: List[Tuple[str, Dict[str, Any]]]) -> str:
    head = ("| model | level (gallery) | m→v R@1 | m→v R@5 | m→v R@10 | m→v medR | v→m R@1 | v→m R@5 | v→m R@10 "
            "| v→m medR | chance R@1 / R@5 / R@10 / medR |")
    lines = [head, "|" + "---|" * 11]
    for label, res in results:
        for level in ("track", "segment"):
            entry = res["protocol"].get(level, {}).get("full")
            if entry is None:
                continue
            a, v, c = entry["a2v"], entry["v2a"], entry["chance"]
            unit = "track" if level == "track" else "clip/segment"
            lines.append(
                f"| {label if level == 'track' else ''} | {unit} ({entry['n_items']}) | {pct(a['R@1'])} | {pct(a['R@5'])} "
                f"| {pct(a['R@10'])} | {a['median_rank']:.1f} | {pct(v['R@1'])} | {pct(v['R@5'])} | {pct(v['R@10'])} "
                f"| {v['median_rank']:.1f} | {pct(c['R@1'])} / {pct(c['R@5'])} / {pct(c['R@10'])} / {c['median_rank']:.1f} |"
            )
    p = PUBLISHED
    lines.append(
        f"| *VM-NET refined fork, published (their data, not this project's)* | in-batch ({p['batch']}) "
        f"| {pct(p['m2v']['R@1'])} | – | {pct(p['m2v']['R@10'])} | – | {pct(p['v2m']['R@1'])} | – "
        f"| {pct(p['v2m']['R@10'])} | – | {pct(1 / p['batch'])} / {pct(5 / p['batch'])} / {pct(10 / p['batch'])} "
        f"/ {(p['batch'] + 1) / 2:.1f} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/compare_retrieval", help="run folders and the demo stage-2 model")
    parser.add_argument("--out", default=None, help="also write the Markdown table (and a JSON) here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small models)")
    args, overrides = parser.parse_known_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    results = []
    for label, model, extra in ROWS:
        print(f"\n=== {label} ===", flush=True)
        results.append((label, run_one(model, [*extra, *overrides], runs)))
    md = table(results)
    print("\n" + md)
    for label, res in results:
        print(f"  {label}: {res['seconds']:.0f} s, export {res['export']}, results {res['results_json']}")
    if args.out:
        from vcmr.utils import atomic_write_text

        out = Path(args.out)
        atomic_write_text(out, md + "\n")
        summary = {label: {k: res[k] for k in ("protocol", "vmnet_protocol", "counts", "export", "seconds")}
                   for label, res in results}
        atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
