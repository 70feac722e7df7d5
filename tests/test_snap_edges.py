"""Edge snapping (tiling.snap_edges, Tiling.snap): native, torch and numpy engines agree bit for bit,
blurred steps become steps on the side their colour says, slopes and invalid depth are left alone."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edgedepth import native, tiling, tiling_torch
from edgedepth import tiling_reference as ref
from edgedepth.tiling import Tiling

needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")


def _blurred_step(h: int = 20, w: int = 31, edge: int = 15):
    """A near (2 m, dark) wall left of column ``edge`` and a far (6 m, bright) one right of it, the
    depth ramping through one pixel between them as a regressor's output does; the guide is sharp."""
    guide = np.zeros((3, h, w), np.float32)
    guide[:, :, edge:] = 0.9
    guide[:, :, :edge] = 0.1
    ramp = np.interp(np.arange(w), [edge - 1.5, edge + 0.5], [2.0, 6.0]).astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(ramp, (h, w))), guide


def _engines(depth, guide, contrast):
    got = {"reference": ref.snap_edges(depth, guide, contrast),
           "torch": tiling_torch.snap_edges(torch.from_numpy(depth), torch.from_numpy(guide), contrast).numpy()}
    if native.cpu is not None:
        got["native"] = tiling.snap_edges(depth, guide, contrast, threads=1)
        got["native, 3 threads"] = tiling.snap_edges(depth, guide, contrast, threads=3)
    return got


def test_a_blurred_step_becomes_a_step_on_the_colour_edge() -> None:
    depth, guide = _blurred_step()
    for name, got in _engines(depth, guide, 0.1).items():
        # every pixel on one of the two surfaces, the dark ones near, the bright ones far, except in
        # the two outermost rows (their 5x5 would be clipped by the border)
        inner = got[2:-2]
        np.testing.assert_array_equal(inner[:, :15] == 2.0, np.ones((16, 15), bool), err_msg=name)
        np.testing.assert_array_equal(inner[:, 15:] == 6.0, np.ones((16, 16), bool), err_msg=name)
        np.testing.assert_array_equal(got[[0, 1, -2, -1]], depth[[0, 1, -2, -1]], err_msg=name)
    assert len(np.unique(depth[0])) > 2  # the input really had pixels between the surfaces


def test_slopes_and_low_contrast_are_left_alone() -> None:
    # A ground plane: 4 % more depth per pixel (a 3x3 ratio of 1.08 < e^0.1), and a steep slope
    # of 12 % per pixel whose 5x5 ratio grows like a slope's (no level ground beside it).
    gentle = np.tile((5.0 * 1.04 ** np.arange(24)).astype(np.float32)[:, None], (1, 17))
    steep = np.tile((5.0 * 1.12 ** np.arange(24)).astype(np.float32)[:, None], (1, 17))
    guide = np.random.default_rng(0).uniform(0, 1, (3, 24, 17)).astype(np.float32)
    for depth in (gentle, steep):
        for name, got in _engines(np.ascontiguousarray(depth), guide, 0.1).items():
            np.testing.assert_array_equal(got, depth, err_msg=name)


def test_invalid_depth_nearby_leaves_pixels_alone() -> None:
    depth, guide = _blurred_step()
    depth[10, 20] = np.nan
    depth[3, 17] = 0.0
    for name, got in _engines(depth, guide, 0.1).items():
        # rows within two of a bad pixel whose 5x5 reaches it keep their blur
        assert got[10, 16] == depth[10, 16] and got[3, 15] == depth[3, 15], name
        assert np.isnan(got[10, 20]) and got[3, 17] == 0.0, name
        assert got[16, 14] == 2.0 and got[16, 15] == 6.0, name  # far from them: snapped


def test_engines_agree_bit_for_bit_on_random_maps() -> None:
    rng = np.random.default_rng(3)
    for h, w in ((1, 1), (1, 7), (5, 2), (23, 41)):
        # piecewise-constant surfaces, blurred: many steps, ties among the extremes, odd borders
        base = rng.choice(np.array([1.5, 3.0, 3.0, 9.0], np.float32), size=(h, w))
        depth = base.copy()
        if h > 2 and w > 2:
            depth[1:-1, 1:-1] = (base[:-2, 1:-1] + base[2:, 1:-1] + base[1:-1, :-2] + base[1:-1, 2:]) / 4
        guide = rng.uniform(0, 1, (3, h, w)).astype(np.float32)
        got = _engines(np.ascontiguousarray(depth), guide, 0.05)
        for name, out in got.items():
            np.testing.assert_array_equal(out, got["reference"], err_msg=f"{name} {h}x{w}")


def test_refusals() -> None:
    depth, guide = _blurred_step()
    with pytest.raises(ValueError, match="contrast"):
        tiling.snap_edges(depth, guide, 0.0)
    with pytest.raises(ValueError, match="contrast"):
        tiling.snap_edges(depth, guide, float("nan"))
    with pytest.raises(ValueError, match="guide"):
        tiling.snap_edges(depth, guide[:2], 0.1)
    with pytest.raises(TypeError, match="depth"):
        tiling.snap_edges(depth.astype(np.float64), guide, 0.1)
    with pytest.raises(ValueError, match="joint_bilateral"):
        Tiling(snap=0.1)
    with pytest.raises(ValueError, match="contrast"):
        Tiling(upsample="joint_bilateral", snap=-1.0)
    cfg = Tiling(upsample="joint_bilateral", snap=0.1)
    assert Tiling.from_json(cfg.to_json()) == cfg
    assert Tiling.from_json(dataclasses.replace(cfg, snap=0.0).to_json()).snap == 0.0


@needs_native
def test_stitch_joint_snaps_before_upsampling() -> None:
    # One tile holding the blurred step, upsampled x2: with snapping no output pixel lies strictly
    # between the two walls; without it the ramp survives the joint upsampling.
    depth, guide = _blurred_step(20, 31)
    image = np.ascontiguousarray((np.repeat(np.repeat(guide, 2, 1), 2, 2).transpose(1, 2, 0) * 255).astype(np.uint8))
    tiles = depth[None, None]
    boxes = [[0.0, 0.0, 40.0, 62.0]]
    snapped, _ = tiling.stitch_joint(tiles, boxes, image, (20, 31), 0.05, snap=0.1)
    plain, _ = tiling.stitch_joint(tiles, boxes, image, (20, 31), 0.05)
    # rows whose taps are all inner rows of the map; 2.05..5.95 allows for the 1e-4 range floor
    between = lambda d: np.mean((d[6:-6] > 2.05) & (d[6:-6] < 5.95))  # noqa: E731
    assert between(snapped) == 0.0 and between(plain) > 0.01


@needs_native
def test_native_module_checks_its_arguments_itself() -> None:
    depth, guide = _blurred_step()
    cpu = native.cpu
    for bad in ((depth.astype(np.float64), guide, 0.1), (depth, guide[:, :-1], 0.1), (depth, guide, 0.0),
                (depth, guide, float("inf")), (depth[:, ::2], guide, 0.1), (depth[None], guide, 0.1),
                (depth, guide.astype(np.float16), 0.1)):
        with pytest.raises(ValueError):
            cpu.snap_edges(*bad, 1)
    with pytest.raises(ValueError):
        cpu.snap_edges(depth, guide, 0.1, 0)
