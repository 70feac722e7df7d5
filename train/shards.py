"""Pre-rendered procedural frames ("shards"): render once on every core, train many times.

Rendering a 1920x1080 scene costs about a second of one core, while a refiner step on its tiles costs
a fraction of that, so on-the-fly rendering would starve the trainer. ``render_shards`` renders a
stream of scenes in worker processes into a folder::

    ROOT/meta.json                 {"format": 1, "frame_size": [H, W], "count": N, "shard_size": k,
                                    "seed": s, "layouts": [...], "unreliable": b, "far_depth": f,
                                    "shadows": true (only when rendered with cast shadows)}
    ROOT/shard_00000/image.npy     (k, H, W, 3) uint8 RGB
    ROOT/shard_00000/depth.npy     (k, H, W) float32 metres (0 invalid; sky and beyond range = far_depth)
    ROOT/shard_00000/reliable.npy  (k, H, W) bool (False on transparent panes)
    ROOT/shard_00000/seed.npy      (k,) int64 scene seeds

Frame i of the folder is scene seed ``scene_seed(seed, i)`` (``iter_scenes``' numbering) with layout
``layouts[i % len(layouts)]``, so a folder is reproducible from its meta.json alone. Each shard is
written under a temporary name and renamed; an interrupted render resumes where it stopped.
:class:`ShardFrames` reads one or more folders as a frame source (memory-mapped ``.npy``: plain
arrays, ``allow_pickle`` off, nothing executed).
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgedepth.atomic import atomic_dir, atomic_write_text

FORMAT = 1
META = "meta.json"
FIELDS = ("image", "depth", "reliable", "seed")

__all__ = ["render_shards", "ShardFrames", "shard_folder_meta"]


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}"


def _render_shard(root: str, k: int, meta: dict) -> int:
    """Render shard ``k`` of the folder described by ``meta`` (in a worker process)."""
    from edgedepth.datasets.procedural import render_scene, scene_seed

    start = k * meta["shard_size"]
    stop = min(start + meta["shard_size"], meta["count"])
    h, w = meta["frame_size"]
    n = stop - start
    image = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    reliable = np.empty((n, h, w), bool)
    seeds = np.empty(n, np.int64)
    layouts = meta["layouts"]
    for j, i in enumerate(range(start, stop)):
        seed = scene_seed(meta["seed"], i)
        s = render_scene(seed, h, w, layouts[i % len(layouts)], unreliable=meta["unreliable"],
                         far_depth=meta["far_depth"] or None, shadows=meta.get("shadows", False))
        image[j], depth[j], seeds[j] = s["image"], s["depth"], seed
        reliable[j] = True if s["mask"] is None else s["mask"]
    with atomic_dir(Path(root) / _shard_name(k)) as tmp:
        for name, arr in zip(FIELDS, (image, depth, reliable, seeds)):
            np.save(tmp / f"{name}.npy", arr)
    return n


def shard_folder_meta(root: str | Path) -> dict:
    """The ``meta.json`` of a shard folder, checked."""
    path = Path(root) / META
    if not path.is_file():
        raise FileNotFoundError(f"shard folder {str(root)!r} has no {META} (render it with edgedepth train-data)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown shard format {meta.get('format')!r} (this edgedepth reads {FORMAT})")
    return meta


def render_shards(root: str | Path, count: int, frame_size: tuple[int, int], *, seed: int = 0,
                  layouts: Sequence[str] = ("street", "indoor"), unreliable: bool = True, far_depth: float = 120.0,
                  shard_size: int = 8, workers: Optional[int] = None, progress: bool = True,
                  shadows: bool = False) -> Path:
    """Render ``count`` procedural frames of ``frame_size`` (H, W) into shard folder ``root`` with
    ``workers`` processes (default: every usable core); ``shadows``: cast shadows from the sun
    (``render_scene``). Resumes an interrupted folder of the same settings; refuses one rendered
    with other settings."""
    from tqdm.auto import tqdm

    from edgedepth.datasets.procedural import LAYOUTS

    if count < 1 or shard_size < 1:
        raise ValueError(f"count and shard_size must be >= 1, got {count}, {shard_size}")
    h, w = (int(v) for v in frame_size)
    if h < 8 or w < 8:
        raise ValueError(f"frame_size must be at least 8x8, got {frame_size}")
    if not layouts or any(l not in LAYOUTS for l in layouts):
        raise ValueError(f"layouts must be one or more of {LAYOUTS}, got {layouts}")
    meta = {"format": FORMAT, "frame_size": [h, w], "count": int(count), "shard_size": int(shard_size),
            "seed": int(seed), "layouts": list(layouts), "unreliable": bool(unreliable),
            "far_depth": float(far_depth)}
    if shadows:  # absent when off, so that folders rendered before the option still resume
        meta["shadows"] = True
    root = Path(root)
    if (root / META).is_file():
        old = shard_folder_meta(root)
        if old != meta:
            raise ValueError(f"shard folder {root} was rendered with other settings ({old}); "
                             "render into a new folder")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / META, json.dumps(meta, indent=2) + "\n")
    shards = -(-count // shard_size)
    todo = [k for k in range(shards) if not (root / _shard_name(k) / "seed.npy").is_file()]
    if workers is None:
        from edgedepth.tiling import available_cores

        workers = available_cores()
    done = count - sum(min(shard_size, count - k * shard_size) for k in todo)
    bar = tqdm(total=count, initial=done, unit="frame", desc=f"rendering {root.name}",
               disable=True if not progress else None)  # None: a bar on a terminal, quiet in a log
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            for fut in as_completed([pool.submit(_render_shard, str(root), k, meta) for k in todo]):
                bar.update(fut.result())
    bar.close()
    return root


class ShardFrames:
    """The frames of one or more shard folders, in folder order, as a training frame source."""

    def __init__(self, roots: Sequence[str | Path]) -> None:
        if not roots:
            raise ValueError("ShardFrames needs at least one shard folder")
        self.parts = []  # (root, meta, first frame index)
        first = 0
        for root in roots:
            meta = shard_folder_meta(root)
            missing = [k for k in range(-(-meta["count"] // meta["shard_size"]))
                       if not (Path(root) / _shard_name(k) / "seed.npy").is_file()]
            if missing:
                raise FileNotFoundError(f"shard folder {str(root)!r} is incomplete ({len(missing)} shards missing, "
                                        f"first {_shard_name(missing[0])}): finish rendering it")
            self.parts.append((Path(root), meta, first))
            first += meta["count"]
        self.length = first
        self._open: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    @property
    def frame_sizes(self) -> list[tuple[int, int]]:
        return [tuple(meta["frame_size"]) for _, meta, _ in self.parts]

    def __len__(self) -> int:
        return self.length

    def _arrays(self, part: int, shard: int) -> dict[str, np.ndarray]:
        key = (part, shard)
        if key not in self._open:
            folder = self.parts[part][0] / _shard_name(shard)
            self._open[key] = {f: np.load(folder / f"{f}.npy", mmap_mode="r", allow_pickle=False) for f in FIELDS}
        return self._open[key]

    def frame(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"frame {index} out of range for {self.length} shard frames")
        part = max(p for p, (_, _, first) in enumerate(self.parts) if first <= index)
        root, meta, first = self.parts[part]
        shard, j = divmod(index - first, meta["shard_size"])
        arrays = self._arrays(part, shard)
        # Memory-mapped rows are C-contiguous views: the tile engine reads only the pixels it samples.
        return {"image": arrays["image"][j], "depth": arrays["depth"][j], "reliable": arrays["reliable"][j],
                "index": int(index)}

    def __getstate__(self) -> dict:
        # Data-loader workers reopen the maps themselves.
        return {**self.__dict__, "_open": {}}

