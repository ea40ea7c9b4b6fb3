"""The distillation loaders' per-sample jitter (not DIODE's differentiable augmentation, :mod:`fastdiode.augment`):
letterbox to the step's size, random horizontal flip of the canvas (boxes flipped with it) and an HSV-style
colour jitter. As in kornia, the random parameters are drawn
apart from their application, on the host, from a per-sample seed: the torch and DALI pipelines apply the
same parameters, so they produce equivalent batches, and a batch is a pure function of (seed, step)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fastdiode.data.images import PAD_VALUE, Letterbox, boxes_to_canvas, letterbox_geometry
from fastdiode.data.scan import Item

# RGB <-> YIQ: hue is a rotation of the (I, Q) chroma plane, saturation scales it, value scales everything.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


@dataclass(frozen=True)
class JitterRanges:
    """Ranges of the loader's random flip and colour jitter; zeros turn them off."""

    flip_p: float = 0.5
    hue: float = 0.0  # max hue rotation in degrees
    saturation: float = 0.0  # max relative saturation change (0.5: x0.5 .. x1.5)
    value: float = 0.0  # max relative brightness change

    @classmethod
    def off(cls) -> JitterRanges:
        return cls(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SampleParams:
    """Everything random or geometric about one training sample."""

    size: int
    new_h: int
    new_w: int
    letterbox: Letterbox
    flip: bool
    colour: np.ndarray  # (3, 3) float32 RGB -> RGB matrix

    @property
    def top(self) -> int:
        return int(self.letterbox.pad_y)

    @property
    def left(self) -> int:
        return int(self.letterbox.pad_x)


def colour_matrix(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    """The RGB -> RGB matrix that rotates hue by ``hue_deg``, scales chroma by ``saturation`` and all by ``value``."""
    c, s = math.cos(math.radians(hue_deg)), math.sin(math.radians(hue_deg))
    twist = np.array([[1.0, 0.0, 0.0], [0.0, saturation * c, -saturation * s], [0.0, saturation * s, saturation * c]])
    return (value * YIQ_TO_RGB @ twist @ RGB_TO_YIQ).astype(np.float32)


def sample_params(item: Item, size: int, aug: JitterRanges, seed: int) -> SampleParams:
    """Draw one sample's parameters from ``seed`` (any int)."""
    rng = np.random.default_rng(seed)
    flip, u_h, u_s, u_v = rng.random(4)
    nh, nw, lb = letterbox_geometry(item.width, item.height, size)
    colour = colour_matrix(aug.hue * (2 * u_h - 1), 1 + aug.saturation * (2 * u_s - 1), 1 + aug.value * (2 * u_v - 1))
    return SampleParams(size, nh, nw, lb, bool(flip < aug.flip_p), colour)


def sample_boxes(item: Item, params: SampleParams, capacity: int) -> torch.Tensor:
    """The item's boxes on the jittered canvas, padded to (capacity, 5) with cls = -1 rows."""
    boxes = boxes_to_canvas(item.boxes, params.letterbox, params.size)
    if params.flip:  # the letterboxed canvas is mirrored
        boxes[:, 1] = 1.0 - boxes[:, 1]
    if len(boxes) > capacity:
        raise ValueError(f"labels of {item.path}: {len(boxes)} boxes exceed the loader capacity {capacity}; "
                         "raise data.capacity")
    pad = torch.tensor([[-1.0, 0, 0, 0, 0]]).expand(capacity - len(boxes), 5)
    return torch.cat([boxes, pad])


def apply_params(image: torch.Tensor, params: SampleParams) -> torch.Tensor:
    """Apply ``params`` to a decoded (3, H, W) uint8 image: float (3, size, size) in [0, 1]."""
    x = image.float().div_(255)[None]
    if (params.new_h, params.new_w) != tuple(image.shape[1:]):
        x = F.interpolate(x, size=(params.new_h, params.new_w), mode="bilinear", align_corners=False, antialias=True)
    x = x[0]
    if not np.allclose(params.colour, np.eye(3)):
        x = torch.einsum("ij,jhw->ihw", torch.from_numpy(params.colour), x)
    canvas = x.new_full((3, params.size, params.size), PAD_VALUE)
    canvas[:, params.top:params.top + params.new_h, params.left:params.left + params.new_w] = x.clamp_(0, 1)
    return canvas.flip(-1) if params.flip else canvas
