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


def _items(tmp_path, *overrides):
    """Four refiner items of the tiny config with ``overrides`` (``SECTION.FIELD=VALUE``)."""
    cfg = load_config(CONFIGS / "tiny-refiner.yaml", [f"train.out_dir={tmp_path / 'run'}", *overrides])
    stage = Trainer(cfg, resume="never").stage
    return stage.items(ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3, length=4))


def test_refiner_items_shade_the_image_and_never_the_depth(tmp_path):
    def items(shade_share, shade_coarse=True):
        return _items(tmp_path, f"data.shade={shade_share}", f"data.shade_coarse={str(shade_coarse).lower()}")

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


def test_camera_crops_apply_tone_balance_blur_and_noise():
    from edgedepth.train.augment import Camera, camera_crops

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = np.array(mean)[:, None, None], np.array(std)[:, None, None]
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.05, 0.95, (2, 3, 24, 40)).astype(np.float32)
    crops = ((colours - m) / s).astype(np.float32)
    plain = Camera(1.0, np.ones(3, np.float32), 0.0, 0.0)
    np.testing.assert_allclose(camera_crops(crops, plain, rng, mean=mean, std=std), crops, atol=1e-5)
    # tone curve and white balance act per pixel, on colours in [0, 1]
    tone = Camera(1.2, np.array([0.9, 1.0, 1.05], np.float32), 0.0, 0.0)
    got = camera_crops(crops, tone, rng, mean=mean, std=std) * s + m
    want = np.clip(colours ** 1.2 * np.array([0.9, 1.0, 1.05])[:, None, None], 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # blur keeps a flat crop flat and the mean of a varying one, and lowers its variance
    blur = Camera(1.0, np.ones(3, np.float32), 0.8, 0.0)
    flat = np.full_like(crops, 0.3)
    np.testing.assert_allclose(camera_crops(flat, blur, rng, mean=mean, std=std), flat, atol=1e-5)
    blurred = camera_crops(crops, blur, rng, mean=mean, std=std)
    assert abs(blurred.mean() - crops.mean()) < 0.02 and blurred.std() < 0.8 * crops.std()
    # noise: zero-mean, the drawn standard deviation, from the rng given
    noisy = Camera(1.0, np.ones(3, np.float32), 0.0, 0.02)
    a = camera_crops(crops, noisy, np.random.default_rng(5), mean=mean, std=std)
    np.testing.assert_array_equal(a, camera_crops(crops, noisy, np.random.default_rng(5), mean=mean, std=std))
    d = (a - crops) * s
    assert abs(d.mean()) < 2e-3 and 0.017 < d.std() < 0.023
    assert a.dtype == np.float32 and a.shape == crops.shape


def test_refiner_items_with_a_camera_change_every_crop_and_never_the_depth(tmp_path):
    plain, seen = (_items(tmp_path, "data.shade=0.5", f"data.camera={c}") for c in (0.0, 1.0))
    for i in range(4):
        a, b = plain[i], seen[i]
        for key in ("gt", "valid", "reliable", "boxes"):  # the camera is drawn last: same tiles, flip, shapes
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
        for key in ("rgb0", "coarse_image"):
            assert a[key].shape == b[key].shape and not np.array_equal(a[key].numpy(), b[key].numpy())
    with pytest.raises(ValueError, match="data.camera"):
        load_config(CONFIGS / "tiny-refiner.yaml", [f"train.out_dir={tmp_path / 'run'}", "data.camera=1.5"])
