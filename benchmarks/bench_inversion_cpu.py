"""Seconds per inversion iteration on CPU: fastdiode's DiodeInverter vs the reference loop, same teacher.

    python benchmarks/bench_inversion_cpu.py --out benchmarks/results        (make bench-inversion)

YOLOv3-tiny (random weights, random BN statistics) at 128 px, batch 16, one-box targets; both loops run the
same number of iterations after a warm-up; writes inversion_cpu.json and inversion_cpu.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_loop import reference_inversion  # noqa: E402
from fastdiode.cli import randomized_teacher  # noqa: E402
from fastdiode.config import load_config  # noqa: E402
from fastdiode.inversion import DiodeInverter, InversionConfig, one_box_targets  # noqa: E402


def fastdiode_seconds(teacher, targets, size, iterations, jitter) -> float:
    cfg = load_config(InversionConfig, None, [
        f"stages.resolution=[{size}]", f"stages.batch_size=[{len(targets)}]", "stages.lr=[0.2]", "stages.lr_min=[0]",
        f"stages.iterations=[{iterations}]", "stages.warmup=[0]", "stages.betas=[[0,0]]",
        "loss.first_bn_coef=[2]", f"augment.jitter=[{jitter}]", "fp.enabled=false", "job.log_every=50",
        f"teacher.num_classes={teacher.num_classes}"])
    inverter = DiodeInverter(teacher, cfg)
    inverter.invert(targets, seed=0)  # warm-up (compiles the fused ops' torch halves)
    start = time.perf_counter()
    inverter.invert(targets, seed=1)
    seconds = time.perf_counter() - start
    inverter.close()
    return seconds / iterations


def reference_seconds(teacher, targets, size, iterations, jitter) -> float:
    reference_inversion(teacher, targets, size, 2, jitter=jitter)  # warm-up
    start = time.perf_counter()
    reference_inversion(teacher, targets, size, iterations, jitter=jitter)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--model", default="yolov3-tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    jitter = args.size // 8
    targets = one_box_targets(args.batch, 80, 16, torch.Generator().manual_seed(0))
    ref_s = reference_seconds(randomized_teacher(args.model, None, 80), targets, args.size, args.iterations, jitter)
    fast_s = fastdiode_seconds(randomized_teacher(args.model, None, 80), targets, args.size, args.iterations, jitter)
    result = {"model": args.model, "size": args.size, "batch": args.batch, "iterations": args.iterations,
              "reference s/it": ref_s, "fastdiode s/it": fast_s, "speed-up": ref_s / fast_s,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inversion_cpu.json").write_text(json.dumps(result, indent=1))
    md = (f"# Inversion step on CPU: fastdiode vs the reference DIODE loop ({result['machine']}, "
          f"torch {result['torch']})\n\n{args.model} (random weights and BN statistics) at {args.size} px, batch "
          f"{args.batch}, {args.iterations} iterations after a warm-up.\n\n"
          "| loop | s / iteration | images / hour (1 iteration each) |\n|---|---:|---:|\n"
          f"| reference loop | {ref_s:.3f} | {3600 * args.batch / ref_s:.0f} |\n"
          f"| fastdiode | {fast_s:.3f} | {3600 * args.batch / fast_s:.0f} |\n\n"
          f"Speed-up: **{ref_s / fast_s:.2f}x** (target 2x).\n")
    (out / "inversion_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
