"""Song-level evaluation of a tagger, the way tagging papers report it.

Each track is cut into windows of the model's input length ``L`` (samples). With an
overlap ratio ``r`` (``0 <= r < 1``) the hop is ``max(1, round(L * (1 - r)))`` and the
windows start at ``0, hop, 2 hop, ...`` as long as they fit inside the track.

**Last partial window rule** (``evaluation.last_window``). ``cover`` (the default): if the
last full window ends before the track does, one more window is added that ends exactly at
the last sample (start ``N - L``). It overlaps its neighbour more than ``r``, but every
sample of the track is covered by real audio and nothing is zero-padded. ``drop``: the
remainder shorter than a window is left out, as VCMR (``Tensor.unfold``) and CLMR (its
``concat_clip``) do. A track shorter than one window raises :class:`TrackTooShortError`,
naming the track.

Window probabilities (sigmoid of the logits; softmax over the classes for single-label data
such as GTZAN) are aggregated per track with ``mean``, ``max`` or ``majority_vote`` (the
mean over windows of the rounded probabilities, ``round(p) in {0, 1}``: the share of windows
voting for the tag, as VCMR's ``majority_vote``); macro ROC-AUC and PR-AUC are then
computed over tracks, overall, per tag group and per tag (:mod:`vcmr.metrics.tagging`,
which also states the rule for tags with no positive in the split). Single-label data also
gets accuracy, balanced accuracy and per-class accuracy of the arg-max class
(:mod:`vcmr.metrics.classification`).

:func:`evaluate_split` is the one sequence that stage-3 training (after fitting) and
:func:`evaluate` (a stand-alone checkpoint) both run: index -> audio store -> unusable
tracks dropped -> checks against the checkpoint -> tag groups -> window predictions ->
scores -> report (:mod:`vcmr.evaluation.report`: ``results.json``, ``per_tag.tsv``,
``per_tag.png``). The device follows one rule, ``evaluation.device``: ``auto`` (CUDA when
available, else CPU), ``cpu`` or ``cuda``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from vcmr.config import CONFIG_DIR, at_least, one_of, required, to_container
from vcmr.data.tagging import AudioStore, TaggingData, TaggingDataConfig, Track, open_tagging_data
from vcmr.evaluation.report import print_comparison, print_report, sha256_file, write_comparison, write_report
from vcmr.metrics.classification import classification_scores
from vcmr.metrics.tagging import tagging_scores
from vcmr.models.tagger import FOREIGN_FORMAT, PAIR_SEPARATOR, load_any_tagger
from vcmr.utils import progress_bar

#: ``evaluation.last_window`` -> the sentence written into every results file.
LAST_WINDOW_RULES: Dict[str, str] = {
    "cover": (
        "windows of the model input length start every round(L*(1-overlap)) samples while they fit; "
        "if the last one ends before the track, one more window ending at the last sample is added; "
        "tracks shorter than one window are an error"
    ),
    "drop": (
        "windows of the model input length start every round(L*(1-overlap)) samples while they fit; "
        "the remainder shorter than a window is left out (VCMR, CLMR); tracks shorter than one window are an error"
    ),
}
LAST_WINDOW_RULE = LAST_WINDOW_RULES["cover"]

AGGREGATIONS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda p: p.mean(axis=0),
    "max": lambda p: p.max(axis=0),
    "majority_vote": lambda p: np.round(p).mean(axis=0),
}

#: Task of the data (``TaggingIndex.task``) -> window logits to probabilities.
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "multilabel": torch.sigmoid,
    "single_label": lambda logits: torch.softmax(logits, dim=-1),
}


class TrackTooShortError(ValueError):
    """A track has fewer samples than one model window."""


def window_starts(n_samples: int, window: int, overlap: float, name: str = "track", last: str = "cover") -> np.ndarray:
    """Start sample of every window (module docstring rule).

    Args:
        n_samples: track length in samples.
        window: window length ``L`` in samples.
        overlap: ratio in [0, 1).
        name: used in the error message.
        last: last partial window rule, ``cover`` or ``drop``.

    Returns:
        ``[W]`` int64 starts; with ``cover`` the windows cover ``[0, n_samples)``.
    """
    if last not in LAST_WINDOW_RULES:
        raise ValueError(f"evaluation.last_window: must be one of {sorted(LAST_WINDOW_RULES)}, got '{last}'")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap ratio must be in [0, 1), got {overlap}")
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if n_samples < window:
        raise TrackTooShortError(
            f"{name}: {n_samples} samples is shorter than one model window of {window} samples"
        )
    hop = max(1, int(round(window * (1.0 - overlap))))
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    if last == "cover" and starts[-1] + window < n_samples:
        starts = np.append(starts, n_samples - window)
    return starts


def split_windows(audio: np.ndarray, window: int, overlap: float, name: str = "track", last: str = "cover") -> np.ndarray:
    """``[N]`` audio -> ``[W, window]`` windows (a strided view copy)."""
    starts = window_starts(int(audio.shape[0]), window, overlap, name, last)
    return np.stack([audio[s : s + window] for s in starts])


def aggregate(probs: np.ndarray, how: str) -> np.ndarray:
    """``[W, T]`` window probabilities -> ``[T]`` track scores (``mean``, ``max`` or ``majority_vote``)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{how}'; choose from {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[how](np.asarray(probs))


