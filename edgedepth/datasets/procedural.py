"""Procedural scenes with exact metric depth, rendered by vectorised numpy ray casting.

A scene is a list of analytic primitives (planes, yaw-rotated boxes, spheres, finite cylinders
of any axis) built from a seeded layout ("street" or "indoor"). Each primitive is intersected
with every ray inside its screen-space bounding box only, keeping a running minimum depth and
the index of the nearest primitive; a second pass shades each primitive's pixels (world-space
texture, Lambertian sun + hemisphere ambient, fog). Rows are processed in strips so the working
set stays in cache and a 4K frame needs ~100 MB.

Camera convention (OpenCV): x right, y down, z forward; pixel (i, j) looks along
((j - cx)/fx, (i - cy)/fy, 1) with cx = (W-1)/2, cy = (H-1)/2, fx = fy = FX_NORM * W.
Depth is the z distance in the camera frame (not the range along the ray), float32 metres,
0 where invalid (nearer than ``min_depth``; sky and beyond ``max_depth`` too, unless ``far_depth``
is given: then those pixels read ``far_depth``, the "beyond range" value models learn for the sky).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np

from .sample import Sample
from .textures import Material, albedo, noise_tile

#: Default focal length over image width (fx / W): ~64 degree horizontal FOV. The trained model's
#: camera is recorded from this (checkpoint and bundle ``camera.fx_norm``).
FX_NORM = 0.8
MIN_DEPTH = 0.5  # metres; nearer hits are marked invalid
MAX_DEPTH = 80.0  # metres; farther hits (and sky) are marked invalid
LAYOUTS = ("street", "indoor")
#: Stream ``seed``'s frame ``i`` is scene seed ``seed * SEED_STRIDE + i``: streams far enough apart
#: that no two seeds below a million frames share a scene.
SEED_STRIDE = 1_000_003
_NEAR = 1e-3
_STRIP = 96  # rows per strip


# ----------------------------------------------------------------------------- rays


class _Rays:
    """Rays of one rectangular pixel region: origin ``o`` (3,) and direction components (h, w)
    float32 with z = 1 in the camera frame, so the hit parameter t is the camera depth."""

    __slots__ = ("o", "dx", "dy", "dz", "dd")

    def __init__(self, o, dx, dy, dz):
        self.o = o
        self.dx, self.dy, self.dz = dx, dy, dz
        self.dd = dx * dx + dy * dy + dz * dz

    def point(self, t):
        return (self.o[0] + t * self.dx, self.o[1] + t * self.dy, self.o[2] + t * self.dz)


def _miss(t, ok):
    return np.where(ok & (t > _NEAR), t, np.float32(np.inf)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- primitives


@dataclass
class Plane:
    """Infinite plane n . x = offset."""

    normal: tuple[float, float, float]
    offset: float
    material: Material

    def bounds(self):
        return None

    def hit(self, r: _Rays):
        n = self.normal
        denom = n[0] * r.dx + n[1] * r.dy + n[2] * r.dz
        num = self.offset - (n[0] * r.o[0] + n[1] * r.o[1] + n[2] * r.o[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = num / denom
        return _miss(t, np.abs(denom) > 1e-9)

    def surface(self, p):
        n = np.broadcast_to(np.asarray(self.normal, np.float32), p.shape)
        return n, p


@dataclass
class Box:
    """Box of half-size ``half`` centred at ``center``, rotated by ``yaw`` (radians) about y.
    ``slats`` = (period, duty) makes it a picket fence: only the fraction ``duty`` of every
    ``period`` metres along its local x is solid (plus two rails) — see-through fine detail."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    material: Material
    yaw: float = 0.0
    slats: Optional[tuple[float, float]] = None

    def _rot(self):
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)  # local -> world

    def bounds(self):
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float32)
        world = corners * np.asarray(self.half, np.float32) @ self._rot().T + np.asarray(self.center, np.float32)
        return world.min(0), world.max(0)

    def hit(self, r: _Rays):
        R = self._rot()
        c = np.asarray(self.center, np.float32)
        # one origin for a camera's rays, one per ray for the sun's (3, N)
        o = R.T @ (np.asarray(r.o, np.float32) - (c if np.ndim(r.o[0]) == 0 else c[:, None]))
        d = [R[0, k] * r.dx + R[1, k] * r.dy + R[2, k] * r.dz for k in range(3)]
        tmin = np.full(r.dx.shape, -np.inf, np.float32)
        tmax = np.full(r.dx.shape, np.inf, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                inv = 1.0 / d[k]
                t1 = (-self.half[k] - o[k]) * inv
                t2 = (self.half[k] - o[k]) * inv
                np.maximum(tmin, np.minimum(t1, t2), out=tmin)
                np.minimum(tmax, np.maximum(t1, t2), out=tmax)
        ok = (tmax >= tmin) & (tmin > _NEAR)
        if self.slats is not None and ok.any():
            period, duty = self.slats
            lx = o[0] + tmin * d[0]
            ly = o[1] + tmin * d[1]
            solid = np.mod(lx / period, 1.0) < duty
            rails = (np.abs(ly + self.half[1] * 0.6) < 0.04) | (np.abs(ly - self.half[1] * 0.5) < 0.04)
            ok &= solid | rails
        return _miss(tmin, ok)

    def surface(self, p):
        R = self._rot()
        local = (p - np.asarray(self.center, np.float32)) @ R
        ratio = np.abs(local) / np.asarray(self.half, np.float32)
        axis = np.argmax(ratio, axis=1)
        n_local = np.zeros_like(local)
        n_local[np.arange(len(p)), axis] = np.sign(local[np.arange(len(p)), axis])
        return n_local @ R.T, local


@dataclass
class Sphere:
    center: tuple[float, float, float]
    radius: float
    material: Material

    def bounds(self):
        c = np.asarray(self.center, np.float32)
        return c - self.radius, c + self.radius

    def hit(self, r: _Rays):
        w = [r.o[k] - self.center[k] for k in range(3)]
        b = r.dx * w[0] + r.dy * w[1] + r.dz * w[2]
        c = w[0] ** 2 + w[1] ** 2 + w[2] ** 2 - self.radius ** 2
        disc = b * b - r.dd * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / r.dd
        return _miss(t, disc >= 0)

    def surface(self, p):
        return (p - np.asarray(self.center, np.float32)) / self.radius, p


@dataclass
class Cylinder:
    """Finite cylinder from ``start`` along unit ``axis`` for ``length`` metres; ``caps`` closes it."""

    start: tuple[float, float, float]
    axis: tuple[float, float, float]
    length: float
    radius: float
    material: Material
    caps: bool = False

    def __post_init__(self):
        a = np.asarray(self.axis, np.float64)
        self.axis = tuple(float(x) for x in a / np.linalg.norm(a))

    def bounds(self):
        p0 = np.asarray(self.start, np.float32)
        p1 = p0 + self.length * np.asarray(self.axis, np.float32)
        return np.minimum(p0, p1) - self.radius, np.maximum(p0, p1) + self.radius

    def hit(self, r: _Rays):
        a = self.axis
        w = [r.o[k] - self.start[k] for k in range(3)]
        wa = w[0] * a[0] + w[1] * a[1] + w[2] * a[2]
        wp = [w[k] - wa * a[k] for k in range(3)]
        da = r.dx * a[0] + r.dy * a[1] + r.dz * a[2]
        dp = [r.dx - da * a[0], r.dy - da * a[1], r.dz - da * a[2]]
        A = dp[0] * dp[0] + dp[1] * dp[1] + dp[2] * dp[2]
        B = dp[0] * wp[0] + dp[1] * wp[1] + dp[2] * wp[2]  # half of the usual b
        C = wp[0] ** 2 + wp[1] ** 2 + wp[2] ** 2 - self.radius ** 2
        disc = B * B - A * C
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-B - np.sqrt(disc)) / A
        s = wa + t * da
        t = _miss(t, (disc >= 0) & (s >= 0) & (s <= self.length))
        if self.caps:
            for end in (0.0, self.length):
                with np.errstate(invalid="ignore", divide="ignore"):  # rays parallel to the cap
                    tc = (end - wa) / da
                    q2 = sum((wp[k] + tc * dp[k]) ** 2 for k in range(3))
                tc = _miss(tc, q2 <= self.radius ** 2)
                np.minimum(t, tc, out=t)
        return t

    def surface(self, p):
        a = np.asarray(self.axis, np.float32)
        w = p - np.asarray(self.start, np.float32)
        s = w @ a
        radial = w - s[:, None] * a
        n = radial / self.radius
        if self.caps:
            on_cap = (s < 1e-3) | (s > self.length - 1e-3)
            n[on_cap] = np.sign(s[on_cap] - self.length / 2)[:, None] * a
        return n, p


