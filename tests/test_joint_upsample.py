"""Joint bilateral upsampling (tiling.joint_upsample / stitch_joint, Tiling.upsample): native and torch
engines against the numpy reference, the edge it exists for, its finishing pass and its refusals."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from edgedepth import native, tiling, tiling_torch
from edgedepth import tiling_reference as ref
from edgedepth.tiling import TileGrid, Tiling

needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")
RNG = np.random.default_rng(5)


def _case(h: int, w: int, height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 60.0, (h, w)).astype(np.float32)
    guide = tiling.crop_resize(image, [[0, 0, height, width]], (h, w))[0]
    return depth, guide, image


def _step_scene(height: int = 60, width: int = 97, edge: int = 41, h: int = 25, w: int = 40):
    """A dark near wall left of column ``edge``, a bright far one right of it; the depth map at
    (h, w) is point-sampled from the frame (as the refiner's tiles are)."""
    image = np.full((height, width, 3), 30, np.uint8)
    image[:, edge:] = 220
    full = np.where(np.arange(width)[None, :] < edge, 2.0, 10.0) * np.ones((height, 1))
    depth = tiling.crop_resize(full.astype(np.float32)[None], [[0, 0, height, width]], (h, w))[0, 0]
    guide = tiling.crop_resize(image, [[0, 0, height, width]], (h, w))[0]
    return np.ascontiguousarray(depth), guide, image, full


@needs_native
@pytest.mark.parametrize("h, w, height, width", [(5, 7, 12, 17), (1, 1, 3, 4), (45, 80, 108, 192), (9, 9, 4, 5),
                                                 (16, 16, 16, 16)])
@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.5])
@pytest.mark.parametrize("threads", [1, 3])
def test_native_matches_reference(h, w, height, width, sigma, threads) -> None:
    depth, guide, image = _case(h, w, height, width, seed=h * 31 + w)
    got, valid = tiling.joint_upsample(depth, guide, image, sigma, threads=threads)
    want = ref.joint_upsample(depth, guide, image, sigma)
    assert got.shape == (height, width) and got.dtype == np.float32 and valid.all()
    # float32 colour distances against the float64 reference: their rounding is scaled by 1/(2 sigma^2)
    np.testing.assert_allclose(got, want, rtol=max(1e-4, 2e-7 / sigma**2))


@pytest.mark.parametrize("sigma", [0.02, 0.3])
def test_torch_matches_reference(sigma) -> None:
    depth, guide, image = _case(13, 21, 40, 50, seed=3)
    got = tiling_torch.joint_upsample(torch.from_numpy(depth), torch.from_numpy(guide), torch.from_numpy(image), sigma)
    np.testing.assert_allclose(got.numpy(), ref.joint_upsample(depth, guide, image, sigma), rtol=1e-4)


def test_torch_batch_matches_reference_per_item_and_passes_gradients_to_depth() -> None:
    cases = [_case(13, 21, 40, 50, seed=s) for s in (4, 5)]
    depth = torch.tensor(np.stack([d for d, _, _ in cases])[:, None], dtype=torch.float64, requires_grad=True)
    guide = torch.from_numpy(np.stack([g for _, g, _ in cases]))
    image = torch.from_numpy(np.stack([i for _, _, i in cases])).permute(0, 3, 1, 2) / 255.0
    got = tiling_torch.joint_upsample_batch(depth, guide, image, 0.05)
    assert got.shape == (2, 1, 40, 50) and got.dtype == torch.float64
    for k, (d, g, i) in enumerate(cases):
        np.testing.assert_allclose(got[k, 0].detach().numpy(), ref.joint_upsample(d, g, i, 0.05), rtol=1e-4)
    got.sum().backward()
    # Each output pixel's weights sum to 1, so the gradient of the sum is each tile pixel's share.
    assert float(depth.grad.sum()) == pytest.approx(2 * 40 * 50, rel=1e-6) and bool((depth.grad >= 0).all())
    with pytest.raises(ValueError, match="guide"):
        tiling_torch.joint_upsample_batch(depth, guide[:, :2], image, 0.05)
    with pytest.raises(ValueError, match="image"):
        tiling_torch.joint_weights(guide, image[:1], 0.05)
    with pytest.raises(ValueError, match="depth"):
        tiling_torch.joint_weights(guide, image, 0.05).apply(depth[:, :, :-1])


