"""The DIODE inversion engine: configs, target samplers, the objective and the multi-resolution inverter."""
from fastdiode.inversion.config import InversionConfig
from fastdiode.inversion.inverter import DiodeInverter, InversionResult
from fastdiode.inversion.objective import InversionObjective
from fastdiode.inversion.targets import LabelTargets, one_box_targets, sample_false_positives

__all__ = ["DiodeInverter", "InversionConfig", "InversionObjective", "InversionResult", "LabelTargets",
           "one_box_targets", "sample_false_positives"]
