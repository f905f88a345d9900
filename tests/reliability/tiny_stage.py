"""A tiny StageModule and a dataset with bad items at fixed places, for the bad-item rule
(importable by spawned DDP processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vcmr.data.collate import BadItem, drop_bad_items
from vcmr.losses import NTXentLoss
from vcmr.trainers.base import StageModule

DIM = 4


class ItemsWithBad(Dataset):
    """``n`` feature vectors ``[DIM]``; the indices in ``bad`` are :class:`BadItem`\\ s."""

    def __init__(self, n: int, bad: Sequence[int]):
        self.n, self.bad = n, set(bad)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int):
        if idx in self.bad:
            return BadItem(f"item{idx:02d}.wav", "failed to decode during training: no audio samples decoded")
        return torch.full((DIM,), float(idx)) + torch.arange(DIM, dtype=torch.float32)


class TinyContrastive(StageModule):
    """A linear encoder trained with global-negative NT-Xent on two noisy views."""

    def __init__(self, n: int, bad: Sequence[int], batch_size: int) -> None:
        super().__init__({"name": "adam", "lr": 1e-2, "weight_decay": 0.0, "betas": [0.9, 0.999], "momentum": 0.9,
                          "warmup_steps": 0, "schedule": "constant", "min_lr_ratio": 1.0}, seed=0)
        self.encoder = nn.Linear(DIM, 3)
        self.loss = NTXentLoss(0.5, gather=True)
        self.data_args = (n, tuple(bad), batch_size)
        self.sizes: list = []
        self.weights: list = []  # encoder weight before the first batch and after every batch

    def on_train_start(self) -> None:
        super().on_train_start()
        self.weights.append(self.encoder.weight.detach().clone())

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.weights.append(self.encoder.weight.detach().clone())

    def on_train_end(self) -> None:
        """Each rank leaves what it saw in ``<root>/rank<r>.pt`` (spawned ranks return nothing)."""
        record = {"sizes": self.sizes, "skipped": self.skipped_steps, "data": self.data_steps, "weights": self.weights}
        torch.save(record, Path(self.trainer.default_root_dir) / f"rank{self.global_rank}.pt")

    def train_dataloader(self) -> DataLoader:
        """Items in order; under DDP rank ``r`` gets items ``r, r + W, ...`` (no shuffling)."""
        n, bad, batch_size = self.data_args
        ds = ItemsWithBad(n, bad)
        world = self.trainer.world_size
        sampler = DistributedSampler(ds, world, self.global_rank, shuffle=False) if world > 1 else None
        return DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler, collate_fn=drop_bad_items)

    def _step(self, batch: torch.Tensor, batch_idx: int, stage: str) -> torch.Tensor:
        self.sizes.append(int(batch.shape[0]))
        x = batch / 10.0
        loss = self.loss(self.encoder(x), self.encoder(x + 0.01))
        self.log(f"{stage}/loss", loss, batch_size=batch.shape[0], sync_dist=stage != "train")
        return loss
