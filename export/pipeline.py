"""A single fused pipeline model: coarse + fixed tile grid + refine + blend, one graph, one input size.

For mobile apps (one CoreML model to call) and any ONNX consumer that wants one session: the frame
size is fixed at export (e.g. 1080×1920), so the tile grid, every crop and the blend window are
constants of the graph. Every crop and the blend are static slices with a bilinear resize or small
constant matrices, never index tables: gather/scatter ops do not run on the Neural Engine (the
1080p default had 444 gather / 60 scatter MIL ops with :mod:`edgedepth.tiling_torch`'s crops, has
none now). They keep the runtime's crop semantics (DESIGN.md), so the fused model matches the
modular runtime on the same frame (tested in ONNX Runtime against :class:`edgedepth.runtime.Runtime`):

* RGB tiles and the coarse input are integer boxes downscaled, where the crop semantics equal
  ``F.interpolate(bilinear, align_corners=False)`` of the slice;
* the coarse depth and feature maps are cropped at fractional boxes (upscaled):
  ``rows @ map[slice] @ cols`` with the two-tap interpolation rows of the sample tables;
* ``tiling.upsample`` "bilinear": each refined tile is resized back to its box (the source is the
  tile itself: ``F.interpolate`` again), weighted by the window over the grid's separable
  normaliser, padded to the frame, summed;
* "joint_bilateral" (the runtime's default): the tiles are blended at the refiner's resolution
  (``TileGrid.tile_resolution``; boxes fractional there, so ``rows @ tile @ cols`` with the stitch's
  two-tap rows, window and normaliser folded in), then upsampled to the frame guided by its colours
  (``tiling_reference.joint_upsample``). Each output pixel's four taps are picked by one-hot
  matrices over static slices of a few dozen rows or columns at a time (about 2 GFLOP at 1080p),
  not by an index table.
* "guided" (the fast guided filter, ``edgedepth.tiling.guided_upsample``) is built as
  "joint_bilateral": its least-squares fit subtracts squared colour means that agree to 1e-5, which
  float16 (the Neural Engine's precision) cannot resolve. The model's metadata says which it has.

Input ``image``: (1, 3, H, W) float32 RGB in 0…255. Output ``depth``: (1, 1, H, W) float32 metres.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgedepth.coarse_fit import CoarseFit
from edgedepth.tiling import Tiling
from edgedepth.tiling_reference import JOINT_FLAT, JOINT_FLOOR, crop_axis, stitch_axis

from edgedepth.train.models.refiner import guide_sources
from .onnx_export import OPSET, _export


def _taps(lo: np.ndarray, hi: np.ndarray, frac: np.ndarray, first: int, n: int) -> np.ndarray:
    """(len(lo), n) matrix of one axis's two-tap bilinear rows, source indices offset by ``first``."""
    m = np.zeros((len(lo), n))
    np.add.at(m, (np.arange(len(lo)), lo - first), 1.0 - frac)
    np.add.at(m, (np.arange(len(lo)), hi - first), frac)
    return m


class _MapCrop(nn.Module):
    """Crops of a (C, h, w) map at fractional ``boxes``, each resized to ``out`` = (H, W): a slice of
    the rows and columns the box samples, then ``rows @ slice @ cols`` -> (N, C, H, W)."""

    def __init__(self, boxes: np.ndarray, out: tuple[int, int], src: tuple[int, int]) -> None:
        super().__init__()
        self.slices = []
        for k, (y0, x0, h, w) in enumerate(boxes):
            ty, tx = crop_axis(y0, h, out[0], src[0]), crop_axis(x0, w, out[1], src[1])
            (r0, r1), (c0, c1) = ((int(t[0].min()), int(t[1].max()) + 1) for t in (ty, tx))
            self.slices.append((r0, r1, c0, c1))
            self.register_buffer(f"rows{k}", torch.tensor(_taps(*ty, r0, r1 - r0), dtype=torch.float32),
                                 persistent=False)
            self.register_buffer(f"cols{k}", torch.tensor(_taps(*tx, c0, c1 - c0).T, dtype=torch.float32),
                                 persistent=False)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        return torch.stack([getattr(self, f"rows{k}") @ src[:, r0:r1, c0:c1] @ getattr(self, f"cols{k}")
                            for k, (r0, r1, c0, c1) in enumerate(self.slices)])


