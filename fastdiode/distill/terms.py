"""The trainer's distillation terms beyond mimic and label: KD, FitNet, FGFI and ReviewKD (from the detector
teacher), with their adapters, and DICOD's classification and localization terms (from the crop classifier).

The adapters are trained with the student (their parameters join the optimiser and ``state.pt``) and never
enter the student's checkpoint; the frozen classifier is not a submodule (neither trained nor saved). Everything
about a term is checked when the terms are built, before any step: the feature points exist in both models, the
shapes let an adapter map one onto the other, the head layouts allow KD, FGFI and DICOD have anchor-based heads,
and the classifier's classes are the detector's.
"""
from __future__ import annotations

import torch
from torch import nn

from fastdiode.distill.config import TEACHER_TERMS, DistillLossConfig
from fastdiode.losses import (FGFILoss, FitNetLoss, ReviewKDLoss, crop_logits, dense_kd_loss, dicod_cls_loss,
                              dicod_loc_loss)
from fastdiode.models.taps import FeatureTaps, resolve_points


def _points(model: nn.Module, spec, term: str, who: str) -> list[str]:
    try:
        return resolve_points(model, spec)
    except ValueError as e:
        raise ValueError(f"loss.{term}: the {who}: {e}") from None


class DistillTerms(nn.Module):
    """The terms of ``cfg`` that are on, built for ``student``, ``teacher`` (None when no term reads it) and
    ``classifier`` (DICOD's terms) from one probe forward at ``size`` px. :meth:`attach` puts feature taps on both
    models (they stay until :meth:`detach`); after both forward passes, ``terms(student_preds, teacher_preds,
    targets, images, heads)`` (``heads``: the student's YOLO heads) returns the unweighted term values in
    :attr:`names` order."""

    def __init__(self, cfg: DistillLossConfig, student: nn.Module, teacher: nn.Module | None, size: int,
                 device: torch.device, backend: str | None = None, classifier: nn.Module | None = None):
        super().__init__()
        self.cfg, self.backend = cfg, backend
        self.names = list(cfg.terms())
        self.needs_teacher = any(n in TEACHER_TERMS for n in self.names)
        # a tuple keeps the frozen classifier out of the module tree: not trained, not saved, never .train()'d
        self._classifier = (self._check_classifier(classifier, student),) if classifier is not None else ()
        self.points: dict[str, tuple[list[str], list[str]]] = {}
        self._taps: tuple[FeatureTaps, FeatureTaps] | None = None
        if self.needs_teacher:
            self._build_teacher_terms(student, teacher, size, device)
        self.to(device)

    def _build_teacher_terms(self, student: nn.Module, teacher: nn.Module, size: int, device: torch.device) -> None:
        cfg = self.cfg
        for name, term in cfg.terms().items():
            spec = term.point if name == "fitnet" else getattr(term, "points", None)
            if spec is not None:
                self.points[name] = (_points(student, spec, name, "student"), _points(teacher, spec, name, "teacher"))
        self.attach(student, teacher)
        probe = torch.zeros(2, 3, size, size, device=device)
        was = student.training
        with torch.no_grad():
            s_preds, t_preds = student.eval()(probe), teacher(probe)
        student.train(was)
        s_feats, t_feats = self.features(0), self.features(1)
        self.detach()
        if "kd" in self.names:
            try:
                dense_kd_loss(s_preds, t_preds, cfg.kd.temperature, backend="reference")
            except ValueError as e:
                raise ValueError(f"loss.kd: the student's and the teacher's head maps do not match: {e}") from None
        if "fitnet" in self.names:
            try:
                self.fitnet = FitNetLoss.from_features(s_feats["fitnet"][0], t_feats["fitnet"][0])
            except ValueError as e:
                raise ValueError(f"loss.{e}") from None
        if "fgfi" in self.names:
            heads = getattr(teacher, "heads", None)
            if not heads or len(heads) != len(t_feats["fgfi"]):
                raise ValueError(f"loss.fgfi: needs one feature point per anchor-based detection head of the teacher "
                                 f"({len(heads or [])} heads, {len(t_feats['fgfi'])} points)")
            self._check_sizes("fgfi", s_feats["fgfi"], t_feats["fgfi"])
            for i, (t, head) in enumerate(zip(t_feats["fgfi"], heads)):
                grid = (size // int(head.stride),) * 2
                if tuple(t.shape[-2:]) != grid:
                    raise ValueError(f"loss.fgfi: point {i} ({self.points['fgfi'][1][i]}) is {tuple(t.shape[-2:])}, "
                                     f"but head {i} predicts on {grid} (stride {head.stride}): the points must feed the "
                                     "heads, in head order (the default, neck, does)")
            self.fgfi = FGFILoss.from_features(s_feats["fgfi"], t_feats["fgfi"], psi=cfg.fgfi.psi)
            self.anchors = [h.anchors.to(device) for h in heads]
            self.strides = [float(h.stride) for h in heads]
        if "review" in self.names:
            self._check_sizes("review", s_feats["review"], t_feats["review"])
            self.review = ReviewKDLoss.from_features(s_feats["review"], t_feats["review"],
                                                     mid_channels=cfg.review.mid_channels, backend=self.backend)

    def _check_classifier(self, classifier: nn.Module, student: nn.Module) -> nn.Module:
        heads = getattr(student, "heads", None)
        if not heads:
            raise ValueError("loss.dicod_*: DICOD's terms need anchor-based detection heads (YOLO layers)")
        if getattr(classifier, "num_classes", None) != heads[0].num_classes:
            raise ValueError(f"classifier: {getattr(classifier, 'num_classes', None)} classes, but the detector has "
                             f"{heads[0].num_classes}; train the classifier on crops of the detector's dataset")
        return classifier.eval().requires_grad_(False)

    @staticmethod
    def _check_sizes(name: str, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
        if len(student) != len(teacher):
            raise ValueError(f"loss.{name}: {len(student)} student points vs {len(teacher)} teacher points")
        for i, (s, t) in enumerate(zip(student, teacher)):
            if s.shape[-2:] != t.shape[-2:]:
                raise ValueError(f"loss.{name}: point {i}: the student's map {tuple(s.shape[-2:])} vs the teacher's "
                                 f"{tuple(t.shape[-2:])}; choose points at the same strides")

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Tap every point the terms read, on both models."""
        self.detach()
        if not self.needs_teacher:
            return
        names = [list(dict.fromkeys(n for pair in self.points.values() for n in pair[side])) for side in (0, 1)]
        self._taps = (FeatureTaps(student, names[0]), FeatureTaps(teacher, names[1]))

    def detach(self) -> None:
        if self._taps is not None:
            for taps in self._taps:
                taps.remove()
        self._taps = None

    def features(self, side: int) -> dict[str, list[torch.Tensor]]:
        """Per term, the last forward's features of the student (``side`` 0) or the teacher (1)."""
        taps = self._taps[side]
        by_name = dict(zip(taps.names, taps.features))
        return {term: [by_name[n] for n in pair[side]] for term, pair in self.points.items()}

    def forward(self, student_preds: list[torch.Tensor], teacher_preds: list[torch.Tensor] | None,
                targets: torch.Tensor, images: torch.Tensor, heads: list[nn.Module]) -> torch.Tensor:
        s_feats, t_feats = (self.features(0), self.features(1)) if self.needs_teacher else ({}, {})
        values = []
        for name in self.names:
            if name == "dicod_cls":
                logits = crop_logits(self._classifier[0], images, targets, backend=self.backend)
                values.append(dicod_cls_loss(student_preds, targets, heads, logits, self.cfg.dicod_cls.temperature,
                                             backend=self.backend))
            elif name == "dicod_loc":
                classifier = self._classifier[0]
                values.append(dicod_loc_loss(student_preds, targets, heads, images, classifier.stem,
                                             self.cfg.dicod_loc.size or classifier.input_size, backend=self.backend))
            elif name == "kd":
                values.append(dense_kd_loss(student_preds, [t.detach() for t in teacher_preds],
                                            self.cfg.kd.temperature, self.backend))
            elif name == "fitnet":
                values.append(self.fitnet(s_feats["fitnet"][0], t_feats["fitnet"][0]))
            elif name == "fgfi":
                values.append(self.fgfi(s_feats["fgfi"], t_feats["fgfi"], targets, self.anchors, self.strides))
            else:
                values.append(self.review(s_feats["review"], t_feats["review"]))
        return torch.stack([v.float() for v in values])

    def weights(self, step: int) -> list[float]:
        """Each term's weight at ``step``: ramped linearly over its ``warmup`` steps."""
        terms = self.cfg.terms()
        return [terms[n].weight * (min(1.0, step / terms[n].warmup) if terms[n].warmup else 1.0) for n in self.names]