def test_fallback_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    depth, guide, image = _case(6, 8, 15, 19)
    monkeypatch.setattr(native, "cpu", None)
    monkeypatch.setattr(tiling, "_warned_fallback", type(tiling._warned_fallback)())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got, valid = tiling.joint_upsample(depth, guide, image, 0.05)
    np.testing.assert_array_equal(got, ref.joint_upsample(depth, guide, image, 0.05))
    assert valid.all()


def test_edge_lands_on_the_image_edge() -> None:
    # What it is for: bilinear upsampling smears the 2 m / 10 m step over the shrink factor;
    # guided by the colours, every dark pixel gets the near depth and every bright one the far.
    depth, guide, image, full = _step_scene()
    got, _ = tiling.joint_upsample(depth, guide, image, 0.05)
    bilinear = tiling.crop_resize(depth[None], [[0, 0, *depth.shape]], full.shape)[0, 0]
    err_joint = np.abs(got - full) / full
    err_bilinear = np.abs(bilinear - full) / full
    assert err_joint.max() < 0.01, err_joint.max()
    assert err_bilinear.max() > 0.3  # the step really falls between low-resolution samples


def test_flat_colour_is_the_bilinear_resize() -> None:
    # With no colour difference every range weight is 1: the crop semantics' bilinear resize.
    depth = RNG.uniform(1, 50, (11, 14)).astype(np.float32)
    image = np.full((30, 41, 3), 128, np.uint8)
    guide = tiling.crop_resize(image, [[0, 0, 30, 41]], (11, 14))[0]
    got, _ = tiling.joint_upsample(depth, guide, image, 0.05)
    np.testing.assert_allclose(got, tiling.crop_resize(depth[None], [[0, 0, 11, 14]], (30, 41))[0, 0], rtol=1e-5)


