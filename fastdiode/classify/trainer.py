"""The crop classifier's trainer (``fastdiode train-classifier``): a ResNet on a crops split, with cross-entropy
and/or focal loss, SGD or Adam with warmup and cosine decay, top-1 on the val crops.

A run writes into ``train.out`` what the detector trainer writes: ``metrics.jsonl``, ``last`` / ``best``
checkpoints (fastdiode classifier checkpoints), ``state.pt`` (model, optimiser, step, history), ``summary.json``
and ``curves.png``. Each step's batch and augmentation are a pure function of (seed, step), so ``--resume``
replays the uninterrupted run exactly; Ctrl-C saves the state before exiting.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastdiode.classify.config import ClassifierConfig
from fastdiode.config import config_hash, to_dict
from fastdiode.data.crops import CropSet
from fastdiode.distill.curves import plot_curves
from fastdiode.losses.classification import focal_loss
from fastdiode.models import checkpoint
from fastdiode.models.resnet import ResNet
from fastdiode.runtime.files import atomic_write
from fastdiode.runtime.run_dir import (STATE, append_metrics, due, prepare_run_dir, rewrite_metrics,
                                        saved_on_interrupt)
from fastdiode.runtime.schedule import derive_seed, lr_at

log = logging.getLogger("fastdiode")


def batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """The sample indices of ``step``: epochs of a seeded permutation, the last partial batch dropped."""
    per_epoch = max(n // batch, 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, step // per_epoch)))
    at = (step % per_epoch) * batch
    return perm[at:at + batch]


def augment(images: torch.Tensor, cfg: ClassifierConfig, step: int) -> torch.Tensor:
    """uint8 crops (N, 3, S, S) -> float [0, 1], randomly translated (edge padding), flipped and brightened, from a
    generator seeded by (seed, step)."""
    d = cfg.data
    g = torch.Generator().manual_seed(derive_seed(cfg.train.seed, step, 1))
    x = images.float() / 255
    n, _, s, _ = x.shape
    if d.pad:
        padded = F.pad(x, (d.pad,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * d.pad + 1, (n, 2), generator=g)
        span = torch.arange(s)
        rows = (offsets[:, 0, None] + span)[:, None, :, None]  # one gather for the whole batch
        cols = (offsets[:, 1, None] + span)[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if d.flip_p:
        flip = torch.rand(n, generator=g) < d.flip_p
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if d.brightness:
        x = x * (1 + d.brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1))
    return x.clamp(0, 1)


@torch.no_grad()
def top1(model: torch.nn.Module, data: CropSet, device: torch.device, batch: int = 512) -> float:
    """Top-1 accuracy of ``model`` on the crops of ``data``."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data.labels), batch):
        logits = model(data.images[i:i + batch].to(device).float() / 255)
        correct += int((logits.argmax(1).cpu() == data.labels[i:i + batch]).sum())
    model.train(was)
    return correct / len(data.labels)


