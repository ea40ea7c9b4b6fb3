"""The ``fastdiode`` command line. Subcommands: ``invert`` (synthesize a detection dataset from a teacher),
``distill`` (train a student by mimicking a teacher), ``train`` (train a detector on labels), all also under
torchrun, and ``eval`` (COCO mAP of a detector on an image folder)."""
from __future__ import annotations

import argparse
import json
import logging
import os
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


def randomized_teacher(name: str | None, cfg: str | None, num_classes: int, seed: int = 0):
    """A teacher with random weights and random BN statistics: for benchmarking speed only."""
    from fastdiode import models

    torch.manual_seed(seed)
    net = models.from_cfg(cfg) if cfg else models.build_model(name, num_classes=num_classes)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def load_teacher(teacher_cfg) -> tuple:
    """(teacher, class names, stamp) for an inversion config's ``teacher`` section."""
    weights = teacher_cfg.weights
    if not weights:
        raise ValueError("teacher.weights: required: a darknet .weights file, a fastdiode checkpoint, or 'random' "
                         "(random weights, for benchmarking only)")
    if weights == "random":
        net = randomized_teacher(teacher_cfg.model, teacher_cfg.cfg, teacher_cfg.num_classes)
        stamp = "random weights and BN statistics (benchmarking only; the images mean nothing)"
    else:
        darknet = Path(weights).suffix == ".weights"
        net = load_detector(weights, teacher_cfg.model if darknet and not teacher_cfg.cfg else None,
                            teacher_cfg.cfg if darknet else None, teacher_cfg.num_classes)
        stamp = str(weights)
    if net.num_classes != teacher_cfg.num_classes:
        raise ValueError(f"teacher.num_classes: {teacher_cfg.num_classes}, but {weights} has {net.num_classes} "
                         "classes")
    names = getattr(net, "class_names", None) or [str(i) for i in range(net.num_classes)]
    return net, names, stamp


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def cmd_invert(args: argparse.Namespace) -> int:
    from fastdiode.config import load_config
    from fastdiode.inversion import InversionConfig
    from fastdiode.inversion.job import run_job
    from fastdiode.runtime import set_backend

    cfg = load_config(InversionConfig, args.config, args.overrides)
    device = resolve_device(cfg.job.device)
    teacher, class_names, stamp = load_teacher(cfg.teacher)
    set_backend(cfg.job.backend)
    rank, world, local_rank = init_distributed()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if rank == 0:
        logging.getLogger("fastdiode").info(
            "fastdiode invert: %d batches of %d images on %s x %d (%s), backend %s, precision %s -> %s",
            cfg.job.num_batches, cfg.stages.batch_size[0], device, world, stamp, cfg.job.backend,
            cfg.job.precision, cfg.job.out)
    extra = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "world": world,
             "backend": cfg.job.backend, "teacher": stamp}
    verifier = load_detector(cfg.verifier) if cfg.verifier else None
    if verifier is not None and verifier.num_classes != teacher.num_classes:
        raise ValueError(f"verifier: {cfg.verifier} has {verifier.num_classes} classes, the teacher "
                         f"{teacher.num_classes}")
    summary = run_job(cfg, teacher, device, class_names, rank, world, extra, verifier)
    if world > 1:
        torch.distributed.destroy_process_group()
    if summary is not None:
        print(f"fastdiode invert: {summary['images']} images in {summary['seconds']:.0f} s "
              f"({summary['images_per_hour']:.0f} images/hour), {len(summary['batches_failed'])} failed batches "
              f"-> {cfg.job.out}")
    return 0


def build_student(cfg, teacher) -> "torch.nn.Module":
    """The student of a training config, initialised from ``train.seed``; a distillation student takes the
    teacher's classes and anchors unless the config sets them, so that the head layouts match."""
    from fastdiode import models

    sc = cfg.student
    torch.manual_seed(cfg.train.seed)
    if sc.init:
        return models.load(sc.init)
    if sc.cfg:
        return models.from_cfg(sc.cfg)
    variant = {k: v for k, v in (("width", sc.width), ("depth", sc.depth)) if v is not None}
    anchors = sc.anchors
    if anchors is None and teacher is not None:
        anchors = next(spec["anchors"] for spec in teacher.layer_specs if spec["type"] == "yolo")
    classes = teacher.num_classes if teacher is not None else sc.num_classes
    return models.build_model(sc.model, classes, anchors, input_size=cfg.train.img_size, **variant)