def setting_key(overlap: float, aggregation: str) -> str:
    """Name of one (overlap, aggregation) setting in results, e.g. ``overlap=0.5/mean``."""
    return f"overlap={float(overlap):g}/{aggregation}"


def load_tag_groups(spec: Optional[str], tags: Sequence[str]) -> Dict[str, List[str]]:
    """Tag groups for the report.

    Args:
        spec: ``None`` (no groups), ``prefix`` (group ``category---tag`` names by category,
            as MTG-Jamendo and the demo use), or a YAML file with a ``groups:`` mapping
            of group -> tag names (relative paths are also looked up in ``config/``).
        tags: the vocabulary; every grouped tag must be in it.
    """
    if spec is None:
        return {}
    if spec == "prefix":
        groups: Dict[str, List[str]] = {}
        for t in tags:
            if "---" in t:
                groups.setdefault(t.split("---", 1)[0], []).append(t)
        return groups
    path = Path(spec)
    if not path.is_file() and (CONFIG_DIR / path).is_file():
        path = CONFIG_DIR / path
    if not path.is_file():
        raise FileNotFoundError(f"evaluation.tag_groups: file not found: {spec}")
    node = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(node, dict) or not isinstance(node.get("groups"), dict):
        raise ValueError(f"{path}: expected a 'groups:' mapping of group name -> list of tags")
    vocab = set(tags)
    out = {}
    for name, members in node["groups"].items():
        missing = [t for t in members if t not in vocab]
        if missing:
            raise ValueError(f"{path}: group '{name}' names tags that the dataset does not have: {missing}")
        out[str(name)] = [str(t) for t in members]
    return out


@torch.no_grad()
def predict_windows(
    tagger: torch.nn.Module,
    tracks: Sequence[Track],
    store: AudioStore,
    overlaps: Sequence[float],
    batch_size: int,
    device: str,
    last: str = "cover",
    task: str = "multilabel",
) -> Dict[float, List[np.ndarray]]:
    """Window probabilities of every track: overlap -> list (per track) of ``[W, T]``.

    ``last``: the last partial window rule; ``task``: ``multilabel`` (sigmoid) or
    ``single_label`` (softmax over the classes).
    """
    if task not in ACTIVATIONS:
        raise ValueError(f"unknown task '{task}'; choose from {sorted(ACTIVATIONS)}")
    activation = ACTIVATIONS[task]
    tagger = tagger.to(device).eval()
    window = int(tagger.input_length)
    out: Dict[float, List[np.ndarray]] = {float(o): [] for o in overlaps}
    for track in progress_bar(tracks, desc="song-level evaluation", unit="track"):
        audio = store.load(track)
        for o in out:
            wins = split_windows(audio, window, o, name=str(store.file(track)), last=last)
            probs = []
            for i in range(0, len(wins), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(wins[i : i + batch_size], np.float32))[:, None].to(device)
                probs.append(activation(tagger(x)).float().cpu().numpy())
            out[o].append(np.concatenate(probs))
    return out


