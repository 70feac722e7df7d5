"""Edge-aware upsampling of a low-resolution depth map guided by the full-resolution image.

The classical answer to "the coarse map is blurry" (He, Sun, Tang: Guided Image Filtering, 2010):
upsample ln depth bilinearly, then fit it locally as an affine function of the image's luminance,
so depth edges snap to image edges inside each window. It is the baseline a refiner has to beat
(benchmarks/bench_accuracy.py) and needs nothing but numpy.

:func:`fast_guided_upsample` is the runtime's way (He, Sun: Fast Guided Filter, 2015): the fit is
made at the low resolution against the frame's colours there, and only its coefficients are
resized to the frame, where each pixel's own colour places the depth step. It is the reference of
the native ``edgedepth.tiling.guided_upsample`` (``Tiling.upsample = "guided"``).
"""
from __future__ import annotations

import numpy as np

from .depth_io import as_depth_map
from .metrics import resize_bilinear
from .tiling_reference import crop_axis

__all__ = ["box_mean", "guided_filter", "guided_upsample", "pool", "fast_guided_upsample"]


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


def pool(x: np.ndarray, step: int) -> np.ndarray:
    """Means of ``step`` x ``step`` blocks over the last two axes, blocks clipped to the array:
    (..., h, w) -> (..., ceil(h / step), ceil(w / step)), float64."""
    x = np.asarray(x, np.float64)
    h, w = x.shape[-2:]
    hp, wp = -(-h // step), -(-w // step)
    pad = [(0, 0)] * (x.ndim - 2) + [(0, hp * step - h), (0, wp * step - w)]
    total = np.pad(x, pad).reshape(*x.shape[:-2], hp, step, wp, step).sum((-3, -1))
    count = np.pad(np.ones((h, w)), pad[-2:]).reshape(hp, step, wp, step).sum((1, 3))
    return total / count


def fast_guided_upsample(depth: np.ndarray, guide: np.ndarray, image: np.ndarray, step: int, radius: int,
                         eps: float) -> np.ndarray:
    """(h, w) float32 ``depth`` (metres) -> (H, W) float32 at the size of ``image`` ((H, W, 3)
    uint8 RGB); ``guide`` (3, h, w) float32 is the frame resized to (h, w), / 255.

    1. Depth and guide are pooled ``step`` x ``step`` (:func:`pool`; ln depth and colours
       averaged); a pooled pixel is valid where every depth of its block is finite and > 0.
    2. Each pooled pixel fits ln depth ~ a . rgb + b by least squares over its (2 radius + 1)^2
       window clipped to the map, among valid pooled pixels, with ``eps`` added to the colour
       covariance's diagonal (no fit where the window has none).
    3. A, B = the mean of a and b over the fits in each window; B is NaN at invalid pooled pixels.
    4. A and B are resized to (H, W) with the crop semantics (horizontal blend first), and the
       output is exp(A . rgb / 255 + B) with the frame's own colours, the exponent clamped to the
       range of the valid pooled ln depths (no extrapolation past the nearest or farthest).
    Float64 throughout (the native code: float32 after the fit). Not finished."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _fast_guided_upsample(np.asarray(depth, np.float64), np.asarray(guide, np.float64), image, step,
                                     radius, eps)


def _fast_guided_upsample(d: np.ndarray, guide: np.ndarray, image: np.ndarray, step: int, radius: int,
                          eps: float) -> np.ndarray:
    good = np.isfinite(d) & (d > 0)
    lnd = np.where(good, np.log(np.where(good, d, 1.0)), 0.0)
    m = (pool(good, step) == 1.0).astype(np.float64)
    p = np.where(m > 0, pool(lnd, step), 0.0)
    g = pool(guide, step)
    h, w = p.shape

    def wmean(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return box_mean(weight * x, radius) / box_mean(weight, radius)

    has = box_mean(m, radius) > 0
    mi = [wmean(g[c], m) for c in range(3)]
    mp = wmean(p, m)
    cov = np.stack([wmean(g[c] * p, m) - mi[c] * mp for c in range(3)], -1)
    sigma = np.empty((h, w, 3, 3))
    for i in range(3):
        for j in range(3):
            sigma[..., i, j] = wmean(g[i] * g[j], m) - mi[i] * mi[j] + (eps if i == j else 0.0)
    sigma[~has] = np.eye(3)
    cov[~has] = 0.0
    a = np.linalg.solve(sigma, cov[..., None])[..., 0]  # (h, w, 3)
    b = np.where(has, mp - np.einsum("hwc,chw->hw", a, np.stack(mi)), 0.0)
    fit = has.astype(np.float64)
    coef = [wmean(a[..., c], fit) for c in range(3)] + [wmean(b, fit)]
    coef[3] = np.where(m > 0, coef[3], np.nan)
    height, width = image.shape[:2]
    ylo, yhi, fy = crop_axis(0.0, h, height, h)
    xlo, xhi, fx = crop_axis(0.0, w, width, w)

    def resize(c: np.ndarray) -> np.ndarray:
        rows = (1 - fx) * c[:, xlo] + fx * c[:, xhi]
        return (1 - fy)[:, None] * rows[ylo] + fy[:, None] * rows[yhi]

    rgb = np.asarray(image, np.float64)
    q = sum(resize(coef[c]) * rgb[..., c] for c in range(3)) / 255.0 + resize(coef[3])
    lo, hi = (float(p[m > 0].min()), float(p[m > 0].max())) if (m > 0).any() else (0.0, 0.0)
    return np.exp(np.where(np.isnan(q), q, np.clip(q, lo, hi))).astype(np.float32)
