"""crop_resize, stitch and joint_upsample on torch tensors: differentiable, batched, any device.

Same semantics as `edgedepth.tiling` (tested equal to `edgedepth.tiling_reference`): sample
tables (indices and fractions) are computed in float64 from the boxes exactly as the reference
does, then applied with index_select + lerp, so no float32 coordinate rounding creeps in (which
grid_sample's normalised coordinates would add on large frames). Gradients flow to `src` and
`tiles`; boxes are constants. Imports torch: `edgedepth.tiling` never imports this module.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .tiling import _check_boxes, _check_int, _check_window, _uncovered_pixel
from .tiling_reference import crop_axes, crop_axis, stitch_axis

__all__ = ["crop_resize", "stitch", "snap_edges", "joint_upsample", "joint_upsample_batch", "joint_weights", "JointWeights",
           "guided_upsample", "GuidedFit", "host_to_device"]


def host_to_device(data: Any, device: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host data (numpy array, nested list of numbers or CPU tensor) as a tensor on ``device``, in
    ``dtype`` if given, without waiting for the device. On CUDA a copy from pageable memory returns
    only after every kernel queued before it has run; made from pinned memory it is queued like a
    kernel (a refiner training step on an H200 made 72 such waits, most of them sample tables sent
    here). Elsewhere a plain conversion (a numpy array's memory is shared on the CPU)."""
    t = torch.as_tensor(data)
    if dtype is not None:
        t = t.to(dtype)
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _boxes_np(boxes: Any, frame_h: int, frame_w: int) -> np.ndarray:
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    return _check_boxes(boxes, frame_h, frame_w)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _lerp_rows(img: torch.Tensor, lo: np.ndarray, hi: np.ndarray, frac: np.ndarray, dim: int,
               weight: np.ndarray) -> torch.Tensor:
    """Bilinear along one dim of img with a sample table from the reference; ``weight`` (one per
    output row) is folded into the two interpolation coefficients (the stitch's window)."""
    dev = img.device
    a = img.index_select(dim, host_to_device(lo, dev))
    b = img.index_select(dim, host_to_device(hi, dev))
    shape = [1] * img.dim()
    shape[dim] = len(frac)
    ca, cb = (c * weight for c in (1.0 - frac, frac))
    return (a * host_to_device(ca, dev, img.dtype).view(shape)
            + b * host_to_device(cb, dev, img.dtype).view(shape))


