"""Procedural camera trajectories: the scene of render_scene, exact poses, moving objects, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth import metrics as M
from edgedepth.datasets import check_sample, render_scene
from edgedepth.datasets.trajectory import DEFAULT_SPEED, Motion, camera_pose, render_trajectory

H, W = 54, 96


@pytest.mark.parametrize("layout", ["street", "indoor"])
def test_a_still_camera_sees_render_scenes_scene(layout):
    still = Motion(speed=0.0, pan=0.0, shake=0.0, movers=0)
    frames = list(render_trajectory(5, H, W, layout, 2, motion=still))
    scene = render_scene(5, H, W, layout)
    for f in frames:
        np.testing.assert_array_equal(f.sample["image"], scene["image"])
        np.testing.assert_array_equal(f.sample["depth"], scene["depth"])
        assert not f.moving.any()


@pytest.mark.parametrize("layout", ["street", "indoor"])
def test_frames_follow_the_poses_and_are_deterministic(layout):
    frames = list(render_trajectory(7, H, W, layout, 4))
    again = list(render_trajectory(7, H, W, layout, 4))
    for i, (f, g) in enumerate(zip(frames, again)):
        check_sample(f.sample)
        assert f.sample["name"] == f"{layout}_00000007_{i:04d}"
        np.testing.assert_array_equal(f.sample["image"], g.sample["image"])
        np.testing.assert_array_equal(f.pose, g.pose)
        assert f.pose.shape == (4, 4) and np.allclose(f.pose[:3, :3] @ f.pose[:3, :3].T, np.eye(3))
    steps = np.diff([f.pose[2, 3] for f in frames])
    np.testing.assert_allclose(steps, DEFAULT_SPEED[layout])  # forward along the world z axis
    # the ground truth of consecutive frames agrees once the camera's motion is undone
    flicker = M.sequence_flicker([f.sample["depth"] for f in frames], [f.sample["depth"] for f in frames],
                                 frames[0].sample["intrinsics"], [f.pose for f in frames], [~f.moving for f in frames])
    assert flicker < 1e-3


def test_moving_objects_move_and_are_marked():
    frames = list(render_trajectory(12, H, W, "street", 6, motion=Motion(speed=0.0, pan=0.0, shake=0.0)))
    assert all(f.moving.any() for f in frames)
    # the camera stands still: only the marked pixels change
    changed = frames[0].sample["depth"] != frames[-1].sample["depth"]
    assert changed.any() and not (changed & ~(frames[0].moving | frames[-1].moving)).any()


def test_camera_pose_of_a_camera():
    from edgedepth.datasets.procedural import Camera

    cam = Camera((1.0, 2.0, 3.0), yaw=0.3)
    pose = camera_pose(cam)
    np.testing.assert_allclose(pose[:3, :3], cam.rotation())
    np.testing.assert_allclose(pose[:3, 3], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("kwargs, match", [
    ({"layout": "forest"}, "layout"), ({"frames": 0}, "frames"), ({"height": 0}, "height"), ({"seed": -1}, "seed"),
])
def test_bad_arguments(kwargs, match):
    args = {"seed": 1, "height": H, "width": W, "layout": "street", "frames": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        next(render_trajectory(**args))
    with pytest.raises(ValueError, match="speed"):
        Motion(speed=-1.0)
