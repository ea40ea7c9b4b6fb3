"""Calibration images: ``calib.images`` drawn (seeded, without replacement) from a dataset or image folder,
letterboxed to the quantization size, in batches of ``calib.batch_size``."""
from __future__ import annotations

import torch

from fastdiode.data.images import letterbox, read_image
from fastdiode.data.scan import scan_dataset
from fastdiode.quantize.config import CalibConfig


def calibration_batches(calib: CalibConfig, size: int) -> list[torch.Tensor]:
    """The calibration batches (B, 3, size, size) in [0, 1]; a folder without enough usable images is an error
    naming ``calib.data`` before any work."""
    try:
        scanned = scan_dataset(calib.data)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"calib.data: {e}") from None
    items = scanned.items
    if len(items) < calib.images:
        raise ValueError(f"calib.images: {calib.images} images asked for, but {calib.data} has {len(items)} "
                         "usable ones")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(calib.seed))[: calib.images]
    images = torch.stack([letterbox(read_image(items[i].path), size)[0] for i in order.tolist()])
    return list(images.split(calib.batch_size))
