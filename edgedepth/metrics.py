"""The field's depth metrics, numpy only (they run on a device).

Conventions (METHODS.md §5, as the reference code scores): the prediction is resized bilinearly
to the ground truth (DESIGN crop semantics, i.e. ``F.interpolate(bilinear, align_corners=False)``),
optionally aligned (least squares) for relative-depth models, then clamped to
``[min_depth, max_depth]``; pixels are valid where ``min_depth < gt < max_depth`` (and the
optional mask is True). Data-set scores are means of per-image scores.

Pointwise metrics take 1-D arrays of valid pixels (metres, > 0):
``delta_k`` share with max(p/g, g/p) < 1.25^k; ``abs_rel`` mean |p-g|/g; ``sq_rel`` mean (p-g)^2/g;
``rmse`` sqrt mean (p-g)^2; ``rmse_log`` sqrt mean (ln p - ln g)^2; ``log10`` mean |log10 p - log10 g|;
``silog`` 100 sqrt(mean e^2 - (mean e)^2), e = ln p - ln g.
Map metrics (HW arrays): :func:`soft_edge_error`, :func:`boundary_prf`, :func:`si_boundary_f1`,
:func:`ordinal_error`; tile metric: :func:`consistency_error`; video metrics: :func:`temporal_flicker`,
:func:`sequence_flicker`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .depth_io import as_depth_map

MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0
ALIGN_MODES = ("scale", "scale_shift", "scale_shift_disparity")
POINTWISE = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


# ----------------------------------------------------------------------------- preparation


def resize_bilinear(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HW float to ``size`` (H, W) with half-pixel bilinear sampling (no antialiasing,
    like ``F.interpolate(mode="bilinear", align_corners=False)``); float32."""
    depth = as_depth_map(depth, "depth")
    if depth.shape == tuple(size):
        return depth.astype(np.float32, copy=False)
    from .tiling_reference import crop_resize  # the one implementation of DESIGN's crop rule

    box = np.array([[0.0, 0.0, depth.shape[0], depth.shape[1]]])
    return crop_resize(depth[None].astype(np.float32), box, tuple(size))[0, 0]


def valid_mask(gt: np.ndarray, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH,
               mask: Optional[np.ndarray] = None) -> np.ndarray:
    """HW bool: ground truth strictly inside (min_depth, max_depth), finite, and ``mask``."""
    gt = as_depth_map(gt, "gt")
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != gt.shape or mask.dtype != bool:
            raise ValueError(f"mask must be bool of shape {gt.shape}, got {mask.shape} {mask.dtype}")
        valid &= mask
    return valid


def align(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, mode: str = "scale_shift") -> np.ndarray:
    """Least-squares alignment of a relative prediction to ``gt`` over ``valid`` pixels.

    ``scale``: s p with s = sum(p g) / sum(p^2). ``scale_shift``: s p + t minimising
    sum (s p + t - g)^2. ``scale_shift_disparity``: fit s/p + t to 1/g (for models predicting
    affine-invariant inverse depth given as depth), then invert; non-positive results become
    ``MIN_DEPTH`` so the clamp that follows handles them."""
    if mode not in ALIGN_MODES:
        raise ValueError(f"align mode must be one of {ALIGN_MODES}, got {mode!r}")
    if valid.sum() < 2:
        raise ValueError("alignment needs at least 2 valid pixels")
    p = pred[valid].astype(np.float64)
    g = gt[valid].astype(np.float64)
    if mode == "scale":
        s = (p @ g) / max(p @ p, 1e-12)
        return (pred * s).astype(np.float32)
    if mode == "scale_shift_disparity":
        p, g = 1.0 / np.maximum(p, 1e-12), 1.0 / g
    A = np.stack([p, np.ones_like(p)], axis=1)
    (s, t), *_ = np.linalg.lstsq(A, g, rcond=None)
    if mode == "scale_shift":
        return (pred * s + t).astype(np.float32)
    disp = s / np.maximum(pred.astype(np.float64), 1e-12) + t
    return np.where(disp > 0, 1.0 / np.maximum(disp, 1e-12), MIN_DEPTH).astype(np.float32)


