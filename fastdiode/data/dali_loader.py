"""The NVIDIA DALI pipeline of the distillation loader (optional: ``pip install nvidia-dali-cuda120``).

The host draws each sample's parameters exactly as the torch pipeline does (:mod:`jitter`) and feeds
the encoded file, resize shape, flip flag, colour matrix and boxes through an external source; DALI decodes
(``mixed`` = nvJPEG/nvImageCodec on a GPU, ``cpu`` with ``device_id=None`` without one), resizes, applies the
colour matrix, pads to the letterboxed square, then mirrors and normalises in one op, on its own threads,
in uint8 until the last step.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import torch

from fastdiode.data.batch_plan import BatchPlan
from fastdiode.data.images import PAD_BYTE
from fastdiode.data.jitter import JitterRanges, sample_boxes, sample_params
from fastdiode.data.scan import ScannedDataset


def available() -> bool:
    """Whether DALI imports. ``find_spec("nvidia.dali")`` itself raises when no ``nvidia`` package exists at
    all (a plain install without the dali extra), so that counts as absent too."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:
        return False


def _feed(data: ScannedDataset, plan: BatchPlan, aug: JitterRanges, capacity: int, start: int, stop: int):
    for step in range(start, stop):
        size = plan.size_at(step)
        cols: list[list] = [[] for _ in range(6)]
        for index, seed in plan.samples(step):
            item = data.items[index]
            p = sample_params(item, size, aug, seed)
            for col, value in zip(cols, (np.fromfile(item.path, dtype=np.uint8),
                                         np.array([p.new_h, p.new_w], np.float32),
                                         np.array([-p.top, -p.left], np.int32), np.array(int(p.flip), np.int32),
                                         p.colour, sample_boxes(item, p, capacity).numpy())):
                col.append(value)
        cols.append([np.array([size, size], np.int32)] * len(cols[0]))
        yield tuple(cols)


def _pipeline(source, batch: int, threads: int, device_id: int | None):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=max(1, threads), device_id=device_id, prefetch_queue_depth=2,
                  exec_dynamic=True)
    def pipe():
        encoded, shape, anchor, flip, colour, boxes, canvas = fn.external_source(source=source, num_outputs=7,
                                                                                   batch=True)
        gpu = device_id is not None
        image = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
        image = fn.resize(image, size=shape, interp_type=types.INTERP_LINEAR, antialias=True)  # CPU argument
        image = fn.coord_transform(image, M=colour, dtype=types.UINT8)  # colour matrix per pixel, saturating
        image = fn.slice(image, start=anchor, shape=canvas, axes=[0, 1], out_of_bounds_policy="pad",
                         fill_values=PAD_BYTE)
        image = fn.crop_mirror_normalize(image, mirror=flip, mean=0.0, std=255.0, output_layout="CHW",
                                         dtype=types.FLOAT)
        return image, boxes

    return pipe()


def _to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    from nvidia.dali.plugin.pytorch import feed_ndarray

    dense = tensor_list.as_tensor()
    out = torch.empty(dense.shape(), dtype=torch.float32, device=device)
    feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device) if device.type == "cuda" else None)
    return out


def dali_batches(data: ScannedDataset, plan: BatchPlan, aug: JitterRanges, capacity: int, start: int, stop: int,
                 workers: int = 2, device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of steps start..stop-1, like :func:`fastdiode.data.loader.torch_batches`; on a CUDA ``device``
    the images are decoded on it and stay there."""
    device = torch.device(device or "cpu")
    gpu = device.type == "cuda"
    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if gpu else None
    pipe = _pipeline(_feed(data, plan, aug, capacity, start, stop), plan.batch, workers, device_id)
    pipe.build()
    try:
        for _ in range(start, stop):
            images, boxes = pipe.run()
            yield _to_torch(images, device), _to_torch(boxes, torch.device("cpu"))
    finally:
        del pipe
