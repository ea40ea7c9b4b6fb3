"""The distillation terms beyond mimic and label, one class each, in one table: the trainer and the config loop
over :data:`TERMS`. Adding a term is a config (a :class:`TermConfig`), a :class:`DistillTerm` subclass and an entry
here; its section ``loss.<name>`` then exists in the trainer's config."""
from fastdiode.distill.terms.base import DistillTerm, TermBatch, TermConfig, TermSources
from fastdiode.distill.terms.dicod import DICODClsTerm, DICODLocTerm
from fastdiode.distill.terms.fgfi import FGFITerm
from fastdiode.distill.terms.fitnet import FitNetTerm
from fastdiode.distill.terms.kd import KDTerm
from fastdiode.distill.terms.quant_kd import HeadKLTerm, LayerMSETerm, PseudoLabelTerm
from fastdiode.distill.terms.review import ReviewTerm

TERMS: dict[str, type[DistillTerm]] = {term.name: term for term in (
    KDTerm, FitNetTerm, FGFITerm, ReviewTerm, DICODClsTerm, DICODLocTerm, HeadKLTerm, LayerMSETerm, PseudoLabelTerm)}

__all__ = ["TERMS", "DistillTerm", "TermBatch", "TermConfig", "TermSources"]
