"""Forward + input-gradient (teacher frozen: no weight gradients: the inversion step's cost) of detectors on CPU:
eager vs torch.compile'd, NCHW vs channels_last, for the YOLOv3 family at 128 px; the forward alone and with the
input gradient, channels_last, for YOLOv8n and YOLO11n at 128 and 320 px.

    python benchmarks/bench_models_cpu.py --out benchmarks/results      (make bench-models)

Writes models_cpu.json and models_cpu.md: median ms per step, images/s, achieved GFLOP/s (the forward's conv FLOPs;
fwd + dgrad counted as 2x), and the first-call compile time.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdiode.models import build_model  # noqa: E402
from fastdiode.models.flops import conv_flops  # noqa: E402


def step_fn(model, x, backward: bool = True):
    def step():
        if not backward:
            with torch.no_grad():
                return model(x)
        out = model(x)
        torch.autograd.grad(sum(o.float().square().mean() for o in out), x)
    return step


# (model, size, layouts, passes): every combination is one row
CASES = [(name, 128, ("contiguous", "channels_last"), ("fwd+dgrad",)) for name in ("yolov3-tiny", "yolo-micro")] + \
    [(name, size, ("channels_last",), ("fwd", "fwd+dgrad")) for name in ("yolov8n", "yolo11n") for size in (128, 320)]


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for name, size, layouts, passes in CASES:
        classes = 10 if name == "yolo-micro" else 80
        flops = conv_flops(build_model(name, num_classes=classes), size)
        for layout in layouts:
            for mode in ("eager", "compiled"):
                for kind in passes:
                    torch.manual_seed(0)
                    model = build_model(name, num_classes=classes).eval().requires_grad_(False)
                    x = torch.rand(args.batch, 3, size, size)
                    if layout == "channels_last":
                        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
                    x.requires_grad_(kind != "fwd")
                    run = step_fn(torch.compile(model) if mode == "compiled" else model, x, kind != "fwd")
                    t0 = time.perf_counter()
                    run()
                    first = time.perf_counter() - t0
                    run()
                    ms = median_ms(run, args.rounds)
                    work = flops * (2 if kind != "fwd" else 1) * args.batch
                    rows.append({"model": name, "size": size, "pass": kind, "layout": layout, "mode": mode, "ms": ms,
                                 "images/s": args.batch / ms * 1e3, "GFLOP/s": work / ms / 1e6, "first call s": first})
                    print(rows[-1], flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "batch": args.batch, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models_cpu.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Detector fwd + input-gradient on CPU ({result['machine']}, torch {result['torch']})", "",
             f"Batch {args.batch}, teacher frozen (no weight gradients); median of {args.rounds} steps.", "",
             "| model | px | pass | layout | mode | ms / step | images/s | GFLOP/s | first call (s) |",
             "|---|---:|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['size']} | {r['pass']} | {r['layout']} | {r['mode']} | {r['ms']:.1f} | "
              f"{r['images/s']:.0f} | {r['GFLOP/s']:.0f} | {r['first call s']:.1f} |" for r in rows]
    (out / "models_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
