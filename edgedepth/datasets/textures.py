"""Procedural surface textures evaluated at world-space surface coordinates (metres).

Noise comes from one periodic tile per scene (FFT-filtered white noise) sampled bilinearly:
a gather per pixel instead of hashing lattice corners per octave keeps a 4K frame cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERNS = ("plain", "noise", "stripes", "bricks", "checker")

_TILE = 256  # noise tile side in texels (power of two: wrapping is a bit mask)


@dataclass(frozen=True)
class Material:
    """Albedo pattern of a surface. Colours are linear RGB in [0, 1]; ``scale`` is the pattern
    period in metres (brick height, stripe/checker period, noise feature size)."""

    pattern: str = "noise"
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color2: tuple[float, float, float] = (0.3, 0.3, 0.3)
    scale: float = 0.5
    roughness: float = 0.25  # noise modulation strength in [0, 1]

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0 metres, got {self.scale}")


def noise_tile(rng: np.random.Generator) -> np.ndarray:
    """A (256, 256) float32 periodic fractal noise tile in [0, 1]."""
    white = rng.standard_normal((_TILE, _TILE))
    f = np.fft.fftfreq(_TILE)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    radius[0, 0] = 1.0
    # 1/f amplitude gives detail at every scale; the cut below 2 texels avoids aliasing.
    spectrum = np.fft.fft2(white) / radius ** 1.1 * (radius < 0.35)
    spectrum[0, 0] = 0
    tile = np.real(np.fft.ifft2(spectrum))
    tile -= tile.min()
    return (tile / max(tile.max(), 1e-9)).astype(np.float32)


def sample_noise(tile: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of ``tile`` at texel coordinates (u, v) (1-D float arrays)."""
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0).astype(np.float32)
    fv = (v - v0).astype(np.float32)
    m = _TILE - 1
    iu = u0.astype(np.int64) & m
    iv = v0.astype(np.int64) & m
    iu1 = (iu + 1) & m
    iv1 = (iv + 1) & m
    top = tile[iv, iu] * (1 - fu) + tile[iv, iu1] * fu
    bot = tile[iv1, iu] * (1 - fu) + tile[iv1, iu1] * fu
    return top * (1 - fv) + bot * fv


def _hash01(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 7) & 1023).astype(np.float32) / 1023.0


def albedo(material: Material, uv: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """Albedo (N, 3) float32 of ``material`` at surface coordinates ``uv`` (N, 2) metres."""
    u = uv[:, 0].astype(np.float32)
    v = uv[:, 1].astype(np.float32)
    s = np.float32(material.scale)
    c1 = np.asarray(material.color, np.float32)
    c2 = np.asarray(material.color2, np.float32)
    # Fine grain shared by every pattern: 64 texels per pattern period.
    grain = sample_noise(tile, u / s * 64.0, v / s * 64.0)
    pattern = material.pattern
    if pattern == "plain":
        mix = np.zeros_like(u)
    elif pattern == "noise":
        mix = sample_noise(tile, u / s * 8.0 + 17.0, v / s * 8.0 + 5.0)
    elif pattern == "stripes":
        mix = (np.mod(u / s, 1.0) < 0.5).astype(np.float32)
    elif pattern == "checker":
        mix = ((np.floor(u / s) + np.floor(v / s)).astype(np.int64) & 1).astype(np.float32)
    else:  # bricks: rows of height s, bricks 2s long, alternate rows shifted by half a brick
        row = np.floor(v / s)
        shifted = u / (2 * s) + 0.5 * (row.astype(np.int64) & 1)
        col = np.floor(shifted)
        mortar = (np.mod(v / s, 1.0) < 0.08) | (np.mod(shifted, 1.0) < 0.04)
        brick = c1 * (0.8 + 0.4 * _hash01(row, col))[:, None]
        out = np.where(mortar[:, None], c2[None, :], brick)
        return out * (1 - material.roughness * 0.5 + material.roughness * grain)[:, None]
    out = c1[None, :] * (1 - mix)[:, None] + c2[None, :] * mix[:, None]
    return out * (1 - material.roughness * 0.5 + material.roughness * grain)[:, None]