def prepare(pred, gt, mask=None, *, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH,
            align_mode: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """(prediction resized to gt, aligned if asked, clamped to [min_depth, max_depth]; valid mask)."""
    gt = as_depth_map(gt, "gt")
    pred = as_depth_map(pred, "pred")
    if not np.isfinite(pred).all():
        raise ValueError("pred holds NaN or inf")
    pred = resize_bilinear(pred, gt.shape)
    valid = valid_mask(gt, min_depth, max_depth, mask)
    if align_mode is not None:
        pred = align(pred, gt, valid, align_mode)
    return np.clip(pred, min_depth, max_depth).astype(np.float32), valid


# ----------------------------------------------------------------------------- pointwise


def pointwise_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Every pointwise metric over 1-D arrays of valid pixels (both > 0, metres)."""
    p = np.asarray(pred, np.float64).ravel()
    g = np.asarray(gt, np.float64).ravel()
    if p.shape != g.shape or p.size == 0:
        raise ValueError(f"pred and gt must be equal non-empty arrays, got {p.shape} and {g.shape}")
    if (p <= 0).any() or (g <= 0).any():
        raise ValueError("pointwise metrics need pred > 0 and gt > 0 (clamp and mask first)")
    ratio = np.maximum(p / g, g / p)
    e = np.log(p) - np.log(g)
    return {
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(e ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "silog": float(100.0 * np.sqrt(max(np.mean(e ** 2) - np.mean(e) ** 2, 0.0))),
    }


# ----------------------------------------------------------------------------- edges


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of HW bool by a (2r+1)x(2r+1) square (Chebyshev distance <= ``radius``)."""
    out = np.asarray(mask, bool).copy()
    for _ in range(int(radius)):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        rows = grown.copy()
        grown[:, 1:] |= rows[:, :-1]
        grown[:, :-1] |= rows[:, 1:]
        out = grown
    return out


def disparity_edges(gt: np.ndarray, focal_baseline: float, threshold: float = 1.0) -> np.ndarray:
    """HW bool: SEE's edge pixels, where the ground-truth disparity ``focal_baseline / gt``
    (px; ``focal_baseline`` = fx x baseline in px·m) differs from a 4-neighbour by more than
    ``threshold`` px. Both pixels of a jump are marked; invalid (<= 0) pixels never are."""
    gt = as_depth_map(gt, "gt")
    ok = gt > 0
    disp = np.where(ok, focal_baseline / np.where(ok, gt, 1.0), 0.0)
    return _pair_edges(disp, ok, lambda a, b: np.abs(a - b) > threshold)


def ratio_edges(gt: np.ndarray, ratio: float = 1.05) -> np.ndarray:
    """HW bool: pixels whose depth differs from a valid 4-neighbour by more than ``ratio`` times
    (SEE's edges when the stereo baseline is unknown)."""
    gt = as_depth_map(gt, "gt")
    ok = gt > 0
    d = np.where(ok, gt, 1.0)
    return _pair_edges(d, ok, lambda a, b: np.maximum(a / b, b / a) > ratio)


def _pair_edges(values, ok, jump):
    edges = np.zeros(values.shape, bool)
    for sl_a, sl_b in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                       ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
        j = jump(values[sl_a], values[sl_b]) & ok[sl_a] & ok[sl_b]
        edges[sl_a] |= j
        edges[sl_b] |= j
    return edges


def soft_edge_error(pred: np.ndarray, gt: np.ndarray, edges: np.ndarray) -> float:
    """SEE: mean over ``edges`` pixels of min over the 3x3 neighbourhood offsets (dy, dx) of
    |gt(y+dy, x+dx) - pred(y, x)| (metres); neighbours outside the frame or with invalid gt do
    not count. NaN if there is no edge pixel."""
    pred, gt = as_depth_map(pred, "pred"), as_depth_map(gt, "gt")
    if not edges.any():
        return float("nan")
    h, w = gt.shape
    padded = np.full((h + 2, w + 2), np.inf)
    padded[1:-1, 1:-1] = np.where(gt > 0, gt, np.inf)
    best = np.full((h, w), np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            np.minimum(best, np.abs(shifted - pred), out=best)
    return float(best[edges].mean())


def canny(value: np.ndarray, low: float, high: float, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Canny edges of an HW map (here log depth), no pre-smoothing.

    Gradient: Sobel / 8 (so a ramp of slope s per pixel has magnitude s; a step of height r gives
    r/2 on the two pixels beside it), edge-replicated borders. Non-maximum suppression along the
    gradient direction quantised to 0/45/90/135 degrees keeps a pixel whose magnitude is > its
    neighbour on the negative side and >= the one on the positive side (ties go to the first
    pixel of a step). Hysteresis: pixels >= ``high`` seed edges that grow through 8-connected
    pixels >= ``low``. Pixels with an invalid pixel in their 3x3 neighbourhood are never edges."""
    v = np.asarray(value, np.float64)
    p = np.pad(v, 1, mode="edge")
    gx = ((p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])) / 8
    gy = ((p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])) / 8
    mag = np.hypot(gx, gy)
    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (np.floor((angle + 22.5) / 45.0).astype(np.int64)) % 4  # 0: x, 1: diag, 2: y, 3: anti-diag
    m = np.pad(mag, 1, mode="constant")
    h, w = v.shape
    keep = np.zeros((h, w), bool)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        nxt = m[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        prv = m[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == s) & (mag > prv) & (mag >= nxt)
    if valid is not None:
        keep &= ~dilate(~np.asarray(valid, bool), 1)
    weak = keep & (mag >= low)
    return hysteresis(weak, keep & (mag >= high))


def hysteresis(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """HW bool: the pixels of ``weak`` 8-connected through ``weak`` to a pixel of ``strong`` (which
    must lie in ``weak``). Connected components of the weak pixels by min-label propagation with
    pointer jumping: O(n log n) in the number of weak pixels, where growing the strong set one
    dilation at a time needs as many full-frame passes as the longest weak chain (~1000 at 4K)."""
    h, w = weak.shape
    idx = np.flatnonzero(weak)
    n = idx.size
    if n == 0:
        return np.zeros((h, w), bool)
    rows, cols = np.divmod(idx, w)
    a_list, b_list = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbour pair once
        ok = (rows + dy < h) & (cols + dx >= 0) & (cols + dx < w)
        target = idx[ok] + dy * w + dx
        pos = np.searchsorted(idx, target)
        pos_ok = pos < n
        hit = np.zeros(target.size, bool)
        hit[pos_ok] = idx[pos[pos_ok]] == target[pos_ok]
        a_list.append(np.flatnonzero(ok)[hit])
        b_list.append(pos[hit])
    a, b = np.concatenate(a_list), np.concatenate(b_list)
    label = np.arange(n)
    while True:
        before = label.copy()
        np.minimum.at(label, a, label[b])
        np.minimum.at(label, b, label[a])
        while True:  # pointer jumping: every node straight to its root
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            break
    seeded = np.zeros(n, bool)
    seeded[label[np.searchsorted(idx, np.flatnonzero(strong & weak))]] = True
    out = np.zeros(h * w, bool)
    out[idx[seeded[label]]] = True
    return out.reshape(h, w)


def depth_edges(depth: np.ndarray, valid: np.ndarray, *, low: float = 0.02, high: float = 0.04) -> np.ndarray:
    """HW bool: Canny edges of ln depth inside ``valid`` (thresholds in ln units per pixel)."""
    depth = as_depth_map(depth, "depth")
    return canny(np.log(np.where(valid, np.maximum(depth, 1e-12), 1.0)), low, high, valid)


def boundary_prf(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, *, tolerance: int = 1,
                 low: float = 0.02, high: float = 0.04, gt_edges: Optional[np.ndarray] = None) -> dict:
    """Boundary precision/recall/F1: Canny edges of ln depth (see :func:`canny`; thresholds in ln
    units per pixel) of prediction and ground truth, restricted to ``valid``. Precision = share of
    predicted edge pixels within ``tolerance`` px (Chebyshev) of a gt edge; recall = share of gt
    edge pixels within ``tolerance`` of a predicted edge; F1 their harmonic mean (0 if both 0).
    Keys ``b_precision``, ``b_recall``, ``b_f1`` (NaN precision/recall when there is nothing to
    measure). ``gt_edges``: ``depth_edges(gt, valid, ...)`` when the caller already has it."""
    eg = depth_edges(gt, valid, low=low, high=high) if gt_edges is None else np.asarray(gt_edges, bool)
    ep = depth_edges(pred, valid, low=low, high=high)
    n_p, n_g = int(ep.sum()), int(eg.sum())
    precision = float((ep & dilate(eg, tolerance)).sum() / n_p) if n_p else float("nan")
    recall = float((eg & dilate(ep, tolerance)).sum() / n_g) if n_g else float("nan")
    pr = np.nan_to_num([precision, recall])
    f1 = float(2 * pr[0] * pr[1] / (pr[0] + pr[1])) if pr.sum() > 0 else 0.0
    return {"b_precision": precision, "b_recall": recall, "b_f1": f1}


def si_boundary_f1(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None,
                   t_min: float = 1.05, t_max: float = 1.25, n: int = 10) -> float:
    """Depth Pro's scale-invariant boundary F1. On inverse depth q, for each threshold t of
    ``linspace(t_min, t_max, n)`` and each of the 4 neighbour directions, a pixel pair is a
    boundary where q_neighbour / q_pixel > t. Recall = mean over directions of
    |pred & gt| / max(|gt|, 1), precision likewise over |pred|; F1 = 2PR/(P+R) (0 if P+R = 0).
    The result is the average of F1 weighted by t / sum(t). Pairs with an invalid pixel are
    ignored."""
    pred, gt = as_depth_map(pred, "pred"), as_depth_map(gt, "gt")
    ok = (gt > 0) if valid is None else np.asarray(valid, bool)
    qp = 1.0 / np.maximum(pred.astype(np.float64), 1e-12)
    qg = 1.0 / np.where(ok, gt, 1.0).astype(np.float64)
    thresholds = np.linspace(t_min, t_max, n)
    weights = thresholds / thresholds.sum()
    pairs = []
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        pairs.append((qp[a] / qp[b], qg[a] / qg[b], ok[a] & ok[b]))
    score = 0.0
    for t, wgt in zip(thresholds, weights):
        r = p = 0.0
        for rp, rg, both in pairs:
            ep, eg = (rp > t) & both, (rg > t) & both
            hit = np.count_nonzero(ep & eg)
            r += 0.25 * hit / max(np.count_nonzero(eg), 1)
            p += 0.25 * hit / max(np.count_nonzero(ep), 1)
        score += wgt * (2 * p * r / (p + r) if p + r > 0 else 0.0)
    return float(score)


def edge_band(gt: np.ndarray, valid: np.ndarray, radius: int = 2) -> np.ndarray:
    """HW bool: valid pixels within ``radius`` px (Chebyshev) of a ground-truth depth edge
    (:func:`depth_edges`, Canny on ln depth), where blur and misplaced boundaries cost the most."""
    return dilate(depth_edges(gt, valid), radius) & valid


def edge_band_abs_rel(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, radius: int = 2) -> float:
    """AbsRel over :func:`edge_band` pixels (``pred`` already at gt size and clamped); NaN if none.

    Unlike SEE, it does not reward blur: a bilinearly upsampled low-resolution map is wrong on
    both sides of every boundary it smears."""
    band = edge_band(gt, valid, radius)
    if not band.any():
        return float("nan")
    p, g = np.asarray(pred, np.float64)[band], np.asarray(gt, np.float64)[band]
    return float(np.mean(np.abs(p - g) / g))


def seam_error(depth: np.ndarray, boxes, offset: int = 4, valid: Optional[np.ndarray] = None,
               statistic: str = "mean") -> float:
    """Extra log-depth jump across tile borders: the mean |ln d(x) - ln d(x-1)| over the pixel pairs
    that straddle an inner tile border (the first column/row of a box that does not start at the
    frame edge, and the column/row after a box that does not end there), minus the same mean over
    pairs ``offset`` px to either side of those lines. 0 for a map without seams (depth's own
    gradient is as large near a border as on it); positive where tiles disagree.

    ``statistic`` "median" takes medians instead of means: scene edges that cross the borders are
    then outliers, so a small seam (tiles disagreeing by a fraction of a percent all along their
    border) shows above the scene's own steps, which dominate the means.

    depth (H, W) metres > 0 where ``valid``; boxes (N, 4) integer [y0, x0, h, w] frame pixels.
    """
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    d = as_depth_map(depth, "depth").astype(np.float64)
    h, w = d.shape
    ok = (d > 0) if valid is None else (np.asarray(valid, bool) & (d > 0))
    logd = np.log(np.where(ok, d, 1.0))
    boxes = np.asarray(boxes, np.float64)
    cols = {int(b) for x0, ww in boxes[:, [1, 3]] for b in (x0, x0 + ww) if 0 < b < w}
    rows = {int(b) for y0, hh in boxes[:, [0, 2]] for b in (y0, y0 + hh) if 0 < b < h}

    def jumps(lines, axis) -> list[np.ndarray]:
        out = []
        for line in lines:
            if not 1 <= line < (w if axis == 1 else h):
                continue
            a = logd[:, line] if axis == 1 else logd[line]
            b = logd[:, line - 1] if axis == 1 else logd[line - 1]
            m = (ok[:, line] & ok[:, line - 1]) if axis == 1 else (ok[line] & ok[line - 1])
            out.append(np.abs(a - b)[m])
        return out

    on = np.concatenate(jumps(cols, 1) + jumps(rows, 0) + [np.empty(0)])
    near = np.concatenate(jumps({c + s for c in cols for s in (-offset, offset)} - cols, 1)
                          + jumps({r + s for r in rows for s in (-offset, offset)} - rows, 0) + [np.empty(0)])
    if on.size == 0 or near.size == 0:
        return float("nan")
    reduce = np.mean if statistic == "mean" else np.median
    return float(reduce(on) - reduce(near))


# ----------------------------------------------------------------------------- ordinal, tiles


def ordinal_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, *, n_pairs: int = 50_000,
                  tau: float = 0.03, seed: int = 0, pairs: Optional[np.ndarray] = None) -> float:
    """ORD: share of point pairs whose depth order disagrees. The order of (a, b) is +1 if
    a/b > 1 + tau, -1 if a/b < 1/(1 + tau), else 0 (equal). Pairs are ``pairs`` ((M, 2) flat
    indices into the valid pixels, row-major) or ``n_pairs`` drawn uniformly with ``seed``."""
    p = np.asarray(pred, np.float64)[valid]
    g = np.asarray(gt, np.float64)[valid]
    if g.size < 2:
        return float("nan")
    if pairs is None:
        rng = np.random.default_rng(seed)
        pairs = rng.integers(0, g.size, size=(n_pairs, 2))
    i, j = np.asarray(pairs).T

    def order(x):
        r = x[i] / x[j]
        return np.where(r > 1 + tau, 1, np.where(r < 1 / (1 + tau), -1, 0))

    return float(np.mean(order(p) != order(g)))


def consistency_error(tiles: Sequence[np.ndarray], boxes) -> float:
    """Consistency error between overlapping tiles (PRO's CE, defined here exactly):

        CE = sum over tile pairs (a < b), over their shared frame pixels x with d_a(x) > 0 and
             d_b(x) > 0, of |d_a(x) - d_b(x)|   /   the same sum of (d_a(x) + d_b(x)) / 2

    i.e. the mean absolute disagreement divided by the mean depth on all overlaps. ``tiles[k]``
    is tile k's depth at frame resolution, shape (h_k, w_k) of its integer box
    ``boxes[k] = (y0, x0, h, w)`` in frame pixels. NaN when no two tiles overlap."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(tiles):
        raise ValueError(f"boxes must be (N, 4) with N = {len(tiles)} tiles, got {boxes.shape}")
    if not np.all(boxes == np.round(boxes)):
        raise ValueError("boxes must be integer-valued (y0, x0, h, w) in frame pixels")
    boxes = boxes.astype(np.int64)
    for k, (tile, (_, _, h, w)) in enumerate(zip(tiles, boxes)):
        if np.shape(tile) != (h, w):
            raise ValueError(f"tile {k} has shape {np.shape(tile)}, its box says {(h, w)}")
    diff = total = 0.0
    for a in range(len(tiles)):
        for b in range(a + 1, len(tiles)):
            ya, xa, ha, wa = boxes[a]
            yb, xb, hb, wb = boxes[b]
            y0, y1 = max(ya, yb), min(ya + ha, yb + hb)
            x0, x1 = max(xa, xb), min(xa + wa, xb + wb)
            if y0 >= y1 or x0 >= x1:
                continue
            da = np.asarray(tiles[a], np.float64)[y0 - ya : y1 - ya, x0 - xa : x1 - xa]
            db = np.asarray(tiles[b], np.float64)[y0 - yb : y1 - yb, x0 - xb : x1 - xb]
            ok = (da > 0) & (db > 0)
            diff += np.abs(da - db)[ok].sum()
            total += ((da + db) / 2)[ok].sum()
    return float(diff / total) if total > 0 else float("nan")


# ----------------------------------------------------------------------------- two frames


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HW ``image`` sampled at column ``u``, row ``v`` (float pixel centres); returns (values, True where
    the point lies inside the image and all four neighbours are > 0)."""
    h, w = image.shape
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    x0 = np.clip(np.floor(u), 0, max(w - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(v), 0, max(h - 2, 0)).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = np.clip(u - x0, 0, 1), np.clip(v - y0, 0, 1)
    a, b, c, d = image[y0, x0], image[y0, x1], image[y1, x0], image[y1, x1]
    values = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    return values, inside & (a > 0) & (b > 0) & (c > 0) & (d > 0)


def temporal_flicker(pred: np.ndarray, pred_prev: np.ndarray, gt: np.ndarray, gt_prev: np.ndarray,
                     intrinsics: np.ndarray, pose: np.ndarray, pose_prev: np.ndarray, *,
                     static: Optional[np.ndarray] = None, static_prev: Optional[np.ndarray] = None,
                     tolerance: float = 0.01) -> float:
    """Flicker between two consecutive frames: how much the depth error changes from frame t-1 to frame
    t on the same static surface point, after removing the camera's motion with ground-truth poses.

        flicker = mean over pixels p of | ln(pred(p) / gt(p)) - ln(pred_prev(p') / z') |

    where the surface point X seen at pixel p of frame t (ground-truth depth ``gt``) lies at pixel p'
    with depth z' in frame t-1 (``pred_prev`` sampled bilinearly there). A constant error (bias)
    scores 0; a prediction that changes while the world does not scores its relative change (0.01 =
    1 %). Pixels count where p' is inside frame t-1 and X is visible there (``gt_prev`` at p' within
    ``tolerance`` of z': not occluded, not on a depth edge), both predictions and ground truths are
    > 0, and ``static``/``static_prev`` (HW bool; None = everything) mark it static in both frames.

    All maps HW in metres (same size); ``intrinsics`` 3x3 pixels of both frames; ``pose``,
    ``pose_prev`` 4x4 camera-to-world. NaN when no pixel qualifies."""
    pred, pred_prev = as_depth_map(pred, "pred"), as_depth_map(pred_prev, "pred_prev")
    gt, gt_prev = as_depth_map(gt, "gt"), as_depth_map(gt_prev, "gt_prev")
    if not pred.shape == pred_prev.shape == gt.shape == gt_prev.shape:
        raise ValueError(f"pred, pred_prev, gt, gt_prev must share one shape, got {pred.shape}, {pred_prev.shape}, "
                         f"{gt.shape}, {gt_prev.shape}")
    k = np.asarray(intrinsics, np.float64)
    t1, t0 = np.asarray(pose, np.float64), np.asarray(pose_prev, np.float64)
    if k.shape != (3, 3) or t1.shape != (4, 4) or t0.shape != (4, 4):
        raise ValueError(f"intrinsics must be 3x3 and poses 4x4, got {k.shape}, {t1.shape}, {t0.shape}")
    keep = np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    if static is not None:
        keep &= np.asarray(static, bool)
    rows, cols = np.nonzero(keep)
    z = gt[rows, cols].astype(np.float64)
    cam = np.stack([(cols - k[0, 2]) / k[0, 0] * z, (rows - k[1, 2]) / k[1, 1] * z, z])
    rel = np.linalg.inv(t0) @ t1  # camera t -> camera t-1
    prev = rel[:3, :3] @ cam + rel[:3, 3:4]
    zp = prev[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = k[0, 0] * prev[0] / zp + k[0, 2]
        v = k[1, 1] * prev[1] / zp + k[1, 2]
    ok = zp > 0
    u, v = np.where(ok, u, -1.0), np.where(ok, v, -1.0)
    g_prev, g_ok = _bilinear(np.nan_to_num(gt_prev.astype(np.float64)), u, v)
    p_prev, p_ok = _bilinear(np.nan_to_num(pred_prev.astype(np.float64)), u, v)
    ok &= g_ok & p_ok & (np.abs(g_prev - zp) <= tolerance * zp)
    if static_prev is not None:
        sp = np.asarray(static_prev, bool)
        ok &= sp[np.clip(np.rint(v), 0, gt.shape[0] - 1).astype(np.int64),
                 np.clip(np.rint(u), 0, gt.shape[1] - 1).astype(np.int64)]
    if not ok.any():
        return float("nan")
    now = np.log(pred[rows, cols][ok] / z[ok])
    before = np.log(p_prev[ok] / zp[ok])
    return float(np.mean(np.abs(now - before)))


def sequence_flicker(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], intrinsics: np.ndarray,
                     poses: Sequence[np.ndarray], static: Optional[Sequence[np.ndarray]] = None) -> float:
    """Mean :func:`temporal_flicker` over the consecutive frame pairs of a video (NaN pairs skipped):
    ``preds``/``gts`` HW metres per frame, one 3x3 ``intrinsics``, 4x4 camera-to-world ``poses``,
    optional HW bool ``static`` masks per frame."""
    if not len(preds) == len(gts) == len(poses) >= 2 or (static is not None and len(static) != len(preds)):
        raise ValueError(f"need >= 2 frames and as many predictions, ground truths, poses (and static masks), got "
                         f"{len(preds)}, {len(gts)}, {len(poses)}" + ("" if static is None else f", {len(static)}"))
    pairs = [temporal_flicker(preds[i], preds[i - 1], gts[i], gts[i - 1], intrinsics, poses[i], poses[i - 1],
                              static=None if static is None else static[i],
                              static_prev=None if static is None else static[i - 1])
             for i in range(1, len(preds))]
    return float(np.nanmean(pairs)) if np.isfinite(pairs).any() else float("nan")


# ----------------------------------------------------------------------------- one frame


def compute_metrics(pred, gt, mask=None, *, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH,
                    align_mode: Optional[str] = None, focal_baseline: Optional[float] = None,
                    boundary: bool = True, ord_pairs: int = 50_000) -> dict:
    """All frame metrics of ``pred`` (any size, metres) against ``gt`` (HW metres, 0 invalid).

    Returns the pointwise metrics, ``see`` (edges: disparity jumps > 1 px when ``focal_baseline``
    = fx·B is known, else depth ratio jumps > 1.05), and when ``boundary``: ``b_precision``,
    ``b_recall``, ``b_f1`` (tolerance 1 px), ``si_bf1`` and ``ord``; plus ``n_valid``."""
    p, valid = prepare(pred, gt, mask, min_depth=min_depth, max_depth=max_depth, align_mode=align_mode)
    gt = as_depth_map(gt, "gt")
    if not valid.any():
        raise ValueError(f"no valid ground-truth pixel in ({min_depth}, {max_depth}) m")
    out = pointwise_metrics(p[valid], gt[valid])
    g_valid = np.where(valid, gt, 0).astype(np.float32)
    edges = disparity_edges(g_valid, focal_baseline) if focal_baseline else ratio_edges(g_valid)
    out["see"] = soft_edge_error(p, g_valid, edges & valid)
    if boundary:
        out.update(boundary_prf(p, gt, valid))
        out["si_bf1"] = si_boundary_f1(p, gt, valid)
        out["ord"] = ordinal_error(p, gt, valid, n_pairs=ord_pairs)
    out["n_valid"] = int(valid.sum())
    return out


def mean_metrics(per_image: Sequence[dict]) -> dict:
    """Mean of each metric over images, ignoring NaN (e.g. SEE of an image without edges);
    ``n_valid`` is summed."""
    if not per_image:
        raise ValueError("no per-image metrics to average")
    keys = [k for k in per_image[0] if k != "n_valid"]
    out = {}
    for k in keys:
        vals = np.array([m[k] for m in per_image], np.float64)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    out["n_valid"] = int(sum(m.get("n_valid", 0) for m in per_image))
    return out
