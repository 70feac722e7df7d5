"""Write samples as a data-set folder that the ``folder`` reader opens (layout in
:mod:`edgedepth.datasets.readers.folder`). Every file is written atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..atomic import atomic_path
from ..depth_io import write_depth_png, write_image, write_npy
from .sample import Sample, check_sample

DEPTH_FORMATS = ("png", "npy")


def write_sample(root, sample: Sample, depth_format: str = "png") -> Path:
    """Write one sample under ``root``; returns the image path. ``depth_format``: ``"png"``
    (16-bit millimetres, 0 = invalid, saturates at 65.535 m) or ``"npy"`` (float32 metres)."""
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"depth_format must be one of {DEPTH_FORMATS}, got {depth_format!r}")
    check_sample(sample, f"sample {sample.get('name', '?')!r}")
    root, name = Path(root), sample["name"]
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"sample name {name!r} is not a plain file name")
    write_image(root / "images" / f"{name}.png", sample["image"])
    if depth_format == "png":
        write_depth_png(root / "depth" / f"{name}.png", sample["depth"])
    else:
        write_npy(root / "depth" / f"{name}.npy", sample["depth"].astype(np.float32))
    if sample["intrinsics"] is not None:
        with atomic_path(root / "intrinsics" / f"{name}.json") as tmp:
            tmp.write_text(json.dumps({"K": np.asarray(sample["intrinsics"], float).tolist()}))
    if sample["mask"] is not None:
        write_image(root / "mask" / f"{name}.png", sample["mask"].astype(np.uint8) * 255)
    return root / "images" / f"{name}.png"


def write_dataset(root, samples: Iterable[Sample], depth_format: str = "png", total: Optional[int] = None,
                  progress: bool = True) -> int:
    """Write every sample of ``samples`` under ``root`` with a progress bar; returns the count."""
    from tqdm import tqdm

    n = 0
    # disable=None: a bar on a terminal, nothing in a log file
    for sample in tqdm(samples, total=total, disable=None if progress else True, unit="frame", desc=f"writing {root}"):
        write_sample(root, sample, depth_format)
        n += 1
    return n
