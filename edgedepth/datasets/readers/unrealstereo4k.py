"""UnrealStereo4K (Tosi et al., CVPR 2021): ``ROOT/<scene>/Image0/<i>.png``,
``Disp0/<i>.npy`` (float32 disparity in px at full 2160x3840), ``Extrinsics0/<i>.txt`` and
``Extrinsics1/<i>.txt`` (line 1: the 3x3 K row-major, line 2: the 3x4 world-to-camera pose).
Depth = baseline x fx / disparity, the baseline being the x offset between the two cameras.
``split``: None for every scene, or the name of a split file ``ROOT/<split>`` / ``ROOT/<split>.txt``
whose lines start with an image path relative to ROOT (PatchFusion's split format)."""
from __future__ import annotations

import numpy as np

from ...depth_io import read_image, read_npy
from ..sample import Sample
from .base import FileDataset, check_image_size, disparity_to_depth, register, require


def read_extrinsics(path):
    """(K 3x3, world-to-camera 3x4) from an UnrealStereo4K extrinsics file."""
    try:
        lines = [l.split() for l in require(path).read_text().splitlines() if l.strip()]
        K = np.array(lines[0], np.float64).reshape(3, 3)
        pose = np.array(lines[1], np.float64).reshape(3, 4)
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: expected a 9-number K line and a 12-number pose line ({err})") from err
    return K, pose


@register("unrealstereo4k")
class UnrealStereo4K(FileDataset):
    def scan(self):
        if self.split:
            listing = self.root / self.split
            if not listing.is_file():
                listing = self.root / f"{self.split}.txt"
            images = [self.root / l.split()[0] for l in require(listing).read_text().splitlines() if l.strip()]
        else:
            images = sorted(self.root.glob("*/Image0/*.png"))
        items = []
        for img in images:
            scene, stem = img.parent.parent, img.stem
            item = (img, scene / "Disp0" / f"{stem}.npy", scene / "Extrinsics0" / f"{stem}.txt",
                    scene / "Extrinsics1" / f"{stem}.txt")
            for path in item:
                require(path)
            items.append(item)
        return items

    def load(self, item) -> Sample:
        img, disp_path, ext0, ext1 = item
        K, pose0 = read_extrinsics(ext0)
        _, pose1 = read_extrinsics(ext1)
        baseline = abs(pose1[0, 3] - pose0[0, 3])
        if baseline <= 0:
            raise ValueError(f"{ext0} and {ext1}: zero baseline, cannot turn disparity into depth")
        disp = read_npy(disp_path)
        image = read_image(img)
        check_image_size(disp, image, disp_path, "disparity")
        depth = disparity_to_depth(disp, baseline * K[0, 0])
        return Sample(image=image, depth=depth, intrinsics=K, mask=None,
                      name=f"{img.parent.parent.name}_{img.stem}")
