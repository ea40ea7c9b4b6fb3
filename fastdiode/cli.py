"""The ``fastdiode`` command line: it parses arguments and calls the engines, nothing more. Subcommands:
``invert`` (synthesize a detection dataset from a teacher), ``distill`` (train a student by mimicking a
teacher), ``train`` (train a detector on labels), all also under torchrun, ``eval`` (COCO mAP of a detector on
an image folder), ``quantize`` (int8 PTQ or QAT without the data), ``convert`` (an ultralytics or darknet detector
as a fastdiode checkpoint), ``data`` (build the digits benchmark's data; cut object crops), ``train-classifier``
(DICOD's crop classifier) and ``demo`` (the digits benchmark)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def cmd_invert(args: argparse.Namespace) -> int:
    from fastdiode.config import load_config
    from fastdiode.inversion import InversionConfig
    from fastdiode.inversion.job import run_job
    from fastdiode.loading import load_detector, load_teacher
    from fastdiode.runtime import run_context

    cfg = load_config(InversionConfig, args.config, args.overrides)
    teacher = load_teacher(cfg.teacher)
    verifier = load_detector(cfg.verifier) if cfg.verifier else None
    with run_context(cfg.run.device) as ctx:
        if ctx.rank == 0:
            logging.getLogger("fastdiode").info(
                "fastdiode invert: %d batches of %d images on %s x %d (%s), backend %s, precision %s -> %s",
                cfg.job.num_batches, cfg.batch_images, ctx.device, ctx.world, teacher.source, cfg.run.backend,
                cfg.run.precision, cfg.job.out)
        summary = run_job(cfg, teacher.model, ctx, teacher.class_names, ctx.record(cfg.run.backend, teacher.source),
                          verifier)
    if summary is not None:
        print(f"fastdiode invert: {summary['images']} images in {summary['seconds']:.0f} s "
              f"({summary['images_per_hour']:.0f} images/hour), {len(summary['batches_failed'])} failed batches "
              f"-> {cfg.job.out}")
    return 0


def _train(args: argparse.Namespace, distill: bool) -> int:
    from fastdiode.config import load_config
    from fastdiode.distill import TrainConfig, run_training
    from fastdiode.loading import build_student, load_teacher
    from fastdiode.runtime import run_context

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if distill and not cfg.has_teacher:
        raise ValueError("teacher: fastdiode distill needs a teacher (teacher=PATH: a fastdiode checkpoint, or a "
                         "darknet .weights file with teacher.model=NAME)")
    if not distill and cfg.has_teacher:
        raise ValueError(f"teacher: {cfg.teacher.weights}: fastdiode train trains without a teacher; use fastdiode "
                         "distill")
    loaded = load_teacher(cfg.teacher) if distill else None
    teacher = loaded.model if loaded is not None else None
    student = build_student(cfg, teacher)
    names = getattr(teacher, "class_names", None)  # a checkpoint's names; else the dataset's
    with run_context(cfg.run.device) as ctx:
        record = ctx.record(cfg.run.backend, loaded.source if loaded is not None else "")
        summary = run_training(cfg, student, teacher, ctx, names, args.resume, record=record)
    if ctx.rank == 0:
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
    if args.kind == "crops":
        from fastdiode.data.crops import write_crops

        if not args.source:
            raise ValueError("--from: required for crops: a labelled dataset folder, or a folder of them (train/, "
                             "val/, ...)")
        summary = write_crops(args.source, args.out, args.size if args.size is not None else 32, args.context)
        print(f"fastdiode data crops: {summary['splits']} crops of {summary['size']} px, "
              f"{len(summary['class_names'])} classes -> {args.out}")
        return 0
    from fastdiode.data.digits import DigitsSpec, build_digits

    spec = DigitsSpec(train=args.train, val=args.val, proxy=args.proxy, size=args.size or 96, seed=args.seed)
    paths = build_digits(args.out, spec)
    print("fastdiode data digits: " + ", ".join(f"{k} -> {v}" for k, v in paths.items()))
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from fastdiode.classify import ClassifierConfig, run_classifier_training
    from fastdiode.config import load_config
    from fastdiode.runtime import run_context

    cfg = load_config(ClassifierConfig, args.config, args.overrides)
    with run_context(cfg.run.device) as ctx:
        summary = run_classifier_training(cfg, ctx, args.resume)
    final = summary["final_eval"]
    top1 = f", top-1 {final['top1']:.4f} (best {summary['best']:.4f})" if final is not None else ""
    print(f"fastdiode train-classifier: {summary['steps']} steps in {summary['seconds']:.0f} s{top1} "
          f"-> {cfg.train.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fastdiode.config import load_config
    from fastdiode.demo.config import DEFAULT_CONFIG, DemoConfig
    from fastdiode.demo.run import run_demo
    from fastdiode.runtime import resolve_device

    cfg = load_config(DemoConfig, args.config or DEFAULT_CONFIG, args.overrides)
    run_demo(cfg, resolve_device(args.device), args.rows.split(",") if args.rows else None)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fastdiode.eval import coco_map, format_eval_report
    from fastdiode.loading import load_detector
    from fastdiode.runtime import resolve_device

    device = resolve_device(args.device)
    model = load_detector(args.weights, args.model, args.cfg, args.classes, quantized_ok=True)
    result = coco_map(model, args.images, args.annotations, args.img_size, args.batch_size, args.conf_thres,
                      args.iou_thres, args.max_det, device, args.out)
    print(format_eval_report(result))
    if args.out:
        print(f"\nwrote {Path(args.out) / 'metrics.json'}, metrics.txt and detections.json")
    else:
        print(json.dumps(result["stats"]))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from fastdiode.config import load_config
    from fastdiode.loading import load_teacher
    from fastdiode.quantize import QuantizeConfig, run_quantize
    from fastdiode.runtime import run_context

    cfg = load_config(QuantizeConfig, args.config, args.overrides)
    if args.resume and cfg.mode != "qat":
        raise ValueError("--resume: only mode=qat runs resume (a PTQ run takes seconds to minutes; rerun it)")
    loaded = load_teacher(cfg.teacher)
    with run_context(cfg.run.device if cfg.mode == "qat" else "cpu") as ctx:
        report = run_quantize(cfg, loaded, ctx, args.resume, record=ctx.record(cfg.run.backend, loaded.source))
    if ctx.rank == 0:
        line = f"fastdiode quantize: {report['spec']} {cfg.mode} of {loaded.source} in {report['seconds']:.0f} s"
        for name, stats in report["eval"].items():
            if stats:
                line += f"; {name} mAP@.5 {stats['mAP@.5']:.4f}, mAP@[.5:.95] {stats['mAP@[.5:.95]']:.4f}"
        for batch, row in report.get("latency", {}).get("batches", {}).items():
            line += f"; batch {batch}: int8 {row['int8']['median_ms']:.1f} ms vs fp32 {row['fp32']['median_ms']:.1f} ms"
        print(f"{line} -> {cfg.out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from fastdiode.loading import load_detector
    from fastdiode.models import save

    model = load_detector(args.weights, args.model, args.cfg, args.classes)
    path = save(model, args.out, getattr(model, "class_names", None), converted_from=str(args.weights))
    print(f"fastdiode convert: {model.name}, {model.num_classes} classes, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters -> {path} (+ .json)")
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
    data = sub.add_parser("data", help="build a dataset: 'digits' (the embedded benchmark's handwritten digits) or "
                          "'crops' (every ground-truth box of a labelled set as an S x S image, for train-classifier)")
    data.add_argument("kind", choices=["digits", "crops"])
    data.add_argument("--out", required=True, help="output folder (digits: train/, val/, photos/, noise/; crops: "
                      "one folder per split of --from)")
    data.add_argument("--from", dest="source", help="crops: a labelled dataset folder, or a folder of them "
                      "(train/, val/, ...)")
    data.add_argument("--context", type=float, default=0.0, help="crops: grow each box by this fraction of its "
                      "size on every side (default 0)")
    data.add_argument("--train", type=int, default=4000, help="train images (default 4000)")
    data.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    data.add_argument("--proxy", type=int, default=1000, help="images in each out-of-distribution set")
    data.add_argument("--size", type=int, default=None, help="digits: canvas size in pixels (default 96); crops: "
                      "crop size (default 32)")
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=cmd_data)
    clf = sub.add_parser("train-classifier", help="train DICOD's crop classifier (a ResNet) on a crops folder")
    clf.add_argument("--config", help="YAML config (configs/classifier_digits.yaml for the digits)")
    clf.add_argument("--resume", action="store_true", help="continue the run in train.out where it stopped")
    clf.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=1000")
    clf.set_defaults(func=cmd_train_classifier)

    demo = sub.add_parser("demo", help="DIODE end to end on the digits benchmark (data, synthesis, distillation, "
                                       "baselines, report)")
    demo.add_argument("--config", help="benchmark config (default: the packaged demo; configs/bench_digits.yaml "
                                       "is the full benchmark)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    demo.add_argument("--rows", help="comma-separated row names: run only these (and their baselines); the report "
                                     "covers them alone")
    demo.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. distill.train.steps=300")
    demo.set_defaults(func=cmd_demo)
    ev = sub.add_parser("eval", help="COCO mAP of a detector on an image folder + COCO json")
    ev.add_argument("--weights", required=True, help="fastdiode checkpoint (.safetensors; also fake-quantized), "
                    "int8 program (.pt2, from fastdiode quantize), darknet .weights or ultralytics detection "
                    "checkpoint (.pt)")
    ev.add_argument("--model", help="built-in architecture of a darknet .weights file (yolov3, yolov3-spp, ...)")
    ev.add_argument("--cfg", help="darknet .cfg of a darknet .weights file")
    ev.add_argument("--classes", type=int, default=None, help="classes of --model (default 80, COCO)")
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
    quant = sub.add_parser("quantize", help="quantize a detector without its data: int8 post-training quantization "
                           "(mode=ptq) or quantization-aware distillation (mode=qat) on synthesized images")
    quant.add_argument("--config", help="YAML config (configs/quantize_ptq.yaml, configs/quantize_qat.yaml)")
    quant.add_argument("--resume", action="store_true", help="mode=qat: continue the run in out where it stopped")
    quant.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. teacher=T.safetensors "
                       "calib=runs/invert mode=ptq")
    quant.set_defaults(func=cmd_quantize)
    conv = sub.add_parser("convert", help="write a detector (an ultralytics .pt, darknet .weights, ...) as a fastdiode "
                                          "checkpoint (safetensors + json)")
    conv.add_argument("weights", help="ultralytics detection checkpoint (.pt; read without running code from it), "
                                      "darknet .weights (with --model or --cfg) or fastdiode checkpoint")
    conv.add_argument("--out", required=True, help="output path stem: OUT.safetensors and OUT.json")
    conv.add_argument("--model", help="built-in architecture of a darknet .weights file")
    conv.add_argument("--cfg", help="darknet .cfg of a darknet .weights file")
    conv.add_argument("--classes", type=int, default=None, help="classes of --model (default 80)")
    conv.set_defaults(func=cmd_convert)
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
