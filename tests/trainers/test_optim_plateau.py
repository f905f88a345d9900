"""optim.schedule=plateau: ReduceLROnPlateau (VCMR/CLMR stage 3), other schedules unchanged."""
import pytest
import torch

from vcmr.config import CONFIG_DIR, ConfigError, load_config
from vcmr.trainers.optim import SCHEDULES, build_optimizer, build_scheduler, check_schedule
from vcmr.trainers.supervised import SupervisedConfig

BASE = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-6, "betas": [0.9, 0.999], "momentum": 0.9,
        "warmup_steps": 0, "schedule": "plateau", "min_lr_ratio": 0.0,
        "plateau": {"monitor": "val/loss", "mode": "min", "factor": 0.1, "patience": 5, "threshold": 1e-4, "min_lr": 0.0}}


def make(cfg):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], cfg)
    return opt, build_scheduler(opt, cfg, total_steps=100)


def test_plateau_reduces_after_patience_epochs_without_improvement():
    assert set(SCHEDULES) == {"cosine", "constant", "plateau"}
    opt, sched = make(BASE)
    assert sched["monitor"] == "val/loss" and sched["interval"] == "epoch"
    lrs = []
    for loss in [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]:  # best at epoch 1, then 6 epochs without improvement
        sched["scheduler"].step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:7] == [1e-3] * 7
    assert lrs[7] == pytest.approx(1e-4)
    # An improvement smaller than the relative threshold does not count.
    opt, sched = make(BASE)
    for loss in [1.0] + [1.0 - 1e-6 * k for k in range(1, 7)]:
        sched["scheduler"].step(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_other_schedules_unchanged():
    cfg = dict(BASE, schedule="cosine", warmup_steps=10, plateau=None)
    opt, sched = make(cfg)
    assert sched["interval"] == "step" and opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # 1/10 warmup


def test_errors_name_the_key():
    with pytest.raises(ValueError, match="optim.plateau"):
        check_schedule(dict(BASE, plateau=None))
    with pytest.raises(ValueError, match="optim.warmup_steps"):
        check_schedule(dict(BASE, warmup_steps=3))
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(CONFIG_DIR / "supervised_demo.yaml", ["optim.schedule=step"], SupervisedConfig)
    with pytest.raises(ConfigError, match="optim.plateau.factor"):
        load_config(CONFIG_DIR / "supervised_demo.yaml",
                    ["optim.schedule=plateau", "optim.warmup_steps=0",
                     "optim.plateau={monitor: val/loss, mode: min, factor: 1.5, patience: 5, threshold: 0.0, min_lr: 0.0}"],
                    SupervisedConfig)
