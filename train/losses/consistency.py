"""Grouped Patch Consistency Training loss (PRO, METHODS §3): overlapping tiles must agree."""
from __future__ import annotations

import numpy as np
import torch

from edgedepth.tiling_torch import crop_resize, host_to_device

from .masks import graph_zero

__all__ = ["overlap_pairs", "gpct_consistency_loss"]


def overlap_pairs(boxes: torch.Tensor) -> list[tuple[int, int, tuple[float, float, float, float]]]:
    """(i, j, overlap box [y0, x0, h, w]) for every pair of boxes (G, 4) [y0, x0, h, w] that overlap."""
    b = boxes.detach().double().cpu().tolist()
    out = []
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            y0, x0 = max(b[i][0], b[j][0]), max(b[i][1], b[j][1])
            y1 = min(b[i][0] + b[i][2], b[j][0] + b[j][2])
            x1 = min(b[i][1] + b[i][3], b[j][1] + b[j][3])
            if y1 > y0 and x1 > x0:
                out.append((i, j, (y0, x0, y1 - y0, x1 - x0)))
    return out


def gpct_consistency_loss(depths: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over overlapping tile pairs of the mean squared difference of their predictions on the
    overlap, averaged over the batch.

    depths (B, G, 1, th, tw): the G tiles of each group as predicted; boxes (G, 4) or (B, G, 4)
    [y0, x0, h, w] in frame pixels (tile k shows that box resized to th x tw); mask like depths
    (False = ignore that tile pixel). Overlaps are resampled at the finer tile's resolution.
    """
    if depths.ndim != 5:
        raise ValueError(f"depths must be (B, G, C, th, tw), got {tuple(depths.shape)}")
    bsz, g, c, th, tw = depths.shape
    if boxes.ndim == 2:
        boxes = boxes.unsqueeze(0).expand(bsz, -1, -1)
    if boxes.shape != (bsz, g, 4):
        raise ValueError(f"boxes must be (G={g}, 4) or (B={bsz}, G={g}, 4) [y0, x0, h, w], got {tuple(boxes.shape)}")
    if mask is not None and mask.shape[:2] + mask.shape[3:] != depths.shape[:2] + depths.shape[3:]:
        raise ValueError(f"mask must be shaped like depths {tuple(depths.shape)}, got {tuple(mask.shape)}")
    # Every overlap of every group in one batched crop per overlap size (a regular grid has three:
    # side by side, one above the other, diagonal) instead of two crops per pair: on a GPU each crop
    # was a dozen small kernels and its sample tables a copy that waits for the device. The mask
    # rides along as extra channels, so one crop serves both.
    flat = depths.reshape(bsz * g, *depths.shape[2:])
    if mask is not None:
        flat = torch.cat([flat, mask.reshape(bsz * g, *mask.shape[2:]).to(depths.dtype)], 1)
    by_size: dict[tuple[int, int], list[tuple[tuple[int, tuple], tuple[int, tuple]]]] = {}
    for n in range(bsz):
        bx = boxes[n].detach().double().cpu()
        for i, j, (oy, ox, oh, ow) in overlap_pairs(bx):
            res = max(th / bx[i, 2].item(), th / bx[j, 2].item()), max(tw / bx[i, 3].item(), tw / bx[j, 3].item())
            out_hw = (max(1, round(oh * res[0])), max(1, round(ow * res[1])))
            sides = []
            for k in (i, j):
                y0, x0, h, w = bx[k].tolist()
                # The runtime's crop semantics, so "overlap" means the pixels the stitcher blends.
                sides.append((n * g + k, ((oy - y0) * th / h, (ox - x0) * tw / w, oh * th / h, ow * tw / w)))
            by_size.setdefault(out_hw, []).append((sides[0], sides[1]))
    total = graph_zero(depths)
    for out_hw, pairs in by_size.items():
        vals, valid = [], []
        for side in (0, 1):
            index = host_to_device(np.array([p[side][0] for p in pairs], dtype=np.int64), depths.device)
            local = np.array([[p[side][1]] for p in pairs], dtype=np.float64)  # (P, 1, 4)
            crops = crop_resize(flat.index_select(0, index), local, out_hw)[:, 0]
            vals.append(crops[:, :c])
            if mask is not None:
                valid.append(crops[:, c:] > 0.999)
        sq = (vals[0] - vals[1]) ** 2
        if mask is None:
            total = total + sq.mean(dim=(1, 2, 3)).sum()
        else:
            both = valid[0] & valid[1]
            per_pair = torch.where(both, sq, torch.zeros_like(sq)).sum(dim=(1, 2, 3))
            total = total + (per_pair / both.sum(dim=(1, 2, 3)).clamp_min(1)).sum()
    return total / bsz
