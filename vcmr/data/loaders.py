"""DataLoader construction shared by the data modules."""

from __future__ import annotations

from typing import Any, Mapping

from torch.utils.data import DataLoader, Dataset


def build_loader(dataset: Dataset, loader: Mapping[str, Any], train: bool) -> DataLoader:
    """A DataLoader from a stage's ``data.loader`` block.

    Training loaders shuffle and drop the last partial batch (equal batch sizes on every
    rank, which the global-negative losses need); evaluation loaders do neither.
    """
    workers = int(loader["num_workers"])
    return DataLoader(
        dataset,
        batch_size=int(loader["batch_size"]),
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=bool(loader["pin_memory"]),
        persistent_workers=bool(loader["persistent_workers"]) and workers > 0,
        prefetch_factor=loader["prefetch_factor"] if workers > 0 else None,
    )