Primitive = object  # any of Plane, Box, Sphere, Cylinder


# ----------------------------------------------------------------------------- scene


@dataclass
class Camera:
    """Pinhole camera at ``position`` (world, y down); yaw/pitch/roll in radians
    (positive pitch looks down)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    fx_norm: float = FX_NORM

    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation (3, 3) float64."""
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(-self.pitch), math.sin(-self.pitch)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        return ry @ rx @ rz

    def intrinsics(self, height: int, width: int) -> np.ndarray:
        """3x3 float64 K for an image of ``height`` x ``width`` pixels."""
        f = self.fx_norm * width
        return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


@dataclass
class Scene:
    camera: Camera
    primitives: list
    panes: list = field(default_factory=list)  # transparent boxes: seen in RGB, absent from depth
    sun: tuple[float, float, float] = (0.4, -0.8, 0.3)  # direction towards the sun (world)
    sun_strength: float = 0.8
    ambient: float = 0.35
    sky: Optional[tuple[tuple[float, float, float], tuple[float, float, float]]] = None  # horizon, zenith
    fog_distance: float = 0.0  # metres; 0 = no fog


# ----------------------------------------------------------------------------- rendering


def _screen_box(prim, K, R, o, height, width):
    """Pixel rectangle (r0, r1, c0, c1) that contains the primitive, or None if off screen."""
    b = prim.bounds()
    if b is None:
        return 0, height, 0, width
    lo, hi = b
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    cam = (corners - o) @ R  # world -> camera: R^T (p - o), written row-wise
    z = cam[:, 2]
    if (z <= _NEAR).all():
        return None
    if (z <= _NEAR).any():
        return 0, height, 0, width  # straddles the camera plane: stay conservative
    u = K[0, 0] * cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / z + K[1, 2]
    c0, c1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, width)
    r0, r1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, height)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _uv(local, n):
    """Surface coordinates by the normal's dominant axis (tri-planar projection)."""
    axis = np.argmax(np.abs(n), axis=1)
    u = np.where(axis == 0, local[:, 2], local[:, 0])
    v = np.where(axis == 1, local[:, 2], local[:, 1])
    return np.stack([u, v], axis=1)


