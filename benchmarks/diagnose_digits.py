"""How close are synthesized images to real ones, in the teacher's eyes? Per image set: the BN-statistics loss
per layer (batch mean/variance of each BN input against the teacher's running statistics), the teacher's
detections per image and their confidence, and the high-frequency energy of the pixels. Then the boxes each
synthesized set was optimised towards, against the real images' ground truth: with the one-box sampler a label
file's first row is the sampled box and every later row a Y_fp addition (the teacher's confident detections that
overlap no target), so this shows what Y_fp adds.

    python benchmarks/diagnose_digits.py runs/bench_digits benchmarks/results/bench_digits

Reads the sets a digits benchmark run wrote (data/val, data/photos, data/noise, synth/*) and writes
diagnosis.md there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdiode.data.images import read_image  # noqa: E402
from fastdiode.data.labels import read_yolo_labels  # noqa: E402
from fastdiode.demo.config import SHIPPED_TEACHER  # noqa: E402
from fastdiode.losses import BNStatLoss  # noqa: E402
from fastdiode.models import load  # noqa: E402
from fastdiode.models.postprocess import postprocess  # noqa: E402


def load_set(folder: Path, n: int) -> torch.Tensor:
    return torch.stack([read_image(p) for p in sorted((folder / "images").glob("*.png"))[:n]])


@torch.no_grad()
def diagnose(teacher, images: torch.Tensor) -> dict:
    with BNStatLoss(teacher) as bn:
        preds = teacher(images)
        bn()
        per_layer = bn.layer_values.tolist()
    dets = postprocess(preds, 0.3, 0.45, 50, model=teacher)
    scores = torch.cat([d[:, 4] for d in dets])
    dx = (images[..., 1:] - images[..., :-1]).abs().mean().item()
    return {"bn_total": sum(per_layer), "bn_first": per_layer[0], "bn_last": per_layer[-1],
            "bn_max_layer": int(torch.tensor(per_layer).argmax()), "detections": len(scores) / len(images),
            "confidence": scores.mean().item() if len(scores) else 0.0, "tv": dx}


def read_boxes(folder: Path, n: int) -> list[torch.Tensor]:
    """(k, 5) rows of class, cx, cy, w, h (normalised) per image, from the YOLO label files of a set's first
    ``n`` images (synthesized sets and the digits' real splits both write them)."""
    return [read_yolo_labels(f) for f in sorted((folder / "labels").glob("*.txt"))[:n]]


def box_stats(boxes: list[torch.Tensor], synthesized: bool) -> dict:
    """Boxes per image (mean, max), their mean side (sqrt of the normalised area), and for a synthesized set the
    Y_fp rows (every row after the first): per image, their share of all boxes and their mean side."""
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.float64)
    rows = torch.cat(boxes) if boxes else torch.zeros(0, 5)
    fp = torch.cat([b[1:] for b in boxes]) if synthesized and boxes else torch.zeros(0, 5)

    def side(r: torch.Tensor) -> float:
        return (r[:, 3] * r[:, 4]).clamp(min=0).sqrt().mean().item() if len(r) else float("nan")

    return {"per_image": counts.mean().item(), "max": int(counts.max()) if len(counts) else 0, "side": side(rows),
            "fp_per_image": len(fp) / max(len(boxes), 1), "fp_share": len(fp) / max(len(rows), 1),
            "fp_side": side(fp), "with_fp": (counts > 1).double().mean().item() if synthesized else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a digits benchmark run folder")
    parser.add_argument("out", help="folder for diagnosis.md")
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    run = Path(args.run)
    teacher = load(SHIPPED_TEACHER).eval()
    sets = {"real val": run / "data" / "val", "photos": run / "data" / "photos", "noise": run / "data" / "noise"}
    synth = sorted(p for p in (run / "synth").iterdir() if any((p / "images").glob("*.png")))
    sets.update({f"synth {p.name}": p for p in synth})
    lines = ["# What the teacher sees in each image set", "",
             f"{args.images} images per set; BN-statistics loss over the teacher's BN layers (sum, first, last, "
             "and the worst layer's index); detections per image and their mean "
             "confidence at conf > 0.3; mean |horizontal pixel difference| (high-frequency energy).", "",
             "| set | BN loss sum | first layer | last layer | worst layer | detections / image | confidence | "
             "mean abs dx |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, folder in sets.items():
        d = diagnose(teacher, load_set(folder, args.images))
        lines.append(f"| {name} | {d['bn_total']:.2f} | {d['bn_first']:.3f} | {d['bn_last']:.3f} | "
                     f"{d['bn_max_layer']} | {d['detections']:.1f} | {d['confidence']:.2f} | {d['tv']:.3f} |")
    lines += ["", "## The boxes each set was optimised towards (what Y_fp adds)", "",
              f"First {args.images} images per set. Real val: the ground truth. Synthesized sets: the label files, "
              "whose first row is the sampled box and later rows Y_fp's additions. Side: sqrt(w·h) as a fraction "
              "of the image.", "",
              "| set | boxes / image | max | mean side | images with Y_fp boxes | Y_fp boxes / image | Y_fp share "
              "of boxes | Y_fp mean side |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, folder in sets.items():
        if name in ("photos", "noise"):
            continue
        synthesized = name.startswith("synth")
        b = box_stats(read_boxes(folder, args.images), synthesized)
        fp = (f"{100 * b['with_fp']:.0f}% | {b['fp_per_image']:.2f} | {100 * b['fp_share']:.0f}% | "
              f"{b['fp_side']:.2f}" if synthesized else "- | - | - | -")
        lines.append(f"| {name} | {b['per_image']:.2f} | {b['max']} | {b['side']:.2f} | {fp} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
