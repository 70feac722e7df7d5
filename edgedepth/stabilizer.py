"""Temporal stabiliser for depth video: less flicker on static surfaces, moving objects left alone.

Flicker in a tile model's depth is mostly low-frequency (the error fields of the coarse model and of
the tiles stay put in the image while the scene moves through it) and correlated over several
frames, so it takes a motion-compensated recursive filter, not a per-pixel average. Per frame t, at a
small work resolution, with the stabilised depth S of frame t-1 and the new depth D:

1. The camera's motion (R, t) from frame t-1 to frame t: corners of frame t-1 tracked into frame t
   (pyramidal Lucas-Kanade, checked forward and back), lifted to 3D with S and the intrinsics, then
   PnP with RANSAC. Moving objects are outliers. The motion is in S's metres, so a model whose overall
   scale jitters from frame to frame is pulled towards its recent scale.
2. Each pixel's surface point (at depth D) is moved into frame t-1 with that motion, S is sampled
   there, and the sampled point is moved back into frame t: the motion-compensated history P. The
   warp is geometric (depth + camera motion), so it holds on textureless road and walls where
   optical flow fails.
3. The difference r = ln P - ln D splits into how the model drifts around a pixel (a Gaussian
   average of its neighbours' r, large differences left out) and the pixel's departure from that.
   A pixel keeps its new depth where it departs by more than a tolerance set from this frame's
   robust spread of departures (depth edges, disocclusions, objects moving towards or away from the
   camera), where r itself is beyond ``max_change`` (a scene cut), and where its optical flow (DIS)
   disagrees with the camera's motion (by more than ``motion_check`` work pixels + ``motion_rel`` x
   the motion's own flow), with a margin (moving objects). Elsewhere its log depth moves towards P by ``strength`` x a weight that falls
   smoothly from 1 (agreement) to 0 at those limits: a recursive average along the surface point's
   path, which the model's drift and jitter average out in and moving objects stay out of.

The correction is computed at the work resolution and applied to the full-resolution depth as a
smooth factor: edges and fine detail of D are kept, never blurred by repeated warping.
Needs OpenCV (``cv2``) and the camera intrinsics; works on numpy (host) depth maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class StabilizerConfig:
    """Settings of :class:`Stabilizer` (the defaults are what benchmarks/bench_video.py measured).

    strength: how far an agreeing pixel's log depth moves towards its motion-compensated history, in
        [0, 1): 0 = off; 0.9 is a recursive average over about ten frames.
    max_change: a difference between new and history log depth beyond this (0.5 is about 65 %) is
        never averaged (a scene cut, a disocclusion).
    neighbourhood: the differences of a pixel's neighbours (a Gaussian of this share of
        ``work_width``) say how the model drifts there; a pixel that departs from them ...
    tolerance: ... by more than this many robust standard deviations (1.4826 x median) of the frame's
        departures ...
    min_tolerance, max_tolerance: ... clipped to this range (log units) keeps its new depth.
    motion_check, motion_rel: optical flow further than motion_check work pixels + motion_rel x the
        camera motion's own flow from that flow marks a moving object (flow gets less exact as it
        gets longer); motion_check 0 turns the check off.
    moving_margin: the margin kept around a moving object, as a share of ``work_width``.
    work_width: width in pixels of the tracking and the correction (the height follows the frame).
    min_inliers: the share of tracked corners that must agree on the camera's motion; below it the
        frame passes through unchanged (a scene cut, a covered lens).
    """

    strength: float = 0.9
    max_change: float = 0.5
    neighbourhood: float = 0.03
    tolerance: float = 6.0
    min_tolerance: float = 0.03
    max_tolerance: float = 0.35
    motion_check: float = 2.0
    motion_rel: float = 0.25
    moving_margin: float = 0.01
    work_width: int = 320
    min_inliers: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {self.strength}")
        if not (self.max_change > 0 and self.neighbourhood > 0):
            raise ValueError(f"max_change and neighbourhood must be > 0, got {self}")
        if not (self.tolerance > 0 and 0 < self.min_tolerance <= self.max_tolerance):
            raise ValueError(f"tolerance must be > 0 and 0 < min_tolerance <= max_tolerance, got {self}")
        if not (self.motion_check >= 0 and self.motion_rel >= 0 and self.moving_margin >= 0):
            raise ValueError(f"motion_check, motion_rel and moving_margin must be >= 0, got {self}")
        if not (isinstance(self.work_width, int) and self.work_width >= 32):
            raise ValueError(f"work_width must be an integer >= 32 pixels, got {self.work_width!r}")
        if not 0.0 <= self.min_inliers <= 1.0:
            raise ValueError(f"min_inliers must be in [0, 1], got {self.min_inliers}")


def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise ImportError("the depth stabiliser needs OpenCV: pip install opencv-python-headless (on a Jetson: "
                          "JetPack's python3-opencv); or turn it off: Runtime.stream(..., stabilize=False)") from err
    return cv2


class Stabilizer:
    """Stateful stabiliser of one video stream: call it on consecutive frames, ``reset()`` between
    streams (a scene cut needs no reset: its motion finds no support and the frame passes through)."""

    def __init__(self, config: StabilizerConfig = StabilizerConfig()) -> None:
        self.config = config
        self._cv2 = _cv2()
        self._flow = self._cv2.DISOpticalFlow_create(self._cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next frame passes through unchanged."""
        self._gray: Optional[np.ndarray] = None
        self._depth: Optional[np.ndarray] = None  # last output at work resolution, 0 where invalid
        self._grid: Any = None

    def __call__(self, rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
        """Stabilised depth of the next frame.

        rgb: (H, W, 3) uint8 RGB frame; depth: (H, W) float32 metres; valid: (H, W) bool (invalid
        pixels pass through and never feed the history); intrinsics: 3x3 camera matrix in pixels of
        this frame. Returns a new (H, W) float32 array.
        """
        cv2 = self._cv2
        depth = np.asarray(depth, np.float32)
        valid = np.asarray(valid, bool) & (depth > 0)
        rgb = np.asarray(rgb)
        h, w = depth.shape
        if rgb.shape[:2] != (h, w) or valid.shape != (h, w) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb (H, W, 3), depth and valid (H, W) must share H and W, got {rgb.shape}, "
                             f"{depth.shape}, {valid.shape}")
        k = np.asarray(intrinsics, np.float64)
        if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise ValueError(f"intrinsics must be a finite 3x3 camera matrix with fx, fy > 0, got {k.tolist()}")
        fw = min(self.config.work_width, w)
        fh = max(int(round(h * fw / w)), 1)
        sx, sy = fw / w, fh / h
        # the same camera at the work resolution (pixel centres: x_small + 0.5 = (x + 0.5) * s)
        ks = np.array([[k[0, 0] * sx, 0, (k[0, 2] + 0.5) * sx - 0.5], [0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5],
                       [0, 0, 1]])
        area = cv2.INTER_AREA
        gray = cv2.cvtColor(cv2.resize(rgb, (fw, fh), interpolation=area), cv2.COLOR_RGB2GRAY)
        everywhere = bool(valid.all())  # the common case skips three full-frame passes
        small = cv2.resize(depth if everywhere else np.where(valid, depth, np.float32(0)), (fw, fh),
                           interpolation=area)
        if not everywhere:  # a work pixel is known where all the frame pixels it covers are
            cover = cv2.resize(valid.astype(np.float32), (fw, fh), interpolation=area)
            small = np.where(cover > 0.999, small / np.maximum(cover, 1e-6), np.float32(0)).astype(np.float32)
        if self._gray is None or self._gray.shape != gray.shape:
            self._gray, self._depth = gray, small
            return depth.copy()
        factor = np.exp(self._correction(gray, small, ks))
        self._gray, self._depth = gray, small * factor
        out = depth * cv2.resize(factor, (w, h), interpolation=cv2.INTER_LINEAR)
        if not everywhere:
            np.copyto(out, depth, where=~valid)
        return out

    def _motion(self, gray: np.ndarray, k: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Camera motion (R, t) from frame t-1 to frame t (X_t = R X_{t-1} + t, the history's metres),
        or None where too few tracked corners agree on one."""
        cv2 = self._cv2
        corners = cv2.goodFeaturesToTrack(self._gray, maxCorners=600, qualityLevel=0.005, minDistance=5)
        if corners is None or len(corners) < 12:
            return None
        lk = dict(winSize=(15, 15), maxLevel=3)
        ahead, ok1, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, corners, None, **lk)
        back, ok2, _ = cv2.calcOpticalFlowPyrLK(gray, self._gray, ahead, None, **lk)
        good = (ok1[:, 0] == 1) & (ok2[:, 0] == 1) & (np.linalg.norm((back - corners)[:, 0], axis=1) < 0.5)
        p0, p1 = corners[good, 0].astype(np.float64), ahead[good, 0].astype(np.float64)
        hh, ww = self._depth.shape
        z = self._depth[np.clip(np.rint(p0[:, 1]).astype(int), 0, hh - 1), np.clip(np.rint(p0[:, 0]).astype(int), 0, ww - 1)]
        keep = z > 0
        if keep.sum() < 12:
            return None
        p0, p1, z = p0[keep], p1[keep], z[keep].astype(np.float64)
        points = np.stack([(p0[:, 0] - k[0, 2]) / k[0, 0] * z, (p0[:, 1] - k[1, 2]) / k[1, 1] * z, z], axis=1)
        found, rvec, tvec, inliers = cv2.solvePnPRansac(points, p1, k, None, iterationsCount=100,
                                                        reprojectionError=1.0, confidence=0.99,
                                                        flags=cv2.SOLVEPNP_EPNP)
        # Few corners agreeing on one motion is no motion: a scene cut, a blurred or covered lens.
        if not found or inliers is None or len(inliers) < max(12, self.config.min_inliers * len(points)):
            return None
        idx = inliers[:, 0]
        _, rvec, tvec = cv2.solvePnP(points[idx], p1[idx], k, None, rvec, tvec, useExtrinsicGuess=True,
                                     flags=cv2.SOLVEPNP_ITERATIVE)
        return cv2.Rodrigues(rvec)[0], tvec[:, 0]

    def _correction(self, gray: np.ndarray, small: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Log-depth correction at work resolution (0 where the new depth is kept)."""
        cv2, cfg = self._cv2, self.config
        zero = np.zeros_like(small)
        motion = self._motion(gray, k)
        if motion is None:
            return zero
        rot, trans = motion
        fh, fw = small.shape
        if self._grid is None or self._grid[0].shape != (fh, fw):
            ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
            self._grid = (xs, ys)
        xs, ys = self._grid
        # where each pixel's surface point (at the new depth) was in frame t-1
        z = small.astype(np.float64)
        cam = np.stack([(xs - k[0, 2]) / k[0, 0] * z - trans[0], (ys - k[1, 2]) / k[1, 1] * z - trans[1], z - trans[2]])
        prev = np.tensordot(rot.T, cam, axes=1)
        front = (prev[2] > 0) & (small > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            map_x = np.where(front, k[0, 0] * prev[0] / prev[2] + k[0, 2], -1.0).astype(np.float32)
            map_y = np.where(front, k[1, 1] * prev[1] / prev[2] + k[1, 2], -1.0).astype(np.float32)
        border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        warped = cv2.remap(self._depth, map_x, map_y, cv2.INTER_LINEAR, **border)
        known = cv2.remap((self._depth > 0).astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, **border)
        # the history's surface point, seen from the new camera
        history = (rot[2, 0] * (map_x - k[0, 2]) / k[0, 0] + rot[2, 1] * (map_y - k[1, 2]) / k[1, 1]
                   + rot[2, 2]) * warped + trans[2]
        both = front & (warped > 0) & (known > 0.999) & (history > 0)  # no mix with an unknown neighbour
        if not both.any():
            return zero
        r = np.where(both, np.log(np.where(both, history, 1.0) / np.where(both, z, 1.0)), 0.0).astype(np.float32)
        # How the model drifts around each pixel (its neighbours' differences, big ones left out) ...
        near = (np.clip(1.0 - (r / cfg.max_change) ** 2, 0, None) ** 2 * both).astype(np.float32)
        sigma = max(1.0, fw * cfg.neighbourhood)
        support = cv2.GaussianBlur(near, (0, 0), sigma)
        drift = cv2.GaussianBlur(near * r, (0, 0), sigma) / np.maximum(support, 1e-3)
        # ... and a pixel that departs from it is an edge, a disocclusion or something moving.
        departure = r - drift
        spread = 1.4826 * float(np.median(np.abs(departure[both])))
        tol = min(max(cfg.tolerance * spread, cfg.min_tolerance), cfg.max_tolerance)
        weight = cfg.strength * near * np.clip(1.0 - (departure / tol) ** 2, 0, None) ** 2
        if cfg.motion_check > 0:
            flow = self._flow.calc(gray, self._gray, None)  # gray(p) ~ previous gray(p + flow(p))
            moving = (np.hypot(xs + flow[..., 0] - map_x, ys + flow[..., 1] - map_y)
                      > cfg.motion_check + cfg.motion_rel * np.hypot(map_x - xs, map_y - ys))
            radius = max(1, int(round(fw * cfg.moving_margin)))
            disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            weight *= 1 - cv2.dilate(moving.astype(np.uint8), disk)
        return np.where(both, weight * r, 0.0).astype(np.float32)
