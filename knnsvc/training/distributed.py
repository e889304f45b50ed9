"""Process-group helpers for DistributedDataParallel training under ``torchrun``.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a no-op on one process. Under
``torchrun`` the group is NCCL on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class DistributedContext:
    """Where this process stands in the group, and the collectives the trainer needs."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op on one process)."""
        if self.world_size > 1:
            dist.barrier()

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def close(self) -> None:
        """Destroy the process group if :func:`setup_distributed` created it."""
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the ``torchrun`` process group (creating it unless it exists) or stay single-process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device)
    rank = int(os.environ["RANK"])
    initialised_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
        initialised_here = True
    return DistributedContext(device, rank, local_rank(), world_size, initialised_here)


def backend_for(device: torch.device) -> str:
    """The collective backend for a device: NCCL on CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"
