"""Middlebury 2014 stereo: ``ROOT/<Scene>-perfect/`` (or ``-imperfect``, or Eval3's layout)
holding ``im0.png``, ``disp0.pfm`` (or ``disp0GT.pfm``; inf = unknown) and ``calib.txt``
(``cam0=[f 0 cx; 0 f cy; 0 0 1]``, ``doffs``, ``baseline`` in mm). Depth in metres =
baseline x f / (d + doffs) / 1000. ``split``: None, or a substring the scene folder name must
contain (e.g. ``"perfect"``)."""
from __future__ import annotations

import numpy as np

from ...depth_io import read_image, read_pfm
from ..sample import Sample
from .base import FileDataset, check_image_size, disparity_to_depth, register, require


def read_calib(path) -> dict:
    """Parse a Middlebury ``calib.txt``: cam0/cam1 as 3x3 arrays, the rest as floats."""
    out = {}
    for line in require(path).read_text().splitlines():
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        try:
            if value.startswith("["):
                out[key] = np.array([[float(x) for x in row.split()] for row in value.strip("[]").split(";")])
            else:
                out[key] = float(value)
        except ValueError as err:
            raise ValueError(f"{path}: cannot parse {key}={value!r}") from err
    for key in ("cam0", "doffs", "baseline"):
        if key not in out:
            raise ValueError(f"{path}: missing {key}=")
    if out["cam0"].shape != (3, 3):
        raise ValueError(f"{path}: cam0 must be a 3x3 matrix")
    return out


@register("middlebury2014")
class Middlebury2014(FileDataset):
    def scan(self):
        items = []
        for calib in sorted(self.root.glob("*/calib.txt")):
            scene = calib.parent
            if self.split and self.split not in scene.name:
                continue
            disp = scene / "disp0.pfm"
            if not disp.is_file() and (scene / "disp0GT.pfm").is_file():
                disp = scene / "disp0GT.pfm"
            items.append((require(scene / "im0.png"), require(disp), calib))
        return items

    def load(self, item) -> Sample:
        img, disp_path, calib_path = item
        calib = read_calib(calib_path)
        disp = read_pfm(disp_path)
        image = read_image(img)
        check_image_size(disp, image, disp_path, "disparity")
        K = calib["cam0"]
        depth = disparity_to_depth(disp, calib["baseline"] * K[0, 0] / 1000.0, calib["doffs"])
        return Sample(image=image, depth=depth, intrinsics=K.astype(np.float64), mask=None, name=img.parent.name)
