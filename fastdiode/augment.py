"""DIODE's differentiable batch augmentation with boxes (method.md §3).

Random parameters are drawn on the device (from a supplied ``torch.Generator``) apart from their
application, kornia-style, so a draw can be inspected and replayed: :func:`sample_augment_params` draws an
:class:`AugmentParams`, :func:`augment_images` applies it to the images (one fused gather + affine + mask op),
:func:`augment_boxes` moves the boxes with the very same parameters. :class:`DiodeAugment` wraps all three.

Order, as in DIODE: roll-jitter by (dy, dx) in [-J, J] with wrap-around, horizontal flip, brightness
``x += b``, contrast ``x *= c``, random erasing (value 0; boxes unchanged). Boxes are a padded (B, K, 5)
tensor ``cls, xc, yc, w, h`` (normalised; rows with cls < 0 are padding): shifted with the image, clipped
to it, flipped; boxes that become degenerate turn into padding rows ``(-1, 0, 0, 0, 0)``.

Differences from the authors' code, kept on purpose: a box is dropped when it is under 2 px wide or high
after clipping, at every step (``box_drop="side"``): such a sliver of an object is no target for the detector
loss. The authors drop a box only when its area is under 1 px², and only when the draw shifts the image
(``box_drop="area"`` reproduces that).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from fastdiode.models.boxes import xyxy_to_xywh
from fastdiode.ops.gather_affine import gather_affine_mask
from fastdiode.ops.tensor_checks import require_float, require_rank

__all__ = ["AugmentParams", "DiodeAugment", "augment_boxes", "augment_images", "diode_augment",
           "sample_augment_params"]

# The paper's values (method.md §3): the one place the defaults live (the inversion config reads them too).
FLIP_P, BRIGHTNESS, CONTRAST, ERASE_P = 0.5, 0.2, 0.1, 0.5
ERASE_AREA, ERASE_RATIO = (0.02, 0.2), (0.3, 3.3)
MIN_BOX_SIZE = 2.0
BOX_DROPS = ("side", "area")


@dataclass
class AugmentParams:
    """One draw of the augmentation for a batch; every field is a device tensor with one row per image."""

    shift_y: torch.Tensor  # (B,) int64, rows the content moves down (negative: up)
    shift_x: torch.Tensor  # (B,) int64, columns the content moves right, before the flip
    flip: torch.Tensor  # (B,) bool, horizontal flip
    brightness: torch.Tensor  # (B,) float32, added first
    contrast: torch.Tensor  # (B,) float32, multiplied after
    erase: torch.Tensor  # (B, 4) int64 (y0, x0, y1, x1) half-open; y1 == y0 means no erasing
    height: int
    width: int

    def _map(self, fn) -> AugmentParams:
        return AugmentParams(**{f.name: fn(v) if isinstance(v := getattr(self, f.name), torch.Tensor) else v
                                for f in fields(self)})

    def to(self, device: torch.device | str) -> AugmentParams:
        return self._map(lambda t: t.to(device))

    def at(self, step: int | torch.Tensor) -> AugmentParams:
        """The draw of one step from a table drawn with ``steps`` (every field has a leading step dimension).
        ``step`` may be a one-element device tensor: then the row is selected on the device (no host sync),
        which is how a captured CUDA graph reads the current step's draw."""
        if isinstance(step, torch.Tensor):
            return self._map(lambda t: t.index_select(0, step.view(1)).squeeze(0))
        return self._map(lambda t: t[step])

    def copy_(self, other: AugmentParams) -> None:
        """Overwrite this table in place (its tensors keep their addresses) with a draw of the same shape."""
        for f in fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, torch.Tensor):
                mine.copy_(getattr(other, f.name))
            elif mine != getattr(other, f.name):
                raise ValueError(f"params.{f.name}: {getattr(other, f.name)} differs from this table's {mine}")


