"""The distillation data stream: which samples make each training step, and the torch DataLoader pipeline.

A run's samples form one stream: epoch ``e`` is a seeded permutation of the dataset, and step ``s`` takes
the global batch at stream positions ``s*B .. (s+1)*B``; rank ``r`` of ``W`` takes its contiguous slice.
Each sample's augmentation seed and each step's size (multi-scale) derive from (seed, step), so a batch is
a pure function of (seed, step, rank): resuming at step ``s`` replays exactly what an uninterrupted run
would have seen, and 2 ranks together see the 1-rank global batch.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fastdiode.data.images import decode_rgb
from fastdiode.data.scan import ScannedDataset
from fastdiode.data.train_augment import LoaderAugment, apply_params, sample_boxes, sample_params
from fastdiode.runtime.schedule import derive_seed

LOADERS = ("auto", "torch", "dali")


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


class _Samples(Dataset):
    """Key (item index, sample seed, size) -> augmented (image, padded boxes)."""

    def __init__(self, data: ScannedDataset, aug: LoaderAugment, capacity: int):
        self.data, self.aug, self.capacity = data, aug, capacity

    def __len__(self) -> int:
        return len(self.data.items)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed, size = key
        item = self.data.items[index]
        params = sample_params(item, size, self.aug, seed)
        return apply_params(decode_rgb(item.path), params), sample_boxes(item, params, self.capacity)


class _Steps(Sampler):
    def __init__(self, plan: BatchPlan, start: int, stop: int):
        self.plan, self.start, self.stop = plan, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            size = self.plan.size_at(step)
            yield [(i, s, size) for i, s in self.plan.samples(step)]


def _stack(batch):
    images, boxes = zip(*batch)
    return torch.stack(images), torch.stack(boxes)


def torch_batches(data: ScannedDataset, plan: BatchPlan, aug: LoaderAugment, capacity: int, start: int,
                  stop: int, workers: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(images (b, 3, S, S) float in [0, 1], boxes (b, capacity, 5))`` for steps start..stop-1."""
    loader = DataLoader(_Samples(data, aug, capacity), batch_sampler=_Steps(plan, start, stop), collate_fn=_stack,
                        num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None)
    yield from loader


def batches(kind: str, data: ScannedDataset, plan: BatchPlan, aug: LoaderAugment, capacity: int, start: int,
            stop: int, workers: int = 2, device: torch.device | None = None) -> Iterator:
    """The batches of steps start..stop-1 from the ``kind`` pipeline: ``torch``, ``dali`` (an error when DALI
    is not installed) or ``auto`` (DALI when installed). DALI batches already lie on ``device`` when it is CUDA."""
    if kind not in LOADERS:
        raise ValueError(f"data.loader: {kind!r} is not one of {', '.join(LOADERS)}")
    if kind != "torch":
        from fastdiode.data import dali_loader

        if dali_loader.available():
            return dali_loader.dali_batches(data, plan, aug, capacity, start, stop, workers, device)
        if kind == "dali":
            raise ValueError("data.loader: dali: NVIDIA DALI is not installed (pip install nvidia-dali-cuda120), "
                             "or use data.loader=torch")
    return torch_batches(data, plan, aug, capacity, start, stop, workers)
