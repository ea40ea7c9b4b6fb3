"""The ``fastdiode`` command line. Subcommands: ``eval`` (COCO mAP of a detector on an image folder)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch


def load_detector(weights: str, model: str | None = None, cfg: str | None = None, num_classes: int = 80):
    """A fastdiode checkpoint (NAME.safetensors + NAME.json), or a darknet .weights file with the built-in
    ``model`` or a darknet ``cfg`` that it belongs to."""
    from fastdiode import models

    path = Path(weights)
    if path.suffix == ".weights":
        if (model is None) == (cfg is None):
            raise ValueError(f"--weights {path}: a darknet .weights file needs exactly one of --model or --cfg")
        net = models.from_cfg(cfg) if cfg else models.build_model(model, num_classes=num_classes)
        return models.load_darknet_weights(net, path)
    if model or cfg:
        raise ValueError(f"--weights {path}: a fastdiode checkpoint carries its own architecture; drop --model/--cfg")
    return models.load(path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA was requested but no CUDA device is available")
    return device


def cmd_eval(args: argparse.Namespace) -> int:
    from fastdiode.eval import coco_map, format_report

    device = resolve_device(args.device)
    model = load_detector(args.weights, args.model, args.cfg, args.classes)
    result = coco_map(model, args.images, args.annotations, args.img_size, args.batch_size, args.conf_thres,
                      args.iou_thres, args.max_det, device, args.out)
    print(format_report(result))
    if args.out:
        print(f"\nwrote {Path(args.out) / 'metrics.json'}, metrics.txt and detections.json")
    else:
        print(json.dumps(result["stats"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdiode", description="Fast data-free distillation of detectors (DIODE)")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="COCO mAP of a detector on an image folder + COCO json")
    ev.add_argument("--weights", required=True, help="fastdiode checkpoint (.safetensors) or darknet .weights")
    ev.add_argument("--model", help="built-in architecture of a darknet .weights file (yolov3, yolov3-spp, ...)")
    ev.add_argument("--cfg", help="darknet .cfg of a darknet .weights file")
    ev.add_argument("--classes", type=int, default=80, help="classes of --model (default 80)")
    ev.add_argument("--images", required=True, help="image folder")
    ev.add_argument("--annotations", required=True, help="COCO json ground truth")
    ev.add_argument("--img-size", type=int, default=None, help="letterbox size (default: the model's)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--conf-thres", type=float, default=0.001)
    ev.add_argument("--iou-thres", type=float, default=0.6)
    ev.add_argument("--max-det", type=int, default=300)
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ev.add_argument("--out", help="folder for detections.json, metrics.json and metrics.txt")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"fastdiode {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
