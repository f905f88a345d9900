"""Configuration loading: YAML files + ``key=value`` overrides, validated against a schema.

A stage's schema is a dataclass whose fields carry types but no values; the values live in
the YAML files under ``config/``. Loading merges, in order:

1. the files named by the ``_base_`` key of the YAML (paths relative to that file),
2. the YAML file itself,
3. ``key=value`` overrides from the command line,

into ``OmegaConf.structured(schema)``. An unknown key, a value of the wrong type or a
required key left unset raises :class:`ConfigError` naming the key, before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from vcmr.utils import atomic_write_text

#: The ``config/`` folder of the source tree (the project is installed editable).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped, missing or out of its range."""


# --------------------------------------------------------------------------------------
# Value checks carried by schema fields (``metadata={"check": ...}``), run by load_config
# --------------------------------------------------------------------------------------

Check = Tuple[Callable[[Any], bool], str]


def required(check: Optional[Check] = None) -> Any:
    """A required schema field (no default: the YAML gives the value) with an optional value check."""
    return dataclasses.field(default=MISSING, metadata={"check": check} if check else {})


def at_least(low: float) -> Check:
    return (lambda v: v >= low, f"must be >= {low:g}")


def above(low: float) -> Check:
    return (lambda v: v > low, f"must be > {low:g}")


def in_range(low: float, high: float, closed_high: bool = False) -> Check:
    if closed_high:
        return (lambda v: low <= v <= high, f"must be in [{low:g}, {high:g}]")
    return (lambda v: low <= v < high, f"must be in [{low:g}, {high:g})")


def one_of(*choices: str) -> Check:
    return (lambda v: v in choices, f"must be one of {', '.join(choices)}")


def check_values(cfg: DictConfig, schema: Type, prefix: str = "") -> None:
    """Apply every field check of ``schema`` (recursively) to ``cfg``; ``None`` values are not checked.

    Raises:
        ConfigError: naming the first key whose value fails its check, and the rule.
    """
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        value = cfg.get(f.name) if isinstance(cfg, DictConfig) else None
        if value is None:
            continue
        sub = _dataclass_of(hints.get(f.name, f.type))
        if sub is not None and isinstance(value, DictConfig):
            check_values(value, sub, key + ".")
            continue
        check = f.metadata.get("check")
        if check is not None:
            ok, rule = check
            if not ok(value):
                raise ConfigError(f"key '{key}': {value!r} {rule}")


def _dataclass_of(tp: Any) -> Optional[Type]:
    """The dataclass in a resolved field type (``X`` or ``Optional[X]``), if any."""
    for cand in (tp, *getattr(tp, "__args__", ())):
        if dataclasses.is_dataclass(cand):
            return cand
    return None


# --------------------------------------------------------------------------------------
# Shared schema pieces. Every field is required; values come from YAML.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class ComponentConfig:
    """A registry entry: ``name`` picks the class, ``args`` are its keyword arguments."""

    name: str = MISSING
    args: Dict[str, Any] = MISSING


@dataclasses.dataclass
class TrainerConfig:
    """Arguments of ``pytorch_lightning.Trainer`` that the stages expose."""

    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = required(at_least(1))
    strategy: str = MISSING
    precision: Any = MISSING
    max_epochs: int = required(at_least(-1))
    max_steps: int = required(at_least(-1))
    accumulate_grad_batches: int = required(at_least(1))
    gradient_clip_val: Optional[float] = MISSING
    log_every_n_steps: int = required(at_least(1))
    check_val_every_n_epoch: int = required(at_least(1))
    limit_train_batches: Optional[Union[int, float]] = MISSING  # int: batches, float: fraction (Lightning)
    limit_val_batches: Optional[Union[int, float]] = MISSING
    num_sanity_val_steps: int = required(at_least(-1))
    deterministic: bool = MISSING
    enable_progress_bar: bool = MISSING


@dataclasses.dataclass
class LoggerConfig:
    """``name`` is ``tensorboard``, ``wandb``, ``csv`` or ``none``."""

    name: str = required(one_of("tensorboard", "wandb", "csv", "none"))
    project: str = MISSING


@dataclasses.dataclass
class PlateauConfig:
    """``schedule: plateau``: multiply the learning rate by ``factor`` after ``patience`` epochs
    without an improvement of ``monitor`` larger than ``threshold`` (relative); ``min_lr`` floor."""

    monitor: str = MISSING
    mode: str = required(one_of("min", "max"))
    factor: float = required(in_range(0, 1))
    patience: int = required(at_least(0))
    threshold: float = required(at_least(0))
    min_lr: float = required(at_least(0))


@dataclasses.dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (linear warmup, then cosine or constant; or
    reduce-on-plateau with the ``plateau`` block)."""

    name: str = required(one_of("adam", "adamw", "lars"))
    lr: float = required(above(0))
    weight_decay: float = required(at_least(0))
    betas: List[float] = MISSING
    momentum: float = required(in_range(0, 1))
    warmup_steps: int = required(at_least(0))
    schedule: str = required(one_of("cosine", "constant", "plateau"))
    min_lr_ratio: float = required(in_range(0, 1, closed_high=True))
    plateau: Optional[PlateauConfig] = None


@dataclasses.dataclass
class DataLoaderConfig:
    """Settings passed to every ``torch.utils.data.DataLoader`` of a stage."""

    batch_size: int = required(at_least(1))
    num_workers: int = required(at_least(0))
    pin_memory: bool = MISSING
    persistent_workers: bool = MISSING
    prefetch_factor: Optional[int] = required(at_least(1))


@dataclasses.dataclass
class CheckpointConfig:
    """The best-checkpoint callback: ``monitor`` (a logged metric), ``mode`` (min|max), file name pattern."""

    monitor: str = MISSING
    mode: str = required(one_of("min", "max"))
    filename: str = MISSING
    save_top_k: int = required(at_least(-1))


@dataclasses.dataclass
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` validations."""

    monitor: str = MISSING
    mode: str = required(one_of("min", "max"))
    patience: int = required(at_least(0))
    min_delta: float = required(at_least(0))


