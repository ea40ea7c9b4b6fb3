"""Detectors: YOLOv3 / YOLOv3-SPP / YOLOv3-tiny / yolo-micro, darknet cfg and weights I/O, checkpoints,
decoding and NMS."""
from pathlib import Path

from fastdiode.models.cfg import parse_cfg
from fastdiode.models.checkpoint import load, load_info, save
from fastdiode.models.darknet import Darknet
from fastdiode.models.postprocess import batched_nms, decode, nms, postprocess
from fastdiode.models.weights import load_darknet_weights, save_darknet_weights
from fastdiode.models.zoo import MODELS, build_model


def from_cfg(path: str | Path) -> Darknet:
    """Build a detector from any darknet .cfg with the supported layer types."""
    net, layers = parse_cfg(path)
    return Darknet(layers, in_channels=net.get("channels", 3), input_size=net.get("width", 416),
                   name=Path(str(path)).stem)


__all__ = ["MODELS", "Darknet", "batched_nms", "build_model", "decode", "from_cfg", "load", "load_darknet_weights",
           "load_info", "nms", "parse_cfg", "postprocess", "save", "save_darknet_weights"]
