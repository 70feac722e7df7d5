"""Tile engine: tile geometry, batched crop+resize, window weights and blend+stitch.

numpy in, numpy out (native CPU engine, multi-threaded, GIL released); torch CUDA tensors and
CuPy arrays in, the same kind out (CUDA engine, on the framework's current stream, no host round
trip). Without the CPU extension the numpy reference `edgedepth.tiling_reference` runs, with a
warning. Semantics (DESIGN.md "one crop semantics", window and stitch rules) are documented in
`edgedepth.tiling_reference` and docs/native.md.

Every argument is checked here before native code runs; bad input raises ValueError/TypeError
naming the argument. Non-contiguous arrays are copied (never rejected).
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Optional, Sequence

import numpy as np

from . import native, tiling_reference
from .guided_filter import fast_guided_upsample
from .tiling_reference import MIN_JOINT_SIGMA, UPSAMPLING, WINDOWS

__all__ = [
    "TileGrid", "Tiling", "crop_resize", "crop_resize_maps", "window", "stitch", "finish", "stitch_finish",
    "joint_upsample", "guided_upsample", "upsample", "snap_edges", "stitch_joint", "stitch_low", "WINDOWS",
    "UPSAMPLING", "get_num_threads", "set_num_threads", "native_status", "MAX_THREADS", "MAX_SIDE", "MAX_MAP_CROPS",
]


#: Most CPU threads one call may use (csrc/checks.hpp kMaxThreads): each is a stack of address space
#: and a spawn per call, and no machine this runs on gains from more.
MAX_THREADS = 256
#: Largest image side, channel count or box count the engines index (csrc/checks.hpp kMaxSide; they
#: use 32-bit indices).
MAX_SIDE = 1 << 28
#: Most maps one CUDA call of crop_resize_maps cuts (csrc/map_crops.hpp kMaxMapCrops).
MAX_MAP_CROPS = 8


# ---------------------------------------------------------------- threads

def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware where the OS says): the default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


_threads = min(available_cores(), MAX_THREADS)
_warned_fallback = threading.Event()


def get_num_threads() -> int:
    """Threads the CPU engine uses when a call passes threads=None (default: all usable cores)."""
    return _threads


def set_num_threads(n: int) -> None:
    """Sets the default thread count of the CPU engine (1..MAX_THREADS)."""
    global _threads
    _threads = _check_int("n", n, 1, MAX_THREADS)


def native_status() -> dict[str, Any]:
    """What `edgedepth info` prints: which engines are loaded, and why not (`edgedepth.native`), and
    the CPU engine's default thread count."""
    return {**native.native_status(), "threads": _threads}


# ---------------------------------------------------------------- tile geometry

