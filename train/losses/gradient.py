"""Scale-and-shift-invariant gradient matching (SSIGM), global and in local windows (PRV2, METHODS §2)."""
from __future__ import annotations

import torch

from .alignment import fit_scale_shift
from .masks import as_map, per_sample_mean, valid_mask

__all__ = ["gradient_l1", "ssigm_loss", "local_ssigm_loss", "sample_windows"]


def gradient_l1(residual: torch.Tensor, mask: torch.Tensor, scales: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: summed L1 of the x/y forward differences of ``residual`` over pairs of valid pixels,
    at ``scales`` dyadic subsamplings, and the number of such pairs. Returns (sum (B,), count (B,))."""
    total = residual.new_zeros(residual.shape[0])
    count = residual.new_zeros(residual.shape[0])
    for k in range(scales):
        r, m = residual[..., :: 2**k, :: 2**k], mask[..., :: 2**k, :: 2**k]
        mx = m[..., :, 1:] & m[..., :, :-1]
        my = m[..., 1:, :] & m[..., :-1, :]
        gx = torch.where(mx, (r[..., :, 1:] - r[..., :, :-1]).abs(), torch.zeros_like(mx, dtype=r.dtype))
        gy = torch.where(my, (r[..., 1:, :] - r[..., :-1, :]).abs(), torch.zeros_like(my, dtype=r.dtype))
        total = total + gx.flatten(1).sum(1) + gy.flatten(1).sum(1)
        count = count + mx.flatten(1).sum(1) + my.flatten(1).sum(1)
    return total, count


def _ssigm(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, scales: int) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = fit_scale_shift(pred, target, valid)
    total, count = gradient_l1(s * pred + t - target, valid, scales)
    return total / count.clamp_min(1.0), count > 0


def ssigm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               scales: int = 1) -> torch.Tensor:
    """Global SSIGM: one least-squares scale/shift per sample, then the mean L1 of the x/y gradients of
    the aligned residual. Zero for any affine change of the target; (B, 1, H, W) inputs."""
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    valid = valid_mask(target, mask, pred)
    per, has = _ssigm(as_map(pred, "pred"), as_map(target, "target"), valid, scales)
    return per_sample_mean(per, has)


def sample_windows(batch: int, height: int, width: int, window: int, num_windows: int, *,
                   layout: str = "random", generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Top-left corners (B, N, 2) [y, x] of square windows of side ``window`` inside an H x W map.

    layout "random": ``num_windows`` uniform positions per sample; "grid": the non-overlapping
    windows tiling the map from the top-left (``num_windows`` ignored).
    """
    if not 1 <= window <= min(height, width):
        raise ValueError(f"window must be in [1, {min(height, width)}] for a {height}x{width} map, got {window}")
    if layout == "grid":
        ys = torch.arange(0, height - window + 1, window, device=device)
        xs = torch.arange(0, width - window + 1, window, device=device)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
        return grid.unsqueeze(0).expand(batch, -1, -1)
    if layout != "random":
        raise ValueError(f"layout must be 'random' or 'grid', got {layout!r}")
    if num_windows < 1:
        raise ValueError(f"num_windows must be >= 1, got {num_windows}")
    y = torch.randint(0, height - window + 1, (batch, num_windows, 1), generator=generator)
    x = torch.randint(0, width - window + 1, (batch, num_windows, 1), generator=generator)
    return torch.cat([y, x], -1).to(device)


def _gather_windows(x: torch.Tensor, corners: torch.Tensor, window: int) -> torch.Tensor:
    b, n = corners.shape[:2]
    ar = torch.arange(window, device=x.device)
    ys = (corners[..., 0:1].to(x.device) + ar)[:, :, :, None]  # (B, N, l, 1)
    xs = (corners[..., 1:2].to(x.device) + ar)[:, :, None, :]  # (B, N, 1, l)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    return x[:, 0][bi, ys, xs].reshape(b * n, 1, window, window)


def local_ssigm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                     window: int = 23, num_windows: int = 100, layout: str = "random",
                     windows: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     scales: int = 1) -> torch.Tensor:
    """Local SSIGM (PRV2): scale/shift fitted in each of N square windows of side ``window`` (23 and
    ~100 windows per the paper), gradient L1 of each window's residual, averaged over windows that
    hold valid pixels. Zero for any per-window affine change of the target.

    windows: explicit (B, N, 2) top-left corners; else drawn by ``sample_windows(layout=...)``.
    """
    valid = valid_mask(target, mask, pred)
    pred, target = as_map(pred, "pred"), as_map(target, "target")
    b, _, h, w = pred.shape
    if windows is None:
        windows = sample_windows(b, h, w, window, num_windows, layout=layout, generator=generator,
                                 device=pred.device)
    elif windows.ndim != 3 or windows.shape[0] != b or windows.shape[2] != 2:
        raise ValueError(f"windows must be (B={b}, N, 2) top-left corners, got {tuple(windows.shape)}")
    elif windows.numel() and (windows.min() < 0 or windows[..., 0].max() > h - window
                              or windows[..., 1].max() > w - window):
        raise ValueError(f"windows must lie inside the {h}x{w} map for window {window}")
    p, t = _gather_windows(pred, windows, window), _gather_windows(target, windows, window)
    m = _gather_windows(valid, windows, window)
    per, has = _ssigm(p, t, m, scales)
    return per_sample_mean(per, has)
