"""Explicit registry of the modules a config can name (``name:`` + ``args:``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from torch import nn

#: name -> constructor. Later stages register their modules here at import time.
MODULES: Dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator adding a constructor to :data:`MODULES` under ``name``."""

    def deco(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODULES and MODULES[name] is not cls:
            raise KeyError(f"module name '{name}' registered twice")
        MODULES[name] = cls
        return cls

    return deco


def build_module(name: str, args: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``MODULES[name](**args)`` with errors that name the culprit."""
    import vcmr.models  # noqa: F401  (populates MODULES)

    if name not in MODULES:
        raise KeyError(f"unknown module name '{name}'; known: {sorted(MODULES)}")
    try:
        return MODULES[name](**dict(args))
    except TypeError as exc:
        raise TypeError(f"bad arguments for module '{name}': {exc}") from exc
