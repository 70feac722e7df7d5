"""Readers of real depth data-set layouts; ``open_dataset(kind, root, split)``."""
from __future__ import annotations

from typing import Optional

from . import cityscapes, eth3d, folder, kitti, middlebury, unrealstereo4k  # noqa: F401  (register)
from .base import FileDataset, registry


def list_datasets() -> list[str]:
    """Names accepted by :func:`open_dataset`."""
    return sorted(registry())


def open_dataset(kind: str, root, split: Optional[str] = None) -> FileDataset:
    """Open a data set of ``kind`` (see :func:`list_datasets`) at ``root``: a lazy Sequence of
    Samples (``len()``, indexing, slicing). Raises FileNotFoundError naming a missing root or
    file, ValueError for an unknown kind or a corrupt file."""
    readers = registry()
    if kind not in readers:
        raise ValueError(f"unknown data set kind {kind!r}; expected one of {sorted(readers)}")
    return readers[kind](root, split)


__all__ = ["open_dataset", "list_datasets", "FileDataset"]
