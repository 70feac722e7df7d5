"""The guided-filter baseline: box means against brute force, edge snapping on a synthetic step."""
import numpy as np
import pytest

from edgedepth.guided_filter import box_mean, guided_filter, guided_upsample
from edgedepth.metrics import resize_bilinear


def test_box_mean_matches_brute_force_with_clipped_windows():
    x = np.random.default_rng(0).normal(size=(9, 13))
    got = box_mean(x, 2)
    for i in range(9):
        for j in range(13):
            assert got[i, j] == pytest.approx(x[max(0, i - 2):i + 3, max(0, j - 2):j + 3].mean())


def test_guided_filter_keeps_the_guide_and_smooths_without_edges():
    guide = np.random.default_rng(1).random((20, 30))
    np.testing.assert_allclose(guided_filter(guide, 3 * guide + 1, 2, 1e-6), 3 * guide + 1, atol=1e-3)
    flat = np.full((20, 30), 0.5)
    noisy = np.random.default_rng(2).normal(size=(20, 30))
    assert guided_filter(flat, noisy, 3, 1e-2).std() < 0.5 * noisy.std()


def test_guided_upsample_snaps_a_blurred_edge_to_the_image_edge():
    h, w = 64, 96
    gt = np.full((h, w), 10.0, np.float32)
    gt[:, 40:] = 2.0
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 40:] = 200
    low = resize_bilinear(gt, (8, 12))  # what a blurry coarse model gives
    bilinear = resize_bilinear(low, (h, w))
    guided = guided_upsample(low, image, radius=16, eps=1e-4)  # the window must span the blur
    band = slice(34, 46)
    err = lambda p: np.abs(p[:, band] - gt[:, band]).mean()
    assert err(guided) < 0.6 * err(bilinear)
    with pytest.raises(ValueError, match="depth must be finite"):
        guided_upsample(np.zeros((8, 12), np.float32), image)
    with pytest.raises(ValueError, match="image must be"):
        guided_upsample(low, image[..., 0])