def sample_augment_params(
    batch: int,
    height: int,
    width: int,
    jitter: int | None = None,
    flip_p: float = FLIP_P,
    brightness: float = BRIGHTNESS,
    contrast: float = CONTRAST,
    erase_p: float = ERASE_P,
    erase_area: tuple[float, float] = ERASE_AREA,
    erase_ratio: tuple[float, float] = ERASE_RATIO,
    same_on_batch: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    steps: int | None = None,
) -> AugmentParams:
    """Draw one augmentation for a batch, entirely on ``device`` (the generator's device by default); with
    ``steps``, a table of that many draws in one go (every field gets a leading step dimension; select a step
    with :meth:`AugmentParams.at`).

    ``jitter`` is J in pixels (None: round(H / 8), DIODE's 20 at 160 px and 40 at 320 px); ``same_on_batch``
    draws one jitter and one flip for the whole batch (DIODE); brightness, contrast and erasing are per image.
    Setting a probability or a strength to 0 switches that augmentation off.
    """
    if batch <= 0 or height <= 0 or width <= 0:
        raise ValueError(f"batch, height, width: expected positive sizes, got {batch}, {height}, {width}")
    if steps is not None and steps <= 0:
        raise ValueError(f"steps: expected a positive number of draws, got {steps}")
    if jitter is not None and jitter < 0:
        raise ValueError(f"jitter: expected a non-negative number of pixels, got {jitter}")
    for name, v in (("flip_p", flip_p), ("erase_p", erase_p)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}: expected a probability in [0, 1], got {v}")
    device = generator.device if device is None and generator is not None else device
    g = generator
    j = round(height / 8) if jitter is None else int(jitter)
    shared = 1 if same_on_batch else batch
    n = 1 if steps is None else steps
    shifts = torch.randint(-j, j + 1, (2, n, shared), generator=g, device=device).expand(2, n, batch)
    u = torch.rand(6, n, batch, generator=g, device=device)  # flip, erase: apply, area, ratio, top, left
    normal = torch.randn(2, n, batch, generator=g, device=device)
    flip = (u[0, :, :shared] < flip_p).expand(n, batch)
    area = (erase_area[0] + (erase_area[1] - erase_area[0]) * u[2]) * (height * width)
    log_r = (math.log(erase_ratio[0]), math.log(erase_ratio[1]))
    ratio = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[3])
    eh = torch.sqrt(area * ratio).round().clamp(1, height)
    ew = torch.sqrt(area / ratio).round().clamp(1, width)
    y0 = (u[4] * (height - eh + 1)).floor()
    x0 = (u[5] * (width - ew + 1)).floor()
    erase = torch.stack([y0, x0, torch.where(u[1] < erase_p, y0 + eh, y0), x0 + ew], dim=-1).long()
    table = AugmentParams(shifts[0].contiguous(), shifts[1].contiguous(), flip.contiguous(),
                          brightness * normal[0], 1.0 + contrast * normal[1], erase, height, width)
    return table if steps is not None else table.at(0)


def _check_params(params: AugmentParams, batch: int, height: int, width: int, what: str) -> None:
    if (params.height, params.width) != (height, width) or params.shift_y.shape[0] != batch:
        raise ValueError(
            f"params: drawn for a batch of {params.shift_y.shape[0]} at {params.height}x{params.width}, "
            f"but {what} is a batch of {batch} at {height}x{width}"
        )


def augment_images(x: torch.Tensor, params: AugmentParams, backend: str | None = None) -> torch.Tensor:
    """Apply ``params`` to images x (B, C, H, W); differentiable, keeps dtype and memory layout."""
    require_float(x, "x")
    require_rank(x, "x", (4,), "(B, C, H, W)")
    _check_params(params, x.shape[0], x.shape[2], x.shape[3], "x")
    gain = params.contrast
    bias = params.brightness * params.contrast
    return gather_affine_mask(x, params.shift_y, params.shift_x, params.flip, gain, bias, params.erase, backend)