def _check_int(name: str, value: Any, minimum: int, maximum: Optional[int] = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def _axis(size: int, count: int, overlap: int, tile: Optional[int], what: str) -> tuple[int, list[int]]:
    """Tile length and integer starts of `count` equal tiles covering [0, size) along one axis."""
    if count > size:
        raise ValueError(f"{what}: {count} tiles do not fit in {size} pixels")
    if tile is None:
        tile = size if count == 1 else -(-(size + (count - 1) * overlap) // count)
    if tile > size:
        raise ValueError(
            f"{what}: tiles of {tile} px would be larger than the frame ({size} px); "
            f"lower overlap={overlap} or the tile count"
        )
    if count > 1 and overlap >= tile:
        raise ValueError(f"{what}: overlap={overlap} must be smaller than the tile ({tile} px)")
    if count * tile - (count - 1) * overlap < size:
        raise ValueError(f"{what}: {count} tiles of {tile} px with overlap {overlap} do not cover {size} px")
    if count == 1:
        return tile, [0]
    # Starts spread evenly, rounded half up; consecutive starts differ by at most
    # ceil((size - tile) / (count - 1)) <= tile - overlap, so no pixel is left out.
    span, den = size - tile, count - 1
    return tile, [(2 * k * span + den) // (2 * den) for k in range(count)]


@dataclass(frozen=True)
class TileGrid:
    """Equal tiles covering a height x width frame, `overlap` frame pixels shared between neighbours.

    tile_h/tile_w default to the smallest tile that covers the frame with that overlap,
    ceil((H + (rows - 1) * overlap) / rows); the actual overlap can exceed `overlap` by rounding.
    Tiles larger than the frame are rejected (`for_tile` clamps them instead).
    """

    height: int
    width: int
    rows: int
    cols: int
    overlap: int
    tile_h: Optional[int] = None
    tile_w: Optional[int] = None
    boxes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        h = _check_int("height", self.height, 1)
        w = _check_int("width", self.width, 1)
        rows = _check_int("rows", self.rows, 1)
        cols = _check_int("cols", self.cols, 1)
        ov = _check_int("overlap", self.overlap, 0)
        th = None if self.tile_h is None else _check_int("tile_h", self.tile_h, 1)
        tw = None if self.tile_w is None else _check_int("tile_w", self.tile_w, 1)
        th, ys = _axis(h, rows, ov, th, "rows/height")
        tw, xs = _axis(w, cols, ov, tw, "cols/width")
        boxes = np.array([[y, x, th, tw] for y in ys for x in xs], dtype=np.float64)
        boxes.setflags(write=False)
        for name, value in (("tile_h", th), ("tile_w", tw), ("boxes", boxes)):
            object.__setattr__(self, name, value)

    @classmethod
    def for_tile(cls, height: int, width: int, tile_h: int, tile_w: int, overlap: int) -> "TileGrid":
        """Fewest tiles of (tile_h, tile_w) covering the frame with at least `overlap` px shared.

        A tile side larger than the frame is clamped to the frame (one tile along that axis).
        """
        height, width = _check_int("height", height, 1), _check_int("width", width, 1)
        th = min(_check_int("tile_h", tile_h, 1), height)
        tw = min(_check_int("tile_w", tile_w, 1), width)
        ov = _check_int("overlap", overlap, 0)

        def count(size: int, tile: int) -> int:
            if tile >= size:
                return 1
            if ov >= tile:
                raise ValueError(f"overlap={ov} must be smaller than the tile ({tile} px)")
            return -(-(size - ov) // (tile - ov))

        return cls(height, width, count(height, th), count(width, tw), ov, tile_h=th, tile_w=tw)

    @classmethod
    @lru_cache(maxsize=64)  # one grid per frame size: the runtime asks for it every frame
    def from_overlap_ratio(cls, height: int, width: int, rows: int, cols: int,
                           overlap_ratio: float) -> "TileGrid":
        """The grid a bundle's tiling (rows, cols, overlap_ratio) cuts a height x width frame into.

        The one rule shared by the runtime, export (calibration tiles), training and evaluation:
        rows/cols are capped at height/width (a frame smaller than the grid gets at most one tile
        per pixel, so any frame size works); one overlap for both axes,
        ``ov = round(overlap_ratio * min(height / rows, width / cols))`` frame pixels (the ratio of
        the smaller tile pitch, which keeps ov below the tile side along both axes); tile sides
        ``ceil((height + (rows - 1) * ov) / rows)`` and likewise in x. ``overlap_ratio`` in [0, 1).
        """
        height, width = _check_int("height", height, 1), _check_int("width", width, 1)
        rows, cols = min(_check_int("rows", rows, 1), height), min(_check_int("cols", cols, 1), width)
        if (isinstance(overlap_ratio, (bool, np.bool_)) or not isinstance(overlap_ratio, (int, float, np.number))
                or not 0.0 <= overlap_ratio < 1.0):
            raise ValueError(f"overlap_ratio must be a number in [0, 1), got {overlap_ratio!r}")
        overlap = int(round(float(overlap_ratio) * min(height / rows, width / cols)))
        return cls(height, width, rows, cols, overlap)

    @classmethod
    @lru_cache(maxsize=64)
    def for_shrink(cls, height: int, width: int, tile_h: int, tile_w: int, shrink: float,
                   overlap_ratio: float) -> "TileGrid":
        """The ``from_overlap_ratio`` grid whose tiles come closest to ``shrink`` x (tile_h, tile_w)
        frame pixels, so that a refiner taking (tile_h, tile_w) inputs sees every frame size at the
        scale it was trained at (a 640x480 frame gets a few tiles, a 4K frame many).

        Closest means the smallest |ln(box_h / (shrink * tile_h))| + |ln(box_w / (shrink * tile_w))|;
        ties go to fewer tiles. ``shrink`` > 0: frame pixels per refiner pixel.
        """
        height, width = _check_int("height", height, 1), _check_int("width", width, 1)
        tile_h, tile_w = _check_int("tile_h", tile_h, 1), _check_int("tile_w", tile_w, 1)
        if isinstance(shrink, (bool, np.bool_)) or not isinstance(shrink, (int, float, np.number)) \
                or not math.isfinite(shrink) or shrink <= 0:
            raise ValueError(f"shrink must be a finite number > 0, got {shrink!r}")
        want_h, want_w = shrink * tile_h, shrink * tile_w
        # n tiles with overlap ratio r are about size * (1 + r) / n long: search up to one past that.
        grow = 1.0 + float(overlap_ratio)
        best = None
        for rows in range(1, min(height, int(height * grow / want_h) + 2) + 1):
            for cols in range(1, min(width, int(width * grow / want_w) + 2) + 1):
                grid = cls.from_overlap_ratio(height, width, rows, cols, overlap_ratio)
                cost = abs(math.log(grid.tile_h / want_h)) + abs(math.log(grid.tile_w / want_w))
                if best is None or cost < best[0] - 1e-12:
                    best = (cost, grid)
        return best[1]

    def shrink(self, tile_h: int, tile_w: int) -> tuple[float, float]:
        """Frame pixels per refiner pixel (y, x) when its tiles are resized to (tile_h, tile_w)."""
        return self.tile_h / tile_h, self.tile_w / tile_w

    def tile_resolution(self, tile_h: int, tile_w: int) -> tuple[int, int]:
        """The frame's size at the refiner's resolution, (round(height / sy), round(width / sx)) for
        ``shrink`` (sy, sx), at most the frame's: where tiles of (tile_h, tile_w) are stitched
        before a joint upsampling (``Tiling.upsample``)."""
        sy, sx = self.shrink(tile_h, tile_w)
        return (min(self.height, max(1, round(self.height / sy))), min(self.width, max(1, round(self.width / sx))))

    def __len__(self) -> int:
        return self.rows * self.cols

    def scaled(self, sy: float, sx: float) -> np.ndarray:
        """The boxes on a map of size (height * sy, width * sx): (N, 4) float64, fractional legal."""
        for name, s in (("sy", sy), ("sx", sx)):
            if not isinstance(s, (int, float, np.number)) or not math.isfinite(s) or s <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {s!r}")
        return self.boxes * np.array([sy, sx, sy, sx], dtype=np.float64)


@dataclass(frozen=True)
class Tiling:
    """A bundle's tiling policy (manifest ``tiling``), shared by runtime, export and training.

    ``shrink`` = 0: every frame is cut into a fixed ``rows`` x ``cols`` grid. ``shrink`` > 0: the
    grid adapts to the frame so that tiles are about ``shrink`` x the refiner's input size in frame
    pixels (``TileGrid.for_shrink``): the refiner then sees every frame size at the scale it was
    trained at, and small frames pay for few tiles; rows/cols are then only the default for a frame
    of the training size. ``overlap_ratio``: overlap as a fraction of the smaller tile pitch.

    ``upsample``: how refined tiles become the full-resolution map. "bilinear": each tile is resized
    to its box as it is blended (:func:`stitch`). "joint_bilateral": tiles are blended at the
    refiner's resolution (``TileGrid.tile_resolution``), then upsampled once guided by the frame's
    colours (:func:`joint_upsample`, colour scale ``joint_sigma``, 0..1 per channel), so depth edges
    land on image edges instead of spreading over the shrink factor. "guided": blended the same way,
    then upsampled by the fast guided filter (:func:`guided_upsample`: ln depth fitted as an affine
    function of colour over windows of ``guided_radius`` px of the map pooled ``guided_step`` x
    ``guided_step``, regularised by ``guided_eps``; the frame's own colours place each step to the
    pixel, where the joint upsampling can only choose among its 2x2 low-resolution taps).

    ``max_side`` (adaptive tilings only; 0 = no limit): a frame whose longer side exceeds it gets the
    rows x cols of that frame shrunk to ``max_side``, with tiles grown to cover it. Past that size the
    refiner's work stops growing with the frame; with the joint upsampling the full-resolution image
    still places the edges.

    ``snap`` (joint_bilateral and guided only; 0 = off): before the upsampling, depth steps at the
    refiner's resolution are kept as steps (:func:`snap_edges`): a pixel whose 3x3 neighbourhood
    spans a depth ratio above exp(``snap``) takes the near or the far side's depth, whichever is
    closer in colour, so no pixel hangs between two surfaces (flying points in a point cloud).
    """

    rows: int = 2
    cols: int = 2
    overlap_ratio: float = 0.25
    window: str = "cosine"
    shrink: float = 0.0
    upsample: str = "bilinear"
    joint_sigma: float = 0.05
    max_side: int = 0
    snap: float = 0.0
    guided_step: int = 2
    guided_radius: int = 3
    guided_eps: float = 1e-5

    @property
    def low_res(self) -> bool:
        """Whether tiles are blended at the refiner's resolution and upsampled to the frame once
        (every ``upsample`` but "bilinear")."""
        return self.upsample != "bilinear"

    def __post_init__(self) -> None:
        _check_int("rows", self.rows, 1)
        _check_int("cols", self.cols, 1)
        if not 0.0 <= self.overlap_ratio < 1.0:
            raise ValueError(f"overlap_ratio must be in [0, 1), got {self.overlap_ratio}")
        _check_window(self.window)
        if not (math.isfinite(self.shrink) and self.shrink >= 0):
            raise ValueError(f"shrink must be 0 (fixed grid) or > 0, got {self.shrink}")
        if self.upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)}, got {self.upsample!r}")
        if not (isinstance(self.joint_sigma, (int, float)) and not isinstance(self.joint_sigma, bool)
                and math.isfinite(self.joint_sigma)
                and self.joint_sigma >= MIN_JOINT_SIGMA):
            raise ValueError(f"joint_sigma must be a finite number >= {MIN_JOINT_SIGMA}, got {self.joint_sigma!r}")
        if _check_int("max_side", self.max_side, 0) and self.shrink == 0:
            raise ValueError(f"max_side={self.max_side} needs an adaptive tiling (shrink > 0): a fixed grid "
                             "already caps the number of tiles")
        if isinstance(self.snap, bool) or not isinstance(self.snap, (int, float)) or self.snap != 0:
            _check_contrast(self.snap)
            if not self.low_res:
                raise ValueError(f"snap={self.snap} needs upsample 'joint_bilateral' or 'guided': it acts on the map "
                                 "at the refiner's resolution, which bilinear stitching never forms")
        _check_guided(self.guided_step, self.guided_radius, self.guided_eps)

    def capped(self, height: int, width: int) -> bool:
        """Whether ``max_side`` applies to a (height, width) frame: its grid is then that of the frame
        shrunk to ``max_side``, with tiles larger than ``shrink`` asks for."""
        return self.shrink > 0 and 0 < self.max_side < max(int(height), int(width))

    def grid(self, height: int, width: int, tile_size: Optional[Sequence[int]] = None) -> TileGrid:
        """The TileGrid for a (height, width) frame and a refiner taking ``tile_size`` (h, w) inputs
        (needed when ``shrink`` > 0)."""
        if self.shrink > 0:
            if tile_size is None:
                raise ValueError("an adaptive tiling (shrink > 0) needs the refiner's tile_size")
            height, width = int(height), int(width)
            if not self.capped(height, width):
                return TileGrid.for_shrink(height, width, int(tile_size[0]), int(tile_size[1]),
                                           float(self.shrink), float(self.overlap_ratio))
            cap = self.max_side / max(height, width)
            small = TileGrid.for_shrink(max(1, round(height * cap)), max(1, round(width * cap)), int(tile_size[0]),
                                        int(tile_size[1]), float(self.shrink), float(self.overlap_ratio))
            return TileGrid.from_overlap_ratio(height, width, small.rows, small.cols, float(self.overlap_ratio))
        return TileGrid.from_overlap_ratio(int(height), int(width), self.rows, self.cols, float(self.overlap_ratio))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Tiling":
        """From a manifest's ``tiling`` section (absent in older bundles: ``shrink`` = fixed grid,
        ``upsample`` = bilinear)."""
        return cls(int(data["rows"]), int(data["cols"]), float(data["overlap_ratio"]), str(data["window"]),
                   float(data.get("shrink", 0.0) or 0.0), str(data.get("upsample", "bilinear")),
                   float(data.get("joint_sigma", 0.05)), int(data.get("max_side", 0)), float(data.get("snap", 0.0)),
                   int(data.get("guided_step", 2)), int(data.get("guided_radius", 3)),
                   float(data.get("guided_eps", 1e-5)))


# ---------------------------------------------------------------- argument checks

def _check_boxes(boxes: Any, frame_h: int, frame_w: int) -> np.ndarray:
    if native.is_device_array(boxes):
        raise TypeError("boxes must be a host array (numpy), not a device array")
    try:
        arr = np.asarray(boxes)
    except Exception as err:
        raise TypeError(f"boxes must be an (N, 4) numeric array, got {type(boxes).__name__}") from err
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"boxes must be an (N, 4) numeric array, got dtype {arr.dtype}")
    # Always a private copy: checked here, it is what the engine reads, so no other thread can change
    # it in between (the native engines copy again for callers that skip this module).
    arr = np.array(arr, dtype=np.float64, order="C", copy=True)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) [y0, x0, h, w], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("boxes must be finite (found NaN or inf)")
    y0, x0, h, w = arr.T
    if not ((h > 0) & (w > 0)).all():
        raise ValueError("boxes must have h > 0 and w > 0")
    tol_h, tol_w = 1e-6 * frame_h, 1e-6 * frame_w  # as in csrc/checks.hpp
    bad = (y0 < -tol_h) | (x0 < -tol_w) | (y0 + h > frame_h + tol_h) | (x0 + w > frame_w + tol_w)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"boxes[{i}] = {arr[i].tolist()} lies outside the {frame_h}x{frame_w} frame")
    return arr


