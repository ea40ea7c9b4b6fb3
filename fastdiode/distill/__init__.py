"""Mimic-learning distillation, detector training and the distillation terms (method.md §7, §8)."""
from fastdiode.distill.config import TrainConfig
from fastdiode.distill.ema import ModelEMA
from fastdiode.distill.terms import TERMS, DistillTerm
from fastdiode.distill.trainer import Trainer, run_training

__all__ = ["TERMS", "DistillTerm", "ModelEMA", "TrainConfig", "Trainer", "run_training"]
