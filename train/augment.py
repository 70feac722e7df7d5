"""Photometric augmentation of training frames: colour edges that are not depth edges.

Procedural frames light every surface without cast shadows, so nearly every colour edge inside an
object is a texture the model learns to ignore by pattern, and every other one is geometry. Real
photographs are full of shadow and paint edges on flat surfaces, which a refiner trained only on
such frames reads as depth. ``shade`` scales the colours inside random soft-edged shapes (straight
shadow edges, blobs, four-sided patches, some striped) and leaves the depth as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from edgedepth.tiling_reference import crop_axis, sample_tables

SHAPES = ("half_plane", "ellipse", "quad")


@dataclass(frozen=True)
class Shape:
    """One shape of :func:`draw_shapes`, in the pixel coordinates of the frame it was drawn for."""

    kind: str  # one of SHAPES
    soft: float  # edge width, px
    cy: float
    cx: float
    params: tuple  # half_plane: (angle,); ellipse: (ry, rx, angle); quad: (r, angle, angle, angle, angle)
    gain: np.ndarray  # (3,) float32
    stripes: Optional[tuple[float, float]]  # (period px, angle) of paint stripes, or None


def draw_shapes(rng: np.random.Generator, height: int, width: int, shapes: tuple[int, int] = (1, 3)) -> list[Shape]:
    """``shapes`` (inclusive range) random shapes for a ``height`` x ``width`` frame: the draws of
    :func:`shade`, which :func:`shade_gain` evaluates wherever it is asked."""
    unit = height / 1080.0
    out = []
    for _ in range(int(rng.integers(shapes[0], shapes[1] + 1))):
        kind = SHAPES[int(rng.integers(0, len(SHAPES)))]
        soft = float(rng.uniform(0.5, 6.0)) * unit
        cy, cx = float(rng.uniform(0, height)), float(rng.uniform(0, width))
        if kind == "half_plane":
            params = (float(rng.uniform(0, 2 * np.pi)),)
        elif kind == "ellipse":
            ry, rx = (float(rng.uniform(0.03, 0.3)) * s for s in (height, width))
            params = (ry, rx, float(rng.uniform(0, np.pi)))
        else:  # a convex quad: the intersection of four half-planes around a centre
            r = float(rng.uniform(0.05, 0.3)) * min(height, width)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 4)) + rng.uniform(0, np.pi / 2, 4)
            params = (r, *(float(t) for t in angles))
        gain = float(rng.uniform(0.45, 1.35)) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        stripes = None
        if rng.random() < 1 / 3:  # paint: stripes of the gain and no change, hard-edged
            stripes = (float(rng.uniform(6, 60)) * unit, float(rng.uniform(0, np.pi)))
        out.append(Shape(kind, soft, cy, cx, params, gain, stripes))
    return out


def shade_gain(shapes: Sequence[Shape], y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(y), len(x), 3) float32 colour gain of ``shapes`` at the pixels (y[i], x[j])."""
    y = np.asarray(y, dtype=np.float32)[:, None]
    x = np.asarray(x, dtype=np.float32)[None, :]
    gain = np.ones((y.shape[0], x.shape[1], 3), np.float32)
    for sh in shapes:
        cy, cx = sh.cy, sh.cx
        if sh.kind == "half_plane":
            (a,) = sh.params
            dist = (y - cy) * float(np.sin(a)) + (x - cx) * float(np.cos(a))  # signed, px
        elif sh.kind == "ellipse":
            ry, rx, a = sh.params
            c, s = float(np.cos(a)), float(np.sin(a))
            u = ((x - cx) * (c / rx) + (y - cy) * (s / rx))
            v = ((y - cy) * (c / ry) - (x - cx) * (s / ry))
            dist = (np.sqrt(u * u + v * v) - 1.0) * min(rx, ry)  # about px outside the rim
        else:
            r, *angles = sh.params
            dist = np.full(gain.shape[:2], -np.inf, np.float32)
            for t in angles:
                np.maximum(dist, (y - cy) * float(np.sin(t)) + (x - cx) * float(np.cos(t)) - r, out=dist)
        inside = np.clip(0.5 - dist * (1.0 / sh.soft), 0.0, 1.0)
        if sh.stripes is not None:
            period, a = sh.stripes
            k = 2 * np.pi / period
            phase = y * float(np.sin(a) * k) + x * float(np.cos(a) * k)
            inside = inside * (np.sin(phase) > 0).astype(np.float32)
        gain *= 1.0 + (sh.gain - 1.0) * inside[..., None]
    return gain


def _apply(pixels: np.ndarray, gain: np.ndarray) -> np.ndarray:
    out = pixels * gain
    np.rint(out, out=out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def shade(image: np.ndarray, rng: np.random.Generator, shapes: tuple[int, int] = (1, 3)) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``shapes`` (inclusive range) random shapes darkened or
    brightened (gain 0.45-1.35, tinted up to 10 % per channel, edges 0.5-6 px wide at 1080p, scaled
    with the height; a third of them striped). -> a new (H, W, 3) uint8 array."""
    _check_image(image)
    h, w = image.shape[:2]
    return _apply(image, shade_gain(draw_shapes(rng, h, w, shapes), np.arange(h), np.arange(w)))


def shaded_crops(image: np.ndarray, shapes: Sequence[Shape], boxes: np.ndarray, size: tuple[int, int], *,
                 mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0) -> np.ndarray:
    """``tiling.crop_resize`` of the frame :func:`shade` would make with ``shapes``, computed only
    at the pixels the crops sample (their bilinear taps): a refiner item's five crops of a 4K frame
    read about 2 % of it. ``image`` (H, W, 3) uint8; ``boxes`` (N, 4) [y0, x0, h, w] frame pixels
    -> (N, 3, h, w) float32, (shaded / 255 - mean) / std."""
    _check_image(image)
    src_h, src_w = image.shape[:2]
    mean = np.broadcast_to(np.asarray(mean, np.float64), (3,))[:, None, None]
    std = np.broadcast_to(np.asarray(std, np.float64), (3,))[:, None, None]
    out = np.empty((len(boxes), 3, *size), np.float32)
    for n, (y0, x0, bh, bw) in enumerate(np.asarray(boxes, dtype=np.float64)):
        (ylo, yhi, fy), (xlo, xhi, fx) = crop_axis(y0, bh, size[0], src_h), crop_axis(x0, bw, size[1], src_w)
        rows, cols = np.union1d(ylo, yhi), np.union1d(xlo, xhi)
        taps = _apply(image[rows][:, cols], shade_gain(shapes, rows, cols))  # (rows, cols, 3): all it reads
        ty = (np.searchsorted(rows, ylo), np.searchsorted(rows, yhi), fy)
        tx = (np.searchsorted(cols, xlo), np.searchsorted(cols, xhi), fx)
        out[n] = (sample_tables(np.moveaxis(taps, -1, 0).astype(np.float64), ty, tx) / 255.0 - mean) / std
    return out


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
