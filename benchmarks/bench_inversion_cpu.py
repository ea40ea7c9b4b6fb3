"""Seconds per inversion iteration on CPU: fastdiode's DiodeInverter against the reference DIODE loop, same teacher.

    python benchmarks/bench_inversion_cpu.py --out benchmarks/results        (make bench-inversion)

YOLOv3-tiny (random weights, random BN statistics) at 128 px, batch 16, one-box targets. Four loops, taking turns
round by round (medians with interquartile ranges), the breakdown of where the speed-up comes from:

1. the reference loop as the authors wrote it (``benchmarks/reference_loop.py``);
2. the same loop as a competent user runs it: the teacher frozen and in channels_last;
3. fastdiode's step with the plain reference ops and nothing compiled (the step's own structure: static
   buffers, device-side draws, fused Adam, the frozen convs);
4. fastdiode as it runs by default (the fused ops, the compiled YOLO loss).

At fp32 and, where the CPU has native bf16, all under bf16 autocast. Refuses to time while the load average
exceeds the core count. Also writes the profile of fastdiode's step (the top ops by self time). Writes
inversion_cpu.json, inversion_cpu.md and inversion_profile.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_loop import reference_inversion  # noqa: E402
from benchmarks.timing import first_calls, interleaved, provenance, ratio_spread, require_quiet, spread  # noqa: E402
from fastdiode.config import load_config  # noqa: E402
from fastdiode.inversion import DiodeInverter, InversionConfig, one_box_targets  # noqa: E402
from fastdiode.loading import randomized_detector  # noqa: E402
from fastdiode.runtime import set_compile  # noqa: E402

LOOPS = ("reference (authors')", "reference, competent (frozen, channels_last)",
         "fastdiode, reference ops, nothing compiled", "fastdiode")


def fastdiode_loop(teacher, targets, size, iterations, jitter, bf16: bool = False, reference_ops: bool = False):
    """A callable running ``iterations`` fastdiode steps (one warm-up run first compiles the fused ops)."""
    cfg = load_config(InversionConfig, None, [f"run.precision={'bf16' if bf16 else 'fp32'}",
        f"stages.resolution=[{size}]", f"stages.batch_size=[{len(targets)}]", "stages.lr=[0.2]", "stages.lr_min=[0]",
        f"stages.iterations=[{iterations}]", "stages.warmup=[0]", "stages.betas=[[0,0]]",
        "loss.first_bn_coef=[2]", f"augment.jitter=[{jitter}]", "fp.enabled=false", "job.log_every=50",
        f"teacher.num_classes={teacher.num_classes}", f"run.backend={'reference' if reference_ops else 'auto'}"])
    inverter = DiodeInverter(teacher, cfg)

    def run():
        set_compile(not reference_ops)
        try:
            inverter.invert(targets, seed=1)
        finally:
            set_compile(True)

    return run, inverter


def loops(model: str, targets, size: int, iterations: int, jitter: int, bf16: bool) -> dict:
    """The four loops, each around its own copy of the same random teacher."""
    authors, competent = randomized_detector(model, None, 80), randomized_detector(model, None, 80)
    return {
        LOOPS[0]: lambda: reference_inversion(authors, targets, size, iterations, jitter=jitter, fp16=bf16),
        LOOPS[1]: lambda: reference_inversion(competent, targets, size, iterations, jitter=jitter, fp16=bf16,
                                              competent=True),
        LOOPS[2]: fastdiode_loop(randomized_detector(model, None, 80), targets, size, iterations, jitter, bf16,
                                 reference_ops=True)[0],
        LOOPS[3]: fastdiode_loop(randomized_detector(model, None, 80), targets, size, iterations, jitter, bf16)[0],
    }


def profile(model: str, targets, size: int, jitter: int, out: Path) -> None:
    """The top ops by self CPU time of 5 fastdiode iterations (after a warm-up run)."""
    run, _ = fastdiode_loop(randomized_detector(model, None, 80), targets, size, 5, jitter)
    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
    out.write_text(f"# fastdiode's inversion step on CPU: the top ops by self time\n\n{model} at {size} px, batch "
                   f"{len(targets)}, fp32, 5 iterations after a warm-up run (torch.profiler).\n\n```\n{table}\n```\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--model", default="yolov3-tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-load-check", action="store_true", help="time even on a busy machine (smoke runs)")
    args = parser.parse_args()
    require_quiet(not args.no_load_check)
    jitter = args.size // 8
    targets = one_box_targets(args.batch, 80, 16, torch.Generator().manual_seed(0))
    precisions = ["fp32"] + (["bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])
    result = {**provenance(), "model": args.model, "size": args.size, "batch": args.batch,
              "iterations": args.iterations, "rounds": args.rounds}
    for precision in precisions:
        sides = loops(args.model, targets, args.size, args.iterations, jitter, precision == "bf16")
        first = first_calls(sides, warmup=1)
        times = {k: [t / args.iterations for t in v] for k, v in interleaved(sides, args.rounds).items()}
        result[precision] = {"first call s": first, "s/it": {k: spread(v) for k, v in times.items()},
                             "fastdiode speed-up over": {k: ratio_spread(v, times[LOOPS[3]]) for k, v in times.items()
                                                         if k != LOOPS[3]}}
    result["load_1min_end"] = provenance()["load_1min"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile(args.model, targets, args.size, jitter, out / "inversion_profile.md")
    (out / "inversion_cpu.json").write_text(json.dumps(result, indent=1))
    md = to_markdown(result, precisions)
    (out / "inversion_cpu.md").write_text(md)
    print(md)


def to_markdown(result: dict, precisions: list[str]) -> str:
    dirty = " (dirty tree)" if result["dirty"] else ""
    lines = [
        "# Inversion step on CPU: fastdiode vs the reference DIODE loop", "",
        f"{result['model']} (random weights and BN statistics) at {result['size']} px, batch {result['batch']}; "
        f"{result['machine']}, torch {result['torch']}, commit {result['commit']}{dirty}, {result['date']}; "
        f"1-minute load {result['load_1min']:.2f} at the start, {result['load_1min_end']:.2f} at the end. "
        f"{result['rounds']} rounds of {result['iterations']} iterations, the loops taking turns; medians with "
        "interquartile ranges. Targets (fp32): fastdiode >= 2x the competent reference, >= 3x the authors'.", "",
        "| precision | loop | s/it (IQR) | fastdiode's speed-up over it (IQR of rounds) | images / hour |",
        "|---|---|---:|---:|---:|"]
    for precision in precisions:
        r = result[precision]
        for name in LOOPS:
            s, up = r["s/it"][name], r["fastdiode speed-up over"].get(name)
            ratio = "" if up is None else f"{up['speed-up']:.2f}x ({up['per-round q1']:.2f}-{up['per-round q3']:.2f})"
            lines.append(f"| {precision} | {name} | {s['median ms'] / 1e3:.3f} ({s['q1 ms'] / 1e3:.3f}-"
                         f"{s['q3 ms'] / 1e3:.3f}) | {ratio} | {3600 * result['batch'] / (s['median ms'] / 1e3):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