def evaluate_tagger(
    tagger: torch.nn.Module,
    tracks: Sequence[Track],
    store: AudioStore,
    tags: Sequence[str],
    eval_cfg: Mapping[str, Any],
    groups: Optional[Mapping[str, Sequence[str]]] = None,
    device: str = "cpu",
    task: str = "multilabel",
) -> Dict[str, Any]:
    """Score ``tracks`` song by song for every (overlap, aggregation) setting.

    Args:
        tagger: model mapping ``[B, 1, L]`` to ``[B, T]`` logits, with ``input_length``.
        tracks: the evaluated split.
        store: audio access.
        tags: T tag names.
        eval_cfg: ``overlaps``, ``aggregations``, ``batch_size`` and optionally
            ``last_window`` (``cover`` when absent).
        groups: tag groups for the report.
        device: torch device string.
        task: ``multilabel`` or ``single_label`` (adds accuracy, balanced accuracy and
            per-class accuracy to each setting's ``overall`` / ``per_tag``, and the confusion matrix).

    Returns:
        ``{"results": {setting: TaggingScores dict}, "primary": setting, "tags", "n_tracks",
        "input_length", "rule", "task", "predictions": {setting: [N, T]}, "labels": [N, T]}``
        (the two arrays are numpy and are not written to JSON).
    """
    if not tracks:
        raise ValueError("no tracks to evaluate")
    overlaps = [float(o) for o in eval_cfg["overlaps"]]
    aggs = [str(a) for a in eval_cfg["aggregations"]]
    for a in aggs:
        if a not in AGGREGATIONS:
            raise ValueError(f"evaluation.aggregations: unknown '{a}'; choose from {sorted(AGGREGATIONS)}")
    if not overlaps or not aggs:
        raise ValueError("evaluation.overlaps and evaluation.aggregations must not be empty")
    last = str(eval_cfg.get("last_window", "cover"))
    windows = predict_windows(tagger, tracks, store, overlaps, int(eval_cfg["batch_size"]), device, last, task)
    labels = np.stack([t.labels for t in tracks])
    results, predictions = {}, {}
    for o in overlaps:
        for a in aggs:
            key = setting_key(o, a)
            pred = np.stack([aggregate(p, a) for p in windows[o]])
            predictions[key] = pred
            results[key] = tagging_scores(labels, pred, list(tags), groups).to_dict()
            if task == "single_label":
                results[key] = _with_accuracy(results[key], classification_scores(labels, pred, list(tags)))
    return {
        "results": results,
        "primary": setting_key(overlaps[0], aggs[0]),
        "tags": list(tags),
        "n_tracks": len(tracks),
        "input_length": int(tagger.input_length),
        "rule": LAST_WINDOW_RULES[last],
        "task": task,
        "predictions": predictions,
        "labels": labels,
    }


