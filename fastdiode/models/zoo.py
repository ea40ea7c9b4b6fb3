"""The built-in detectors, written as darknet layer lists from small readable pieces.

``yolov3``, ``yolov3-spp`` (DIODE's teacher) and ``yolov3-tiny`` (DIODE's verifier) follow the standard
darknet cfgs layer for layer (tests check them against the cfg files); ``yolo-micro`` is a width/depth-
scalable small variant for CPU work and the embedded digits benchmark: yolov3-tiny's layout with one
stage fewer, so its two heads sit at strides 16 and 8.
"""
from __future__ import annotations

from fastdiode.models.darknet import Darknet
from fastdiode.models.ultra import NAME as ULTRA_NAME
from fastdiode.models.ultra import UltraYOLO, build_ultra

COCO_ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]
TINY_ANCHORS = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
MICRO_ANCHORS = [8, 12, 14, 20, 20, 28, 26, 36, 34, 46, 46, 60]  # for 96-px images with 16-48 px objects


def conv(filters: int, size: int = 1, stride: int = 1) -> dict:
    return {"type": "convolutional", "batch_normalize": 1, "filters": filters, "size": size, "stride": stride,
            "pad": 1, "activation": "leaky"}


def detect(classes: int, anchors: int) -> dict:
    """The 1x1 detection conv: no BN, linear, A * (5 + C) filters."""
    return {"type": "convolutional", "batch_normalize": 0, "filters": anchors * (5 + classes), "size": 1,
            "stride": 1, "pad": 1, "activation": "linear"}


def yolo(mask: list[int], anchors: list[int], classes: int) -> dict:
    return {"type": "yolo", "mask": mask, "anchors": anchors, "classes": classes, "num": len(anchors) // 2}


def route(*layers: int) -> dict:
    return {"type": "route", "layers": list(layers) if len(layers) > 1 else layers[0]}


def shortcut() -> dict:
    return {"type": "shortcut", "from": -3, "activation": "linear"}


def upsample() -> dict:
    return {"type": "upsample", "stride": 2}


def maxpool(size: int, stride: int) -> dict:
    return {"type": "maxpool", "size": size, "stride": stride}


def darknet53() -> list[dict]:
    """The backbone: 52 conv layers in five downsampling stages of 1, 2, 8, 8, 4 residual blocks."""
    layers = [conv(32, 3)]
    for filters, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        layers.append(conv(filters, 3, 2))
        for _ in range(blocks):
            layers += [conv(filters // 2, 1), conv(filters, 3), shortcut()]
    return layers


def _yolov3_scale(filters: int, mask: list[int], anchors: list[int], classes: int) -> list[dict]:
    """Five alternating 1x1/3x3 convs, then the 3x3 feature conv, the detection conv and the YOLO layer."""
    return [conv(filters, 1), conv(2 * filters, 3), conv(filters, 1), conv(2 * filters, 3), conv(filters, 1),
            conv(2 * filters, 3), detect(classes, len(mask)), yolo(mask, anchors, classes)]


def _spp() -> list[dict]:
    return [maxpool(5, 1), route(-2), maxpool(9, 1), route(-4), maxpool(13, 1), route(-1, -3, -5, -6)]


def yolov3_layers(classes: int = 80, anchors: list[int] | None = None, spp: bool = False) -> list[dict]:
    anchors = anchors or COCO_ANCHORS
    layers = darknet53()  # layers 36 and 61 end the stride-8 and stride-16 stages
    top = _yolov3_scale(512, [6, 7, 8], anchors, classes)
    if spp:
        top = top[:3] + _spp() + [conv(512, 1)] + top[3:]
    layers += top
    for filters, mask, skip in ((256, [3, 4, 5], 61), (128, [0, 1, 2], 36)):
        layers += [route(-4), conv(filters, 1), upsample(), route(-1, skip)]
        layers += _yolov3_scale(filters, mask, anchors, classes)
    return layers


def yolov3_tiny_layers(classes: int = 80, anchors: list[int] | None = None) -> list[dict]:
    anchors = anchors or TINY_ANCHORS
    layers = []
    for filters in (16, 32, 64, 128, 256):
        layers += [conv(filters, 3), maxpool(2, 2)]
    layers += [conv(512, 3), maxpool(2, 1), conv(1024, 3), conv(256, 1), conv(512, 3), detect(classes, 3),
               yolo([3, 4, 5], anchors, classes)]
    layers += [route(-4), conv(128, 1), upsample(), route(-1, 8), conv(256, 3), detect(classes, 3),
               yolo([1, 2, 3], anchors, classes)]
    return layers


def yolo_micro_layers(classes: int = 10, anchors: list[int] | None = None, width: float = 0.25,
                      depth: int = 1) -> list[dict]:
    """yolov3-tiny's layout with four downsampling stages (heads at strides 16 and 8), channels scaled by
    ``width`` and ``depth`` extra 3x3 convs in each of the two deepest stages."""
    anchors = anchors or MICRO_ANCHORS
    ch = lambda c: max(8, int(round(c * width / 8)) * 8)  # noqa: E731
    layers: list[dict] = []
    for filters in (16, 32, 64):
        layers += [conv(ch(filters), 3), maxpool(2, 2)]
    layers += [conv(ch(128), 3)] * (1 + depth)
    stride8 = len(layers) - 1
    layers += [maxpool(2, 2)] + [conv(ch(256), 3)] * (1 + depth)
    layers += [maxpool(2, 1), conv(ch(512), 3), conv(ch(128), 1), conv(ch(256), 3), detect(classes, 3),
               yolo([3, 4, 5], anchors, classes)]
    layers += [route(-4), conv(ch(64), 1), upsample(), route(-1, stride8), conv(ch(128), 3), detect(classes, 3),
               yolo([0, 1, 2], anchors, classes)]
    return layers


MODELS = {
    "yolov3": (lambda classes, anchors, **kw: yolov3_layers(classes, anchors, **kw), 416),
    "yolov3-spp": (lambda classes, anchors, **kw: yolov3_layers(classes, anchors, spp=True, **kw), 608),
    "yolov3-tiny": (yolov3_tiny_layers, 416),
    "yolo-micro": (yolo_micro_layers, 96),
}


def build_model(name: str, num_classes: int = 80, anchors: list[int] | None = None,
                input_size: int | None = None, **variant) -> Darknet | UltraYOLO:
    """A built-in detector by name: ``yolov3``, ``yolov3-spp``, ``yolov3-tiny`` or ``yolo-micro`` (``width=``,
    ``depth=`` scale the latter; ``anchors`` is a flat pixel list w0, h0, w1, h1, ...), or the anchor-free
    ``yolov8n`` ... ``yolov8x``, ``yolo11n`` ... ``yolo11x``, ``yolov8-micro``, ``yolo11-micro``."""
    if ULTRA_NAME.match(name):
        if anchors is not None or variant:
            raise ValueError(f"model {name!r}: an anchor-free detector takes no anchors, width or depth")
        return build_ultra(name, num_classes, input_size)
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not built in; choose one of {', '.join(MODELS)}, yolov8n ... yolov8x, "
                         "yolo11n ... yolo11x, yolov8-micro, yolo11-micro, or build one from a darknet cfg with "
                         "fastdiode.models.from_cfg")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected a positive number of classes, got {num_classes}")
    make, default_size = MODELS[name]
    if variant and name != "yolo-micro":
        raise ValueError(f"model {name!r}: {', '.join(variant)} only scale yolo-micro")
    return Darknet(make(num_classes, anchors, **variant), input_size=input_size or default_size, name=name)
