"""Frames → refiner inputs, exactly as the runtime cuts them, for calibration and parity.

The torch float32 coarse model runs once per frame; its depth and features are cropped at the
runtime's tile boxes with :mod:`edgedepth.tiling` (the same crop semantics and the same grid rule
as :class:`edgedepth.runtime.Runtime`), so INT8 is calibrated on — and every variant scored on —
the tensors it will see on the device. Calibration needs no ground truth (a folder or a video of
the user's own camera will do); the frames that score or select a variant do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from edgedepth import tiling
from edgedepth.tiling import Tiling

from edgedepth.coarse_fit import CoarseFit
from edgedepth.train.pipeline import frame_feeds, run_refiner

PROCEDURAL = "procedural"
UNLABELED = ("images", "video")   # frame sources without ground truth: calibration only
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_FRAMES = 32                  # frames a calibration video contributes, spread over its length


@dataclass
class FrameTiles:
    """One frame prepared for the refiner.

    ``inputs``: refiner feeds, (N, C, h, w) float32 each; ``coarse``: (h_c, w_c) torch coarse depth
    (m); ``reference``: (H, W) float32 stitched output of the torch float32 refiner; ``gt``/``valid``:
    (H, W) ground truth (m) and its validity mask, None for unlabeled (calibration) frames.
    """

    name: str
    image: np.ndarray
    gt: np.ndarray | None
    valid: np.ndarray | None
    boxes: np.ndarray
    inputs: dict[str, np.ndarray]
    coarse: np.ndarray
    reference: np.ndarray | None = None
    fit: CoarseFit | None = None  # where the frame sits in the coarse input (None: it fills it)

    def metres(self, depth: np.ndarray) -> np.ndarray:
        """The model's depth of the frame in the runtime's metres: times ``CoarseFit.width_share``."""
        return depth if self.fit is None or not self.fit.padded else depth * np.float32(self.fit.width_share)

    def coarse_metres(self, depth: np.ndarray) -> np.ndarray:
        """A (..., ch, cw) coarse map -> the frame's part of it in metres (what the runtime returns)."""
        return depth if self.fit is None or not self.fit.padded else self.metres(self.fit.content(depth))


def load_frames(source: str | Path | Sequence[Any], *, count: int = 8, size: tuple[int, int] = (96, 128),
                seed: int = 0, what: str = "calibration", labeled: bool = True) -> list[Any]:
    """Samples from ``source``: a sequence of samples, ``"procedural[:N]"`` (N rendered scenes of
    ``size``, seeds from ``seed``), a data-set folder (``open_dataset``, ``KIND:PATH`` picks the
    reader), or — where ground truth is not needed (``labeled=False``: calibration) — frames of the
    user's own camera: a folder of images or a video file (``images:PATH``, ``video:PATH``, or
    told apart by the path: a video suffix, or image files directly in the folder). Raises
    ValueError on an empty set or unlabeled frames where depth is needed, FileNotFoundError on a
    missing path."""
    if isinstance(source, (str, Path)):
        text = str(source)
        if text == PROCEDURAL or text.startswith(PROCEDURAL + ":"):
            from edgedepth.datasets import render_scene

            n = int(text.split(":", 1)[1]) if ":" in text else count
            layouts = ("street", "indoor")
            samples = [render_scene(seed + i, size[0], size[1], layouts[i % 2]) for i in range(n)]
        else:
            kind, _, root = text.rpartition(":") if ":" in text and not Path(text).exists() else ("", "", text)
            if not Path(root).exists():
                raise FileNotFoundError(f"{what} set {root} not found (a data-set folder, a folder of images, "
                                        "a video, or 'procedural:N')")
            kind = kind or _camera_kind(Path(root))
            if kind in UNLABELED:
                if labeled:
                    raise ValueError(f"the {what} set {text!r} is {kind} without ground-truth depth; the {what} "
                                     "frames need depth (a data-set folder or 'procedural:N'); unlabeled frames "
                                     "can only calibrate")
                samples = _images(Path(root)) if kind == "images" else _video(Path(root), VIDEO_FRAMES)
            else:
                from edgedepth.datasets import open_dataset

                samples = list(open_dataset(kind or "folder", root))
    else:
        samples = list(source)
    if not samples:
        raise ValueError(f"the {what} set {source!r} is empty: give at least one frame")
    return samples


def _camera_kind(path: Path) -> str:
    """``video`` / ``images`` for a camera's own frames, "" for anything else (a data set)."""
    from edgedepth.video import VIDEO_SUFFIXES

    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
        return "images"
    return ""


