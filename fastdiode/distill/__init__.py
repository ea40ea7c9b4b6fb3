"""Mimic-learning distillation and detector training (method.md §7)."""
from fastdiode.distill.config import TrainConfig
from fastdiode.distill.ema import ModelEMA
from fastdiode.distill.trainer import Trainer, run_training

__all__ = ["ModelEMA", "TrainConfig", "Trainer", "run_training"]