def _with_accuracy(scores: Dict[str, Any], acc: Mapping[str, Any]) -> Dict[str, Any]:
    """Tagging scores of a single-label split plus accuracy overall and per class."""
    out = dict(scores)
    out["overall"] = {**scores["overall"], "accuracy": acc["accuracy"], "balanced_accuracy": acc["balanced_accuracy"]}
    out["per_tag"] = {t: {**v, "accuracy": acc["per_class"][t]["accuracy"]} for t, v in scores["per_tag"].items()}
    out["confusion"] = acc["confusion"]
    return out


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """``evaluation.device`` -> a torch device: ``auto`` is ``cuda`` when available, else ``cpu``."""
    if name not in DEVICES:
        raise ValueError(f"evaluation.device: unknown device '{name}'; choose from {DEVICES}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@dataclasses.dataclass
class SongEvalConfig:
    """Song-level evaluation settings (``evaluation:`` block of the stage-3 configs).

    ``overlaps``: window overlap ratios; ``aggregations``: ``mean``/``max``/``majority_vote``;
    ``last_window``: ``cover`` or ``drop`` (module docstring); ``batch_size``:
    windows per forward pass; ``tag_groups``: ``null``, ``prefix`` or a YAML file
    (:func:`load_tag_groups`); ``chart``: write ``per_tag.png``; ``device``: ``auto``,
    ``cpu`` or ``cuda`` (:func:`resolve_device`).
    """

    overlaps: List[float] = MISSING
    aggregations: List[str] = MISSING
    last_window: str = required(one_of(*LAST_WINDOW_RULES))
    batch_size: int = MISSING
    tag_groups: Optional[str] = MISSING
    chart: bool = MISSING
    device: str = MISSING


@dataclasses.dataclass
class EvalSplit:
    """The evaluated split, opened once and shared by every model scored on it."""

    data: TaggingData
    subset: str
    groups: Dict[str, List[str]]
    device: str
    eval_cfg: Dict[str, Any]

    @property
    def index(self) -> Any:
        return self.data.index

    @property
    def tracks(self) -> List[Track]:
        return self.data.index.splits[self.subset]


def open_split(data_cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any]) -> EvalSplit:
    """Index -> audio store -> unusable tracks dropped -> ``data.subset`` -> tag groups -> device."""
    data = open_tagging_data(data_cfg)
    subset = str(data_cfg["subset"])
    if subset not in data.index.splits:
        raise ValueError(f"data.subset: '{subset}' is not one of {sorted(data.index.splits)}")
    eval_cfg = to_container(eval_cfg)
    groups = load_tag_groups(eval_cfg["tag_groups"], data.index.tags)
    return EvalSplit(data, subset, groups, resolve_device(str(eval_cfg["device"])), eval_cfg)


def check_model(meta: Mapping[str, Any], split: EvalSplit, data_cfg: Mapping[str, Any]) -> None:
    """The model must predict the split's tags (in order), at the data's sample rate, for its task.

    Foreign heads (:func:`vcmr.models.tagger.load_foreign_tagger`) record no tag names or
    sample rate (``None``): only their number of outputs is checked.
    """
    ckpt_path = meta["path"]
    index = split.index
    if meta.get("sample_rate") is not None and int(data_cfg["sample_rate"]) != int(meta["sample_rate"]):
        raise ValueError(f"data.sample_rate={data_cfg['sample_rate']} but {ckpt_path} was trained at {meta['sample_rate']} Hz")
    if meta.get("tags") is None:
        if int(meta["n_tags"]) != len(index.tags):
            raise ValueError(
                f"{ckpt_path}: the head has {meta['n_tags']} outputs but {index.name} has {len(index.tags)} tags"
            )
    elif list(index.tags) != list(meta["tags"]):
        raise ValueError(
            f"{ckpt_path}: the model predicts {len(meta['tags'])} tags that differ from the "
            f"{len(index.tags)} tags of {index.name} ({data_cfg['name']}, split {data_cfg['split']}); "
            "evaluate with the data settings the model was trained with"
        )
    task = meta.get("task", "multilabel")
    if task is not None and task != index.task:
        raise ValueError(f"{ckpt_path}: a {task} model cannot be scored on {index.name}, a {index.task} dataset")


def score_model(tagger: torch.nn.Module, meta: Mapping[str, Any], split: EvalSplit) -> Dict[str, Any]:
    """:func:`evaluate_tagger` of one checked model on the opened split."""
    index = split.index
    return evaluate_tagger(
        tagger, split.tracks, split.data.store, index.tags, split.eval_cfg, split.groups, split.device, index.task
    )


def summary(result: Mapping[str, Any], json_path: Optional[Path] = None) -> Dict[str, Any]:
    """``{"results_json", "roc_auc", "pr_auc" (+ "accuracy"), "song"}`` of a result (primary setting)."""
    primary = result["results"][result["primary"]]["overall"]
    out: Dict[str, Any] = {"results_json": str(json_path) if json_path else None}
    out.update({k: primary[k] for k in ("roc_auc", "pr_auc", "accuracy") if k in primary})
    out["song"] = {k: v["overall"] for k, v in result["results"].items()}
    return out