@dataclasses.dataclass
class CallbacksConfig:
    """Training callbacks (``config/callbacks/default.yaml``); ``early_stopping: null`` disables it."""

    checkpoint: CheckpointConfig = MISSING
    early_stopping: Optional[EarlyStoppingConfig] = None
    lr_monitor: bool = MISSING


@dataclasses.dataclass
class OutputConfig:
    """Where a run writes: ``<root>/<name>/<version>/`` (version ``null``: next free ``version_N``)."""

    root: str = MISSING
    name: str = MISSING
    version: Optional[str] = MISSING


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _read_yaml(path: Path, seen: tuple = ()) -> DictConfig:
    """Read a YAML file and merge the files its ``_base_`` key names underneath it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: '{BASE_KEY}' includes form a cycle")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml errors carry no common base class worth naming
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping")
    bases = node.pop(BASE_KEY, None)
    if bases is None:
        return node
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / str(base), seen + (path,)))
    return OmegaConf.merge(merged, node)


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {exc}") from exc


def _known_keys(node: Any, prefix: str = "") -> List[str]:
    keys: List[str] = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = f"{prefix}.{k}" if prefix else str(k)
            keys.append(full)
            keys.extend(_known_keys(node._get_node(k), full))
    return keys


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = getattr(exc, "msg", None) or str(exc).splitlines()[0]
        if isinstance(exc, ConfigKeyError):
            close = difflib.get_close_matches(str(key), _known_keys(base), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{key}'{hint}") from None
        raise ConfigError(f"{source}: key '{key}': {msg.splitlines()[0]}") from None


def missing_keys(cfg: DictConfig) -> List[str]:
    """Dotted names of required keys that have no value."""
    return sorted(OmegaConf.missing_keys(cfg))


def load_config(
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    schema: Optional[Type] = None,
) -> DictConfig:
    """Load and validate a stage configuration.

    Args:
        path: YAML file; a bare name such as ``mus_pretrain.yaml`` is looked up in
            :data:`CONFIG_DIR` when it does not exist relative to the working directory.
        overrides: ``key=value`` strings (values are parsed as YAML).
        schema: dataclass describing the keys and their types.

    Returns:
        The merged, read-only config. Raises :class:`ConfigError` naming the key for
        unknown keys, wrong types and required keys without a value.
    """
    p = Path(path)
    if not p.exists() and (CONFIG_DIR / p).exists():
        p = CONFIG_DIR / p
    node = _read_yaml(p)
    cfg = OmegaConf.structured(schema) if schema is not None else OmegaConf.create()
    if schema is None:
        cfg = node
        OmegaConf.set_struct(cfg, True)
    else:
        cfg = _merge(cfg, node, str(p))
    if overrides:
        cfg = _merge(cfg, _parse_overrides(overrides), "command-line override")
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(f"{p}: required key(s) without a value: {', '.join(missing)}")
    if schema is not None:
        check_values(cfg, schema)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{p}: cannot resolve interpolation: {exc}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_container(node: Any) -> Any:
    """Plain dict/list copy of a config node (for ``**kwargs``)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def save_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def parse_cli(argv: Optional[Sequence[str]], default_config: str) -> tuple[str, List[str]]:
    """Split ``[--config FILE] key=value ...`` into the config path and the overrides."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Overrides are key=value pairs, e.g. trainer.devices=4 optim.lr=3e-4"
    )
    parser.add_argument("--config", default=default_config, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    return args.config, list(args.overrides)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn a :class:`ConfigError` raised inside the block into ``config error: ...`` on stderr and exit status 2."""
    try:
        yield
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def load_cli_config(argv: Optional[Sequence[str]], default_config: str, schema: Type) -> DictConfig:
    """``parse_cli`` + ``load_config`` for an entry point.

    A :class:`ConfigError` is printed as ``config error: ...`` on stderr and ends the
    process with exit status 2, before any work starts.
    """
    path, overrides = parse_cli(argv, default_config)
    with cli_errors():
        return load_config(path, overrides, schema=schema)


def with_values(cfg: DictConfig, values: Dict[str, Any]) -> DictConfig:
    """A read-only copy of ``cfg`` with dotted keys set, e.g. ``{"data.root": "/data/x"}``.

    Keys must exist in ``cfg`` (a typo raises :class:`ConfigError` naming it).
    """
    out = OmegaConf.merge(cfg, {})
    OmegaConf.set_readonly(out, False)
    for key, value in values.items():
        if OmegaConf.select(out, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"with_values: unknown key '{key}'")
        OmegaConf.update(out, key, value, merge=False)
    OmegaConf.set_readonly(out, True)
    return out


_ABSENT = object()
