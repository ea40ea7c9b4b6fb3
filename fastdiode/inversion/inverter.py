"""The DIODE engine: optimise a batch of images from noise so that a frozen teacher detects the targets and
its BatchNorm statistics match (method.md §2, §5).

Per step: augmentation (boxes move with the image) -> teacher forward -> m * task loss + a_bn * L_BN +
c_first * r_0 + TV + a_l2 * ||x|| -> Adam -> clamp to [0, 1]. The first hooked layer's extra term c_first * r_0
sits outside the a_bn scale, as in the authors' code; m, c_first and the number of BN layers in L_BN are per
stage, as in their scripts. Per stage: the images are resized in memory, re-batched into
the stage's batch size (each chunk with a fresh optimiser state and its own generator) and the targets are
carried. The step itself lives in :mod:`.step`: static buffers, every step's augmentation drawn up front,
and on CUDA one captured graph per stage. Nothing in a step reads the device from the host; losses are
read, and checked for NaN/Inf, every ``job.log_every`` steps.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fastdiode.augment import DiodeAugment
from fastdiode.inversion.config import InversionConfig
from fastdiode.inversion.step import StageStep
from fastdiode.inversion.targets import check_classes, sample_false_positives
from fastdiode.losses import BNStatLoss, cosine_layer_weights, image_norm_prior, tv_prior
from fastdiode.models.detector import Detector
from fastdiode.runtime.backend import compiled
from fastdiode.runtime.device import autocast_dtype, compile_enabled, precision_name
from fastdiode.runtime.schedule import derive_seed

log = logging.getLogger("fastdiode")
LOSS_NAMES = ("total", "det", "bn", "bn_first", "tv_l1", "tv_l2", "l2")


@dataclass
class InversionResult:
    """Optimised images (B, 3, H, W) in [0, 1] at the last stage's resolution and their final targets."""

    images: torch.Tensor
    targets: torch.Tensor
    stage_losses: list[dict] = field(default_factory=list)  # per stage, the mean over chunks of the last read
    history: list[dict] = field(default_factory=list)  # every read: stage, chunk, step and the losses
    failed: str | None = None  # why the batch failed (a non-finite loss), or None
    seconds: list[float] = field(default_factory=list)  # wall time per stage