def _check_threads(threads: Optional[int]) -> int:
    return _threads if threads is None else _check_int("threads", threads, 1, MAX_THREADS)


def _check_sides(what: str, shape: Sequence[int]) -> None:
    if max(shape) > MAX_SIDE:
        raise ValueError(f"{what} has shape {tuple(shape)}: the tile engine handles sides of at most {MAX_SIDE}")


def _check_window(kind: Any) -> int:
    if kind not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {kind!r}")
    return WINDOWS.index(kind)


def _check_out_size(name: str, size: Any) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be (H, W), got {size!r}")
    return tuple(_check_int(name, v, 1, MAX_SIDE) for v in size)


def _check_out_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float16, got {dtype!r}") from err
    if dt not in (np.float32, np.float16):
        raise TypeError(f"dtype must be float32 or float16, got {dt}")
    return dt


def _check_affine(name: str, value: Any, default: float) -> np.ndarray:
    if value is None:
        return np.full(3, default)
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be 3 finite numbers (RGB in [0, 1] units), got {value!r}")
    return arr


def _uncovered_pixel(boxes: np.ndarray, height: int, width: int) -> Optional[tuple[int, int]]:
    """A frame pixel no box covers (centre inside the box), or None; exact, on compressed coordinates."""
    ys = np.clip(np.ceil(boxes[:, 0] - 0.5), 0, height).astype(np.int64)
    ye = np.clip(np.ceil(boxes[:, 0] + boxes[:, 2] - 0.5), 0, height).astype(np.int64)
    xs = np.clip(np.ceil(boxes[:, 1] - 0.5), 0, width).astype(np.int64)
    xe = np.clip(np.ceil(boxes[:, 1] + boxes[:, 3] - 0.5), 0, width).astype(np.int64)
    yb = np.unique(np.concatenate([[0, height], ys, ye]))
    xb = np.unique(np.concatenate([[0, width], xs, xe]))
    cells = np.zeros((len(yb) - 1, len(xb) - 1), dtype=bool)
    for a, b, c, d in zip(np.searchsorted(yb, ys), np.searchsorted(yb, ye), np.searchsorted(xb, xs), np.searchsorted(xb, xe)):
        cells[a:b, c:d] = True
    holes = np.argwhere(~cells)
    return None if len(holes) == 0 else (int(yb[holes[0][0]]), int(xb[holes[0][1]]))