def _crop_batch(img: torch.Tensor, boxes: np.ndarray, out_h: int, out_w: int) -> torch.Tensor:
    """img (B, C, H, W) in compute dtype, boxes (B, N, 4) float64 -> (B, N, C, out_h, out_w): every
    crop at once, one gather per bilinear corner, the sample tables sent to the device once per call.
    (One crop at a time cost a dozen ops and six table copies per box; on a GPU each copy from
    pageable host memory waits for the device, which left a training step mostly idle.) The same
    arithmetic as the reference: rows blended first, then columns."""
    b, c, src_h, src_w = img.shape
    n = boxes.shape[1]
    flat = boxes.reshape(-1, 4)
    ylo, yhi, fy = crop_axes(flat[:, 0], flat[:, 2], out_h, src_h)
    xlo, xhi, fx = crop_axes(flat[:, 1], flat[:, 3], out_w, src_w)
    dev = img.device
    frame = torch.arange(b, device=dev).repeat_interleave(n)[:, None, None]
    ylo_t, yhi_t = (host_to_device(a, dev)[:, :, None] for a in (ylo, yhi))
    xlo_t, xhi_t = (host_to_device(a, dev)[:, None, :] for a in (xlo, xhi))
    fy_t = host_to_device(fy, dev, img.dtype)[:, :, None, None]
    fx_t = host_to_device(fx, dev, img.dtype)[:, None, :, None]

    def corner(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return img[frame, :, ys, xs]  # (B * N, out_h, out_w, C)

    left = corner(ylo_t, xlo_t) * (1.0 - fy_t) + corner(yhi_t, xlo_t) * fy_t
    right = corner(ylo_t, xhi_t) * (1.0 - fy_t) + corner(yhi_t, xhi_t) * fy_t
    out = left * (1.0 - fx_t) + right * fx_t
    return out.permute(0, 3, 1, 2).reshape(b, n, c, out_h, out_w)


def crop_resize(src: torch.Tensor, boxes: Any, out_size: Sequence[int], *, mean: Any = None,
                std: Any = None) -> torch.Tensor:
    """Batched crops resized to out_size = (H, W) with the DESIGN crop semantics.

    src (C, h, w) float -> (N, C, H, W) in src's dtype; src (h, w, 3) uint8 RGB -> (N, 3, H, W)
    float32 normalised as (x / 255 - mean) / std; src (B, C, h, w) float with boxes (B, N, 4)
    -> (B, N, C, H, W). boxes are numpy or torch, [y0, x0, h, w] in src pixels.
    """
    if not isinstance(src, torch.Tensor):
        raise TypeError(f"src must be a torch.Tensor, got {type(src).__name__}")
    if not isinstance(out_size, (tuple, list)) or len(out_size) != 2:
        raise ValueError(f"out_size must be (H, W), got {out_size!r}")
    out_h, out_w = (_check_int("out_size", v, 1) for v in out_size)
    if src.dtype == torch.uint8:
        if src.dim() != 3 or src.shape[2] != 3:
            raise ValueError(f"src: a uint8 image must be (H, W, 3) RGB, got shape {tuple(src.shape)}")
        img = src.permute(2, 0, 1).to(torch.float32) / 255.0
        # Checked on the host: a test of device values would wait for the GPU.
        m = (np.zeros(3) if mean is None else np.asarray(mean, np.float64)).astype(np.float32).reshape(-1)
        s = (np.ones(3) if std is None else np.asarray(std, np.float64)).astype(np.float32).reshape(-1)
        if m.size not in (1, 3) or s.size not in (1, 3) or not bool((s > 0).all()):
            raise ValueError("mean/std must be 1 or 3 numbers with std > 0")
        img = (img - host_to_device(m, src.device).reshape(-1, 1, 1)) / host_to_device(s, src.device).reshape(-1, 1, 1)
        return crop_resize(img, boxes, (out_h, out_w))
    if not src.is_floating_point():
        raise TypeError(f"src must be a float tensor or (H, W, 3) uint8, got dtype {src.dtype}")
    if mean is not None or std is not None:
        raise ValueError("mean/std apply to uint8 RGB src only; float maps are cropped as they are")
    if src.dim() == 4:
        if isinstance(boxes, torch.Tensor):
            boxes = boxes.detach().cpu().numpy()
        boxes = np.asarray(boxes)
        if boxes.ndim != 3 or boxes.shape[0] != src.shape[0]:
            raise ValueError(f"boxes for a (B, C, H, W) src must be (B, N, 4), got shape {boxes.shape}")
        if min(src.shape) == 0:
            raise ValueError(f"src must be a non-empty (B, C, H, W) tensor, got shape {tuple(src.shape)}")
        bx = np.stack([_check_boxes(b, src.shape[2], src.shape[3]).reshape(-1, 4) for b in boxes])
        if bx.shape[1] == 0:
            return src.new_empty((src.shape[0], 0, src.shape[1], out_h, out_w))
        return _crop_batch(src.to(_compute_dtype(src)), bx, out_h, out_w).to(src.dtype)
    if src.dim() != 3 or min(src.shape) == 0:
        raise ValueError(f"src must be a non-empty (C, H, W) or (B, C, H, W) tensor, got shape {tuple(src.shape)}")
    bx = _boxes_np(boxes, src.shape[1], src.shape[2])
    if len(bx) == 0:
        return src.new_empty((0, src.shape[0], out_h, out_w))
    return _crop_batch(src.to(_compute_dtype(src))[None], bx[None], out_h, out_w)[0].to(src.dtype)


def stitch(tiles: torch.Tensor, boxes: Any, height: int, width: int, window: str = "cosine") -> torch.Tensor:
    """tiles (N, C, th, tw) placed at boxes -> (C, height, width) weighted average (tiles' dtype).

    Same rule as `edgedepth.tiling.stitch`: each tile resized back to its box, weighted by the
    window at the frame pixel's position in the box, accumulated and normalised.
    """
    if not isinstance(tiles, torch.Tensor):
        raise TypeError(f"tiles must be a torch.Tensor, got {type(tiles).__name__}")
    if not tiles.is_floating_point():
        raise TypeError(f"tiles must be a float tensor, got dtype {tiles.dtype}")
    if tiles.dim() != 4 or min(tiles.shape) == 0:
        raise ValueError(f"tiles must be a non-empty (N, C, th, tw) tensor, got shape {tuple(tiles.shape)}")
    _check_window(window)
    height, width = _check_int("height", height, 1), _check_int("width", width, 1)
    bx = _boxes_np(boxes, height, width)
    if len(bx) != tiles.shape[0]:
        raise ValueError(f"tiles has {tiles.shape[0]} tiles but boxes has {len(bx)} rows")
    hole = _uncovered_pixel(bx, height, width)
    if hole is not None:
        raise ValueError(f"boxes leave frame pixel (y, x) = {hole} uncovered")
    th, tw = int(tiles.shape[2]), int(tiles.shape[3])  # ints, also under torch.jit.trace
    dtype = _compute_dtype(tiles)
    # No frame-sized constant is made: a traced or exported graph (the fused CoreML/ONNX pipeline)
    # would carry each as megabytes of weights, and exporters fold products of constants into them.
    # So the accumulator starts as the first tile padded to the frame, and each tile's window is
    # applied per axis inside its interpolation coefficients, already divided by the normaliser.
    axes = [(stitch_axis(y0, h, th, height, window), stitch_axis(x0, w, tw, width, window)) for y0, x0, h, w in bx]
    # A regular grid (every row band crossed with every column band, once) has the normaliser
    # rows (x) cols, found from the 1-D windows alone; other layouts need the frame-sized sum.
    row_of = {(y0, h): ay for (y0, _, h, _), (ay, _) in zip(bx, axes)}
    col_of = {(x0, w): ax for (_, x0, _, w), (_, ax) in zip(bx, axes)}
    grid = len({tuple(b) for b in bx}) == len(bx) == len(row_of) * len(col_of)
    if grid:
        rows, cols = np.zeros(height), np.zeros(width)
        for first, *_, wgt in row_of.values():
            rows[first:first + len(wgt)] += wgt
        for first, *_, wgt in col_of.values():
            cols[first:first + len(wgt)] += wgt
    else:
        wsum = np.zeros((height, width), dtype=np.float64)
        for (fy0, *_, wy), (fx0, *_, wx) in axes:
            wsum[fy0:fy0 + len(wy), fx0:fx0 + len(wx)] += wy[:, None] * wx[None, :]
    acc = None
    for tile, ((fy0, ylo, yhi, fy, wy), (fx0, xlo, xhi, fx, wx)) in zip(tiles.to(dtype), axes):
        if grid:  # every pixel is covered, so rows and cols are > 0
            wy, wx = wy / rows[fy0:fy0 + len(wy)], wx / cols[fx0:fx0 + len(wx)]
        value = _lerp_rows(_lerp_rows(tile, ylo, yhi, fy, dim=1, weight=wy), xlo, xhi, fx, dim=2, weight=wx)
        if acc is None:
            acc = torch.nn.functional.pad(value, (fx0, width - fx0 - len(wx), fy0, height - fy0 - len(wy)))
        else:
            acc[:, fy0:fy0 + len(wy), fx0:fx0 + len(wx)] += value
    if not grid:
        acc = acc * host_to_device(1.0 / wsum, tiles.device, dtype)
    return acc.to(tiles.dtype)


def _windows(a: torch.Tensor, r: int) -> torch.Tensor:
    """(k, ...) stack of the (2r+1)^2 shifts of ``a`` over its last two dims, rows first, edges repeated."""
    h, w = a.shape[-2:]
    flat = a.reshape(-1, 1, h, w)
    p = torch.nn.functional.pad(flat.float() if flat.dtype == torch.bool else flat, (r, r, r, r), mode="replicate")
    p = p.to(a.dtype).reshape(*a.shape[:-2], h + 2 * r, w + 2 * r)
    return torch.stack([p[..., r + dy:r + dy + h, r + dx:r + dx + w]
                        for dy in range(-r, r + 1) for dx in range(-r, r + 1)])


def snap_edges(depth: torch.Tensor, guide: torch.Tensor, contrast: float) -> torch.Tensor:
    """`edgedepth.tiling.snap_edges` on tensors: depth (h, w) float32, guide (3, h, w) float32 on
    the same device -> (h, w) float32 (rule: ``tiling_reference.snap_edges``)."""
    if depth.dim() != 2 or tuple(guide.shape) != (3, *depth.shape):
        raise ValueError(f"depth (h, w) and guide (3, h, w) expected, got {tuple(depth.shape)} and "
                         f"{tuple(guide.shape)}")
    d, g = depth.float(), guide.float()
    near = _windows(d, 1)
    mn3, mx3 = near.amin(0), near.amax(0)
    mn5, mx5 = _windows(mn3, 1).amin(0), _windows(mx3, 1).amax(0)
    good = torch.isfinite(d) & (d > 0)
    ok = _windows(_windows(good, 1).all(0), 1).all(0)
    ok[:2], ok[-2:], ok[:, :2], ok[:, -2:] = False, False, False, False
    r3, r5 = mx3 / mn3, mx5 / mn5
    ratio = float(np.float32(math.exp(contrast)))  # a Python number: no tensor sent to the device
    root = torch.sqrt(r3)
    step = ok & (r3 > ratio) & (r5 < r3 * root * torch.sqrt(root))
    colours = _windows(g, 1)  # (9, 3, h, w)

    def colour_distance(k: torch.Tensor) -> torch.Tensor:
        c = torch.gather(colours, 0, k[None, None].expand(1, 3, *k.shape))[0] - g
        return (c[0] * c[0] + c[1] * c[1]) + c[2] * c[2]

    # First occurrence in row order on ties, as numpy's argmin: the least index among the extremes.
    index = torch.arange(9, device=d.device).view(9, 1, 1).expand_as(near)
    kmin = torch.where(near == mn3, index, 8).amin(0)  # 8 where NaN left no match: step is False there
    kmax = torch.where(near == mx3, index, 8).amin(0)
    take_max = colour_distance(kmax) < colour_distance(kmin)
    return torch.where(step, torch.where(take_max, mx3, mn3), d)


def joint_upsample(depth: torch.Tensor, guide: torch.Tensor, image: torch.Tensor, sigma: float) -> torch.Tensor:
    """`edgedepth.tiling.joint_upsample` without the finishing pass: depth (h, w), guide (3, h, w)
    (the frame resized to (h, w), / 255), image (H, W, 3) uint8 on the same device -> (H, W) float32."""
    if depth.dim() != 2 or tuple(guide.shape) != (3, *depth.shape) or image.dim() != 3 or image.shape[2] != 3:
        raise ValueError(f"depth (h, w), guide (3, h, w) and image (H, W, 3) expected, got {tuple(depth.shape)}, "
                         f"{tuple(guide.shape)} and {tuple(image.shape)}")
    rgb = image.permute(2, 0, 1).float() / 255.0
    return joint_upsample_batch(depth.float()[None, None], guide.float()[None], rgb[None], sigma)[0, 0]


def joint_upsample_batch(depth: torch.Tensor, guide: torch.Tensor, image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Batched `joint_upsample`, differentiable in ``depth``: depth (N, C, h, w), guide (N, 3, h, w)
    and image (N, 3, H, W) colours in [0, 1] -> (N, C, H, W) in depth's dtype (float32 or float64)."""
    n, c, h, w = depth.shape
    if tuple(guide.shape) != (n, 3, h, w):
        raise ValueError(f"depth (N, C, h, w) and guide (N, 3, h, w) expected, got {tuple(depth.shape)} and "
                         f"{tuple(guide.shape)}")
    return joint_weights(guide, image, sigma).apply(depth)


class JointWeights:
    """The colour-dependent part of `joint_upsample_batch`, computed once for tiles whose colours
    do not change (a refiner's loss applies it to the prediction and to its intermediate depth).
    The weights carry no gradient; ``apply`` is differentiable in depth."""

    def __init__(self, taps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
                 total: torch.Tensor, low: tuple[int, int]) -> None:
        self.taps, self.total, self.low = taps, total, low

    def apply(self, depth: torch.Tensor) -> torch.Tensor:
        """depth (N, C, h, w) -> (N, C, H, W)."""
        from .tiling_reference import JOINT_FLAT

        if depth.dim() != 4 or tuple(depth.shape[-2:]) != self.low:
            raise ValueError(f"depth (N, C, {self.low[0]}, {self.low[1]}) expected, got {tuple(depth.shape)}")
        values = [depth.index_select(-2, ys).index_select(-1, xs) for ys, xs, _, _ in self.taps]
        joint = sum(wk.to(depth.dtype) * v for (_, _, _, wk), v in zip(self.taps, values)) / self.total.to(depth.dtype)
        bilinear = sum(s.to(depth.dtype) * v for (_, _, s, _), v in zip(self.taps, values))
        with torch.no_grad():
            stacked = torch.stack(values)
            least = stacked.amin(0)
            flat = stacked.amax(0) - least <= JOINT_FLAT * least
        return torch.where(flat, bilinear, joint)


def joint_weights(guide: torch.Tensor, image: torch.Tensor, sigma: float) -> JointWeights:
    """Weights of the four taps of every output pixel and their sum: guide (N, 3, h, w) and image
    (N, 3, H, W) colours in [0, 1] (see `edgedepth.tiling_reference.joint_upsample`)."""
    from .tiling_reference import JOINT_FLOOR

    if guide.dim() != 4 or guide.shape[1] != 3 or image.dim() != 4 or tuple(image.shape[:2]) != tuple(guide.shape[:2]):
        raise ValueError(f"guide (N, 3, h, w) and image (N, 3, H, W) expected, got {tuple(guide.shape)} and "
                         f"{tuple(image.shape)}")
    h, w = int(guide.shape[2]), int(guide.shape[3])
    height, width = int(image.shape[2]), int(image.shape[3])
    dev = guide.device
    (ylo, yhi, fy), (xlo, xhi, fx) = crop_axis(0.0, h, height, h), crop_axis(0.0, w, width, w)
    ylo, yhi, xlo, xhi = (host_to_device(a, dev) for a in (ylo, yhi, xlo, xhi))
    fy = host_to_device(fy, dev, torch.float32)[:, None]
    fx = host_to_device(fx, dev, torch.float32)[None, :]
    spatial = [(ylo, xlo, (1 - fy) * (1 - fx)), (ylo, xhi, (1 - fy) * fx), (yhi, xlo, fy * (1 - fx)),
               (yhi, xhi, fy * fx)]
    with torch.no_grad():
        rgb, g = image.float(), guide.float()
        dist = [((rgb - g.index_select(2, ys).index_select(3, xs)) ** 2).sum(1, keepdim=True) for ys, xs, _ in spatial]
        least = torch.stack(dist).amin(0)
        weights = [s * ((1.0 - (d - least) / (32.0 * sigma * sigma)).clamp(min=0.0) ** 16).clamp(min=JOINT_FLOOR)
                   for (_, _, s), d in zip(spatial, dist)]
        # One division per output pixel when applied, not one per tap here (the runtime's device path
        # applies them once per frame).
        return JointWeights([(ys, xs, s, wk) for (ys, xs, s), wk in zip(spatial, weights)], sum(weights), (h, w))


def _inverse3(s: list[list[torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """The symmetric 3x3 matrices ``s`` (per pixel) inverted by cofactors, as the native code does:
    (i00, i01, i02, i11, i12, i22, 1 / det)."""
    i00, i01, i02 = s[1][1] * s[2][2] - s[1][2] ** 2, s[0][2] * s[1][2] - s[0][1] * s[2][2], s[0][1] * s[1][2] - s[0][2] * s[1][1]
    i11, i12, i22 = s[0][0] * s[2][2] - s[0][2] ** 2, s[0][1] * s[0][2] - s[0][0] * s[1][2], s[0][0] * s[1][1] - s[0][1] ** 2
    return i00, i01, i02, i11, i12, i22, 1.0 / (s[0][0] * i00 + s[0][1] * i01 + s[0][2] * i02)


def _solve3(inverse: tuple[torch.Tensor, ...], v: list[torch.Tensor]) -> list[torch.Tensor]:
    i00, i01, i02, i11, i12, i22, inv = inverse
    return [(i00 * v[0] + i01 * v[1] + i02 * v[2]) * inv, (i01 * v[0] + i11 * v[1] + i12 * v[2]) * inv,
            (i02 * v[0] + i12 * v[1] + i22 * v[2]) * inv]


class GuidedFit:
    """The colour-dependent part of the fast guided upsampling for tiles whose colours do not change
    (a refiner's loss sees its prediction through it, ``loss.upsample: guided``): the pooled guide's
    window means and inverse covariances, computed once. ``apply`` is differentiable in depth. Unlike
    `guided_upsample` it expects positive depth everywhere (a refiner's output) and clamps each map
    to its own pooled range."""

    def __init__(self, guide: torch.Tensor, image: torch.Tensor, step: int, radius: int, eps: float) -> None:
        if guide.dim() != 4 or guide.shape[1] != 3 or image.dim() != 4 or tuple(image.shape[:2]) != tuple(guide.shape[:2]):
            raise ValueError(f"guide (N, 3, h, w) and image (N, 3, H, W) expected, got {tuple(guide.shape)} and "
                             f"{tuple(image.shape)}")
        self.step, self.radius, self.low = int(step), int(radius), tuple(guide.shape[-2:])
        self.size = tuple(image.shape[-2:])
        with torch.no_grad():
            g = self._pool(guide.double())
            self.guide = [g[:, c:c + 1] for c in range(3)]
            self.means = [self._box(c) for c in self.guide]
            s = [[self._box(self.guide[i] * self.guide[j]) - self.means[i] * self.means[j] + (eps if i == j else 0.0)
                  for j in range(3)] for i in range(3)]
            self.inverse = _inverse3(s)
            self.image = image.double()

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.step, self.step, ceil_mode=True) if self.step > 1 else x

    def _box(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2 * self.radius + 1, 1, self.radius, count_include_pad=False)

    def apply(self, depth: torch.Tensor) -> torch.Tensor:
        """depth (N, C, h, w) metres, > 0 -> (N, C, H, W) metres."""
        if depth.dim() != 4 or tuple(depth.shape[-2:]) != self.low:
            raise ValueError(f"depth (N, C, {self.low[0]}, {self.low[1]}) expected, got {tuple(depth.shape)}")
        p = self._pool(torch.log(depth.double().clamp_min(1e-6)))
        mp = self._box(p)
        cov = [self._box(g * p) - m * mp for g, m in zip(self.guide, self.means)]
        a = _solve3(self.inverse, cov)
        b = mp - a[0] * self.means[0] - a[1] * self.means[1] - a[2] * self.means[2]
        coef = [F.interpolate(self._box(c), size=self.size, mode="bilinear", align_corners=False) for c in a + [b]]
        q = coef[0] * self.image[:, 0:1] + coef[1] * self.image[:, 1:2] + coef[2] * self.image[:, 2:3] + coef[3]
        with torch.no_grad():
            lo, hi = p.amin((2, 3), keepdim=True), p.amax((2, 3), keepdim=True)
        return torch.exp(torch.minimum(torch.maximum(q, lo), hi)).to(depth.dtype)


def guided_upsample(depth: torch.Tensor, guide: torch.Tensor, image: torch.Tensor, step: int, radius: int,
                    eps: float) -> torch.Tensor:
    """`edgedepth.tiling.guided_upsample` without the finishing pass, on any device: depth (h, w),
    guide (3, h, w) in [0, 1], image (H, W, 3) uint8 -> (H, W) float32
    (`edgedepth.guided_filter.fast_guided_upsample`; the fit in float64)."""
    d = depth.double()
    good = torch.isfinite(d) & (d > 0)
    lnd = torch.where(good, torch.log(torch.where(good, d, torch.ones_like(d))), torch.zeros_like(d))
    pool = (lambda x: F.avg_pool2d(x, step, step, ceil_mode=True)) if step > 1 else (lambda x: x)
    m = (pool(good.double()[None, None]) == 1.0).double()
    p = torch.where(m > 0, pool(lnd[None, None]), torch.zeros_like(m))
    g = pool(guide.double()[None])
    k = 2 * radius + 1

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, k, 1, radius, count_include_pad=False)

    def wmean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return box(weight * x) / box(weight)

    has = box(m) > 0
    mi = [wmean(g[:, c:c + 1], m) for c in range(3)]
    mp = wmean(p, m)
    cov = [wmean(g[:, c:c + 1] * p, m) - mi[c] * mp for c in range(3)]
    s = [[wmean(g[:, i:i + 1] * g[:, j:j + 1], m) - mi[i] * mi[j] + (eps if i == j else 0.0) for j in range(3)]
         for i in range(3)]
    a = _solve3(_inverse3(s), cov)
    zero = torch.zeros_like(mp)
    a = [torch.where(has, c, zero) for c in a]
    b = torch.where(has, mp - a[0] * mi[0] - a[1] * mi[1] - a[2] * mi[2], zero)
    fit = has.double()
    coef = torch.cat([wmean(c, fit) for c in a] + [torch.where(m > 0, wmean(b, fit), torch.full_like(b, math.nan))], 1)
    height, width = image.shape[:2]
    coef = F.interpolate(coef.float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    rgb = image.permute(2, 0, 1).float()
    q = (coef[0] * rgb[0] + coef[1] * rgb[1] + coef[2] * rgb[2]) / 255.0 + coef[3]
    valid = p[m > 0]
    lo, hi = (float(valid.min()), float(valid.max())) if valid.numel() else (0.0, 0.0)
    return torch.exp(q.clamp(lo, hi))  # NaN stays NaN
