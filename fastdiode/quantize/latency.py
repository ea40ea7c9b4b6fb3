"""What int8 buys on this CPU: the int8 program against the FP32 model compiled the same way (inductor with
freezing), batch by batch, the two sides alternating within each repeat so that load drifts hit both alike, with
the same thread count."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from fastdiode.models.int8_program import Int8Detector


def _once(fn, x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def compare_latency(fp_model: nn.Module, int8_model: Int8Detector, batches: tuple[int, ...] = (1, 16),
                    runs: int = 20, warmup: int = 3) -> dict:
    """Per batch size: the median and quartiles of ``runs`` timed calls of each side (ms) and the speed-up, with
    the thread count."""
    size = int8_model.input_size
    fp = torch.compile(fp_model.eval(), dynamic=False)
    out = {"threads": torch.get_num_threads(), "size": size, "runs": runs, "batches": {}}
    for batch in batches:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch._inductor.config.patch(freezing=True):
            for _ in range(warmup):
                fp(x)
                int8_model(x)
            times: dict[str, list[float]] = {"fp32": [], "int8": []}
            for r in range(runs):
                sides = (("fp32", fp), ("int8", int8_model))
                for name, fn in sides if r % 2 == 0 else sides[::-1]:
                    times[name].append(_once(fn, x))
        row = {}
        for name, values in times.items():
            q = statistics.quantiles(values, n=4)
            row[name] = {"median_ms": statistics.median(values), "q1_ms": q[0], "q3_ms": q[2]}
        row["speedup"] = row["fp32"]["median_ms"] / row["int8"]["median_ms"]
        out["batches"][str(batch)] = row
    return out
