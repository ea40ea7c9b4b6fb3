"""A detection dataset over an image folder with COCO json or YOLO txt labels: letterboxed images and boxes
padded to a fixed capacity (rows with cls = -1 are padding), the format every fastdiode loss takes. It reads
through :func:`fastdiode.data.scan.scan_images`, so it checks and finds labels exactly as the trainer does."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from fastdiode.data.images import boxes_to_canvas, letterbox, read_image
from fastdiode.data.scan import scan_images


class DetectionDataset(Dataset):
    """Images of ``image_dir`` with labels from a COCO json file or a YOLO labels folder (default: see
    :func:`fastdiode.data.scan.labels_beside`; an image without a label file has no objects). Every image and
    label is checked once, up front: a corrupt image or malformed label is an error naming it.

    Items are ``(image (3, size, size), boxes (capacity, 5), info)`` with ``info`` = file, image id, letterbox.
    """

    def __init__(self, image_dir: str | Path, labels: str | Path | None = None, size: int = 416,
                 capacity: int = 100, num_classes: int | None = None):
        self.size, self.capacity = size, capacity
        scanned = scan_images(image_dir, labels, num_classes, strict=True)
        self.items, self.class_names = scanned.items, scanned.class_names

    def __len__(self) -> int:
        return len(self.items)

    def boxes(self, index: int) -> torch.Tensor:
        """The (K, 5) normalised boxes of an item on its original image."""
        return self.items[index].boxes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        item = self.items[index]
        image, lb = letterbox(read_image(item.path), self.size)
        boxes = boxes_to_canvas(item.boxes, lb, self.size)
        if len(boxes) > self.capacity:
            raise ValueError(f"labels of {item.path}: {len(boxes)} boxes exceed the capacity of {self.capacity}; "
                             "raise capacity")
        padded = torch.cat([boxes, torch.tensor([[-1.0, 0, 0, 0, 0]]).expand(self.capacity - len(boxes), 5)])
        return image, padded, {"file": str(item.path), "image_id": item.image_id, "letterbox": lb}


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    images, boxes, infos = zip(*batch)
    return torch.stack(images), torch.stack(boxes), list(infos)


__all__ = ["DetectionDataset", "collate"]
