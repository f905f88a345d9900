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
from typing import Any, Dict, List, Mapping, Optional

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


# --------------------------------------------------------------------------------------
# Side-by-side reports of several models scored on the same tracks
# --------------------------------------------------------------------------------------


def _metrics(result: Mapping[str, Any]) -> List[str]:
    """Metric keys of a result's ``overall`` block: ROC/PR-AUC, plus accuracies for single-label data."""
    keys = ["roc_auc", "pr_auc"]
    return keys + (["accuracy", "balanced_accuracy"] if result.get("task") == "single_label" else [])


def _rows(result: Mapping[str, Any], setting: str) -> Dict[str, Dict[str, Any]]:
    """``all`` (overall) and every tag group of one setting -> its scores (``n_tags`` included)."""
    r = result["results"][setting]
    rows = {"all": {**r["overall"], "n_tags": len(r["per_tag"])}}
    rows.update({g: dict(v) for g, v in r["groups"].items()})
    return rows


def _diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def comparison(results: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Every model's scores side by side, per setting, and each model's difference to the first.

    Args:
        results: label -> :func:`vcmr.evaluation.tagging.evaluate_tagger` result; all scored
            on the same tracks with the same settings.

    Returns:
        ``{"models", "primary", "metrics", "settings": {setting: {"rows": {row: {label: scores}},
        "per_tag": {tag: {label: scores}}, "delta_to_first": {label: {row: {metric: diff}}}}}}``
        where a row is ``all`` or a tag group.
    """
    labels = list(results)
    first = results[labels[0]]
    for label in labels[1:]:
        other = results[label]
        if list(other["results"]) != list(first["results"]) or other["tags"] != first["tags"]:
            raise ValueError(f"model '{label}' was scored with other settings or tags than '{labels[0]}'")
        if other["n_tracks"] != first["n_tracks"]:
            raise ValueError(f"model '{label}' was scored on {other['n_tracks']} tracks, '{labels[0]}' on {first['n_tracks']}")
    metrics = _metrics(first)
    settings: Dict[str, Any] = {}
    for setting in first["results"]:
        per_model = {label: _rows(results[label], setting) for label in labels}
        rows = {row: {label: per_model[label][row] for label in labels} for row in per_model[labels[0]]}
        per_tag = {t: {label: results[label]["results"][setting]["per_tag"][t] for label in labels} for t in first["tags"]}
        delta = {
            label: {row: {m: _diff(rows[row][label].get(m), rows[row][labels[0]].get(m)) for m in metrics} for row in rows}
            for label in labels[1:]
        }
        settings[setting] = {"rows": rows, "per_tag": per_tag, "delta_to_first": delta}
    return {"models": labels, "primary": first["primary"], "metrics": metrics, "settings": settings,
            "n_tracks": first["n_tracks"], "rule": first["rule"], "task": first.get("task", "multilabel")}


def comparison_table(comp: Mapping[str, Any], setting: Optional[str] = None) -> str:
    """Tab-separated table of one setting: a row per ``all``/group, a column per model and metric,
    then the difference of each later model to the first."""
    setting = setting or comp["primary"]
    block = comp["settings"][setting]
    labels, metrics = comp["models"], comp["metrics"]
    head = ["group", "n_tags"] + [f"{label}:{m}" for label in labels for m in metrics]
    head += [f"{label}-{labels[0]}:{m}" for label in labels[1:] for m in metrics]
    lines = ["\t".join(head)]
    for row, scores in block["rows"].items():
        cells = [row, str(scores[labels[0]]["n_tags"])]
        cells += [_num(scores[label].get(m)) for label in labels for m in metrics]
        cells += [_num(block["delta_to_first"][label][row][m]) for label in labels[1:] for m in metrics]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def print_comparison(results: Mapping[str, Mapping[str, Any]], title: str) -> None:
    """Print the primary setting's side-by-side table (percent)."""
    comp = comparison(results)
    block = comp["settings"][comp["primary"]]
    labels, metrics = comp["models"], comp["metrics"]
    names = {"roc_auc": "ROC", "pr_auc": "PR", "accuracy": "acc", "balanced_accuracy": "bal"}
    print(f"\n{title}  ({comp['primary']}, percent)")
    col = max(8, *(len(label) // len(metrics) + 1 for label in labels))
    block_width = col * len(metrics)
    print(f"{'':<16}" + "".join(f" {label:>{block_width}}" for label in labels))
    print(f"{'group':<16}" + "".join(" " + "".join(f"{names[m]:>{col}}" for m in metrics) for _ in labels))
    for row, scores in block["rows"].items():
        cells = "".join(" " + "".join(f"{_fmt(scores[label].get(m)):>{col}}" for m in metrics) for label in labels)
        print(f"{row:<16}{cells}")


def plot_comparison(comp: Mapping[str, Any], path: str | os.PathLike, setting: Optional[str] = None) -> Path:
    """Grouped bar chart, PNG: one bar per model for ``all`` and each tag group (ROC-AUC and
    PR-AUC panels); for single-label data, overall and per-class accuracy. Values in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = setting or comp["primary"]
    block = comp["settings"][setting]
    labels = comp["models"]
    if comp["task"] == "single_label":
        panels = [("accuracy", "accuracy per class")]
        cats = ["all"] + list(block["per_tag"])
        values = {
            label: [block["rows"]["all"][label]["accuracy"]] + [block["per_tag"][c][label].get("accuracy") for c in cats[1:]]
            for label in labels
        }
        series = {"accuracy": values}
    else:
        panels = [("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")]
        cats = list(block["rows"])
        series = {m: {label: [block["rows"][c][label].get(m) for c in cats] for label in labels} for m, _ in panels}
        counts = [int(block["rows"][c][labels[0]]["n_tags"]) for c in cats]
        cats = [f"{c}\n({n} tag{'s' if n != 1 else ''})" for c, n in zip(cats, counts)]
    n_models = len(labels)
    width = 0.8 / n_models
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.1 * len(cats) * max(1, n_models / 2) + 2), 3.4 * len(panels) + 0.8))
    axes = np.atleast_1d(axes)
    colors = plt.get_cmap("tab10").colors
    for ax, (metric, name) in zip(axes, panels):
        x = np.arange(len(cats))
        for i, label in enumerate(labels):
            vals = np.array([np.nan if v is None else 100 * v for v in series[metric][label]], dtype=float)
            bars = ax.bar(x + (i - (n_models - 1) / 2) * width, vals, width, label=label, color=colors[i % len(colors)])
            for rect, v in zip(bars, vals):
                if np.isfinite(v):
                    ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 1), textcoords="offset points")
        ax.set_ylim(0, 105)
        ax.set_xticks(x)
        ax.set_xticklabels(cats, rotation=0 if len(cats) <= 8 else 45, ha="center" if len(cats) <= 8 else "right")
        ax.set_ylabel(f"{name} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles, names = axes[0].get_legend_handles_labels()
    fig.suptitle(f"{n_models} models on the same {comp['n_tracks']} tracks, {setting}")
    fig.legend(handles, names, loc="upper center", ncol=min(n_models, 4), fontsize=8, bbox_to_anchor=(0.5, 0.96))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_comparison(
    results: Mapping[str, Mapping[str, Any]], out_dir: str | os.PathLike, header: Mapping[str, Any], title: str
) -> Dict[str, Path]:
    """``comparison.json`` (header first), ``comparison.tsv`` and ``comparison.png`` in ``out_dir``."""
    out = Path(out_dir)
    comp = comparison(results)
    paths = {"json": out / "comparison.json", "tsv": out / "comparison.tsv", "png": out / "comparison.png"}
    atomic_write_text(paths["json"], json.dumps({**dict(header), "title": title, **comp}, indent=2, allow_nan=False))
    atomic_write_text(paths["tsv"], comparison_table(comp))
    plot_comparison(comp, paths["png"])
    return paths
