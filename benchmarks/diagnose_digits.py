"""How close are synthesized images to real ones, in the teacher's eyes? Per image set: the BN-statistics loss
per layer (batch mean/variance of each BN input against the teacher's running statistics), the teacher's
detections per image and their confidence, and the high-frequency energy of the pixels.

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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
