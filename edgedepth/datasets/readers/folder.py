"""Generic folder, also what :func:`edgedepth.datasets.write_dataset` writes:
``ROOT/[<split>/]images/<name>.{png,jpg,jpeg}``, ``depth/<name>.npy`` (float32 m) or
``depth/<name>.png`` (16-bit, mm), optional ``intrinsics/<name>.json`` (``{"K": 3x3}``) and
``mask/<name>.png`` (8-bit, nonzero = reliable ground truth)."""
from __future__ import annotations

import json

import numpy as np

from ...depth_io import read_depth, read_image
from ..sample import Sample
from .base import FileDataset, check_image_size, register

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_intrinsics_json(path) -> np.ndarray:
    """K 3x3 from ``{"K": [[...], [...], [...]]}`` or ``{"fx", "fy", "cx", "cy"}``."""
    try:
        data = json.loads(path.read_text())
        if "K" in data:
            K = np.array(data["K"], np.float64)
        else:
            K = np.array([[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]], np.float64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: expected {{'K': 3x3}} or fx/fy/cx/cy ({err!r})") from err
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"{path}: K must be a finite 3x3 matrix, got shape {K.shape}")
    return K


@register("folder")
class Folder(FileDataset):
    def scan(self):
        base = self.root / self.split if self.split else self.root
        images = sorted(p for p in (base / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        items = []
        for img in images:
            found = [p for p in (base / "depth" / f"{img.stem}.npy", base / "depth" / f"{img.stem}.png") if p.is_file()]
            if not found:
                raise FileNotFoundError(f"missing file: {base / 'depth' / img.stem}.npy (or .png) for {img}")
            intr, mask = base / "intrinsics" / f"{img.stem}.json", base / "mask" / f"{img.stem}.png"
            items.append((img, found[0], intr if intr.is_file() else None, mask if mask.is_file() else None))
        return items

    def load(self, item) -> Sample:
        img, depth_path, intr, mask_path = item
        image = read_image(img)
        depth = read_depth(depth_path)
        check_image_size(depth, image, depth_path, "depth")
        if not np.isfinite(depth).all():
            raise ValueError(f"{depth_path}: depth holds NaN/inf (use 0 for invalid)")
        mask = None
        if mask_path is not None:
            mask = read_image(mask_path)[..., 0] > 0
            check_image_size(mask, image, mask_path, "mask")
        K = read_intrinsics_json(intr) if intr is not None else None
        return Sample(image=image, depth=depth, intrinsics=K, mask=mask, name=img.stem)