def _host_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__"):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array (or a torch/CuPy CUDA array), got {type(x).__name__}")


def _fallback(op: str) -> None:
    if not _warned_fallback.is_set():
        _warned_fallback.set()
        warnings.warn(
            f"edgedepth native tile engine not available ({native.cpu_error}); {op} uses the slow numpy reference",
            RuntimeWarning,
            stacklevel=3,
        )


def _need_cuda(name: str) -> Any:
    if native.cuda is None:
        raise RuntimeError(f"{name} is a CUDA array but edgedepth._native_cuda is not built ({native.cuda_error})")
    return native.cuda


# ---------------------------------------------------------------- operations

def crop_resize(src: Any, boxes: Any, out_size: Sequence[int], *, mean: Any = None, std: Any = None,
                dtype: Any = np.float32, threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> Any:
    """Batched crops resized to out_size = (H, W) with the DESIGN crop semantics.

    src (h, w, 3) uint8 RGB -> (N, 3, H, W), normalised as (x / 255 - mean) / std (mean/std
    per channel on RGB in [0, 1]; default 0 and 1). src (C, h, w) float32/float16 -> (N, C, H, W)
    (mean/std not allowed). boxes (N, 4) [y0, x0, h, w] in src pixels, inside src. dtype:
    float32 or float16 output. A torch CUDA tensor or CuPy array src gives the same kind back.
    out: a numpy array of exactly that shape and dtype (C-contiguous, writeable, apart from src) to
    write into and return, for numpy src: a caller cropping every frame reuses one, and an output
    above the allocator's mmap threshold (32 MiB) then skips its fresh pages (~5 ms per 38 MB).
    """
    out_dt = _check_out_dtype(dtype)
    out_h, out_w = _check_out_size("out_size", out_size)
    on_device = native.is_device_array(src)
    dev = native.DeviceArray.wrap(src, "src") if on_device else None
    arr = None if on_device else _host_array(src, "src")
    shape, kind = (dev.shape, dev.dtype) if on_device else (arr.shape, str(arr.dtype))
    if kind == "uint8":
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"src: a uint8 image must be (H, W, 3) RGB, got shape {tuple(shape)}")
        frame_h, frame_w, channels = shape[0], shape[1], 3
    elif kind in ("float32", "float16"):
        if len(shape) != 3:
            raise ValueError(f"src: a float map must be (C, H, W), got shape {tuple(shape)}")
        if mean is not None or std is not None:
            raise ValueError("mean/std apply to uint8 RGB src only; float maps are cropped as they are")
        channels, frame_h, frame_w = shape
    else:
        raise TypeError(f"src must be uint8 (H, W, 3) RGB or float32/float16 (C, H, W), got dtype {kind}")
    if min(shape) == 0:
        raise ValueError(f"src must not be empty, got shape {tuple(shape)}")
    _check_sides("src", shape)
    bx = _check_boxes(boxes, frame_h, frame_w)
    m, s = _check_affine("mean", mean, 0.0), _check_affine("std", std, 1.0)
    if (s <= 0).any():
        raise ValueError(f"std must be > 0, got {std!r}")
    scale, bias = (1.0 / (255.0 * s)).tolist(), (-m / s).tolist()
    half = out_dt == np.float16
    n = len(bx)
    nthreads = _check_threads(threads)

    if on_device:
        if out is not None:
            raise TypeError("out= takes numpy arrays; a GPU src gets a new array on its device")
        cuda = _need_cuda("src")
        dst = dev.empty((n, channels, out_h, out_w), str(out_dt))
        if n == 0:
            return dst.obj
        if kind == "uint8":
            cuda.crop_rgb(dev.ptr, frame_h, frame_w, bx, dst.ptr, out_h, out_w, scale, bias, half, dev.stream)
        else:
            cuda.crop_map(dev.ptr, kind == "float16", channels, frame_h, frame_w, bx, dst.ptr, out_h, out_w, half,
                          dev.stream)
        return dst.obj
    if out is not None:
        _check_out(out, (n, channels, out_h, out_w), out_dt, arr)
    if n == 0:
        return out if out is not None else np.empty((0, channels, out_h, out_w), dtype=out_dt)
    arr = np.ascontiguousarray(arr)
    if native.cpu is None:
        _fallback("crop_resize")
        return _into(out, tiling_reference.crop_resize(arr, bx, (out_h, out_w), mean=m if kind == "uint8" else None,
                                                       std=s if kind == "uint8" else None, dtype=out_dt))
    if kind == "uint8":
        return native.cpu.crop_rgb(arr, bx, out_h, out_w, scale, bias, half, nthreads, out)
    return native.cpu.crop_map(arr, bx, out_h, out_w, half, nthreads, out)