def _train(args: argparse.Namespace, distill: bool) -> int:
    from fastdiode import models
    from fastdiode.config import load_config
    from fastdiode.distill import TrainConfig, run_training

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if distill and not cfg.teacher:
        raise ValueError("teacher: fastdiode distill needs a teacher checkpoint (teacher=PATH)")
    if not distill and cfg.teacher:
        raise ValueError(f"teacher: {cfg.teacher}: fastdiode train trains without a teacher; use fastdiode distill")
    device = resolve_device(cfg.train.device)
    teacher = models.load(cfg.teacher) if distill else None
    student = build_student(cfg, teacher)
    names = teacher.class_names if teacher is not None else None  # train: the dataset's names
    rank, world, local_rank = init_distributed()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    summary = run_training(cfg, student, teacher, device, names, rank, world, args.resume)
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank == 0:
        final = summary["final_eval"]
        score = f", mAP@.5 {final['mAP@.5']:.4f}, mAP@[.5:.95] {final['mAP@[.5:.95]']:.4f}" if final else ""
        print(f"fastdiode {'distill' if distill else 'train'}: {summary['steps']} steps in {summary['seconds']:.0f} s "
              f"({summary['images_per_s']:.1f} images/s){score} -> {cfg.train.out}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    return _train(args, distill=True)


def cmd_train(args: argparse.Namespace) -> int:
    return _train(args, distill=False)


def cmd_data(args: argparse.Namespace) -> int:
    from fastdiode.data.digits import DigitsSpec, build_digits

    spec = DigitsSpec(train=args.train, val=args.val, proxy=args.proxy, size=args.size, seed=args.seed)
    paths = build_digits(args.out, spec)
    print("fastdiode data digits: " + ", ".join(f"{k} -> {v}" for k, v in paths.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fastdiode.config import load_config
    from fastdiode.demo.config import DEFAULT_CONFIG, DemoConfig
    from fastdiode.demo.run import run_demo

    cfg = load_config(DemoConfig, args.config or DEFAULT_CONFIG, args.overrides)
    run_demo(cfg, resolve_device(args.device))
    return 0


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
    inv = sub.add_parser("invert", help="synthesize a detection dataset from a frozen teacher (DIODE)")
    inv.add_argument("--config", help="YAML config (default: the paper's values)")
    inv.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. job.num_batches=10")
    inv.set_defaults(func=cmd_invert)
    for name, func, text in (("distill", cmd_distill, "train a student detector by mimicking a frozen teacher"),
                             ("train", cmd_train, "train a detector on a labelled dataset")):
        tr = sub.add_parser(name, help=text)
        tr.add_argument("--config", help="YAML config (default: the paper's values, method.md §7)")
        tr.add_argument("--resume", action="store_true", help="continue the run in train.out where it stopped")
        tr.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=1000")
        tr.set_defaults(func=func)
    data = sub.add_parser("data", help="build a dataset: 'digits' (the embedded benchmark's handwritten digits)")
    data.add_argument("kind", choices=["digits"])
    data.add_argument("--out", required=True, help="output folder (train/, val/, photos/, noise/)")
    data.add_argument("--train", type=int, default=4000, help="train images (default 4000)")
    data.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    data.add_argument("--proxy", type=int, default=1000, help="images in each out-of-distribution set")
    data.add_argument("--size", type=int, default=96, help="canvas size in pixels (default 96)")
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=cmd_data)
    demo = sub.add_parser("demo", help="DIODE end to end on the digits benchmark (data, synthesis, distillation, "
                                       "baselines, report)")
    demo.add_argument("--config", help="benchmark config (default: the packaged demo; configs/bench_digits.yaml "
                                       "is the full benchmark)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    demo.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. distill.train.steps=300")
    demo.set_defaults(func=cmd_demo)
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
    except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
        print(f"fastdiode {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
