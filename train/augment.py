"""Photometric augmentation of training frames: colour edges that are not depth edges.

Procedural frames light every surface without cast shadows, so nearly every colour edge inside an
object is a texture the model learns to ignore by pattern, and every other one is geometry. Real
photographs are full of shadow and paint edges on flat surfaces, which a refiner trained only on
such frames reads as depth. ``shade`` scales the colours inside random soft-edged shapes (straight
shadow edges, blobs, four-sided patches, some striped) and leaves the depth as it is.
"""
from __future__ import annotations

import numpy as np

SHAPES = ("half_plane", "ellipse", "quad")


def shade(image: np.ndarray, rng: np.random.Generator, shapes: tuple[int, int] = (1, 3)) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``shapes`` (inclusive range) random shapes darkened or
    brightened (gain 0.45-1.35, tinted up to 10 % per channel, edges 0.5-6 px wide at 1080p, scaled
    with the height; a third of them striped). -> a new (H, W, 3) uint8 array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    unit = h / 1080.0
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    gain = np.ones((h, w, 3), np.float32)
    for _ in range(int(rng.integers(shapes[0], shapes[1] + 1))):
        kind = SHAPES[int(rng.integers(0, len(SHAPES)))]
        soft = float(rng.uniform(0.5, 6.0)) * unit
        cy, cx = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        if kind == "half_plane":
            a = float(rng.uniform(0, 2 * np.pi))
            dist = (y - cy) * float(np.sin(a)) + (x - cx) * float(np.cos(a))  # signed, px
        elif kind == "ellipse":
            ry, rx = (float(rng.uniform(0.03, 0.3)) * s for s in (h, w))
            a = float(rng.uniform(0, np.pi))
            c, s = float(np.cos(a)), float(np.sin(a))
            u = ((x - cx) * (c / rx) + (y - cy) * (s / rx))
            v = ((y - cy) * (c / ry) - (x - cx) * (s / ry))
            dist = (np.sqrt(u * u + v * v) - 1.0) * min(rx, ry)  # about px outside the rim
        else:  # a convex quad: the intersection of four half-planes around a centre
            r = float(rng.uniform(0.05, 0.3)) * min(h, w)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 4)) + rng.uniform(0, np.pi / 2, 4)
            dist = np.full((h, w), -np.inf, np.float32)
            for t in angles:
                np.maximum(dist, (y - cy) * float(np.sin(t)) + (x - cx) * float(np.cos(t)) - r, out=dist)
        inside = np.clip(0.5 - dist * (1.0 / soft), 0.0, 1.0)
        g = float(rng.uniform(0.45, 1.35)) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        if rng.random() < 1 / 3:  # paint: stripes of the gain and no change, hard-edged
            period = float(rng.uniform(6, 60)) * unit
            a = float(rng.uniform(0, np.pi))
            k = 2 * np.pi / period
            phase = y * float(np.sin(a) * k) + x * float(np.cos(a) * k)
            stripes = (np.sin(phase) > 0).astype(np.float32)
            inside = inside * stripes
        gain *= 1.0 + (g - 1.0) * inside[..., None]
    out = image * gain
    np.rint(out, out=out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)