def render(scene: Scene, height: int, width: int, max_depth: float = MAX_DEPTH,
           min_depth: float = MIN_DEPTH, noise: Optional[np.ndarray] = None, far_depth: Optional[float] = None, *,
           return_ids: bool = False, shadows: bool = False):
    """Ray-cast ``scene``: returns (image HxWx3 uint8, depth HxW float32 m, K 3x3, pane HxW bool), and
    with ``return_ids`` also the index into ``scene.primitives`` of what each pixel sees (HxW int32,
    -1 = sky): which pixels show a moving object in a rendered sequence.
    Pixels whose nearest hit lies beyond ``max_depth`` (or that hit nothing) read ``far_depth``
    when it is given, else 0. ``shadows``: every primitive but the planes casts a shadow from the
    sun (a pole's across the road, a chair's on the floor): colour edges with no depth edge that
    lie where photographs have them."""
    far = np.float32(0 if far_depth is None else far_depth)
    K = scene.camera.intrinsics(height, width)
    R = scene.camera.rotation()
    o = np.asarray(scene.camera.position, np.float64)
    tile = noise if noise is not None else noise_tile(np.random.default_rng(0))
    boxes = [_screen_box(p, K, R, o, height, width) for p in scene.primitives]
    pane_boxes = [_screen_box(p, K, R, o, height, width) for p in scene.panes]
    image = np.empty((height, width, 3), np.uint8)
    depth = np.empty((height, width), np.float32)
    pane_mask = np.zeros((height, width), bool)
    all_ids = np.empty((height, width), np.int32) if return_ids else None
    xs = ((np.arange(width) - K[0, 2]) / K[0, 0]).astype(np.float32)
    Rf = R.astype(np.float32)
    o32 = tuple(float(v) for v in o)
    sun = np.asarray(scene.sun, np.float32)
    sun /= np.linalg.norm(sun)
    occluders = _Occluders(scene.primitives, sun) if shadows else None
    for s0 in range(0, height, _STRIP):
        s1 = min(s0 + _STRIP, height)
        ys = ((np.arange(s0, s1) - K[1, 2]) / K[1, 1]).astype(np.float32)
        cx, cy = np.meshgrid(xs, ys)
        # camera (cx, cy, 1) -> world; t stays the camera depth because the camera z is 1
        dx = Rf[0, 0] * cx + Rf[0, 1] * cy + Rf[0, 2]
        dy = Rf[1, 0] * cx + Rf[1, 1] * cy + Rf[1, 2]
        dz = Rf[2, 0] * cx + Rf[2, 1] * cy + Rf[2, 2]
        t_best = np.full((s1 - s0, width), np.inf, np.float32)
        ids = np.full((s1 - s0, width), -1, np.int32)
        regions = []
        for k, (prim, box) in enumerate(zip(scene.primitives, boxes)):
            reg = _clip(box, s0, s1)
            regions.append(reg)
            if reg is None:
                continue
            r0, r1, c0, c1 = reg
            rays = _Rays(o32, dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1])
            t = prim.hit(rays)
            tb = t_best[r0:r1, c0:c1]
            closer = t < tb
            np.copyto(tb, t, where=closer)
            np.copyto(ids[r0:r1, c0:c1], np.int32(k), where=closer)
        color = _shade(scene, tile, ids, t_best, regions, o32, dx, dy, dz, sun, occluders)
        _apply_panes(scene, tile, pane_boxes, s0, s1, color, t_best, pane_mask, o32, dx, dy, dz, sun)
        srgb = np.clip(color, 0, 1) ** (1 / 2.2)
        image[s0:s1] = (srgb * 255 + 0.5).astype(np.uint8)
        d = np.where((t_best >= min_depth) & (t_best <= max_depth), t_best, np.float32(0))
        depth[s0:s1] = np.where(t_best > max_depth, far, d)
        if all_ids is not None:
            all_ids[s0:s1] = ids
    if all_ids is not None:
        return image, depth, K, pane_mask, all_ids
    return image, depth, K, pane_mask


def _clip(box, s0, s1):
    if box is None:
        return None
    r0, r1, c0, c1 = box
    r0, r1 = max(r0, s0) - s0, min(r1, s1) - s0
    return (r0, r1, c0, c1) if r0 < r1 else None


class _Occluders:
    """What can stand between a surface point and the sun: every primitive but the planes (ground,
    walls: a room's walls would put all of it in shade), each with the rectangle its bounding box
    covers seen along the sun, so that a point's shadow ray is cast only at those it could hit."""

    def __init__(self, primitives, sun):
        self.sun = sun
        helper = np.array([1.0, 0.0, 0.0] if abs(sun[0]) < 0.9 else [0.0, 1.0, 0.0], np.float32)
        e1 = np.cross(sun, helper)
        e1 /= np.linalg.norm(e1)
        self.basis = np.stack([e1, np.cross(sun, e1), sun]).astype(np.float32)  # (u, v, along the sun)
        self.items = []
        for prim in primitives:
            b = prim.bounds()
            if b is None:
                continue
            lo, hi = b
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])],
                               np.float32) @ self.basis.T
            self.items.append((prim, corners.min(0), corners.max(0)))

    def lit(self, p, n):
        """(N,) bool: the sun reaches point p (N, 3) on a surface with normal n (N, 3) facing it."""
        lit = np.ones(len(p), bool)
        if not self.items or not len(p):
            return lit
        q = p + n * np.float32(2e-3)  # off the surface, so that it does not shade itself
        uvw = q @ self.basis.T
        order = np.argsort(uvw[:, 0], kind="stable")
        u = uvw[order, 0]
        d = [np.full(len(p), c, np.float32) for c in self.sun]
        for prim, lo, hi in self.items:
            i0, i1 = np.searchsorted(u, [lo[0], hi[0]])
            idx = order[i0:i1]
            idx = idx[(uvw[idx, 1] >= lo[1]) & (uvw[idx, 1] <= hi[1]) & (uvw[idx, 2] < hi[2]) & lit[idx]]
            if not len(idx):
                continue
            rays = _Rays((q[idx, 0], q[idx, 1], q[idx, 2]), d[0][idx], d[1][idx], d[2][idx])
            lit[idx[np.isfinite(prim.hit(rays))]] = False
        return lit


