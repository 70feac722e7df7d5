"""Procedural video: a camera moving through one procedural scene, with moving objects, exact depth
and ground-truth camera poses (what a temporal-stability benchmark needs).

The static scene of ``render_trajectory(seed, h, w, layout)`` is the scene of
``render_scene(seed, h, w, layout)`` (same builder, same random stream) less whatever stands in the
camera's path (a parked car on the road, a table in the room), seen first from the builder's camera.
The camera then moves forward along the world z axis (down the street, into the room) with a slow pan
and a little shake (road bumps, a hand-held walk); a few objects move through the scene on their own
(cars in the lanes beside the camera, balls rolling across the room), so that a temporal filter can
be checked for smearing them.

Poses are camera-to-world 4x4 matrices in the generator's world frame (y down, the OpenCV camera
axes: x right, y down, z forward): a world point X is seen at camera coordinates R^T (X - o).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from .procedural import (_LAYOUT_BUILDERS, FX_NORM, LAYOUTS, MAX_DEPTH, Box, Camera, Plane, Scene, Sphere, _mat,
                         render)
from .sample import Sample
from .textures import Material, noise_tile

#: Metres per frame the camera moves when Motion.speed is None: ~22 km/h and a slow walk at 10 fps.
DEFAULT_SPEED = {"street": 0.6, "indoor": 0.06}


@dataclass(frozen=True)
class Motion:
    """How the camera and the objects move, per frame.

    speed: metres per frame along the camera's heading; None = the layout's ``DEFAULT_SPEED``.
    pan: amplitude in radians of a slow sinusoidal yaw (one period per ``pan_period`` frames).
    shake: amplitude in radians of a quick pitch/roll jitter.
    movers: number of independently moving objects (cars on a street, balls in a room).
    """

    speed: Optional[float] = None
    pan: float = 0.06
    pan_period: int = 48
    shake: float = 0.003
    movers: int = 2

    def __post_init__(self) -> None:
        if self.speed is not None and not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed must be >= 0 metres per frame, got {self.speed}")
        if not (self.pan >= 0 and self.shake >= 0 and self.pan_period >= 1 and self.movers >= 0):
            raise ValueError(f"pan, shake and movers must be >= 0 and pan_period >= 1, got {self}")


@dataclass
class VideoFrame:
    """One frame of a procedural video.

    sample: the frame (image HxWx3 uint8 RGB, depth HxW float32 z-depth metres, 0 = sky/beyond the
        range, intrinsics 3x3, mask None, name ``"{layout}_{seed:08d}_{index:04d}"``).
    pose: (4, 4) float64 camera-to-world.
    moving: (H, W) bool, True on pixels that show a moving object.
    """

    sample: Sample
    pose: np.ndarray
    moving: np.ndarray


def camera_pose(camera: Camera) -> np.ndarray:
    """(4, 4) float64 camera-to-world matrix of a procedural camera."""
    pose = np.eye(4)
    pose[:3, :3] = camera.rotation()
    pose[:3, 3] = camera.position
    return pose


@dataclass
class _Mover:
    parts: list  # primitives at frame 0
    velocity: np.ndarray  # metres per frame, world

    def at(self, k: int) -> list:
        shift = self.velocity * k
        return [dataclasses.replace(p, center=tuple(float(c) for c in np.asarray(p.center) + shift))
                for p in self.parts]


def _ground(scene: Scene) -> float:
    floor = scene.primitives[0]  # both builders put the ground / floor plane first
    assert isinstance(floor, Plane) and floor.normal == (0.0, 1.0, 0.0)
    return float(floor.offset)


def _clear_path(scene: Scene, travel: float) -> list:
    """The scene's primitives less those standing in the box the camera sweeps (0.6 m either side,
    from 0.5 m above it down to 5 cm above the ground, 1 m behind the start to 1 m beyond the end)."""
    x0, _, z0 = scene.camera.position
    lo = np.array([x0 - 0.6, -0.5, z0 - 1.0])
    hi = np.array([x0 + 0.6, _ground(scene) - 0.05, z0 + travel + 1.0])
    kept = []
    for prim in scene.primitives:
        b = prim.bounds()
        if b is None or not (np.all(b[0] <= hi) and np.all(b[1] >= lo)):
            kept.append(prim)
    return kept


def _street_movers(rng: np.random.Generator, scene: Scene, count: int) -> list[_Mover]:
    g = _ground(scene)
    movers = []
    for _ in range(count):
        side = rng.choice([-1.0, 1.0])
        # a lane beside the camera's: the car's inner side stays >= 1.3 m from the camera's path
        x = scene.camera.position[0] + side * rng.uniform(2.2, 2.8)
        z = rng.uniform(8.0, 30.0)
        paint = _mat(rng, "plain", tuple(rng.uniform(0.15, 0.9, 3)))
        body = Box((float(x), g - 0.75, float(z)), (0.9, 0.4, 2.1), paint)
        cabin = Box((float(x), g - 1.35, float(z + 0.2)), (0.8, 0.25, 1.1),
                    Material("plain", (0.1, 0.12, 0.15), (0.1, 0.12, 0.15), 1.0, 0.1))
        speed = rng.uniform(0.3, 0.9) * (1 if side > 0 else -1)  # right lane away, left lane towards
        movers.append(_Mover([body, cabin], np.array([0.0, 0.0, speed])))
    return movers


def _indoor_movers(rng: np.random.Generator, scene: Scene, count: int) -> list[_Mover]:
    g = _ground(scene)
    movers = []
    for _ in range(count):
        r = rng.uniform(0.15, 0.3)
        z = rng.uniform(2.0, 4.5)
        direction = rng.choice([-1.0, 1.0])
        ball = Sphere((float(-direction * rng.uniform(0.5, 1.5)), g - r, float(z)), float(r),
                      _mat(rng, "checker", tuple(rng.uniform(0.3, 0.9, 3)), scale=float(r)))
        movers.append(_Mover([ball], np.array([direction * rng.uniform(0.04, 0.1), 0.0, rng.uniform(-0.03, 0.03)])))
    return movers


_MOVERS = {"street": _street_movers, "indoor": _indoor_movers}


def render_trajectory(seed: int, height: int, width: int, layout: str = "street", frames: int = 24, *,
                      motion: Motion = Motion(), fx_norm: float = FX_NORM,
                      max_depth: float = MAX_DEPTH) -> Iterator[VideoFrame]:
    """Render ``frames`` consecutive frames of a camera moving through scene ``seed``; deterministic.

    Yields VideoFrame(sample, pose, moving) one frame at a time (each costs a ``render_scene``).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not (isinstance(frames, (int, np.integer)) and frames >= 1):
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if not (isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))) or height < 1 or width < 1:
        raise ValueError(f"height and width must be positive integers, got {height!r} x {width!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    # The static scene and its texture tile exactly as render_scene draws them.
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), LAYOUTS.index(layout)]))
    scene = _LAYOUT_BUILDERS[layout](rng, unreliable=False, fx_norm=fx_norm)
    tile = noise_tile(rng)
    # Everything that moves draws from its own stream, so the static scene never depends on it.
    mrng = np.random.default_rng(np.random.SeedSequence([int(seed), LAYOUTS.index(layout), 1]))
    movers = _MOVERS[layout](mrng, scene, motion.movers)
    speed = DEFAULT_SPEED[layout] if motion.speed is None else motion.speed
    phase = mrng.uniform(0, 2 * math.pi, 4)
    scene = dataclasses.replace(scene, primitives=_clear_path(scene, speed * (int(frames) - 1)))
    start = scene.camera
    static = len(scene.primitives)
    for k in range(int(frames)):
        position = np.asarray(start.position, np.float64) + np.array([0.0, 0.0, speed * k])
        yaw = start.yaw + motion.pan * math.sin(2 * math.pi * k / motion.pan_period + phase[0])
        # incommensurate sines: a shake that never repeats within a sequence
        pitch = motion.shake * (math.sin(1.9 * k + phase[1]) + math.sin(0.7 * k + phase[2]))
        roll = motion.shake * math.sin(1.3 * k + phase[3])
        camera = dataclasses.replace(start, position=tuple(float(v) for v in position), yaw=yaw,
                                     pitch=start.pitch + pitch, roll=start.roll + roll)
        moving_parts = [p for m in movers for p in m.at(k)]
        frame_scene = dataclasses.replace(scene, camera=camera, primitives=scene.primitives + moving_parts)
        image, depth, K, _, ids = render(frame_scene, int(height), int(width), max_depth=max_depth, noise=tile,
                                         return_ids=True)
        sample = Sample(image=image, depth=depth, intrinsics=K, mask=None,
                        name=f"{layout}_{int(seed):08d}_{k:04d}")
        yield VideoFrame(sample=sample, pose=camera_pose(camera), moving=ids >= static)
