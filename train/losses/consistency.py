"""Grouped Patch Consistency Training loss (PRO, METHODS §3): overlapping tiles must agree."""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def _sample(tile: torch.Tensor, box: tuple[float, float, float, float], out_hw: tuple[int, int]) -> torch.Tensor:
    """Resample ``tile`` (1, C, th, tw) over ``box`` (tile pixels) to ``out_hw`` with the DESIGN crop
    semantics (pixel centres, bilinear, clamped to the tile's border) via grid_sample."""
    _, _, th, tw = tile.shape
    y0, x0, h, w = box
    oh, ow = out_hw
    dev, dt = tile.device, tile.dtype
    ys = y0 + (torch.arange(oh, device=dev, dtype=dt) + 0.5) * h / oh - 0.5
    xs = x0 + (torch.arange(ow, device=dev, dtype=dt) + 0.5) * w / ow - 0.5
    gy = (2 * ys + 1) / th - 1
    gx = (2 * xs + 1) / tw - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(tile, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gpct_consistency_loss(depths: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over overlapping tile pairs of the mean squared difference of their predictions on the
    overlap, averaged over the batch.

    depths (B, G, 1, th, tw): the G tiles of each group as predicted; boxes (G, 4) or (B, G, 4)
    [y0, x0, h, w] in frame pixels (tile k shows that box resized to th x tw); mask like depths
    (False = ignore that tile pixel). Overlaps are resampled at the finer tile's resolution.
    """
    if depths.ndim != 5:
        raise ValueError(f"depths must be (B, G, C, th, tw), got {tuple(depths.shape)}")
    bsz, g, _, th, tw = depths.shape
    if boxes.ndim == 2:
        boxes = boxes.unsqueeze(0).expand(bsz, -1, -1)
    if boxes.shape != (bsz, g, 4):
        raise ValueError(f"boxes must be (G={g}, 4) or (B={bsz}, G={g}, 4) [y0, x0, h, w], got {tuple(boxes.shape)}")
    if mask is not None and mask.shape[:2] + mask.shape[3:] != depths.shape[:2] + depths.shape[3:]:
        raise ValueError(f"mask must be shaped like depths {tuple(depths.shape)}, got {tuple(mask.shape)}")
    total = graph_zero(depths)
    for n in range(bsz):
        bx = boxes[n].detach().double().cpu()
        for i, j, (oy, ox, oh, ow) in overlap_pairs(bx):
            res = max(th / bx[i, 2].item(), th / bx[j, 2].item()), max(tw / bx[i, 3].item(), tw / bx[j, 3].item())
            out_hw = (max(1, round(oh * res[0])), max(1, round(ow * res[1])))
            vals, valid = [], []
            for k in (i, j):
                y0, x0, h, w = bx[k].tolist()
                local = ((oy - y0) * th / h, (ox - x0) * tw / w, oh * th / h, ow * tw / w)
                vals.append(_sample(depths[n, k : k + 1], local, out_hw))
                if mask is not None:
                    m = _sample(mask[n, k : k + 1].to(depths.dtype), local, out_hw)
                    valid.append(m > 0.999)
            sq = (vals[0] - vals[1]) ** 2
            if mask is None:
                total = total + sq.mean()
            else:
                both = valid[0] & valid[1]
                total = total + torch.where(both, sq, torch.zeros_like(sq)).sum() / both.sum().clamp_min(1)
    return total / bsz