def _seen(primitives, ids, t_best, regions, o, dx, dy, dz):
    """The primitives a strip's pixels see: (primitive, its region (r0, r1, c0, c1), sel (the
    region's pixels that see it), hit points p (N, 3), ray directions d (N, 3), depths t (N,))."""
    for k, (prim, reg) in enumerate(zip(primitives, regions)):
        if reg is None:
            continue
        r0, r1, c0, c1 = reg
        sel = ids[r0:r1, c0:c1] == k
        if not sel.any():
            continue
        t = t_best[r0:r1, c0:c1][sel]
        d = np.stack([dx[r0:r1, c0:c1][sel], dy[r0:r1, c0:c1][sel], dz[r0:r1, c0:c1][sel]], axis=1)
        yield prim, reg, sel, np.asarray(o, np.float32) + t[:, None] * d, d, t


def _facing_normals(prim, p, d):
    """The surface normal at p (N, 3) turned towards the camera (rays d), and the local coordinates."""
    n, local = prim.surface(p)
    n = np.asarray(n, np.float32)
    facing = np.sum(n * d, axis=1) > 0
    return np.where(facing[:, None], -n, n), local


def _in_shade(primitives, occluders, ids, t_best, regions, o, dx, dy, dz, sun):
    """(h, w) bool: pixels whose surface faces the sun but does not see it. One shadow query for
    the whole strip: the occluder loop costs per call, not per point."""
    h, w = ids.shape
    points, normals, where = [], [], []
    for prim, (r0, _, c0, _), sel, p, d, _ in _seen(primitives, ids, t_best, regions, o, dx, dy, dz):
        n, _ = _facing_normals(prim, p, d)
        toward = n @ sun > 0
        rows, cols = np.nonzero(sel)
        points.append(p[toward])
        normals.append(n[toward])
        where.append((rows[toward] + r0) * w + cols[toward] + c0)
    shade = np.zeros((h, w), bool)
    if points:
        flat = np.concatenate(where)
        shade.flat[flat[~occluders.lit(np.concatenate(points), np.concatenate(normals))]] = True
    return shade


def _shade(scene, tile, ids, t_best, regions, o, dx, dy, dz, sun, occluders=None):
    h, w = ids.shape
    color = np.empty((h, w, 3), np.float32)
    shade = None if occluders is None else _in_shade(scene.primitives, occluders, ids, t_best, regions, o, dx, dy, dz,
                                                     sun)
    sky = ids < 0
    if sky.any():
        norm = np.sqrt(dx[sky] ** 2 + dy[sky] ** 2 + dz[sky] ** 2)
        up = np.clip(-dy[sky] / norm, 0, 1)[:, None]
        horizon, zenith = scene.sky or ((0.6, 0.6, 0.6), (0.6, 0.6, 0.6))
        color[sky] = np.asarray(horizon, np.float32) * (1 - up) + np.asarray(zenith, np.float32) * up
    for prim, (r0, r1, c0, c1), sel, p, d, t in _seen(scene.primitives, ids, t_best, regions, o, dx, dy, dz):
        in_shade = None if shade is None else shade[r0:r1, c0:c1][sel]
        color[r0:r1, c0:c1][sel] = _surface_color(scene, tile, prim, p, d, t, sun, in_shade)
    return color


def _surface_color(scene, tile, prim, p, d, t, sun, in_shade=None):
    n, local = _facing_normals(prim, p, d)  # shade the side the camera sees
    alb = albedo(prim.material, _uv(local, n), tile)
    lambert = np.maximum(n @ sun, 0)
    if in_shade is not None:
        lambert[in_shade] = 0
    hemi = 0.75 - 0.25 * n[:, 1]  # up-facing (y < 0) surfaces see more sky
    col = alb * (scene.ambient * hemi + scene.sun_strength * lambert)[:, None]
    if scene.fog_distance > 0:
        fog = (1 - np.exp(-t / scene.fog_distance))[:, None]
        horizon = np.asarray((scene.sky or ((0.7, 0.7, 0.7),))[0], np.float32)
        col = col * (1 - fog) + horizon * fog
    return col


def _apply_panes(scene, tile, pane_boxes, s0, s1, color, t_best, pane_mask, o, dx, dy, dz, sun):
    # A pane tints and reflects what lies behind it; depth keeps the surface behind, and the
    # pixel is flagged unreliable (that is the ground truth Bias-Free Masking must ignore).
    for pane, box in zip(scene.panes, pane_boxes):
        reg = _clip(box, s0, s1)
        if reg is None:
            continue
        r0, r1, c0, c1 = reg
        rays = _Rays(o, dx[r0:r1, c0:c1], dy[r0:r1, c0:c1], dz[r0:r1, c0:c1])
        t = pane.hit(rays)
        sel = t < t_best[r0:r1, c0:c1]
        if not sel.any():
            continue
        d = np.stack([dx[r0:r1, c0:c1][sel], dy[r0:r1, c0:c1][sel], dz[r0:r1, c0:c1][sel]], axis=1)
        p = np.asarray(o, np.float32) + t[sel][:, None] * d
        glass = _surface_color(scene, tile, pane, p, d, t[sel], sun)
        streak = 0.25 * (np.mod((p[:, 0] + p[:, 1] + p[:, 2]) * 1.5, 1.0) < 0.15)[:, None]
        color[r0:r1, c0:c1][sel] = 0.55 * color[r0:r1, c0:c1][sel] + 0.45 * glass + streak
        pane_mask[s0 + r0 : s0 + r1, c0:c1] |= sel


