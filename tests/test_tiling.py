"""edgedepth.tiling: geometry, native CPU engine == numpy reference == torch interpolate, errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgedepth import native, tiling, tiling_torch
from edgedepth import tiling_reference as ref
from edgedepth.tiling import TileGrid

needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _coverage(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    count = np.zeros((height, width), dtype=np.int32)
    for y0, x0, h, w in boxes.astype(int):
        count[y0:y0 + h, x0:x0 + w] += 1
    return count


# ---------------------------------------------------------------- TileGrid

def test_grid_4k_layout() -> None:
    g = TileGrid(2160, 3840, 4, 4, 135)
    assert (g.tile_h, g.tile_w) == (642, 1062)
    assert g.boxes.shape == (16, 4) and g.boxes.dtype == np.float64
    assert g.boxes[-1, 0] + g.tile_h == 2160 and g.boxes[-1, 1] + g.tile_w == 3840
    ys = np.unique(g.boxes[:, 0])
    assert (np.diff(ys) <= g.tile_h - 135).all()  # requested overlap honoured
    assert _coverage(g.boxes, 2160, 3840).min() >= 1


@FAST
@given(h=st.integers(1, 300), w=st.integers(1, 300), rows=st.integers(1, 9), cols=st.integers(1, 9),
       ov=st.integers(0, 60))
def test_grid_covers_frame_and_stays_inside(h: int, w: int, rows: int, cols: int, ov: int) -> None:
    try:
        g = TileGrid(h, w, rows, cols, ov)
    except ValueError:
        return  # impossible layouts are rejected (tested below)
    b = g.boxes
    assert len(g) == rows * cols == len(b)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 0] + b[:, 2] <= h).all() and (b[:, 1] + b[:, 3] <= w).all()
    assert (b[:, 2] == g.tile_h).all() and (b[:, 3] == g.tile_w).all()
    assert _coverage(b, h, w).min() >= 1
    if rows > 1:
        assert (np.diff(np.unique(b[:, 0])) <= g.tile_h - ov).all()


def test_from_overlap_ratio_rule() -> None:
    # ov = round(ratio * min(H / rows, W / cols)): one overlap, from the smaller tile pitch.
    assert TileGrid.from_overlap_ratio(2160, 3840, 4, 4, 0.25) == TileGrid(2160, 3840, 4, 4, 135)
    g = TileGrid.from_overlap_ratio(100, 300, 2, 2, 0.3)
    assert (g.overlap, g.tile_h, g.tile_w) == (15, 58, 158)
    small = TileGrid.from_overlap_ratio(3, 2, 4, 4, 0.25)  # rows/cols capped at the frame
    assert (small.rows, small.cols) == (3, 2) and _coverage(small.boxes, 3, 2).min() >= 1
    assert TileGrid.from_overlap_ratio(100, 300, 2, 2, 0.3) is g  # built once per frame size


@FAST
@given(h=st.integers(1, 300), w=st.integers(1, 300), rows=st.integers(1, 9), cols=st.integers(1, 9),
       ratio=st.floats(0.0, 0.999))
def test_from_overlap_ratio_fits_every_frame(h: int, w: int, rows: int, cols: int, ratio: float) -> None:
    g = TileGrid.from_overlap_ratio(h, w, rows, cols, ratio)
    assert (g.rows, g.cols) == (min(rows, h), min(cols, w))
    assert _coverage(g.boxes, h, w).min() >= 1


@pytest.mark.parametrize("args, exc, match", [
    ((10, 10, 2, 2, 1.0), ValueError, "overlap_ratio"), ((10, 10, 2, 2, -0.1), ValueError, "overlap_ratio"),
    ((10, 10, 2, 2, float("nan")), ValueError, "overlap_ratio"), ((10, 10, 2, 2, "0.2"), ValueError, "overlap_ratio"),
    ((10, 10, 0, 2, 0.2), ValueError, "rows"), ((10, 10, 2, 1.5, 0.2), TypeError, "cols"),
])
def test_from_overlap_ratio_rejects(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        TileGrid.from_overlap_ratio(*args)


@FAST
@given(h=st.integers(1, 400), w=st.integers(1, 400), th=st.integers(1, 500), tw=st.integers(1, 500),
       ov=st.integers(0, 40))
def test_for_tile_fewest_tiles(h: int, w: int, th: int, tw: int, ov: int) -> None:
    if (th < h and ov >= th) or (tw < w and ov >= tw):
        with pytest.raises(ValueError, match="overlap"):
            TileGrid.for_tile(h, w, th, tw, ov)
        return
    g = TileGrid.for_tile(h, w, th, tw, ov)
    assert g.tile_h == min(th, h) and g.tile_w == min(tw, w)
    assert _coverage(g.boxes, h, w).min() >= 1
    if g.rows > 1:  # one tile fewer would not cover
        assert (g.rows - 1) * g.tile_h - (g.rows - 2) * ov < h


def test_scaled_boxes() -> None:
    g = TileGrid(100, 200, 2, 2, 10)
    s = g.scaled(0.5, 0.25)
    np.testing.assert_array_equal(s, g.boxes * [0.5, 0.25, 0.5, 0.25])
    with pytest.raises(ValueError, match="sy"):
        g.scaled(0, 1)
    with pytest.raises(ValueError, match="sx"):
        g.scaled(1, float("nan"))


@pytest.mark.parametrize("args, match", [
    ((0, 10, 1, 1, 0), "height"), ((10, 10, 0, 1, 0), "rows"), ((10, 10, 1, 1, -1), "overlap"),
    ((10, 10, 11, 1, 0), "do not fit"), ((100, 100, 2, 2, 150), "larger than the frame"),
    ((100, 100, 2, 2, 100), "smaller than the tile"),
])
def test_grid_rejects(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        TileGrid(*args)


def test_grid_rejects_types_and_bad_tiles() -> None:
    with pytest.raises(TypeError, match="rows"):
        TileGrid(10, 10, 1.5, 1, 0)
    with pytest.raises(TypeError, match="height"):
        TileGrid(True, 10, 1, 1, 0)
    with pytest.raises(ValueError, match="do not cover"):
        TileGrid(100, 100, 2, 2, 0, tile_h=40)
    with pytest.raises(ValueError, match="larger than the frame"):
        TileGrid(100, 100, 1, 1, 0, tile_h=120)


# ---------------------------------------------------------------- crop_resize

def _rand_boxes(rng: np.random.Generator, n: int, H: int, W: int, integer: bool) -> np.ndarray:
    h = rng.uniform(0.3, H, n)
    w = rng.uniform(0.3, W, n)
    y0 = rng.uniform(0, H - h)
    x0 = rng.uniform(0, W - w)
    b = np.stack([y0, x0, h, w], 1)
    if integer:
        b = np.floor(b)
        b[:, 2:] = np.maximum(b[:, 2:], 1)
        b[:, 2] = np.minimum(b[:, 2], H - b[:, 0])
        b[:, 3] = np.minimum(b[:, 3], W - b[:, 1])
    return b


@needs_native
@pytest.mark.parametrize("seed", range(8))
def test_crop_maps_native_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    C, H, W = int(rng.integers(1, 7)), int(rng.integers(1, 60)), int(rng.integers(1, 60))
    src = rng.standard_normal((C, H, W)).astype(np.float32)
    boxes = _rand_boxes(rng, int(rng.integers(1, 6)), H, W, integer=False)
    out = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    got = tiling.crop_resize(src, boxes, out, threads=int(rng.integers(1, 4)))
    assert got.shape == (len(boxes), C, *out) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref.crop_resize(src, boxes, out), rtol=0, atol=1e-5)


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_crop_rgb_native_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    H, W = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    boxes = _rand_boxes(rng, 4, H, W, integer=bool(seed % 2))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = tiling.crop_resize(img, boxes, (17, 23), mean=mean, std=std)
    want = ref.crop_resize(img, boxes, (17, 23), mean=np.array(mean), std=np.array(std))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    half = tiling.crop_resize(img, boxes, (17, 23), mean=mean, std=std, dtype=np.float16)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), want, rtol=1e-3, atol=1e-3)


@needs_native
@pytest.mark.parametrize("size, box, out", [
    ((31, 47), (0, 0, 31, 47), (13, 19)),       # whole frame, downscale
    ((31, 47), (5, 7, 20, 33), (8, 8)),         # inner box, downscale
    ((31, 47), (2, 3, 24, 40), (24, 40)),       # identity size
    ((64, 64), (0, 0, 64, 64), (17, 5)),        # non-uniform downscale
    ((9, 13), (0, 0, 9, 13), (27, 52)),         # upscale, whole frame (samples clamp to the frame)
    ((1, 50), (0, 0, 1, 50), (1, 7)),           # 1-pixel-high frame
])
def test_crop_equals_torch_interpolate(size, box, out) -> None:
    rng = np.random.default_rng(7)
    src = rng.random((3, *size)).astype(np.float32)
    y0, x0, h, w = box
    want = F.interpolate(torch.from_numpy(src)[None, :, y0:y0 + h, x0:x0 + w], size=out, mode="bilinear",
                         align_corners=False)[0].numpy()
    got = tiling.crop_resize(src, np.array([box], dtype=float), out)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ref.crop_resize(src, np.array([box], dtype=float), out)[0], want, rtol=0, atol=1e-5)


@needs_native
@settings(max_examples=80, deadline=None)
@given(H=st.integers(1, 40), W=st.integers(1, 40), C=st.integers(1, 3), oh=st.integers(1, 24),
       ow=st.integers(1, 24), fy=st.floats(0, 1), fx=st.floats(0, 1), fh=st.floats(1e-3, 1), fw=st.floats(1e-3, 1),
       half_in=st.booleans())
def test_crop_property(H, W, C, oh, ow, fy, fx, fh, fw, half_in) -> None:
    h, w = fh * H, fw * W  # fractional boxes down to 1/1000 px, any aspect ratio
    box = np.array([[fy * (H - h), fx * (W - w), h, w]])
    src = np.random.default_rng(H * W).random((C, H, W)).astype(np.float16 if half_in else np.float32)
    got = tiling.crop_resize(src, box, (oh, ow))
    np.testing.assert_allclose(got, ref.crop_resize(src, box, (oh, ow)), rtol=0, atol=1e-5)
    assert np.isfinite(got).all() and got.min() >= src.min() - 1e-6 and got.max() <= src.max() + 1e-6


@needs_native
def test_half_precision_conversions_are_exact() -> None:
    # An identity crop passes values through unchanged, so what comes out is the engine's conversion
    # alone (F16C where the CPU has it, integer code elsewhere): every finite binary16 to float32,
    # and float32 values to binary16 rounded to nearest even as numpy rounds them, ties, overflow and
    # subnormals included. A NaN becomes 0x7e00 with its sign, whatever its payload.
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    halves = halves[np.isfinite(halves)][:63 * 1000].reshape(1, 63, 1000)
    box = np.array([[0.0, 0.0, 63.0, 1000.0]])
    np.testing.assert_array_equal(tiling.crop_resize(halves, box, (63, 1000), threads=2)[0].view(np.uint32),
                                  halves.astype(np.float32).view(np.uint32))
    rng = np.random.default_rng(5)
    exact = halves.astype(np.float32).ravel()
    with np.errstate(over="ignore"):  # the spacing above 65504 is inf: those values drop out below
        steps = np.abs(np.spacing(halves.ravel()).astype(np.float32))
    values = np.concatenate([
        exact + steps / 2,  # ties: round to the even neighbour
        exact + steps * rng.uniform(0.01, 0.99, exact.size).astype(np.float32),
        np.float32(2.0) ** rng.uniform(-30, 18, 20000).astype(np.float32) * rng.choice([-1, 1], 20000),
        [65504.0, 65519.996, 65520.0, 70000.0, -1e30, 1e-45, -6e-8, 3e-8, 0.0, -0.0]]).astype(np.float32)
    with np.errstate(invalid="ignore"):
        values = values[np.isfinite(values)]
    n = values.size // 1000 * 1000
    src = values[:n].reshape(1, n // 1000, 1000)
    box = np.array([[0.0, 0.0, n // 1000, 1000.0]])
    with np.errstate(over="ignore"):
        want = src.astype(np.float16)
    got = tiling.crop_resize(src, box, src.shape[1:], dtype=np.float16, threads=2)[0]
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    nans = np.array([0x7FC12345, 0xFFC00001, 0x7FFFFFFF, 0x7FC00000] * 4, np.uint32).view(np.float32).reshape(1, 2, 8)
    got = tiling.crop_resize(nans, np.array([[0.0, 0.0, 2.0, 8.0]]), (2, 8), dtype=np.float16)[0].view(np.uint16)
    assert set((got & 0x7FFF).ravel().tolist()) == {0x7E00}


@needs_native
def test_crop_extreme_aspect_and_one_pixel_boxes() -> None:
    rng = np.random.default_rng(3)
    src = rng.random((2, 5, 400)).astype(np.float32)
    boxes = np.array([[0, 0, 5, 400], [2, 100, 1, 1], [4.5, 399.5, 0.5, 0.5], [0, 0, 0.01, 400]])
    for out in [(1, 1), (50, 2), (1, 300)]:
        np.testing.assert_allclose(tiling.crop_resize(src, boxes, out), ref.crop_resize(src, boxes, out), atol=1e-5)


def test_crop_copies_non_contiguous_and_empty_batch() -> None:
    src = np.random.default_rng(0).random((20, 30, 4)).astype(np.float32)
    view = src.transpose(2, 0, 1)  # non-contiguous CHW view
    box = np.array([[1.0, 2.0, 10.0, 20.0]])
    np.testing.assert_allclose(tiling.crop_resize(view, box, (5, 5)),
                               ref.crop_resize(np.ascontiguousarray(view), box, (5, 5)), atol=1e-5)
    assert tiling.crop_resize(view, np.zeros((0, 4)), (5, 6)).shape == (0, 4, 5, 6)


def test_several_maps_on_the_host_are_each_maps_crop() -> None:
    # The runtime cuts its coarse depth and guidance maps through crop_resize_maps on every engine;
    # only CUDA arrays take the one-call path (tests/cuda), host maps are cropped one by one.
    rng = np.random.default_rng(5)
    g = TileGrid(270, 480, 2, 3, 16)
    srcs = [rng.random(s).astype(t) for s, t in [((1, 68, 120), np.float32), ((6, 17, 30), np.float16)]]
    boxes = [g.boxes * np.array([s.shape[1] / 270, s.shape[2] / 480] * 2) for s in srcs]
    got = tiling.crop_resize_maps(srcs, boxes, [(32, 56), (8, 14)], dtype=np.float16)
    for out, src, b, size in zip(got, srcs, boxes, [(32, 56), (8, 14)]):
        np.testing.assert_array_equal(out, tiling.crop_resize(src, b, size, dtype=np.float16))
    with pytest.raises(ValueError, match="one entry per map"):
        tiling.crop_resize_maps(srcs, boxes[:1], [(32, 56), (8, 14)])
    with pytest.raises(ValueError, match="outside"):
        tiling.crop_resize_maps(srcs, [boxes[0], boxes[0]], [(32, 56), (8, 14)])
    with pytest.raises(ValueError, match="same number of boxes"):
        tiling.crop_resize_maps(srcs, [boxes[0], boxes[1][:2]], [(32, 56), (8, 14)])


# ---------------------------------------------------------------- window

@needs_native
@pytest.mark.parametrize("kind", tiling.WINDOWS)
def test_window(kind: str) -> None:
    for h, w in [(1, 1), (1, 9), (448, 448), (7, 300)]:
        got = tiling.window(h, w, kind)
        assert got.shape == (h, w) and got.dtype == np.float32 and (got > 0).all()
        np.testing.assert_array_equal(got, ref.window(h, w, kind))
    win = tiling.window(9, 9, kind)
    np.testing.assert_allclose(win, win[::-1, ::-1])  # symmetric
    assert win[4, 4] == win.max()


# ---------------------------------------------------------------- stitch

@needs_native
@pytest.mark.parametrize("kind", tiling.WINDOWS)
@pytest.mark.parametrize("grid, tile", [((37, 53, 2, 3, 5), (11, 13)), ((64, 64, 3, 3, 8), (32, 32)),
                                        ((50, 9, 4, 1, 2), (16, 16)), ((20, 30, 1, 1, 0), (20, 30))])
def test_stitch_native_equals_reference(kind: str, grid, tile) -> None:
    g = TileGrid(*grid)
    rng = np.random.default_rng(1)
    tiles = rng.random((len(g), 2, *tile)).astype(np.float32)
    got = tiling.stitch(tiles, g.boxes, g.height, g.width, kind, threads=2)
    np.testing.assert_allclose(got, ref.stitch(tiles, g.boxes, g.height, g.width, kind), rtol=0, atol=1e-5)
    got16 = tiling.stitch(tiles.astype(np.float16), g.boxes, g.height, g.width, kind)
    np.testing.assert_allclose(got16, ref.stitch(tiles.astype(np.float16), g.boxes, g.height, g.width, kind),
                               rtol=0, atol=1e-5)


@needs_native
@pytest.mark.parametrize("kind", tiling.WINDOWS)
def test_stitch_single_tile_equals_torch_interpolate(kind: str) -> None:
    tile = np.random.default_rng(2).random((1, 3, 12, 17)).astype(np.float32)
    box = np.array([[0.0, 0.0, 29.0, 41.0]])
    want = F.interpolate(torch.from_numpy(tile), (29, 41), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(tiling.stitch(tile, box, 29, 41, kind), want, rtol=0, atol=1e-5)


@needs_native
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 80), w=st.integers(1, 80), rows=st.integers(1, 4), cols=st.integers(1, 4),
       ov=st.integers(0, 12), kind=st.sampled_from(tiling.WINDOWS), value=st.floats(-1e3, 1e3))
def test_stitch_constant_tiles_give_the_constant(h, w, rows, cols, ov, kind, value) -> None:
    try:
        g = TileGrid(h, w, rows, cols, ov)
    except ValueError:
        return
    tiles = np.full((len(g), 1, 7, 5), value, dtype=np.float32)
    np.testing.assert_allclose(tiling.stitch(tiles, g.boxes, h, w, kind), value, rtol=1e-5, atol=1e-5)


@needs_native
@settings(max_examples=40, deadline=None)
@given(h=st.integers(2, 70), w=st.integers(2, 70), rows=st.integers(1, 4), cols=st.integers(1, 4),
       ov=st.integers(0, 10), kind=st.sampled_from(tiling.WINDOWS))
def test_stitching_crops_gives_the_image_back(h, w, rows, cols, ov, kind) -> None:
    try:
        g = TileGrid(h, w, rows, cols, ov)
    except ValueError:
        return
    img = np.random.default_rng(h + w).random((2, h, w)).astype(np.float32)
    crops = tiling.crop_resize(img, g.boxes, (g.tile_h, g.tile_w))  # same size: exact crops
    np.testing.assert_allclose(tiling.stitch(crops, g.boxes, h, w, kind), img, rtol=0, atol=1e-5)


@needs_native
def test_stitch_fractional_boxes_match_reference() -> None:
    rng = np.random.default_rng(5)
    boxes = np.array([[0, 0, 20.5, 30.25], [10.3, 12.7, 19.7, 27.3], [0, 25.1, 30, 14.9], [15.2, 0, 14.8, 40]])
    tiles = rng.random((4, 1, 9, 6)).astype(np.float32)
    np.testing.assert_allclose(tiling.stitch(tiles, boxes, 30, 40, "linear"), ref.stitch(tiles, boxes, 30, 40, "linear"),
                               rtol=0, atol=1e-5)


@needs_native
@pytest.mark.parametrize("layout", ["shuffled grid", "duplicate box", "two grids"])
def test_stitch_normalises_grids_per_axis_and_other_layouts_per_pixel(layout: str) -> None:
    # The engine factorises the weight sum (rows x columns) only when the boxes are every row band
    # crossed with every column band once; a duplicate box (n still rows x cols) or a second,
    # offset grid must take the per-pixel sum. Any misdetection moves the result far from the reference.
    g = TileGrid(60, 80, 2, 2, 10)
    rng = np.random.default_rng(6)
    # Row bands (0, 60) and (10, 30), column bands (0, 80) and (20, 30): 4 boxes, but the whole-frame
    # box twice and (10, 20, 30, 30) never.
    duplicate = np.array([[0, 0, 60, 80], [0, 0, 60, 80], [0, 20, 60, 30], [10, 0, 30, 80]], dtype=np.float64)
    boxes = {"shuffled grid": g.boxes[[3, 0, 2, 1]], "duplicate box": duplicate,
             "two grids": np.concatenate([g.boxes, TileGrid(60, 80, 2, 2, 30).boxes])}[layout]
    tiles = rng.uniform(1, 5, (len(boxes), 2, 12, 16)).astype(np.float32)
    np.testing.assert_allclose(tiling.stitch(tiles, boxes, 60, 80, "cosine"), ref.stitch(tiles, boxes, 60, 80, "cosine"),
                               rtol=0, atol=1e-5)


@needs_native
def test_native_grid_stitch_writes_zero_where_no_box_reaches() -> None:
    # The module (unlike tiling.stitch) accepts uncovered pixels and documents them as 0. Its grid
    # path stores each row's first contribution instead of zero-filling the row, so the gaps
    # (before, between and after the column bands) must be written explicitly: the output buffer
    # is recycled memory that held NaNs just before.
    boxes = np.array([[0, 10, 30, 25], [0, 45, 30, 25], [30, 10, 30, 25], [30, 45, 30, 25]], dtype=np.float64)
    tiles = np.random.default_rng(8).uniform(1, 5, (4, 2, 8, 8)).astype(np.float32)
    want = ref.stitch(tiles, boxes, 60, 80, "cosine")
    for _ in range(3):
        del_me = np.full((2, 60, 80), np.nan, np.float32)
        del del_me
        got = native.cpu.stitch(tiles, boxes, 60, 80, tiling.WINDOWS.index("cosine"), 2)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert not got[:, :, list(range(10)) + list(range(35, 45)) + list(range(70, 80))].any()


# ---------------------------------------------------------------- errors

IMG = np.zeros((10, 12, 3), np.uint8)
MAP = np.zeros((2, 10, 12), np.float32)
BOX = np.array([[0.0, 0.0, 5.0, 5.0]])


@pytest.mark.parametrize("call, exc, match", [
    (lambda: tiling.crop_resize(np.zeros((10, 12, 4), np.uint8), BOX, (4, 4)), ValueError, "src.*RGB"),
    (lambda: tiling.crop_resize(np.zeros((10, 12), np.float32), BOX, (4, 4)), ValueError, "src.*C, H, W"),
    (lambda: tiling.crop_resize(np.zeros((2, 10, 12), np.int32), BOX, (4, 4)), TypeError, "src.*dtype"),
    (lambda: tiling.crop_resize(np.zeros((0, 10, 12), np.float32), BOX, (4, 4)), ValueError, "src.*empty"),
    (lambda: tiling.crop_resize([[1]], BOX, (4, 4)), TypeError, "src"),
    (lambda: tiling.crop_resize("img", BOX, (4, 4)), TypeError, "src"),
    (lambda: tiling.crop_resize(MAP, BOX, (4, 4), mean=0.5), ValueError, "mean/std"),
    (lambda: tiling.crop_resize(IMG, BOX, (4, 4), std=(1, 0, 1)), ValueError, "std"),
    (lambda: tiling.crop_resize(IMG, BOX, (4, 4), mean=(1, 2)), ValueError, "mean"),
    (lambda: tiling.crop_resize(IMG, BOX, (0, 4)), ValueError, "out_size"),
    (lambda: tiling.crop_resize(IMG, BOX, 4), ValueError, "out_size"),
    (lambda: tiling.crop_resize(IMG, BOX, (4, 4), dtype=np.int8), TypeError, "dtype"),
    (lambda: tiling.crop_resize(IMG, BOX, (4, 4), threads=0), ValueError, "threads"),
    (lambda: tiling.crop_resize(MAP, np.zeros((1, 3)), (4, 4)), ValueError, "boxes.*shape"),
    (lambda: tiling.crop_resize(MAP, np.array([["a", "b", "c", "d"]]), (4, 4)), TypeError, "boxes"),
    (lambda: tiling.crop_resize(MAP, np.array([[0, 0, np.nan, 5]]), (4, 4)), ValueError, "boxes.*finite"),
    (lambda: tiling.crop_resize(MAP, np.array([[0, 0, 0, 5]]), (4, 4)), ValueError, "h > 0"),
    (lambda: tiling.crop_resize(MAP, np.array([[6, 0, 5, 5]]), (4, 4)), ValueError, "outside"),
    (lambda: tiling.crop_resize(MAP, np.array([[0, -1, 5, 5]]), (4, 4)), ValueError, "outside"),
    (lambda: tiling.window(0, 4), ValueError, "h"),
    (lambda: tiling.window(4, 4, "hann"), ValueError, "window"),
    (lambda: tiling.stitch(np.zeros((1, 1, 4, 4), np.float64), BOX, 5, 5), TypeError, "tiles.*dtype"),
    (lambda: tiling.stitch(np.zeros((1, 4, 4), np.float32), BOX, 5, 5), ValueError, "tiles.*N, C"),
    (lambda: tiling.stitch(np.zeros((2, 1, 4, 4), np.float32), BOX, 5, 5), ValueError, "2 tiles but boxes has 1"),
    (lambda: tiling.stitch(np.zeros((1, 1, 4, 4), np.float32), BOX, 5, 6), ValueError, "uncovered"),
    (lambda: tiling.stitch(np.zeros((1, 1, 4, 4), np.float32), BOX, 4, 4), ValueError, "outside"),
    (lambda: tiling.stitch(np.zeros((1, 1, 4, 4), np.float32), BOX, 5, 5, "box"), ValueError, "window"),
    (lambda: tiling.stitch(np.zeros((1, 0, 4, 4), np.float32), BOX, 5, 5), ValueError, "empty"),
    (lambda: tiling.set_num_threads(0), ValueError, "n"),
])
def test_errors_name_the_argument(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_uncovered_pixel_is_found_between_boxes() -> None:
    boxes = np.array([[0, 0, 10, 4], [0, 5, 10, 5]], dtype=float)  # column 4 left out
    with pytest.raises(ValueError, match=r"\(0, 4\)"):
        tiling.stitch(np.ones((2, 1, 3, 3), np.float32), boxes, 10, 10)


def test_threads_setting() -> None:
    old = tiling.get_num_threads()
    try:
        tiling.set_num_threads(1)
        assert tiling.get_num_threads() == 1
    finally:
        tiling.set_num_threads(old)
    assert old >= 1


# ---------------------------------------------------------------- fallback

def test_fallback_warns_and_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "cpu", None)
    monkeypatch.setattr(tiling, "_warned_fallback", type(tiling._warned_fallback)())
    g = TileGrid(20, 24, 2, 2, 4)
    tiles = np.random.default_rng(0).random((4, 1, 6, 6)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="numpy reference"):
        got = tiling.stitch(tiles, g.boxes, 20, 24)
    np.testing.assert_array_equal(got, ref.stitch(tiles, g.boxes, 20, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        out = tiling.crop_resize(IMG, BOX, (3, 3))
    assert out.shape == (1, 3, 3, 3)


def test_for_shrink_picks_the_grid_closest_to_the_trained_scale():
    from edgedepth.tiling import Tiling

    grids = {size: TileGrid.for_shrink(*size, 128, 224, 2.4, 0.25)
             for size in [(480, 640), (1080, 1920), (2160, 3840), (3000, 4000)]}
    assert (grids[1080, 1920].rows, grids[1080, 1920].cols) == (4, 4)
    assert len(grids[480, 640]) < len(grids[1080, 1920]) < len(grids[2160, 3840])
    for (h, w), g in grids.items():
        sy, sx = g.shrink(128, 224)
        cost = abs(np.log(sy / 2.4)) + abs(np.log(sx / 2.4))
        # no other rows x cols does better (brute force over a wide range)
        for r in range(1, 16):
            for c in range(1, 16):
                other = TileGrid.from_overlap_ratio(h, w, r, c, 0.25)
                oy, ox = other.shrink(128, 224)
                assert cost <= abs(np.log(oy / 2.4)) + abs(np.log(ox / 2.4)) + 1e-9
        assert g == Tiling(4, 4, 0.25, "cosine", 2.4).grid(h, w, (128, 224))
    assert Tiling(3, 5, 0.25).grid(1080, 1920) == TileGrid.from_overlap_ratio(1080, 1920, 3, 5, 0.25)
    with pytest.raises(ValueError, match="shrink"):
        TileGrid.for_shrink(100, 100, 32, 32, 0.0, 0.25)
    with pytest.raises(ValueError, match="tile_size"):
        Tiling(2, 2, shrink=2.0).grid(100, 100)
    with pytest.raises(ValueError, match="shrink"):
        Tiling(2, 2, shrink=-1.0)
    assert Tiling.from_json({"rows": 2, "cols": 3, "overlap_ratio": 0.1, "window": "linear"}).shrink == 0.0


def test_max_side_caps_the_adaptive_grid_at_the_grid_of_the_shrunk_frame():
    from edgedepth.tiling import Tiling

    capped, free = Tiling(4, 4, 0.25, "cosine", 2.4, max_side=1920), Tiling(4, 4, 0.25, "cosine", 2.4)
    # at and below the cap nothing changes
    for size in [(1080, 1920), (480, 640), (1920, 1080)]:
        assert capped.grid(*size, (128, 224)) == free.grid(*size, (128, 224))
    # 4K: the 1080p frame's 4x4 grid, tiles twice as large, every pixel covered
    g = capped.grid(2160, 3840, (128, 224))
    assert (g.rows, g.cols) == (4, 4) and len(free.grid(2160, 3840, (128, 224))) > 16
    assert g == TileGrid.from_overlap_ratio(2160, 3840, 4, 4, 0.25)
    assert g.shrink(128, 224)[0] == pytest.approx(2 * free.grid(1080, 1920, (128, 224)).shrink(128, 224)[0], rel=0.02)
    # a 4:3 frame is shrunk by its longer side
    small = TileGrid.for_shrink(1440, 1920, 128, 224, 2.4, 0.25)
    assert (capped.grid(3000, 4000, (128, 224)).rows, capped.grid(3000, 4000, (128, 224)).cols) == (small.rows, small.cols)
    assert Tiling.from_json(capped.to_json()) == capped
    assert Tiling.from_json(free.to_json()).max_side == 0
    with pytest.raises(ValueError, match="adaptive"):
        Tiling(4, 4, max_side=1920)
    with pytest.raises(ValueError, match="max_side"):
        Tiling(4, 4, shrink=2.4, max_side=-1)
    with pytest.raises(TypeError, match="max_side"):
        Tiling(4, 4, shrink=2.4, max_side=1920.0)


def _finish_inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Depth values with every case the finishing pass treats apart: NaN, +-inf, 0, -0, negatives,
    values above a valid_max of 80 and near float32's maximum (they overflow under a scale > 1)."""
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -3.0, 80.0, 80.001, 1e3, 3.0e38, 1e-40], np.float32)
    d = rng.uniform(-5, 120, n).astype(np.float32)
    d[rng.integers(0, n, n // 4)] = rng.choice(special, n // 4)
    return d


@needs_native
@pytest.mark.parametrize("scale", [1.0, 0.37, 2.5])
@pytest.mark.parametrize("valid_max", [80.0, float("inf")])
@pytest.mark.parametrize("threads", [1, 3])
def test_finish_native_matches_reference(scale: float, valid_max: float, threads: int) -> None:
    # 300 001 values: several 64 Ki chunks and a partial one, so the threads split the work.
    d = _finish_inputs(np.random.default_rng(7), 300_001).reshape(1, 300_001)
    want = d.copy()
    want_valid = ref.finish(want, scale, valid_max)
    got = d.copy()
    got_valid = tiling.finish(got, scale, valid_max, threads=threads)
    assert got_valid.dtype == np.bool_ and got_valid.shape == d.shape
    np.testing.assert_array_equal(got_valid, want_valid)
    np.testing.assert_array_equal(got, want)  # -0.0 == 0.0; every other value bit-identical
    assert np.isfinite(got).all() and (got >= 0).all()
    assert not got_valid[np.isnan(d)].any() and not got_valid[d <= 0].any()


@needs_native
@pytest.mark.parametrize("depth, kwargs, exc", [
    (np.ones(4, np.float64), {}, TypeError),                      # not float32
    (np.ones((4, 4), np.float32)[:, ::2], {}, TypeError),         # not contiguous
    (np.ones(0, np.float32), {}, TypeError),                      # empty
    (np.ones(4, np.float32), {"scale": 0.0}, ValueError),
    (np.ones(4, np.float32), {"scale": float("nan")}, ValueError),
    (np.ones(4, np.float32), {"threads": 0}, ValueError),
])
def test_finish_rejects(depth, kwargs, exc) -> None:
    with pytest.raises(exc):
        tiling.finish(depth, **kwargs)


@needs_native
def test_finish_native_checks_its_arguments() -> None:
    # The extension can be called directly: it must refuse what the wrapper refuses, before touching memory.
    ro = np.ones(8, np.float32)
    ro.flags.writeable = False
    for args in ((np.ones(8, np.float64), 1.0, 80.0, 1), (np.ones((4, 4), np.float32)[:, ::2], 1.0, 80.0, 1),
                 (ro, 1.0, 80.0, 1), (np.ones(0, np.float32), 1.0, 80.0, 1), (np.ones(8, np.float32), -1.0, 80.0, 1),
                 (np.ones(8, np.float32), 1.0, float("nan"), 1), (np.ones(8, np.float32), 1.0, 80.0, 0)):
        with pytest.raises(ValueError):
            native.cpu.finish(*args)


@needs_native
@pytest.mark.parametrize("layout", ["grid", "scattered"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("scale, valid_max, threads", [(1.0, float("inf"), 1), (2.5, 80.0, 3), (0.37, 80.0, 2)])
def test_stitch_finish_is_stitch_then_finish(layout, dtype, scale, valid_max, threads) -> None:
    # Tiles carrying every special value the finishing pass treats apart; a grid takes the factorised
    # path, scattered boxes (not every row band x column band) the accumulating one.
    rng = np.random.default_rng(11)
    h, w = 97, 173
    if layout == "grid":
        boxes = np.asarray(TileGrid.from_overlap_ratio(h, w, 3, 4, 0.25).boxes)
    else:
        boxes = np.array([[0, 0, 60, 100], [40, 0, 57, 90], [0, 80, 97, 93], [10.5, 30.25, 50, 70]])
    n = len(boxes)
    with np.errstate(over="ignore"):  # in float16 the values near float32's maximum become inf
        tiles = _finish_inputs(rng, n * 24 * 40).reshape(n, 1, 24, 40).astype(dtype)
    want = tiling.stitch(tiles, boxes, h, w, threads=threads)[0]
    want_valid = tiling.finish(want, scale, valid_max, threads=threads)
    got, got_valid = tiling.stitch_finish(tiles, boxes, h, w, scale=scale, valid_max=valid_max, threads=threads)
    assert got.shape == (h, w) and got.dtype == np.float32 and got_valid.dtype == np.bool_
    np.testing.assert_array_equal(got_valid, want_valid)
    np.testing.assert_array_equal(got, want)
    assert 0 < got_valid.mean() < 1  # the special values reached the output


@needs_native
def test_stitch_finish_refuses_what_it_cannot_finish() -> None:
    boxes = np.array([[0.0, 0.0, 8.0, 8.0]])
    with pytest.raises(ValueError, match="one-channel"):
        tiling.stitch_finish(np.ones((1, 2, 4, 4), np.float32), boxes, 8, 8)
    with pytest.raises(ValueError, match="scale"):
        tiling.stitch_finish(np.ones((1, 1, 4, 4), np.float32), boxes, 8, 8, scale=float("nan"))
    with pytest.raises(ValueError, match="uncovered"):
        tiling.stitch_finish(np.ones((1, 1, 4, 4), np.float32), boxes, 9, 8)
    # The extension called directly refuses the same before touching memory.
    for args in ((np.ones((1, 2, 4, 4), np.float32), boxes, 8, 8, 2, 1.0, 80.0, 1),
                 (np.ones((1, 1, 4, 4), np.float32), boxes, 8, 8, 2, -1.0, 80.0, 1),
                 (np.ones((1, 1, 4, 4), np.float32), boxes, 8, 8, 2, 1.0, float("nan"), 1),
                 (np.ones((1, 1, 4, 4), np.float32), boxes, 8, 8, 2, 1.0, 80.0, 0),
                 (np.ones((2, 1, 4, 4), np.float32), boxes, 8, 8, 2, 1.0, 80.0, 1)):
        with pytest.raises(ValueError):
            native.cpu.stitch_finish(*args)


@needs_native
@pytest.mark.parametrize("kind", ["rgb", "map"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_crop_into_out_equals_a_new_array(kind, dtype) -> None:
    rng = np.random.default_rng(3)
    src = (rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) if kind == "rgb"
           else rng.standard_normal((5, 40, 60)).astype(np.float32))
    boxes = _rand_boxes(rng, 6, 40, 60, integer=False)
    kw = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.25)} if kind == "rgb" else {}
    want = tiling.crop_resize(src, boxes, (9, 13), dtype=dtype, **kw)
    out = np.full(want.shape, np.nan, dtype)
    got = tiling.crop_resize(src, boxes, (9, 13), dtype=dtype, out=out, **kw)
    assert got is out
    np.testing.assert_array_equal(out, want)


@needs_native
def test_crop_refuses_an_out_it_cannot_fill() -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]])
    good = np.zeros((1, 3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="shape"):
        tiling.crop_resize(img, boxes, (4, 6), out=good)
    with pytest.raises(ValueError, match="float32"):
        tiling.crop_resize(img, boxes, (4, 5), out=good.astype(np.float16))
    with pytest.raises(ValueError, match="C-contiguous"):
        tiling.crop_resize(img, boxes, (4, 5), out=np.empty((1, 3, 4, 10), np.float32)[..., ::2])
    ro = good.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        tiling.crop_resize(img, boxes, (4, 5), out=ro)
    plane = np.zeros((3, 20, 30), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        tiling.crop_resize(plane, boxes, (20, 30), out=plane.reshape(1, 3, 20, 30))
    # The extension refuses the same on its own, before writing anything.
    mean, scale = [0.0] * 3, [1.0] * 3
    for out in (np.empty((1, 3, 4, 6), np.float32), good.astype(np.float16), ro, [1.0]):
        with pytest.raises(ValueError):
            native.cpu.crop_rgb(img, boxes, 4, 5, scale, mean, False, 1, out)
    with pytest.raises(ValueError, match="overlap"):
        native.cpu.crop_map(plane, boxes, 20, 30, False, 1, plane.reshape(1, 3, 20, 30))


@needs_native
@pytest.mark.parametrize("layout", ["grid", "free"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_stitch_into_out_equals_a_new_array(layout, dtype) -> None:
    rng = np.random.default_rng(4)
    if layout == "grid":
        g = TileGrid(50, 70, 2, 3, 6)
        boxes, height, width = g.boxes, g.height, g.width
    else:
        boxes, height, width = np.array([[0, 0, 30, 50], [20, 0, 30, 60], [0, 40, 50, 30]], np.float64), 50, 70
    tiles = rng.uniform(0.5, 9, (len(boxes), 2, 12, 17)).astype(dtype)
    want = tiling.stitch(tiles, boxes, height, width)
    out = np.full(want.shape, np.nan, np.float32)
    got = tiling.stitch(tiles, boxes, height, width, out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)


@needs_native
def test_stitch_refuses_an_out_it_cannot_fill() -> None:
    tiles = np.ones((1, 1, 4, 4), np.float32)
    boxes = np.array([[0.0, 0.0, 8.0, 8.0]])
    for bad, match in ((np.empty((1, 8, 9), np.float32), "shape"), (np.empty((1, 8, 8), np.float16), "float32"),
                       (np.empty((1, 8, 16), np.float32)[..., ::2], "C-contiguous")):
        with pytest.raises(ValueError, match=match):
            tiling.stitch(tiles, boxes, 8, 8, out=bad)
    # The extension refuses the same on its own, before writing anything, and an out over the tiles.
    kind = tiling.WINDOWS.index("cosine")
    for bad in (np.empty((1, 8, 9), np.float32), np.empty((1, 8, 8), np.float16), [1.0]):
        with pytest.raises(ValueError):
            native.cpu.stitch(tiles, boxes, 8, 8, kind, 1, bad)
    flat = np.ones(64, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        native.cpu.stitch(flat[:16].reshape(1, 1, 4, 4), boxes, 8, 8, kind, 1, flat.reshape(1, 8, 8))


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_frame_sized_stitch_equals_torch(threads) -> None:
    # Outputs of 16 MiB and more are written with streaming stores from a row buffer (a 4K frame
    # here); the row buffer, the streamed finishing pass and an output whose rows start off a
    # 32-byte boundary must give what the torch stitch and the in-place finishing pass give.
    rng = np.random.default_rng(12)
    g = TileGrid(2160, 3840, 4, 4, 135)
    tiles = rng.uniform(0.5, 2.0, (16, 1, 48, 64)).astype(np.float32)
    want = tiling_torch.stitch(torch.from_numpy(tiles), g.boxes, 2160, 3840, "cosine").numpy()
    spare = np.empty(2160 * 3840 + 1, np.float32)
    out = spare[1:].reshape(1, 2160, 3840)  # 4 bytes past an aligned start
    got = tiling.stitch(tiles, g.boxes, 2160, 3840, threads=threads, out=out)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # Every special value the finishing pass treats apart, streamed and in place.
    with np.errstate(over="ignore"):
        tiles = _finish_inputs(rng, tiles.size).reshape(tiles.shape).astype(np.float32)
    depth, valid = tiling.stitch_finish(tiles, g.boxes, 2160, 3840, scale=1.5, valid_max=80.0, threads=threads)
    want = tiling.stitch(tiles, g.boxes, 2160, 3840, threads=threads)[0]
    want_valid = tiling.finish(want, 1.5, 80.0, threads=threads)
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_array_equal(depth, want)
    assert 0.05 < valid.mean() < 0.95


@needs_native
def test_every_instruction_set_gives_the_same_bits(tmp_path) -> None:
    # The CPU engine picks AVX-512, AVX2 or scalar code at run time; ARM boards (Jetson) run the scalar
    # code. EDGEDEPTH_MAX_ISA caps a process at "scalar" or "avx2", so on one x86 machine every path
    # runs the same inputs and must give the same bits: crops that enlarge and shrink (0.5x, 2.4x:
    # 8 outputs within 32 entries, 4.7x: within 64, 12x: gathers), float16 in and out, the grid and
    # the free-layout stitch of enlarged, shrunk, near-size (groups reaching a second register) and
    # float16 tiles, the fused finishing pass with
    # every special value, the joint and guided upsampling of flat blocks and steps, and edge snapping.
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(13)
    np.save(tmp_path / "frame.npy", rng.integers(0, 256, (700, 1300, 3), dtype=np.uint8))
    np.save(tmp_path / "boxes.npy", np.array([[3.5, 7.25, 40, 60], [0, 0, 300, 537.6], [10, 20, 600, 1052.8],
                                              [0, 0, 700, 1296]]))
    np.save(tmp_path / "tiles.npy", rng.uniform(0.5, 9, (12, 2, 150, 190)).astype(np.float32))
    with np.errstate(over="ignore"):
        np.save(tmp_path / "special.npy", _finish_inputs(rng, 12 * 40 * 50).reshape(12, 1, 40, 50).astype(np.float32))
    code = """
import sys, numpy as np
from edgedepth import tiling
d = sys.argv[1]
frame, boxes, tiles, special = (np.load(f"{d}/{k}.npy") for k in ("frame", "boxes", "tiles", "special"))
kw = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
g = tiling.TileGrid(700, 1300, 3, 4, 60)
free = np.array([[0, 0, 400, 700], [300, 0, 400, 800], [0, 600, 700, 700], [100.5, 300.25, 300, 500]] * 3)
shrunk = np.random.default_rng(2).uniform(1, 3, (12, 1, 150, 800)).astype(np.float32)
blocks = (2 + 6 * (np.add.outer(np.arange(150) // 20, np.arange(190) // 25) % 2)) * (1 + tiles[0, 0] / 2000)
blocks = blocks.astype(np.float32)
guide = np.ascontiguousarray(tiles[2:5, 0] / 9)
maps = np.ascontiguousarray(tiles[:3, 0])
out = dict(
    rgb=tiling.crop_resize(frame, boxes, (100, 108), **kw),
    rgb16=tiling.crop_resize(frame, boxes, (100, 108), dtype=np.float16, **kw),
    map=tiling.crop_resize(maps, [[0, 0, 150, 190], [10.5, 3, 40, 50]], (97, 260)),
    map_down=tiling.crop_resize(maps, [[0, 0, 150, 190], [8.5, 3, 140, 180]], (31, 17)),
    map16=tiling.crop_resize(maps.astype(np.float16), [[0, 0, 150, 190]], (97, 60), dtype=np.float16),
    up=tiling.stitch(tiles, g.boxes, 700, 1300),
    down=tiling.stitch(shrunk, g.boxes, 700, 1300),
    near=tiling.stitch(np.random.default_rng(3).uniform(1, 3, (12, 1, 260, 360)).astype(np.float32), g.boxes, 700, 1300),
    half=tiling.stitch(tiles.astype(np.float16), g.boxes, 700, 1300),
    free=tiling.stitch(tiles, free, 700, 1300),
    finished=np.stack(tiling.stitch_finish(special, g.boxes, 700, 1300, scale=1.5, valid_max=80.0)).astype(np.float32),
    big=np.stack(tiling.stitch_finish(tiles[:, :1], tiling.TileGrid(2160, 3840, 3, 4, 60).boxes, 2160, 3840, scale=0.7)),
    joint=tiling.joint_upsample(blocks, guide, frame[:611, :1277], 0.05)[0],
    guided=tiling.guided_upsample(blocks, guide, frame[:611, :1277], 2, 3, 1e-5)[0],
    snap=tiling.snap_edges(blocks, guide, 0.1),
)
np.savez(f"{d}/{sys.argv[2]}.npz", **out)
"""
    for cap in ("scalar", "avx2", "best"):
        env = {**os.environ, "EDGEDEPTH_MAX_ISA": cap}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), cap], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
    got = {cap: np.load(tmp_path / f"{cap}.npz") for cap in ("scalar", "avx2", "best")}
    for key in got["scalar"].files:
        np.testing.assert_array_equal(got["avx2"][key], got["scalar"][key], err_msg=f"{key}: avx2 vs scalar")
        np.testing.assert_array_equal(got["best"][key], got["scalar"][key], err_msg=f"{key}: best vs scalar")
    want = ref.crop_resize(np.load(tmp_path / "frame.npy"), np.load(tmp_path / "boxes.npy"), (100, 108),
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    np.testing.assert_allclose(got["best"]["rgb"], want, rtol=0, atol=2e-5)