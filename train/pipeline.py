"""One frame through torch models exactly as :class:`edgedepth.Runtime` runs it.

The coarse model sees the whole frame, fitted to its input with the aspect kept (``CoarseFit``,
fit "pad", what bundles are exported with); RGB, coarse-depth and coarse-feature tiles are cut at
the grid's boxes with the native tile engine (the runtime's own crop); the refiner runs on all tiles;
the tile engine stitches them. Validation, the accuracy benchmark and export's calibration and
parity all go through here, so a checkpoint is scored on what a bundle made from it will compute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from edgedepth import tiling
from edgedepth.coarse_fit import CoarseFit
from edgedepth.tiling import TileGrid, Tiling

from .models.refiner import guide_sources, refiner_input_names

__all__ = ["coarse_fit", "coarse_input", "coarse_depth", "refiner_feeds", "run_coarse", "frame_feeds", "run_refiner",
           "FrameOutput", "refine_frame"]


def coarse_fit(image: np.ndarray, coarse: nn.Module, fit: str = "pad") -> CoarseFit:
    """Where an HxWx3 frame sits in ``coarse``'s input (``fit``: ``edgedepth.coarse_fit.FITS``;
    "pad" is what bundles of models trained on frames of the input's aspect say)."""
    return CoarseFit.for_frame(image.shape[0], image.shape[1], tuple(coarse.input_size), fit)


def coarse_input(image: np.ndarray, coarse: nn.Module, fit: str = "pad") -> np.ndarray:
    """(1, 3, h, w) normalised coarse input of an HxWx3 uint8 frame (the runtime's whole-frame crop,
    fitted: :func:`coarse_fit`)."""
    fit = coarse_fit(image, coarse, fit)
    whole = np.array([[0.0, 0.0, image.shape[0], image.shape[1]]])
    return fit.pad_input(tiling.crop_resize(image, whole, (fit.content_h, fit.content_w), mean=coarse.mean,
                                            std=coarse.std))


def coarse_depth(coarse: nn.Module, image: np.ndarray, fit: str = "pad") -> np.ndarray:
    """The coarse model's depth of the frame: (h, w) float32 metres, the frame's part of the map,
    scaled as the runtime scales it for a padded input (``CoarseFit.width_share``)."""
    where = coarse_fit(image, coarse, fit)
    return where.content(run_coarse(coarse, image, fit)[0][0]) * np.float32(where.width_share)


def refiner_feeds(image: np.ndarray, depth: np.ndarray, features: Sequence[np.ndarray], refiner: nn.Module,
                  grid: TileGrid, mean: Sequence[float], std: Sequence[float],
                  fit: CoarseFit | None = None) -> dict[str, np.ndarray]:
    """Refiner inputs for one frame: RGB, coarse-depth and feature crops at the grid's boxes.

    ``depth`` (1, h_c, w_c) and ``features[k]`` (C_k, h_k, w_k) are the coarse outputs of the frame,
    which sits in the coarse input as ``fit`` says (None: squeezed to fill it); RGB tiles are
    normalised with the coarse model's ``mean``/``std`` (interfaces.md).
    """
    height, width = image.shape[:2]
    names = refiner_input_names(refiner)
    feeds = {names[0]: tiling.crop_resize(image, grid.boxes, tuple(refiner.tile_size), mean=mean, std=std)}
    ch, cw = depth.shape[-2:]
    fit = fit or CoarseFit.for_frame(height, width, (ch, cw), "squeeze")
    feeds[names[1]] = tiling.crop_resize(np.ascontiguousarray(depth, np.float32), fit.map_boxes(grid.boxes, (ch, cw)),
                                         tuple(refiner.tile_size))
    for k, ((c, h, w), src) in enumerate(zip(refiner.guidance, guide_sources(refiner))):
        feat = features[src]
        if feat.shape[0] != c:
            raise ValueError(f"refiner guide{k} expects {c} channels but coarse feat{src} has {feat.shape[0]}: "
                             "the refiner was not built for this coarse model")
        feeds[f"guide{k}"] = tiling.crop_resize(feat, fit.map_boxes(grid.boxes, feat.shape[-2:]), (h, w))
    return feeds