# ----------------------------------------------------------------------------- layouts


def _rgb(rng, base, jitter=0.08):
    return tuple(float(np.clip(c + rng.uniform(-jitter, jitter), 0.02, 0.98)) for c in base)


def _mat(rng, pattern=None, base=(0.5, 0.5, 0.5), base2=None, scale=None):
    pattern = pattern or str(rng.choice(["noise", "stripes", "bricks", "checker", "plain"]))
    base2 = base2 or tuple(c * 0.55 for c in base)
    scale = scale or float(rng.uniform(0.08, 0.6))
    return Material(pattern, _rgb(rng, base), _rgb(rng, base2), scale, float(rng.uniform(0.15, 0.45)))


def _branches(rng, prims, start, direction, length, radius, level, bark, leaves):
    """A recursive tree of thin cylinders (branches) with a few leaf spheres at the tips."""
    direction = np.asarray(direction, float)
    direction /= np.linalg.norm(direction)
    prims.append(Cylinder(tuple(start), tuple(direction), length, radius, bark))
    end = np.asarray(start) + length * direction
    if level == 0:
        if leaves is not None and rng.random() < 0.5:
            prims.append(Sphere(tuple(end), float(length * rng.uniform(0.3, 0.6)), leaves))
        return
    for _ in range(int(rng.integers(2, 4))):
        child = direction + rng.normal(0, 0.6, 3)
        child[1] = min(child[1], -0.2)  # keep growing upwards (y down)
        _branches(rng, prims, end, child, length * rng.uniform(0.55, 0.8), max(radius * 0.6, 0.006),
                  level - 1, bark, leaves)


