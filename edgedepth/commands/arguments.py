"""Argument types the `edgedepth` commands share, so sizes and grids read the same everywhere.

Image sizes are written width first, as resolutions are named (``1920x1080``); tile grids rows
first, as ``Runtime(tiles=(rows, cols))`` takes them (``4x4``, ``2x3``). Both return (rows-axis,
columns-axis) tuples, the order the Python API uses.
"""
from __future__ import annotations

import argparse


def _pair(text: str, what: str, example: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must look like {example}, got {text!r}") from None
    if a < 1 or b < 1:
        raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
    return a, b


def frame_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (e.g. ``1920x1080``) -> (height, width)."""
    w, h = _pair(text, "a size", "1920x1080 (WIDTHxHEIGHT)")
    return h, w


def tile_grid(text: str) -> tuple[int, int]:
    """``"ROWSxCOLS"`` (e.g. ``4x4``) -> (rows, cols)."""
    return _pair(text, "a tile grid", "4x4 (ROWSxCOLS)")


def csv_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ["a", "b", "c"] (empty items dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()]
