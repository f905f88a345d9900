"""Optimizers and learning-rate schedules built from :class:`vcmr.config.OptimConfig`."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Mapping

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


class LARS(Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    Parameters with one dimension (biases, batch-norm) get neither weight decay nor the
    trust-ratio scaling, as is usual for SimCLR-style large-batch training.

    Args:
        params: parameters or parameter groups.
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty on matrices/kernels.
        eta: trust coefficient.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float, weight_decay: float, eta: float = 0.001):
        if lr <= 0:
            raise ValueError(f"LARS lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if p.ndim > 1:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(d_p)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    d_p = d_p.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _adam(params: Iterable, cfg: Mapping[str, Any]) -> Optimizer:
    return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])


def _adamw(params: Iterable, cfg: Mapping[str, Any]) -> Optimizer:
    return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])


def _lars(params: Iterable, cfg: Mapping[str, Any]) -> Optimizer:
    return LARS(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])


#: ``optim.name`` -> constructor taking (params, the optim block).
OPTIMIZERS: Dict[str, Callable[[Iterable, Mapping[str, Any]], Optimizer]] = {
    "adam": _adam,
    "adamw": _adamw,
    "lars": _lars,
}


def build_optimizer(params: Iterable, cfg: Mapping[str, Any]) -> Optimizer:
    """``OPTIMIZERS[cfg.name]``: uses ``lr``, ``weight_decay``, ``betas``, ``momentum``.

    Parameter groups may carry their own ``lr`` (e.g. a smaller encoder rate when fine-tuning).
    """
    name = str(cfg["name"]).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer '{cfg['name']}' (choose from {sorted(OPTIMIZERS)})")
    return OPTIMIZERS[name](params, cfg)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear warmup from ``1/warmup_steps`` to 1 over ``warmup_steps`` steps, then either
    constant (``schedule="constant"``) or a half cosine down to ``min_lr_ratio`` at
    ``total_steps`` (``schedule="cosine"``).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"optim.schedule: unknown schedule '{schedule}' (choose cosine or constant)")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _per_step(optimizer: Optimizer, cfg: Mapping[str, Any], total_steps: int) -> dict:
    """Warmup, then cosine or constant: a per-step LambdaLR (:func:`warmup_cosine`)."""
    fn = lambda step: warmup_cosine(  # noqa: E731
        step, int(cfg["warmup_steps"]), int(total_steps), str(cfg["schedule"]), float(cfg["min_lr_ratio"])
    )
    return {"scheduler": LambdaLR(optimizer, fn), "interval": "step", "frequency": 1}


def _plateau(optimizer: Optimizer, cfg: Mapping[str, Any], total_steps: int) -> dict:
    """``ReduceLROnPlateau`` on ``optim.plateau.monitor``, stepped once per epoch after validation.

    VCMR's and CLMR's stage 3: ``mode=min`` on the validation loss, ``factor=0.1``,
    ``patience=5``, relative threshold ``1e-4``, ``min_lr=0``.
    """
    check_schedule(cfg)
    p = cfg["plateau"]
    scheduler = ReduceLROnPlateau(
        optimizer, mode=str(p["mode"]), factor=float(p["factor"]), patience=int(p["patience"]),
        threshold=float(p["threshold"]), threshold_mode="rel", cooldown=0, min_lr=float(p["min_lr"]),
    )
    return {"scheduler": scheduler, "monitor": str(p["monitor"]), "interval": "epoch", "frequency": 1}


#: ``optim.schedule`` -> builder of Lightning's ``lr_scheduler`` dict (optimizer, optim block, total steps).
SCHEDULES: Dict[str, Callable[[Optimizer, Mapping[str, Any], int], dict]] = {
    "cosine": _per_step,
    "constant": _per_step,
    "plateau": _plateau,
}


def check_schedule(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the key when the ``optim`` block cannot build its schedule.

    Stages call it before a run folder is created; :func:`build_scheduler` runs it again.
    """
    name = str(cfg["schedule"])
    if name not in SCHEDULES:
        raise ValueError(f"optim.schedule: unknown schedule '{name}' (choose from {sorted(SCHEDULES)})")
    if name == "plateau":
        if not cfg.get("plateau"):
            raise ValueError(
                "optim.plateau: schedule=plateau needs the plateau block (monitor, mode, factor, patience, threshold, min_lr)"
            )
        if int(cfg["warmup_steps"]) != 0:
            raise ValueError(f"optim.warmup_steps: must be 0 with schedule=plateau, got {cfg['warmup_steps']}")


def build_scheduler(optimizer: Optimizer, cfg: Mapping[str, Any], total_steps: int) -> dict:
    """``SCHEDULES[optim.schedule]`` in Lightning's ``lr_scheduler`` dict form."""
    check_schedule(cfg)
    return SCHEDULES[str(cfg["schedule"])](optimizer, cfg, total_steps)
