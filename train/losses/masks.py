"""Validity masks, masked reductions and the Bias-Free Masking of PRO (METHODS.md §3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedepth.tiling_torch import host_to_device

__all__ = ["as_map", "valid_mask", "masked_mean", "graph_zero", "sobel_magnitude", "bfm_mask", "edge_band_mask"]


def as_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """Accept (B, H, W) or (B, 1, H, W); return (B, 1, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be (B, 1, H, W) or (B, H, W), got {tuple(x.shape)}")
    return x


def valid_mask(target: torch.Tensor, mask: torch.Tensor | None = None, pred: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) bool: target > 0 and finite, and ``mask`` (False = unreliable) where given.

    ``pred``, when given, only has its shape checked against ``target``.
    """
    target = as_map(target, "target")
    if pred is not None and as_map(pred, "pred").shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    valid = torch.isfinite(target) & (target > 0)
    if mask is not None:
        mask = as_map(mask, "mask")
        if mask.shape != target.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match target {tuple(target.shape)}")
        valid = valid & mask.bool()
    return valid


def per_sample_mean(values: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Mean over samples that had valid pixels; 0 when none had."""
    h = has.to(values.dtype)
    return (torch.where(has, values, torch.zeros_like(values)) * h).sum() / h.sum().clamp_min(1.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``x`` over ``mask``; 0 (still differentiable) where the mask is empty, never NaN."""
    # where(), not a product, so NaN/inf outside the mask cannot leak in.
    x = torch.where(mask, x, torch.zeros_like(x))
    m = mask.expand_as(x).to(x.dtype)
    if dims is None:
        return x.sum() / m.sum().clamp_min(1.0)
    return x.sum(dims) / m.sum(dims).clamp_min(1.0)


def graph_zero(x: torch.Tensor) -> torch.Tensor:
    """A scalar 0 attached to ``x``'s autograd graph (so backward works on an empty loss), NaN-safe."""
    return torch.where(torch.zeros_like(x, dtype=torch.bool), x, torch.zeros_like(x)).sum()


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of (B, 1, H, W) (replicate padding), per pixel, divided by 8."""
    kx = host_to_device([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], x.device, x.dtype) / 8
    k = torch.stack([kx, kx.t()]).unsqueeze(1)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return g.pow(2).sum(1, keepdim=True).sqrt()


def _robust_minmax(x: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """Per sample: (x - p_q) / (p_(1-q) - p_q) over the valid pixels, clamped to [0, 1]; 0 outside."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        v = x[b][valid[b]]
        if v.numel() == 0:
            continue
        lo, hi = torch.quantile(v, q), torch.quantile(v, 1 - q)
        out[b] = ((x[b] - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    return torch.where(valid, out, torch.zeros_like(out))


@torch.no_grad()
def bfm_mask(coarse: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
             ratio: float = 2.0, edge_threshold: float = 0.05, floor: float = 0.1,
             quantile: float = 0.02) -> torch.Tensor:
    """Bias-Free Masking (PRO): True where the ground truth is trusted.

    Both maps are min-max normalised (N) over the valid pixels of each sample, robustly: between
    their ``quantile`` and 1 - ``quantile`` values, clamped to [0, 1]. A pixel is dropped where
    max((N(coarse) + f)/(N(gt) + f), (N(gt) + f)/(N(coarse) + f)) > ``ratio``, f = ``floor``, unless
    it lies on an edge both maps agree on (Sobel magnitude of both normalised maps >
    ``edge_threshold``). The floor is what keeps the test meaningful at the normalised minimum:
    PRO's ratio with a vanishing floor divides by ~0 for every tile's nearest pixels and drops them
    whether or not the ground truth is wrong.
    coarse, target (B, 1, H, W) metres at the same resolution -> (B, 1, H, W) bool.
    """
    valid = valid_mask(target, mask, coarse)
    coarse = as_map(coarse, "coarse")
    if ratio <= 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    nc = _robust_minmax(coarse.float(), valid, quantile)
    ng = _robust_minmax(as_map(target, "target").float(), valid, quantile)
    r = torch.maximum((nc + floor) / (ng + floor), (ng + floor) / (nc + floor))
    agreed_edge = (sobel_magnitude(nc) > edge_threshold) & (sobel_magnitude(ng) > edge_threshold)
    return valid & ((r <= ratio) | agreed_edge)


@torch.no_grad()
def edge_band_mask(depth: torch.Tensor, valid: torch.Tensor, *, ratio: float = 1.05, radius: int = 2) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels within ``radius`` px (Chebyshev) of a depth edge of ``depth``: a pair
    of valid 4-neighbours whose depths differ by more than ``ratio`` times. The band the benchmark's
    edge-band AbsRel scores, at the resolution of ``depth``."""
    depth, valid = as_map(depth, "depth"), as_map(valid, "valid").bool()
    logd = torch.log(depth.clamp_min(1e-6))
    jump = math.log(ratio)
    gx = ((logd[..., :, 1:] - logd[..., :, :-1]).abs() > jump) & valid[..., :, 1:] & valid[..., :, :-1]
    gy = ((logd[..., 1:, :] - logd[..., :-1, :]).abs() > jump) & valid[..., 1:, :] & valid[..., :-1, :]
    edges = torch.zeros_like(valid)
    edges[..., :, 1:] |= gx
    edges[..., :, :-1] |= gx
    edges[..., 1:, :] |= gy
    edges[..., :-1, :] |= gy
    k = 2 * int(radius) + 1
    return (F.max_pool2d(edges.float(), k, 1, int(radius)) > 0) & valid
