"""Edge-aware upsampling of a low-resolution depth map guided by the full-resolution image.

The classical answer to "the coarse map is blurry" (He, Sun, Tang: Guided Image Filtering, 2010):
upsample ln depth bilinearly, then fit it locally as an affine function of the image's luminance,
so depth edges snap to image edges inside each window. It is the baseline a refiner has to beat
(benchmarks/bench_accuracy.py) and needs nothing but numpy.
"""
from __future__ import annotations

import numpy as np

from .depth_io import as_depth_map
from .metrics import resize_bilinear

__all__ = ["box_mean", "guided_filter", "guided_upsample"]


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1) x (2r+1) window around each pixel of an HW array, the window clipped
    to the image (so border pixels average fewer values); float64. Summed-area table, O(HW)."""
    x = np.asarray(x, np.float64)
    h, w = x.shape
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    sat = np.zeros((h + 1, w + 1))
    np.cumsum(np.cumsum(x, 0), 1, out=sat[1:, 1:])
    y0, y1 = np.clip(np.arange(h) - r, 0, h), np.clip(np.arange(h) + r + 1, 0, h)
    x0, x1 = np.clip(np.arange(w) - r, 0, w), np.clip(np.arange(w) + r + 1, 0, w)
    total = sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0]
    count = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return total / count


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: q = mean(a) * guide + mean(b) with a, b the least-squares fit
    src ~ a * guide + b in every window (``eps`` regularises a). HW float in, HW float64 out."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_i * mean_p
    var = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def guided_upsample(depth: np.ndarray, image: np.ndarray, radius: int = 8, eps: float = 1e-3) -> np.ndarray:
    """Low-resolution depth (h, w) metres > 0 -> (H, W) float32 metres at the size of ``image``
    (HxWx3 uint8 RGB): bilinear upsampling of ln depth, then the guided filter with the image's
    luminance in [0, 1] as guide (``radius`` in image pixels)."""
    depth = as_depth_map(depth, "depth")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    if not (np.isfinite(depth).all() and (depth > 0).all()):
        raise ValueError("depth must be finite and > 0 everywhere (fill invalid pixels first)")
    log_up = resize_bilinear(np.log(depth).astype(np.float32), image.shape[:2]).astype(np.float64)
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    return np.exp(guided_filter(luma, log_up, radius, eps)).astype(np.float32)
