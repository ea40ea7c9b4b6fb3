"""Forward + input-gradient (teacher frozen: no weight gradients) of the small detectors on CPU:
eager vs torch.compile'd, NCHW vs channels_last, at 128 px.

    python benchmarks/bench_models_cpu.py --out benchmarks/results      (make bench-models)

Writes models_cpu.json and models_cpu.md: median ms per step, images/s, achieved GFLOP/s (fwd + dgrad counted
as 2x the conv forward FLOPs), and the first-call compile time.
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


def step_fn(model, x):
    def step():
        out = model(x)
        torch.autograd.grad(sum(o.float().square().mean() for o in out), x)
    return step


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
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny", "yolo-micro"])
    args = parser.parse_args()
    rows = []
    for name in args.models:
        flops = 2 * conv_flops(build_model(name, num_classes=80 if name != "yolo-micro" else 10), args.size)
        for layout in ("contiguous", "channels_last"):
            for mode in ("eager", "compiled"):
                torch.manual_seed(0)
                model = build_model(name, num_classes=80 if name != "yolo-micro" else 10).eval().requires_grad_(False)
                x = torch.rand(args.batch, 3, args.size, args.size)
                if layout == "channels_last":
                    model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
                x.requires_grad_(True)
                run = step_fn(torch.compile(model) if mode == "compiled" else model, x)
                t0 = time.perf_counter()
                run()
                first = time.perf_counter() - t0
                run()
                ms = median_ms(run, args.rounds)
                rows.append({"model": name, "layout": layout, "mode": mode, "ms": ms,
                             "images/s": args.batch / ms * 1e3, "GFLOP/s": flops * args.batch / ms / 1e6,
                             "first call s": first})
                print(rows[-1], flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "batch": args.batch, "size": args.size, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models_cpu.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Detector fwd + input-gradient on CPU ({result['machine']}, torch {result['torch']})", "",
             f"Batch {args.batch} at {args.size} px, teacher frozen (no weight gradients); median of "
             f"{args.rounds} steps.", "",
             "| model | layout | mode | ms / step | images/s | GFLOP/s | first call (s) |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['layout']} | {r['mode']} | {r['ms']:.1f} | {r['images/s']:.0f} | "
              f"{r['GFLOP/s']:.0f} | {r['first call s']:.1f} |" for r in rows]
    (out / "models_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
