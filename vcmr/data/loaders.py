"""DataLoader construction shared by the data modules."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from torch.utils.data import DataLoader, Dataset


def build_loader(
    dataset: Dataset,
    loader: Mapping[str, Any],
    train: bool,
    collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None,
) -> DataLoader:
    """A DataLoader from a stage's ``data.loader`` block.

    Training loaders shuffle and drop the last partial batch (equal batch sizes on every
    rank, except for items dropped as bad, see :mod:`vcmr.data.collate`); evaluation loaders
    do neither. ``collate_fn``: the batch builder (``default_collate`` when ``None``).
    """
    workers = int(loader["num_workers"])
    return DataLoader(
        dataset,
        batch_size=int(loader["batch_size"]),
        shuffle=train,
        collate_fn=collate_fn,
        drop_last=train,
        num_workers=workers,
        pin_memory=bool(loader["pin_memory"]),
        persistent_workers=bool(loader["persistent_workers"]) and workers > 0,
        prefetch_factor=loader["prefetch_factor"] if workers > 0 else None,
    )
