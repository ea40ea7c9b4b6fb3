"""What every trainer shares: the step loop (cadence, resume, Ctrl-C, logs, summary, curves), the optimiser
factory and the ``optim``/``train`` config bases."""
from fastdiode.training.config import LoopConfig, OptimConfig
from fastdiode.training.loop import StepLoop, TrainTask
from fastdiode.training.optim import build_optimizer, param_groups

__all__ = ["LoopConfig", "OptimConfig", "StepLoop", "TrainTask", "build_optimizer", "param_groups"]
