"""The Sample record every data source yields, and its validation."""
from __future__ import annotations

from typing import Optional, TypedDict

import numpy as np


class Sample(TypedDict):
    """One frame: ``image`` HxWx3 uint8 RGB; ``depth`` HxW float32 metres (0 = invalid);
    ``intrinsics`` 3x3 float64 or None; ``mask`` HxW bool or None (False = unreliable ground
    truth); ``name`` a unique, file-name-safe identifier."""

    image: np.ndarray
    depth: np.ndarray
    intrinsics: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    name: str


def check_sample(sample: Sample, source: str = "sample") -> Sample:
    """Validate shapes and dtypes; raises ValueError/TypeError naming ``source`` and the field."""
    for key in ("image", "depth", "intrinsics", "mask", "name"):
        if key not in sample:
            raise ValueError(f"{source}: missing field {key!r}")
    image, depth = sample["image"], sample["depth"]
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"{source}: image must be HxWx3 uint8, got {getattr(image, 'shape', None)} "
                        f"{getattr(image, 'dtype', type(image))}")
    if not isinstance(depth, np.ndarray) or depth.dtype != np.float32 or depth.shape != image.shape[:2]:
        raise TypeError(f"{source}: depth must be float32 of shape {image.shape[:2]}, got "
                        f"{getattr(depth, 'shape', None)} {getattr(depth, 'dtype', type(depth))}")
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise ValueError(f"{source}: depth must be finite and >= 0 (0 = invalid)")
    K = sample["intrinsics"]
    if K is not None and (not isinstance(K, np.ndarray) or K.shape != (3, 3)):
        raise TypeError(f"{source}: intrinsics must be a 3x3 array or None")
    mask = sample["mask"]
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.shape != depth.shape):
        raise TypeError(f"{source}: mask must be bool of shape {depth.shape} or None")
    if not isinstance(sample["name"], str) or not sample["name"]:
        raise TypeError(f"{source}: name must be a non-empty string")
    return sample
