"""Runtime(refine=False), the coarse-only operating point: the coarse depth upsampled to the frame and
finished as a refined map is (finite, >= 0, valid mask, focal rescale), on numpy and torch ops."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth import Runtime, tiling
from edgedepth.datasets import render_scene


@pytest.fixture(scope="module")
def frame():
    return render_scene(7, 240, 320, layout="street")["image"]


def _upsampled(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    ch, cw = coarse.shape
    return tiling.crop_resize(coarse[None], [[0, 0, ch, cw]], (height, width))[0, 0]


def test_coarse_only_is_the_upsampled_coarse_depth(frame):
    rt = Runtime(backend="onnxruntime", threads=1, refine=False, upsample="bilinear")
    result = rt.predict(frame)
    assert result.depth.shape == (240, 320) and result.depth.dtype == np.float32 and result.grid is None
    assert np.isfinite(result.depth).all() and (result.depth >= 0).all() and result.valid.dtype == bool
    assert result.timings["refine"] == 0.0
    # The coarse map in the result is finished (same rescale), so upsampling it gives the depth.
    np.testing.assert_allclose(result.depth, _upsampled(result.coarse, 240, 320), rtol=1e-5, atol=1e-5)
    refined = Runtime(backend="onnxruntime", threads=1).predict(frame)
    assert np.abs(refined.depth - result.depth).mean() > 1e-3  # the refiner was skipped, not run


@pytest.mark.parametrize("upsample", [None, "joint_bilateral"])
def test_coarse_only_follows_the_low_resolution_upsampling(frame, upsample):
    # The default bundle assembles frames with the guided-filter upsampling; coarse-only does too,
    # and with the joint bilateral one when asked for it.
    rt = Runtime(backend="onnxruntime", threads=1, refine=False, upsample=upsample)
    assert rt.tiling.upsample == (upsample or "guided")
    result = rt.predict(frame)
    guide = tiling.crop_resize(frame, [[0, 0, 240, 320]], result.coarse.shape)[0]
    # The 4:3 frame keeps its aspect in the coarse input (coarse.fit "pad"), so its depth carries a
    # scale (fx_scale, the share of the input's width it fills); the range check precedes the scale.
    assert result.fx_scale == pytest.approx(round(128 * 320 / 240) / 224)
    raw = np.ascontiguousarray(result.coarse / np.float32(result.fx_scale), dtype=np.float32)
    want, want_valid = tiling.upsample(raw, guide, frame, rt.tiling, scale=result.fx_scale,
                                       valid_max=rt.valid_max_depth)
    np.testing.assert_allclose(result.depth, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.valid, want_valid)
    assert np.abs(result.depth - _upsampled(result.coarse, 240, 320)).max() > 0.1  # not the bilinear resize


def test_coarse_only_rescales_for_the_focal_length(frame):
    rt = Runtime(backend="onnxruntime", threads=1, refine=False)
    fx = rt.bundle.fx_norm * 320
    near, far = rt.predict(frame, intrinsics=fx), rt.predict(frame, intrinsics=2 * fx)
    assert far.fx_scale == pytest.approx(2 * near.fx_scale)
    assert far.valid.mean() > 0.5
    np.testing.assert_allclose(far.depth[far.valid], 2 * near.depth[far.valid], rtol=1e-5)


def test_coarse_only_on_torch_ops(exported_bundle, frame):
    pytest.importorskip("torch")
    result = Runtime(exported_bundle, backend="torch", device="cpu", refine=False).predict(frame)
    assert result.depth.shape == (240, 320) and np.isfinite(result.depth).all() and result.grid is None
    np.testing.assert_allclose(result.depth, _upsampled(result.coarse, 240, 320), rtol=1e-4, atol=1e-4)


def test_refine_must_be_a_bool():
    with pytest.raises(TypeError, match="refine must be True or False"):
        Runtime(backend="onnxruntime", refine="no")
