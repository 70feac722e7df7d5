"""ETH3D high-resolution multi-view (DSLR) depth: ``ROOT/<scene>/images/dslr_images_undistorted/
<name>.JPG``, ground truth ``ROOT/<scene>/ground_truth_depth/dslr_images/<name>.JPG`` — despite
the suffix a raw little-endian float32 HxW array in metres, inf/0 where unknown — and optional
COLMAP text calibration ``ROOT/<scene>/dslr_calibration_undistorted/{cameras,images}.txt``
(PINHOLE: fx fy cx cy). ``split``: None, or a scene name."""
from __future__ import annotations

import numpy as np

from ...depth_io import read_image
from ..sample import Sample
from .base import FileDataset, register, require


def read_colmap_intrinsics(calib_dir) -> dict:
    """{image file name: K 3x3} from COLMAP ``cameras.txt`` + ``images.txt``."""
    cams = {}
    for line in require(calib_dir / "cameras.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 8 or tok[1] not in ("PINHOLE", "SIMPLE_PINHOLE"):
            raise ValueError(f"{calib_dir / 'cameras.txt'}: expected PINHOLE cameras, got {line!r}")
        p = [float(x) for x in tok[4:]]
        fx, fy, cx, cy = (p[0], p[1], p[2], p[3]) if tok[1] == "PINHOLE" else (p[0], p[0], p[1], p[2])
        cams[tok[0]] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    out = {}
    lines = [l for l in require(calib_dir / "images.txt").read_text().splitlines() if not l.startswith("#")]
    for line in lines[::2]:  # each image has a pose line followed by a 2-D points line
        tok = line.split()
        if len(tok) >= 10:
            if tok[8] not in cams:
                raise ValueError(f"{calib_dir / 'images.txt'}: unknown camera id {tok[8]}")
            out[tok[9].split("/")[-1]] = cams[tok[8]]
    return out


@register("eth3d")
class ETH3D(FileDataset):
    def scan(self):
        items = []
        for scene in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if self.split and scene.name != self.split:
                continue
            images = sorted((scene / "images" / "dslr_images_undistorted").glob("*"))
            calib_dir = scene / "dslr_calibration_undistorted"
            intr = read_colmap_intrinsics(calib_dir) if calib_dir.is_dir() else {}
            for img in images:
                gt = require(scene / "ground_truth_depth" / "dslr_images" / img.name)
                items.append((img, gt, intr.get(img.name), scene.name))
        return items

    def load(self, item) -> Sample:
        img, gt, K, scene = item
        image = read_image(img)
        h, w = image.shape[:2]
        raw = np.fromfile(gt, dtype="<f4")
        if raw.size != h * w:
            raise ValueError(f"{gt}: {raw.size} float32 values, expected {h}x{w} = {h * w} for {img.name}")
        depth = raw.reshape(h, w).astype(np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0
        return Sample(image=image, depth=depth, intrinsics=K, mask=None, name=f"{scene}_{img.stem}")
