"""The trainer's distillation terms that are on, built together: their feature points resolved on both models,
one probe forward pass for the terms that read the teacher, the taps that feed them at every step."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fastdiode.distill.terms import TERMS, TermBatch, TermConfig, TermSources
from fastdiode.models.taps import FeatureTaps, resolve_points


def _resolve(model: nn.Module, spec, term: str, who: str) -> list[str]:
    try:
        return resolve_points(model, spec)
    except ValueError as e:
        raise ValueError(f"loss.{term}: the {who}: {e}") from None


class DistillTerms(nn.Module):
    """The terms of ``configs`` (name -> config, those with a weight) for ``student`` and, when a term reads
    them, ``teacher`` and ``classifier``, built from one probe forward at ``size`` px. :meth:`attach` puts the
    feature taps on both models (they stay until :meth:`detach`); after both forward passes,
    ``terms(images, targets, student_preds, teacher_preds)`` returns the unweighted values in :attr:`names` order.
    The adapters are submodules (trained with the student, saved apart from it)."""

    def __init__(self, configs: dict[str, TermConfig], student: nn.Module, teacher: nn.Module | None,
                 classifier: nn.Module | None, class_names: list[str] | None, size: int, device: torch.device,
                 backend: str | None = None):
        super().__init__()
        self.configs, self.names = configs, list(configs)
        classes = {name: TERMS[name] for name in self.names}
        self.needs_teacher = any(c.reads_teacher for c in classes.values())
        self.points: dict[str, tuple[list[str], list[str]]] = {}
        for name, cls in classes.items():
            spec = cls.points(configs[name])
            if spec is not None:
                self.points[name] = (_resolve(student, spec, name, "student"), _resolve(teacher, spec, name, "teacher"))
        self._taps: tuple[FeatureTaps, FeatureTaps] | None = None
        classifier = classifier.to(device) if classifier is not None else None
        base = TermSources(student, teacher, classifier, class_names, size, device, backend)
        features: tuple[dict, dict] = ({}, {})
        if self.needs_teacher:
            base, features = self._probe(base)
        self.terms = nn.ModuleDict({name: cls(configs[name], self._sources_of(name, base, features))
                                    for name, cls in classes.items()})
        self.to(device)

    def _probe(self, base: TermSources) -> tuple[TermSources, tuple[dict, dict]]:
        """``base`` with both models' head maps on a batch of zeros, and their tapped features by module name."""
        self.attach(base.student, base.teacher)
        probe = torch.zeros(2, 3, base.size, base.size, device=base.device)
        was = base.student.training
        with torch.no_grad():
            s_preds, t_preds = base.student.eval()(probe), base.teacher(probe)
        base.student.train(was)
        features = self._features()
        self.detach()
        return dataclasses.replace(base, student_preds=s_preds, teacher_preds=t_preds), features

    def _sources_of(self, name: str, base: TermSources, features: tuple[dict, dict]) -> TermSources:
        """``base`` with the probe features at ``name``'s points."""
        if name not in self.points:
            return base
        student, teacher = self.points[name]
        return dataclasses.replace(base, student_features=[features[0][n] for n in student],
                                   teacher_features=[features[1][n] for n in teacher], teacher_points=teacher)

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Tap every point the terms read, on both models."""
        self.detach()
        if self.points:
            names = [list(dict.fromkeys(n for pair in self.points.values() for n in pair[side])) for side in (0, 1)]
            self._taps = (FeatureTaps(student, names[0]), FeatureTaps(teacher, names[1]))

    def detach(self) -> None:
        if self._taps is not None:
            for taps in self._taps:
                taps.remove()
        self._taps = None

    def _features(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The last forward passes' tapped features of the student and of the teacher, by module name."""
        if self._taps is None:
            return {}, {}
        return tuple(dict(zip(taps.names, taps.features)) for taps in self._taps)

    def forward(self, images: torch.Tensor, targets: torch.Tensor, student_preds: list[torch.Tensor],
                teacher_preds: list[torch.Tensor] | None) -> torch.Tensor:
        student, teacher = self._features()
        values = []
        for name, term in self.terms.items():
            s_names, t_names = self.points.get(name, ((), ()))
            batch = TermBatch(images, targets, student_preds, teacher_preds, [student[n] for n in s_names],
                              [teacher[n] for n in t_names])
            values.append(term(batch).float())
        return torch.stack(values)

    def weights(self, step: int) -> list[float]:
        """Each term's weight at ``step`` (ramped over its warmup)."""
        return [self.configs[name].weight_at(step) for name in self.names]
