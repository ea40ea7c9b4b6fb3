"""Image grids with boxes drawn on them (previews of synthesized sets, predictions, reports)."""
from __future__ import annotations

from pathlib import Path

import torch

from fastdiode.runtime.files import atomic_write


def write_grid(path: str | Path, images: torch.Tensor, targets: torch.Tensor, class_names: list[str], cols: int = 8):
    """A grid of up to 32 images with their target boxes and class names."""
    from PIL import Image, ImageDraw

    n = min(len(images), 32)
    cols = min(cols, n)
    h, w = images.shape[-2:]
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h))
    for i in range(n):
        tile = Image.fromarray(images[i].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
        draw = ImageDraw.Draw(tile)
        for c, xc, yc, bw, bh in targets[i].tolist():
            if c >= 0:
                box = [(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h]
                draw.rectangle(box, outline=(255, 40, 40), width=max(1, w // 160))
                draw.text((box[0] + 2, box[1] + 1), class_names[int(c)], fill=(255, 255, 0))
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
