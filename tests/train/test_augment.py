"""Shadow and paint shapes (edgedepth.train.augment.shade) and how refiner items use them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedepth.train.augment import shade
from edgedepth.train.config import load_config
from edgedepth.train.data import ProceduralFrames
from edgedepth.train.trainer import Trainer

CONFIGS = Path(__file__).parent / "configs"


def _frame(h=90, w=160):
    rng = np.random.default_rng(0)
    return rng.integers(40, 200, (h, w, 3), dtype=np.uint8)


def test_shade_scales_colours_inside_shapes_and_leaves_the_rest():
    image = _frame()
    changed_share = []
    for seed in range(12):
        out = shade(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out, shade(image, np.random.default_rng(seed)))  # the rng decides all
        ratio = out.astype(np.float64) / image
        # at most three shapes, each a gain in 0.45 * 0.9 .. 1.35 * 1.1, plus rounding
        assert ratio.min() >= 0.405 ** 3 - 0.02 and ratio.max() <= 1.485 ** 3 + 0.02
        changed_share.append(np.mean(np.any(out != image, axis=-1)))
    changed_share = np.array(changed_share)
    assert (changed_share > 0.02).all()  # every call changes something
    assert (changed_share < 0.98).sum() >= 6  # and most leave part of the frame as it was
    with pytest.raises(ValueError, match="uint8"):
        shade(image.astype(np.float32), np.random.default_rng(0))


def test_refiner_items_shade_the_image_and_never_the_depth(tmp_path):
    def items(shade_share, shade_coarse=True):
        cfg = load_config(CONFIGS / "tiny-refiner.yaml", [f"train.out_dir={tmp_path / 'run'}",
                                                          f"data.shade={shade_share}",
                                                          f"data.shade_coarse={str(shade_coarse).lower()}"])
        stage = Trainer(cfg, resume="never").stage
        return stage.items(ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3, length=4))

    plain, shaded = items(0.0), items(1.0)
    for i in range(4):
        a, b = plain[i], shaded[i]
        for key in ("gt", "valid", "reliable", "boxes"):  # same tile group, flip and ground truth
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        assert not np.array_equal(a["rgb0"].numpy(), b["rgb0"].numpy())
        assert not np.array_equal(a["coarse_image"].numpy(), b["coarse_image"].numpy())  # one shaded frame
    # shade_coarse false: the tiles are shaded, the coarse model's input is not
    clean_coarse = items(1.0, shade_coarse=False)
    for i in range(4):
        np.testing.assert_array_equal(clean_coarse[i]["coarse_image"].numpy(), plain[i]["coarse_image"].numpy())
        np.testing.assert_array_equal(clean_coarse[i]["rgb0"].numpy(), shaded[i]["rgb0"].numpy())


def test_shaded_crops_equal_crops_of_the_shaded_frame():
    # What refiner items cut: the frame shaded only where the crops sample it, as if shaded whole.
    from edgedepth import tiling
    from edgedepth.train.augment import draw_shapes, shaded_crops

    image = _frame(135, 240)
    boxes = np.array([[0.0, 0.0, 135.0, 240.0], [10.3, 20.7, 60.2, 100.9], [70.0, 130.0, 65.0, 110.0]])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for seed in range(8):
        whole = shade(image, np.random.default_rng(seed))
        shapes = draw_shapes(np.random.default_rng(seed), *image.shape[:2])
        for size, m, s in (((32, 56), mean, std), ((128, 224), mean, std), ((48, 80), 0.0, 1.0)):
            want = tiling.crop_resize(whole, boxes, size, mean=m, std=s, threads=1)
            np.testing.assert_allclose(shaded_crops(image, shapes, boxes, size, mean=m, std=s), want, atol=2e-6, rtol=0)
