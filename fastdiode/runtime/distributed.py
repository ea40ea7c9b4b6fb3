"""One place for a command's process setup and teardown: the device, and under torchrun the process group
(nccl on CUDA, gloo on CPU) with each rank on its own GPU."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fastdiode.runtime.device import resolve_device


@dataclass(frozen=True)
class RunContext:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def device_name(self) -> str:
        """The device in words, for summaries: the GPU's name, or ``cpu``."""
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"


@contextmanager
def run_context(device: str) -> Iterator[RunContext]:
    """The resolved ``device`` (``run.device``) and, under torchrun (``WORLD_SIZE`` > 1), an initialised
    process group that is destroyed on exit, even when the command fails."""
    resolved = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield RunContext(resolved)
        return
    import torch.distributed as dist

    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    try:
        if resolved.type == "cuda":
            resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(resolved)
        yield RunContext(resolved, dist.get_rank(), world)
    finally:
        dist.destroy_process_group()
