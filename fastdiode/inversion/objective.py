"""The DIODE inversion objective (method.md §2) as one object: the frozen teacher's forward, its BN-statistics loss,
the image priors, the augmentation and the per-stage weights.

    L = m·L_det + α_BN·Σ_l w_l r_l + c_first·r_0 + α_TV1·TV_L1 + α_TV2·TV_L2 + α_l2·‖x‖

on the augmented images (boxes move with them), with the first hooked layer's extra term c_first·r_0 outside the
α_BN scale, as in the authors' code; m, c_first and the number of BN layers in L_BN are per stage, as in their
scripts. It reads the teacher only through the detector seam (``model(x)``, ``task_loss``, its BatchNorm layers),
so any :class:`fastdiode.models.detector.Detector` inverts through it. The stage step
(:mod:`fastdiode.inversion.step`) holds one stage of it: it asks it for the stage's augmentation draws once per
chunk and for the loss at every step, and the host passes nothing in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdiode.augment import AugmentParams, DiodeAugment
from fastdiode.inversion.config import InversionConfig
from fastdiode.losses import BNStatLoss, TVPrior, cosine_layer_weights, image_norm_prior
from fastdiode.models.detector import Detector
from fastdiode.runtime.backend import compiled
from fastdiode.runtime.device import autocast_dtype, compile_enabled

LOSS_NAMES = ("total", "det", "bn", "bn_first", "tv_l1", "tv_l2", "l2")


class InversionObjective:
    """The objective of ``config`` over ``teacher`` (made frozen, eval-mode, channels_last on ``device``).
    ``close()`` takes its BN hooks off the teacher."""

    names = LOSS_NAMES

    def __init__(self, teacher: Detector, config: InversionConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device = config, torch.device(device)
        # channels_last is the fastest layout on both CPU and GPU (benchmarks/results/models_cpu.md)
        self.teacher = teacher.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        loss, backend = config.loss, config.run.backend
        self.autocast_dtype = autocast_dtype(config.run.precision, self.device)
        self.bn_loss = BNStatLoss(self.teacher, layers=loss.bn_layers, p=loss.bn_p, backend=backend)
        self.num_bn = len(self.bn_loss.layer_names)
        self.tv = TVPrior(loss.tv_l1, loss.tv_l2, backend)
        self.compiled_forward = compile_enabled(config.run.compile, self.device)
        self.forward = torch.compile(self.teacher) if self.compiled_forward else self.teacher
        # The YOLO loss is hundreds of small ops on small tensors: inductor fuses them (6.1 -> 1.6 ms forward +
        # backward on CPU for yolov3-tiny 128 px x 16); compiled once per stage shape.
        self.task_loss = compiled(self.teacher.task_loss, dynamic=False)
        aug = config.augment
        self.augment = [DiodeAugment(jitter=j, flip_p=aug.flip_p, brightness=aug.brightness, contrast=aug.contrast,
                                     erase_p=aug.erase_p, same_on_batch=aug.same_on_batch, backend=backend,
                                     box_drop=aug.box_drop)
                        for j in aug.jitter]

    def stage(self, index: int) -> StageObjective:
        return StageObjective(self, index)

    def layer_weights(self, stage: int, step: torch.Tensor | int = 0) -> torch.Tensor:
        """Per-layer weights of L_BN at ``stage``: the stage's first n layers (cosine-decayed when asked)."""
        n = self.cfg.bn_num_layers(stage, self.num_bn)
        if self.cfg.loss.cosine_layer_decay:
            head = cosine_layer_weights(step, self.cfg.stages.iterations[stage], n, self.device)
        else:
            head = torch.ones(n, device=self.device)
        return torch.cat([head, head.new_zeros(self.num_bn - n)])

    def __call__(self, x: torch.Tensor, targets: torch.Tensor, draw: AugmentParams, step: torch.Tensor,
                 stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, detached values in :attr:`names` order) of images ``x`` (B, 3, H, W) with padded targets
        (B, K, 5) under augmentation ``draw``, at device step ``step`` of ``stage``."""
        cfg = self.cfg.loss
        if cfg.cosine_layer_decay:
            self.bn_loss.layer_weights.copy_(self.layer_weights(stage, step))
        x_aug, t_aug = self.augment[stage](x, targets, params=draw)
        # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA graph capture
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            preds = self.forward(x_aug)
        det, _ = self.task_loss(preds, t_aug)
        bn = self.bn_loss()
        first = self.bn_loss.first_layer_value
        tv = self.tv(x_aug)
        l2 = image_norm_prior(x)
        total = (self.cfg.det_weight(stage) * det + cfg.bn * bn + cfg.first_bn_coef[stage] * first + tv
                 + cfg.l2 * l2)
        return total, torch.cat([torch.stack([total, det, bn, first]), self.tv.values, l2[None]]).detach()

    def close(self) -> None:
        """Take the BN hooks off the teacher."""
        self.bn_loss.remove()


@dataclass(frozen=True)
class StageObjective:
    """One stage of an :class:`InversionObjective`: what a stage step holds."""

    objective: InversionObjective
    index: int

    @property
    def names(self) -> tuple[str, ...]:
        return self.objective.names

    def begin(self) -> None:
        """Set the stage's BN layer weights (before a chunk's first step)."""
        self.objective.bn_loss.set_layer_weights(self.objective.layer_weights(self.index))

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator, steps: int) -> AugmentParams:
        """Every step's augmentation draw for a chunk, from ``generator`` (one table, on the device)."""
        return self.objective.augment[self.index].sample_params(batch, height, width, generator,
                                                                self.objective.device, steps=steps)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor, draw: AugmentParams,
                 step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.objective(x, targets, draw, step, self.index)
