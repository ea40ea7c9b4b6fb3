"""Seconds per inversion iteration on CPU: fastdiode's DiodeInverter vs the reference loop, same teacher.

    python benchmarks/bench_inversion_cpu.py --out benchmarks/results        (make bench-inversion)

YOLOv3-tiny (random weights, random BN statistics) at 128 px, batch 16, one-box targets; both loops run the
same number of iterations after a warm-up, taking turns (median over rounds), at fp32 and, where the CPU has
native bf16, both under bf16 autocast; writes inversion_cpu.json and inversion_cpu.md.
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

from benchmarks.reference_loop import reference_inversion  # noqa: E402
from fastdiode.config import load_config  # noqa: E402
from fastdiode.inversion import DiodeInverter, InversionConfig, one_box_targets  # noqa: E402
from fastdiode.loading import randomized_detector  # noqa: E402


def fastdiode_loop(teacher, targets, size, iterations, jitter, bf16: bool = False):
    """A callable running ``iterations`` fastdiode steps (after one warm-up run that compiles the fused ops)."""
    cfg = load_config(InversionConfig, None, [f"run.precision={'bf16' if bf16 else 'fp32'}",
        f"stages.resolution=[{size}]", f"stages.batch_size=[{len(targets)}]", "stages.lr=[0.2]", "stages.lr_min=[0]",
        f"stages.iterations=[{iterations}]", "stages.warmup=[0]", "stages.betas=[[0,0]]",
        "loss.first_bn_coef=[2]", f"augment.jitter=[{jitter}]", "fp.enabled=false", "job.log_every=50",
        f"teacher.num_classes={teacher.num_classes}"])
    inverter = DiodeInverter(teacher, cfg)
    inverter.invert(targets, seed=0)
    return lambda: inverter.invert(targets, seed=1)


def reference_loop(teacher, targets, size, iterations, jitter, bf16: bool = False):
    """A callable running ``iterations`` reference steps (after a 2-step warm-up); ``bf16`` runs its forward
    under bf16 autocast, as its mixed-precision mode would."""
    reference_inversion(teacher, targets, size, 2, jitter=jitter, fp16=bf16)
    return lambda: reference_inversion(teacher, targets, size, iterations, jitter=jitter, fp16=bf16)


def interleaved_seconds(loops: dict, iterations: int, rounds: int) -> dict:
    """Seconds per iteration of each loop in every round, the loops taking turns round by round, so that a
    slow spell of a shared machine hits both sides alike."""
    times = {name: [] for name in loops}
    for _ in range(rounds):
        for name, run in loops.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / iterations)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--model", default="yolov3-tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    jitter = args.size // 8
    targets = one_box_targets(args.batch, 80, 16, torch.Generator().manual_seed(0))
    precisions = ["fp32"] + (["bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])
    result = {"model": args.model, "size": args.size, "batch": args.batch, "iterations": args.iterations,
              "rounds": args.rounds,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__}
    for precision in precisions:
        loops = {name: make(randomized_detector(args.model, None, 80), targets, args.size, args.iterations, jitter,
                            bf16=precision == "bf16")
                 for name, make in (("reference", reference_loop), ("fastdiode", fastdiode_loop))}
        times = interleaved_seconds(loops, args.iterations, args.rounds)
        ref_s, fast_s = statistics.median(times["reference"]), statistics.median(times["fastdiode"])
        per_round = [r / f for r, f in zip(times["reference"], times["fastdiode"])]
        result[precision] = {"reference s/it": ref_s, "fastdiode s/it": fast_s, "speed-up": ref_s / fast_s,
                             "speed-up per round": per_round, "rounds s/it": times}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inversion_cpu.json").write_text(json.dumps(result, indent=1))
    md = (f"# Inversion step on CPU: fastdiode vs the reference DIODE loop ({result['machine']}, "
          f"torch {result['torch']})\n\n{args.model} (random weights and BN statistics) at {args.size} px, batch "
          f"{args.batch}; median over {args.rounds} interleaved rounds of {args.iterations} iterations each, "
          "after a warm-up. Both loops run at the same precision: fp32 (the CPU default, and the target), and "
          "bf16 autocast where the CPU has native bf16.\n\n"
          "| precision | reference s/it | fastdiode s/it | speed-up | single rounds | fastdiode images / hour "
          "(1 iteration each) |\n|---|---:|---:|---:|---:|---:|\n")
    for precision in precisions:
        r = result[precision]
        md += (f"| {precision} | {r['reference s/it']:.3f} | {r['fastdiode s/it']:.3f} | {r['speed-up']:.2f}x | "
               f"{min(r['speed-up per round']):.2f}-{max(r['speed-up per round']):.2f}x | "
               f"{3600 * args.batch / r['fastdiode s/it']:.0f} |\n")
    md += f"\nSpeed-up at fp32: **{result['fp32']['speed-up']:.2f}x** (target 2x).\n"
    (out / "inversion_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