def _nearly_flat_case(seed: int, spread: float):
    """Random colours over a depth map whose neighbours differ by up to ``spread`` (relative)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    depth = (10.0 * (1.0 + spread * rng.uniform(0.0, 1.0, (12, 17)))).astype(np.float32)
    guide = tiling.crop_resize(image, [[0, 0, 37, 53]], (12, 17))[0]
    return depth, guide, image


def test_taps_within_one_percent_take_the_bilinear_blend() -> None:
    # Depths 10..10.09 m under random colours: no weighting could move a pixel by more than 0.9 %,
    # and the colours would only print their texture into the depth, so each engine gives the resize.
    depth, guide, image = _nearly_flat_case(7, 0.009)
    bilinear = tiling.crop_resize(depth[None], [[0, 0, *depth.shape]], image.shape[:2])[0, 0]
    got, _ = tiling.joint_upsample(depth, guide, image, 0.05)
    np.testing.assert_allclose(got, bilinear, rtol=1e-6)
    np.testing.assert_allclose(ref.joint_upsample(depth, guide, image, 0.05), bilinear, rtol=1e-6)
    got_torch = tiling_torch.joint_upsample(torch.from_numpy(depth), torch.from_numpy(guide), torch.from_numpy(image),
                                            0.05)
    np.testing.assert_allclose(got_torch.numpy(), bilinear, rtol=1e-6)
    # At 3 % the colours weigh in again: the result leaves the resize.
    depth, guide, image = _nearly_flat_case(7, 0.03)
    bilinear = tiling.crop_resize(depth[None], [[0, 0, *depth.shape]], image.shape[:2])[0, 0]
    assert np.abs(tiling.joint_upsample(depth, guide, image, 0.05)[0] / bilinear - 1).max() > 2e-3


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_native_matches_reference_where_flat_and_joint_pixels_mix(threads) -> None:
    # Spreads around the flat threshold: both engines must pick the same pixels (the float32 test).
    depth, guide, image = _nearly_flat_case(11, 1.5 * ref.JOINT_FLAT)
    want = ref.joint_upsample(depth, guide, image, 0.05)
    got, _ = tiling.joint_upsample(depth, guide, image, 0.05, threads=threads)
    bilinear = tiling.crop_resize(depth[None], [[0, 0, *depth.shape]], image.shape[:2])[0, 0]
    flat_share = float(np.mean(np.abs(want / bilinear - 1) < 1e-6))
    assert 0.1 < flat_share < 0.9, flat_share
    np.testing.assert_allclose(got, want, rtol=1e-5)
    got_torch = tiling_torch.joint_upsample(torch.from_numpy(depth), torch.from_numpy(guide), torch.from_numpy(image),
                                            0.05)
    np.testing.assert_allclose(got_torch.numpy(), want, rtol=1e-5)


@needs_native
def test_no_guide_means_the_frame_resized() -> None:
    depth, guide, image = _case(9, 13, 30, 41, seed=2)
    got, valid = tiling.joint_upsample(depth, None, image, 0.05)
    want, want_valid = tiling.joint_upsample(depth, guide, image, 0.05)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(valid, want_valid)


def test_same_size_is_the_identity() -> None:
    depth, guide, image = _case(20, 30, 20, 30)
    np.testing.assert_allclose(tiling.joint_upsample(depth, guide, image, 0.05)[0], depth, rtol=1e-6)


def test_range_weight_follows_exp_and_has_a_floor() -> None:
    t = np.linspace(0.0, 3.0, 31)
    assert np.all(np.abs(ref.range_weight(t) / np.exp(-t) - 1) < 0.3)
    assert ref.range_weight(np.array([0.0]))[0] == 1.0
    assert ref.range_weight(np.array([50.0]))[0] == ref.JOINT_FLOOR


@needs_native
@pytest.mark.parametrize("scale, valid_max", [(1.0, math.inf), (2.5, 30.0), (0.4, 10.0)])
def test_finishing_pass_is_finish(scale, valid_max) -> None:
    depth, guide, image = _case(10, 12, 31, 37, seed=9)
    depth[2, 3], depth[5, 5], depth[7, 1], depth[0, 0] = np.nan, np.inf, -1.0, 0.0
    got, valid = tiling.joint_upsample(depth, guide, image, 0.05, scale=scale, valid_max=valid_max)
    raw = ref.joint_upsample(depth, guide, image, 0.05)
    want = raw.copy()
    want_valid = ref.finish(want, scale, valid_max)  # in place: want becomes the finished map
    assert np.isfinite(got).all() and (got >= 0).all()
    assert (got[~np.isfinite(raw) | (raw <= 0)] == 0).all()
    # the same pixels are invalid except where a value sits on valid_max within float rounding
    borderline = np.isclose(raw, valid_max, rtol=1e-4)
    assert np.array_equal(valid | borderline, want_valid | borderline)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert 0 < valid.mean() < 1


@needs_native
def test_non_finite_guide_is_not_a_crash() -> None:
    # A caller's guide may hold NaN or inf; the range weights take their floor (sanitizer-run test).
    depth, guide, image = _case(8, 8, 20, 20)
    guide[0, 2, 2], guide[1, 4, 4], guide[2, 6, 6] = np.nan, np.inf, -np.inf
    got, valid = tiling.joint_upsample(depth, guide, image, 0.05)
    assert got.shape == (20, 20) and np.isfinite(got).all()


BAD = [
    (dict(depth=np.ones((4, 4), np.float64)), TypeError, "depth"),
    (dict(depth=np.ones(16, np.float32)), TypeError, "depth"),
    (dict(guide=np.ones((3, 4, 5), np.float32)), ValueError, "guide"),
    (dict(guide=np.ones((4, 4, 3), np.float32)), ValueError, "guide"),
    (dict(image=np.ones((10, 10, 3), np.float32)), ValueError, "image"),
    (dict(image=np.ones((10, 10), np.uint8)), ValueError, "image"),
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma=float("nan")), ValueError, "sigma"),
    (dict(sigma=True), ValueError, "sigma"),
    (dict(scale=-1.0), ValueError, "scale"),
    (dict(threads=0), ValueError, "threads"),
]


@pytest.mark.parametrize("change, exc, match", BAD)
def test_bad_arguments_are_named(change, exc, match) -> None:
    args = dict(depth=np.ones((4, 4), np.float32), guide=np.ones((3, 4, 4), np.float32),
                image=np.ones((10, 10, 3), np.uint8), sigma=0.05)
    args.update(change)
    with pytest.raises(exc, match=match):
        tiling.joint_upsample(**args)


@needs_native
def test_native_checks_its_arguments() -> None:
    # The extension can be called directly: it refuses what the wrapper refuses, before touching memory.
    d, g, im = np.ones((4, 4), np.float32), np.ones((3, 4, 4), np.float32), np.ones((10, 10, 3), np.uint8)
    for args in ((d.astype(np.float64), g, im, 0.05, 1.0, 80.0, 1), (d, g[:, :3], im, 0.05, 1.0, 80.0, 1),
                 (d, np.ones((3, 4, 4), np.float64), im, 0.05, 1.0, 80.0, 1), (d, g, im[..., :2], 0.05, 1.0, 80.0, 1),
                 (d, g, im.astype(np.float32), 0.05, 1.0, 80.0, 1), (d, g, im, 0.0, 1.0, 80.0, 1),
                 (d, g, im, float("inf"), 1.0, 80.0, 1), (d, g, im, 0.05, 0.0, 80.0, 1),
                 (d, g, im, 0.05, 1.0, float("nan"), 1), (d, g, im, 0.05, 1.0, 80.0, 0),
                 (np.ones((4, 8), np.float32)[:, ::2], g, im, 0.05, 1.0, 80.0, 1),
                 (np.ones((0, 4), np.float32), g, im, 0.05, 1.0, 80.0, 1)):
        with pytest.raises(ValueError):
            native.cpu.joint_upsample(*args)


@needs_native
def test_stitch_joint_is_a_low_resolution_stitch_then_the_upsampling() -> None:
    grid = TileGrid.from_overlap_ratio(90, 160, 2, 3, 0.25)
    tiles = RNG.uniform(1, 40, (len(grid), 1, 20, 30)).astype(np.float32)
    image = RNG.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    low_size = grid.tile_resolution(20, 30)
    h, w = low_size
    got, valid = tiling.stitch_joint(tiles, grid.boxes, image, low_size, 0.05, window="cosine")
    low = tiling.stitch(tiles, grid.scaled(h / 90, w / 160), h, w, "cosine")[0]
    guide = tiling.crop_resize(image, [[0, 0, 90, 160]], (h, w))[0]
    want, want_valid = tiling.joint_upsample(low, guide, image, 0.05)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(valid, want_valid)
    with pytest.raises(ValueError, match="low_size"):
        tiling.stitch_joint(tiles, grid.boxes, image, (91, 50), 0.05)
    with pytest.raises(ValueError, match="one-channel"):
        tiling.stitch_joint(np.repeat(tiles, 2, axis=1), grid.boxes, image, low_size, 0.05)


def test_tile_resolution_is_the_frame_over_the_shrink() -> None:
    grid = TileGrid.for_shrink(1080, 1920, 128, 224, 2.4, 0.25)
    sy, sx = grid.shrink(128, 224)
    assert grid.tile_resolution(128, 224) == (round(1080 / sy), round(1920 / sx))
    # tiles larger than their boxes (a small frame) never make the map bigger than the frame
    small = TileGrid.from_overlap_ratio(100, 120, 2, 2, 0.25)
    assert small.tile_resolution(128, 224) == (100, 120)


def test_tiling_checks_and_reads_its_upsampling() -> None:
    t = Tiling(4, 4, 0.25, "cosine", 2.4, "joint_bilateral", 0.03)
    assert Tiling.from_json(t.to_json()) == t
    assert Tiling.from_json({"rows": 2, "cols": 2, "overlap_ratio": 0.25, "window": "cosine"}).upsample == "bilinear"
    with pytest.raises(ValueError, match="upsample"):
        dataclasses.replace(t, upsample="bicubic")
    with pytest.raises(ValueError, match="joint_sigma"):
        dataclasses.replace(t, joint_sigma=0.0)