def _blend_axes(boxes: list[tuple[float, float, float, float]], tile: tuple[int, int], height: int, width: int,
                window: str) -> list[tuple[tuple, tuple]]:
    """Per tile, the stitch tables of its two axes (``stitch_axis``: first, lo, hi, frac, weight) on a
    ``height`` x ``width`` map, the weights divided by the grid's normaliser, which is separable for a
    regular grid (every row band crossed with every column band once)."""
    axes = [(stitch_axis(y0, h, tile[0], height, window), stitch_axis(x0, w, tile[1], width, window))
            for y0, x0, h, w in boxes]
    row_bands = {(y0, h): ay for (y0, _, h, _), (ay, _) in zip(boxes, axes)}
    col_bands = {(x0, w): ax for (_, x0, _, w), (_, ax) in zip(boxes, axes)}
    if len(set(boxes)) != len(boxes) or len(boxes) != len(row_bands) * len(col_bands):
        raise ValueError("the fused pipeline needs a regular tile grid (rows x cols)")
    rows, cols = np.zeros(height), np.zeros(width)
    for first, *_, wy in row_bands.values():
        rows[first:first + len(wy)] += wy
    for first, *_, wx in col_bands.values():
        cols[first:first + len(wx)] += wx
    return [((fy0, *ty, wy / rows[fy0:fy0 + len(wy)]), (fx0, *tx, wx / cols[fx0:fx0 + len(wx)]))
            for (fy0, *ty, wy), (fx0, *tx, wx) in axes]


