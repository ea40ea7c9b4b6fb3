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

import torch

from fastdiode.augment import AugmentParams
from fastdiode.inversion.config import StageSpec
from fastdiode.inversion.objective import StageObjective
from fastdiode.runtime.schedule import lr_at

log = logging.getLogger("fastdiode")
WARMUP_STEPS = 3  # eager steps before capture (compiles the step and allocates the optimiser state)


class StageStep:
    """The step of one stage (``spec``) of ``objective`` for chunks of ``batch`` images with ``capacity`` target
    rows. ``graph``: capture into a CUDA graph (CUDA only); ``pool`` is a shared CUDA graph memory pool (stages
    replay in capture order, so their graphs can share one)."""

    def __init__(self, objective: StageObjective, spec: StageSpec, batch: int, capacity: int, device: torch.device,
                 graph: bool = False, pool=None):
        self.objective, self.iterations = objective, spec.iterations
        self.device, self.use_graph, self.pool = device, graph, pool
        # NCHW: the augmentation and the TV prior read a 3-channel image 3x faster in it than in channels_last,
        # and the first conv (channels_last weights) takes either.
        self.x = torch.zeros(batch, 3, spec.resolution, spec.resolution, device=device)
        self.x.requires_grad_(True)
        self.targets = torch.zeros(batch, capacity, 5, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.lr_table = torch.tensor([lr_at(t, spec.iterations, spec.lr, spec.lr_min, spec.warmup)
                                      for t in range(spec.iterations)], device=device)
        self.lr = self.lr_table[0].clone()
        self.losses = torch.zeros(len(objective.names), device=device)
        self.draws: AugmentParams | None = None
        # Fused Adam takes a tensor lr; capturable keeps its step count on the device for the graph.
        self.opt = torch.optim.Adam([self.x], lr=self.lr, betas=spec.betas, eps=1e-8, fused=True, capturable=graph)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        # Warm-up and capture share one side stream: autograd remembers the stream on which the image's
        # gradient accumulator was made, and a capture on another stream would have to wait on it (which
        # invalidates the capture).
        self.stream = torch.cuda.Stream(device) if graph and device.type == "cuda" else None

    def load(self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> None:
        """Start a chunk: its images and targets, a fresh optimiser state, step 0, the stage's BN layer weights
        and the whole stage's augmentation draws from ``generator`` (written into the table in place)."""
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
        self.objective.begin()
        b, _, h, w = self.x.shape
        draws = self.objective.draw(b, h, w, generator, self.iterations)
        if self.draws is None:
            self.draws = draws
        else:
            self.draws.copy_(draws)

    @property
    def images(self) -> torch.Tensor:
        """The chunk's current images (detached; the buffer itself, not a copy)."""
        return self.x.detach()

    def replace_targets(self, targets: torch.Tensor) -> None:
        """New targets for the rest of the chunk (Y_fp), written into the buffer the step reads."""
        self.targets.copy_(targets)

    def read_losses(self) -> dict[str, float]:
        """The last step's loss values by name (a host sync: call it every few steps)."""
        return dict(zip(self.objective.names, self.losses.tolist()))

    def _body(self) -> None:
        with torch.no_grad():
            self.lr.copy_(self.lr_table.index_select(0, self.step.view(1)).view(()))
        total, parts = self.objective(self.x, self.targets, self.draws.at(self.step), self.step)
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
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
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
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # warm-up off the default stream
            with torch.cuda.stream(self.stream):
                self._eager()
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            self.eager_steps += 1
            return
        try:
            self._capture()
        except RuntimeError as error:  # e.g. an op that syncs with the host: keep going without the graph
            log.warning("fastdiode: CUDA graph capture failed (%s); this stage runs eagerly", error)
            self.use_graph, self.graph = False, None
            self._eager()
