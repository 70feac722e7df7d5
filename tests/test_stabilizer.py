"""The temporal stabiliser on procedural camera trajectories with exact depth: flicker falls, accuracy
holds, moving objects and scene cuts are left alone; and the flicker metric itself."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth import metrics as M
from edgedepth.datasets import render_scene
from edgedepth.datasets.trajectory import Motion, render_trajectory
from edgedepth.stabilizer import Stabilizer, StabilizerConfig

H, W = 120, 208


@pytest.fixture(scope="module")
def street():
    return list(render_trajectory(12, H, W, "street", 10, motion=Motion(movers=2)))


def _noisy(frames, sigma=0.04, seed=0):
    """Ground truth times a smooth random error field drawn anew every frame: a flickering model."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        field = cv2.resize(rng.normal(0, sigma, (4, 6)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
        out.append((f.sample["depth"] * np.exp(field)).astype(np.float32))
    return out


def _flicker(seq, frames):
    return M.sequence_flicker(seq, [f.sample["depth"] for f in frames], frames[0].sample["intrinsics"],
                              [f.pose for f in frames], [~f.moving for f in frames])


def _absrel(seq, frames, mask=None):
    return np.mean([M.compute_metrics(d, f.sample["depth"], None if mask is None else mask(f), boundary=False)["abs_rel"]
                    for d, f in zip(seq, frames)])


def _stabilize(seq, frames, config=StabilizerConfig()):
    st = Stabilizer(config)
    return [st(f.sample["image"], d, d > 0, f.sample["intrinsics"]) for d, f in zip(seq, frames)]


def test_flicker_metric_on_exact_and_flickering_depth(street):
    a, b = street[3], street[4]
    args = (b.sample["depth"], a.sample["depth"], b.sample["intrinsics"], b.pose, a.pose)
    gt_now, gt_before = b.sample["depth"], a.sample["depth"]
    assert M.temporal_flicker(gt_now, gt_before, *args) < 1e-3  # the world is static, the camera moved
    assert M.temporal_flicker(1.3 * gt_now, 1.3 * gt_before, *args) < 1e-3  # a constant bias is not flicker
    assert M.temporal_flicker(1.05 * gt_now, gt_before, *args) == pytest.approx(np.log(1.05), rel=0.02)
    # a model whose output froze while the camera drove on flickers by the depth change of the motion
    assert M.temporal_flicker(gt_before, gt_before, *args) > 0.01
    with pytest.raises(ValueError, match="share one shape"):
        M.temporal_flicker(gt_now[:-1], gt_before, *args)


def test_stabilizer_halves_flicker_without_costing_accuracy(street):
    noisy = _noisy(street)
    stable = _stabilize(noisy, street)
    before, after = _flicker(noisy, street), _flicker(stable, street)
    assert after < 0.5 * before, (before, after)
    assert _absrel(stable, street) <= 1.02 * _absrel(noisy, street)
    np.testing.assert_array_equal(stable[0], noisy[0])  # nothing to go on yet
    assert all(s.dtype == np.float32 and np.isfinite(s).all() for s in stable)


def test_moving_objects_are_not_smeared(street):
    assert all(f.moving.any() for f in street[4:])
    noisy = _noisy(street, seed=1)
    stable = _stabilize(noisy, street)
    on_movers = lambda f: f.moving & (f.sample["depth"] > 0)  # noqa: E731
    assert _absrel(stable[4:], street[4:], on_movers) <= 1.1 * _absrel(noisy[4:], street[4:], on_movers)


def test_a_scene_cut_passes_through():
    frames = list(render_trajectory(3, H, W, "street", 4))
    other = render_scene(8, H, W, "indoor")
    st = Stabilizer()
    for f in frames:
        st(f.sample["image"], f.sample["depth"], f.sample["depth"] > 0, f.sample["intrinsics"])
    cut = other["depth"] * np.float32(1.1)
    out = st(other["image"], cut, cut > 0, other["intrinsics"])
    np.testing.assert_allclose(out, cut, rtol=1e-6)


def test_invalid_pixels_pass_through_and_never_feed_the_history(street):
    noisy = _noisy(street, seed=2)
    st = Stabilizer()
    for d, f in zip(noisy, street):
        valid = d > 0
        valid[:, : W // 4] = False  # e.g. beyond the bundle's range: whatever value it holds stays
        out = st(f.sample["image"], d, valid, f.sample["intrinsics"])
        np.testing.assert_array_equal(out[~valid], d[~valid])


def test_bad_arguments_name_the_problem(street):
    f = street[0]
    st = Stabilizer()
    with pytest.raises(ValueError, match="share H and W"):
        st(f.sample["image"][:-1], f.sample["depth"], f.sample["depth"] > 0, f.sample["intrinsics"])
    with pytest.raises(ValueError, match="intrinsics"):
        st(f.sample["image"], f.sample["depth"], f.sample["depth"] > 0, np.eye(2))
    for bad in ({"strength": 1.0}, {"max_tolerance": 0.01}, {"work_width": 8}, {"min_inliers": 2.0}):
        with pytest.raises(ValueError):
            StabilizerConfig(**bad)