class _Select(nn.Module):
    """``x[..., index, :]`` (``axis`` -2) or ``x[..., index]`` (-1) for a constant non-decreasing
    ``index``: per run of ``chunk`` outputs a static slice of the source positions they use and a
    one-hot matrix over it (gather runs on neither the Neural Engine nor, fused, everywhere else)."""

    def __init__(self, index: np.ndarray, axis: int, chunk: int = 64) -> None:
        super().__init__()
        index = np.asarray(index, dtype=np.int64)
        if axis not in (-1, -2) or np.any(np.diff(index) < 0):
            raise ValueError("_Select needs axis -1 or -2 and a non-decreasing index")
        self.axis, self.spans = axis, []
        for k, o0 in enumerate(range(0, len(index), chunk)):
            part = index[o0:o0 + chunk]
            s0, s1 = int(part[0]), int(part[-1]) + 1
            onehot = np.zeros((len(part), s1 - s0), dtype=np.float32)
            onehot[np.arange(len(part)), part - s0] = 1.0
            self.spans.append((s0, s1))
            self.register_buffer(f"m{k}", torch.from_numpy(onehot if axis == -2 else onehot.T.copy()),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis == -2:
            return torch.cat([getattr(self, f"m{k}") @ x[..., s0:s1, :] for k, (s0, s1) in enumerate(self.spans)], -2)
        return torch.cat([x[..., s0:s1] @ getattr(self, f"m{k}") for k, (s0, s1) in enumerate(self.spans)], -1)


class _LowStitch(nn.Module):
    """The runtime's stitch of (N, 1, th, tw) tiles at ``low`` = (h, w), the frame's size at the
    refiner's resolution, where the grid's boxes are fractional -> (1, 1, h, w)."""

    def __init__(self, boxes: list[tuple[int, int, int, int]], tile: tuple[int, int], low: tuple[int, int],
                 frame: tuple[int, int], window: str) -> None:
        super().__init__()
        (h, w), (height, width) = low, frame
        sy, sx = h / height, w / width
        axes = _blend_axes([(y0 * sy, x0 * sx, bh * sy, bw * sx) for y0, x0, bh, bw in boxes], tile, h, w, window)
        self.placed = []
        for k, ((fy0, ylo, yhi, fy, wy), (fx0, xlo, xhi, fx, wx)) in enumerate(axes):
            ry = _taps(ylo, yhi, fy, 0, tile[0]) * wy[:, None]
            cx = (_taps(xlo, xhi, fx, 0, tile[1]) * wx[:, None]).T
            self.register_buffer(f"ry{k}", torch.tensor(ry, dtype=torch.float32), persistent=False)
            self.register_buffer(f"cx{k}", torch.tensor(cx, dtype=torch.float32), persistent=False)
            self.placed.append((fy0, len(wy), fx0, len(wx)))
        self.low = (h, w)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        h, w = self.low
        out = None
        for k, (y0, ny, x0, nx) in enumerate(self.placed):
            value = getattr(self, f"ry{k}") @ tiles[k:k + 1] @ getattr(self, f"cx{k}")  # (1, 1, ny, nx)
            value = F.pad(value, (x0, w - x0 - nx, y0, h - y0 - ny))
            out = value if out is None else out + value
        return out


class _JointUpsample(nn.Module):
    """``tiling_reference.joint_upsample`` in graph ops: (1, 1, h, w) depth and (1, 3, H, W) colours
    in [0, 1] -> (1, 1, H, W); the guide is the colours resized to (h, w) (the crop semantics)."""

    def __init__(self, low: tuple[int, int], frame: tuple[int, int], sigma: float) -> None:
        super().__init__()
        (h, w), (height, width) = low, frame
        (ylo, yhi, fy), (xlo, xhi, fx) = crop_axis(0.0, h, height, h), crop_axis(0.0, w, width, w)
        self.low, self.sigma = (h, w), float(sigma)
        self.cols = nn.ModuleList([_Select(xlo, -1), _Select(xhi, -1)])
        self.rows = nn.ModuleList([_Select(ylo, -2), _Select(yhi, -2)])
        self.register_buffer("fy", torch.tensor(fy, dtype=torch.float32).view(-1, 1), persistent=False)
        self.register_buffer("fx", torch.tensor(fx, dtype=torch.float32).view(1, -1), persistent=False)

    def forward(self, depth: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        guide = F.interpolate(rgb, size=self.low, mode="bilinear", align_corners=False)
        both = torch.cat([depth, guide], 1)  # one selection for depth and colour: (1, 4, h, w)
        by_col = [sel(both) for sel in self.cols]
        wy, wx = (1.0 - self.fy, self.fy), (1.0 - self.fx, self.fx)
        taps = [row_sel(by) for row_sel in self.rows for by in by_col]  # (ylo, xlo), (ylo, xhi), (yhi, xlo), ...
        values = [t[:, :1] for t in taps]
        dist = [((rgb - t[:, 1:]) ** 2).sum(1, keepdim=True) for t in taps]
        least = torch.minimum(torch.minimum(dist[0], dist[1]), torch.minimum(dist[2], dist[3]))
        scale = 1.0 / (32.0 * self.sigma * self.sigma)
        ranged = [((1.0 - (d - least) * scale).clamp(min=0.0) ** 16).clamp(min=JOINT_FLOOR) for d in dist]

        def spatial(maps: list[torch.Tensor]) -> torch.Tensor:
            # sum_k wy_k wx_k maps_k, one constant factor per product: a product of the (H, 1) and
            # (1, W) constants would be folded into full-frame constants (8 MB each at 1080p).
            return wy[0] * (wx[0] * maps[0] + wx[1] * maps[1]) + wy[1] * (wx[0] * maps[2] + wx[1] * maps[3])

        joint = spatial([r * v for r, v in zip(ranged, values)]) / spatial(ranged)
        bilinear = spatial(values)
        lo = torch.minimum(torch.minimum(values[0], values[1]), torch.minimum(values[2], values[3]))
        hi = torch.maximum(torch.maximum(values[0], values[1]), torch.maximum(values[2], values[3]))
        return torch.where(hi - lo <= JOINT_FLAT * lo, bilinear, joint)


class FusedPipeline(nn.Module):
    """``coarse`` + ``refiner`` over the runtime's tile grid of a ``height``×``width`` frame."""

    def __init__(self, coarse: nn.Module, refiner: nn.Module, height: int, width: int,
                 tiling_cfg: Tiling = Tiling(), fit: str = "pad") -> None:
        super().__init__()
        if height < 1 or width < 1:
            raise ValueError(f"pipeline input size must be positive, got {height}x{width}")
        self.coarse, self.refiner = coarse.eval(), refiner.eval()
        self.height, self.width, self.window = int(height), int(width), tiling_cfg.window
        grid = tiling_cfg.grid(self.height, self.width, refiner.tile_size)
        th, tw = refiner.tile_size
        if grid.tile_h < th or grid.tile_w < tw:  # also what makes every RGB crop a downscale
            raise ValueError(f"a {height}x{width} frame gives {grid.tile_h}x{grid.tile_w} tiles with a "
                             f"{tiling_cfg.rows}x{tiling_cfg.cols} grid, smaller than the refiner's {th}x{tw}")
        self.grid = grid
        ch, cw = coarse.input_size
        self.sources = guide_sources(refiner)
        with torch.no_grad():  # actual map sizes (strides may round either way)
            _, feats = coarse(torch.zeros(1, 3, ch, cw))
        feat_sizes = [tuple(feats[i].shape[-2:]) for i in self.sources]
        # Python ints, not tensors: slice bounds are constants of the graph, never traced values.
        self.boxes = [tuple(int(v) for v in box) for box in grid.boxes]
        # where the frame sits in the coarse input (the bundle's coarse.fit, coarse_fit.py)
        self.fit = CoarseFit.for_frame(self.height, self.width, (ch, cw), fit)
        self.depth_crop = _MapCrop(self.fit.map_boxes(grid.boxes, (ch, cw)), (th, tw), (ch, cw))
        self.feat_crops = nn.ModuleList(_MapCrop(self.fit.map_boxes(grid.boxes, (fh, fw)), (h, w), (fh, fw))
                                        for (fh, fw), (_, h, w) in zip(feat_sizes, refiner.guidance))
        # float16 graphs cannot hold the guided filter's fit (module docstring)
        self.upsample = "joint_bilateral" if tiling_cfg.upsample == "guided" else tiling_cfg.upsample
        if self.upsample == "joint_bilateral":
            if tiling_cfg.snap:
                raise ValueError("the fused pipeline does not snap depth steps: build it with tiling.snap 0")
            low = grid.tile_resolution(th, tw)
            self.low_stitch = _LowStitch(self.boxes, (th, tw), low, (self.height, self.width), self.window)
            self.joint = _JointUpsample(low, (self.height, self.width), tiling_cfg.joint_sigma)
        else:
            for k, (ay, ax) in enumerate(_blend_axes(self.boxes, (th, tw), self.height, self.width, self.window)):
                wy, wx = ay[-1], ax[-1]
                self.register_buffer(f"blend_y{k}", torch.tensor(wy, dtype=torch.float32).view(-1, 1), persistent=False)
                self.register_buffer(f"blend_x{k}", torch.tensor(wx, dtype=torch.float32).view(1, -1), persistent=False)
        self.register_buffer("mean", torch.tensor(coarse.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(coarse.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        fit = self.fit
        x = self._norm(F.interpolate(image, size=(fit.content_h, fit.content_w), mode="bilinear", align_corners=False))
        if fit.padded:
            x = F.pad(x, fit.torch_pad(), mode="replicate")
        depth, feats = self.coarse(x)
        tile = tuple(self.refiner.tile_size)
        rgb = self._norm(torch.cat([F.interpolate(image[:, :, y0:y0 + h, x0:x0 + w], size=tile, mode="bilinear",
                                                  align_corners=False) for y0, x0, h, w in self.boxes]))
        guides = [crop(feats[src][0]) for crop, src in zip(self.feat_crops, self.sources)]
        tiles = self.refiner(rgb, self.depth_crop(depth[0]), *guides)
        if self.upsample == "joint_bilateral":
            out = self.joint(self.low_stitch(tiles), image / 255.0)
        else:
            out = None
            for k, (y0, x0, h, w) in enumerate(self.boxes):
                value = F.interpolate(tiles[k:k + 1], size=(h, w), mode="bilinear", align_corners=False)
                value = value * getattr(self, f"blend_y{k}") * getattr(self, f"blend_x{k}")
                value = F.pad(value, (x0, self.width - x0 - w, y0, self.height - y0 - h))
                out = value if out is None else out + value
        if fit.width_share != 1.0:
            out = out * fit.width_share
        return out.clamp(min=0.0)

    def example(self) -> torch.Tensor:
        """A (1, 3, H, W) example frame in 0…255."""
        gen = torch.Generator().manual_seed(0)
        return 255.0 * torch.rand(1, 3, self.height, self.width, generator=gen)


def export_pipeline_onnx(pipeline: FusedPipeline, path: str | Path) -> Path:
    """ONNX of the fused pipeline at ``path``: ``image`` (1,3,H,W) → ``depth`` (1,1,H,W)."""
    # torch.export (dynamo) keeps the frame's shape as Python ints, so the tile engine's sample
    # tables become constants; the TorchScript tracer would turn them into traced tensors.
    return _export(pipeline, (pipeline.example(),), Path(path), ["image"], ["depth"], dynamic_batch=False,
                   opset=OPSET, simplify=True, dynamo=True)


def export_pipeline_coreml(pipeline: FusedPipeline, path: str | Path, variant: str = "fp16", *,
                           meta: dict | None = None) -> Path:
    """CoreML mlprogram of the fused pipeline at ``path``: ``image`` is an RGB image type of the
    fixed H×W (pixels 0…255 as they are: the graph normalises), with metadata from ``meta``."""
    from .coreml_export import image_input, model_info, to_coreml

    info = model_info("pipeline", meta or {}, ["image"], ["depth"], size=(pipeline.height, pipeline.width))
    info.user["com.edgedepth.upsample"] = pipeline.upsample  # how its tiles become the frame (Tiling.upsample)
    return to_coreml(pipeline, {"image": pipeline.example()}, ["depth"], path, variant,
                     image=image_input("image"), info=info)


def image_tensor(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 pipeline input from an HxWx3 uint8 RGB frame."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(np.float32))
