"""One trainer for distillation (``fastdiode distill``) and plain detector training (``fastdiode train``):
loss = a_distill * L_mimic(student, frozen teacher, same batch) + a_label * the student's task loss (the YOLO
loss for fastdiode's detectors; any :class:`fastdiode.models.detector.Detector` trains) + the distillation
terms that are on (:data:`fastdiode.distill.terms.TERMS`), whose adapters train with the student and are saved
in ``state.pt`` only.

:class:`Trainer` is the detector task of the shared step loop (:mod:`fastdiode.training.loop`), which writes the
run folder ``train.out``: ``metrics.jsonl``, ``last`` / ``best`` checkpoints (the evaluated model: the EMA when
on), ``state.pt``, ``summary.json`` and ``curves.png``; it resumes exactly and saves the state on Ctrl-C.
Batches are a pure function of (seed, step, rank) (:class:`fastdiode.data.batch_plan.BatchPlan`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from fastdiode.config import config_hash, to_dict
from fastdiode.data.batch_plan import BatchPlan
from fastdiode.data.jitter import JitterRanges
from fastdiode.data.loader import batches
from fastdiode.data.scan import ScannedDataset, coco_ground_truth, scan_dataset
from fastdiode.distill.config import TrainConfig
from fastdiode.distill.ema import ModelEMA
from fastdiode.distill.sync_bn import convert_sync_batchnorm
from fastdiode.distill.term_set import DistillTerms
from fastdiode.distill.terms import TERMS
from fastdiode.loading import load_classifier
from fastdiode.losses import mimic_loss
from fastdiode.losses.mimic import check_head_layouts
from fastdiode.models import checkpoint
from fastdiode.models.detector import Detector
from fastdiode.runtime.device import autocast_dtype, compile_enabled, precision_name
from fastdiode.runtime.distributed import RunContext, RunRecord
from fastdiode.runtime.run_dir import prepare_run_dir
from fastdiode.training.loop import StepLoop

log = logging.getLogger("fastdiode")


def _ddp(module: nn.Module, ctx: RunContext) -> nn.Module:
    """``module`` with synchronised BN in DistributedDataParallel (itself when there is one rank)."""
    if ctx.world <= 1:
        return module
    module = convert_sync_batchnorm(module, ctx.device)
    return nn.parallel.DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                               else None)


class Trainer:
    """Trains ``student`` (and mimics ``teacher`` when given) as ``cfg`` says, on ``ctx`` (DDP when it has more
    than one rank; the process group must already be up). ``classifier``: DICOD's crop classifier, for its terms."""

    metrics = ("mAP@.5", "mAP@[.5:.95]")

    def __init__(self, cfg: TrainConfig, student: Detector, teacher: Detector | None, ctx: RunContext,
                 class_names: list[str], progress: bool = True, classifier: nn.Module | None = None,
                 record: RunRecord | None = None):
        self.cfg, self.ctx, self.class_names = cfg, ctx, class_names
        device = ctx.device
        self.autocast = autocast_dtype(cfg.run.precision, device)
        self.weights = cfg.loss_weights()  # (alpha_distill, alpha_label)
        self.fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.student = student.to(device, memory_format=self.fmt).train()
        self.ddp = _ddp(self.student, ctx)
        self.teacher = None
        if teacher is not None:
            self.teacher = teacher.to(device, memory_format=self.fmt).eval().requires_grad_(False)
        if self.teacher is not None and self.weights[0] > 0:
            self._check_mimic(cfg.train.img_size)
        self.terms = self.terms_ddp = None
        if cfg.loss.terms():
            self.terms = DistillTerms(cfg.loss.terms(), self.student, self.teacher, classifier, class_names,
                                      cfg.train.img_size, device, cfg.run.backend)
            self.terms_ddp = _ddp(self.terms, ctx) if any(True for _ in self.terms.parameters()) else self.terms
            self.terms.attach(self.student, self.teacher)
        self.loss_names = ["mimic", "label", *(self.terms.names if self.terms is not None else [])]
        self._no_terms = torch.zeros(0, device=device)
        self.ema = ModelEMA(self.student, cfg.optim.ema_decay) if cfg.optim.ema else None
        use_compile = compile_enabled(cfg.run.compile, device)
        self.loss_fn = torch.compile(self._loss) if use_compile else self._loss
        self.title = "distill" if teacher is not None else "train"
        self.best_metric = cfg.train.best_metric
        self.data: ScannedDataset | None = None
        self.val: tuple[Path, Path] | None = None
        self.loop = StepLoop(self, cfg.train, cfg.optim, ctx, config_hash(cfg), record, progress)
        log.info("fastdiode %s: %s student on %s x %d, %s, %s", self.title, student.name, device, ctx.world,
                 precision_name(self.autocast), "compiled" if use_compile else "eager")

    def _check_mimic(self, size: int) -> None:
        """Mimic compares raw head maps: their layouts must agree (checked on a probe, before any step)."""
        probe = torch.zeros(1, 3, size, size, device=self.ctx.device)
        was = self.student.training
        with torch.no_grad():
            check_head_layouts(self.student.eval()(probe), self.teacher(probe))
        self.student.train(was)

    # ---- what the step loop asks of a task ------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.data.items) if self.data is not None else 0

    def parameters(self) -> Iterable[nn.Parameter]:
        """The student's parameters, then the distillation adapters' (trained with it, saved apart)."""
        yield from self.student.parameters()
        if self.terms is not None:
            yield from self.terms.parameters()

    def batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        t, d = self.cfg.train, self.cfg.data
        plan = BatchPlan(len(self.data.items), t.batch_size, t.seed, self.ctx.rank, self.ctx.world,
                         t.multiscale or [t.img_size], t.scale_every)
        jitter = JitterRanges(d.flip_p, d.hue, d.saturation, d.value)
        return batches(d.loader, self.data, plan, jitter, d.capacity, start, stop, d.workers, self.ctx.device)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, boxes = batch
        device = self.ctx.device
        images = images.to(device, non_blocking=True).contiguous(memory_format=self.fmt)
        weights = self._no_terms if self.terms is None else \
            torch.tensor(self.terms.weights(step), dtype=torch.float32).to(device, non_blocking=True)
        return self.loss_fn(images, boxes.to(device, non_blocking=True), weights)

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.student)

    def evaluate(self, final: bool) -> dict | None:
        """COCO statistics of the evaluated model on the validation set, with TIDE's breakdown at the end."""
        from fastdiode.eval import coco_map

        if self.val is None:
            return None
        model = self.eval_model
        was_training = model.training
        result = coco_map(model, self.val[0], self.val[1], self.cfg.train.eval_size, batch_size=32,
                          device=self.ctx.device, progress=False, tide=final)
        model.train(was_training)
        return {**result["stats"], **({"tide": result["tide"]} if final else {})}

    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "adapters": self.terms.state_dict() if self.terms is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        if self.terms is not None:
            self.terms.load_state_dict(state["adapters"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def export(self, path: Path, **metadata) -> None:
        checkpoint.save(self.eval_model, path, self.class_names, **metadata)

    def close(self) -> None:
        if self.terms is not None:
            self.terms.detach()

    # ---- the loss ---------------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> Detector:
        return self.ema.module if self.ema is not None else self.student

    def _loss(self, images: torch.Tensor, boxes: torch.Tensor,
              term_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, detached [mimic, label, *terms]) of one batch; teacher and student see the same images."""
        distill, label_weight = self.weights
        zero = images.new_zeros((), dtype=torch.float32)
        with torch.autocast(self.ctx.device.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            preds = self.ddp(images)
            mimic = label = zero
            target = None
            if self.teacher is not None and (distill > 0 or (self.terms is not None and self.terms.needs_teacher)):
                with torch.no_grad():
                    target = self.teacher(images)
            if distill > 0:
                mimic = mimic_loss(preds, target)
            if label_weight > 0:
                label, _ = self.student.task_loss(preds, boxes)
            terms = self.terms_ddp(images, boxes, preds, target) if self.terms is not None else zero[None][:0]
        total = distill * mimic + label_weight * label + (terms * term_weights).sum()
        return total, torch.cat([torch.stack([mimic, label]), terms]).detach()

    # ---- running -------------------------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One optimiser step on one batch, as the loop takes it (benchmarks time this): the detached
        [total, mimic, label, *terms], no host sync."""
        return self.loop.train_step((images, boxes))

    def fit(self, data: ScannedDataset, val: tuple[Path, Path] | None = None, stop_at: int | None = None) -> dict:
        """Train on ``data`` from the loop's step to ``train.steps`` (or ``stop_at``), evaluating on ``val`` every
        ``eval_every`` steps and at the end. Returns the run summary."""
        self.data, self.val = data, val
        return self.loop.run(stop_at)


def validation_set(cfg: TrainConfig, class_names: list[str], out: Path) -> tuple[Path, Path] | None:
    """(image folder, COCO json) of ``data.val`` (:func:`fastdiode.data.scan.coco_ground_truth`)."""
    return coco_ground_truth(cfg.data.val, class_names, out) if cfg.data.val else None


def run_training(cfg: TrainConfig, student: Detector, teacher: Detector | None, ctx: RunContext,
                 class_names: list[str] | None = None, resume: bool = False, progress: bool = True,
                 stop_at: int | None = None, record: RunRecord | None = None) -> dict:
    """Scan the data, build the trainer, resume if asked, train, evaluate, write the outputs. Without
    ``class_names`` the training set's names are used (or the class indices when it has none). Everything that
    can be wrong with the data, the terms or the classifier is an error before any step."""
    out = prepare_run_dir(cfg.train.out, to_dict(cfg), resume, ctx.rank)
    data = scan_dataset(cfg.data.train, student.num_classes, cfg.data.strict)
    data.check_classes(student.num_classes, "data.train")
    if cfg.data.limit:
        if len(data.items) < cfg.data.limit:
            raise ValueError(f"data.limit: {cfg.data.limit} images asked for, but {cfg.data.train} has "
                             f"{len(data.items)} usable ones")
        data.items = data.items[: cfg.data.limit]
    class_names = class_names or data.class_names or [str(i) for i in range(student.num_classes)]
    val = validation_set(cfg, class_names, out) if ctx.rank == 0 else None
    reads_classifier = any(TERMS[name].reads_classifier for name in cfg.loss.terms())
    classifier = load_classifier(cfg.classifier.weights) if reads_classifier else None
    trainer = Trainer(cfg, student, teacher, ctx, class_names, progress, classifier, record)
    if resume:
        trainer.loop.load_state()
    return trainer.fit(data, val, stop_at)