class ClassifierTrainer:
    """Trains ``model`` on ``train`` as ``cfg`` says; evaluates on ``val`` when given."""

    def __init__(self, cfg: ClassifierConfig, model: ResNet, device: torch.device, progress: bool = True):
        self.cfg, self.model, self.device, self.progress = cfg, model.to(device).train(), device, progress
        self.out = Path(cfg.train.out)
        o = cfg.optim
        decay = [p for p in model.parameters() if p.ndim > 1]
        rest = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        self.optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0) \
            if o.name == "sgd" else torch.optim.Adam(groups, lr=o.lr)
        self.step, self.history, self.best = 0, [], -math.inf

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, detached [ce, focal])."""
        lo = self.cfg.loss
        ce = F.cross_entropy(logits.float(), labels) if lo.ce else logits.new_zeros((), dtype=torch.float32)
        fl = focal_loss(logits, labels, lo.gamma) if lo.focal else logits.new_zeros((), dtype=torch.float32)
        return lo.ce * ce + lo.focal * fl, torch.stack([ce, fl]).detach()

    def train_step(self, train: CropSet) -> torch.Tensor:
        """One optimiser step; returns the detached [total, ce, focal] (no host sync)."""
        cfg, o, t = self.cfg, self.cfg.optim, self.cfg.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, t.steps, o.lr, o.lr_min, o.warmup)
        idx = batch_indices(len(train.labels), t.batch_size, t.seed, self.step)
        images = augment(train.images[idx], cfg, self.step).to(self.device)
        labels = train.labels[idx].to(self.device)
        total, parts = self.loss(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        return torch.cat([total.detach()[None], parts])

    def save_state(self) -> None:
        state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "history": self.history, "best": self.best, "config_hash": config_hash(self.cfg),
                 "rng": torch.get_rng_state()}
        atomic_write(self.out / STATE, lambda tmp: torch.save(state, tmp))
        checkpoint.save(self.model, self.out / "last", self.model.class_names, step=self.step)

    def load_state(self) -> None:
        path = self.out / STATE
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config_hash"] != config_hash(self.cfg):
            raise ValueError(f"resume: {path} was written with a different config; use the same config and "
                             "overrides, or a new train.out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]
        torch.set_rng_state(state["rng"])
        log.info("fastdiode: resuming %s at step %d", self.out, self.step)

    def _log(self, entry: dict) -> None:
        self.history.append(entry)
        append_metrics(self.out / "metrics.jsonl", entry)

    def _evaluate(self, val: CropSet) -> None:
        acc = top1(self.model, val, self.device)
        self._log({"step": self.step, "eval": {"top1": acc}})
        log.info("fastdiode: step %d: top-1 %.4f", self.step, acc)
        if acc > self.best:
            self.best = acc
            checkpoint.save(self.model, self.out / "best", self.model.class_names, step=self.step, top1=acc)

    def fit(self, train: CropSet, val: CropSet | None, stop_at: int | None = None) -> dict:
        """Train from ``self.step`` to ``train.steps`` (or ``stop_at``); returns the run summary."""
        from tqdm import tqdm

        t = self.cfg.train
        stop = min(t.steps, stop_at) if stop_at is not None else t.steps
        rewrite_metrics(self.out / "metrics.jsonl", self.history)
        bar = tqdm(total=stop, initial=self.step, unit="step", desc="train-classifier", disable=not self.progress,
                   dynamic_ncols=True)
        start, sums, count = time.perf_counter(), None, 0
        try:
            with saved_on_interrupt(self.save_state, lambda: self.step):
                while self.step < stop:
                    values = self.train_step(train)
                    sums = values if sums is None else sums + values
                    count += 1
                    bar.update(1)
                    if due(self.step, t.log_every, stop):
                        mean = (sums / count).tolist()  # the one host sync, every log_every steps
                        if not all(math.isfinite(v) for v in mean):
                            raise FloatingPointError(f"step {self.step}: non-finite loss {mean}; lower optim.lr")
                        self._log({"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "loss": mean[0],
                                   "ce": mean[1], "focal": mean[2]})
                        bar.set_postfix(loss=f"{mean[0]:.4g}")
                        sums, count = None, 0
                    if val is not None and due(self.step, t.eval_every, t.steps):
                        self._evaluate(val)
                    if due(self.step, t.checkpoint_every, stop):
                        self.save_state()
        finally:
            bar.close()
        evals = [e["eval"]["top1"] for e in self.history if "eval" in e]
        summary = {"steps": self.step, "seconds": time.perf_counter() - start,
                   "final_top1": evals[-1] if evals else None, "best_top1": max(evals) if evals else None,
                   "config_hash": config_hash(self.cfg)}
        atomic_write(self.out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
        plot_curves(self.history, self.out / "curves.png", "crop classifier", metrics=("top1",),
                    terms=("ce", "focal"))
        return summary


def run_classifier_training(cfg: ClassifierConfig, device: torch.device, resume: bool = False,
                            progress: bool = True, stop_at: int | None = None) -> dict:
    """Load the crops, build the ResNet at the crops' size, resume if asked, train, evaluate."""
    prepare_run_dir(cfg.train.out, to_dict(cfg), resume)
    torch.manual_seed(cfg.train.seed)
    train = CropSet.load(cfg.data.train)
    val = CropSet.load(cfg.data.val) if cfg.data.val else None
    if val is not None and (val.class_names != train.class_names or val.images.shape[-1] != train.images.shape[-1]):
        raise ValueError(f"data.val: {cfg.data.val} has classes {val.class_names} at {val.images.shape[-1]} px, but "
                         f"data.train has {train.class_names} at {train.images.shape[-1]} px")
    model = ResNet(len(train.class_names), cfg.model.width, tuple(cfg.model.depths), train.images.shape[-1],
                   name=f"resnet-w{cfg.model.width}-d{'.'.join(map(str, cfg.model.depths))}")
    model.class_names = train.class_names
    trainer = ClassifierTrainer(cfg, model, device, progress)
    if resume:
        trainer.load_state()
    return trainer.fit(train, val, stop_at)