def crop_resize_maps(srcs: Sequence[Any], boxes: Sequence[Any], out_sizes: Sequence[Sequence[int]], *,
                     dtype: Any = np.float32, threads: Optional[int] = None) -> list:
    """crop_resize for several float maps cut at the same N tiles: srcs[k] (C_k, h_k, w_k) at
    boxes[k] (N, 4) [y0, x0, h, w] in its own pixels -> (N, C_k, *out_sizes[k]), the values
    crop_resize gives map by map. Up to MAX_MAP_CROPS maps on one CUDA device, of one dtype and
    stream, take one call of the CUDA engine: on a GPU, small crops cost their launches, not their
    arithmetic. Anything else is cropped one map at a time.
    """
    if not len(srcs) == len(boxes) == len(out_sizes):
        raise ValueError(f"srcs, boxes and out_sizes must have one entry per map, got {len(srcs)}, {len(boxes)} "
                         f"and {len(out_sizes)}")
    if len({len(b) for b in boxes}) > 1:
        raise ValueError(f"every map must be cut at the same number of boxes, got {[len(b) for b in boxes]}")
    if 1 <= len(srcs) <= MAX_MAP_CROPS and all(native.is_device_array(s) for s in srcs):
        maps = [native.DeviceArray.wrap(s, f"srcs[{k}]") for k, s in enumerate(srcs)]
        if (len({m.dtype for m in maps}) == 1 and maps[0].dtype in ("float32", "float16")
                and len({m.stream for m in maps}) == 1 and all(len(m.shape) == 3 for m in maps)):
            return _crop_maps_device(maps, boxes, out_sizes, _check_out_dtype(dtype))
    return [crop_resize(s, b, o, dtype=dtype, threads=threads) for s, b, o in zip(srcs, boxes, out_sizes)]


def _crop_maps_device(maps: list, boxes: Sequence[Any], out_sizes: Sequence[Sequence[int]], out_dt: np.dtype) -> list:
    sizes, checked = [], []
    for k, (m, b, o) in enumerate(zip(maps, boxes, out_sizes)):
        sizes.append(_check_out_size(f"out_sizes[{k}]", o))
        if min(m.shape) == 0:
            raise ValueError(f"srcs[{k}] must not be empty, got shape {m.shape}")
        _check_sides(f"srcs[{k}]", m.shape)
        checked.append(_check_boxes(b, m.shape[1], m.shape[2]))
    n = len(checked[0])
    dst = [m.empty((n, m.shape[0], *hw), str(out_dt)) for m, hw in zip(maps, sizes)]
    if n:
        _need_cuda("srcs").crop_maps([m.ptr for m in maps], [m.shape for m in maps], maps[0].dtype == "float16",
                                     np.stack(checked), [d.ptr for d in dst], sizes, out_dt == np.float16,
                                     maps[0].stream)
    return [d.obj for d in dst]


def _into(out: Optional[np.ndarray], got: np.ndarray) -> np.ndarray:
    """The reference engine's result, copied into the caller's out= array when one was given."""
    if out is None:
        return got
    np.copyto(out, got)
    return out


