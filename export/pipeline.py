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
* each refined tile is resized back to its box (the source is the tile itself: ``F.interpolate``
  again), weighted by the window over the grid's separable normaliser, padded to the frame, summed.

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
from edgedepth.tiling_reference import crop_axis, stitch_axis

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


def _blend_weights(boxes: list[tuple[int, int, int, int]], tile: tuple[int, int], height: int, width: int,
                   window: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tile, the (h,) and (w,) window weights over its box divided by the grid's normaliser, which
    is separable for a regular grid (every row band crossed with every column band once)."""
    axes = [(stitch_axis(y0, h, tile[0], height, window)[4], stitch_axis(x0, w, tile[1], width, window)[4])
            for y0, x0, h, w in boxes]
    row_bands = {(y0, h): wy for (y0, _, h, _), (wy, _) in zip(boxes, axes)}
    col_bands = {(x0, w): wx for (_, x0, _, w), (_, wx) in zip(boxes, axes)}
    if len(set(boxes)) != len(boxes) or len(boxes) != len(row_bands) * len(col_bands):
        raise ValueError("the fused pipeline needs a regular tile grid (rows x cols)")
    rows, cols = np.zeros(height), np.zeros(width)
    for (y0, h), wy in row_bands.items():
        rows[y0:y0 + h] += wy
    for (x0, w), wx in col_bands.items():
        cols[x0:x0 + w] += wx
    return [(wy / rows[y0:y0 + h], wx / cols[x0:x0 + w]) for (y0, x0, h, w), (wy, wx) in zip(boxes, axes)]


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
        for k, (wy, wx) in enumerate(_blend_weights(self.boxes, (th, tw), self.height, self.width, self.window)):
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
    return to_coreml(pipeline, {"image": pipeline.example()}, ["depth"], path, variant,
                     image=image_input("image"), info=info)


def image_tensor(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 pipeline input from an HxWx3 uint8 RGB frame."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(np.float32))
