"""DICOD's supplementary Table S1 in miniature: the crop classifier trained with cross-entropy, focal loss, or
both, at two crop sizes, on the digits crops; top-1 on the val crops (same model, steps and schedule per row).

    python benchmarks/bench_classifier_losses.py --data runs/digits --out benchmarks/results   (make bench-classifier)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdiode.classify import ClassifierConfig, run_classifier_training  # noqa: E402
from fastdiode.config import load_config  # noqa: E402
from fastdiode.data.crops import write_crops  # noqa: E402
from fastdiode.runtime import RunContext  # noqa: E402
from fastdiode.runtime.files import atomic_write  # noqa: E402

LOSSES = {"CE": ["loss.ce=1", "loss.focal=0"], "FL": ["loss.ce=0", "loss.focal=1"],
          "CE + FL": ["loss.ce=1", "loss.focal=1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/digits", help="the digits data (fastdiode data digits --out DIR)")
    parser.add_argument("--runs", default="runs/classifier_losses", help="crops and training runs")
    parser.add_argument("--out", default="benchmarks/results", help="where classifier_losses.{json,md} go")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 24])
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    runs, rows = Path(args.runs), []
    for size in args.sizes:
        crops = runs / f"crops{size}"
        write_crops(args.data, crops, size)
        for name, overrides in LOSSES.items():
            out = runs / f"{size}px-{name.replace(' + ', '-')}"
            cfg = load_config(ClassifierConfig, "configs/classifier_digits.yaml", [
                f"data.train={crops / 'train'}", f"data.val={crops / 'val'}", f"train.steps={args.steps}",
                f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}", f"train.out={out}",
                *overrides])
            start = time.perf_counter()
            summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else \
                run_classifier_training(cfg, RunContext(torch.device("cpu")))
            rows.append({"size": size, "loss": name, "top1": summary["final_eval"]["top1"], "steps": args.steps,
                         "minutes": (time.perf_counter() - start) / 60})
            print(rows[-1])
    lines = ["| crop size | loss | top-1 (val crops) |", "|---:|---|---:|"]
    lines += [f"| {r['size']} px | {r['loss']} | {100 * r['top1']:.2f}% |" for r in rows]
    text = ("# The crop classifier's loss (DICOD supplementary Table S1, in miniature)\n\n"
            f"configs/classifier_digits.yaml's model and schedule, {args.steps} steps per row, the digits crops.\n\n"
            + "\n".join(lines) + "\n")
    atomic_write(Path(args.out) / "classifier_losses.json", lambda t: t.write_text(json.dumps(rows, indent=1)))
    atomic_write(Path(args.out) / "classifier_losses.md", lambda t: t.write_text(text))
    print(text)


if __name__ == "__main__":
    main()
