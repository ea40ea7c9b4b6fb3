"""The distillation loader and student step on CPU.

    python benchmarks/bench_distill_cpu.py --out benchmarks/results      (make bench-loader)

1. Loader throughput: the DALI pipeline (CPU decoding, ``device_id=None``) vs the torch DataLoader pipeline
   over the same generated 416 x 416 PNG dataset, same workers, same augmentation, same batches.
2. Student step (mimic loss against a frozen teacher, Adam): eager vs torch.compile'd images/s.
Writes distill_cpu.json and distill_cpu.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdiode.config import load_config  # noqa: E402
from fastdiode.data.batch_plan import BatchPlan  # noqa: E402
from fastdiode.data.dali_loader import available as dali_available  # noqa: E402
from fastdiode.data.jitter import JitterRanges  # noqa: E402
from fastdiode.data.loader import batches  # noqa: E402
from fastdiode.data.scan import scan_dataset  # noqa: E402
from fastdiode.distill import TrainConfig, Trainer  # noqa: E402
from fastdiode.models import build_model  # noqa: E402
from fastdiode.runtime import RunContext  # noqa: E402


def make_pngs(root: Path, n: int, size: int) -> Path:
    """``n`` smooth random 416 x 416 PNGs (compressible like photos, unlike white noise) with one box each."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        low = rng.random((size // 16, size // 16, 3))
        img = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC))
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        (root / "labels" / f"{i:04d}.txt").write_text("1 0.5 0.5 0.3 0.4\n")
    return root


def loader_rate(kind: str, data, batch: int, steps: int, workers: int, size: int, device=None) -> float:
    """Images/s of the ``kind`` pipeline after start-up (DALI decodes on ``device`` when it is CUDA)."""
    plan = BatchPlan(len(data.items), batch, seed=0, sizes=(size,))
    aug = JitterRanges(0.5, 10.0, 0.5, 0.3)
    stream = batches(kind, data, plan, aug, 8, 0, steps + 2, workers, device)
    next(stream), next(stream)  # start-up: worker processes / pipeline build
    t0 = time.perf_counter()
    for _ in range(steps):
        next(stream)
    return steps * batch / (time.perf_counter() - t0)


def step_rate(compile_: bool, size: int, batch: int, steps: int) -> tuple[float, float]:
    """(images/s, first-call seconds) of the student step: yolo-micro (width 0.25) mimicking yolo-micro (0.5)."""
    torch.manual_seed(0)
    teacher = build_model("yolo-micro", num_classes=10, width=0.5).eval()
    student = build_model("yolo-micro", num_classes=10, width=0.25)
    cfg = load_config(TrainConfig, None, ["data.train=unused", "teacher=unused", f"train.steps={steps + 3}",
                                          f"run.compile={str(compile_).lower()}"])
    trainer = Trainer(cfg, student, teacher, RunContext(torch.device("cpu")), [], progress=False)
    x, boxes = torch.rand(batch, 3, size, size), torch.full((batch, 4, 5), -1.0)
    t0 = time.perf_counter()
    trainer.train_step(x, boxes)
    first = time.perf_counter() - t0
    for _ in range(2):
        trainer.train_step(x, boxes)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, boxes)
    return steps * batch / (time.perf_counter() - t0), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-size", type=int, default=128)
    args = parser.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        data = scan_dataset(make_pngs(Path(tmp), args.images, args.size))
        steps = args.images // args.batch - 2
        kinds = ["torch"] + (["dali"] if dali_available() else [])
        result["loader"] = {k: loader_rate(k, data, args.batch, steps, args.workers, args.size) for k in kinds}
    result["loader_setup"] = {"images": args.images, "size": args.size, "batch": args.batch, "workers": args.workers,
                              "augment": "letterbox + flip + hue/saturation/value"}
    result["step"] = {}
    for mode in ("eager", "compiled"):
        rate, first = step_rate(mode == "compiled", args.step_size, args.batch, 20)
        result["step"][mode] = {"images_per_s": rate, "first_call_s": first}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill_cpu.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Distillation loader and student step on CPU ({result['machine']}, torch {result['torch']})", "",
             f"Loader: {args.images} PNGs of {args.size}x{args.size}, batch {args.batch}, {args.workers} workers, "
             "letterbox + flip + colour jitter.", "", "| pipeline | images/s |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in result["loader"].items()]
    if "dali" in result["loader"]:
        lines += ["", f"DALI / torch: **{result['loader']['dali'] / result['loader']['torch']:.2f}x** (target 1.2x)"]
    lines += ["", f"Student step (yolo-micro 0.25 mimicking yolo-micro 0.5, Adam) at {args.step_size} px, batch "
              f"{args.batch}:", "", "| mode | images/s | first call (s) |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['images_per_s']:.0f} | {v['first_call_s']:.1f} |" for k, v in result["step"].items()]
    (out / "distill_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
