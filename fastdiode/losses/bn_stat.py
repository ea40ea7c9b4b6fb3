"""BN-statistics loss as a drop-in for any model (method.md §2.1).

:class:`BNStatLoss` hooks the inputs of a model's BatchNorm layers; each hook reduces its activation to the
layer's loss r_l right away (a 0-dim device tensor), so after a forward pass the loss is
L_BN = sum_l w_l * r_l with the per-layer weights in a device buffer: changing them (cosine layer decay)
is an in-place copy, never a Python slice, so a compiled step does not recompile.

On blocks that offer a ``stat_tap`` (Darknet's Conv-BN-activation blocks) the hook is a tap instead: while the
model is in eval mode with frozen BN parameters, BN, activation and statistics run as one fused op
(:func:`fastdiode.ops.bn_act_stats.bn_act_stat_loss`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastdiode.ops.bn_act_stats import bn_act_stat_loss, fused_activation
from fastdiode.ops.bn_stats import bn_stat_loss

__all__ = ["BNStatLoss", "bn_stat_loss", "cosine_layer_weights"]

LayerSelection = str | Iterable[str] | Callable[[str, nn.Module], bool]


def _select_layers(model: nn.Module, layers: LayerSelection) -> list[tuple[str, _BatchNorm]]:
    """(name, module) of the selected BatchNorm layers, in the model's registration order."""
    all_bns = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if isinstance(layers, str) and layers == "all":
        chosen = all_bns
    elif isinstance(layers, str) and layers == "backbone":
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, nn.Module):
            parts = [backbone]
        elif callable(getattr(model, "backbone_modules", None)):
            parts = model.backbone_modules()
        else:
            raise ValueError("layers='backbone': the model has neither a `backbone` submodule nor "
                             "`backbone_modules()`; pass layer names instead")
        inside = {id(m) for part in parts for m in part.modules()}
        chosen = [(n, m) for n, m in all_bns if id(m) in inside]
    elif isinstance(layers, str):
        raise ValueError(f"layers={layers!r}: expected 'all', 'backbone', a list of BatchNorm names or a predicate")
    elif callable(layers):
        chosen = [(n, m) for n, m in all_bns if layers(n, m)]
    else:
        wanted = list(layers)
        by_name = dict(all_bns)
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(f"layers: {unknown} are not BatchNorm layers of the model; valid: {list(by_name)}")
        chosen = [(n, by_name[n]) for n in wanted]
    if not chosen:
        raise ValueError(f"layers={layers!r}: selects no BatchNorm layer of {type(model).__name__}")
    for name, bn in chosen:
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"layer {name!r}: BatchNorm without running statistics (track_running_stats=False)")
    return chosen


def _tap_blocks(model: nn.Module) -> dict[int, nn.Module]:
    """id(bn) -> the block that owns ``bn`` and can fuse it: it has ``stat_tap``, ``bn`` and an ``act`` the fused op
    implements (a leaky ReLU, ReLU, identity or SiLU: :func:`fastdiode.ops.bn_act_stats.fused_activation`)."""
    return {id(m.bn): m for m in model.modules()
            if hasattr(m, "stat_tap") and getattr(m, "bn", None) is not None
            and fused_activation(getattr(m, "act", None)) is not None}


