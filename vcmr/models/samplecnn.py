"""SampleCNN: a 1-D CNN over raw waveform samples (Lee et al., 2017), configurable.

Layout (module names matter: checkpoints map onto them)::

    blocks.0           first block: Conv1d(1, C0, k0, stride=k0) + BN + ReLU
    blocks.1..n        n middle blocks: Conv1d(k, padding=k//2) + BN + ReLU + MaxPool(p)
    blocks.n+1         last block: Conv1d(k_last, padding=k_last//2) + BN + ReLU

Inside each block, index 0 is the convolution and index 1 the batch norm. The input
length must equal ``k0 * p**n``, so that the time axis ends at exactly 1 and the output
is a ``[B, out_channels]`` vector.

Presets:

* ``VCMR``: 98,415 samples at 16 kHz (5 * 3**9), first conv 5/stride 5 -> 128,
  channels [128,128,256,256,256,256,256,512,512], last conv 1x1 -> 512.
* ``CLMR``: 59,049 samples (3 * 3**9), first conv 3/stride 3 -> 128,
  channels [128,128,256,256,256,256,256,256,512], last conv 3 (padding 1) -> 512.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

VCMR_ARGS: Dict[str, Any] = {
    "input_length": 98415,
    "first_block": {"out_channels": 128, "kernel_size": 5},
    "n_blocks": 9,
    "channels": [128, 128, 256, 256, 256, 256, 256, 512, 512],
    "kernel_size": 3,
    "pool_size": 3,
    "last_block": {"out_channels": 512, "kernel_size": 1},
}

CLMR_ARGS: Dict[str, Any] = {
    "input_length": 59049,
    "first_block": {"out_channels": 128, "kernel_size": 3},
    "n_blocks": 9,
    "channels": [128, 128, 256, 256, 256, 256, 256, 256, 512],
    "kernel_size": 3,
    "pool_size": 3,
    "last_block": {"out_channels": 512, "kernel_size": 3},
}


def _block(c_in: int, c_out: int, kernel: int, stride: int, padding: int, pool: Optional[int]) -> nn.Sequential:
    layers: List[nn.Module] = [
        nn.Conv1d(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
    ]
    if pool is not None:
        layers.append(nn.MaxPool1d(pool, stride=pool))
    return nn.Sequential(*layers)


class SampleCNN(nn.Module):
    """Raw-waveform encoder.

    Args:
        input_length: samples per example; must equal ``first_block.kernel_size *
            pool_size ** n_blocks``.
        first_block: ``{"out_channels": int, "kernel_size": int}``; stride = kernel size.
        n_blocks: number of middle blocks; must equal ``len(channels)``.
        channels: output channels of each middle block.
        kernel_size: convolution kernel of the middle blocks (stride 1, same padding).
        pool_size: max-pool size and stride of the middle blocks.
        last_block: ``{"out_channels": int, "kernel_size": int}``.
    """

    def __init__(
        self,
        input_length: int,
        first_block: Dict[str, int],
        n_blocks: int,
        channels: List[int],
        kernel_size: int,
        pool_size: int,
        last_block: Dict[str, int],
    ) -> None:
        super().__init__()
        if n_blocks != len(channels):
            raise ValueError(f"n_blocks={n_blocks} but channels has {len(channels)} entries")
        if kernel_size % 2 != 1 or last_block["kernel_size"] % 2 != 1:
            raise ValueError("middle and last kernel sizes must be odd (same padding)")
        k0 = int(first_block["kernel_size"])
        expected = k0 * pool_size**n_blocks
        if input_length != expected:
            raise ValueError(
                f"input_length={input_length} does not fit the architecture: first kernel {k0} "
                f"x pool {pool_size}^{n_blocks} = {expected} samples"
            )
        self.input_length = int(input_length)
        self.output_dim = int(last_block["out_channels"])
        c0 = int(first_block["out_channels"])
        blocks = [_block(1, c0, k0, k0, 0, None)]
        c_in = c0
        for c_out in channels:
            blocks.append(_block(c_in, c_out, kernel_size, 1, kernel_size // 2, pool_size))
            c_in = c_out
        kl = int(last_block["kernel_size"])
        blocks.append(_block(c_in, self.output_dim, kl, 1, kl // 2, None))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, 1, input_length]`` (or ``[B, input_length]``) waveform -> ``[B, output_dim]``."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[-1] != self.input_length:
            raise ValueError(f"SampleCNN expects [B, 1, {self.input_length}] input, got {list(x.shape)}")
        return self.blocks(x).squeeze(-1)

    def freeze_blocks(self, k: int) -> None:
        """Stop gradients (and BN statistics updates) for the first ``k`` blocks."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"cannot freeze {k} blocks of {len(self.blocks)}")
        for block in list(self.blocks)[:k]:
            for p in block.parameters():
                p.requires_grad_(False)
        self._frozen = k

    def train(self, mode: bool = True) -> "SampleCNN":
        super().train(mode)
        for block in list(self.blocks)[: getattr(self, "_frozen", 0)]:
            block.eval()
        return self
