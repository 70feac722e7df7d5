"""Edge-guided ranking loss (Xian et al. 2020, structure-guided ranking), the DSD detail loss option."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import as_map, graph_zero, sobel_magnitude, valid_mask

__all__ = ["edge_guided_ranking_loss"]


def _sample_pairs(guide: torch.Tensor, valid: torch.Tensor, num_edge: int, num_random: int,
                  edge_threshold: float, max_offset: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel indices (P,), (P,) of point pairs for one sample (guide, valid: (1, H, W))."""
    _, h, w = guide.shape
    flat_valid = valid.flatten()
    if not flat_valid.any():
        return guide.new_zeros(0, dtype=torch.long), guide.new_zeros(0, dtype=torch.long)
    kx = torch.tensor([[-1.0, 0.0, 1.0]] * 3, dtype=guide.dtype, device=guide.device)
    gpad = F.pad(guide[None], (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(gpad, kx[None, None]).flatten()
    gy = F.conv2d(gpad, kx.t()[None, None]).flatten()
    mag = sobel_magnitude(guide[None]).flatten()
    edges = flat_valid & (mag >= edge_threshold * mag.max().clamp_min(1e-12)) & (mag > 0)
    idx = []
    if num_edge and edges.any():
        # Sampled on the CPU: the generator is a CPU one, and multinomial refuses to mix devices.
        anchors = torch.multinomial(edges.float().cpu(), num_edge, replacement=True, generator=generator).to(guide.device)
        ay, ax = (anchors // w).float(), (anchors % w).float()
        norm = torch.sqrt(gx[anchors] ** 2 + gy[anchors] ** 2).clamp_min(1e-12)
        dy, dx = gy[anchors] / norm, gx[anchors] / norm
        # Four points along the gradient direction across the edge: -r2, -r1, +r1, +r2.
        r = torch.sort(torch.randint(1, max_offset + 1, (num_edge, 2), generator=generator), 1).values
        r = r.to(guide.device).float()
        offs = torch.stack([-r[:, 1], -r[:, 0], r[:, 0], r[:, 1]], 1)
        py = (ay[:, None] + offs * dy[:, None]).round().clamp(0, h - 1).long()
        px = (ax[:, None] + offs * dx[:, None]).round().clamp(0, w - 1).long()
        pts = py * w + px
        idx += [(pts[:, 0], pts[:, 1]), (pts[:, 1], pts[:, 2]), (pts[:, 2], pts[:, 3])]
    if num_random:
        pool = flat_valid.nonzero().flatten()
        pick = torch.randint(0, pool.numel(), (2, num_random), generator=generator).to(guide.device)
        idx.append((pool[pick[0]], pool[pick[1]]))
    a = torch.cat([i for i, _ in idx]) if idx else guide.new_zeros(0, dtype=torch.long)
    b = torch.cat([j for _, j in idx]) if idx else guide.new_zeros(0, dtype=torch.long)
    keep = flat_valid[a] & flat_valid[b] & (a != b)
    return a[keep], b[keep]


def edge_guided_ranking_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                             image: torch.Tensor | None = None, num_edge_samples: int = 2000,
                             num_random_pairs: int = 2000, sigma: float = 0.03, edge_threshold: float = 0.1,
                             max_offset: int = 30, log_space: bool = True,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Ranking loss on point pairs: most pairs straddle edges of ``image`` (B, C, H, W) (or, without an
    image, of log target), the rest random. Pair label from the target ratio: +1 if t_a/t_b >= 1+sigma,
    -1 if <= 1/(1+sigma), else 0 (equal). Loss: softplus(-label * z) for ordered pairs, z^2 for equal
    ones, z = log p_a - log p_b (``log_space``) or p_a - p_b. Depends on the target only through
    depth ratios, so it is invariant to scaling the target.
    """
    valid = valid_mask(target, mask, pred)
    pred, target = as_map(pred, "pred"), as_map(target, "target")
    if image is not None:
        if image.ndim != 4 or image.shape[0] != pred.shape[0] or image.shape[-2:] != pred.shape[-2:]:
            raise ValueError(f"image must be (B, C, {pred.shape[-2]}, {pred.shape[-1]}), got {tuple(image.shape)}")
        guide = image.float().mean(1, keepdim=True)
    else:
        guide = torch.where(valid, torch.log(target.clamp_min(1e-6)), torch.zeros_like(target))
    losses, total_pairs = graph_zero(pred), 0
    for i in range(pred.shape[0]):
        a, b = _sample_pairs(guide[i].detach(), valid[i], num_edge_samples, num_random_pairs, edge_threshold,
                             max_offset, generator)
        if a.numel() == 0:
            continue
        p, t = pred[i].flatten(), target[i].flatten()
        ratio = t[a] / t[b]
        label = (ratio >= 1 + sigma).to(p.dtype) - (ratio <= 1 / (1 + sigma)).to(p.dtype)
        pa, pb = p[a], p[b]
        z = torch.log(pa.clamp_min(1e-6)) - torch.log(pb.clamp_min(1e-6)) if log_space else pa - pb
        per = torch.where(label != 0, F.softplus(-label * z), z * z)
        losses = losses + per.sum()
        total_pairs += a.numel()
    return losses / max(total_pairs, 1)
