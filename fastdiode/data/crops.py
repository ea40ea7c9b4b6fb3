"""Object crops for DICOD's classification teacher: every ground-truth box of a labelled detection set, cut out
as an S×S image with its class (``fastdiode data crops``).

A crop is a pure function of (image, box, S, context): the box, grown by ``context`` × its width and height on
each side, is sampled bilinearly on an S×S grid (:func:`fastdiode.ops.roi_crop`, the sampler the localization
loss uses), with zeros outside the image. The layout is ImageFolder's, so other tools read it too:

    OUT/crops.json                      size, context, class names, crops per split (written last: done)
    OUT/<split>/<class name>/<image>_<k>.png
    OUT/<split>/crops.json              per crop: file, class, source image, box (cls, xc, yc, w, h)

Splits are the source's own (``train/``, ``val/``, ...: every dataset folder under it); a split whose manifest
exists is kept, so an interrupted run resumes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from fastdiode.data.images import decode_rgb
from fastdiode.data.scan import dataset_paths, scan_dataset
from fastdiode.ops.roi_crop import roi_crop_reference
from fastdiode.runtime.files import atomic_write

MANIFEST = "crops.json"


def crop_boxes(image: torch.Tensor, boxes: torch.Tensor, size: int, context: float = 0.0) -> torch.Tensor:
    """(K, 3, S, S) uint8 crops of normalised (K, 4) centre-size ``boxes`` from a (3, H, W) uint8 ``image``."""
    if size < 1:
        raise ValueError(f"size: expected a positive crop size in pixels, got {size}")
    if context < 0:
        raise ValueError(f"context: expected a fraction >= 0 of the box size, got {context}")
    half = boxes[:, 2:4] * (0.5 + context)
    corners = torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], -1)
    crops = roi_crop_reference(image[None].double() / 255, corners[None].double(), size,
                               valid=torch.ones(1, len(boxes), dtype=torch.bool))[0]
    return crops.mul(255).round().clamp(0, 255).to(torch.uint8)


def splits_of(source: str | Path) -> dict[str, Path]:
    """The dataset folders under ``source`` by split name (``train``, ``val``, ...), or ``source`` itself as the
    one split ``train`` when it is a dataset folder."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"--from {source}: no such folder")
    found = {}
    for sub in sorted(p for p in source.iterdir() if p.is_dir()):
        try:
            images, labels = dataset_paths(sub)
        except (FileNotFoundError, ValueError):
            continue
        if images.is_dir() and labels.exists():
            found[sub.name] = sub
    if not found:
        images, labels = dataset_paths(source)
        if not labels.exists():
            raise ValueError(f"--from {source}: neither a labelled dataset folder (images/ + labels/ or "
                             "annotations.json) nor a folder of them (train/, val/, ...)")
        found["train"] = source
    return found


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def write_split(source: Path, out: Path, size: int, context: float, class_names: list[str] | None,
                progress: bool = True) -> tuple[int, list[str]]:
    """Crop every box of the dataset folder ``source`` into ``out``; returns (crops, class names)."""
    from tqdm import tqdm

    data = scan_dataset(source, strict=False)
    if data.skipped:
        raise ValueError(f"--from {source}: {len(data.skipped)} unreadable images or label files, e.g. "
                         f"{data.skipped[0][0]} ({data.skipped[0][1]})")
    top = max((int(i.boxes[:, 0].max()) for i in data.items if len(i.boxes)), default=-1)
    names = class_names or data.class_names or [str(c) for c in range(top + 1)]
    if top >= len(names):
        raise ValueError(f"--from {source}: class {top} in the labels, but only {len(names)} class names")
    folders = [_safe(n) for n in names]
    rows = []
    for item in tqdm(data.items, desc=f"crops {source.name}", unit="img", disable=not progress, dynamic_ncols=True):
        if not len(item.boxes):
            continue
        crops = crop_boxes(decode_rgb(item.path), item.boxes[:, 1:5], size, context)
        for k, (box, crop) in enumerate(zip(item.boxes, crops)):
            cls = int(box[0])
            rel = f"{folders[cls]}/{_safe(item.path.stem)}_{k}.png"
            (out / folders[cls]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop.permute(1, 2, 0).numpy()).save(out / rel, format="PNG")
            rows.append({"file": rel, "class": cls, "image": item.path.name,
                         "box": [round(v, 6) for v in box.tolist()]})
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps({"class_names": names, "crops": rows})))
    return len(rows), names


def write_crops(source: str | Path, out: str | Path, size: int, context: float = 0.0,
                progress: bool = True) -> dict:
    """Cut the crops of every split of ``source`` into ``out`` (see the module docstring); returns the summary."""
    if size < 1:
        raise ValueError(f"--size: expected a positive crop size in pixels, got {size}")
    if context < 0:
        raise ValueError(f"--context: expected a fraction >= 0 of the box size, got {context}")
    out = Path(out)
    summary_path = out / MANIFEST
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if (done["size"], done["context"]) != (size, context):
            raise ValueError(f"--out {out}: holds crops of size {done['size']}, context {done['context']}; choose "
                             "another --out")
        return done
    names, counts = None, {}
    for split, folder in splits_of(source).items():
        manifest = out / split / MANIFEST
        if manifest.is_file():  # finished by an earlier, interrupted run
            kept = json.loads(manifest.read_text())
            counts[split], names = len(kept["crops"]), names or kept["class_names"]
            continue
        counts[split], names = write_split(folder, out / split, size, context, names, progress)
    summary = {"size": size, "context": context, "class_names": names, "splits": counts, "source": str(source)}
    atomic_write(summary_path, lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return summary


@dataclass
class CropSet:
    """One split of a crops folder in memory: images (N, 3, S, S) uint8, labels (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    @classmethod
    def load(cls, split_dir: str | Path) -> CropSet:
        split_dir = Path(split_dir)
        manifest = split_dir / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"crops {split_dir}: no {MANIFEST} (make one with fastdiode data crops)")
        info = json.loads(manifest.read_text())
        if not info["crops"]:
            raise ValueError(f"crops {split_dir}: no crops")
        images = torch.stack([decode_rgb(split_dir / row["file"]) for row in info["crops"]])
        labels = torch.tensor([row["class"] for row in info["crops"]])
        return cls(images, labels, info["class_names"])
