"""Process-group set-up for ``torchrun`` (DDP) and the few collectives the trainer needs.

Without torchrun's environment (RANK / WORLD_SIZE unset) everything runs as a single process and the
collectives are no-ops. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mgcda_core.config_loader import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when launched by torchrun, else return a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (in place; returned for chaining)."""
    if context.distributed:
        dist.all_reduce(tensor)
        tensor /= context.world_size
    return tensor


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter], context: DistContext) -> None:
    """Average the gradients of modules that DDP does not wrap (domain classifiers, projector) over ranks.

    A parameter without a gradient on this rank contributes zeros, so all ranks take the same optimiser step.
    """
    if not context.distributed:
        return
    params = [p for p in parameters if p.requires_grad]
    grads: list[torch.Tensor] = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    if params:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= context.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = p.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n


def broadcast_object(obj: Any, context: DistContext) -> Any:
    """``obj`` from rank 0 on every rank."""
    if not context.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()
