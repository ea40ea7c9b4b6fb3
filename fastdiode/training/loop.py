"""The one step loop every trainer drives (``fastdiode train``/``distill``, ``train-classifier``).

A trainer is a :class:`TrainTask`: it says what is trained, how a step's batch becomes a loss, how its model is
evaluated, saved and restored. The loop owns the rest, the same for every trainer:

* the optimiser (:func:`fastdiode.training.optim.build_optimizer`) and each step's learning rate;
* the step counter, the loss sums between log lines (no host sync in between) and the NaN/Inf check;
* the cadence of log lines, evaluations and checkpoints (:func:`fastdiode.runtime.run_dir.due`);
* ``state.pt`` (step, optimiser, history, best score, config hash, RNG, the task's state), ``--resume`` and
  Ctrl-C (the state is saved at the current step);
* the progress bar, ``metrics.jsonl``, ``last``/``best`` checkpoints, ``summary.json`` and ``curves.png``.

Batches are a pure function of (seed, step, rank) in every task, so a resumed run replays the uninterrupted one.
Under DDP (``ctx.world > 1``) the logged losses are the means over ranks and only rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from fastdiode.eval.curves import plot_curves
from fastdiode.runtime.distributed import RunContext, RunRecord
from fastdiode.runtime.files import append_jsonl, atomic_write
from fastdiode.runtime.run_dir import STATE, due, saved_on_interrupt
from fastdiode.training.config import LoopConfig, OptimConfig
from fastdiode.training.optim import build_optimizer, set_lr

log = logging.getLogger("fastdiode")
METRICS = "metrics.jsonl"


class TrainTask(Protocol):
    """What a trainer gives :class:`StepLoop`."""

    title: str  # the progress bar's and the curves' label
    loss_names: list[str]  # the parts :meth:`loss` returns after the total, in order
    metrics: tuple[str, ...]  # the evaluation's metrics drawn in the curves
    best_metric: str  # the evaluation metric that picks the ``best`` checkpoint
    num_items: int  # samples in an epoch

    def parameters(self) -> Iterable[nn.Parameter]:
        """Everything the optimiser trains."""

    def batches(self, start: int, stop: int) -> Iterable[tuple]:
        """The batches of steps ``start .. stop - 1``; a batch's first element holds its images."""

    def loss(self, batch: tuple, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, detached parts in :attr:`loss_names` order) of one batch, without a host sync."""

    def after_step(self) -> None:
        """Called after every optimiser step (an EMA update)."""

    def evaluate(self, final: bool) -> dict | None:
        """The evaluation metrics (on rank 0 only), or None when there is nothing to evaluate on."""

    def state_dict(self) -> dict:
        """What the task needs to resume beyond the loop's own state (models, adapters, EMA)."""

    def load_state_dict(self, state: dict) -> None: ...

    def export(self, path: Path, **metadata: Any) -> None:
        """Write the evaluated model's checkpoint at ``path`` (``last`` and ``best`` of the run folder)."""

    def close(self) -> None:
        """Called once the loop ends (hooks off)."""


