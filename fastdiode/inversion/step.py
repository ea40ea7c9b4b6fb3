"""One stage's optimisation step over static buffers, run directly or replayed from one CUDA graph.

Everything a step reads lives in a buffer allocated once per (stage, batch size): the images being optimised
(the optimiser's only parameter), the targets, a table with every step's augmentation draw, the learning-rate
schedule, and a device-side step counter. The step selects its row of each table with the counter and
advances it, so the host never passes anything in: on CUDA the whole step (augmentation, forward, losses,
backward, fused Adam with a tensor learning rate, clamp) is captured into one graph after a few eager
warm-up steps and replayed; elsewhere the same code runs eagerly. A new chunk of images reloads the buffers
in place, so one capture serves every chunk and every batch of that shape.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from fastdiode.augment import AugmentParams, DiodeAugment
from fastdiode.runtime.schedule import lr_at

log = logging.getLogger("fastdiode")
WARMUP_STEPS = 3  # eager steps before capture (compiles the step and allocates the optimiser state)


class StageStep:
    """The step of one stage for batches of ``batch`` images at ``size`` px.

    ``loss_fn(x, targets, params, step)`` returns (total loss, a vector of logged loss terms) for augmentation
    draw ``params`` at device step ``step``. ``schedule`` is (lr, lr_min, warmup fraction) of
    :func:`fastdiode.runtime.schedule.lr_at`. ``graph``: capture into a CUDA graph (CUDA only); ``pool`` is a
    shared CUDA graph memory pool (stages replay in capture order, so their graphs can share one).
    """

    def __init__(self, loss_fn: Callable, augment: DiodeAugment, batch: int, size: int, capacity: int,
                 iterations: int, schedule: tuple[float, float, float], betas: tuple[float, float],
                 num_losses: int, device: torch.device, graph: bool = False, pool=None):
        self.loss_fn, self.augment, self.iterations = loss_fn, augment, iterations
        self.device, self.use_graph, self.pool = device, graph, pool
        # NCHW: the augmentation and the TV prior read a 3-channel image 3x faster in it than in channels_last,
        # and the first conv (channels_last weights) takes either.
        self.x = torch.zeros(batch, 3, size, size, device=device)
        self.x.requires_grad_(True)
        self.targets = torch.zeros(batch, capacity, 5, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.lr_table = torch.tensor([lr_at(t, iterations, *schedule) for t in range(iterations)], device=device)
        self.lr = self.lr_table[0].clone()
        self.losses = torch.zeros(num_losses, device=device)
        self.draws: AugmentParams | None = None
        # Fused Adam takes a tensor lr; capturable keeps its step count on the device for the graph.
        self.opt = torch.optim.Adam([self.x], lr=self.lr, betas=betas, eps=1e-8, fused=True,
                                    capturable=graph)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

    def load(self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> None:
        """Start a chunk: its images and targets, a fresh optimiser state, step 0, and the whole stage's
        augmentation draws from ``generator`` (written into the table in place)."""
        if targets.shape != self.targets.shape:
            raise ValueError(f"targets: shape {tuple(targets.shape)}, expected {tuple(self.targets.shape)}")
        with torch.no_grad():
            self.x.copy_(x)
            self.targets.copy_(targets)
            self.step.zero_()
            self.lr.fill_(self.lr_table[0])
        for state in self.opt.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
        b, _, h, w = self.x.shape
        draws = self.augment.sample_params(b, h, w, generator, self.device, steps=self.iterations)
        if self.draws is None:
            self.draws = draws
        else:
            self.draws.copy_(draws)

    def _body(self) -> None:
        with torch.no_grad():
            self.lr.copy_(self.lr_table.index_select(0, self.step.view(1)).view(()))
        total, parts = self.loss_fn(self.x, self.targets, self.draws.at(self.step), self.step)
        total.backward()
        self.opt.step()
        with torch.no_grad():
            self.x.clamp_(0, 1)
            self.losses.copy_(parts)
            self.step += 1

    def _eager(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._body()

    def _capture(self) -> None:
        """Record the step into a CUDA graph (nothing runs while recording) and replay it once."""
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)  # the graph allocates the gradient in its own pool
        with torch.cuda.graph(graph, pool=self.pool):
            self._body()
        self.graph = graph
        graph.replay()

    def run(self) -> None:
        """One optimisation step."""
        if self.graph is not None:
            self.graph.replay()
            return
        if not self.use_graph:
            self._eager()
            return
        if self.eager_steps < WARMUP_STEPS:
            side = torch.cuda.Stream(self.device)  # warm-up off the capture stream, as capture requires
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._eager()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.eager_steps += 1
            return
        try:
            self._capture()
        except RuntimeError as error:  # e.g. an op that syncs with the host: keep going without the graph
            log.warning("fastdiode: CUDA graph capture failed (%s); this stage runs eagerly", error)
            self.use_graph, self.graph = False, None
            self._eager()
