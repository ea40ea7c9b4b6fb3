"""Image files to tensors, and the letterbox resize (keep the aspect ratio, pad to a square)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PAD_BYTE = 114  # the letterbox padding grey
PAD_VALUE = PAD_BYTE / 255


def decode_rgb(path: str | Path) -> torch.Tensor:
    """(3, H, W) uint8; a clear error names a missing or unreadable file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"image {path}: not a readable image ({e})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]; a clear error names a missing or unreadable file."""
    return decode_rgb(path).float().div_(255)


def write_png(path: str | Path, image: torch.Tensor) -> None:
    """Write (3, H, W) in [0, 1] as an 8-bit PNG, rounding (not truncating) to uint8."""
    arr = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path, format="PNG")


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed on the square canvas: canvas = original * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # original size
    height: int


def letterbox_geometry(width: int, height: int, size: int) -> tuple[int, int, Letterbox]:
    """(resized height, resized width, placement) of a ``width`` x ``height`` image letterboxed into ``size``."""
    scale = size / max(height, width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    return nh, nw, Letterbox(scale, float((size - nw) // 2), float((size - nh) // 2), width, height)


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, Letterbox]:
    """Resize (3, H, W) so that its longer side is ``size`` (bilinear) and pad it to size x size, centred."""
    _, h, w = image.shape
    nh, nw, lb = letterbox_geometry(w, h, size)
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp(0, 1)
    top, left = int(lb.pad_y), int(lb.pad_x)
    canvas = image.new_full((3, size, size), PAD_VALUE)
    canvas[:, top:top + nh, left:left + nw] = image
    return canvas, lb


def boxes_to_canvas(boxes: torch.Tensor, lb: Letterbox, size: int) -> torch.Tensor:
    """Normalised (K, 5) ``cls, xc, yc, w, h`` of the original image -> normalised on the letterboxed canvas."""
    out = boxes.clone()
    out[:, 1] = (boxes[:, 1] * lb.width * lb.scale + lb.pad_x) / size
    out[:, 2] = (boxes[:, 2] * lb.height * lb.scale + lb.pad_y) / size
    out[:, 3] = boxes[:, 3] * lb.width * lb.scale / size
    out[:, 4] = boxes[:, 4] * lb.height * lb.scale / size
    return out


def detections_to_original(det: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """(n, 6) ``x1, y1, x2, y2, score, cls`` in canvas pixels -> original-image pixels, clipped to it."""
    out = det.clone()
    out[:, [0, 2]] = ((det[:, [0, 2]] - lb.pad_x) / lb.scale).clamp(0, lb.width)
    out[:, [1, 3]] = ((det[:, [1, 3]] - lb.pad_y) / lb.scale).clamp(0, lb.height)
    return out