def evaluate_split(
    tagger: torch.nn.Module,
    meta: Mapping[str, Any],
    data_cfg: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
    out_dir: str | Path,
    header: Callable[[TaggingData], Mapping[str, Any]],
    label: str,
) -> Dict[str, Any]:
    """Score a trained tagger song by song on ``data.subset``; write and print the report.

    Args:
        tagger: model mapping ``[B, 1, L]`` to ``[B, T]`` logits, with ``input_length``.
        meta: its checkpoint metadata (:func:`~vcmr.models.tagger.load_tagger`: ``tags``,
            ``sample_rate``, ``path``, ``task``); the data must match (:func:`check_model`).
        data_cfg: the ``data`` block (:class:`~vcmr.data.tagging.TaggingDataConfig`).
        eval_cfg: the ``evaluation`` block (:class:`SongEvalConfig`).
        out_dir: folder of ``results.json``, ``per_tag.tsv`` and ``per_tag.png``.
        header: the evaluated data -> entries written first in ``results.json``.
        label: end of the printed title, after ``<data> <subset>: song-level scores``.

    Returns:
        ``{"results_json", "roc_auc", "pr_auc" (primary setting; plus "accuracy" for
        single-label data), "song": {setting: overall}}``.
    """
    split = open_split(data_cfg, eval_cfg)
    check_model(meta, split, data_cfg)
    result = score_model(tagger, meta, split)
    json_path = write_report(result, out_dir, header(split.data), chart=bool(split.eval_cfg["chart"]))
    print_report(result, title=f"{split.index.name} {split.subset}: song-level scores {label}")
    return summary(result, json_path)


# --------------------------------------------------------------------------------------
# Stand-alone evaluation of a checkpoint
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class EvaluationConfig:
    """Schema of ``config/evaluation.yaml``.

    ``checkpoint``: a ``.ckpt`` written by stage-3 training, or its run folder; or a published
    tagging checkpoint (VCMR stage 3, CLMR linear evaluation; ``<encoder>::<head>`` for CLMR's
    two files, :func:`vcmr.models.tagger.load_any_tagger`). ``compare``: more checkpoints
    scored on the same tracks; with any, one side-by-side report is written. ``labels``: their
    names in that report (default: the run folders' names). ``pool_size``: SampleCNN pool size
    of published checkpoints. ``output_dir``: ``null`` writes to
    ``<run folder>/evaluation/<data.subset>`` (``.../compare_<data.subset>`` with ``compare``).
    """

    checkpoint: str = MISSING
    compare: List[str] = MISSING
    labels: List[str] = MISSING
    pool_size: int = required(at_least(1))
    data: TaggingDataConfig = dataclasses.field(default_factory=TaggingDataConfig)
    evaluation: SongEvalConfig = dataclasses.field(default_factory=SongEvalConfig)
    output_dir: Optional[str] = MISSING


def _files_of(meta: Mapping[str, Any]) -> List[Path]:
    """The file(s) a model was read from (two for ``encoder::head``)."""
    return [Path(p) for p in str(meta["path"]).split(PAIR_SEPARATOR)]


def _run_dir(ckpt_path: Path) -> Path:
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def _header(cfg: DictConfig, meta: Mapping[str, Any], data: TaggingData) -> Dict[str, Any]:
    """Provenance written first in ``results.json``: checkpoint, config and data hashes."""
    files = _files_of(meta)
    train_cfg = _run_dir(files[0]) / "config.yaml"
    cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    subset = str(cfg.data.subset)
    checkpoint = {"path": str(files[0]), "sha256": sha256_file(files[0]), "mode": meta["mode"]}
    if len(files) > 1:
        checkpoint["head"] = {"path": str(files[1]), "sha256": sha256_file(files[1])}
    if meta.get("format") == FOREIGN_FORMAT:
        checkpoint["layout"] = meta["layout"]
    return {
        "checkpoint": checkpoint,
        "config": {"sha256": hashlib.sha256(cfg_yaml.encode()).hexdigest(), "values": to_container(cfg)},
        "training_config": {"path": str(train_cfg), "sha256": sha256_file(train_cfg)} if train_cfg.is_file() else None,
        "data": {
            "name": data.index.name, "split": str(cfg.data.split), "subset": subset,
            "n_tracks": len(data.index.splits[subset]), "dropped": data.dropped.counts().get(subset, 0),
            "sha256": data.index.fingerprint(subset),
        },
    }