@torch.no_grad()
def run_coarse(coarse: nn.Module, image: np.ndarray, fit: str = "pad") -> tuple[np.ndarray, list[np.ndarray]]:
    """The coarse model on a frame fitted to its input: (depth (1, h, w), [features (C_k, h_k, w_k)])
    as numpy, the whole input's maps (:func:`coarse_depth` is the frame's part in metres)."""
    param = next(coarse.parameters())
    x = torch.from_numpy(coarse_input(image, coarse, fit)).to(param.device, param.dtype)
    depth, feats = coarse(x)
    return depth[0].float().cpu().numpy(), [f[0].float().cpu().numpy() for f in feats]


@torch.no_grad()
def frame_feeds(coarse: nn.Module, refiner: nn.Module, image: np.ndarray, grid: TileGrid,
                coarse_depth: Optional[np.ndarray] = None,
                fit: str = "pad") -> tuple[dict[str, np.ndarray], np.ndarray, CoarseFit]:
    """(refiner feeds for every tile of ``grid``, the (h, w) coarse map they were cut from, where the
    frame sits in it).

    ``coarse_depth`` (h, w) replaces the coarse model's depth, the whole frame squeezed to that size
    (the oracle experiment; the refiner must then use no coarse features)."""
    if coarse_depth is None:
        depth, feats = run_coarse(coarse, image, fit)
        where = coarse_fit(image, coarse, fit)
    else:
        if refiner.guidance:
            raise ValueError("an oracle coarse depth has no coarse features: use a -dg refiner")
        depth, feats = np.asarray(coarse_depth, np.float32)[None], []
        where = CoarseFit.for_frame(image.shape[0], image.shape[1], depth.shape[-2:], "squeeze")
    return refiner_feeds(image, depth, feats, refiner, grid, coarse.mean, coarse.std, where), depth[0], where


@torch.no_grad()
def run_refiner(refiner: nn.Module, feeds: dict[str, np.ndarray], max_batch: int = 16) -> np.ndarray:
    """The refiner over all tiles of ``feeds`` in chunks of ``max_batch``: (N, 1, th, tw) float32."""
    param = next(refiner.parameters())
    names = refiner_input_names(refiner)
    n = len(feeds[names[0]])
    parts = []
    for start in range(0, n, max_batch):
        args = [torch.from_numpy(feeds[k][start:start + max_batch]).to(param.device, param.dtype) for k in names]
        parts.append(refiner(*args).float().cpu().numpy())
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


@dataclass
class FrameOutput:
    """``depth`` (H, W) float32 metres (stitched refined tiles); ``coarse`` (h, w) the coarse depth of
    the frame the refiner saw (its part of the map, in the same metres); ``tiles`` (N, 1, th, tw)
    refined tiles (the model's own scale); ``grid``."""

    depth: np.ndarray
    coarse: np.ndarray
    tiles: np.ndarray
    grid: TileGrid


def refine_frame(coarse: nn.Module, refiner: nn.Module, image: np.ndarray, tiling_cfg: Tiling, *,
                 coarse_depth: Optional[np.ndarray] = None, grid: Optional[TileGrid] = None,
                 max_batch: int = 16, fit: str = "pad") -> FrameOutput:
    """Run a frame (HxWx3 uint8) through ``coarse`` and ``refiner`` as the runtime does.

    ``coarse_depth``: see :func:`frame_feeds`. ``grid`` overrides ``tiling_cfg``'s grid (e.g.
    non-overlapping tiles for the seam comparison); the window is ``tiling_cfg``'s. ``fit``: how the
    frame fills the coarse input (the bundle's ``coarse.fit``).
    """
    height, width = image.shape[:2]
    grid = grid if grid is not None else tiling_cfg.grid(height, width, refiner.tile_size)
    feeds, depth, where = frame_feeds(coarse, refiner, image, grid, coarse_depth, fit)
    tiles = run_refiner(refiner, feeds, max_batch)
    if tiling_cfg.low_res:
        stitched = tiling.stitch_low(tiles, grid.boxes, image, grid.tile_resolution(*refiner.tile_size), tiling_cfg)[0]
    else:
        stitched = tiling.stitch(tiles, grid.boxes, height, width, window=tiling_cfg.window)[0]
    share = np.float32(where.width_share)
    return FrameOutput(stitched * share, where.content(depth) * share, tiles, grid)
