"""The one reader of detection datasets: an image folder is indexed once, every image checked (headers and
CRCs) and its labels parsed up front, so that corrupt images and malformed label lines are counted, reported
with their paths and skipped (or, with ``strict``, raise) before any work starts instead of crashing a worker
mid-run. One rule says where an image folder's labels are (:func:`labels_beside`); the trainer, the evaluation
and the label targets of the inversion all read through here."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from fastdiode.data.images import IMAGE_SUFFIXES
from fastdiode.data.labels import ClassRangeError, CocoLabels, coco_dict, read_yolo_labels
from fastdiode.runtime.files import atomic_write

log = logging.getLogger("fastdiode")


@dataclass(frozen=True)
class Item:
    path: Path
    width: int
    height: int
    boxes: torch.Tensor  # (K, 5) normalised cls, xc, yc, w, h on the original image
    image_id: int  # the COCO image id, or the 1-based position in the sorted folder for YOLO labels


@dataclass
class ScannedDataset:
    """The usable items of a dataset folder, its class names (when the labels carry them) and what was skipped."""

    root: Path
    items: list[Item]
    class_names: list[str] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    names_file: Path | None = None  # the file the class names come from

    def check_classes(self, num_classes: int, key: str) -> None:
        """A dataset that names its classes must name ``num_classes`` of them (``key``: the config key, for the
        message)."""
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise ValueError(f"{key}: {self.names_file} names {len(self.class_names)} classes, but the model has "
                             f"{num_classes}; use a dataset of the model's classes")

    def coco(self, class_names: list[str]) -> dict:
        """The items as a COCO annotation dict (image ids count from 1 in item order)."""
        return coco_dict([(i.path.name, i.width, i.height, i.boxes) for i in self.items], class_names)


def coco_ground_truth(root: str | Path, class_names: list[str], out: str | Path) -> tuple[Path, Path]:
    """(image folder, COCO json) of the labelled dataset ``root``: its own annotations.json, or for YOLO labels
    one written (atomically) as ``out``/val_annotations.json."""
    images, labels = dataset_paths(root)
    if labels.suffix == ".json":
        return images, labels
    scanned = scan_dataset(root, len(class_names), strict=True)
    gt = Path(out) / "val_annotations.json"
    gt.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(gt, lambda tmp: tmp.write_text(json.dumps(scanned.coco(class_names))))
    return images, gt


def labels_beside(image_dir: str | Path) -> Path:
    """The labels of an image folder: the ``labels/`` folder beside it (YOLO txt), else the ``annotations.json``
    beside it (COCO); with neither, that ``labels/`` folder (every image then has no objects)."""
    parent = Path(image_dir).parent
    if not (parent / "labels").is_dir() and (parent / "annotations.json").is_file():
        return parent / "annotations.json"
    return parent / "labels"


def dataset_paths(root: str | Path) -> tuple[Path, Path]:
    """(image folder, labels) of a dataset folder as ``fastdiode invert`` / ``fastdiode data`` write it
    (``images/`` + ``labels/`` or ``annotations.json``), or of a bare image folder (:func:`labels_beside`)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset {root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"dataset {root}: not a folder (expected images/ + labels/ or annotations.json)")
    image_dir = root / "images" if (root / "images").is_dir() else root
    return image_dir, labels_beside(image_dir)


def _check_image(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        size = im.size
        im.verify()
    return size


def scan_dataset(root: str | Path, num_classes: int | None = None, strict: bool = False) -> ScannedDataset:
    """Index the dataset folder ``root`` (see :func:`dataset_paths` and :func:`scan_images`)."""
    return scan_images(*dataset_paths(root), num_classes=num_classes, strict=strict, root=root)


def scan_images(image_dir: str | Path, labels: str | Path | None = None, num_classes: int | None = None,
                strict: bool = False, root: str | Path | None = None) -> ScannedDataset:
    """Index ``image_dir`` with ``labels`` (a YOLO labels folder or a COCO json; default
    :func:`labels_beside`). Unreadable images and label files with a malformed line are skipped with a warning
    listing them; ``strict`` makes the first one an error. A class not below ``num_classes`` and a folder with
    no usable image are errors."""
    image_dir = Path(image_dir)
    root = Path(root) if root is not None else image_dir
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir}: no such folder")
    labels = Path(labels) if labels is not None else labels_beside(image_dir)
    coco = CocoLabels(labels, num_classes) if labels.suffix == ".json" else None
    if coco is not None:
        files = [(image_dir / im["file_name"], im["id"], lambda i=im["id"]: coco.boxes(i))
                 for im in coco.images.values()]
    else:
        paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = [(p, i, lambda p=p: read_yolo_labels(labels / f"{p.stem}.txt", num_classes))
                 for i, p in enumerate(paths, 1)]
    if not files:
        raise ValueError(f"dataset {root}: no images in {image_dir} ({', '.join(IMAGE_SUFFIXES)})")
    items, skipped = [], []
    for path, image_id, read_boxes in files:
        try:
            width, height = _check_image(path)
            boxes = read_boxes()
        except ClassRangeError:
            raise
        except FileNotFoundError:
            reason = "no such file"
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            reason = f"unreadable image ({e})"
        except ValueError as e:
            reason = str(e)
        else:
            items.append(Item(path, width, height, boxes, image_id))
            continue
        if strict:
            raise ValueError(f"dataset {root}: {path}: {reason} (strict: true; set strict: false to skip it)")
        skipped.append((str(path), reason))
    if skipped:
        shown = "\n".join(f"  {p}: {r}" for p, r in skipped[:20])
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        log.warning("dataset %s: skipped %d of %d images:\n%s%s", root, len(skipped), len(files), shown, more)
    if not items:
        raise ValueError(f"dataset {root}: none of its {len(files)} images is usable")
    names_file = labels if coco is not None else image_dir.parent / "annotations.json"
    names = coco.class_names if coco is not None else _names_beside(names_file)
    return ScannedDataset(Path(root), items, names, skipped, names_file if names is not None else None)


def _names_beside(path: Path) -> list[str] | None:
    """Class names from the ``annotations.json`` next to a YOLO-labelled image folder, when there is one."""
    if not path.is_file():
        return None
    try:
        cats = json.loads(path.read_text()).get("categories", [])
    except (json.JSONDecodeError, AttributeError):
        return None
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])] or None
