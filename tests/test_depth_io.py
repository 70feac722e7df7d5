"""16-bit depth PNGs carry their unit; the colour key of colorize_depth; fixed colour ranges."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth.datasets import open_dataset
from edgedepth.depth_io import (PNG_UNIT_KEY, check_depth_range, colorize_depth, depth_legend, png_depth_unit,
                                read_depth, read_depth_png, write_depth_png, write_image, write_png16)


def test_depth_png_records_its_unit(tmp_path):
    depth = np.array([[0.0, 1.234], [70.0, 300.0]], np.float32)
    with pytest.warns(UserWarning, match="2 pixels beyond 65.535 m"):
        assert write_depth_png(tmp_path / "mm.png", depth) == 2
    assert png_depth_unit(tmp_path / "mm.png") == 1e-3
    np.testing.assert_allclose(read_depth_png(tmp_path / "mm.png"), [[0, 1.234], [0, 0]], atol=1e-6)
    assert write_depth_png(tmp_path / "cm.png", depth, 0.01, warn=False) == 0
    np.testing.assert_allclose(read_depth_png(tmp_path / "cm.png"), [[0, 1.23], [70, 300]], atol=1e-4)
    np.testing.assert_allclose(read_depth(tmp_path / "cm.png"), read_depth_png(tmp_path / "cm.png"))
    # a data-set folder in centimetres reads back in metres
    write_image(tmp_path / "set" / "images" / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_depth_png(tmp_path / "set" / "depth" / "a.png", depth, 0.01)
    np.testing.assert_allclose(open_dataset("folder", tmp_path / "set")[0]["depth"], read_depth_png(tmp_path / "cm.png"))
    # a 16-bit PNG from elsewhere (no unit recorded) is millimetres, as before
    write_png16(tmp_path / "plain.png", np.array([[1500]], np.uint16))
    assert read_depth_png(tmp_path / "plain.png")[0, 0] == pytest.approx(1.5)
    write_png16(tmp_path / "bad.png", np.array([[1]], np.uint16), text={PNG_UNIT_KEY: "furlong"})
    with pytest.raises(ValueError, match="bad.png.*not a number of metres"):
        read_depth_png(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="unit must be > 0"):
        write_depth_png(tmp_path / "x.png", depth, 0.0)


def test_legend_is_the_key_of_colorize_depth():
    strip = depth_legend(400, 1.0, 50.0)
    assert strip.dtype == np.uint8 and strip.shape[1] == 400 and strip.shape[2] == 3
    bar = strip[3]
    # left end: the nearest colour (vmin), right end: the farthest (vmax), on colorize_depth's scale
    ends = colorize_depth(np.array([[1.0, 50.0]], np.float32), 1.0, 50.0)[0]
    assert np.abs(bar[0].astype(int) - ends[0]).max() <= 3 and np.abs(bar[-1].astype(int) - ends[1]).max() <= 3
    # the 10 m tick sits where colorize_depth puts 10 m
    x = int(round((1 / 10 - 1) / (1 / 50 - 1) * 399))
    assert np.abs(bar[x].astype(int) - colorize_depth(np.array([[10.0]], np.float32), 1.0, 50.0)[0, 0]).max() <= 6
    assert (strip[-12:] > 128).any()  # tick labels drawn under the bar


def test_fixed_range_keeps_colours_of_a_depth_across_frames():
    a = np.array([[2.0, 5.0]], np.float32)
    b = np.array([[1.0, 2.0, 40.0]], np.float32)
    # per-frame ranges give 2 m two different colours; one fixed range gives it one
    assert not np.array_equal(colorize_depth(a)[0, 0], colorize_depth(b)[0, 1])
    np.testing.assert_array_equal(colorize_depth(a, 1, 80)[0, 0], colorize_depth(b, 1, 80)[0, 1])
    for vmin, vmax in ((0, 5), (5, 5), (3, 2), (1, np.inf)):
        with pytest.raises(ValueError, match="0 < vmin < vmax"):
            check_depth_range(vmin, vmax)
