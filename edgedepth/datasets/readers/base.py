"""Common machinery of the data-set readers: a lazy Sequence of Samples and a registry."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..sample import Sample, check_sample

_REGISTRY: dict[str, Callable[..., "FileDataset"]] = {}


def register(kind: str):
    """Class decorator: make a reader available to :func:`open_dataset` as ``kind``."""

    def deco(cls):
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls

    return deco


class FileDataset(Sequence):
    """A data set on disk: ``items`` are per-sample records (file paths), read lazily by
    :meth:`load`. Indexing returns a validated :class:`Sample`; a corrupt or missing file raises
    an error naming it."""

    kind = "?"

    def __init__(self, root, split: Optional[str] = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.kind} data set root not found: {self.root}")
        self.split = split
        self.items: list = self.scan()
        if not self.items:
            raise FileNotFoundError(f"no {self.kind} samples found under {self.root}"
                                    + (f" (split {split!r})" if split else ""))

    def scan(self) -> list:  # pragma: no cover - every reader overrides it
        raise NotImplementedError

    def load(self, item) -> Sample:  # pragma: no cover - every reader overrides it
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} {self.kind} samples")
        return check_sample(self.load(self.items[index]), f"{self.kind} sample {index}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


def require(path: Path) -> Path:
    """``path`` if it is a file, else FileNotFoundError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    return path


def check_image_size(array: np.ndarray, image: np.ndarray, path: Path, what: str) -> None:
    """ValueError naming ``path`` unless the HW ``array`` (``what``: depth, disparity, mask) has
    the image's height and width."""
    if array.shape != image.shape[:2]:
        raise ValueError(f"{path}: {what} shape {array.shape} != image shape {image.shape[:2]}")


def disparity_to_depth(disparity: np.ndarray, focal_baseline: float, offset: float = 0.0) -> np.ndarray:
    """depth = focal_baseline / (disparity + offset) where disparity + offset > 0 and finite, else 0."""
    d = disparity.astype(np.float64) + offset
    ok = np.isfinite(d) & (d > 0)
    out = np.zeros(disparity.shape, np.float32)
    out[ok] = (focal_baseline / d[ok]).astype(np.float32)
    return out


def registry() -> dict:
    return dict(_REGISTRY)