class StepLoop:
    """Drives ``task`` for ``loop.steps`` steps with the optimiser of ``optim`` on ``ctx``; ``config_hash``
    identifies the run's config (a resume with another config is refused) and ``record`` goes into the summary."""

    def __init__(self, task: TrainTask, loop: LoopConfig, optim: OptimConfig, ctx: RunContext, config_hash: str,
                 record: RunRecord | None = None, progress: bool = True):
        self.task, self.loop, self.optim, self.ctx = task, loop, optim, ctx
        self.config_hash, self.record, self.progress = config_hash, record or ctx.record(), progress
        self.out = Path(loop.out)
        self.optimizer = build_optimizer(task.parameters(), optim, ctx.device)
        self.trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.step, self.history, self.best = 0, [], -math.inf
        self.sums, self.count = None, 0  # the losses summed since the last log line (saved: a resume goes on)

    # ---- one step ---------------------------------------------------------------------------------------
    def train_step(self, batch: tuple) -> torch.Tensor:
        """One optimiser step; returns the detached [total, *parts] (no host sync)."""
        set_lr(self.optimizer, self.optim, self.step, self.loop.steps)
        total, parts = self.task.loss(batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.trained, self.optim.grad_clip)
        self.optimizer.step()
        self.task.after_step()
        self.step += 1
        return torch.cat([total.detach()[None], parts])

    # ---- state --------------------------------------------------------------------------------------------
    def save_state(self) -> None:
        """``state.pt`` and the ``last`` checkpoint (rank 0)."""
        if self.ctx.rank != 0:
            return
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "history": self.history,
                 "best": self.best, "config_hash": self.config_hash, "rng": torch.get_rng_state(),
                 "sums": self.sums, "count": self.count, "task": self.task.state_dict()}
        atomic_write(self.out / STATE, lambda tmp: torch.save(state, tmp))
        self.task.export(self.out / "last", step=self.step)

    def load_state(self) -> None:
        path = self.out / STATE
        state = torch.load(path, map_location=self.ctx.device, weights_only=False)
        if state.get("config_hash") != self.config_hash:
            raise ValueError(f"resume: {path} was written with a different config; use the same config and "
                             "overrides, or a new train.out")
        self.task.load_state_dict(state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]
        self.sums, self.count = state["sums"], state["count"]
        torch.set_rng_state(state["rng"])
        log.info("fastdiode: resuming %s at step %d", self.out, self.step)

    # ---- logs -----------------------------------------------------------------------------------------------
    def _log(self, entry: dict) -> None:
        self.history.append(entry)
        if self.ctx.rank == 0:
            append_jsonl(self.out / METRICS, entry)

    def _log_losses(self, images_per_s: float) -> float:
        sums = self.sums
        if self.ctx.world > 1:  # the global batch's loss: the mean over ranks
            torch.distributed.all_reduce(sums)
            sums /= self.ctx.world
        mean = (sums / self.count).tolist()  # the one host sync, every log_every steps
        self.sums, self.count = None, 0
        if not all(math.isfinite(v) for v in mean):
            values = dict(zip(["loss", *self.task.loss_names], mean))
            raise FloatingPointError(f"step {self.step}: non-finite loss {values}; lower optim.lr or set "
                                     "optim.grad_clip")
        self._log({"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "loss": mean[0],
                   **dict(zip(self.task.loss_names, mean[1:])),
                   "epoch": self.step * self.loop.batch_size / max(self.task.num_items, 1),
                   "images_per_s": images_per_s})
        return mean[0]

    def _evaluate(self) -> None:
        if self.ctx.rank != 0:
            return
        stats = self.task.evaluate(final=self.step == self.loop.steps)
        if stats is None:
            return
        self._log({"step": self.step, "eval": stats})
        log.info("fastdiode: step %d: %s", self.step,
                 ", ".join(f"{k} {stats[k]:.4f}" for k in self.task.metrics if k in stats))
        score = stats.get(self.task.best_metric, 0.0)
        if score > self.best:
            self.best = score
            self.task.export(self.out / "best", step=self.step, **{self.task.best_metric: score})

    # ---- the loop --------------------------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> dict:
        """Train from :attr:`step` to ``loop.steps`` (or ``stop_at``), evaluating every ``eval_every`` steps and
        at the end; returns the run's summary."""
        from tqdm import tqdm

        loop = self.loop
        stop = min(loop.steps, stop_at) if stop_at is not None else loop.steps
        if self.ctx.rank == 0:  # a resumed run drops the lines written after its checkpoint
            atomic_write(self.out / METRICS,
                         lambda tmp: tmp.write_text("".join(json.dumps(e) + "\n" for e in self.history)))
        stream = self.task.batches(self.step, stop)  # a loader that cannot start fails before the bar shows
        bar = tqdm(total=stop, initial=self.step, unit="step", desc=self.task.title, dynamic_ncols=True,
                   disable=not self.progress or self.ctx.rank != 0)
        start, images = time.perf_counter(), 0
        try:
            with saved_on_interrupt(self.save_state, lambda: self.step):
                for batch in stream:
                    values = self.train_step(batch)
                    self.sums = values if self.sums is None else self.sums + values
                    self.count += 1
                    images += len(batch[0]) * self.ctx.world
                    bar.update(1)
                    if due(self.step, loop.log_every, stop):
                        loss = self._log_losses(images / max(time.perf_counter() - start, 1e-9))
                        bar.set_postfix(loss=f"{loss:.4g}")
                    if due(self.step, loop.eval_every, loop.steps):
                        self._evaluate()
                    if due(self.step, loop.checkpoint_every, stop):
                        self.save_state()
        finally:
            bar.close()
            self.task.close()
        return self._finish(time.perf_counter() - start, images)

    def _finish(self, seconds: float, images: int) -> dict:
        evals = [e for e in self.history if "eval" in e]
        summary = {"steps": self.step, "seconds": seconds, "images_per_s": images / max(seconds, 1e-9),
                   "final_eval": evals[-1]["eval"] if evals else None, "best": self.best if evals else None,
                   "best_metric": self.task.best_metric, "config_hash": self.config_hash,
                   "run": self.record.as_dict()}
        if self.ctx.rank == 0:
            atomic_write(self.out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
            plot_curves(self.history, self.out / "curves.png", self.task.title, self.task.metrics,
                        self.task.loss_names)
        return summary
