"""Pixel-wise depth losses: L1 on log depth with gradient matching (the default), SILog (metric)
and the scale-and-shift-invariant L1 (MiDaS style)."""
from __future__ import annotations

import math

import torch

from .alignment import fit_scale_shift
from .gradient import gradient_l1
from .masks import as_map, masked_mean, per_sample_mean, valid_mask

__all__ = ["log_l1_loss", "relative_far", "silog_loss", "ssi_loss"]


# Beyond this ln-depth over-estimate (pred = 20 x target) the relative charge grows linearly, so
# one pixel read at the horizon cannot swamp a batch's gradient.
_FAR_CAP = 3.0


def relative_far(e: torch.Tensor) -> torch.Tensor:
    """|e| for e <= 0, exp(e) - 1 for e > 0 (linear beyond e = 3): an ln-depth error charged as the
    relative error |pred - target| / target when the prediction is too far, as ln(target / pred)
    when it is too near. Equal to |e| to first order, so only large errors see the difference."""
    over = torch.expm1(e.clamp(0.0, _FAR_CAP)) + torch.relu(e - _FAR_CAP) * math.exp(_FAR_CAP)
    return torch.where(e > 0, over, -e)


def log_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                grad: float = 0.5, scales: int = 3, min_depth: float = 1e-3,
                weight: torch.Tensor | None = None, far: float = 0.0,
                far_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |e| + ``grad`` x mean |grad e| over ``scales`` dyadic subsamplings, e = ln pred - ln target
    over the valid pixels (gradients over pairs of valid pixels), averaged over samples. ``weight``
    (B, 1, H, W) >= 0 weighs the pixels of the first term (a weighted mean).

    The first term is metric (a 10 % scale error costs 0.095 everywhere, near or far); the second
    is MegaDepth's scale-invariant gradient matching: it is zero for any scale error and is what
    rewards a boundary in the right place. ``far`` in [0, 1] moves the first term's charge for an
    over-estimate that share of the way from |e| to :func:`relative_far`'s: at 1 a pole read at
    the wall 6x behind it costs 5, not ln 6 = 1.8, so where the model cannot tell which side of a
    depth edge a pixel is on, the nearer side is the cheaper guess (what AbsRel and an obstacle
    check reward; L1 on ln depth is indifferent). ``far_mask`` (B, 1, H, W) bool limits that charge
    to its pixels (the band around depth edges, where that choice is made). pred, target (B, 1, H,
    W) metres; target 0 = invalid.
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    valid = valid_mask(target, mask, pred)
    pred, target = as_map(pred, "pred"), as_map(target, "target")
    e = torch.log(pred.clamp_min(min_depth)) - torch.log(target.clamp_min(min_depth))
    e = torch.where(valid, e, torch.zeros_like(e))
    has = valid.flatten(1).any(1)
    cost = e.abs()
    if far > 0:
        where = valid if far_mask is None else valid & as_map(far_mask, "far_mask").bool()
        cost = torch.where(where, cost + far * (relative_far(e) - cost), cost)
    if weight is None:
        per = masked_mean(cost, valid, (1, 2, 3))
    else:
        w = torch.where(valid, as_map(weight, "weight").to(e.dtype), torch.zeros_like(e))
        per = (w * cost).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1e-12)
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
