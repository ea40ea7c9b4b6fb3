"""BN-input shapes (N, C, H, W) of the darknet detectors, layer by layer, for benchmarking the fused ops
without building the models. They follow the standard cfgs (yolov3.cfg, yolov3-tiny.cfg)."""
from __future__ import annotations


def yolov3_tiny_bn_shapes(size: int, batch: int) -> list[tuple[int, int, int, int]]:
    """The 11 BN layers of YOLOv3-tiny: six conv+maxpool stages, the 13x13 head, the upsampled 26x26 head."""
    s = size
    plan = [(16, s), (32, s // 2), (64, s // 4), (128, s // 8), (256, s // 16), (512, s // 32),
            (1024, s // 32), (256, s // 32), (512, s // 32), (128, s // 32), (256, s // 16)]
    return [(batch, c, r, r) for c, r in plan]


def yolov3_bn_shapes(size: int, batch: int) -> list[tuple[int, int, int, int]]:
    """The 72 BN layers of YOLOv3: Darknet-53 (52) and the three-scale head (20)."""
    plan = [(32, size)]
    for stage, repeats in enumerate((1, 2, 8, 8, 4)):
        c, r = 64 << stage, size >> (stage + 1)
        plan.append((c, r))
        plan += [(c // 2, r), (c, r)] * repeats
    for c, r in ((512, size // 32), (256, size // 16), (128, size // 8)):
        plan += [(c, r), (2 * c, r)] * 2 + [(c, r), (2 * c, r)]
        if c > 128:
            plan.append((c // 2, r))  # the 1x1 conv before the upsample to the next scale
    return [(batch, c, r, r) for c, r in plan]
