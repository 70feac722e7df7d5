"""Pure numpy reference of every tile-engine op (DESIGN.md crop semantics).

This module is the specification in code: the native CPU and CUDA kernels and
`edgedepth.tiling_torch` are tested against it, and `edgedepth.tiling` falls back to it (with a
warning) when no native extension was built. It does no argument checking; `edgedepth.tiling`
validates before calling it. Everything is computed in float64 and cast at the end.

Crop: output pixel (i, j) of box (y0, x0, h, w) resized to (H, W) samples the source at
``y = y0 + (i + 0.5) * (h / H) - 0.5`` (likewise x), bilinear, with the coordinate clamped to
``[0, size - 1]`` of the *source* (not the box).

Stitch: frame pixel y is covered by box (y0, h) when its centre ``y + 0.5`` lies in
``[y0, y0 + h)``. Its position in the box is ``u = (y + 0.5 - y0) / h`` in (0, 1); the tile
(th rows) is sampled at ``u * th - 0.5`` with the crop rule (clamped to the tile), and weighted by
``f(u_y) * f(u_x)`` where f is the 1-D window profile below. For an integer box this is exactly
``F.interpolate(tile, (h, w), mode="bilinear", align_corners=False)`` weighted by ``window(h, w)``.
"""
from __future__ import annotations

import math

import numpy as np

WINDOWS = ("uniform", "linear", "cosine", "gaussian")
# Every window is floored here so that a pixel at the very rim of a fractional box still
# normalises; for integer boxes of up to ~700 px the floor is never reached.
WINDOW_FLOOR = 1e-6
# Gaussian window standard deviation, as a fraction of the box side.
GAUSSIAN_SIGMA = 0.25


def window_profile(u: np.ndarray, kind: str) -> np.ndarray:
    """1-D window f(u) at positions u in [0, 1] of a box side (float64, >= WINDOW_FLOOR)."""
    u = np.asarray(u, dtype=np.float64)
    if kind == "uniform":
        f = np.ones_like(u)
    elif kind == "linear":
        f = 1.0 - np.abs(2.0 * u - 1.0)
    elif kind == "cosine":
        f = 0.5 - 0.5 * np.cos(2.0 * np.pi * u)
    elif kind == "gaussian":
        f = np.exp(-0.5 * ((u - 0.5) / GAUSSIAN_SIGMA) ** 2)
    else:
        raise ValueError(f"window kind must be one of {WINDOWS}, got {kind!r}")
    return np.maximum(f, WINDOW_FLOOR)


def window(h: int, w: int, kind: str = "cosine") -> np.ndarray:
    """(h, w) float32 weights: f((i + 0.5) / h) * f((j + 0.5) / w)."""
    fy = window_profile((np.arange(h) + 0.5) / h, kind)
    fx = window_profile((np.arange(w) + 0.5) / w, kind)
    return (fy[:, None] * fx[None, :]).astype(np.float32)


def crop_axis(start: float, length: float, out_len: int, src_len: int):
    """Sample table of one crop axis: (lo, hi, frac) with lo/hi int64 indices into the source."""
    lo, hi, frac = crop_axes(np.array([start]), np.array([length]), out_len, src_len)
    return lo[0], hi[0], frac[0]


def crop_axes(starts: np.ndarray, lengths: np.ndarray, out_len: int, src_len: int):
    """crop_axis of many boxes at once: starts, lengths (M,) -> (lo, hi, frac), each (M, out_len)."""
    starts = np.asarray(starts, dtype=np.float64)[:, None]
    lengths = np.asarray(lengths, dtype=np.float64)[:, None]
    pos = starts + (np.arange(out_len, dtype=np.float64) + 0.5) * (lengths / out_len) - 0.5
    pos = np.clip(pos, 0.0, src_len - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src_len - 1)
    return lo, hi, pos - lo


def stitch_axis(start: float, length: float, tile_len: int, frame_len: int, kind: str):
    """Stitch table of one axis: (first, lo, hi, frac, weight) for frame pixels first..first+n-1."""
    first = max(int(np.ceil(start - 0.5)), 0)
    stop = min(int(np.ceil(start + length - 0.5)), frame_len)
    pix = np.arange(first, max(stop, first), dtype=np.float64)
    u = (pix + 0.5 - start) / length
    pos = np.clip(u * tile_len - 0.5, 0.0, tile_len - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, tile_len - 1)
    return first, lo, hi, pos - lo, window_profile(u, kind)


def sample_tables(src: np.ndarray, ty, tx) -> np.ndarray:
    """src (..., Hs, Ws) float64 sampled at the outer product of two axis tables (lo, hi, frac)."""
    (ylo, yhi, fy), (xlo, xhi, fx) = ty, tx
    fy = fy[:, None]
    top = src[..., ylo, :]
    bot = src[..., yhi, :]
    rows = top * (1.0 - fy) + bot * fy
    return rows[..., xlo] * (1.0 - fx) + rows[..., xhi] * fx


