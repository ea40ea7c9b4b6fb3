"""Losses to drop into any trainer: nn.Modules and functional forms."""
from fastdiode.losses.bn_stat import BNStatLoss, bn_stat_loss, cosine_layer_weights
from fastdiode.losses.distill import mimic_loss
from fastdiode.losses.priors import TVPrior, image_norm_prior, tv_prior
from fastdiode.models.yolo_loss import yolo_loss

__all__ = ["BNStatLoss", "TVPrior", "bn_stat_loss", "cosine_layer_weights", "image_norm_prior", "mimic_loss",
           "tv_prior", "yolo_loss"]
