"""Training data: frame sources, the items each stage trains on, a resumable step-indexed sampler.

Frames come from a **frame source**: pre-rendered shards (:mod:`.shards`, the fast path), procedural
scenes rendered on demand, or a data-set folder. A frame is numpy: ``image`` HxWx3 uint8 RGB,
``depth`` HxW float32 metres (0 = invalid; the sky and anything beyond the scene's range carry the
source's far depth, which models learn to report as "beyond range"), ``reliable`` HxW bool (False
where the ground truth is known to be wrong) and ``index``.

Items are cut from frames with the native tile engine (:mod:`edgedepth.tiling`, the DESIGN crop
semantics the runtime uses), so a stage never handles a whole high-resolution frame on the
training device and items of any frame size stack into one batch:

* :class:`WholeFrameItems` (coarse stage, Noisy Pretraining): the frame resized to the model input,
  ground truth at a loss resolution.
* :class:`TileItems` (refiner, distill): the coarse model's input plus the tiles of one random 2x2
  neighbourhood of the runtime's grid (PRO's GPCT group) with their ground truth and boxes.

Which frames a micro-batch holds depends only on (step, micro-batch, rank), so a resumed or
multi-process run sees exactly the frames an uninterrupted single-process run would; random
choices (flip, tile group) are seeded by the visit (:class:`StepBatchSampler`): an item's index may
exceed the source's length, and the frame is index % length.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgedepth import tiling
from edgedepth.coarse_fit import FITS, CoarseFit
from edgedepth.tiling import TileGrid

from .augment import draw_shapes, shaded_crops
from .config import Config
from .distributed import DistInfo

Frame = dict  # image, depth, reliable (numpy) and index (int); see the module docstring

# -- frame sources ------------------------------------------------------------------------------


def sample_to_frame(sample: dict, index: int) -> Frame:
    """An ``edgedepth.datasets`` Sample -> a frame (numpy, C-contiguous)."""
    image = np.ascontiguousarray(sample["image"])
    depth = np.asarray(sample["depth"], dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"sample {sample.get('name', index)!r}: image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if depth.shape != image.shape[:2]:
        raise ValueError(f"sample {sample.get('name', index)!r}: depth {depth.shape} does not match image {image.shape[:2]}")
    valid = np.isfinite(depth) & (depth > 0)
    mask = sample.get("mask")
    reliable = np.ones_like(valid) if mask is None else np.ascontiguousarray(mask, dtype=bool)
    return {"image": image, "depth": np.ascontiguousarray(np.where(valid, depth, 0.0), dtype=np.float32),
            "reliable": reliable, "index": int(index)}


class ProceduralFrames:
    """Procedural scenes rendered on demand; frame ``i`` is scene seed ``scene_seed(seed, i)``
    (``edgedepth.datasets.iter_scenes``' numbering) with layout ``layouts[i % len(layouts)]``.

    ``unreliable`` renders transparent panes whose ground truth is the surface behind (the frame's
    ``reliable`` marks them); ``far_depth`` > 0 gives the sky that depth; ``degrade`` makes the image
    real-like and the ground truth sparse (distillation data).
    """

    def __init__(self, frame_size: tuple[int, int], layouts: Sequence[str], seed: int = 0, *,
                 unreliable: bool = False, degrade: bool = False, far_depth: float = 0.0,
                 length: int = 2**31 - 1) -> None:
        self.frame_size = tuple(frame_size)
        self.layouts = tuple(layouts)
        self.seed, self.unreliable, self.degrade = seed, unreliable, degrade
        self.far_depth = float(far_depth)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def frame(self, index: int) -> Frame:
        from edgedepth.datasets.procedural import render_scene, scene_seed

        h, w = self.frame_size
        seed = scene_seed(self.seed, index)
        sample = render_scene(seed, h, w, self.layouts[index % len(self.layouts)], unreliable=self.unreliable,
                              far_depth=self.far_depth or None)
        if self.degrade:
            from edgedepth.datasets.degrade import SensorConfig, degrade

            sample = degrade(sample, SensorConfig(), seed=seed)
        return sample_to_frame(sample, index)


class FolderFrames:
    """A data-set folder read with ``edgedepth.datasets.open_dataset``, frames resized to ``frame_size``
    (depth keeps only pixels whose bilinear neighbours are all valid)."""

    def __init__(self, kind: str, root: str, split: Optional[str], frame_size: tuple[int, int]) -> None:
        from edgedepth.datasets import open_dataset

        self.samples = open_dataset(kind, root, split=split)
        if len(self.samples) == 0:
            raise ValueError(f"data set {kind!r} at {root!r} (split {split!r}) holds no samples")
        self.frame_size = tuple(frame_size)

    def __len__(self) -> int:
        return len(self.samples)

    def frame(self, index: int) -> Frame:
        frame = sample_to_frame(self.samples[int(index)], index)
        if frame["image"].shape[:2] != self.frame_size:
            frame = resize_frame(frame, self.frame_size)
        return frame


def resize_frame(frame: Frame, size: tuple[int, int]) -> Frame:
    """Resize a frame with the crop semantics (ground truth: only fully valid bilinear samples)."""
    h, w = frame["image"].shape[:2]
    whole = whole_box(h, w)
    rgb = tiling.crop_resize(frame["image"], whole, size, threads=1)[0]
    image = np.ascontiguousarray((rgb.transpose(1, 2, 0) * 255.0).round().clip(0, 255).astype(np.uint8))
    depth, _ = crop_valid(frame["depth"], whole, size)
    reliable = crop_mask(frame["reliable"], whole, size)
    return {**frame, "image": image, "depth": depth[0, 0], "reliable": reliable[0, 0]}


# -- crops (numpy, native tile engine) ----------------------------------------------------------


def whole_box(height: int, width: int) -> np.ndarray:
    """The (1, 4) box [0, 0, H, W] covering a whole frame."""
    return np.array([[0.0, 0.0, float(height), float(width)]])


def crop_mask(mask: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, 1, h, w) bool: True where every bilinear neighbour of the sample is True."""
    m = np.ascontiguousarray(mask, dtype=np.float32)[None]
    return tiling.crop_resize(m, boxes, size, threads=1) > 1.0 - 1e-4


def crop_valid(depth: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Crop HxW ground truth (0 = invalid) at ``boxes``: bilinear depth kept only where every
    bilinear neighbour was valid. -> depth (N, 1, h, w) metres (0 where invalid), valid bool."""
    d = tiling.crop_resize(np.ascontiguousarray(depth, dtype=np.float32)[None], boxes, size, threads=1)
    keep = crop_mask(depth > 0, boxes, size)
    return np.where(keep, d, np.float32(0.0)), keep


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of a horizontally flipped frame expressed in the original frame (x0 -> W - x0 - w).
    Cropping the original there and flipping the crop equals cropping the flipped frame."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[:, 1] = width - boxes[:, 1] - boxes[:, 3]
    return out


def log_area_reduce(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32: the mean of ln depth over each output pixel's footprint (valid pixels only),
    exponentiated — ground truth "at the resolution" ``size``. A footprint with no valid pixel takes
    the frame's mean. The footprint of output pixel i is source rows [floor(i H/h), floor((i+1) H/h))."""
    depth = np.asarray(depth, np.float64)
    H, W = depth.shape
    h, w = size
    valid = depth > 0
    logd = np.where(valid, np.log(np.where(valid, depth, 1.0)), 0.0)

    def table(x):
        t = np.zeros((H + 1, W + 1))
        np.cumsum(np.cumsum(x, 0), 1, out=t[1:, 1:])
        return t

    ys = (np.arange(h + 1) * H) // h
    xs = (np.arange(w + 1) * W) // w
    s, n = table(logd), table(valid.astype(np.float64))
    area = lambda t: t[ys[1:]][:, xs[1:]] - t[ys[:-1]][:, xs[1:]] - t[ys[1:]][:, xs[:-1]] + t[ys[:-1]][:, xs[:-1]]
    total, count = area(s), area(n)
    fill = logd[valid].mean() if valid.any() else 0.0
    return np.exp(np.where(count > 0, total / np.maximum(count, 1), fill)).astype(np.float32)


# -- items ------------------------------------------------------------------------------------


def _flip(rng: np.random.Generator, enabled: bool) -> bool:
    return bool(enabled and rng.random() < 0.5)


class WholeFrameItems(Dataset):
    """The whole frame for models that see it entire (coarse stage, Noisy Pretraining).

    Item: ``image`` (3, h, w) float32 normalised with ``mean``/``std`` at ``input_size``;
    ``depth``/``valid``/``reliable`` (1, hl, wl) at ``loss_size``; ``index``.
    """

    def __init__(self, source, input_size: tuple[int, int], loss_size: tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], hflip: bool = False, seed: int = 0) -> None:
        self.source, self.input_size, self.loss_size = source, tuple(input_size), tuple(loss_size)
        self.mean, self.std, self.hflip, self.seed = tuple(mean), tuple(std), hflip, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        f = self.source.frame(int(index) % len(self.source))
        h, w = f["image"].shape[:2]
        whole = whole_box(h, w)
        image = tiling.crop_resize(f["image"], whole, self.input_size, mean=self.mean, std=self.std, threads=1)[0]
        depth, valid = crop_valid(f["depth"], whole, self.loss_size)
        reliable = crop_mask(f["reliable"], whole, self.loss_size)
        item = {"image": image, "depth": depth[0], "valid": valid[0], "reliable": reliable[0]}
        if _flip(np.random.default_rng((self.seed, int(index))), self.hflip):
            item = {k: np.ascontiguousarray(v[..., ::-1]) for k, v in item.items()}
        out = {k: torch.from_numpy(v) for k, v in item.items()}
        out["index"] = torch.tensor(int(index), dtype=torch.int64)
        return out


class TileItems(Dataset):
    """What a refiner trains on, cut from one frame exactly as the runtime cuts it.

    Item: ``coarse_image`` (3, hc, wc) normalised (the coarse model's input); for each refiner input
    size k (``tile_sizes``; a teacher may need its own) ``rgb{k}`` (G, 3, th, tw) normalised tiles of
    a 2x2 group of the frame's grid (``grid_fn(H, W)``, the runtime's rule), G = 4; ``gt``, ``valid``,
    ``reliable`` (G, 1, gh, gw) at ``gt_size`` (default the first tile size); ``boxes`` (G, 4) frame
    pixels; ``frame_hw`` (2,);
    ``oracle`` (1, hc, wc) ground truth reduced to the coarse input size when ``oracle``;
    ``image_gt`` (G, 3, gh, gw) the tiles' colours in [0, 1] at ``gt_size`` when ``gt_image``; ``index``.
    A flipped item is the flipped frame's (boxes included). ``shade``: the share of items whose frame
    gets random shadow and paint shapes (``augment.shade``) before anything is cut from it (computed
    only at the pixels the crops read: ``augment.shaded_crops``); with ``shade_coarse`` False the
    coarse model's input is cut from the frame without them.

    ``fit`` is how frames fill the coarse input (``edgedepth.coarse_fit``): with "pad" a frame of
    another aspect (a 640x480 camera's) keeps its proportions there, as the runtime feeds it, and the
    item carries ``coarse_boxes`` (G, 4), its boxes on the coarse input's pixel grid, and
    ``coarse_hw`` (2,) that grid's size; its ground truth is divided by the fit's width share, since
    the runtime multiplies the refined depth by it. Unpadded items carry their frame boxes and size
    there. A grid one tile wide or high (a 640x480 frame's 2x1) gives a group of its two tiles, each
    twice, so that every item has four.
    """

    def __init__(self, source, coarse_size: tuple[int, int], tile_sizes: Sequence[tuple[int, int]],
                 grid_fn: Callable[[int, int], TileGrid], mean: Sequence[float], std: Sequence[float],
                 hflip: bool = False, seed: int = 0, oracle: bool = False,
                 gt_size: Optional[tuple[int, int]] = None, gt_image: bool = False, shade: float = 0.0,
                 shade_coarse: bool = True, fit: str = "squeeze") -> None:
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        self.source, self.coarse_size, self.fit = source, tuple(coarse_size), fit
        self.shade, self.shade_coarse = float(shade), bool(shade_coarse)
        self.gt_image = gt_image
        self.tile_sizes = [tuple(t) for t in tile_sizes]
        self.gt_size = tuple(gt_size) if gt_size is not None else self.tile_sizes[0]
        self.grid_fn, self.mean, self.std = grid_fn, tuple(mean), tuple(std)
        self.hflip, self.seed, self.oracle = hflip, seed, oracle

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        f = self.source.frame(int(index) % len(self.source))
        h, w = f["image"].shape[:2]
        grid = self.grid_fn(h, w)
        if grid.rows < 2 and grid.cols < 2:
            raise ValueError(f"frame {index} ({h}x{w}) gives a single tile: GPCT needs two")
        rng = np.random.default_rng((self.seed, int(index)))
        flip = _flip(rng, self.hflip)
        r0, c0 = int(rng.integers(0, max(1, grid.rows - 1))), int(rng.integers(0, max(1, grid.cols - 1)))
        ids = group_ids(grid.rows, grid.cols, r0, c0)
        boxes = np.asarray(grid.boxes)[ids]  # in the (possibly flipped) frame the model sees
        src = mirror_boxes(boxes, w) if flip else boxes
        image = f["image"]
        # drawn last: items without shapes are as before
        shapes = draw_shapes(rng, h, w) if self.shade and rng.random() < self.shade else None

        def crop(boxes, size, mean, std, shaded=True):
            if shapes is not None and shaded:
                return shaded_crops(image, shapes, boxes, size, mean=mean, std=std)
            return tiling.crop_resize(image, boxes, size, mean=mean, std=std, threads=1)

        where = CoarseFit.for_frame(h, w, self.coarse_size, self.fit)
        content = crop(whole_box(h, w), (where.content_h, where.content_w), self.mean, self.std, self.shade_coarse)
        # padded where the flip below brings the content to where the runtime puts the flipped frame's
        pad = dataclasses.replace(where, left=where.cw - where.left - where.content_w) if flip else where
        item = {"coarse_image": pad.pad_input(content)[0]}
        for k, size in enumerate(self.tile_sizes):
            item[f"rgb{k}"] = crop(src, size, self.mean, self.std)
        item["gt"], item["valid"] = crop_valid(f["depth"], src, self.gt_size)
        if where.padded:
            if self.oracle:
                raise ValueError(f"frame {index} ({h}x{w}): oracle coarse maps need frames of the coarse input's aspect")
            item["gt"] = item["gt"] / np.float32(where.width_share)
        item["reliable"] = crop_mask(f["reliable"], src, self.gt_size)
        if self.gt_image:
            item["image_gt"] = crop(src, self.gt_size, 0.0, 1.0)
        if self.oracle:
            item["oracle"] = log_area_reduce(f["depth"], self.coarse_size)[None]
        if flip:
            item = {k: np.ascontiguousarray(v[..., ::-1]) for k, v in item.items()}
        out = {k: torch.from_numpy(v) for k, v in item.items()}
        out["boxes"] = torch.from_numpy(boxes.astype(np.float64))
        out["frame_hw"] = torch.tensor([h, w], dtype=torch.float64)
        if where.padded:
            out["coarse_boxes"] = torch.from_numpy(where.map_boxes(boxes, self.coarse_size))
            out["coarse_hw"] = torch.tensor([float(where.ch), float(where.cw)], dtype=torch.float64)
        else:
            out["coarse_boxes"], out["coarse_hw"] = out["boxes"], out["frame_hw"]
        out["index"] = torch.tensor(int(index), dtype=torch.int64)
        return out


class FrameItems(Dataset):
    """Whole frames for validation (one per batch: frames may differ in size): ``image`` HxWx3 uint8,
    ``depth`` HxW, ``reliable`` HxW as tensors, rendered once and kept."""

    def __init__(self, source, indices: Sequence[int]) -> None:
        self.frames = [source.frame(int(i)) for i in indices]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        f = self.frames[index]
        return {"image": torch.from_numpy(f["image"]), "depth": torch.from_numpy(f["depth"]),
                "reliable": torch.from_numpy(f["reliable"]), "index": torch.tensor(f["index"])}


def group_ids(rows: int, cols: int, r0: int, c0: int) -> list[int]:
    """Tile ids of the 2x2 neighbourhood whose top-left tile is (r0, c0) in a row-major grid: TL, TR,
    BL, BR. A grid one tile wide (high) repeats its column (row): TL = TR, BL = BR (TL = BL, TR = BR)."""
    r1, c1 = min(r0 + 1, rows - 1), min(c0 + 1, cols - 1)
    return [r0 * cols + c0, r0 * cols + c1, r1 * cols + c0, r1 * cols + c1]


# -- sampling: frame index = f(step, micro-batch, rank) ------------------------------------------


class StepBatchSampler(Sampler[list[int]]):
    """Micro-batches of frame indices from ``start_step`` on, the same for any resume or world size.

    Global position of frame b of micro-batch a of step s on rank r is
    ``((s * accum + a) * world + r) * batch + b``; it maps to a *visit* ``epoch * length + i``, i the
    frame from a per-epoch permutation (seeded) for finite data sets, the position itself for
    procedural ones. Items read frame ``visit % length`` and draw their random choices (tile group,
    flip, noise) from the visit, so every epoch cuts each frame anew: drawn from the frame index
    alone, a 1080p shard frame gave the same 2x2 of its 16 tiles (4K: of 72) every epoch.
    """

    def __init__(self, length: int, batch_size: int, grad_accum: int, dist: DistInfo, seed: int,
                 start_step: int = 0, shuffle: bool = True) -> None:
        self.length, self.batch, self.accum = length, batch_size, grad_accum
        self.dist, self.seed, self.start_step, self.shuffle = dist, seed, start_step, shuffle
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        if not self.shuffle:
            return position
        epoch, offset = divmod(position, self.length)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng((self.seed, epoch)).permutation(self.length)
            self._perm_epoch = epoch
        return epoch * self.length + int(self._perm[offset])

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        world, rank = self.dist.world_size, self.dist.rank
        while True:
            for a in range(self.accum):
                first = ((step * self.accum + a) * world + rank) * self.batch
                yield [self._index(first + b) for b in range(self.batch)]
            step += 1


# -- sources and loaders from a config ----------------------------------------------------------


def frame_sources(cfg: Config) -> tuple[Any, Any, bool]:
    """(training source, validation source, shuffle) of ``cfg.data``."""
    d, t = cfg.data, cfg.train
    if d.shards:
        from .shards import ShardFrames

        train = ShardFrames(d.shards)
        val = ProceduralFrames(train.frame_sizes[0], d.layouts, seed=d.val_seed, unreliable=d.unreliable,
                               degrade=d.degrade, far_depth=d.far_depth, length=d.val_samples)
        return train, val, True
    if d.source == "procedural":
        train = ProceduralFrames(d.frame_size, d.layouts, seed=t.seed, unreliable=d.unreliable, degrade=d.degrade,
                                 far_depth=d.far_depth)
        val = ProceduralFrames(d.frame_size, d.layouts, seed=d.val_seed, unreliable=d.unreliable, degrade=d.degrade,
                               far_depth=d.far_depth, length=d.val_samples)
        return train, val, False  # seeds are already independent scenes
    train = FolderFrames(d.source, d.root, d.train_split, d.frame_size)
    val = FolderFrames(d.source, d.root, d.val_split, d.frame_size)
    return train, val, True


def training_frames(cfg: Config) -> Optional[dict]:
    """What a run trains on, when it is a finite set (shard folders, a data-set folder):
    {"frames": total, "parts": [{"source", "frames", "frame_size"}]}; None for the endless
    procedural stream. Written beside the run's metrics and printed at its start, so that a run on
    a folder holding fewer frames than its config says is seen at once, not after training."""
    d = cfg.data
    if d.shards:
        from .shards import shard_folder_meta

        metas = [shard_folder_meta(root) for root in d.shards]
        parts = [{"source": str(root), "frames": int(m["count"]), "frame_size": list(m["frame_size"])}
                 for root, m in zip(d.shards, metas)]
    elif d.source != "procedural":
        frames = len(FolderFrames(d.source, d.root, d.train_split, d.frame_size))
        parts = [{"source": str(d.root), "frames": frames, "frame_size": list(d.frame_size)}]
    else:
        return None
    return {"frames": sum(p["frames"] for p in parts), "parts": parts}


def build_loaders(cfg: Config, dist: DistInfo, items: Callable[[Any], Dataset],
                  start_step: int = 0) -> tuple[DataLoader, DataLoader]:
    """(endless train loader of ``items(train_source)`` from ``start_step``, val loader of whole
    frames over this rank's share of the val set, one frame per batch)."""
    d, t = cfg.data, cfg.train
    train_src, val_src, shuffle = frame_sources(cfg)
    train_set = items(train_src)
    sampler = StepBatchSampler(len(train_set), t.batch_size, t.grad_accum, dist, seed=t.seed,
                               start_step=start_step, shuffle=shuffle)
    workers = {"num_workers": d.num_workers, "persistent_workers": d.num_workers > 0}
    train = DataLoader(train_set, batch_sampler=sampler, **workers)
    count = min(d.val_samples, len(val_src))
    val = DataLoader(FrameItems(val_src, range(dist.rank, count, dist.world_size)), batch_size=1, shuffle=False)
    return train, val

