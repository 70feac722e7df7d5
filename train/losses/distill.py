"""Teacher/self distillation losses: the DSD composite (PatchRefiner, METHODS §1) and SDDR-style
edge-guided gradient loss with self-distilled edge pseudo-labels (METHODS §4)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .depth import silog_loss, ssi_loss
from .gradient import local_ssigm_loss, ssigm_loss
from .masks import as_map, masked_mean, valid_mask
from .ranking import edge_guided_ranking_loss

__all__ = ["DETAIL_LOSSES", "dsd_loss", "edge_representation", "update_edge_pseudo_label",
           "self_distilled_edges", "edge_guided_gradient_loss"]

DETAIL_LOSSES = {"ssi": ssi_loss, "ssigm": ssigm_loss, "local_ssigm": local_ssigm_loss,
                 "ranking": edge_guided_ranking_loss}


def dsd_loss(pred: torch.Tensor, target: torch.Tensor, pseudo: torch.Tensor, mask: torch.Tensor | None = None,
             pseudo_mask: torch.Tensor | None = None, *, lam: float = 1.0, detail: str = "ssi",
             **detail_kwargs: Any) -> torch.Tensor:
    """Detail and Scale Disentangling: SILog against the (sparse) ground truth for scale, plus
    ``lam`` x a scale-free detail loss against the teacher's dense pseudo-label.

    detail: "ssi", "ssigm", "local_ssigm" or "ranking" (``detail_kwargs`` go to it). All inputs
    (B, 1, H, W); target/pseudo 0 = invalid. The detail term ignores any affine change of ``pred``
    (and the scale-and-shift-fitted ones any shift of ``pseudo``), so the metric scale is learnt
    from the ground truth alone.
    """
    if detail not in DETAIL_LOSSES:
        raise ValueError(f"detail must be one of {sorted(DETAIL_LOSSES)}, got {detail!r}")
    return silog_loss(pred, target, mask) + lam * DETAIL_LOSSES[detail](pred, pseudo, pseudo_mask, **detail_kwargs)


def edge_representation(depth: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDDR edge representation G: forward x/y differences of log depth, (B, 2, H, W) (last column/row
    0, and 0 wherever either pixel is invalid). Scale-free: G(s * depth) == G(depth)."""
    valid = valid_mask(depth, mask)
    logd = torch.where(valid, torch.log(as_map(depth, "depth").clamp_min(1e-6)), torch.zeros_like(depth))
    gx = F.pad(logd[..., :, 1:] - logd[..., :, :-1], (0, 1))
    gy = F.pad(logd[..., 1:, :] - logd[..., :-1, :], (0, 0, 0, 1))
    pairs = _pair_mask(valid)
    return torch.cat([gx, gy], 1) * pairs


def _pair_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): x/y forward-difference pairs whose two pixels are both valid."""
    mx = F.pad(valid[..., :, 1:] & valid[..., :, :-1], (0, 1))
    my = F.pad(valid[..., 1:, :] & valid[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([mx, my], 1)


def _cell_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over non-overlapping window x window cells, broadcast back to every pixel of its cell."""
    h, w = x.shape[-2:]
    ph, pw = -h % window, -w % window
    s = F.avg_pool2d(F.pad(x, (0, pw, 0, ph)), window, window) * window * window
    return s.repeat_interleave(window, -2).repeat_interleave(window, -1)[..., :h, :w]


def update_edge_pseudo_label(edges: torch.Tensor, refined: torch.Tensor, window: int,
                             region_mask: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One coarse-to-fine step of the SDDR pseudo-label: partition the map into window x window cells;
    in each, fit a gain a >= 0 so that a * G(refined) best matches the current ``edges`` (least
    squares; keeps the consistent large-scale contrast), then blend
    G' = m * a * G(refined) + (1 - m) * edges, m = ``region_mask`` in [0, 1] (default 1 everywhere);
    differences across cell borders keep the current estimate.
    edges (B, 2, H, W); refined (B, 1, H, W) depth predicted with windows of this size.
    """
    g = edge_representation(refined, mask)
    if edges.shape != g.shape:
        raise ValueError(f"edges must be (B, 2, H, W) = {tuple(g.shape)}, got {tuple(edges.shape)}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    # A difference across two cells compares two separate window predictions: it says nothing,
    # so it neither enters the fit nor replaces the current estimate.
    h, w = g.shape[-2:]
    cross = torch.zeros_like(g, dtype=torch.bool)
    cross[:, 0, :, window - 1 :: window] = True
    cross[:, 1, window - 1 :: window, :] = True
    g = torch.where(cross, torch.zeros_like(g), g)
    num = _cell_sum((g * edges).sum(1, keepdim=True), window)
    den = _cell_sum((g * g).sum(1, keepdim=True), window)
    gain = torch.where(den > 1e-12, num / den.clamp_min(1e-12), torch.zeros_like(den)).clamp_min(0.0)
    m = torch.ones_like(den) if region_mask is None else as_map(region_mask, "region_mask").clamp(0, 1)
    return torch.where(cross, edges, m * gain * g + (1 - m) * edges)


@torch.no_grad()
def self_distilled_edges(initial: torch.Tensor, refined: Sequence[torch.Tensor], windows: Sequence[int],
                         region_masks: Sequence[torch.Tensor | None] | None = None,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Edge pseudo-label: G of the whole-image ``initial`` depth, updated coarse-to-fine with each
    ``refined[k]`` (the refiner's depth on windows of side ``windows[k]``, largest first). Detached."""
    if len(refined) != len(windows):
        raise ValueError(f"need one window size per refined map, got {len(refined)} maps, {len(windows)} windows")
    if list(windows) != sorted(windows, reverse=True):
        raise ValueError(f"windows must go coarse to fine (non-increasing), got {list(windows)}")
    masks = list(region_masks) if region_masks is not None else [None] * len(refined)
    g = edge_representation(initial, mask)
    for r, w, m in zip(refined, windows, masks):
        g = update_edge_pseudo_label(g, r, w, m, mask)
    return g


def edge_guided_gradient_loss(pred: torch.Tensor, pseudo_edges: torch.Tensor, mask: torch.Tensor | None = None, *,
                              edge_weight: float = 4.0, edge_threshold: float = 0.05) -> torch.Tensor:
    """SDDR edge-guided gradient loss: L1 between G(pred) and the pseudo-label edges, with pixels whose
    pseudo gradient magnitude exceeds ``edge_threshold`` (log-depth units) weighted 1 + ``edge_weight``.
    pred (B, 1, H, W) metres; pseudo_edges (B, 2, H, W); mask (B, 1, H, W) valid pixels."""
    pred = as_map(pred, "pred")
    if pseudo_edges.shape != (pred.shape[0], 2, *pred.shape[-2:]):
        raise ValueError(f"pseudo_edges must be (B, 2, H, W) for pred {tuple(pred.shape)}, got {tuple(pseudo_edges.shape)}")
    valid = torch.ones_like(pred, dtype=torch.bool) if mask is None else as_map(mask, "mask").bool()
    valid = valid & (pred > 0)
    g = edge_representation(torch.where(valid, pred, torch.zeros_like(pred)), valid)
    pair_valid = _pair_mask(valid)
    weight = 1.0 + edge_weight * (pseudo_edges.abs() > edge_threshold).to(pred.dtype)
    return masked_mean(weight * (g - pseudo_edges).abs(), pair_valid)
