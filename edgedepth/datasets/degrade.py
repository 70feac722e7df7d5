"""Real-domain mode: degrade dense synthetic ground truth the way real sensors deliver it.

Real data sets give sparse LiDAR returns (KITTI) or dense-but-holed stereo/structured-light depth
(Middlebury, ETH3D), both noisy and missing around depth edges. The teacher-student (DSD) path
trains the student on such ground truth, so the procedural generator can produce it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..metrics import dilate, ratio_edges
from .procedural import FX_NORM
from .sample import Sample, check_sample

SENSORS = ("lidar", "stereo")


@dataclass(frozen=True)
class SensorConfig:
    """How to degrade a sample.

    ``lidar``: ``beams`` scan lines spread over the elevation range [``elevation_down``,
    ``elevation_up``] degrees (up positive), one return every ``azimuth_step`` degrees, ranges
    to ``max_range`` m, ``dropout`` share of returns lost. ``stereo``: dense depth whose noise
    grows with depth squared (disparity noise ``disparity_noise`` px at baseline ``baseline`` m).
    Both: relative depth noise ``noise``, holes ``edge_holes`` px wide on either side of depth
    jumps larger than ``edge_ratio``, image noise ``image_noise`` (8-bit levels) and a blur.
    """

    kind: str = "lidar"
    beams: int = 64
    elevation_up: float = 5.0
    elevation_down: float = -25.0
    azimuth_step: float = 0.16
    max_range: float = 80.0
    dropout: float = 0.05
    baseline: float = 0.12
    disparity_noise: float = 0.25
    noise: float = 0.01
    edge_ratio: float = 1.1
    edge_holes: int = 2
    image_noise: float = 2.0
    blur: bool = True

    def __post_init__(self) -> None:
        if self.kind not in SENSORS:
            raise ValueError(f"kind must be one of {SENSORS}, got {self.kind!r}")
        if self.beams < 1 or self.azimuth_step <= 0 or self.elevation_up <= self.elevation_down:
            raise ValueError("beams must be >= 1, azimuth_step > 0 and elevation_up > elevation_down")
        if not 0 <= self.dropout < 1 or self.noise < 0 or self.edge_holes < 0 or self.edge_ratio <= 1:
            raise ValueError("need 0 <= dropout < 1, noise >= 0, edge_holes >= 0 and edge_ratio > 1")


def _lidar_mask(shape, K, cfg: SensorConfig, rng) -> np.ndarray:
    h, w = shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    elev = np.radians(np.linspace(cfg.elevation_down, cfg.elevation_up, cfg.beams))
    elev = elev + rng.normal(0, np.radians(0.05), elev.shape)
    half_fov = math.atan(max(cx, w - 1 - cx) / fx)
    az = np.arange(-half_fov, half_fov, math.radians(cfg.azimuth_step))
    cols = np.rint(cx + fx * np.tan(az)).astype(np.int64)
    mask = np.zeros(shape, bool)
    for e in elev:
        # a beam at fixed elevation is a curve in the image: y/z = -tan(e)/cos(azimuth)
        rows = np.rint(cy - fy * np.tan(e) / np.cos(az)).astype(np.int64)
        ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        mask[rows[ok], cols[ok]] = True
    return mask


def _blur(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    pad = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    k = np.array([0.25, 0.5, 0.25], np.float32)
    rows = k[0] * pad[:-2] + k[1] * pad[1:-1] + k[2] * pad[2:]
    return k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:]


def degrade(sample: Sample, config: Optional[SensorConfig] = None, seed: int = 0) -> Sample:
    """Return a copy of ``sample`` with sensor-like depth and image (deterministic in ``seed``).
    Depth stays float32 metres with 0 = no measurement; the mask is kept as it was."""
    check_sample(sample, f"sample {sample.get('name', '?')!r}")
    cfg = config or SensorConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E45]))
    depth = sample["depth"].astype(np.float32, copy=True)
    h, w = depth.shape
    K = sample["intrinsics"]
    if K is None:
        f = FX_NORM * w
        K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    valid = depth > 0
    holes = dilate(ratio_edges(depth, cfg.edge_ratio), cfg.edge_holes) if cfg.edge_holes else np.zeros_like(valid)
    if cfg.kind == "lidar":
        keep = _lidar_mask(depth.shape, K, cfg, rng) & (depth <= cfg.max_range)
        sigma = cfg.noise * depth
    else:
        keep = np.ones_like(valid)
        # z = f B / d  =>  sigma_z = z^2 sigma_d / (f B)
        sigma = cfg.noise * depth + depth ** 2 * cfg.disparity_noise / (K[0, 0] * cfg.baseline)
    keep &= valid & ~holes & (rng.random(depth.shape) >= cfg.dropout)
    noisy = depth + rng.standard_normal(depth.shape).astype(np.float32) * sigma.astype(np.float32)
    out_depth = np.where(keep & (noisy > 0), noisy, 0).astype(np.float32)
    image = _blur(sample["image"]) if cfg.blur else sample["image"].astype(np.float32)
    if cfg.image_noise > 0:
        image = image + rng.normal(0, cfg.image_noise, image.shape).astype(np.float32)
    out_image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Sample(image=out_image, depth=out_depth, intrinsics=sample["intrinsics"], mask=sample["mask"],
                  name=sample["name"] + f"_{cfg.kind}")


__all__ = ["SensorConfig", "SENSORS", "degrade"]
