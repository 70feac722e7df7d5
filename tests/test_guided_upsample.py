"""Guided-filter upsampling (tiling.guided_upsample, Tiling.upsample = "guided"): native and torch
engines against the numpy reference (guided_filter.fast_guided_upsample), the edge it exists for, its
finishing pass, invalid depths and its refusals."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from edgedepth import native, tiling, tiling_torch
from edgedepth import tiling_reference as ref
from edgedepth.guided_filter import fast_guided_upsample, pool
from edgedepth.tiling import TileGrid, Tiling

needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")


def _case(h: int, w: int, height: int, width: int, seed: int = 0, holes: float = 0.0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = np.exp(rng.normal(1.0, 0.6, (h, w))).astype(np.float32)
    bad = rng.random((h, w)) < holes
    depth[bad] = rng.choice(np.array([0.0, -1.0, np.nan, np.inf], np.float32), bad.sum())
    guide = tiling.crop_resize(image, [[0, 0, height, width]], (h, w))[0]
    return depth, guide, image


def _check_against_reference(got: np.ndarray, valid: np.ndarray, want: np.ndarray) -> None:
    ok = np.isfinite(want)
    np.testing.assert_array_equal(valid, ok)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5)
    assert (got[~ok] == 0).all()


@needs_native
@pytest.mark.parametrize("h, w, height, width", [(17, 23, 61, 90), (1, 1, 5, 4), (9, 7, 30, 20), (40, 31, 40, 31),
                                                 (45, 80, 108, 192)])
@pytest.mark.parametrize("step, radius", [(1, 2), (2, 3), (3, 0)])
@pytest.mark.parametrize("threads", [1, 3])
def test_native_matches_reference(h, w, height, width, step, radius, threads) -> None:
    depth, guide, image = _case(h, w, height, width, seed=h * 31 + w, holes=0.04)
    got, valid = tiling.guided_upsample(depth, guide, image, step, radius, 1e-4, threads=threads)
    assert got.shape == (height, width) and got.dtype == np.float32 and valid.dtype == bool
    _check_against_reference(got, valid, fast_guided_upsample(depth, guide, image, step, radius, 1e-4))


@needs_native
@pytest.mark.parametrize("step, radius", [(1, 0), (2, 3), (3, 5)])
def test_native_gives_the_same_bits_for_any_thread_count(step, radius) -> None:
    # Each thread sums the windows of its own rows, in the one order the CUDA kernels use too.
    depth, guide, image = _case(97, 130, 290, 400, seed=4, holes=0.02)
    want, want_valid = tiling.guided_upsample(depth, guide, image, step, radius, 1e-5, threads=1)
    for threads in (2, 3, 7):
        got, valid = tiling.guided_upsample(depth, guide, image, step, radius, 1e-5, threads=threads)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(valid, want_valid)


def test_torch_matches_reference() -> None:
    depth, guide, image = _case(21, 33, 50, 70, seed=3, holes=0.03)
    got = tiling_torch.guided_upsample(torch.from_numpy(depth), torch.from_numpy(guide), torch.from_numpy(image),
                                       2, 3, 1e-5).numpy()
    want = fast_guided_upsample(depth, guide, image, 2, 3, 1e-5)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5)


def test_pool_is_the_block_mean_clipped_to_the_map() -> None:
    x = np.arange(35, dtype=np.float64).reshape(5, 7)
    p = pool(x, 2)
    assert p.shape == (3, 4)
    assert p[0, 0] == x[:2, :2].mean() and p[2, 3] == x[4, 6] and p[1, 3] == x[2:4, 6].mean()
    np.testing.assert_array_equal(pool(x, 1), x)


def test_fallback_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    depth, guide, image = _case(6, 8, 15, 19, holes=0.1)
    monkeypatch.setattr(native, "cpu", None)
    monkeypatch.setattr(tiling, "_warned_fallback", type(tiling._warned_fallback)())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got, valid = tiling.guided_upsample(depth, guide, image, 2, 1, 1e-4)
    _check_against_reference(got, valid, fast_guided_upsample(depth, guide, image, 2, 1, 1e-4))


def test_the_step_lands_on_the_colour_edge_to_the_pixel() -> None:
    # A near dark wall left of column 41, a far bright one right of it; the depth map at 2.4x less
    # resolution has a blurred step, which bilinear upsampling spreads over ~5 frame pixels. The
    # guided filter (the default bundle's parameters) puts every pixel on its wall.
    height, width, edge, h, w = 60, 97, 41, 25, 40
    image = np.full((height, width, 3), 30, np.uint8)
    image[:, edge:] = 220
    full = (np.where(np.arange(width)[None, :] < edge, 2.0, 10.0) * np.ones((height, 1))).astype(np.float32)
    depth = np.ascontiguousarray(tiling.crop_resize(full[None], [[0, 0, height, width]], (h, w))[0, 0])
    policy = Tiling(upsample="guided")
    got, valid = tiling.upsample(depth, None, image, policy)
    assert valid.all()
    np.testing.assert_allclose(got, full, rtol=1e-3)
    bilinear = tiling.crop_resize(depth[None], [[0, 0, h, w]], (height, width))[0, 0]
    assert np.abs(bilinear / full - 1).max() > 0.5


def test_finish_and_invalid_depths() -> None:
    depth, guide, image = _case(12, 16, 30, 40, seed=7, holes=0.05)
    got, valid = tiling.guided_upsample(depth, guide, image, 2, 2, 1e-4, scale=1.5, valid_max=4.0)
    raw = fast_guided_upsample(depth, guide, image, 2, 2, 1e-4)
    want_valid = ref.finish(raw, 1.5, 4.0)
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_allclose(got[want_valid], raw[want_valid], rtol=2e-5)
    # every output pixel with a tap on a pooled pixel holding a bad depth is invalid and 0
    assert not valid.all() and (got[~np.isfinite(raw)] == 0).all()
    # without any valid depth nothing is valid, and nothing crashes
    _, none = tiling.guided_upsample(np.zeros((5, 5), np.float32), None, image, 2, 1, 1e-4)
    assert not none.any()


BAD = [
    (dict(depth=np.ones(16, np.float32)), TypeError, "depth"),
    (dict(depth=np.ones((4, 4), np.float64)), TypeError, "depth"),
    (dict(guide=np.ones((3, 4, 5), np.float32)), ValueError, "guide"),
    (dict(image=np.ones((10, 10, 3), np.float32)), ValueError, "image"),
    (dict(image=np.ones((10, 10), np.uint8)), ValueError, "image"),
    (dict(step=0), ValueError, "guided_step"),
    (dict(step=17), ValueError, "guided_step"),
    (dict(step=2.0), TypeError, "guided_step"),
    (dict(radius=-1), ValueError, "guided_radius"),
    (dict(radius=65), ValueError, "guided_radius"),
    (dict(eps=0.0), ValueError, "guided_eps"),
    (dict(eps=float("nan")), ValueError, "guided_eps"),
    (dict(eps=True), ValueError, "guided_eps"),
    (dict(scale=0.0), ValueError, "scale"),
    (dict(threads=0), ValueError, "threads"),
]


@pytest.mark.parametrize("change, exc, match", BAD)
def test_bad_arguments_are_named(change, exc, match) -> None:
    args = dict(depth=np.ones((4, 4), np.float32), guide=np.ones((3, 4, 4), np.float32),
                image=np.ones((10, 10, 3), np.uint8), step=2, radius=1, eps=1e-4)
    args.update(change)
    with pytest.raises(exc, match=match):
        tiling.guided_upsample(**args)


@needs_native
def test_native_checks_its_arguments() -> None:
    # The extension can be called directly: it refuses what the wrapper refuses, before touching memory.
    d, g, im = np.ones((4, 4), np.float32), np.ones((3, 4, 4), np.float32), np.ones((10, 10, 3), np.uint8)
    good = (d, g, im, 2, 1, 1e-4, 1.0, 80.0, 1)
    for k, bad in ((0, d.astype(np.float64)), (0, np.ones((4, 8), np.float32)[:, ::2]), (0, np.ones((0, 4), np.float32)),
                   (1, g[:, :3]), (1, g.astype(np.float64)), (2, im[..., :2]), (2, im.astype(np.float32)),
                   (3, 0), (3, 17), (4, -1), (4, 65), (5, 0.0), (5, float("nan")), (5, 2.0), (6, 0.0),
                   (7, float("nan")), (8, 0)):
        args = list(good)
        args[k] = bad
        with pytest.raises(ValueError):
            native.cpu.guided_upsample(*args)


def test_tiling_policy_and_manifest_keys() -> None:
    t = Tiling(4, 4, 0.25, "cosine", 2.4, "guided", guided_step=3, guided_radius=5, guided_eps=1e-4)
    assert t.low_res and Tiling.from_json(json.loads(json.dumps(t.to_json()))) == t
    assert Tiling.from_json({"rows": 2, "cols": 2, "overlap_ratio": 0.25, "window": "cosine",
                             "upsample": "guided"}).guided_radius == Tiling().guided_radius
    assert not Tiling().low_res and Tiling(upsample="joint_bilateral").low_res
    assert Tiling(upsample="guided", snap=0.1).snap == 0.1
    for bad in (dict(guided_step=0), dict(guided_radius=100), dict(guided_eps=0.0)):
        with pytest.raises(ValueError, match="guided"):
            Tiling(upsample="guided", **bad)


@needs_native
def test_stitch_low_is_a_low_resolution_stitch_then_the_upsampling() -> None:
    rng = np.random.default_rng(2)
    grid = TileGrid.from_overlap_ratio(90, 160, 2, 3, 0.25)
    tiles = rng.uniform(1, 40, (len(grid), 1, 20, 30)).astype(np.float32)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    policy = Tiling(upsample="guided", guided_step=2, guided_radius=2, guided_eps=1e-4)
    low_size = grid.tile_resolution(20, 30)
    got, valid = tiling.stitch_low(tiles, grid.boxes, image, low_size, policy)
    h, w = low_size
    bx = np.asarray(grid.boxes, np.float64) * np.array([h / 90, w / 160, h / 90, w / 160])
    low = tiling.stitch(tiles, bx, h, w, policy.window)[0]
    want, want_valid = tiling.guided_upsample(low, None, image, 2, 2, 1e-4)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(valid, want_valid)
    with pytest.raises(ValueError, match="low resolution"):
        tiling.stitch_low(tiles, grid.boxes, image, low_size, dataclasses.replace(policy, upsample="bilinear"))


def test_a_colour_the_windows_never_saw_does_not_extrapolate() -> None:
    # A smooth colour ramp whose depth follows it (so the fit's slope is steep), and single bright
    # frame pixels the pooled guide averages away: the fit, evaluated at their colour, would put
    # them far beyond any depth in the map. They stay within the map's range.
    height, width, h, w = 120, 160, 30, 40
    ramp = np.linspace(0.3, 0.5, width)[None, :] * np.ones((height, 1))
    image = np.repeat((255 * ramp)[..., None], 3, axis=2).astype(np.uint8)
    image[::17, ::13] = 255
    depth = np.exp(tiling.crop_resize(ramp.astype(np.float32)[None] * 10, [[0, 0, height, width]], (h, w))[0, 0])
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    for got, _ in (tiling.guided_upsample(depth, None, image, 2, 3, 1e-5),
                   (fast_guided_upsample(depth, tiling.crop_resize(image, [[0, 0, height, width]], (h, w))[0],
                                         image, 2, 3, 1e-5), None)):
        assert depth.min() * 0.999 <= got.min() and got.max() <= depth.max() * 1.001
        assert got[::17, ::13].max() >= 0.99 * got.max()  # the dots sit at the range's far end
