"""The shared CLI argument types: sizes width-first (1920x1080), grids rows-first (4x4)."""
from __future__ import annotations

import argparse

import pytest

from edgedepth.commands.arguments import csv_list, frame_size, tile_grid


def test_sizes_are_width_first_and_grids_rows_first():
    assert frame_size("1920x1080") == (1080, 1920)
    assert frame_size("640X480") == (480, 640)
    assert tile_grid("2x3") == (2, 3)
    assert csv_list("onnx, openvino,,coreml") == ["onnx", "openvino", "coreml"]


@pytest.mark.parametrize("parse, text, match", [
    (frame_size, "1920by1080", "WIDTHxHEIGHT"), (frame_size, "0x10", "positive"),
    (tile_grid, "4", "ROWSxCOLS"), (tile_grid, "2x-1", "positive"), (tile_grid, "2x2x2", "ROWSxCOLS"),
])
def test_malformed_values_are_named(parse, text, match):
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        parse(text)
