"""Training data: frame datasets, a resumable step-indexed sampler, and tile crops.

Frames come from :mod:`edgedepth.datasets` (procedural scenes rendered from seeds, or a folder
data set). Which frames a micro-batch holds depends only on (step, micro-batch, rank), so a
resumed or multi-process run sees exactly the frames an uninterrupted single-process run would.

Crops follow the DESIGN crop semantics through :mod:`edgedepth.tiling_torch` (the function the
runtime's tile engine implements): the coarse model sees the whole frame resized with the crop of
the whole-frame box; a refiner sees RGB / coarse depth / coarse features cropped with its tile's
box (scaled to each map), exactly as at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import Config, runtime_grid
from .distributed import DistInfo

# -- frame datasets -----------------------------------------------------------------------------


def sample_to_tensors(sample: dict, index: int) -> dict[str, torch.Tensor]:
    """An ``edgedepth.datasets`` Sample -> tensors.

    image (3, H, W) uint8; depth (1, H, W) float32 metres, 0 where invalid; reliable (1, H, W)
    bool, the Sample's mask (False = ground truth known to be wrong), all True when it has none.
    """
    image = np.ascontiguousarray(sample["image"])
    depth = np.asarray(sample["depth"], dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"sample {sample.get('name', index)!r}: image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if depth.shape != image.shape[:2]:
        raise ValueError(f"sample {sample.get('name', index)!r}: depth {depth.shape} does not match image {image.shape[:2]}")
    valid = np.isfinite(depth) & (depth > 0)
    mask = sample.get("mask")
    reliable = np.ones_like(valid) if mask is None else np.asarray(mask, dtype=bool)
    return {
        "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
        "depth": torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))[None],
        "reliable": torch.from_numpy(np.ascontiguousarray(reliable))[None],
        "index": torch.tensor(index, dtype=torch.int64),
    }


def _hflip(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.flip(-1) if v.ndim == 3 else v) for k, v in item.items()}


class ProceduralFrames(Dataset):
    """Procedural scenes rendered on demand; item ``i`` is sample ``i`` of
    ``edgedepth.datasets.iter_scenes(seed, ...)`` (scene seed ``seed * 1_000_003 + i``).

    Practically endless (``length`` items). ``unreliable`` renders transparent panes whose ground
    truth is the surface behind (the Sample's mask marks them). ``degrade`` makes the image
    real-like and the ground truth sparse (distillation data).
    """

    def __init__(self, frame_size: tuple[int, int], layouts: Sequence[str], seed: int = 0, *,
                 unreliable: bool = False, degrade: bool = False, hflip: bool = False,
                 length: int = 2**31 - 1) -> None:
        self.frame_size = tuple(frame_size)
        self.layouts = tuple(layouts)
        self.seed = seed
        self.unreliable = unreliable
        self.degrade = degrade
        self.hflip = hflip
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from edgedepth.datasets.procedural import render_scene

        h, w = self.frame_size
        seed = self.seed * 1_000_003 + int(index)
        sample = render_scene(seed, h, w, self.layouts[index % len(self.layouts)], unreliable=self.unreliable)
        if self.degrade:
            from edgedepth.datasets.degrade import SensorConfig, degrade

            sample = degrade(sample, SensorConfig(), seed=seed)
        item = sample_to_tensors(sample, index)
        # The flip is a function of the frame index, so resumed and multi-process runs agree.
        if self.hflip and np.random.default_rng(seed).random() < 0.5:
            item = _hflip(item)
        return item


class FolderFrames(Dataset):
    """A data set folder read with ``edgedepth.datasets.open_dataset``, frames resized to ``frame_size``."""

    def __init__(self, kind: str, root: str, split: Optional[str], frame_size: tuple[int, int], hflip: bool = False) -> None:
        from edgedepth.datasets import open_dataset

        self.samples = open_dataset(kind, root, split=split)
        if len(self.samples) == 0:
            raise ValueError(f"data set {kind!r} at {root!r} (split {split!r}) holds no samples")
        self.frame_size = tuple(frame_size)
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = sample_to_tensors(self.samples[int(index)], index)
        if tuple(item["image"].shape[-2:]) != self.frame_size:
            item = resize_frame(item, self.frame_size)
        if self.hflip and np.random.default_rng(index).random() < 0.5:
            item = _hflip(item)
        return item


def resize_frame(item: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Resize a frame with the crop semantics; depth keeps only pixels whose 4 neighbours are valid."""
    from edgedepth import tiling_torch

    h, w = item["image"].shape[-2:]
    box = whole_box(h, w)
    image = tiling_torch.crop_resize(item["image"].float(), box, size)[0]
    depth, _ = crop_valid(item["depth"][None], box[None], size)
    reliable = tiling_torch.crop_resize(item["reliable"].float(), box, size)[0] > 1.0 - 1e-4
    return {**item, "image": image.round().clamp(0, 255).to(torch.uint8), "depth": depth[0], "reliable": reliable}


# -- sampling: frame index = f(step, micro-batch, rank) ------------------------------------------


class StepBatchSampler(Sampler[list[int]]):
    """Micro-batches of frame indices from ``start_step`` on, the same for any resume or world size.

    Global position of frame b of micro-batch a of step s on rank r is
    ``((s * accum + a) * world + r) * batch + b``; positions map to dataset indices through a
    per-epoch permutation (seeded) for finite data sets and directly for procedural ones.
    """

    def __init__(self, length: int, batch_size: int, grad_accum: int, dist: DistInfo, seed: int,
                 start_step: int = 0, shuffle: bool = True) -> None:
        self.length, self.batch, self.accum = length, batch_size, grad_accum
        self.dist, self.seed, self.start_step, self.shuffle = dist, seed, start_step, shuffle
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng((self.seed, epoch)).permutation(self.length)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        world, rank = self.dist.world_size, self.dist.rank
        while True:
            for a in range(self.accum):
                first = ((step * self.accum + a) * world + rank) * self.batch
                yield [self._index(first + b) for b in range(self.batch)]
            step += 1


def build_loaders(cfg: Config, dist: DistInfo, start_step: int = 0) -> tuple[DataLoader, DataLoader]:
    """(endless train loader from ``start_step``, val loader over this rank's share of the val set)."""
    d, t = cfg.data, cfg.train
    if d.source == "procedural":
        train_set: Dataset = ProceduralFrames(d.frame_size, d.layouts, seed=t.seed, unreliable=d.unreliable,
                                              degrade=d.degrade, hflip=d.hflip)
        val_set: Dataset = ProceduralFrames(d.frame_size, d.layouts, seed=d.val_seed, unreliable=d.unreliable,
                                            degrade=d.degrade, length=d.val_samples)
        shuffle = False  # seeds are already independent scenes
    else:
        train_set = FolderFrames(d.source, d.root, d.train_split, d.frame_size, hflip=d.hflip)
        val_set = FolderFrames(d.source, d.root, d.val_split, d.frame_size)
        val_set = torch.utils.data.Subset(val_set, range(min(d.val_samples, len(val_set))))
        shuffle = True
    sampler = StepBatchSampler(len(train_set), t.batch_size, t.grad_accum, dist, seed=t.seed,
                               start_step=start_step, shuffle=shuffle)
    workers = {"num_workers": d.num_workers, "persistent_workers": d.num_workers > 0}
    train = DataLoader(train_set, batch_sampler=sampler, **workers)
    shard = list(range(dist.rank, len(val_set), dist.world_size))
    val = DataLoader(torch.utils.data.Subset(val_set, shard), batch_size=t.batch_size, shuffle=False,
                     num_workers=0)
    return train, val


# -- crops with the DESIGN semantics -------------------------------------------------------------


def whole_box(height: int, width: int) -> torch.Tensor:
    """The (1, 4) box [0, 0, H, W] covering a whole frame."""
    return torch.tensor([[0.0, 0.0, float(height), float(width)]], dtype=torch.float64)


def crop_frames(src: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop N boxes from each of B maps with the crop semantics: (B, C, H, W), boxes (B, N, 4) in
    the maps' pixels -> (B * N, C, h, w), frame-major."""
    from edgedepth import tiling_torch

    out = tiling_torch.crop_resize(src, boxes, size)
    return out.reshape(-1, *out.shape[2:])


def crop_valid(depth: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ground truth (0 = invalid): bilinear depth, kept only where every bilinear neighbour was valid.

    depth (B, 1, H, W), boxes (B, N, 4) -> depth (B * N, 1, h, w) metres (0 where invalid), valid bool.
    """
    d = crop_frames(depth, boxes, size)
    v = crop_frames((depth > 0).to(depth.dtype), boxes, size)
    keep = v > 1.0 - 1e-4
    return torch.where(keep, d, torch.zeros_like(d)), keep


@dataclass(frozen=True)
class TileLayout:
    """The tile grid of a training frame, with the runtime's rows/cols/overlap rules."""

    grid: "object"  # edgedepth.tiling.TileGrid
    rows: int
    cols: int

    @classmethod
    def from_config(cls, cfg: Config) -> "TileLayout":
        return cls(grid=runtime_grid(cfg), rows=cfg.tiling.rows, cols=cfg.tiling.cols)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def boxes(self) -> torch.Tensor:
        """(rows*cols, 4) float64 frame-pixel boxes, row-major."""
        return torch.tensor(np.asarray(self.grid.boxes, dtype=np.float64))

    def group(self, r0: int, c0: int) -> list[int]:
        """Tile ids of the 2x2 neighbourhood whose top-left tile is (r0, c0): TL, TR, BL, BR."""
        return [r0 * self.cols + c0, r0 * self.cols + c0 + 1, (r0 + 1) * self.cols + c0, (r0 + 1) * self.cols + c0 + 1]

    def random_group(self, frame_index: int, seed: int) -> list[int]:
        """A 2x2 neighbourhood chosen from the frame index (reproducible across resume and ranks)."""
        rng = np.random.default_rng((seed, int(frame_index)))
        return self.group(int(rng.integers(0, self.rows - 1)), int(rng.integers(0, self.cols - 1)))


def scaled_boxes(boxes: torch.Tensor, frame_hw: tuple[int, int], map_hw: tuple[int, int]) -> torch.Tensor:
    """Frame-pixel boxes expressed on a map of another size covering the same frame."""
    sy, sx = map_hw[0] / frame_hw[0], map_hw[1] / frame_hw[1]
    scale = torch.tensor([sy, sx, sy, sx], dtype=boxes.dtype, device=boxes.device)
    return boxes * scale


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or float 0..255 (B, 3, H, W) -> (x / 255 - mean) / std, float32."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s
