"""The distillation loaders: the torch DataLoader pipeline, and :func:`batches`, which picks it or the DALI
one (:mod:`.dali_loader`). Which samples make each step is :class:`fastdiode.data.batch_plan.BatchPlan`'s."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fastdiode.data.batch_plan import BatchPlan
from fastdiode.data.images import decode_rgb
from fastdiode.data.jitter import JitterRanges, apply_params, sample_boxes, sample_params
from fastdiode.data.scan import ScannedDataset


class _Samples(Dataset):
    """Key (item index, sample seed, size) -> jittered (image, padded boxes)."""

    def __init__(self, data: ScannedDataset, aug: JitterRanges, capacity: int):
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


def torch_batches(data: ScannedDataset, plan: BatchPlan, aug: JitterRanges, capacity: int, start: int,
                  stop: int, workers: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(images (b, 3, S, S) float in [0, 1], boxes (b, capacity, 5))`` for steps start..stop-1."""
    loader = DataLoader(_Samples(data, aug, capacity), batch_sampler=_Steps(plan, start, stop), collate_fn=_stack,
                        num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None)
    yield from loader


def batches(kind: str, data: ScannedDataset, plan: BatchPlan, aug: JitterRanges, capacity: int, start: int,
            stop: int, workers: int = 2, device: torch.device | None = None) -> Iterator:
    """The batches of steps start..stop-1 from the ``kind`` pipeline: ``torch``, ``dali`` (an error when DALI
    is not installed) or ``auto`` (DALI when installed). DALI batches already lie on ``device`` when it is CUDA."""
    if kind not in ("auto", "torch", "dali"):
        raise ValueError(f"data.loader: {kind!r} is not one of auto, torch, dali")
    if kind != "torch":
        from fastdiode.data import dali_loader

        if dali_loader.available():
            return dali_loader.dali_batches(data, plan, aug, capacity, start, stop, workers, device)
        if kind == "dali":
            raise ValueError("data.loader: dali: NVIDIA DALI is not installed; install it with "
                             "pip install nvidia-dali-cuda120 (or pip install -e '.[dali]'), or use data.loader=torch")
    return torch_batches(data, plan, aug, capacity, start, stop, workers)
