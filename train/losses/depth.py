"""Pixel-wise depth losses: L1 on log depth with gradient matching (the default), SILog (metric)
and the scale-and-shift-invariant L1 (MiDaS style)."""
from __future__ import annotations

import torch

from .alignment import fit_scale_shift
from .gradient import gradient_l1
from .masks import as_map, masked_mean, per_sample_mean, valid_mask

__all__ = ["log_l1_loss", "silog_loss", "ssi_loss"]


def log_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                grad: float = 0.5, scales: int = 3, min_depth: float = 1e-3,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |e| + ``grad`` x mean |grad e| over ``scales`` dyadic subsamplings, e = ln pred - ln target
    over the valid pixels (gradients over pairs of valid pixels), averaged over samples. ``weight``
    (B, 1, H, W) >= 0 weighs the pixels of the first term (a weighted mean).

    The first term is metric (a 10 % scale error costs 0.095 everywhere, near or far); the second
    is MegaDepth's scale-invariant gradient matching: it is zero for any scale error and is what
    rewards a boundary in the right place. pred, target (B, 1, H, W) metres; target 0 = invalid.
    """
    valid = valid_mask(target, mask, pred)
    pred, target = as_map(pred, "pred"), as_map(target, "target")
    e = torch.log(pred.clamp_min(min_depth)) - torch.log(target.clamp_min(min_depth))
    e = torch.where(valid, e, torch.zeros_like(e))
    has = valid.flatten(1).any(1)
    if weight is None:
        per = masked_mean(e.abs(), valid, (1, 2, 3))
    else:
        w = torch.where(valid, as_map(weight, "weight").to(e.dtype), torch.zeros_like(e))
        per = (w * e.abs()).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1e-12)
    if grad > 0:
        total, count = gradient_l1(e, valid, scales)
        per = per + grad * total / count.clamp_min(1.0)
    return per_sample_mean(per, has)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               variance_focus: float = 0.85, scale: float = 10.0, min_depth: float = 1e-3) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.; ZoeDepth/PatchFusion form), averaged over samples.

    With e = log(pred) - log(target) over the valid pixels of a sample:
    scale * sqrt(mean(e^2) - variance_focus * mean(e)^2). ``variance_focus=1`` makes it invariant to
    a per-sample scale of ``pred``. pred, target (B, 1, H, W) metres; target 0 = invalid.
    """
    if not 0.0 <= variance_focus <= 1.0:
        raise ValueError(f"variance_focus must be in [0, 1], got {variance_focus}")
    valid = valid_mask(target, mask, pred)
    pred, target = as_map(pred, "pred"), as_map(target, "target")
    e = torch.log(pred.clamp_min(min_depth)) - torch.log(target.clamp_min(min_depth))
    dims = (1, 2, 3)
    mean_e = masked_mean(e, valid, dims)
    mean_e2 = masked_mean(e * e, valid, dims)
    # clamp keeps sqrt's gradient finite at a perfect prediction.
    per = torch.sqrt((mean_e2 - variance_focus * mean_e * mean_e).clamp_min(1e-12))
    return scale * per_sample_mean(per, valid.flatten(1).any(1))


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scale-and-shift-invariant L1: fit s, t per sample by least squares, then mean |s*pred + t - target|.

    Invariant to any affine change a*pred + b (a != 0) of the prediction. (B, 1, H, W) inputs.
    """
    valid = valid_mask(target, mask, pred)
    pred, target = as_map(pred, "pred"), as_map(target, "target")
    s, t = fit_scale_shift(pred, target, valid)
    per = masked_mean((s * pred + t - target).abs(), valid, (1, 2, 3))
    return per_sample_mean(per, valid.flatten(1).any(1))
