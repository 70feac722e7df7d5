"""KITTI depth (depth-selection layout): ``ROOT/[depth_selection/]<split>/image/
<drive>_image_<frame>_image_0X.png``, ``groundtruth_depth/<drive>_groundtruth_depth_<frame>_image_0X.png``
(uint16, depth = value / 256 m, 0 = no LiDAR return) and ``intrinsics/<image stem>.txt``
(9 numbers, K row-major). ``split`` defaults to ``"val_selection_cropped"``."""
from __future__ import annotations

import numpy as np

from ...depth_io import read_image, read_png16
from ..sample import Sample
from .base import FileDataset, check_image_size, register, require


@register("kitti")
class KITTIDepth(FileDataset):
    def scan(self):
        split = self.split or "val_selection_cropped"
        base = self.root / split
        if not base.is_dir() and (self.root / "depth_selection" / split).is_dir():
            base = self.root / "depth_selection" / split
        items = []
        for img in sorted((base / "image").glob("*.png")):
            if "_image_" not in img.name:
                raise ValueError(f"{img}: expected a name <drive>_image_<frame>_image_0X.png")
            gt = require(base / "groundtruth_depth" / img.name.replace("_image_", "_groundtruth_depth_", 1))
            intr = base / "intrinsics" / f"{img.stem}.txt"
            items.append((img, gt, intr if intr.is_file() else None))
        return items

    def load(self, item) -> Sample:
        img, gt, intr = item
        K = None
        if intr is not None:
            try:
                K = np.array(intr.read_text().split(), np.float64).reshape(3, 3)
            except ValueError as err:
                raise ValueError(f"{intr}: expected 9 numbers (K row-major)") from err
        image = read_image(img)
        depth = read_png16(gt).astype(np.float32) / 256.0
        check_image_size(depth, image, gt, "depth")
        return Sample(image=image, depth=depth, intrinsics=K, mask=None, name=img.stem)