def _check_out(out: Any, shape: tuple, dtype: Any, src: np.ndarray) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must be {np.dtype(dtype).name} of shape {shape}, got {out.dtype} {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    if np.may_share_memory(out, src):
        raise ValueError("out must not overlap src")


def window(h: int, w: int, kind: str = "cosine") -> np.ndarray:
    """(h, w) float32 weights f((i + 0.5) / h) * f((j + 0.5) / w), strictly positive.

    kind: "uniform", "linear" (pyramid), "cosine" (Hann), "gaussian" (sigma = side / 4).
    """
    h, w, k = _check_int("h", h, 1, MAX_SIDE), _check_int("w", w, 1, MAX_SIDE), _check_window(kind)
    if native.cpu is None:
        _fallback("window")
        return tiling_reference.window(h, w, kind)
    return native.cpu.window(h, w, k)


def _check_stitch(shape: tuple, kind: str, boxes: Any, height: int, width: int,
                  window: str) -> tuple[int, np.ndarray, int, int]:
    """The stitch's arguments checked: -> (window code, boxes as float64 (N, 4), height, width)."""
    k = _check_window(window)
    height, width = _check_int("height", height, 1, MAX_SIDE), _check_int("width", width, 1, MAX_SIDE)
    if kind not in ("float32", "float16"):
        raise TypeError(f"tiles must be float32 or float16, got dtype {kind}")
    if len(shape) != 4:
        raise ValueError(f"tiles must be (N, C, th, tw), got shape {tuple(shape)}")
    if min(shape) == 0:
        raise ValueError(f"tiles must not be empty, got shape {tuple(shape)}")
    _check_sides("tiles", shape)
    bx = _check_boxes(boxes, height, width)
    if len(bx) != shape[0]:
        raise ValueError(f"tiles has {shape[0]} tiles but boxes has {len(bx)} rows")
    hole = _uncovered_pixel(bx, height, width)
    if hole is not None:
        raise ValueError(f"boxes leave frame pixel (y, x) = {hole} uncovered")
    return k, bx, height, width


def stitch(tiles: Any, boxes: Any, height: int, width: int, window: str = "cosine",
           threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> Any:
    """Blends tiles (N, C, th, tw) float32/float16 placed at boxes into (C, height, width) float32.

    Each tile is resized back to its box (DESIGN crop semantics, source = the tile) and weighted
    by the window evaluated at the frame pixel's position in its box; weights are accumulated and
    normalised. The boxes must lie inside the frame and together cover every pixel.
    out: for numpy tiles, a float32 (C, height, width) C-contiguous writeable array apart from the
    tiles to write into and return: a caller stitching every frame reuses one (a 4K frame's 33 MB
    is above the allocator's mmap threshold, so a new one costs fresh pages every call).
    """
    on_device = native.is_device_array(tiles)
    dev = native.DeviceArray.wrap(tiles, "tiles") if on_device else None
    arr = None if on_device else _host_array(tiles, "tiles")
    shape, kind = (dev.shape, dev.dtype) if on_device else (arr.shape, str(arr.dtype))
    k, bx, height, width = _check_stitch(shape, kind, boxes, height, width, window)
    nthreads = _check_threads(threads)
    n, c, th, tw = shape

    if on_device:
        if out is not None:
            raise TypeError("out= takes numpy arrays; GPU tiles get a new array on their device")
        cuda = _need_cuda("tiles")
        dst = dev.empty((c, height, width), "float32")
        cuda.stitch(dev.ptr, kind == "float16", n, c, th, tw, bx, dst.ptr, height, width, k, dev.stream)
        return dst.obj
    if out is not None:
        _check_out(out, (c, height, width), np.float32, arr)
    arr = np.ascontiguousarray(arr)
    if native.cpu is None:
        _fallback("stitch")
        return _into(out, tiling_reference.stitch(arr, bx, height, width, window))
    return native.cpu.stitch(arr, bx, height, width, k, nthreads, out)


def stitch_finish(tiles: np.ndarray, boxes: Any, height: int, width: int, window: str = "cosine",
                  scale: float = 1.0, valid_max: float = math.inf,
                  threads: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stitch` of one-channel depth tiles (N, 1, th, tw) (numpy float32/float16) followed by
    :func:`finish`, in one pass over the frame: each row is finished while it is still in cache.
    -> (depth (height, width) float32 metres, valid (height, width) bool); the same values as
    ``finish(stitch(...)[0], scale, valid_max)``."""
    if native.is_device_array(tiles):
        raise TypeError("stitch_finish takes host (numpy) tiles; on a GPU use stitch, then finish on the device")
    arr = _host_array(tiles, "tiles")
    if arr.ndim == 4 and arr.shape[1] != 1:
        raise ValueError(f"stitch_finish takes one-channel depth tiles (N, 1, th, tw), got shape {arr.shape}")
    scale, valid_max = _check_finish(scale, valid_max)
    if native.cpu is None:
        depth = stitch(arr, boxes, height, width, window, threads)[0]
        return depth, finish(depth, scale, valid_max, threads)
    k, bx, height, width = _check_stitch(arr.shape, str(arr.dtype), boxes, height, width, window)
    return native.cpu.stitch_finish(np.ascontiguousarray(arr), bx, height, width, k, scale, valid_max,
                                    _check_threads(threads))


def joint_upsample(depth: Any, guide: Any, image: Any, sigma: float, scale: float = 1.0, valid_max: float = math.inf,
                   threads: Optional[int] = None) -> tuple[Any, Any]:
    """Edge-aware upsampling of a depth map to the frame, finished in the same pass.

    depth (h, w) float32 metres (e.g. tiles stitched at the refiner's resolution); guide (3, h, w)
    float32: the frame resized to (h, w) and divided by 255 (``crop_resize(image, [[0, 0, H, W]],
    (h, w))[0]``), None = made so here; image (H, W, 3) uint8 RGB, the frame. Each output pixel blends its 2x2 bilinear
    taps weighted by how close their guide colour is to its own (``tiling_reference.joint_upsample``;
    sigma: colour distance scale, 0..1 per channel, >= 0.001), so a depth edge lands on the image
    edge instead of being smeared across the shrink factor; taps whose depths agree within 2 % take
    the plain bilinear blend. -> (depth (H, W) float32 metres,
    valid (H, W) bool), finished as :func:`finish` does with ``scale`` and ``valid_max``.
    Torch CUDA tensors or CuPy arrays (all three on one device) give the same kind back, computed by
    the CUDA engine with the CPU engine's arithmetic (the same bits).
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating)) or not math.isfinite(sigma) \
            or sigma < MIN_JOINT_SIGMA:
        raise ValueError(f"sigma must be a finite number >= {MIN_JOINT_SIGMA}, got {sigma!r}")
    if native.is_device_array(depth):
        return _joint_upsample_device(depth, guide, image, float(sigma), *_check_finish(scale, valid_max))
    depth, guide, image = _host_upsample_args(depth, guide, image, threads)
    scale, valid_max = _check_finish(scale, valid_max)
    nthreads = _check_threads(threads)
    if native.cpu is None:
        _fallback("joint_upsample")
        out = tiling_reference.joint_upsample(depth, guide, image, float(sigma))
        return out, tiling_reference.finish(out, scale, valid_max)
    return native.cpu.joint_upsample(depth, guide, image, float(sigma), scale, valid_max, nthreads)


def _host_upsample_args(depth: Any, guide: Any, image: Any,
                        threads: Optional[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An upsampling's numpy arguments checked: (h, w) float32 depth, (H, W, 3) uint8 image, both
    non-empty, and the (3, h, w) float32 guide (None: the image resized to (h, w), / 255)
    -> C-contiguous (depth, guide, image)."""
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype != np.float32:
        raise TypeError(f"depth must be an (h, w) float32 numpy array, got {_describe(depth)}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB numpy array, got {_describe(image)}")
    if depth.size == 0 or image.size == 0:
        raise ValueError(f"depth and image must not be empty, got shapes {depth.shape} and {image.shape}")
    _check_sides("depth", depth.shape)
    _check_sides("image", image.shape[:2])
    if guide is None:
        guide = crop_resize(image, [[0.0, 0.0, *image.shape[:2]]], depth.shape, threads=threads)[0]
    if not isinstance(guide, np.ndarray) or guide.dtype != np.float32 or guide.shape != (3, *depth.shape):
        raise ValueError(f"guide must be a (3, {depth.shape[0]}, {depth.shape[1]}) float32 numpy array, "
                         f"got {_describe(guide)}")
    return tuple(np.ascontiguousarray(a) for a in (depth, guide, image))


def _joint_upsample_device(depth: Any, guide: Any, image: Any, sigma: float, scale: float,
                           valid_max: float) -> tuple[Any, Any]:
    """joint_upsample on CUDA arrays (checked here and again by the CUDA module)."""
    cuda, d, g, img, out, valid = _device_upsample_args(depth, guide, image)
    cuda.joint_upsample(d.ptr, g.ptr, d.shape[0], d.shape[1], img.ptr, img.shape[0], img.shape[1], sigma, scale,
                        valid_max, out.ptr, valid.ptr, d.stream)
    return out.obj, valid.obj


def _guided_upsample_device(depth: Any, guide: Any, image: Any, step: int, radius: int, eps: float, scale: float,
                            valid_max: float) -> tuple[Any, Any]:
    """guided_upsample on CUDA arrays (checked here and again by the CUDA module)."""
    cuda, d, g, img, out, valid = _device_upsample_args(depth, guide, image)
    cuda.guided_upsample(d.ptr, g.ptr, d.shape[0], d.shape[1], int(step), img.ptr, img.shape[0], img.shape[1],
                         int(radius), float(eps), scale, valid_max, out.ptr, valid.ptr, d.stream)
    return out.obj, valid.obj


def _device_upsample_args(depth: Any, guide: Any, image: Any) -> tuple:
    """An upsampling's CUDA arguments checked: (h, w) float32 depth, (H, W, 3) uint8 image and the
    (3, h, w) float32 guide (None: made from the image), all on one device -> (the CUDA module,
    depth, guide, image, out, valid) with out (H, W) float32 and valid (H, W) bool made for it."""
    cuda = _need_cuda("depth")
    d = native.DeviceArray.wrap(depth, "depth")
    if len(d.shape) != 2 or d.dtype != "float32":
        raise TypeError(f"depth must be an (h, w) float32 device array, got {d.dtype} of shape {d.shape}")
    if not native.is_device_array(image):
        raise TypeError("image must be on the GPU with depth (an (H, W, 3) uint8 device array)")
    img = native.DeviceArray.wrap(image, "image")
    if len(img.shape) != 3 or img.shape[2] != 3 or img.dtype != "uint8":
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB device array, got {img.dtype} of shape {img.shape}")
    _check_sides("depth", d.shape)
    _check_sides("image", img.shape[:2])
    height, width = img.shape[:2]
    if guide is None:
        guide = crop_resize(img.obj, [[0.0, 0.0, height, width]], d.shape)[0]
    if not native.is_device_array(guide):
        raise TypeError("guide must be on the GPU with depth (a (3, h, w) float32 device array), or None")
    g = native.DeviceArray.wrap(guide, "guide")
    if g.shape != (3, *d.shape) or g.dtype != "float32":
        raise ValueError(f"guide must be a (3, {d.shape[0]}, {d.shape[1]}) float32 device array, "
                         f"got {g.dtype} of shape {g.shape}")
    return cuda, d, g, img, d.empty((height, width), "float32"), d.empty((height, width), "bool")


MAX_GUIDED_STEP, MAX_GUIDED_RADIUS = 16, 64  # csrc/checks.hpp


def _check_guided(step: Any, radius: Any, eps: Any) -> None:
    _check_int("guided_step", step, 1, MAX_GUIDED_STEP)
    _check_int("guided_radius", radius, 0, MAX_GUIDED_RADIUS)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 1e-8 <= eps <= 1:
        raise ValueError(f"guided_eps must be a number in [1e-8, 1] (a colour variance), got {eps!r}")


def guided_upsample(depth: Any, guide: Any, image: Any, step: int = 2, radius: int = 3, eps: float = 1e-5,
                    scale: float = 1.0, valid_max: float = math.inf,
                    threads: Optional[int] = None) -> tuple[Any, Any]:
    """Edge-aware upsampling of a depth map to the frame by the fast guided filter (He and Sun,
    2015), finished in the same pass.

    depth (h, w) float32 metres (tiles stitched at the refiner's resolution); guide (3, h, w)
    float32, the frame resized to (h, w) / 255 (None = made so here); image (H, W, 3) uint8 RGB.
    Depth and guide are pooled ``step`` x ``step``; per pooled pixel ln depth is fitted as
    a . rgb + b over its (2 ``radius`` + 1)^2 window (``eps``: the colour variance below which a
    window's colours are not trusted to explain its depth); the averaged a, b are resized to the
    frame and each pixel takes exp(a . rgb + b) with its own colour, so a depth step lands on the
    frame's colour step to the pixel (never beyond the nearest and farthest pooled depth: a colour
    the windows never saw does not extrapolate). Output pixels next to a non-finite or non-positive
    depth are invalid. -> (depth (H, W) float32 metres, valid (H, W) bool), finished as :func:`finish`
    does with ``scale`` and ``valid_max``. ``edgedepth.guided_filter.fast_guided_upsample`` is the
    reference (within 2e-6 relative). Torch CUDA tensors or CuPy arrays (all three on one device)
    give the same kind back, computed by the CUDA engine with the CPU engine's arithmetic (the same
    bits, for any number of threads)."""
    _check_guided(step, radius, eps)
    if native.is_device_array(depth):
        return _guided_upsample_device(depth, guide, image, step, radius, eps, *_check_finish(scale, valid_max))
    depth, guide, image = _host_upsample_args(depth, guide, image, threads)
    scale, valid_max = _check_finish(scale, valid_max)
    nthreads = _check_threads(threads)
    if native.cpu is None:
        _fallback("guided_upsample")
        out = fast_guided_upsample(depth, guide, image, int(step), int(radius), float(eps))
        return out, tiling_reference.finish(out, scale, valid_max)
    return native.cpu.guided_upsample(depth, guide, image, int(step), int(radius), float(eps), scale, valid_max,
                                      nthreads)


def upsample(depth: Any, guide: Any, image: Any, policy: "Tiling", scale: float = 1.0, valid_max: float = math.inf,
             threads: Optional[int] = None) -> tuple[Any, Any]:
    """A (h, w) depth map brought to the (H, W, 3) uint8 frame ``image`` as ``policy.upsample``
    says ("joint_bilateral": :func:`joint_upsample`; "guided": :func:`guided_upsample`), finished.
    -> (depth (H, W) float32 metres, valid (H, W) bool); numpy arrays, or CUDA arrays for CUDA arrays."""
    if policy.upsample == "guided":
        return guided_upsample(depth, guide, image, policy.guided_step, policy.guided_radius, policy.guided_eps,
                               scale, valid_max, threads)
    if policy.upsample == "joint_bilateral":
        return joint_upsample(depth, guide, image, policy.joint_sigma, scale, valid_max, threads)
    raise ValueError(f"upsample needs a policy that upsamples from low resolution, got {policy.upsample!r}")


def snap_edges(depth: np.ndarray, guide: np.ndarray, contrast: float, threads: Optional[int] = None) -> np.ndarray:
    """Depth steps kept as steps (``Tiling.snap``): depth (h, w) float32 metres and guide (3, h, w)
    float32 (the frame resized to (h, w), / 255) -> new (h, w) float32. Where a pixel's 3x3
    neighbourhood spans a depth ratio above exp(``contrast``) and its 5x5 one not much more (a step,
    not a slope), it takes the 3x3 minimum or maximum, whichever is closer to it in colour, so no pixel
    hangs between two surfaces (``tiling_reference.snap_edges`` has the exact rule)."""
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype != np.float32 or depth.size == 0:
        raise TypeError(f"depth must be a non-empty (h, w) float32 numpy array, got {_describe(depth)}")
    if not isinstance(guide, np.ndarray) or guide.dtype != np.float32 or guide.shape != (3, *depth.shape):
        raise ValueError(f"guide must be a (3, {depth.shape[0]}, {depth.shape[1]}) float32 numpy array, "
                         f"got {_describe(guide)}")
    _check_contrast(contrast)
    nthreads = _check_threads(threads)
    depth, guide = np.ascontiguousarray(depth), np.ascontiguousarray(guide)
    if native.cpu is None:
        _fallback("snap_edges")
        return tiling_reference.snap_edges(depth, guide, float(contrast))
    return native.cpu.snap_edges(depth, guide, float(contrast), nthreads)


def _check_contrast(contrast: Any) -> float:
    if isinstance(contrast, bool) or not isinstance(contrast, (int, float, np.floating)) \
            or not math.isfinite(contrast) or not 0 < contrast <= 10:
        raise ValueError(f"snap contrast must be a number in (0, 10] (log depth ratio), got {contrast!r}")
    return float(contrast)


def stitch_low(tiles: np.ndarray, boxes: Any, image: np.ndarray, low_size: Sequence[int], policy: "Tiling",
               scale: float = 1.0, valid_max: float = math.inf,
               threads: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """A low-resolution ``policy`` (``Tiling.low_res``): one-channel depth tiles (N, 1, th, tw)
    blended at ``low_size`` (h, w) (the frame at the refiner's resolution,
    ``TileGrid.tile_resolution``; boxes in frame pixels) with ``policy.window``, steps snapped there
    when ``policy.snap`` > 0 (:func:`snap_edges`), then :func:`upsample`-d to the (H, W) frame
    ``image`` (uint8 RGB) and finished. -> (depth (H, W) float32 metres, valid (H, W) bool)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB numpy array, got {_describe(image)}")
    if not policy.low_res:
        raise ValueError(f"stitch_low needs a policy that upsamples from low resolution, got {policy.upsample!r}")
    height, width = image.shape[:2]
    h, w = (_check_int("low_size[0]", low_size[0], 1, height), _check_int("low_size[1]", low_size[1], 1, width))
    bx = _check_boxes(boxes, height, width) * np.array([h / height, w / width, h / height, w / width])
    low = stitch(tiles, bx, h, w, policy.window, threads)
    if low.shape[0] != 1:
        raise ValueError(f"stitch_low takes one-channel depth tiles (N, 1, th, tw), got {low.shape[0]} channels")
    guide = crop_resize(image, [[0.0, 0.0, height, width]], (h, w), threads=threads)[0]
    depth = snap_edges(low[0], guide, policy.snap, threads) if policy.snap else low[0]
    return upsample(depth, guide, image, policy, scale, valid_max, threads)


def stitch_joint(tiles: np.ndarray, boxes: Any, image: np.ndarray, low_size: Sequence[int], sigma: float,
                 window: str = "cosine", scale: float = 1.0, valid_max: float = math.inf,
                 threads: Optional[int] = None, snap: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stitch_low` with the joint bilateral upsampling (colour scale ``sigma``)."""
    policy = Tiling(window=window, upsample="joint_bilateral", joint_sigma=sigma, snap=snap)
    return stitch_low(tiles, boxes, image, low_size, policy, scale, valid_max, threads)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


def _check_finish(scale: float, valid_max: float) -> tuple[float, float]:
    scale, valid_max = float(scale), float(valid_max)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    if math.isnan(valid_max) or valid_max == -math.inf:
        valid_max = math.inf
    return scale, valid_max


def finish(depth: Any, scale: float = 1.0, valid_max: float = math.inf, threads: Optional[int] = None) -> Any:
    """Finishes a float32 C-contiguous depth map in place, in one pass; returns its bool validity mask.

    depth becomes depth * scale where that is finite and > 0, else 0 (metres). valid: finite and
    <= valid_max (metres, before the scale; a non-finite valid_max is no limit), finite after the
    scale, > 0. scale: finite, > 0 (the focal-length rescale). A torch CUDA tensor or CuPy array is
    finished on its device by the CUDA engine (the same bits) and gets a mask of its kind.
    """
    if native.is_device_array(depth):
        scale, valid_max = _check_finish(scale, valid_max)
        cuda = _need_cuda("depth")
        d = native.DeviceArray.wrap(depth, "depth")
        own = depth.data_ptr() if hasattr(depth, "data_ptr") else depth.__cuda_array_interface__["data"][0]
        if d.dtype != "float32" or d.ptr != own or 0 in d.shape:  # wrap copied: not contiguous
            raise TypeError("depth must be a non-empty, C-contiguous float32 device array (finished in place)")
        n = math.prod(d.shape)
        valid = d.empty(d.shape, "bool")
        cuda.finish(d.ptr, n, scale, valid_max, valid.ptr, d.stream)
        return valid.obj
    if not isinstance(depth, np.ndarray) or depth.dtype != np.float32 or not depth.flags.c_contiguous \
            or not depth.flags.writeable or depth.size == 0:
        raise TypeError("depth must be a non-empty, writeable, C-contiguous float32 numpy array")
    scale, valid_max = _check_finish(scale, valid_max)
    nthreads = _check_threads(threads)
    if native.cpu is None:
        _fallback("finish")
        return tiling_reference.finish(depth, scale, valid_max)
    return native.cpu.finish(depth, scale, valid_max, nthreads)
