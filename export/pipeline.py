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

from edgedepth.tiling import Tiling

from edgedepth.train.models.refiner import guide_sources
from .onnx_export import OPSET, _export


class FusedPipeline(nn.Module):
    """``coarse`` + ``refiner`` over the runtime's tile grid of a ``height``×``width`` frame."""

    def __init__(self, coarse: nn.Module, refiner: nn.Module, height: int, width: int,
                 tiling_cfg: Tiling = Tiling()) -> None:
        super().__init__()
        if height < 1 or width < 1:
            raise ValueError(f"pipeline input size must be positive, got {height}x{width}")
        self.coarse, self.refiner = coarse.eval(), refiner.eval()
        self.height, self.width, self.window = int(height), int(width), tiling_cfg.window
        grid = tiling_cfg.grid(self.height, self.width, refiner.tile_size)
        th, tw = refiner.tile_size
        if grid.tile_h < th or grid.tile_w < tw:
            raise ValueError(f"a {height}x{width} frame gives {grid.tile_h}x{grid.tile_w} tiles with a "
                             f"{tiling_cfg.rows}x{tiling_cfg.cols} grid, smaller than the refiner's {th}x{tw}")
        self.grid = grid
        ch, cw = coarse.input_size
        self.sources = guide_sources(refiner)
        with torch.no_grad():  # actual map sizes (strides may round either way)
            _, feats = coarse(torch.zeros(1, 3, ch, cw))
        feat_sizes = [tuple(feats[i].shape[-2:]) for i in self.sources]
        # numpy, not tensors: constants of the graph, never traced values.
        self.boxes = np.array(grid.boxes, dtype=np.float64)
        self.whole = np.array([[0.0, 0.0, self.height, self.width]])
        self.depth_boxes = np.array(grid.scaled(ch / self.height, cw / self.width), dtype=np.float64)
        self.feat_boxes = [np.array(grid.scaled(h / self.height, w / self.width), dtype=np.float64)
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
        guides = [tiling_torch.crop_resize(feats[src][0], boxes, (h, w))
                  for (_, h, w), src, boxes in zip(self.refiner.guidance, self.sources, self.feat_boxes)]
        tiles = self.refiner(rgb, cd, *guides)
        out = tiling_torch.stitch(tiles, self.boxes, self.height, self.width, window=self.window)
        return out.unsqueeze(0).clamp(min=0.0)

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
