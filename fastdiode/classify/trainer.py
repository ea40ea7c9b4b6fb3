"""The crop classifier's trainer (``fastdiode train-classifier``): a ResNet on a crops split, with cross-entropy
and/or focal loss, top-1 on the val crops.

:class:`ClassifierTrainer` is a task of the shared step loop (:mod:`fastdiode.training.loop`), which writes what
the detector trainer writes into ``train.out``: ``metrics.jsonl``, ``last`` / ``best`` checkpoints (fastdiode
classifier checkpoints), ``state.pt``, ``summary.json`` and ``curves.png``, resumes exactly and saves on Ctrl-C.
Each step's samples (:class:`fastdiode.data.batch_plan.BatchPlan`) and each sample's jitter are a pure function
of (seed, step). ``run.precision`` and ``run.compile`` apply to the ResNet's forward, as in the detector trainer.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastdiode.classify.config import ClassifierConfig, ClassifierDataConfig
from fastdiode.config import config_hash, to_dict
from fastdiode.data.batch_plan import BatchPlan
from fastdiode.data.crops import CropSet
from fastdiode.losses.classification import focal_loss
from fastdiode.models import checkpoint
from fastdiode.models.resnet import ResNet
from fastdiode.runtime.device import autocast_dtype, compile_enabled, precision_name
from fastdiode.runtime.distributed import RunContext
from fastdiode.runtime.run_dir import prepare_run_dir
from fastdiode.training.loop import StepLoop

log = logging.getLogger("fastdiode")


def jitter_crops(images: torch.Tensor, data: ClassifierDataConfig, seeds: list[int]) -> torch.Tensor:
    """uint8 crops (N, 3, S, S) -> float [0, 1], each randomly translated (edge padding), flipped and brightened
    from its own seed (so a crop's jitter does not depend on the rest of the batch)."""
    x = images.float() / 255
    n, _, s, _ = x.shape
    u = torch.stack([torch.rand(4, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    if data.pad:
        padded = F.pad(x, (data.pad,) * 4, mode="replicate")
        offsets = (u[:, :2] * (2 * data.pad + 1)).long()
        span = torch.arange(s)
        rows = (offsets[:, 0, None] + span)[:, None, :, None]  # one gather for the whole batch
        cols = (offsets[:, 1, None] + span)[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if data.flip_p:
        x = torch.where((u[:, 2] < data.flip_p)[:, None, None, None], x.flip(-1), x)
    if data.brightness:
        x = x * (1 + data.brightness * (2 * u[:, 3] - 1))[:, None, None, None]
    return x.clamp(0, 1)


@torch.no_grad()
def top1(model: nn.Module, data: CropSet, device: torch.device, batch: int = 512) -> float:
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
    """Trains ``model`` on the crops ``train`` as ``cfg`` says, on ``ctx``; evaluates on ``val`` when given."""

    title = "train-classifier"
    loss_names = ["ce", "focal"]
    metrics = ("top1",)
    best_metric = "top1"

    def __init__(self, cfg: ClassifierConfig, model: ResNet, ctx: RunContext, train: CropSet,
                 val: CropSet | None = None, progress: bool = True):
        self.cfg, self.ctx, self.train, self.val = cfg, ctx, train, val
        self.model = model.to(ctx.device).train()
        self.autocast = autocast_dtype(cfg.run.precision, ctx.device)
        use_compile = compile_enabled(cfg.run.compile, ctx.device)
        self.forward = torch.compile(self.model) if use_compile else self.model
        t = cfg.train
        self.plan = BatchPlan(len(train.labels), t.batch_size, t.seed)  # one size: the crops'
        self.loop = StepLoop(self, t, cfg.optim, ctx, config_hash(cfg), progress=progress)
        log.info("fastdiode train-classifier: %s on %s, %s, %s", model.name, ctx.device,
                 precision_name(self.autocast), "compiled" if use_compile else "eager")

    # ---- what the step loop asks of a task ------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.train.labels)

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    def batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(start, stop):
            index, seeds = zip(*self.plan.samples(step))
            index = torch.tensor(index)
            yield jitter_crops(self.train.images[index], self.cfg.data, list(seeds)), self.train.labels[index]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, detached [ce, focal])."""
        images, labels = (t.to(self.ctx.device, non_blocking=True) for t in batch)
        lo = self.cfg.loss
        with torch.autocast(self.ctx.device.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            logits = self.forward(images).float()
        zero = logits.new_zeros(())
        ce = F.cross_entropy(logits, labels) if lo.ce else zero
        fl = focal_loss(logits, labels, lo.gamma) if lo.focal else zero
        return lo.ce * ce + lo.focal * fl, torch.stack([ce, fl]).detach()

    def after_step(self) -> None:
        pass

    def evaluate(self, final: bool) -> dict | None:
        return {"top1": top1(self.model, self.val, self.ctx.device)} if self.val is not None else None

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    def export(self, path: Path, **metadata) -> None:
        checkpoint.save(self.model, path, self.model.class_names, **metadata)

    def close(self) -> None:
        pass

    def fit(self, stop_at: int | None = None) -> dict:
        """Train from the loop's step to ``train.steps`` (or ``stop_at``); returns the run summary."""
        return self.loop.run(stop_at)


def run_classifier_training(cfg: ClassifierConfig, ctx: RunContext, resume: bool = False, progress: bool = True,
                            stop_at: int | None = None) -> dict:
    """Load the crops, build the ResNet at the crops' size, resume if asked, train, evaluate."""
    if ctx.world > 1:
        raise ValueError(f"train-classifier runs in one process (a small ResNet on in-memory crops), not under "
                         f"torchrun with {ctx.world} ranks")
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
    trainer = ClassifierTrainer(cfg, model, ctx, train, val, progress)
    if resume:
        trainer.loop.load_state()
    return trainer.fit(stop_at)
