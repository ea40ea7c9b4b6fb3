"""A detection dataset over an image folder with COCO json or YOLO txt labels: letterboxed images and
boxes padded to a fixed capacity (rows with cls = -1 are padding), the format every fastdiode loss takes."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from fastdiode.data.images import IMAGE_SUFFIXES, boxes_to_canvas, letterbox, read_image
from fastdiode.data.labels import CocoLabels, read_yolo_labels


class DetectionDataset(Dataset):
    """Images of ``image_dir`` with labels from a COCO json file or a YOLO labels folder (default: the
    ``labels`` folder beside ``image_dir``; images without a label file have no objects).

    Items are ``(image (3, size, size), boxes (capacity, 5), info)`` with ``info`` = file, image id, letterbox.
    """

    def __init__(self, image_dir: str | Path, labels: str | Path | None = None, size: int = 416,
                 capacity: int = 100, num_classes: int | None = None):
        self.image_dir, self.size, self.capacity, self.num_classes = Path(image_dir), size, capacity, num_classes
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir}: no such folder")
        labels = Path(labels) if labels is not None else self.image_dir.parent / "labels"
        self.coco = CocoLabels(labels, num_classes) if labels.suffix == ".json" else None
        if self.coco is not None:
            self.items = [(self.image_dir / im["file_name"], im["id"]) for im in self.coco.images.values()]
            self.class_names = self.coco.class_names
        else:
            files = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.items = [(p, i + 1) for i, p in enumerate(files)]
            self.label_dir = labels
            self.class_names = None
        if not self.items:
            raise ValueError(f"image folder {self.image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.items)

    def boxes(self, index: int) -> torch.Tensor:
        """The (K, 5) normalised boxes of an item on its original image."""
        path, image_id = self.items[index]
        if self.coco is not None:
            return self.coco.boxes(image_id)
        return read_yolo_labels(self.label_dir / f"{path.stem}.txt", self.num_classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        path, image_id = self.items[index]
        image, lb = letterbox(read_image(path), self.size)
        boxes = boxes_to_canvas(self.boxes(index), lb, self.size)
        if len(boxes) > self.capacity:
            raise ValueError(f"labels of {path}: {len(boxes)} boxes exceed the capacity of {self.capacity}; "
                             "raise capacity")
        padded = torch.cat([boxes, torch.tensor([[-1.0, 0, 0, 0, 0]]).expand(self.capacity - len(boxes), 5)])
        return image, padded, {"file": str(path), "image_id": image_id, "letterbox": lb}


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    images, boxes, infos = zip(*batch)
    return torch.stack(images), torch.stack(boxes), list(infos)


__all__ = ["DetectionDataset", "collate"]
