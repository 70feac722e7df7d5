"""Least-squares scale-and-shift alignment, the core of every scale-free loss here."""
from __future__ import annotations

import torch

from .masks import masked_mean

__all__ = ["fit_scale_shift"]


def fit_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample (dim 0), (s, t) minimising sum over mask of (s * pred + t - target)^2.

    Solved on centred values (stable in float32 at metre scale). A sample whose masked prediction is
    constant (or empty) gets s = 0, t = mean target. Returns s, t shaped (B, 1, 1, 1); differentiable.
    """
    dims = tuple(range(1, pred.ndim))
    pm = masked_mean(pred, mask, dims).view(-1, *([1] * (pred.ndim - 1)))
    tm = masked_mean(target, mask, dims).view_as(pm)
    pc, tc = pred - pm, target - tm
    var = masked_mean(pc * pc, mask, dims).view_as(pm)
    cov = masked_mean(pc * tc, mask, dims).view_as(pm)
    ok = var > eps
    s = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
    return s, tm - s * pm
