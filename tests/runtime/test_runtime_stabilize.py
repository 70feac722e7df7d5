"""``Runtime.stream`` stabilises consecutive frames by default; ``stabilize=False`` gives ``predict``'s results."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.datasets.trajectory import render_trajectory
from edgedepth.pointcloud import default_intrinsics
from edgedepth.stabilizer import Stabilizer, StabilizerConfig


@pytest.fixture(scope="module")
def video():
    return [f.sample for f in render_trajectory(4, 72, 128, "street", 5)]


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    return Runtime(tiny_bundle, backend="onnxruntime", threads=1)


def test_stream_is_stabilised_by_default(rt, video):
    images = [s["image"] for s in video]
    k = video[0]["intrinsics"]
    raw = [rt.predict(i, k) for i in images]
    streamed = list(rt.stream(images, intrinsics=k))
    # the very stabiliser, fed the raw results in order, is what the stream hands back
    st = Stabilizer()
    expected = [st(i, r.depth, r.valid, k) for i, r in zip(images, raw)]
    for got, want, r in zip(streamed, expected, raw):
        np.testing.assert_allclose(got.depth, want, rtol=1e-6)
        np.testing.assert_array_equal(got.valid, r.valid)
        assert got.timings["stabilize"] >= 0
        assert got.timings["total"] == pytest.approx(sum(got.timings[s] for s in
                                                          ("preprocess", "coarse", "crop", "refine", "stitch", "stabilize")))
    np.testing.assert_array_equal(streamed[0].depth, raw[0].depth)
    assert any(not np.array_equal(s.depth, r.depth) for s, r in zip(streamed[1:], raw[1:]))
    unstabilised = list(rt.stream(images, intrinsics=k, stabilize=False))
    for got, r in zip(unstabilised, raw):
        np.testing.assert_array_equal(got.depth, r.depth)
        assert "stabilize" not in got.timings
    np.testing.assert_array_equal(rt.predict_batch(images, k)[-1].depth, raw[-1].depth)  # independent frames


def test_stream_without_intrinsics_uses_the_bundle_camera(rt, video):
    images = [s["image"] for s in video]
    h, w = images[0].shape[:2]
    k = default_intrinsics(h, w, rt.bundle.fx_norm)
    config = StabilizerConfig(strength=0.5)
    expected = [r.depth for r in rt.stream(images, intrinsics=k, stabilize=config)]
    # no intrinsics: the bundle's camera; fx alone: that focal length, principal point at the centre
    for intrinsics in (None, k[0, 0]):
        got = [r.depth for r in rt.stream(images, intrinsics=intrinsics, stabilize=config)]
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_bad_stabilize_argument(rt, video):
    with pytest.raises(TypeError, match="stabilize must be True, False or a StabilizerConfig"):
        next(rt.stream([video[0]["image"]], stabilize="yes"))