def crop_resize(src: np.ndarray, boxes: np.ndarray, out_size: tuple[int, int], *, mean=None,
                std=None, dtype=np.float32) -> np.ndarray:
    """HWC uint8 RGB -> (N, 3, H, W) normalised, or CHW float -> (N, C, H, W)."""
    out_h, out_w = out_size
    if src.dtype == np.uint8:
        mean = np.zeros(3) if mean is None else np.asarray(mean, dtype=np.float64)
        std = np.ones(3) if std is None else np.asarray(std, dtype=np.float64)
        chw = np.transpose(src, (2, 0, 1)).astype(np.float64)
    else:
        chw = src.astype(np.float64)
    _, src_h, src_w = chw.shape
    out = np.empty((len(boxes), chw.shape[0], out_h, out_w), dtype=dtype)
    for n, (y0, x0, h, w) in enumerate(np.asarray(boxes, dtype=np.float64)):
        v = sample_tables(chw, crop_axis(y0, h, out_h, src_h), crop_axis(x0, w, out_w, src_w))
        if src.dtype == np.uint8:
            v = (v / 255.0 - mean[:, None, None]) / std[:, None, None]
        out[n] = v
    return out


def stitch(tiles: np.ndarray, boxes: np.ndarray, height: int, width: int,
           window: str = "cosine") -> np.ndarray:
    """(N, C, th, tw) tiles -> (C, height, width) float32 weighted average; uncovered pixels 0."""
    _, c, th, tw = tiles.shape
    acc = np.zeros((c, height, width), dtype=np.float64)
    wsum = np.zeros((height, width), dtype=np.float64)
    for tile, (y0, x0, h, w) in zip(tiles.astype(np.float64), np.asarray(boxes, dtype=np.float64)):
        fy0, *ty, wy = stitch_axis(y0, h, th, height, window)
        fx0, *tx, wx = stitch_axis(x0, w, tw, width, window)
        if len(wy) == 0 or len(wx) == 0:
            continue
        weight = wy[:, None] * wx[None, :]
        ys, xs = slice(fy0, fy0 + len(wy)), slice(fx0, fx0 + len(wx))
        acc[:, ys, xs] += sample_tables(tile, ty, tx) * weight
        wsum[ys, xs] += weight
    covered = wsum > 0
    out = np.zeros_like(acc)
    np.divide(acc, wsum, out=out, where=covered)
    return out.astype(np.float32)


JOINT_FLOOR = 1e-4  # csrc kJointFloor: the least range weight, so that every pixel normalises
#: csrc kJointFlat: taps whose depths agree within this share of the least take the bilinear blend.
JOINT_FLAT = 0.02
#: Ways tiles become the full-resolution map (``edgedepth.tiling.Tiling.upsample``).
UPSAMPLING = ("bilinear", "joint_bilateral", "guided")
#: Smallest colour scale of the joint upsampling (below it every range weight is at the floor).
MIN_JOINT_SIGMA = 1e-3


def range_weight(t: np.ndarray) -> np.ndarray:
    """max((1 - t/16)^16, JOINT_FLOOR) for t >= 0: the joint upsampling's stand-in for exp(-t)
    (within 4 % of it where exp(-t) > 0.02; four multiplies in the native loop instead of an exp)."""
    return np.maximum(np.maximum(1.0 - t / 16.0, 0.0) ** 16, JOINT_FLOOR)


def joint_upsample(depth: np.ndarray, guide: np.ndarray, image: np.ndarray, sigma: float) -> np.ndarray:
    """Joint bilateral upsampling (Kopf et al. 2007) of (h, w) ``depth`` to the (H, W) frame of
    ``image`` (uint8 RGB), with the 2x2 support of a bilinear resize (crop semantics of the whole
    map): output pixel p = sum_k s_k r_k d_k / sum_k s_k r_k over its four bilinear taps k, s_k the
    bilinear weight, r_k = range_weight((c_k - c_min) / (2 sigma^2)), c_k the squared distance
    between p's colour (image / 255) and ``guide`` (3, h, w) at k, c_min the least c_k.
    Where the taps' colours agree it is the bilinear resize; across an edge the side whose colour
    matches p wins. Where the four tap depths agree within ``JOINT_FLAT`` of the least (max - min
    <= JOINT_FLAT * min) p is the bilinear blend: no weighting of such taps moves it by more than
    that, and on a smooth surface the colours would only copy texture into depth.
    -> (H, W) float32 (not finished)."""
    h, w = depth.shape
    height, width = image.shape[:2]
    ylo, yhi, fy = crop_axis(0.0, h, height, h)
    xlo, xhi, fx = crop_axis(0.0, w, width, w)
    rgb = image.astype(np.float64) / 255.0
    g = guide.astype(np.float64)
    taps = [(ylo, xlo, (1 - fy)[:, None] * (1 - fx)[None, :]), (ylo, xhi, (1 - fy)[:, None] * fx[None, :]),
            (yhi, xlo, fy[:, None] * (1 - fx)[None, :]), (yhi, xhi, fy[:, None] * fx[None, :])]
    dist = [np.sum((rgb - np.moveaxis(g[:, ys][:, :, xs], 0, -1)) ** 2, axis=-1) for ys, xs, _ in taps]
    least = np.minimum.reduce(dist)
    num = np.zeros((height, width))
    den = np.zeros((height, width))
    bilinear = np.zeros((height, width))
    values32 = [depth[ys][:, xs] for ys, xs, _ in taps]
    for (_, _, s), c, v in zip(taps, dist, (v.astype(np.float64) for v in values32)):
        wk = s * range_weight((c - least) / (2.0 * sigma * sigma))
        num += wk * v
        den += wk
        bilinear += s * v
    # The test in float32, as the native loop makes it, so that both pick the same pixels.
    lo, hi = np.minimum.reduce(values32), np.maximum.reduce(values32)
    with np.errstate(invalid="ignore", over="ignore"):
        flat = hi - lo <= np.float32(JOINT_FLAT) * lo
    return np.where(flat, bilinear, num / den).astype(np.float32)