class DiodeInverter:
    """Turns targets + a seed into images the frozen ``teacher`` detects, following ``config``."""

    def __init__(self, teacher: Detector, config: InversionConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device = config, torch.device(device)
        cuda = self.device.type == "cuda"
        # channels_last is the fastest layout on both CPU and GPU (benchmarks/results/models_cpu.md)
        self.teacher = teacher.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        self.backend = config.run.backend
        self.autocast_dtype = autocast_dtype(config.run.precision, self.device)
        self.bn_loss = BNStatLoss(self.teacher, layers=config.loss.bn_layers, p=config.loss.bn_p,
                                  backend=self.backend)
        self.num_bn = len(self.bn_loss.layer_names)
        use_compile = compile_enabled(config.run.compile, self.device)
        self.forward = torch.compile(self.teacher) if use_compile else self.teacher
        # The YOLO loss is hundreds of small ops on small tensors: inductor fuses them (6.1 -> 1.6 ms forward +
        # backward on CPU for yolov3-tiny 128 px x 16); compiled once per stage shape.
        self.task_loss = compiled(self.teacher.task_loss, dynamic=False)
        aug = config.augment
        self.augment = [DiodeAugment(jitter=j, flip_p=aug.flip_p, brightness=aug.brightness, contrast=aug.contrast,
                                     erase_p=aug.erase_p, same_on_batch=aug.same_on_batch, backend=self.backend,
                                     box_drop=aug.box_drop)
                        for j in aug.jitter]
        self.use_graph = cuda if config.job.cuda_graph is None else config.job.cuda_graph
        if self.use_graph and not cuda:
            raise ValueError(f"job.cuda_graph=true needs a CUDA device, but the inversion runs on {self.device}")
        self._pool = torch.cuda.graph_pool_handle() if self.use_graph else None
        self._steps: dict[tuple[int, int, int], StageStep] = {}
        self.execution = {"precision": precision_name(self.autocast_dtype),
                          "teacher_forward": "compiled" if use_compile else "eager",
                          "step": "one CUDA graph per stage" if self.use_graph else "eager"}
        log.info("fastdiode: inversion on %s: %s", self.device,
                 ", ".join(f"{k} {v}" for k, v in self.execution.items()))

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
        self.bn_loss.remove()

    def _bn_weights(self, stage: int, step: torch.Tensor | int = 0) -> torch.Tensor:
        """Per-layer weights of L_BN at ``stage``: the stage's first n layers (cosine-decayed when asked)."""
        n = self.cfg.bn_num_layers(stage, self.num_bn)
        if self.cfg.loss.cosine_layer_decay:
            head = cosine_layer_weights(step, self.cfg.stages.iterations[stage], n, self.device)
        else:
            head = torch.ones(n, device=self.device)
        return torch.cat([head, head.new_zeros(self.num_bn - n)])

    def _losses(self, x: torch.Tensor, targets: torch.Tensor, params, step: torch.Tensor, stage: int):
        cfg = self.cfg.loss
        if cfg.cosine_layer_decay:
            self.bn_loss.layer_weights.copy_(self._bn_weights(stage, step))
        x_aug, t_aug = self.augment[stage](x, targets, params=params)
        # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA graph capture
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            preds = self.forward(x_aug)
        det, _ = self.task_loss(preds, t_aug)
        bn = self.bn_loss()
        first = self.bn_loss.first_layer_value
        tv_l1, tv_l2 = tv_prior(x_aug, backend=self.backend)
        l2 = image_norm_prior(x)
        total = (self.cfg.det_weight(stage) * det + cfg.bn * bn + cfg.first_bn_coef[stage] * first
                 + cfg.tv_l1 * tv_l1 + cfg.tv_l2 * tv_l2 + cfg.l2 * l2)
        return total, torch.stack([total, det, bn, first, tv_l1, tv_l2, l2]).detach()

    def _stage_step(self, stage: int, batch: int, capacity: int) -> StageStep:
        """The step buffers (and, on CUDA, the captured graph) for this stage and chunk shape, made once."""
        key = (stage, batch, capacity)
        if key not in self._steps:
            st = self.cfg.stages
            self._steps[key] = StageStep(
                functools.partial(self._losses, stage=stage), self.augment[stage], batch, st.resolution[stage],
                capacity, st.iterations[stage], (st.lr[stage], st.lr_min[stage], st.warmup[stage]),
                tuple(st.betas[stage]), len(LOSS_NAMES), self.device, self.use_graph, self._pool)
        return self._steps[key]

    def _optimize(self, x: torch.Tensor, targets: torch.Tensor, stage: int, seed: int, step0: int,
                  result: InversionResult, chunk: int, progress) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one stage on one chunk; returns the optimised images and the (possibly grown) targets."""
        cfg = self.cfg
        iters = cfg.stages.iterations[stage]
        step = self._stage_step(stage, x.shape[0], targets.shape[1])
        step.load(x, targets, torch.Generator(device=self.device).manual_seed(seed))
        self.bn_loss.set_layer_weights(self._bn_weights(stage))
        fp = cfg.fp
        for t in range(iters):
            step.run()
            if progress is not None:
                progress(stage)
            n = step0 + t + 1  # global iterations done
            last = t == iters - 1 or fp.exits_after(n)
            if (t + 1) % cfg.job.log_every == 0 or last:
                values = dict(zip(LOSS_NAMES, step.losses.tolist()))
                result.history.append({"stage": stage, "chunk": chunk, "step": t + 1, "last": last, **values})
                if not all(math.isfinite(v) for v in values.values()):
                    result.failed = f"non-finite loss at stage {stage}, chunk {chunk}, step {t + 1}: {values}"
                    break
            if fp.samples_after(n):
                step.targets.copy_(sample_false_positives(
                    self.teacher, step.x.detach(), step.targets, fp.conf, fp.iou, fp.min_area, fp.max_area,
                    fp.nms_iou, self.autocast_dtype, fp.multi_label, fp.clip, fp.min_side))
            if last:
                break
        return step.x.detach().clone(), step.targets.clone()

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
