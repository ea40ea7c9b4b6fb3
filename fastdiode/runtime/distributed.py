"""One place for a command's process setup and teardown: the device, and under torchrun the process group
(nccl on CUDA, gloo on CPU) with each rank on its own GPU; and the record of where a run ran, for its summary."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from fastdiode.runtime.device import resolve_device


@dataclass(frozen=True)
class RunRecord:
    """Where a run ran and what it started from, as its ``summary.json`` records it (the key ``run``)."""

    device: str  # the device in words: the GPU's name, or cpu
    world: int  # processes (torchrun ranks)
    backend: str  # the fused ops' backend setting (run.backend)
    teacher: str = ""  # where the teacher came from: its path, or what stands in for one

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunContext:
    """The device of this process, its rank and the number of ranks: what the engines take whole."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def device_name(self) -> str:
        """The device in words, for summaries: the GPU's name, or ``cpu``."""
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"

    def record(self, backend: str = "auto", teacher: str = "") -> RunRecord:
        return RunRecord(self.device_name, self.world, backend, teacher)


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
