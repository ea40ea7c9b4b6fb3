"""The DIODE engine: optimise a batch of images from noise so that a frozen teacher detects the targets and
its BatchNorm statistics match (method.md §2, §5).

The objective (teacher forward, BN statistics, priors, augmentation, per-stage weights) is one object,
:class:`fastdiode.inversion.objective.InversionObjective`; one stage's optimisation step over static buffers
(on CUDA one captured graph per stage) is :class:`fastdiode.inversion.step.StageStep`. The inverter keeps the
rest: per stage, the images are resized in memory and re-batched into the stage's chunk size (each chunk with a
fresh optimiser state and its own generator), the targets are carried, Y_fp adds the teacher's confident
detections as targets, and losses are read, and checked for NaN/Inf, every ``job.log_every`` steps.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from fastdiode.inversion.config import InversionConfig
from fastdiode.inversion.objective import LOSS_NAMES, InversionObjective
from fastdiode.inversion.step import StageStep
from fastdiode.inversion.targets import check_classes, sample_false_positives
from fastdiode.models.detector import Detector
from fastdiode.runtime.device import precision_name
from fastdiode.runtime.schedule import derive_seed

log = logging.getLogger("fastdiode")


@dataclass
class InversionResult:
    """Optimised images (B, 3, H, W) in [0, 1] at the last stage's resolution and their final targets."""

    images: torch.Tensor
    targets: torch.Tensor
    stage_losses: list[dict] = field(default_factory=list)  # per stage, the mean over chunks of the last read
    history: list[dict] = field(default_factory=list)  # every read: stage, chunk, step and the losses
    failed: str | None = None  # why the batch failed (a non-finite loss), or None
    seconds: list[float] = field(default_factory=list)  # wall time per stage


@dataclass(frozen=True)
class Execution:
    """How the inversion runs, as its summary records it (the key ``execution``)."""

    precision: str  # fp32 or bf16 autocast
    teacher_forward: str  # compiled or eager
    step: str  # one CUDA graph per stage, or eager

    def as_dict(self) -> dict:
        return asdict(self)


class DiodeInverter:
    """Turns targets + a seed into images the frozen ``teacher`` detects, following ``config``."""

    def __init__(self, teacher: Detector, config: InversionConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device = config, torch.device(device)
        self.objective = InversionObjective(teacher, config, self.device)
        self.teacher = self.objective.teacher
        cuda = self.device.type == "cuda"
        self.use_graph = cuda if config.job.cuda_graph is None else config.job.cuda_graph
        if self.use_graph and not cuda:
            raise ValueError(f"job.cuda_graph=true needs a CUDA device, but the inversion runs on {self.device}")
        self._pool = torch.cuda.graph_pool_handle() if self.use_graph else None
        self._steps: dict[tuple[int, int, int], StageStep] = {}
        self.execution = Execution(precision_name(self.objective.autocast_dtype),
                                   "compiled" if self.objective.compiled_forward else "eager",
                                   "one CUDA graph per stage" if self.use_graph else "eager")
        log.info("fastdiode: inversion on %s: %s", self.device,
                 ", ".join(f"{k} {v}" for k, v in self.execution.as_dict().items()))

    @property
    def step_shapes(self) -> list[tuple[int, int, int]]:
        """The (stage, chunk size, target capacity) shapes whose step buffers (and, on CUDA, graphs) this
        inverter holds, in the order they were made: one per shape, reused by every chunk and batch."""
        return list(self._steps)

    @property
    def captured_shapes(self) -> list[tuple[int, int, int]]:
        """The step shapes whose step replays a captured CUDA graph (a failed capture falls back to eager)."""
        return [key for key, step in self._steps.items() if step.graph is not None]

    def close(self) -> None:
        """Take the BN hooks off the teacher."""
        self.objective.close()

    def _stage_step(self, stage: int, batch: int, capacity: int) -> StageStep:
        """The step buffers (and, on CUDA, the captured graph) for this stage and chunk shape, made once."""
        key = (stage, batch, capacity)
        if key not in self._steps:
            # After a failed capture torch's graph pool stays in recording mode, so later captures fail too.
            graph = self.use_graph and all(step.use_graph for step in self._steps.values())
            self._steps[key] = StageStep(self.objective.stage(stage), self.cfg.stage(stage), batch, capacity,
                                         self.device, graph, self._pool)
        return self._steps[key]

    def _optimize(self, x: torch.Tensor, targets: torch.Tensor, stage: int, seed: int, step0: int,
                  result: InversionResult, chunk: int, progress) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one stage on one chunk; returns the optimised images and the (possibly grown) targets."""
        cfg = self.cfg
        iters = cfg.stages.iterations[stage]
        step = self._stage_step(stage, x.shape[0], targets.shape[1])
        step.load(x, targets, torch.Generator(device=self.device).manual_seed(seed))
        fp = cfg.fp
        for t in range(iters):
            step.run()
            if progress is not None:
                progress(stage)
            n = step0 + t + 1  # global iterations done
            last = t == iters - 1 or fp.exits_after(n)
            if (t + 1) % cfg.job.log_every == 0 or last:
                values = step.read_losses()
                result.history.append({"stage": stage, "chunk": chunk, "step": t + 1, "last": last, **values})
                if not all(math.isfinite(v) for v in values.values()):
                    result.failed = f"non-finite loss at stage {stage}, chunk {chunk}, step {t + 1}: {values}"
                    break
            if fp.samples_after(n):
                step.replace_targets(sample_false_positives(self.teacher, step.images, step.targets, fp,
                                                            self.objective.autocast_dtype))
            if last:
                break
        return step.images.clone(), step.targets.clone()

    def invert(self, targets: torch.Tensor, seed: int, init: torch.Tensor | None = None,
               progress=None) -> InversionResult:
        """Optimise ``len(targets)`` images through every stage. ``init`` (B, 3, H, W) in [0, 1] replaces the
        default initialisation clamp(randn, 0, 1); ``progress(stage)`` is called after every step. The result
        is a function of (config, seed) on a given device and backend."""
        st = self.cfg.stages
        b = targets.shape[0]
        check_classes(targets, self.teacher.num_classes, "targets")
        targets = targets.to(self.device).float()
        if init is None:
            gen = torch.Generator(device=self.device).manual_seed(derive_seed(seed, -1))
            size = st.resolution[0]
            x = torch.randn(b, 3, size, size, generator=gen, device=self.device).clamp_(0, 1)
        else:
            x = init.to(self.device).float()
        result = InversionResult(x, targets)
        step0 = 0
        for stage, size in enumerate(st.resolution):
            start = time.perf_counter()
            if x.shape[-1] != size or x.shape[-2] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
            chunks_x, chunks_t = [], []
            for chunk, lo in enumerate(range(0, b, st.batch_size[stage])):
                hi = min(lo + st.batch_size[stage], b)
                xs, ts = self._optimize(x[lo:hi], targets[lo:hi], stage, derive_seed(seed, stage, chunk), step0,
                                        result, chunk, progress)
                chunks_x.append(xs)
                chunks_t.append(ts)
                if result.failed:
                    break
            if result.failed:
                break
            x, targets = torch.cat(chunks_x), torch.cat(chunks_t)
            step0 += st.iterations[stage]
            last = [h for h in result.history if h["stage"] == stage and h["last"]]
            result.stage_losses.append({k: sum(h[k] for h in last) / len(last) for k in LOSS_NAMES})
            result.seconds.append(time.perf_counter() - start)
        result.images, result.targets = x.contiguous(), targets
        return result