def evaluate(cfg: DictConfig) -> Dict[str, Any]:
    """Evaluate ``cfg.checkpoint`` (and every ``cfg.compare`` checkpoint) on ``cfg.data.subset``.

    Returns:
        One checkpoint: ``{"results_json", "roc_auc", "pr_auc" (primary setting; + "accuracy"),
        "song": {setting: overall}}``. With ``compare``: :func:`compare_checkpoints`'s result.
    """
    if cfg.compare:
        return compare_checkpoints(cfg)
    tagger, meta = load_any_tagger(cfg.checkpoint, int(cfg.pool_size))
    ckpt_path = _files_of(meta)[0]
    out_dir = Path(cfg.output_dir) if cfg.output_dir else _run_dir(ckpt_path) / "evaluation" / str(cfg.data.subset)
    result = evaluate_split(
        tagger, meta, cfg.data, cfg.evaluation, out_dir, lambda data: _header(cfg, meta, data), label=f"of {ckpt_path.name}"
    )
    print(f"\nwrote {result['results_json']}")
    return result


def compare_checkpoints(cfg: DictConfig) -> Dict[str, Any]:
    """Score ``checkpoint`` and every ``compare`` checkpoint on the same tracks; one side-by-side report.

    Each model gets its own report in ``<output_dir>/<label>/`` (as :func:`evaluate` writes
    it); the comparison goes to ``<output_dir>/comparison.json`` (every model's overall,
    per-group and per-tag scores for every setting, and differences to the first model),
    ``comparison.tsv`` (overall and per-group scores of the primary setting, one column per
    model) and ``comparison.png`` (per-group bars, one bar per model; per-class accuracy for
    single-label data). Every model is loaded separately, so no two share modules.

    Returns:
        ``{"comparison_json", "comparison_png", "models": {label: summary}}``.
    """
    specs = [str(cfg.checkpoint), *[str(c) for c in cfg.compare]]
    split = open_split(cfg.data, cfg.evaluation)
    models = []
    for spec in specs:
        tagger, meta = load_any_tagger(spec, int(cfg.pool_size))
        check_model(meta, split, cfg.data)
        models.append((tagger, meta))
    labels = [str(x) for x in cfg.labels] or [_default_label(_files_of(m)[0]) for _, m in models]
    if len(labels) != len(specs):
        raise ValueError(f"labels: {len(labels)} names for {len(specs)} checkpoints (checkpoint + compare)")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels: names must differ, got {labels}; set labels=[...]")
    first = _files_of(models[0][1])[0]
    out_dir = Path(cfg.output_dir) if cfg.output_dir else _run_dir(first) / "evaluation" / f"compare_{split.subset}"
    results: Dict[str, Dict[str, Any]] = {}
    summaries: Dict[str, Dict[str, Any]] = {}
    for label, (tagger, meta) in zip(labels, models):
        result = score_model(tagger, meta, split)
        json_path = write_report(result, out_dir / label, _header(cfg, meta, split.data), chart=bool(split.eval_cfg["chart"]))
        results[label] = result
        summaries[label] = summary(result, json_path)
    title = f"{split.index.name} {split.subset}: {len(labels)} models on the same {len(split.tracks)} tracks"
    paths = write_comparison(results, out_dir, {"data": _header(cfg, models[0][1], split.data)["data"], "models": {
        label: {"checkpoint": m["path"], "mode": m["mode"]} for label, (_, m) in zip(labels, models)}}, title)
    print_comparison(results, title)
    print(f"\nwrote {paths['json']}\n      {paths['tsv']}\n      {paths['png']}")
    return {"comparison_json": str(paths["json"]), "comparison_png": str(paths["png"]), "models": summaries}


def _default_label(ckpt_path: Path) -> str:
    """``<run name>/<version>`` for a run's checkpoint, else the file's stem."""
    run = _run_dir(ckpt_path)
    return f"{run.parent.name}/{run.name}" if ckpt_path.parent.name == "checkpoints" else ckpt_path.stem
