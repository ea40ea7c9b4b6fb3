"""``fastdiode quantize``: one run of post-training quantization or quantization-aware distillation, into the run
folder ``out``:

* ``model.pt2``: the deployable int8 program (W8A8; :mod:`fastdiode.models.int8_program`), which
  ``fastdiode eval --weights`` reads;
* QAT also: the shared loop's files (``metrics.jsonl``, ``state.pt``, ``last``/``best`` fake-quantized
  checkpoints, ``summary.json``, ``curves.png``); ``last`` is the result (the schedule is fixed; ``best`` is only
  written when ``data.val`` is evaluated, and nothing is chosen by it);
* ``quantize.json``: what was done, the mAP of the FP teacher and of the quantized model on ``val`` (when given),
  the per-layer weight error of QAT, the latency comparison (``latency: true``), the time taken.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from fastdiode.config import to_dict
from fastdiode.data.scan import coco_ground_truth
from fastdiode.distill.trainer import run_training
from fastdiode.loading import LoadedTeacher
from fastdiode.models.checkpoint import checkpoint_info
from fastdiode.models.fake_quant import (
    fake_quant_mse,
    fake_quantize,
    fold_batchnorm,
    initialize_steps,
    with_quantized_weights,
)
from fastdiode.models.int8_program import SUFFIX, Int8Detector, load_int8, save_int8
from fastdiode.quantize.calibration import calibration_batches
from fastdiode.quantize.config import QuantizeConfig
from fastdiode.quantize.export import int8_program
from fastdiode.quantize.latency import compare_latency
from fastdiode.runtime.distributed import RunContext, RunRecord
from fastdiode.runtime.files import atomic_write

log = logging.getLogger("fastdiode")
PROGRAM = "model"
REPORT = "quantize.json"


def _evaluate(model: nn.Module, val: tuple[Path, Path] | None, size: int) -> dict | None:
    from fastdiode.eval import coco_map

    if val is None:
        return None
    result = coco_map(model, val[0], val[1], size, batch_size=32, progress=False)
    return {**result["stats"], "tide": result["tide"]}


def _export_int8(model: nn.Module, batches: list[torch.Tensor], out: Path, info: dict, progress: bool) -> Int8Detector:
    """Quantize ``model`` to int8 on ``batches``, save it as out/model.pt2, and return it as reloaded from there."""
    program = int8_program(model, batches, progress)
    path = save_int8(program, out / PROGRAM, info)
    log.info("fastdiode quantize: int8 program -> %s", path)
    return load_int8(path)


def run_quantize(cfg: QuantizeConfig, loaded: LoadedTeacher, ctx: RunContext, resume: bool = False,
                 progress: bool = True, record: RunRecord | None = None, stop_at: int | None = None) -> dict:
    """Quantize ``loaded`` (the FP teacher) as ``cfg`` says; returns the report written to out/quantize.json.
    ``stop_at`` stops QAT at that step (its state saved, to resume) and returns before the export."""
    teacher = loaded.model.eval()
    if getattr(teacher, "fake_quant", None) is not None:
        raise ValueError(f"teacher: {loaded.source} is already fake-quantized; quantize the FP detector")
    size = cfg.size or teacher.input_size
    out = Path(cfg.out)
    if cfg.mode == "ptq" and (out / f"{PROGRAM}{SUFFIX}").exists():
        raise ValueError(f"out: {out} already holds an int8 program ({PROGRAM}{SUFFIX}); choose another out")
    batches = calibration_batches(cfg.calib, size)  # a bad folder fails here, before any work
    info = {**checkpoint_info(teacher, loaded.class_names), "input_size": size}
    val = coco_ground_truth(cfg.val, loaded.class_names, out) if cfg.val and ctx.rank == 0 else None
    start = time.perf_counter()
    report: dict = {"mode": cfg.mode, "teacher": loaded.source, "size": size, "calib": to_dict(cfg.calib),
                    "spec": cfg.quant.spec().name if cfg.mode == "qat" else "W8A8"}
    if cfg.mode == "ptq":
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda tmp: tmp.write_text(json.dumps(to_dict(cfg), indent=1)))
        int8 = _export_int8(teacher, batches, out, {**info, "quantized": report}, progress)
        quantized = None
    else:
        quantized, summary = _qat(cfg, loaded, ctx, size, batches, resume, progress, record, stop_at)
        report["qat"] = {k: summary[k] for k in ("steps", "seconds", "images_per_s")}
        if summary["steps"] < cfg.train.steps:
            return report
        report["weight_error"] = fake_quant_mse(quantized)
        int8 = None
        if cfg.exports_int8 and ctx.rank == 0:
            int8 = _export_int8(with_quantized_weights(quantized).cpu(), batches, out,
                                {**info, "quantized": report}, progress)
    report["seconds"] = time.perf_counter() - start
    if ctx.rank != 0:
        return report
    report["eval"] = {"fp32": _evaluate(teacher, val, size),
                      "fake_quant": _evaluate(quantized, val, size) if quantized is not None else None,
                      "int8": _evaluate(int8, val, size) if int8 is not None else None}
    if cfg.latency and int8 is not None:
        report["latency"] = compare_latency(copy.deepcopy(teacher).cpu(), int8)
    atomic_write(out / REPORT, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    return report


def _qat(cfg: QuantizeConfig, loaded: LoadedTeacher, ctx: RunContext, size: int, batches: list[torch.Tensor],
         resume: bool, progress: bool, record: RunRecord | None, stop_at: int | None) -> tuple[nn.Module, dict]:
    """Quantization-aware distillation: the teacher (BN folded, numerically the same function) teaches its
    fake-quantized copy, whose steps start from the first calibration batch; returns (student, loop summary)."""
    teacher = fold_batchnorm(copy.deepcopy(loaded.model)).eval()
    student = fake_quantize(copy.deepcopy(loaded.model), cfg.quant.spec(), cfg.run.backend)
    initialize_steps(student, batches[0])
    train_cfg = cfg.train_config(size)
    summary = run_training(train_cfg, student, teacher, ctx, loaded.class_names, resume, progress, stop_at, record)
    return student.eval().cpu(), summary