def cosine_layer_weights(step: int | torch.Tensor, total_steps: int, num_layers: int,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Cosine layer decay: 1 for the first ceil(cos(step / total * pi / 2) * L) layers, 0 for the rest.
    An int step is resolved on the host (no host-to-device copy); a tensor step stays on its device."""
    if isinstance(step, torch.Tensor):
        keep = torch.ceil(torch.cos(step.float() / total_steps * (math.pi / 2)) * num_layers)
        return (torch.arange(num_layers, device=step.device) < keep).float()
    keep = math.ceil(math.cos(step / total_steps * (math.pi / 2)) * num_layers)
    return (torch.arange(num_layers, device=device) < keep).float()


class BNStatLoss(nn.Module):
    """L_BN over the BatchNorm layers of ``model``; call it after the model's forward pass.

    Args:
        model: any module containing BatchNorm layers (their running statistics are the targets).
        layers: ``"all"``, ``"backbone"`` (the BN layers under ``model.backbone``, or in
            ``model.backbone_modules()``: Darknet-53's 52 for yolov3/-spp, see
            :meth:`fastdiode.models.Darknet.backbone_layers`), a list of layer names, or a predicate
            ``(name, module) -> bool``.
        p: norm order of ||mu - running_mean||_p and ||var - running_var||_p.
        first_bn_coef: the first selected layer's weight is ``1 + first_bn_coef``. The authors' inversion
            objective is ``a_bn * sum_l r_l + c_first * r_0`` (the first-layer term outside the ``a_bn``
            scale); ``a_bn * BNStatLoss(first_bn_coef=c_first / a_bn)()`` is that objective. The inversion
            engine keeps ``first_bn_coef=0`` and adds ``c_first * loss.first_layer_value`` itself.
        layer_weights: initial per-layer weights (default ones); change later with :meth:`set_layer_weights`.
        alpha_mean, alpha_var: weights of the mean and variance terms.
        backend: ``auto`` / ``triton`` / ``torch`` / ``reference`` (see :mod:`fastdiode.runtime.backend`).
        fuse: fuse BN + activation + statistics on blocks that offer a ``stat_tap`` (same values, one pass).

    After a call, :attr:`layer_values` holds the detached per-layer r_l and :attr:`first_layer_value` the first
    selected layer's r_0 with its graph (for a term weighted apart from the others). Use as a context manager,
    or call :meth:`remove`, to take the hooks off the model.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSelection = "all",
        p: float = 2,
        first_bn_coef: float = 0.0,
        layer_weights: torch.Tensor | Iterable[float] | None = None,
        alpha_mean: float = 1.0,
        alpha_var: float = 1.0,
        backend: str | None = None,
        fuse: bool = True,
    ):
        super().__init__()
        chosen = _select_layers(model, layers)
        self.layer_names = [n for n, _ in chosen]
        self.p, self.alpha_mean, self.alpha_var, self.backend = p, alpha_mean, alpha_var, backend
        device = chosen[0][1].running_mean.device
        n = len(chosen)
        first = torch.ones(n, device=device)
        first[0] = 1.0 + first_bn_coef
        self.register_buffer("first_layer_scale", first, persistent=False)
        self.register_buffer("layer_weights", torch.ones(n, device=device), persistent=False)
        if layer_weights is not None:
            self.set_layer_weights(layer_weights)
        self._values: list[torch.Tensor | None] = [None] * n
        self.layer_values: torch.Tensor | None = None
        self.first_layer_value: torch.Tensor | None = None
        self._handles = []
        self._tapped: list[nn.Module] = []
        blocks = _tap_blocks(model) if fuse else {}
        for i, (_, bn) in enumerate(chosen):
            block = blocks.get(id(bn))
            if block is not None and block.stat_tap is None:  # a block tapped by another loss gets a hook
                block.stat_tap = self._make_tap(i, bn)
                self._tapped.append(block)
            else:
                self._handles.append(bn.register_forward_pre_hook(self._make_hook(i, bn)))

    def _make_hook(self, index: int, bn: _BatchNorm):
        def hook(module: nn.Module, args: tuple) -> None:
            self._values[index] = bn_stat_loss(
                args[0], bn.running_mean, bn.running_var, self.p, self.alpha_mean, self.alpha_var, self.backend
            )

        return hook

    def _make_tap(self, index: int, bn: _BatchNorm):
        hook = self._make_hook(index, bn)

        def tap(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
            frozen = not any(t is not None and t.requires_grad for t in (bn.weight, bn.bias))
            watched = bn._forward_pre_hooks or bn._forward_hooks  # other hooks (another loss) must see bn run
            if bn.training or not frozen or watched:
                hook(bn, (x,))
                return block.act(bn(x))
            activation, slope = fused_activation(block.act)
            y, self._values[index] = bn_act_stat_loss(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps, slope, self.p,
                self.alpha_mean, self.alpha_var, self.backend, activation
            )
            return y

        return tap

    def set_layer_weights(self, weights: torch.Tensor | Iterable[float]) -> None:
        """Copy new per-layer weights into the device buffer (no reallocation, no recompile)."""
        w = torch.as_tensor(weights if isinstance(weights, torch.Tensor) else list(weights), dtype=torch.float32)
        if w.shape != self.layer_weights.shape:
            raise ValueError(
                f"layer_weights: expected {self.layer_weights.numel()} weights (one per selected BN layer), "
                f"got shape {tuple(w.shape)}"
            )
        self.layer_weights.copy_(w, non_blocking=True)

    def forward(self) -> torch.Tensor:
        """L_BN of the last forward pass (0-dim fp32); per-layer r_l are left in :attr:`layer_values`."""
        missing = [self.layer_names[i] for i, v in enumerate(self._values) if v is None]
        if missing:
            raise RuntimeError(
                f"BNStatLoss: layers {missing[:5]}{'...' if len(missing) > 5 else ''} have not run since the "
                "last call; run the model's forward pass before calling the loss"
            )
        values = torch.stack(self._values)
        self._values = [None] * len(self._values)
        self.layer_values = values.detach()
        self.first_layer_value = values[0]
        weights = (self.layer_weights * self.first_layer_scale).to(values.device)
        return (values * weights).sum()

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self._handles:
            h.remove()
        for block in self._tapped:
            block.stat_tap = None
        self._handles, self._tapped = [], []
        self._values = [None] * len(self._values)

    def __enter__(self) -> BNStatLoss:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
