"""One trainer for distillation (``fastdiode distill``) and plain detector training (``fastdiode train``):
loss = a_distill * L_mimic(student, frozen teacher, same batch) + a_label * the student's task loss (the YOLO
loss for fastdiode's detectors; any :class:`fastdiode.models.detector.Detector` trains) + the distillation
terms that are on (KD, FitNet, FGFI, ReviewKD: :mod:`fastdiode.distill.terms`), whose adapters train with the
student and are saved in ``state.pt`` only.

A run writes into ``train.out``: ``metrics.jsonl`` (train metrics every ``log_every`` steps and every
evaluation), ``last`` / ``best`` checkpoints (the evaluated model: the EMA when on), ``state.pt`` (student,
optimiser, EMA, step, metric history: what ``resume`` needs), ``summary.json`` and ``curves.png``. Batches are
a pure function of (seed, step, rank) (:class:`fastdiode.data.batch_plan.BatchPlan`), so a resumed run replays
the uninterrupted one. Ctrl-C saves the state at the current step before exiting.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from fastdiode.config import config_hash, to_dict
from fastdiode.data.scan import ScannedDataset, dataset_paths, scan_dataset
from fastdiode.distill.config import CLASSIFIER_TERMS, TrainConfig
from fastdiode.distill.curves import plot_curves
from fastdiode.distill.ema import ModelEMA
from fastdiode.distill.sync_bn import convert_sync_batchnorm
from fastdiode.distill.terms import DistillTerms
from fastdiode.loading import load_classifier
from fastdiode.losses import mimic_loss
from fastdiode.models import checkpoint
from fastdiode.models.detector import Detector
from fastdiode.runtime.device import autocast_dtype, compile_enabled, precision_name
from fastdiode.runtime.files import atomic_write
from fastdiode.runtime.run_dir import (STATE, append_metrics, due, prepare_run_dir, rewrite_metrics,
                                        saved_on_interrupt)
from fastdiode.runtime.schedule import lr_at

log = logging.getLogger("fastdiode")


class Trainer:
    """Trains ``student`` (and mimics ``teacher`` when given) as ``cfg`` says, on ``device``, as rank
    ``rank`` of ``world`` (DDP when world > 1; the process group must already be up)."""

    def __init__(self, cfg: TrainConfig, student: Detector, teacher: Detector | None, device: torch.device,
                 class_names: list[str], rank: int = 0, world: int = 1, progress: bool = True,
                 classifier: nn.Module | None = None):
        self.cfg, self.device, self.rank, self.world, self.progress = cfg, device, rank, world, progress
        self.class_names = class_names
        self.out = Path(cfg.train.out)
        cuda = device.type == "cuda"
        self.autocast = autocast_dtype(cfg.run.precision, device)
        self.weights = cfg.loss_weights()  # (alpha_distill, alpha_label)
        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.student = student.to(device, memory_format=fmt).train()
        if world > 1:
            self.student = convert_sync_batchnorm(self.student, device)
            self.ddp = nn.parallel.DistributedDataParallel(self.student, device_ids=[device.index] if cuda else None)
        else:
            self.ddp = self.student
        self.teacher = None
        if teacher is not None:
            self.teacher = teacher.to(device, memory_format=fmt).eval().requires_grad_(False)
        self.terms = self.terms_ddp = None
        if cfg.loss.terms():
            self.terms = DistillTerms(cfg.loss, self.student, self.teacher, cfg.train.img_size, device, cfg.run.backend,
                                      classifier.to(device) if classifier is not None else None)
            if classifier is not None and list(getattr(classifier, "class_names", class_names)) != list(class_names):
                raise ValueError(f"classifier: {cfg.classifier.weights} has classes {classifier.class_names}, but the "
                                 f"detector's are {class_names}")
            if world > 1 and any(True for _ in self.terms.parameters()):  # DDP needs trainable parameters
                self.terms = convert_sync_batchnorm(self.terms, device)
                self.terms_ddp = nn.parallel.DistributedDataParallel(self.terms, device_ids=[device.index] if cuda
                                                                     else None)
            else:
                self.terms_ddp = self.terms
            self.terms.attach(self.student, self.teacher)
        self.loss_names = ["mimic", "label", *(self.terms.names if self.terms is not None else [])]
        self._no_terms = torch.zeros(0, device=device)
        self.optimizer = self._optimizer()
        self.ema = ModelEMA(self.student, cfg.optim.ema_decay) if cfg.optim.ema else None
        use_compile = compile_enabled(cfg.run.compile, device)
        self.loss_fn = torch.compile(self._loss) if use_compile else self._loss
        self.fmt, self.step, self.history, self.best = fmt, 0, [], -math.inf
        log.info("fastdiode %s: %s student on %s x %d, %s, %s", "distill" if teacher is not None else "train",
                 student.name, device, world, precision_name(self.autocast),
                 "compiled" if use_compile else "eager")

    def _trained(self) -> list[nn.Parameter]:
        """The student's parameters, then the distillation adapters' (trained with it, saved apart)."""
        return list(self.student.parameters()) + (list(self.terms.parameters()) if self.terms is not None else [])

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        decay = [p for p in self._trained() if p.ndim > 1]
        rest = [p for p in self._trained() if p.ndim <= 1]  # no weight decay on BN and biases
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        fused = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        if o.name == "adam":
            return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), **fused)
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0, **fused)

    def _loss(self, images: torch.Tensor, boxes: torch.Tensor,
              term_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, detached [mimic, label, *terms]) of one batch; teacher and student see the same images."""
        distill, label_weight = self.weights
        zero = images.new_zeros((), dtype=torch.float32)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
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
            terms = self.terms_ddp(preds, target, boxes, images, getattr(self.student, "heads", None)) \
                if self.terms is not None else zero[None][:0]
        total = distill * mimic + label_weight * label + (terms * term_weights).sum()
        return total, torch.cat([torch.stack([mimic, label]), terms]).detach()

    # ---- one step -------------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns the detached [total, mimic, label, *terms] (no host sync)."""
        o, t = self.cfg.optim, self.cfg.train
        lr = lr_at(self.step, t.steps, o.lr, o.lr_min, o.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        weights = self._no_terms if self.terms is None else \
            torch.tensor(self.terms.weights(self.step), dtype=torch.float32).to(self.device, non_blocking=True)
        total, parts = self.loss_fn(images, boxes.to(self.device, non_blocking=True), weights)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if o.grad_clip > 0:
            nn.utils.clip_grad_norm_(self._trained(), o.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.student)
        self.step += 1
        return torch.cat([total.detach()[None], parts])

    # ---- model to evaluate, checkpoints, state ----------------------------------------------------------
    @property
    def eval_model(self) -> Detector:
        return self.ema.module if self.ema is not None else self.student

    def save_state(self) -> None:
        if self.rank != 0:
            return
        state = {"step": self.step, "student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "ema": self.ema.state_dict() if self.ema else None, "history": self.history, "best": self.best,
                 "config_hash": config_hash(self.cfg), "rng": torch.get_rng_state(),
                 "adapters": self.terms.state_dict() if self.terms is not None else None}
        atomic_write(self.out / STATE, lambda tmp: torch.save(state, tmp))
        checkpoint.save(self.eval_model, self.out / "last", self.class_names, step=self.step)

    def load_state(self) -> None:
        path = self.out / STATE
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config_hash"] != config_hash(self.cfg):
            raise ValueError(f"resume: {path} was written with a different config; use the same config and "
                             "overrides, or a new train.out")
        self.student.load_state_dict(state["student"])
        if self.terms is not None:
            self.terms.load_state_dict(state["adapters"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]
        torch.set_rng_state(state["rng"])
        log.info("fastdiode: resuming %s at step %d", self.out, self.step)

    # ---- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, val: tuple[Path, Path], tide: bool = False) -> dict:
        """COCO statistics of the evaluated model on ``val``, with TIDE's breakdown under ``tide`` when asked."""
        from fastdiode.eval import coco_map

        model = self.eval_model
        was_training = model.training
        result = coco_map(model, val[0], val[1], self.cfg.train.eval_size, batch_size=32, device=self.device,
                          progress=False, tide=tide)
        model.train(was_training)
        return {**result["stats"], **({"tide": result["tide"]} if tide else {})}

    def _log(self, entry: dict) -> None:
        self.history.append(entry)
        append_metrics(self.out / "metrics.jsonl", entry, self.rank)

    # ---- the loop -----------------------------------------------------------------------------------------
    def fit(self, data: ScannedDataset, val: tuple[Path, Path] | None = None, stop_at: int | None = None) -> dict:
        """Train from ``self.step`` to ``train.steps`` (or ``stop_at``); evaluate on ``val`` every
        ``eval_every`` steps and at the end. Returns the run summary."""
        from tqdm import tqdm

        cfg, t = self.cfg, self.cfg.train
        stop = min(t.steps, stop_at) if stop_at is not None else t.steps
        rewrite_metrics(self.out / "metrics.jsonl", self.history, self.rank)
        plan = cfg.batch_plan(len(data.items), self.rank, self.world)
        stream = cfg.data.batches(data, plan, self.step, stop, self.device)
        bar = tqdm(total=stop, initial=self.step, unit="step", disable=not self.progress or self.rank != 0,
                   desc="distill" if self.teacher is not None else "train", dynamic_ncols=True)
        start, images_seen, sums, count = time.perf_counter(), 0, None, 0
        try:
            with saved_on_interrupt(self.save_state, lambda: self.step):
                for images, boxes in stream:
                    values = self.train_step(images, boxes)
                    sums = values if sums is None else sums + values
                    count += 1
                    images_seen += len(images) * self.world
                    bar.update(1)
                    if due(self.step, t.log_every, stop):
                        if self.world > 1:  # the global batch's loss: the mean over ranks
                            torch.distributed.all_reduce(sums)
                            sums /= self.world
                        mean = (sums / count).tolist()
                        if not all(math.isfinite(v) for v in mean):
                            raise FloatingPointError(f"step {self.step}: non-finite loss {mean}; lower optim.lr or "
                                                     "set optim.grad_clip")
                        elapsed = time.perf_counter() - start
                        self._log({"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "loss": mean[0],
                                   **dict(zip(self.loss_names, mean[1:])), "epoch": plan.epoch_of(self.step),
                                   "images_per_s": images_seen / max(elapsed, 1e-9)})
                        bar.set_postfix(loss=f"{mean[0]:.4g}")
                        sums, count = None, 0
                    if val is not None and due(self.step, t.eval_every, t.steps):
                        self._evaluate_and_keep(val)
                    if due(self.step, t.checkpoint_every, stop):
                        self.save_state()
        finally:
            bar.close()
            if self.terms is not None:
                self.terms.detach()
        return self._finish(time.perf_counter() - start, images_seen)

    def _evaluate_and_keep(self, val: tuple[Path, Path]) -> None:
        stats = self.evaluate(val, tide=self.step == self.cfg.train.steps) if self.rank == 0 else {}
        if self.rank != 0:
            return
        self._log({"step": self.step, "eval": stats})
        score = stats.get(self.cfg.train.best_metric, 0.0)
        log.info("fastdiode: step %d: mAP@[.5:.95] %.4f, mAP@.5 %.4f", self.step, stats["mAP@[.5:.95]"],
                 stats["mAP@.5"])
        if score > self.best:
            self.best = score
            checkpoint.save(self.eval_model, self.out / "best", self.class_names, step=self.step, **{
                self.cfg.train.best_metric: score})

    def _finish(self, seconds: float, images: int) -> dict:
        evals = [e for e in self.history if "eval" in e]
        summary = {"steps": self.step, "seconds": seconds, "images_per_s": images / max(seconds, 1e-9),
                   "final_eval": evals[-1]["eval"] if evals else None, "best": self.best if evals else None,
                   "best_metric": self.cfg.train.best_metric, "config_hash": config_hash(self.cfg)}
        if self.rank == 0:
            atomic_write(self.out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
            plot_curves(self.history, self.out / "curves.png")
        return summary


def validation_set(cfg: TrainConfig, class_names: list[str], out: Path) -> tuple[Path, Path] | None:
    """(image folder, COCO json) of ``data.val``; YOLO-labelled sets get a COCO json written under ``out``."""
    if not cfg.data.val:
        return None
    images, labels = dataset_paths(cfg.data.val)
    if labels.suffix == ".json":
        return images, labels
    scanned = scan_dataset(cfg.data.val, len(class_names), strict=True)
    gt = out / "val_annotations.json"
    atomic_write(gt, lambda tmp: tmp.write_text(json.dumps(scanned.coco(class_names))))
    return images, gt


def run_training(cfg: TrainConfig, student: Detector, teacher: Detector | None, device: torch.device,
                 class_names: list[str] | None = None, rank: int = 0, world: int = 1, resume: bool = False,
                 progress: bool = True, stop_at: int | None = None) -> dict:
    """Scan the data, build the trainer, resume if asked, train, evaluate, write the outputs. Without
    ``class_names`` the training set's names are used (or the class indices when it has none)."""
    out = prepare_run_dir(cfg.train.out, to_dict(cfg), resume, rank)
    data = scan_dataset(cfg.data.train, student.num_classes, cfg.data.strict)
    if cfg.data.limit:
        if len(data.items) < cfg.data.limit:
            raise ValueError(f"data.limit: {cfg.data.limit} images asked for, but {cfg.data.train} has "
                             f"{len(data.items)} usable ones")
        data.items = data.items[: cfg.data.limit]
    class_names = class_names or data.class_names or [str(i) for i in range(student.num_classes)]
    val = validation_set(cfg, class_names, out) if rank == 0 else None
    dicod = any(name in CLASSIFIER_TERMS for name in cfg.loss.terms())
    classifier = load_classifier(cfg.classifier.weights) if dicod else None
    trainer = Trainer(cfg, student, teacher, device, class_names, rank, world, progress, classifier)
    if resume:
        trainer.load_state()
    return trainer.fit(data, val, stop_at)
