"""Label sets: YOLO txt (``cls xc yc w h`` per line, normalised) and COCO json, read into per-image (K, 5)
float tensors ``cls, xc, yc, w, h`` (class indices contiguous from 0) and written back."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fastdiode.runtime.files import atomic_write


class ClassRangeError(ValueError):
    """A label's class is not below the model's number of classes: the labels and the model do not belong
    together, so it is an error even where malformed lines are only skipped."""


def read_yolo_labels(path: str | Path, num_classes: int | None = None) -> torch.Tensor:
    """(K, 5) from a YOLO txt file; a missing file is an image without objects. Malformed lines, boxes
    outside [0, 1] and unknown classes raise a ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return torch.zeros(0, 5)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 5 or values[0] != int(values[0]) or values[0] < 0:
            raise ValueError(f"labels {path}:{lineno}: expected 'class xc yc w h' with an integer class, "
                             f"got {line.strip()!r}")
        cls, xc, yc, w, h = values
        if num_classes is not None and cls >= num_classes:
            raise ClassRangeError(f"labels {path}:{lineno}: class {int(cls)} is not below the model's "
                                  f"{num_classes} classes")
        if not (0 <= xc <= 1 and 0 <= yc <= 1 and 0 < w <= 1 and 0 < h <= 1):
            raise ValueError(f"labels {path}:{lineno}: box {xc, yc, w, h} is outside [0, 1] (normalised "
                             "centre and size expected)")
        rows.append(values)
    return torch.tensor(rows, dtype=torch.float32).view(-1, 5)


def write_yolo_labels(path: str | Path, boxes: torch.Tensor) -> None:
    """Write the valid rows (cls >= 0) of (K, 5) boxes as a YOLO txt file, atomically."""
    lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in boxes.tolist() if c >= 0]
    atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


class CocoLabels:
    """A COCO annotation file: images, categories (mapped to contiguous class indices) and per-image boxes.
    With ``num_classes``, a category whose class index is not below it is a :class:`ClassRangeError`."""

    def __init__(self, path: str | Path, num_classes: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"COCO annotations {self.path}: no such file")
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"COCO annotations {self.path}: not valid JSON ({e})") from None
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"COCO annotations {self.path}: missing the {key!r} list")
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in self.categories]
        self.class_names = [c["name"] for c in self.categories]
        index = {cid: i for i, cid in enumerate(self.category_ids)}
        if num_classes is not None and len(index) > num_classes:
            extra = self.categories[num_classes]
            raise ClassRangeError(f"COCO annotations {self.path}: category {extra['id']} ({extra.get('name')!r}) is "
                                  f"class {num_classes}, not below the model's {num_classes} classes")
        self.images = {im["id"]: im for im in data["images"]}
        self._boxes: dict[int, list[list[float]]] = {i: [] for i in self.images}
        for ann in data["annotations"]:
            im = self.images.get(ann["image_id"])
            if im is None or ann["category_id"] not in index:
                raise ValueError(f"COCO annotations {self.path}: annotation {ann.get('id')} refers to an unknown "
                                 f"image {ann['image_id']} or category {ann['category_id']}")
            x, y, w, h = ann["bbox"]
            if w <= 0 or h <= 0 or x < -1 or y < -1 or x + w > im["width"] + 1 or y + h > im["height"] + 1:
                raise ValueError(f"COCO annotations {self.path}: annotation {ann.get('id')} box {ann['bbox']} is "
                                 f"outside image {im['id']} ({im['width']}x{im['height']})")
            self._boxes[ann["image_id"]].append([index[ann["category_id"]], (x + w / 2) / im["width"],
                                                 (y + h / 2) / im["height"], w / im["width"], h / im["height"]])

    def boxes(self, image_id: int) -> torch.Tensor:
        return torch.tensor(self._boxes[image_id], dtype=torch.float32).view(-1, 5)


def coco_dict(files: list[tuple[str, int, int, torch.Tensor]], class_names: list[str]) -> dict:
    """A COCO annotation dict from (file name, width, height, normalised (K, 5) boxes) per image; image ids
    count from 1 in list order, category ids are class index + 1."""
    images, annotations = [], []
    for image_id, (name, width, height, boxes) in enumerate(files, 1):
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for c, xc, yc, w, h in boxes.tolist():
            if c < 0:
                continue
            x1, y1 = max(0.0, (xc - w / 2) * width), max(0.0, (yc - h / 2) * height)  # rounded YOLO text can
            bw, bh = min(width, (xc + w / 2) * width) - x1, min(height, (yc + h / 2) * height) - y1  # overshoot
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c) + 1,
                                "bbox": [x1, y1, bw, bh], "area": bw * bh,
                                "iscrowd": 0})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_json(path: str | Path, files: list[tuple[str, int, int, torch.Tensor]], class_names: list[str]) -> None:
    """Write :func:`coco_dict` to ``path`` atomically."""
    data = coco_dict(files, class_names)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data)))
