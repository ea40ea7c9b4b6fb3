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
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import first_calls, interleaved, provenance, require_quiet, spread  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-load-check", action="store_true", help="time even on a busy machine (smoke runs)")
    args = parser.parse_args()
    require_quiet(not args.no_load_check)
    rows = []
    for name, size, layouts, passes in CASES:
        classes = 10 if name == "yolo-micro" else 80
        flops = conv_flops(build_model(name, num_classes=classes), size)
        for kind in passes:
            sides = {}
            for layout in layouts:
                for mode in ("eager", "compiled"):
                    torch.manual_seed(0)
                    model = build_model(name, num_classes=classes).eval().requires_grad_(False)
                    x = torch.rand(args.batch, 3, size, size)
                    if layout == "channels_last":
                        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
                    x.requires_grad_(kind != "fwd")
                    net = torch.compile(model, dynamic=False) if mode == "compiled" else model
                    sides[(layout, mode)] = step_fn(net, x, kind != "fwd")
            first = first_calls(sides)
            for (layout, mode), times in interleaved(sides, args.rounds).items():  # the variants take turns
                ms = spread(times)
                work = flops * (2 if kind != "fwd" else 1) * args.batch
                rows.append({"model": name, "size": size, "pass": kind, "layout": layout, "mode": mode, **ms,
                             "images/s": args.batch / ms["median ms"] * 1e3, "GFLOP/s": work / ms["median ms"] / 1e6,
                             "first call s": first[(layout, mode)]})
                print(rows[-1], flush=True)
    result = {**provenance(), "batch": args.batch, "rounds": args.rounds, "rows": rows,
              "load_1min_end": provenance()["load_1min"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models_cpu.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Detector fwd + input-gradient on CPU ({result['machine']}, torch {result['torch']})", "",
             f"Batch {args.batch}, teacher frozen (no weight gradients); commit {result['commit']}"
             f"{' (dirty tree)' if result['dirty'] else ''}, {result['date']}; 1-minute load {result['load_1min']:.2f} "
             f"at the start, {result['load_1min_end']:.2f} at the end. {args.rounds} rounds, the variants of a model "
             "and pass taking turns; medians with interquartile ranges.", "",
             "| model | px | pass | layout | mode | ms / step (IQR) | images/s | GFLOP/s | first call (s) |",
             "|---|---:|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['size']} | {r['pass']} | {r['layout']} | {r['mode']} | {r['median ms']:.1f} "
              f"({r['q1 ms']:.1f}-{r['q3 ms']:.1f}) | {r['images/s']:.0f} | {r['GFLOP/s']:.0f} | "
              f"{r['first call s']:.1f} |" for r in rows]
    (out / "models_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