def _windows(a: np.ndarray, r: int) -> np.ndarray:
    """(k, ...) stack of the (2r+1)^2 shifts of ``a`` over its last two axes, rows then columns from
    (-r, -r), edges repeated (a window clipped to the map sees the same values)."""
    h, w = a.shape[-2:]
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(r, r), (r, r)], mode="edge")
    return np.stack([p[..., r + dy:r + dy + h, r + dx:r + dx + w]
                     for dy in range(-r, r + 1) for dx in range(-r, r + 1)])


def snap_edges(depth: np.ndarray, guide: np.ndarray, contrast: float) -> np.ndarray:
    """Depth steps kept as steps: (h, w) float32 ``depth`` and its (3, h, w) float32 ``guide`` (the
    frame at that size, / 255) -> (h, w) float32. A pixel whose 3x3 neighbourhood spans a depth
    ratio r3 = max / min > exp(``contrast``), while its 5x5 one spans less than r3^1.75 (a step with
    level ground beside it; on a slope the 5x5 ratio is r3^2 or more), takes the depth of the 3x3
    minimum or maximum (the
    first in row order), whichever is closer to it in guide colour (the minimum on a tie). A
    regressor's blurred step puts pixels between the two surfaces (flying pixels); after this each
    is on one of them. Pixels with a non-positive or non-finite depth in their 5x5, and the two
    outermost rows and columns (whose 5x5 the map's border would clip), keep theirs.
    Ratios, square roots and colour distances in float32, as the native loop computes them."""
    d = depth.astype(np.float32)
    ratio = np.float32(math.exp(contrast))
    near = _windows(d, 1)
    mn3, mx3 = near.min(0), near.max(0)
    mn5, mx5 = _windows(mn3, 1).min(0), _windows(mx3, 1).max(0)
    good = np.isfinite(d) & (d > 0)
    ok = _windows(_windows(good, 1).all(0), 1).all(0)
    ok[:2], ok[-2:], ok[:, :2], ok[:, -2:] = False, False, False, False  # a clipped 5x5 makes slopes look level
    with np.errstate(all="ignore"):
        r3, r5 = mx3 / mn3, mx5 / mn5
        root = np.sqrt(r3)
        step = ok & (r3 > ratio) & (r5 < r3 * root * np.sqrt(root))  # r3^1.75 from exact square roots
    colours = _windows(guide.astype(np.float32), 1)  # (9, 3, h, w)
    g = guide.astype(np.float32)

    def colour_distance(k: np.ndarray) -> np.ndarray:
        c = np.take_along_axis(colours, k[None, None].repeat(3, 1), 0)[0] - g
        return (c[0] * c[0] + c[1] * c[1]) + c[2] * c[2]

    kmin, kmax = near.argmin(0), near.argmax(0)
    take_max = colour_distance(kmax) < colour_distance(kmin)
    return np.where(step, np.where(take_max, mx3, mn3), d).astype(np.float32)


def finish(depth: np.ndarray, scale: float, valid_max: float) -> np.ndarray:
    """Finishes float32 ``depth`` in place (times ``scale``; NaN, inf and <= 0 become 0); returns
    the bool validity mask: finite and <= ``valid_max`` (metres, before the scale; inf = no limit),
    finite after the scale, > 0. In float32, as the native kernel computes it."""
    valid = np.isfinite(depth)
    if math.isfinite(valid_max):
        valid &= depth <= np.float32(valid_max)
    if scale != 1.0:
        with np.errstate(over="ignore", invalid="ignore"):
            depth *= np.float32(scale)
        valid &= np.isfinite(depth)
    valid &= depth > 0
    if not valid.all():
        np.nan_to_num(depth, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(depth, 0.0, out=depth)
    return valid
