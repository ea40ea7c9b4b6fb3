"""Which samples make each training step.

A run's samples form one stream: epoch ``e`` is a seeded permutation of the dataset, and step ``s`` takes
the global batch at stream positions ``s*B .. (s+1)*B``; rank ``r`` of ``W`` takes its contiguous slice.
Each sample's jitter seed and each step's size (multi-scale) derive from (seed, step), so a batch is
a pure function of (seed, step, rank): resuming at step ``s`` replays exactly what an uninterrupted run
would have seen, and 2 ranks together see the 1-rank global batch.
"""
from __future__ import annotations

import torch

from fastdiode.runtime.schedule import derive_seed


class BatchPlan:
    """Step -> this rank's (item index, sample seed) pairs and the step's image size."""

    def __init__(self, num_items: int, global_batch: int, seed: int = 0, rank: int = 0, world: int = 1,
                 sizes: tuple[int, ...] | list[int] = (416,), scale_every: int = 10):
        if global_batch < 1 or global_batch % world:
            raise ValueError(f"batch size {global_batch}: must be positive and divisible by the {world} ranks")
        if not sizes or any(s < 32 or s % 32 for s in sizes):
            raise ValueError(f"image sizes {list(sizes)}: expected multiples of 32")
        self.n, self.global_batch, self.seed, self.rank, self.world = num_items, global_batch, seed, rank, world
        self.sizes, self.scale_every = tuple(sizes), max(1, scale_every)
        self.batch = global_batch // world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 1))
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def size_at(self, step: int) -> int:
        if len(self.sizes) == 1:
            return self.sizes[0]
        return self.sizes[derive_seed(self.seed, step // self.scale_every, 2) % len(self.sizes)]

    def samples(self, step: int) -> list[tuple[int, int]]:
        first = step * self.global_batch + self.rank * self.batch
        out = []
        for j in range(first, first + self.batch):
            epoch, pos = divmod(j, self.n)
            out.append((int(self._perm(epoch)[pos]), derive_seed(self.seed, j, 3)))
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.n