def _images(folder: Path) -> list[dict[str, Any]]:
    from edgedepth.depth_io import read_image

    if not folder.is_dir():
        raise ValueError(f"images:{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [{"image": read_image(p), "name": p.stem} for p in files]


def _video(path: Path, count: int) -> list[dict[str, Any]]:
    """``count`` frames spread over the video (its first ``count`` when it does not say its length)."""
    from edgedepth.video import FrameSource

    with FrameSource(path) as source:
        step = max(1, (source.frame_count or count) // count)
        frames = [f for i, f in enumerate(source) if i % step == 0][:count]
    if source.color == "bgr":
        frames = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    return [{"image": f, "name": f"{path.stem}_{k * step}"} for k, f in enumerate(frames)]


def check_frames(samples: Sequence[Any], tile_size: tuple[int, int], tiling_cfg: Tiling,
                 what: str = "calibration", *, labeled: bool = True) -> tuple[int, int]:
    """Validate frames and return their common (H, W).

    Every frame must be HxWx3 uint8 (with HxW depth when ``labeled``), all of one resolution, and large enough that
    the tiling's tiles are at least the refiner's tile size (a smaller frame would be upsampled into
    tiles, which the refiner never saw in training).
    """
    if not samples:
        raise ValueError(f"the {what} set is empty: give at least one frame")
    shape = None
    for s in samples:
        image, depth, name = s["image"], s.get("depth"), s.get("name", "?")
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            raise ValueError(f"{what} frame {name!r}: image must be HxWx3 uint8 RGB, got "
                             f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
        if depth is None and labeled:
            raise ValueError(f"{what} frame {name!r} has no ground-truth depth, which the {what} frames need")
        if depth is not None and np.shape(depth) != image.shape[:2]:
            raise ValueError(f"{what} frame {name!r}: depth {depth.shape} does not match image {image.shape[:2]}")
        if shape is None:
            shape = image.shape[:2]
        elif image.shape[:2] != shape:
            raise ValueError(f"{what} frame {name!r} is {image.shape[0]}x{image.shape[1]} but the set's "
                             f"resolution is {shape[0]}x{shape[1]}: use frames of one resolution")
    grid = tiling_cfg.grid(*shape, tile_size)
    if grid.tile_h < tile_size[0] or grid.tile_w < tile_size[1]:
        raise ValueError(
            f"{what} frames are {shape[0]}x{shape[1]}: a {tiling_cfg.rows}x{tiling_cfg.cols} tiling gives "
            f"{grid.tile_h}x{grid.tile_w} tiles, smaller than the refiner's {tile_size[0]}x{tile_size[1]} "
            "tile size; use higher-resolution frames or fewer tiles")
    return int(shape[0]), int(shape[1])


def prepare_frames(coarse: nn.Module, refiner: nn.Module, samples: Sequence[Any], tiling_cfg: Tiling,
                   *, reference: bool = True, fit: str = "pad") -> list[FrameTiles]:
    """Run the float32 torch coarse model (and refiner when ``reference``) over ``samples``, each
    frame fitted to the coarse input as ``fit`` (the bundle's ``coarse.fit``) says."""
    from tqdm.auto import tqdm

    coarse, refiner = coarse.eval(), refiner.eval()
    out = []
    for s in tqdm(samples, desc="frames", leave=False, disable=len(samples) < 4):
        image = s["image"]
        grid = tiling_cfg.grid(*image.shape[:2], refiner.tile_size)
        feeds, depth, where = frame_feeds(coarse, refiner, image, grid, fit=fit)
        gt = valid = None  # unlabeled (calibration) frames: nothing to score against
        if s.get("depth") is not None:
            gt = np.asarray(s["depth"], dtype=np.float32)
            valid = gt > 0
            if s.get("mask") is not None:
                valid &= s["mask"]
        frame = FrameTiles(s.get("name", f"frame{len(out)}"), image, gt, valid, grid.boxes, feeds, depth, fit=where)
        if reference:
            frame.reference = stitch_frame(run_refiner(refiner, feeds, max_batch=len(grid.boxes)), frame,
                                           tiling_cfg.window)
        out.append(frame)
    return out


def stitch_frame(tiles: np.ndarray, frame: FrameTiles, window: str) -> np.ndarray:
    """(H, W) float32 depth (m) from (N, 1, th, tw) refined tiles of ``frame``."""
    height, width = frame.image.shape[:2]
    return frame.metres(tiling.stitch(np.asarray(tiles, dtype=np.float32), frame.boxes, height, width,
                                      window=window)[0])


def calibration_batches(frames: Sequence[FrameTiles]) -> list[dict[str, np.ndarray]]:
    """One refiner feed dict per frame (all its tiles)."""
    return [f.inputs for f in frames]