def _wire(prims, a, b, sag, radius, mat, segments=4):
    """A sagging cable from a to b as a chain of thin cylinders along a parabola."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pts = [a + (b - a) * s + np.array([0, sag * 4 * s * (1 - s), 0]) for s in np.linspace(0, 1, segments + 1)]
    for p, q in zip(pts[:-1], pts[1:]):
        seg = q - p
        prims.append(Cylinder(tuple(p), tuple(seg), float(np.linalg.norm(seg)), radius, mat))


def street_scene(rng: np.random.Generator, unreliable: bool = False, fx_norm: float = FX_NORM) -> Scene:
    """A street: road and sidewalks, building facades, a far backdrop, cars, poles with
    overhead wires, fences, bare trees, signs and sky. Camera 1.2-1.8 m above the road."""
    cam_h = rng.uniform(1.2, 1.8)
    cam = Camera((float(rng.uniform(-1.0, 1.0)), 0.0, 0.0), yaw=float(rng.uniform(-0.2, 0.2)),
                 pitch=float(rng.uniform(-0.02, 0.1)), roll=float(rng.uniform(-0.02, 0.02)), fx_norm=fx_norm)
    g = cam_h  # ground plane y = g (y down)
    road_half = rng.uniform(3.0, 6.0)
    walk = rng.uniform(2.0, 4.0)
    prims: list = [Plane((0.0, 1.0, 0.0), g, _mat(rng, "noise", (0.25, 0.25, 0.27), scale=2.0))]
    # lane stripes and kerbs
    stripe = Material("plain", (0.85, 0.85, 0.8), (0.85, 0.85, 0.8), 1.0, 0.2)
    for z in np.arange(rng.uniform(2, 5), 70, 6.0):
        prims.append(Box((0.0, g - 0.002, float(z)), (0.08, 0.005, 1.5), stripe))
    for side in (-1, 1):
        x = side * (road_half + walk / 2)
        prims.append(Box((x, g - 0.075, 40.0), (walk / 2, 0.075, 42.0), _mat(rng, "checker", (0.55, 0.53, 0.5), scale=0.5)))
    # facades
    for side in (-1, 1):
        z = rng.uniform(-2, 3)
        while z < 75:
            length = rng.uniform(6, 20)
            height = rng.uniform(5, 25)
            depth = rng.uniform(4, 10)
            x = side * (road_half + walk + depth / 2 + rng.uniform(0, 1.5))
            pattern = str(rng.choice(["bricks", "stripes", "noise", "checker"]))
            base = (rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.7), rng.uniform(0.2, 0.6))
            prims.append(Box((float(x), float(g - height / 2), float(z + length / 2)),
                             (float(depth / 2), float(height / 2), float(length / 2)),
                             _mat(rng, pattern, base, scale=float(rng.uniform(0.1, 1.2)))))
            z += length + rng.uniform(0, 3)
    # backdrop closing the street within MAX_DEPTH
    far = rng.uniform(55, 75)
    top = rng.uniform(5, 16)
    prims.append(Box((0.0, float(g - top / 2), float(far + 5)), (60.0, float(top / 2), 5.0),
                     _mat(rng, "bricks", (0.5, 0.45, 0.4), scale=1.0)))
    # cars
    for _ in range(int(rng.integers(0, 5))):
        z = rng.uniform(5, 50)
        x = rng.uniform(-road_half + 1.2, road_half - 1.2)
        yaw = rng.uniform(-0.2, 0.2)
        paint = _mat(rng, "plain", (rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)))
        prims.append(Box((float(x), float(g - 0.75), float(z)), (0.9, 0.4, 2.1), paint, yaw=float(yaw)))
        prims.append(Box((float(x), float(g - 1.35), float(z + 0.2)), (0.8, 0.25, 1.1), _mat(rng, "plain", (0.1, 0.12, 0.15)), yaw=float(yaw)))
        tyre = Material("plain", (0.05, 0.05, 0.05), (0.05, 0.05, 0.05), 1.0, 0.1)
        for wx in (-0.92, 0.92):
            for wz in (-1.3, 1.3):
                cx = x + wx * math.cos(yaw) + wz * math.sin(yaw)
                cz = z - wx * math.sin(yaw) + wz * math.cos(yaw)
                axis = (math.cos(yaw), 0.0, -math.sin(yaw))
                prims.append(Cylinder((float(cx - 0.12 * axis[0]), float(g - 0.35), float(cz - 0.12 * axis[2])),
                                      axis, 0.24, 0.35, tyre, caps=True))
    # poles, overhead wires, signs
    metal = _mat(rng, "noise", (0.4, 0.4, 0.42), scale=0.3)
    cable = Material("plain", (0.08, 0.08, 0.08), (0.08, 0.08, 0.08), 1.0, 0.1)
    tops = {-1: [], 1: []}
    for side in (-1, 1):
        z = rng.uniform(3, 10)
        spacing = rng.uniform(10, 18)
        while z < far - 5:
            x = side * (road_half + rng.uniform(0.3, 0.8))
            height = rng.uniform(5, 8)
            prims.append(Cylinder((float(x), float(g), float(z)), (0.0, -1.0, 0.0), float(height),
                                  float(rng.uniform(0.05, 0.12)), metal, caps=True))
            tops[side].append((x, g - height, z))
            if rng.random() < 0.3:
                prims.append(Box((float(x - side * 0.35), float(g - 2.6), float(z)), (0.35, 0.25, 0.015),
                                 _mat(rng, "stripes", (0.1, 0.3, 0.7), (0.9, 0.9, 0.9), 0.2)))
            z += spacing
    for side in (-1, 1):
        for a, b in zip(tops[side][:-1], tops[side][1:]):
            for k in range(int(rng.integers(1, 4))):
                off = np.array([0, 0.25 * k, 0])
                _wire(prims, np.asarray(a) + off, np.asarray(b) + off, rng.uniform(0.2, 0.7),
                      float(rng.uniform(0.008, 0.02)), cable)
    for a, b in zip(tops[-1], tops[1]):
        if rng.random() < 0.4:
            _wire(prims, a, b, rng.uniform(0.3, 1.0), float(rng.uniform(0.008, 0.015)), cable)
    # fences on the sidewalk edge
    for _ in range(int(rng.integers(0, 4))):
        side = rng.choice([-1, 1])
        z = rng.uniform(3, 40)
        length = rng.uniform(3, 12)
        prims.append(Box((float(side * (road_half + 0.15)), float(g - 0.55), float(z + length / 2)),
                         (float(length / 2), 0.55, 0.02), _mat(rng, "plain", (0.2, 0.25, 0.2)),
                         yaw=math.pi / 2, slats=(float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.2, 0.5)))))
    # bare trees and bollards
    bark = _mat(rng, "noise", (0.3, 0.22, 0.15), scale=0.2)
    leaves = _mat(rng, "noise", (0.2, 0.4, 0.15), scale=0.3)
    for _ in range(int(rng.integers(1, 6))):
        side = rng.choice([-1, 1])
        x = side * (road_half + walk * rng.uniform(0.4, 0.9))
        z = rng.uniform(4, 45)
        _branches(rng, prims, (float(x), float(g), float(z)), (rng.normal(0, 0.1), -1.0, rng.normal(0, 0.1)),
                  rng.uniform(2.0, 3.5), rng.uniform(0.1, 0.2), int(rng.integers(2, 4)), bark,
                  leaves if rng.random() < 0.5 else None)
    for _ in range(int(rng.integers(0, 6))):
        x = rng.choice([-1, 1]) * (road_half + rng.uniform(0.3, 1.0))
        z = rng.uniform(3, 30)
        prims.append(Cylinder((float(x), float(g), float(z)), (0.0, -1.0, 0.0), 0.9, 0.1, metal, caps=True))
        prims.append(Sphere((float(x), float(g - 0.95), float(z)), 0.13, metal))
    panes = []
    if unreliable:
        for _ in range(int(rng.integers(1, 3))):  # bus-shelter / shop-front glass
            side = rng.choice([-1, 1])
            z = rng.uniform(6, 30)
            panes.append(Box((float(side * (road_half + walk * 0.5)), float(g - 1.3), float(z)),
                             (0.01, 1.2, float(rng.uniform(1.0, 2.5))),
                             Material("plain", (0.55, 0.7, 0.75), (0.55, 0.7, 0.75), 1.0, 0.05),
                             yaw=float(rng.uniform(-0.3, 0.3))))
    sky = ((0.75, 0.8, 0.85), (0.3, 0.5, 0.85))
    sun = (float(rng.uniform(-0.6, 0.6)), -1.0, float(rng.uniform(-0.5, 0.5)))
    return Scene(cam, prims, panes, sun=sun, sun_strength=float(rng.uniform(0.6, 1.0)),
                 ambient=float(rng.uniform(0.25, 0.45)), sky=sky, fog_distance=float(rng.uniform(150, 400)))


def indoor_scene(rng: np.random.Generator, unreliable: bool = False, fx_norm: float = FX_NORM) -> Scene:
    """A room: floor, ceiling and walls with tiles/bricks/wallpaper; tables and chairs on thin
    legs, shelves with objects, lamps on thin poles, pendant cables, plants, a window grid."""
    cam_h = rng.uniform(1.1, 1.7)
    g = cam_h
    room_h = rng.uniform(2.5, 3.5)
    ceil = g - room_h
    left, right = -rng.uniform(1.8, 4.0), rng.uniform(1.8, 4.0)
    back = rng.uniform(5.0, 12.0)
    cam = Camera((0.0, 0.0, 0.0), yaw=float(rng.uniform(-0.25, 0.25)), pitch=float(rng.uniform(0.0, 0.2)),
                 roll=float(rng.uniform(-0.02, 0.02)), fx_norm=fx_norm)
    wall_base = (rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.85), rng.uniform(0.45, 0.8))
    prims: list = [
        Plane((0.0, 1.0, 0.0), g, _mat(rng, str(rng.choice(["checker", "stripes", "noise"])), (0.55, 0.4, 0.3), scale=float(rng.uniform(0.2, 0.6)))),
        Plane((0.0, 1.0, 0.0), ceil, _mat(rng, "plain", (0.85, 0.85, 0.82))),
        Plane((1.0, 0.0, 0.0), left, _mat(rng, None, wall_base)),
        Plane((1.0, 0.0, 0.0), right, _mat(rng, None, wall_base)),
        Plane((0.0, 0.0, 1.0), back, _mat(rng, str(rng.choice(["bricks", "stripes", "noise"])), wall_base, scale=float(rng.uniform(0.08, 0.3)))),
        Plane((0.0, 0.0, 1.0), -3.0, _mat(rng, "plain", wall_base)),
    ]
    wood = _mat(rng, "stripes", (0.55, 0.38, 0.22), (0.45, 0.3, 0.18), scale=0.03)
    metal = _mat(rng, "noise", (0.3, 0.3, 0.32), scale=0.2)

    def spot(margin=0.6, zmin=1.5):
        return rng.uniform(left + margin, right - margin), rng.uniform(zmin, back - margin)

    for _ in range(int(rng.integers(1, 4))):  # tables on four thin legs
        x, z = spot(1.0, 2.0)
        hx, hz, top = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.6), rng.uniform(0.7, 0.8)
        prims.append(Box((float(x), float(g - top), float(z)), (float(hx), 0.02, float(hz)), wood))
        for sx in (-1, 1):
            for sz in (-1, 1):
                prims.append(Cylinder((float(x + sx * (hx - 0.05)), float(g), float(z + sz * (hz - 0.05))),
                                      (0.0, -1.0, 0.0), float(top), float(rng.uniform(0.012, 0.03)), metal))
        for _ in range(int(rng.integers(0, 4))):  # things on the table
            ox, oz = x + rng.uniform(-hx, hx) * 0.7, z + rng.uniform(-hz, hz) * 0.7
            r = rng.uniform(0.04, 0.12)
            if rng.random() < 0.5:
                prims.append(Sphere((float(ox), float(g - top - 0.02 - r), float(oz)), float(r), _mat(rng, None, tuple(rng.uniform(0.2, 0.9, 3)))))
            else:
                prims.append(Cylinder((float(ox), float(g - top - 0.02), float(oz)), (0.0, -1.0, 0.0), float(rng.uniform(0.08, 0.3)), float(r), _mat(rng, None, tuple(rng.uniform(0.2, 0.9, 3))), caps=True))
    for _ in range(int(rng.integers(0, 4))):  # chairs: seat, slatted back, thin legs
        x, z = spot(0.7, 1.8)
        yaw = float(rng.uniform(-math.pi, math.pi))
        seat = 0.45
        prims.append(Box((float(x), float(g - seat), float(z)), (0.22, 0.02, 0.22), wood, yaw=yaw))
        c, s = math.cos(yaw), math.sin(yaw)
        prims.append(Box((float(x - 0.21 * s), float(g - seat - 0.25), float(z - 0.21 * c)), (0.21, 0.22, 0.015), wood, yaw=yaw, slats=(0.07, 0.4)))
        for sx in (-1, 1):
            for sz in (-1, 1):
                lx, lz = sx * 0.19, sz * 0.19
                prims.append(Cylinder((float(x + lx * c + lz * s), float(g), float(z - lx * s + lz * c)), (0.0, -1.0, 0.0), seat, 0.015, metal))
    if rng.random() < 0.8:  # a shelf against a side wall
        side_x = left + 0.2 if rng.random() < 0.5 else right - 0.2
        z = rng.uniform(2.5, back - 1)
        for k in range(4):
            y = g - 0.3 - k * 0.45
            prims.append(Box((float(side_x), float(y), float(z)), (0.18, 0.015, 0.6), wood))
            for _ in range(int(rng.integers(0, 4))):
                oz = z + rng.uniform(-0.5, 0.5)
                prims.append(Box((float(side_x), float(y - 0.1), float(oz)), (0.12, 0.09, float(rng.uniform(0.02, 0.08))), _mat(rng, None, tuple(rng.uniform(0.2, 0.9, 3)))))
        for sz in (-1, 1):
            prims.append(Box((float(side_x), float(g - 0.9), float(z + sz * 0.6)), (0.18, 0.9, 0.015), wood))
    for _ in range(int(rng.integers(0, 3))):  # floor lamps: thin pole + shade
        x, z = spot(0.5, 2.0)
        hgt = rng.uniform(1.3, 1.8)
        prims.append(Cylinder((float(x), float(g), float(z)), (0.0, -1.0, 0.0), float(hgt), 0.012, metal))
        prims.append(Cylinder((float(x), float(g - hgt), float(z)), (0.0, -1.0, 0.0), 0.25, float(rng.uniform(0.12, 0.2)), _mat(rng, "plain", (0.9, 0.85, 0.7)), caps=True))
    for _ in range(int(rng.integers(0, 4))):  # pendant lamps on cables
        x, z = spot(0.5, 1.5)
        drop = rng.uniform(0.5, 1.2)
        prims.append(Cylinder((float(x), float(ceil), float(z)), (0.0, 1.0, 0.0), float(drop), 0.005, metal))
        prims.append(Sphere((float(x), float(ceil + drop + 0.12), float(z)), 0.12, _mat(rng, "plain", (0.95, 0.9, 0.75))))
    for _ in range(int(rng.integers(0, 3))):  # potted plants: twigs
        x, z = spot(0.6, 2.0)
        prims.append(Cylinder((float(x), float(g), float(z)), (0.0, -1.0, 0.0), 0.3, 0.15, _mat(rng, "noise", (0.6, 0.35, 0.25)), caps=True))
        _branches(rng, prims, (float(x), float(g - 0.3), float(z)), (0.0, -1.0, 0.0), 0.4, 0.02, 3,
                  _mat(rng, "plain", (0.3, 0.25, 0.1)), _mat(rng, "noise", (0.2, 0.5, 0.2), scale=0.1))
    # window grid on the back wall (thin muntins in front of a bright panel)
    wx, wy = rng.uniform(left + 1, right - 1), g - rng.uniform(1.2, 1.8)
    ww, wh = rng.uniform(0.6, 1.2), rng.uniform(0.5, 0.8)
    prims.append(Box((float(wx), float(wy), float(back - 0.01)), (float(ww), float(wh), 0.005), _mat(rng, "plain", (0.9, 0.95, 1.0))))
    for k in np.linspace(-1, 1, int(rng.integers(3, 6))):
        prims.append(Box((float(wx + k * ww), float(wy), float(back - 0.03)), (0.015, float(wh), 0.015), _mat(rng, "plain", (0.95, 0.95, 0.95))))
        prims.append(Box((float(wx), float(wy + k * wh), float(back - 0.03)), (float(ww), 0.015, 0.015), _mat(rng, "plain", (0.95, 0.95, 0.95))))
    panes = []
    if unreliable:  # a glass partition or display case
        x, z = spot(0.8, 2.0)
        panes.append(Box((float(x), float(g - 0.9), float(z)), (float(rng.uniform(0.4, 1.0)), 0.9, 0.005),
                         Material("plain", (0.6, 0.75, 0.8), (0.6, 0.75, 0.8), 1.0, 0.05), yaw=float(rng.uniform(-0.5, 0.5))))
    sun = (float(rng.uniform(-0.5, 0.5)), -float(rng.uniform(0.5, 1.0)), -float(rng.uniform(0.2, 1.0)))
    return Scene(cam, prims, panes, sun=sun, sun_strength=float(rng.uniform(0.5, 0.8)),
                 ambient=float(rng.uniform(0.35, 0.55)))


_LAYOUT_BUILDERS = {"street": street_scene, "indoor": indoor_scene}


def render_scene(seed: int, height: int, width: int, layout: str = "street", *, unreliable: bool = False,
                 fx_norm: float = FX_NORM, max_depth: float = MAX_DEPTH, far_depth: Optional[float] = None,
                 shadows: bool = False) -> Sample:
    """Render one procedural scene, deterministic in ``seed``.

    Returns a Sample: image HxWx3 uint8 RGB, depth HxW float32 metres (0 = invalid; sky and
    anything beyond ``max_depth`` read ``far_depth`` when given (> ``max_depth``), else 0),
    intrinsics 3x3 float64 (fx = fy = ``fx_norm`` * width), mask HxW bool
    (False on transparent panes whose ground truth is the surface behind) when ``unreliable``
    else None, and name ``"{layout}_{seed:08d}"``. ``shadows``: cast shadows from the sun
    (:func:`render`); the scene and its depth are the same either way.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not (isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))) or height < 1 or width < 1:
        raise ValueError(f"height and width must be positive integers, got {height!r} x {width!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not fx_norm > 0:
        raise ValueError(f"fx_norm must be > 0, got {fx_norm}")
    if far_depth is not None and not (math.isfinite(far_depth) and far_depth > max_depth):
        raise ValueError(f"far_depth must be finite and > max_depth ({max_depth}), got {far_depth}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), LAYOUTS.index(layout)]))
    scene = _LAYOUT_BUILDERS[layout](rng, unreliable=unreliable, fx_norm=fx_norm)
    image, depth, K, pane = render(scene, int(height), int(width), max_depth=max_depth, noise=noise_tile(rng),
                                   far_depth=far_depth, shadows=shadows)
    return Sample(image=image, depth=depth, intrinsics=K, mask=~pane if unreliable else None,
                  name=f"{layout}_{int(seed):08d}")


def scene_seed(seed: int, index: int) -> int:
    """The scene seed of frame ``index`` of stream ``seed`` (``iter_scenes``' numbering)."""
    return int(seed) * SEED_STRIDE + int(index)


def iter_scenes(seed: int, height: int, width: int, layout: str | Sequence[str] = ("street", "indoor"),
                count: Optional[int] = None, *, start: int = 0, step: int = 1, unreliable: bool = False,
                fx_norm: float = FX_NORM, far_depth: Optional[float] = None,
                shadows: bool = False) -> Iterator[Sample]:
    """Stream procedural samples: sample i (i = start, start+step, ... ; infinite when ``count``
    is None, else i < count) uses scene seed ``scene_seed(seed, i)`` and layout
    ``layouts[i % len(layouts)]``. ``start``/``step`` shard the stream across data-loader
    workers. ``shadows``: as in :func:`render_scene`."""
    layouts = [layout] if isinstance(layout, str) else list(layout)
    if not layouts or any(l not in LAYOUTS for l in layouts):
        raise ValueError(f"layout must be one or more of {LAYOUTS}, got {layout!r}")
    if step < 1 or start < 0:
        raise ValueError(f"start must be >= 0 and step >= 1, got start={start} step={step}")
    i = start
    while count is None or i < count:
        yield render_scene(scene_seed(seed, i), height, width, layouts[i % len(layouts)],
                           unreliable=unreliable, fx_norm=fx_norm, far_depth=far_depth, shadows=shadows)
        i += step
