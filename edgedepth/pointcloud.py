"""Depth -> 3D points (pinhole back-projection) and binary PLY point clouds."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path


def default_intrinsics(height: int, width: int, fx_norm: float) -> np.ndarray:
    """3x3 pinhole matrix for an (height, width) image: fx = fy = fx_norm * width, centred principal point."""
    f = float(fx_norm) * width
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def backproject(depth: np.ndarray, intrinsics: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points of every valid pixel (depth > 0, finite), x right, y down, z forward, metres.

    Returns (points (N, 3) float32, (rows, cols) int indices of the pixels used). ``stride`` keeps
    every stride-th pixel in each direction (point clouds of 4K frames get large).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {depth.shape}")
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"intrinsics must be a finite 3x3 matrix with fx, fy > 0, got {k.tolist()}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    rows, cols = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    z = depth[rows, cols].astype(np.float64)
    keep = np.isfinite(z) & (z > 0)
    rows, cols, z = rows[keep], cols[keep], z[keep]
    x = (cols - k[0, 2]) * z / k[0, 0]
    y = (rows - k[1, 2]) * z / k[1, 1]
    return np.stack([x, y, z], axis=1).astype(np.float32), (rows, cols)


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write (N, 3) float32 points (and optional (N, 3) uint8 RGB colours) as binary little-endian PLY."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape or colors.dtype != np.uint8:
            raise ValueError(f"colors must be (N, 3) uint8 like points {points.shape}, got {colors.shape} {colors.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(len(points), dtype=fields)
    rec["x"], rec["y"], rec["z"] = points.T
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = colors.T
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += [f"property {types[t]} {n}" for n, t in fields] + ["end_header"]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(rec.tobytes())


def write_depth_ply(path: str | Path, depth: np.ndarray, intrinsics: np.ndarray, image: np.ndarray | None = None,
                    stride: int = 1) -> int:
    """Back-project HW depth (metres) with ``intrinsics`` and write a PLY, coloured by ``image`` (HWC uint8)
    when given. Returns the number of points written."""
    points, (rows, cols) = backproject(depth, intrinsics, stride)
    colors = None if image is None else np.asarray(image)[rows, cols]
    write_ply(path, points, colors)
    return len(points)
