"""A single fused pipeline model: coarse + fixed tile grid + refine + blend, one graph, one input size.

For mobile apps (one CoreML model to call) and any ONNX consumer that wants one session: the frame
size is fixed at export (e.g. 1080×1920), so the tile grid, every crop and the blend window are
constants of the graph. Crops and the blend are :mod:`edgedepth.tiling_torch` — the runtime's crop
semantics — so the fused model matches the modular runtime on the same frame (tested in ONNX
Runtime against :class:`edgedepth.runtime.Runtime`).

Input ``image``: (1, 3, H, W) float32 RGB in 0…255. Output ``depth``: (1, 1, H, W) float32 metres.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedepth import tiling_torch

from .frames import Tiling
from .onnx_export import _export


class FusedPipeline(nn.Module):
    """``coarse`` + ``refiner`` over the runtime's tile grid of a ``height``×``width`` frame."""

    def __init__(self, coarse: nn.Module, refiner: nn.Module, height: int, width: int,
                 tiling_cfg: Tiling = Tiling()) -> None:
        super().__init__()
        if height < 1 or width < 1:
            raise ValueError(f"pipeline input size must be positive, got {height}x{width}")
        self.coarse, self.refiner = coarse.eval(), refiner.eval()
        self.height, self.width, self.window = int(height), int(width), tiling_cfg.window
        grid = tiling_cfg.grid(self.height, self.width)
        th, tw = refiner.tile_size
        if grid.tile_h < th or grid.tile_w < tw:
            raise ValueError(f"a {height}x{width} frame gives {grid.tile_h}x{grid.tile_w} tiles with a "
                             f"{tiling_cfg.rows}x{tiling_cfg.cols} grid, smaller than the refiner's {th}x{tw}")
        self.grid = grid
        ch, cw = coarse.input_size
        feat_sizes = [(ch // s, cw // s) for s in coarse.feature_strides]
        self.boxes = torch.as_tensor(grid.boxes, dtype=torch.float64)
        self.whole = torch.tensor([[0.0, 0.0, self.height, self.width]], dtype=torch.float64)
        self.depth_boxes = torch.as_tensor(grid.scaled(ch / self.height, cw / self.width), dtype=torch.float64)
        self.feat_boxes = [torch.as_tensor(grid.scaled(h / self.height, w / self.width), dtype=torch.float64)
                           for h, w in feat_sizes]
        self.register_buffer("mean", torch.tensor(coarse.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(coarse.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        chw = image[0]
        x = self._norm(tiling_torch.crop_resize(chw, self.whole, tuple(self.coarse.input_size)))
        depth, feats = self.coarse(x)
        tile = tuple(self.refiner.tile_size)
        rgb = self._norm(tiling_torch.crop_resize(chw, self.boxes, tile))
        cd = tiling_torch.crop_resize(depth[0], self.depth_boxes, tile)
        guides = [tiling_torch.crop_resize(feats[k][0], self.feat_boxes[k], (h, w))
                  for k, (_, h, w) in enumerate(self.refiner.guidance)]
        tiles = self.refiner(rgb, cd, *guides)
        out = tiling_torch.stitch(tiles, self.boxes, self.height, self.width, window=self.window)
        return out.unsqueeze(0).clamp(min=0.0)

    def example(self) -> torch.Tensor:
        """A (1, 3, H, W) example frame in 0…255."""
        gen = torch.Generator().manual_seed(0)
        return 255.0 * torch.rand(1, 3, self.height, self.width, generator=gen)


def export_pipeline_onnx(pipeline: FusedPipeline, path: str | Path) -> Path:
    """ONNX of the fused pipeline at ``path``: ``image`` (1,3,H,W) → ``depth`` (1,1,H,W)."""
    return _export(pipeline, (pipeline.example(),), Path(path), ["image"], ["depth"], dynamic_batch=False,
                   opset=17, simplify=True)


def export_pipeline_coreml(pipeline: FusedPipeline, path: str | Path, variant: str = "fp16") -> Path:
    """CoreML mlprogram of the fused pipeline at ``path`` (fixed 1×3×H×W input)."""
    from .coreml_export import to_coreml

    return to_coreml(pipeline, {"image": pipeline.example()}, ["depth"], path, variant)


def image_tensor(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 pipeline input from an HxWx3 uint8 RGB frame."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(np.float32))