def augment_boxes(boxes: torch.Tensor, params: AugmentParams, min_size: float = MIN_BOX_SIZE,
                  drop: str = "side") -> torch.Tensor:
    """Move padded boxes (B, K, 5) ``cls, xc, yc, w, h`` with the image. ``drop="side"``: boxes under
    ``min_size`` pixels wide or high after clipping become padding; ``"area"`` (the authors' rule): boxes under
    1 px² after clipping become padding, only in images the draw shifts. Runs on the device without a host
    sync."""
    require_float(boxes, "boxes")
    if drop not in BOX_DROPS:
        raise ValueError(f"drop={drop!r}: expected one of {', '.join(BOX_DROPS)}")
    if boxes.dim() != 3 or boxes.shape[-1] != 5:
        raise ValueError(f"boxes: expected a padded (B, K, 5) tensor cls, xc, yc, w, h; got {tuple(boxes.shape)}")
    if boxes.shape[0] != params.shift_y.shape[0]:
        raise ValueError(f"boxes: batch of {boxes.shape[0]}, but params were drawn for {params.shift_y.shape[0]}")
    h, w = params.height, params.width
    cls, xc, yc, bw, bh = boxes.unbind(-1)
    dx = (params.shift_x.to(boxes.dtype) / w)[:, None]
    dy = (params.shift_y.to(boxes.dtype) / h)[:, None]
    x0 = (xc - bw / 2 + dx).clamp(0, 1)
    x1 = (xc + bw / 2 + dx).clamp(0, 1)
    y0 = (yc - bh / 2 + dy).clamp(0, 1)
    y1 = (yc + bh / 2 + dy).clamp(0, 1)
    flip = params.flip[:, None]
    x0, x1 = torch.where(flip, 1 - x1, x0), torch.where(flip, 1 - x0, x1)
    if drop == "side":
        keep = (cls >= 0) & ((x1 - x0) * w >= min_size) & ((y1 - y0) * h >= min_size)
    else:
        shifted = ((params.shift_x != 0) | (params.shift_y != 0))[:, None]
        keep = (cls >= 0) & ~(shifted & ((x1 - x0) * w * (y1 - y0) * h < 1.0))
    moved = torch.cat([cls[..., None], xyxy_to_xywh(torch.stack([x0, y0, x1, y1], dim=-1))], dim=-1)
    padding = torch.cat([torch.full_like(cls[..., None], -1.0), torch.zeros_like(moved[..., 1:])], -1)
    return torch.where(keep[..., None], moved, padding)  # built on the device: no host copy in the step


def diode_augment(
    x: torch.Tensor,
    boxes: torch.Tensor | None,
    params: AugmentParams,
    min_box_size: float = MIN_BOX_SIZE,
    backend: str | None = None,
    box_drop: str = "side",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Functional form: (augmented images, moved boxes or None) for a given draw ``params``."""
    moved = None if boxes is None else augment_boxes(boxes, params, min_box_size, box_drop)
    return augment_images(x, params, backend), moved


class DiodeAugment(nn.Module):
    """DIODE's augmentation as a module: a fresh device-side draw every call (or the ``params`` given).

    ``forward(x, boxes=None, generator=None, params=None)`` returns ``(x_aug, boxes_aug)``; the draw used is
    kept in :attr:`last_params` for replay. Defaults are the paper's (see :func:`sample_augment_params`).
    """

    def __init__(
        self,
        jitter: int | None = None,
        flip_p: float = FLIP_P,
        brightness: float = BRIGHTNESS,
        contrast: float = CONTRAST,
        erase_p: float = ERASE_P,
        erase_area: tuple[float, float] = ERASE_AREA,
        erase_ratio: tuple[float, float] = ERASE_RATIO,
        same_on_batch: bool = True,
        min_box_size: float = MIN_BOX_SIZE,
        backend: str | None = None,
        box_drop: str = "side",
    ):
        super().__init__()
        if box_drop not in BOX_DROPS:
            raise ValueError(f"box_drop={box_drop!r}: expected one of {', '.join(BOX_DROPS)}")
        self.draw = dict(jitter=jitter, flip_p=flip_p, brightness=brightness, contrast=contrast, erase_p=erase_p,
                         erase_area=erase_area, erase_ratio=erase_ratio, same_on_batch=same_on_batch)
        self.min_box_size, self.backend, self.box_drop = min_box_size, backend, box_drop
        self.last_params: AugmentParams | None = None

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None, steps: int | None = None) -> AugmentParams:
        return sample_augment_params(batch, height, width, generator=generator, device=device, steps=steps,
                                     **self.draw)

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None, generator: torch.Generator | None = None,
                params: AugmentParams | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if params is None:
            require_rank(x, "x", (4,), "(B, C, H, W)")
            params = self.sample_params(x.shape[0], x.shape[2], x.shape[3], generator, x.device)
        self.last_params = params
        return diode_augment(x, boxes, params, self.min_box_size, self.backend, self.box_drop)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.draw.items())
