"""Fused ops: for each, the torch reference (the spec), the autograd.Function over the Triton kernels,
and a dispatcher that picks the backend (see :mod:`fastdiode.runtime.backend`)."""
from fastdiode.ops.bn_act_stats import BNActMoments, bn_act_stat_loss, bn_act_stat_loss_reference
from fastdiode.ops.bn_stats import BNMoments, bn_stat_loss, bn_stat_loss_reference
from fastdiode.ops.frozen_conv import frozen_conv2d
from fastdiode.ops.gather_affine import gather_affine_mask, gather_affine_mask_reference
from fastdiode.ops.hcl import hcl_loss, hcl_loss_reference
from fastdiode.ops.kd import dense_kd_loss, dense_kd_loss_reference, kd_loss, kd_loss_reference
from fastdiode.ops.lsq import lsq_fake_quant, lsq_fake_quant_reference
from fastdiode.ops.roi_crop import roi_crop, roi_crop_reference
from fastdiode.ops.tv import tv_prior, tv_prior_reference

__all__ = [
    "BNActMoments",
    "bn_act_stat_loss",
    "bn_act_stat_loss_reference",
    "BNMoments",
    "bn_stat_loss",
    "bn_stat_loss_reference",
    "dense_kd_loss",
    "dense_kd_loss_reference",
    "frozen_conv2d",
    "gather_affine_mask",
    "gather_affine_mask_reference",
    "hcl_loss",
    "hcl_loss_reference",
    "kd_loss",
    "kd_loss_reference",
    "lsq_fake_quant",
    "lsq_fake_quant_reference",
    "roi_crop",
    "roi_crop_reference",
    "tv_prior",
    "tv_prior_reference",
]
