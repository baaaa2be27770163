"""FLOP counting with PyTorch's own FlopCounterMode (counts multiply-adds as 2 FLOPs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def call_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn``, whatever it runs (a forward pass, backward passes, a whole training step)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``inputs`` (no gradients)."""
    with torch.no_grad():
        return call_flops(lambda: module(*inputs))


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
