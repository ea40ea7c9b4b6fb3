"""The DIODE engine: optimise a batch of images from noise so that a frozen teacher detects the targets and
its BatchNorm statistics match (method.md §2, §5).

Per step: augmentation (boxes move with the image) -> teacher forward -> m * yolo_loss + a_bn * L_BN +
TV + a_l2 * ||x|| -> Adam -> clamp to [0, 1]. Per stage: the images are resized in memory, re-batched into
the stage's batch size (each chunk with its own optimiser and generator) and the targets are carried.
Nothing in a step reads the device from the host; losses are read, and checked for NaN/Inf, every
``job.log_every`` steps.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fastdiode.augment import DiodeAugment
from fastdiode.inversion.config import InversionConfig
from fastdiode.inversion.targets import sample_false_positives
from fastdiode.losses import BNStatLoss, cosine_layer_weights, image_norm_prior, tv_prior, yolo_loss
from fastdiode.models.darknet import Darknet
from fastdiode.runtime.schedule import derive_seed, lr_at

log = logging.getLogger("fastdiode")
LOSS_NAMES = ("total", "det", "bn", "tv_l1", "tv_l2", "l2")


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

    def __init__(self, teacher: Darknet, config: InversionConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device = config, torch.device(device)
        cuda = self.device.type == "cuda"
        # channels_last is the fastest layout on both CPU and GPU (benchmarks/results/models_cpu.md)
        self.teacher = teacher.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        precision = config.job.precision
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" or (precision == "auto" and cuda) else None
        self.bn_loss = BNStatLoss(self.teacher, layers=config.loss.bn_layers, p=config.loss.bn_p,
                                  backend=config.job.backend)
        self.num_bn = len(self.bn_loss.layer_names)
        # On CPU the compiled detector is slower than eager (benchmarks/results/models_cpu.md): auto = CUDA only.
        use_compile = cuda if config.job.compile is None else config.job.compile
        self.forward = torch.compile(self.teacher) if use_compile else self.teacher
        log.info("fastdiode: inversion on %s, %s, teacher %s", self.device,
                 "bf16 autocast" if self.autocast_dtype else "fp32", "compiled" if use_compile else "eager")

    def close(self) -> None:
        """Take the BN hooks off the teacher."""
        self.bn_loss.remove()

    def _losses(self, x: torch.Tensor, targets: torch.Tensor, aug: DiodeAugment, gen: torch.Generator):
        cfg = self.cfg.loss
        x_aug, t_aug = aug(x, targets, generator=gen)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            preds = self.forward(x_aug)
        det, _ = yolo_loss(preds, t_aug, self.teacher)
        bn = self.bn_loss()
        tv_l1, tv_l2 = tv_prior(x_aug, backend=self.cfg.job.backend)
        l2 = image_norm_prior(x)
        total = cfg.det * det + cfg.bn * bn + cfg.tv_l1 * tv_l1 + cfg.tv_l2 * tv_l2 + cfg.l2 * l2
        return total, torch.stack([total, det, bn, tv_l1, tv_l2, l2]).detach()

    def _optimize(self, x: torch.Tensor, targets: torch.Tensor, stage: int, seed: int, step0: int,
                  result: InversionResult, chunk: int, progress) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one stage on one chunk; returns the optimised images and the (possibly grown) targets."""
        cfg, st = self.cfg, self.cfg.stages
        iters = st.iterations[stage]
        gen = torch.Generator(device=self.device).manual_seed(seed)
        aug = DiodeAugment(jitter=cfg.augment.jitter[stage], flip_p=cfg.augment.flip_p,
                           brightness=cfg.augment.brightness, contrast=cfg.augment.contrast,
                           erase_p=cfg.augment.erase_p, same_on_batch=cfg.augment.same_on_batch,
                           backend=cfg.job.backend)
        x = x.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=st.lr[stage], betas=tuple(st.betas[stage]), eps=1e-8)
        self.bn_loss.first_layer_scale[0] = 1.0 + cfg.loss.first_bn_coef[stage]
        self.bn_loss.set_layer_weights(torch.ones(self.num_bn))
        for t in range(iters):
            for group in opt.param_groups:
                group["lr"] = lr_at(t, iters, st.lr[stage], st.lr_min[stage], st.warmup[stage])
            if cfg.loss.cosine_layer_decay:
                self.bn_loss.set_layer_weights(cosine_layer_weights(t, iters, self.num_bn, self.device))
            total, parts = self._losses(x, targets, aug, gen)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            if progress is not None:
                progress(stage)
            step = step0 + t
            if (t + 1) % cfg.job.log_every == 0 or t == iters - 1:
                values = dict(zip(LOSS_NAMES, parts.tolist()))
                result.history.append({"stage": stage, "chunk": chunk, "step": t + 1, **values})
                if not all(math.isfinite(v) for v in values.values()):
                    result.failed = f"non-finite loss at stage {stage}, chunk {chunk}, step {t + 1}: {values}"
                    return x.detach(), targets
            fp = cfg.fp
            if fp.enabled and fp.warmup <= step < fp.stop and (step - fp.warmup) % fp.every == 0:
                targets = sample_false_positives(self.teacher, x.detach(), targets, fp.conf, fp.iou, fp.min_area,
                                                 fp.max_area, fp.nms_iou, self.autocast_dtype)
        return x.detach(), targets

    def invert(self, targets: torch.Tensor, seed: int, init: torch.Tensor | None = None,
               progress=None) -> InversionResult:
        """Optimise ``len(targets)`` images through every stage. ``init`` (B, 3, H, W) in [0, 1] replaces the
        default initialisation clamp(randn, 0, 1); ``progress(stage)`` is called after every step. The result
        is a function of (config, seed) on a given device and backend."""
        st = self.cfg.stages
        b = targets.shape[0]
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
            last = [h for h in result.history if h["stage"] == stage and h["step"] == st.iterations[stage]]
            result.stage_losses.append({k: sum(h[k] for h in last) / len(last) for k in LOSS_NAMES})
            result.seconds.append(time.perf_counter() - start)
        result.images, result.targets = x.contiguous(), targets
        return result
