"""The DIODE inversion engine: configs, target samplers and the multi-resolution inverter."""
from fastdiode.inversion.config import InversionConfig
from fastdiode.inversion.inverter import DiodeInverter, InversionResult, derive_seed, lr_at
from fastdiode.inversion.targets import LabelTargets, one_box_targets, sample_false_positives

__all__ = ["DiodeInverter", "InversionConfig", "InversionResult", "LabelTargets", "derive_seed", "lr_at",
           "one_box_targets", "sample_false_positives"]
