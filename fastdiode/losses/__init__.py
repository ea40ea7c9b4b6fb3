"""Losses to drop into any trainer: nn.Modules and functional forms."""
from fastdiode.losses.bn_stat import BNStatLoss, bn_stat_loss, cosine_layer_weights
from fastdiode.losses.classification import focal_loss
from fastdiode.losses.dicod import DICODClsLoss, DICODLocLoss, crop_logits, dicod_cls_loss, dicod_loc_loss
from fastdiode.losses.feature_kd import (
    ABF,
    ConvReg,
    DenseKDLoss,
    FGFILoss,
    FitNetLoss,
    KDLoss,
    ReviewKDLoss,
    fgfi_mask,
)
from fastdiode.losses.mimic import mimic_loss
from fastdiode.losses.priors import TVPrior, image_norm_prior, tv_prior
from fastdiode.losses.quant_kd import head_kl_loss, layer_mse_loss
from fastdiode.models.yolo_loss import yolo_loss
from fastdiode.ops.hcl import hcl_loss
from fastdiode.ops.kd import dense_kd_loss, kd_loss

__all__ = ["ABF", "BNStatLoss", "ConvReg", "DICODClsLoss", "DICODLocLoss", "DenseKDLoss", "FGFILoss", "FitNetLoss",
           "KDLoss", "ReviewKDLoss", "TVPrior", "bn_stat_loss", "cosine_layer_weights", "crop_logits",
           "dense_kd_loss", "dicod_cls_loss", "dicod_loc_loss", "fgfi_mask", "focal_loss", "hcl_loss", "head_kl_loss",
           "image_norm_prior", "kd_loss", "layer_mse_loss", "mimic_loss", "tv_prior", "yolo_loss"]
