"""DICOD's classification teacher: a ResNet trained on object crops (``fastdiode train-classifier``)."""
from fastdiode.classify.config import ClassifierConfig
from fastdiode.classify.trainer import ClassifierTrainer, run_classifier_training

__all__ = ["ClassifierConfig", "ClassifierTrainer", "run_classifier_training"]
