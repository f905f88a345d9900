"""Reports of a song-level evaluation: printed summary, ``per_tag.tsv``, ``per_tag.png`` and
``results.json``.

Every function takes the result dict of :func:`vcmr.evaluation.tagging.evaluate_tagger`
(``results`` per setting, ``primary`` setting, ``n_tracks``, ``input_length``, ...); the
per-tag table and chart show the primary setting (first overlap, first aggregation).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from vcmr.utils import atomic_path, atomic_write_text


def _fmt(x: Optional[float]) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def _num(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.6f}"


def per_tag_table(result: Mapping[str, Any], setting: Optional[str] = None) -> str:
    """Tab-separated per-tag table (tag, positives, ROC-AUC, PR-AUC; plus accuracy for
    single-label data) of one setting."""
    setting = setting or result["primary"]
    per_tag = result["results"][setting]["per_tag"]
    with_acc = any("accuracy" in s for s in per_tag.values())
    rows = ["tag\tn_pos\troc_auc\tpr_auc" + ("\taccuracy" if with_acc else "")]
    for tag, s in per_tag.items():
        row = f"{tag}\t{s['n_pos']}\t{_num(s['roc_auc'])}\t{_num(s['pr_auc'])}"
        rows.append(row + (f"\t{_num(s.get('accuracy'))}" if with_acc else ""))
    return "\n".join(rows) + "\n"


def print_report(result: Mapping[str, Any], title: str) -> None:
    """Print overall/group scores of every setting and the per-tag table of the primary one."""
    print(f"\n{title}  ({result['n_tracks']} tracks, window {result['input_length']} samples)")
    with_acc = result.get("task") == "single_label"
    print(f"{'setting':<22} {'ROC-AUC':>8} {'PR-AUC':>8}" + (f" {'acc.':>8} {'bal.acc.':>8}" if with_acc else ""))
    for key, r in result["results"].items():
        o = r["overall"]
        extra = f" {_fmt(o['accuracy']):>8} {_fmt(o['balanced_accuracy']):>8}" if with_acc else ""
        print(f"{key:<22} {_fmt(o['roc_auc']):>8} {_fmt(o['pr_auc']):>8}{extra}")
    primary = result["results"][result["primary"]]
    if primary["groups"]:
        print(f"\ngroups ({result['primary']})")
        for g, s in primary["groups"].items():
            print(f"  {g:<20} {_fmt(s['roc_auc']):>8} {_fmt(s['pr_auc']):>8}  ({s['n_tags']} tags)")
    print(f"\nper tag ({result['primary']})")
    print(f"  {'tag':<28} {'pos':>5} {'ROC-AUC':>8} {'PR-AUC':>8}" + (f" {'acc.':>8}" if with_acc else ""))
    for tag, s in primary["per_tag"].items():
        extra = f" {_fmt(s.get('accuracy')):>8}" if with_acc else ""
        print(f"  {tag:<28} {s['n_pos']:>5} {_fmt(s['roc_auc']):>8} {_fmt(s['pr_auc']):>8}{extra}")
    if primary["undefined"]:
        print(f"  ({len(primary['undefined'])} tag(s) with a single class in this split left out of the averages)")


def plot_per_tag(result: Mapping[str, Any], path: str | os.PathLike, setting: Optional[str] = None) -> Path:
    """Horizontal bar chart of per-tag ROC-AUC and PR-AUC (sorted by ROC-AUC), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = setting or result["primary"]
    per_tag = result["results"][setting]["per_tag"]
    items = sorted(per_tag.items(), key=lambda kv: -1.0 if kv[1]["roc_auc"] is None else kv[1]["roc_auc"])
    names = [k for k, _ in items]
    roc = [np.nan if v["roc_auc"] is None else v["roc_auc"] for _, v in items]
    pr = [np.nan if v["pr_auc"] is None else v["pr_auc"] for _, v in items]
    fig, axes = plt.subplots(1, 2, figsize=(10, max(3.0, 0.22 * len(names) + 1.0)), sharey=True)
    for ax, values, label in zip(axes, (roc, pr), ("ROC-AUC", "PR-AUC")):
        ax.barh(np.arange(len(names)), values, color="tab:blue" if label == "ROC-AUC" else "tab:orange")
        ax.set_xlim(0, 1)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(np.arange(len(names)))
    axes[0].set_yticklabels(names, fontsize=7)
    fig.suptitle(f"per-tag scores, {setting}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def write_report(
    result: Mapping[str, Any], out_dir: str | os.PathLike, header: Mapping[str, Any], chart: bool
) -> Path:
    """Write ``results.json``, ``per_tag.tsv`` and (optionally) ``per_tag.png`` into ``out_dir``.

    ``header`` entries (checkpoint, config and data hashes, ...) go first in the JSON.
    Returns the JSON path.
    """
    out = Path(out_dir)
    body = {k: v for k, v in result.items() if k not in ("predictions", "labels")}
    doc = {**dict(header), **body}
    json_path = out / "results.json"
    atomic_write_text(json_path, json.dumps(doc, indent=2, allow_nan=False))
    atomic_write_text(out / "per_tag.tsv", per_tag_table(result))
    if chart:
        plot_per_tag(result, out / "per_tag.png")
    return json_path


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
