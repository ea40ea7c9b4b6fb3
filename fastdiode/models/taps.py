"""Record intermediate features of any ``nn.Module`` by dotted name, torchdistill-style: forward hooks that keep
a reference to each output (no copy), used as a context manager and removed cleanly. Names may be a detector's
named points (``"backbone"``, ``"neck"`` from ``model.feature_points()``) or explicit module names."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fastdiode.models.fake_quant import running_convs


def resolve_points(model: nn.Module, points: str | Iterable[str]) -> list[str]:
    """Module names for ``points``: a named point of ``model.feature_points()`` (``"backbone"``, ``"neck"``), one
    of its entries (``"backbone[0]"``: the stride-8 stage output), ``"convs"`` (every conv the forward pass runs,
    in order: :func:`fastdiode.models.fake_quant.running_convs`), or a list whose items are any of these or module
    names. Unknown names are a clear error."""
    named = model.feature_points() if callable(getattr(model, "feature_points", None)) else {}
    modules = dict(model.named_modules())
    out: list[str] = []
    for item in [points] if isinstance(points, str) else list(points):
        base, _, index = item.partition("[")
        if index.endswith("]") and base in named and index[:-1].lstrip("-").isdigit() \
                and -len(named[base]) <= int(index[:-1]) < len(named[base]):
            out.append(named[base][int(index[:-1])])
        elif item in named:
            out += named[item]
        elif item == "convs":
            out += running_convs(model)
        elif item in modules and item:
            out.append(item)
        else:
            raise ValueError(f"feature point {item!r}: not a named point ({', '.join([*named, 'convs'])}) nor a module "
                             f"of {type(model).__name__} (e.g. {', '.join(list(modules)[1:4])}, ...)")
    return out


class FeatureTaps:
    """``with FeatureTaps(model, "neck") as taps: model(x); feats = taps.features`` — the outputs of the named
    modules of the last forward pass, in the order asked for. Hooks hold references, not copies, so gradients
    flow through them; under torch.compile the hooks are traced into the graph, and under DDP they sit on the
    wrapped module's submodules (pass the module, not the DDP wrapper, or prefix names with ``module.``)."""

    def __init__(self, model: nn.Module, points: str | Iterable[str]):
        self.names = resolve_points(model, points)
        modules = dict(model.named_modules())
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.names]

    def _hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            self._outputs[name] = output

        return hook

    @property
    def features(self) -> list[torch.Tensor]:
        missing = [n for n in self.names if n not in self._outputs]
        if missing:
            raise RuntimeError(f"FeatureTaps: {missing} did not run; run the model's forward pass first")
        return [self._outputs[n] for n in self.names]

    def clear(self) -> None:
        """Drop the references to the last forward's features (frees their memory)."""
        self._outputs.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
