"""FLOP counting with PyTorch's own FlopCounterMode (counts multiply-adds as 2 FLOPs)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``inputs`` (no gradients)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
