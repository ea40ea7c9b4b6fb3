"""The embedded benchmark's data: real handwritten digits (scikit-learn's bundled ``load_digits``, 1,797 8x8
scans, 10 classes; no download) composited onto procedural textured backgrounds, plus two out-of-distribution
proxy sets (random crops of scikit-learn's two bundled photographs, and Gaussian noise).

Each canvas holds 1-4 digits, each upscaled to 16-48 px, coloured, alpha-composited by its intensity with
limited overlap; a digit's box is the tight box of its *visible* pixels (alpha > 0 after occlusion), so box
borders touch digit pixels and every pixel outside all boxes is background. Train and val digits come from
disjoint scans; the optional holdout split is drawn like the train split (its scans, other canvases), so settings can
be chosen on it without looking at val. Everything is a pure function of (seed, split, image index).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastdiode.data.labels import write_coco_json, write_yolo_labels
from fastdiode.runtime.files import atomic_write
from fastdiode.runtime.schedule import derive_seed

log = logging.getLogger("fastdiode")
CLASS_NAMES = [str(d) for d in range(10)]
SPLITS = {"train": 0, "val": 1, "photos": 2, "noise": 3, "holdout": 4}


@dataclass(frozen=True)
class DigitsSpec:
    """What ``fastdiode data digits`` builds (the defaults are the benchmark's)."""

    train: int = 4000
    val: int = 500
    proxy: int = 1000  # images in each of the photos and noise sets
    holdout: int = 0  # images held out from the train distribution (train scans), for choosing settings
    size: int = 96
    min_digit: int = 16
    max_digit: int = 48
    max_digits: int = 4
    max_iou: float = 0.15  # between digit boxes when placed
    val_fraction: float = 0.25  # of the 1,797 scans, kept for the val objects
    seed: int = 0


def _scans(spec: DigitsSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint (images (n, 8, 8) in [0, 1], labels) scans for the train and val objects."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(derive_seed(spec.seed, 99)).permutation(len(digits.target))
    n_val = int(round(spec.val_fraction * len(order)))
    pick = {"val": order[:n_val], "train": order[n_val:]}
    return {k: (digits.images[i] / 16.0, digits.target[i]) for k, i in pick.items()}


def _background(rng: np.random.Generator, size: int, dark: bool) -> np.ndarray:
    """A smooth procedural texture: a base colour, three random gratings and fine noise, (size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0.05, 0.4, 3) if dark else rng.uniform(0.6, 0.95, 3)
    tex = np.zeros((size, size))
    for _ in range(3):
        fx, fy, phase = rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(0, 2 * np.pi)
        tex += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    tint = rng.uniform(0.5, 1.0, 3)
    bg = base + 0.06 * tex[..., None] * tint + rng.normal(0, 0.015, (size, size, 3))
    return np.clip(bg, 0, 1)


def _alpha(scan: np.ndarray, px: int) -> np.ndarray:
    """An 8x8 scan upscaled to px x px (bilinear); faint values below 0.2 are cut so edges are crisp."""
    img = Image.fromarray((scan * 255).astype(np.uint8)).resize((px, px), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float64) / 255
    return np.where(a < 0.2, 0.0, a)


def _iou(a: tuple, b: tuple) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def digit_canvas(rng: np.random.Generator, scans: np.ndarray, labels: np.ndarray, spec: DigitsSpec
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) image in [0, 1] and its (K, 5) normalised ``cls, xc, yc, w, h`` boxes."""
    size = spec.size
    dark = bool(rng.random() < 0.7)
    image = _background(rng, size, dark)
    placed: list[tuple[int, np.ndarray, tuple]] = []  # (class, full-canvas alpha, placement box)
    for _ in range(int(rng.integers(1, spec.max_digits + 1))):
        for _try in range(30):
            k = int(rng.integers(len(labels)))
            px = int(rng.integers(spec.min_digit, spec.max_digit + 1))
            x0, y0 = int(rng.integers(0, size - px + 1)), int(rng.integers(0, size - px + 1))
            box = (x0, y0, x0 + px, y0 + px)
            if all(_iou(box, b) <= spec.max_iou for _, _, b in placed):
                alpha = np.zeros((size, size))
                alpha[y0:y0 + px, x0:x0 + px] = _alpha(scans[k], px)
                placed.append((int(labels[k]), alpha, box))
                break
    visible = []
    for i, (_, alpha, _) in enumerate(placed):
        vis = alpha.copy()
        for _, later, _ in placed[i + 1:]:
            vis *= 1.0 - later
        visible.append(vis)
    for _, alpha, _ in placed:
        colour = rng.uniform(0.7, 1.0, 3) if dark else rng.uniform(0.0, 0.3, 3)
        colour[rng.integers(3)] *= rng.uniform(0.3, 1.0)  # a tint, not only grey
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    boxes = []
    for (cls, alpha, _), vis in zip(placed, visible):
        if (vis > 0).sum() < 0.5 * (alpha > 0).sum():
            continue  # mostly hidden: cannot be labelled fairly (its pixels stay inside the occluder's box)
        ys, xs = np.nonzero(vis > 0)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        boxes.append([cls, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size])
    return image, np.array(boxes, dtype=np.float64).reshape(-1, 5)


def photo_crop(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random crop (random scale 1/8 .. 1 of the shorter side, random position) of a photograph, resized."""
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 8, min(h, w) + 1))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.float64) / 255


def noise_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.clip(rng.normal(0.5, 0.25, (size, size, 3)), 0, 1)


def _write(path: Path, image: np.ndarray) -> None:
    arr = np.round(image * 255).astype(np.uint8)
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def build_digits(out: str | Path, spec: DigitsSpec = DigitsSpec(), progress: bool = True) -> dict[str, Path]:
    """Write ``out/{train,val}`` (images/, labels/, annotations.json), ``out/{photos,noise}`` (images/) and, with
    ``spec.holdout``, ``out/holdout`` (labelled, from the train scans). A finished set (its ``done.json`` matches
    ``spec``) is reused; an interrupted one is rebuilt."""
    from tqdm import tqdm

    out = Path(out)
    counts = {"train": spec.train, "val": spec.val, "photos": spec.proxy, "noise": spec.proxy,
              **({"holdout": spec.holdout} if spec.holdout else {})}
    scans = photos = None
    paths = {}
    for split, n in counts.items():
        folder = paths[split] = out / split
        stamp = {"spec": asdict(spec), "split": split}
        done = folder / "done.json"
        if done.is_file() and json.loads(done.read_text()) == stamp:
            continue
        if split in ("train", "val", "holdout") and scans is None:
            scans = _scans(spec)
        if split == "photos" and photos is None:
            from sklearn.datasets import load_sample_images

            photos = list(load_sample_images().images)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        files = []
        for i in tqdm(range(n), desc=f"digits {split}", unit="img", disable=not progress):
            rng = np.random.default_rng(derive_seed(spec.seed, SPLITS[split], i))
            name = f"{split}_{i:05d}"
            if split in ("train", "val", "holdout"):
                image, boxes = digit_canvas(rng, *scans["val" if split == "val" else "train"], spec)
                boxes_t = torch.from_numpy(boxes).float()
                write_yolo_labels(folder / "labels" / f"{name}.txt", boxes_t)
                files.append((f"{name}.png", spec.size, spec.size, boxes_t))
            else:
                image = photo_crop(rng, photos, spec.size) if split == "photos" else noise_image(rng, spec.size)
            _write(folder / "images" / f"{name}.png", image)
        if files:
            write_coco_json(folder / "annotations.json", files, CLASS_NAMES)
        atomic_write(done, lambda tmp: tmp.write_text(json.dumps(stamp)))
    return paths
