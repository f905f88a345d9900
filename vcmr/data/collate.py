"""Bad items at training time: a file that passed the index check but fails to decode.

``data.verify: header`` (the mode meant for large collections) reads only headers, so a file
whose header is intact but whose data is damaged (an mp4 cut short, a disk error) is found
only when a DataLoader worker decodes it. The rule that keeps such a run alive and its
batches honest:

1. The Dataset stays stateless: ``__getitem__`` catches the decode error of its own file and
   returns a :class:`BadItem` (the file and the reason) instead of an example. It never
   substitutes a neighbour.
2. :func:`drop_bad_items`, the loaders' collate function, takes the bad items out and
   collates the rest: the batch is a :class:`CheckedBatch` (``data`` = the usual batch of
   the good items, smaller by the number dropped; ``bad`` = the dropped items).
3. The training step (``vcmr.trainers.base.StageModule``) logs the count as
   ``<stage>/bad_items`` (summed over each epoch and over ranks), appends the files to the
   run's ``rejected_files.tsv`` (rank 0, atomically, once per file), and skips a step whose
   batch (on any rank) has no good item left.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

from torch.utils.data import default_collate


class BadItem(NamedTuple):
    """Stands in for an example whose file failed to decode.

    ``path``: the file as the run's reports name it (relative to ``data.root`` where known);
    ``reason``: the decoder's reason.
    """

    path: str
    reason: str


class CheckedBatch(NamedTuple):
    """A collated batch with its bad items taken out.

    ``data``: the batch of the good items, as ``default_collate`` builds it (``None`` when
    every item was bad); ``bad``: the items left out. A named tuple, so Lightning moves
    ``data`` to the device and pinning keeps the structure.
    """

    data: Any
    bad: Tuple[BadItem, ...]


def drop_bad_items(items: Sequence[Any]) -> CheckedBatch:
    """Collate function: :class:`BadItem` entries out, ``default_collate`` on the rest."""
    good = [x for x in items if not isinstance(x, BadItem)]
    bad = tuple(x for x in items if isinstance(x, BadItem))
    return CheckedBatch(default_collate(good) if good else None, bad)


def batch_length(data: Any) -> int:
    """Number of examples in a collated batch (a tensor, or a dict/sequence of them); 0 for None."""
    if data is None:
        return 0
    if isinstance(data, dict):
        data = next(iter(data.values()))
    elif isinstance(data, (list, tuple)) and not hasattr(data, "shape"):
        data = data[0]
    return len(data)
