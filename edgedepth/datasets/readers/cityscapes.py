"""Cityscapes disparity: ``ROOT/leftImg8bit/<split>/<city>/<id>_leftImg8bit.png``,
``ROOT/disparity/<split>/<city>/<id>_disparity.png`` (uint16 p; p = 0 invalid, d = (p - 1)/256 px)
and ``ROOT/camera/<split>/<city>/<id>_camera.json`` (``extrinsic.baseline`` m,
``intrinsic.fx/fy/u0/v0`` px). Depth = baseline x fx / d. ``split`` defaults to ``"val"``."""
from __future__ import annotations

import json

import numpy as np

from ...depth_io import read_image, read_png16
from ..sample import Sample
from .base import FileDataset, check_image_size, disparity_to_depth, register, require


def read_camera(path) -> tuple[np.ndarray, float]:
    """(K 3x3, baseline m) from a Cityscapes camera JSON."""
    try:
        cam = json.loads(require(path).read_text())
        i = cam["intrinsic"]
        K = np.array([[i["fx"], 0, i["u0"]], [0, i["fy"], i["v0"]], [0, 0, 1]], np.float64)
        return K, float(cam["extrinsic"]["baseline"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a Cityscapes camera file ({err!r})") from err


@register("cityscapes")
class Cityscapes(FileDataset):
    def scan(self):
        split = self.split or "val"
        items = []
        for img in sorted((self.root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            city = img.parent.name
            items.append((img, require(self.root / "disparity" / split / city / f"{stem}_disparity.png"),
                          require(self.root / "camera" / split / city / f"{stem}_camera.json"), stem))
        return items

    def load(self, item) -> Sample:
        img, disp_path, cam_path, stem = item
        K, baseline = read_camera(cam_path)
        raw = read_png16(disp_path).astype(np.float64)
        image = read_image(img)
        check_image_size(raw, image, disp_path, "disparity")
        disp = np.where(raw > 0, (raw - 1.0) / 256.0, 0.0)
        depth = disparity_to_depth(disp, baseline * K[0, 0])
        return Sample(image=image, depth=depth, intrinsics=K, mask=None, name=stem)
