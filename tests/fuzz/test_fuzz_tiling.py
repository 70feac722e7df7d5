"""Fuzzing the tile engine (edgedepth.tiling and the native module behind it) with arbitrary arrays,
boxes, sizes and thread counts. Contract: a TypeError/ValueError naming the problem, or the numpy
reference's answer; never a crash (scripts/sanitize.sh runs this file under ASan + UBSan too)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgedepth import native, tiling, tiling_reference

from .profiles import fuzz

needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")
ERRORS = (TypeError, ValueError)

def _one_in(n: int):
    """True with probability 1/n (integers would lean to their bounds)."""
    return st.sampled_from([True] + [False] * (n - 1))


# Arbitrary values a box entry can take once something has gone wrong.
wild = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-50, 50), st.just(1e308))


@st.composite
def boxes_in(draw, h: int, w: int):
    """Boxes inside an h x w frame (fractional, down to 1/1000 px), and in a quarter of the cases one
    thing broken: an entry made wild, the shape, the dtype or the type."""
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        bh, bw = draw(st.floats(1e-3, max(h, 1e-3))), draw(st.floats(1e-3, max(w, 1e-3)))
        rows.append([draw(st.floats(0, max(h - bh, 0))), draw(st.floats(0, max(w - bw, 0))), bh, bw])
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 4)
    damage = draw(st.sampled_from(["none"] * 6 + ["value", "shape", "dtype", "list", "type"]))
    if damage == "value" and boxes.size:
        boxes[draw(st.integers(0, len(boxes) - 1)), draw(st.integers(0, 3))] = draw(wild)
    elif damage == "shape":
        boxes = boxes.reshape(-1)[: draw(st.integers(0, boxes.size))]
    elif damage == "dtype":
        boxes = boxes.astype(draw(st.sampled_from([np.float32, np.int32, np.uint8, np.float16])))
    elif damage == "list":
        boxes = boxes.tolist()
    elif damage == "type":
        boxes = draw(st.sampled_from(["boxes", None, {"y0": 0}]))
    return boxes


@st.composite
def crop_args(draw):
    """A source the engine accepts (HWC uint8 RGB, CHW float32/16) or, in a fifth of the cases, one it
    must refuse; boxes inside it (boxes_in)."""
    kind = draw(st.sampled_from(["rgb"] * 4 + ["map"] * 4 + ["odd"] * 2))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    if kind == "rgb":
        src = draw(hnp.arrays(np.uint8, (h, w, 3)))
    elif kind == "map":
        src = draw(hnp.arrays(st.sampled_from([np.float32, np.float16]), (draw(st.integers(1, 4)), h, w),
                              elements=st.floats(-1e3, 1e3, width=16)))
        if draw(st.booleans()):
            src = np.ascontiguousarray(src.transpose(0, 2, 1)).transpose(0, 2, 1)  # non-contiguous view
    else:
        src = draw(st.one_of(
            hnp.arrays(np.uint8, st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([0, 1, 4]))),
            hnp.arrays(st.sampled_from([np.float64, np.int16, np.bool_]), hnp.array_shapes(min_dims=1, max_dims=4,
                                                                                             max_side=6)),
            st.just([[1, 2, 3]]), st.none()))
    out_size = draw(st.one_of(st.tuples(st.integers(1, 20), st.integers(1, 20)), st.integers(1, 20).map(lambda n: (n, n)),
                              st.sampled_from([(0, 3), (-1, 2), (3,), "3x3", (2.5, 2), (True, 2)])))
    return src, draw(boxes_in(h, w)), out_size


threads_st = st.one_of(st.none(), st.integers(1, 8), st.integers(1, 8), st.sampled_from([0, -1, 257, 300, True, 2.0]))


@needs_native
@fuzz(300)
@given(args=crop_args(), threads=threads_st, half=st.booleans())
def test_crop_resize_is_an_error_or_the_reference(args, threads, half):
    src, boxes, out_size = args
    try:
        got = tiling.crop_resize(src, boxes, out_size, threads=threads, dtype=np.float16 if half else np.float32)
    except ERRORS as err:
        event(f"refused: {type(err).__name__}")
        return
    event("cropped")
    bx = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    want = tiling_reference.crop_resize(np.ascontiguousarray(src), bx, tuple(out_size),
                                        dtype=np.float16 if half else np.float32)
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = 2e-3 * max(1.0, float(np.abs(src).max(initial=0))) if half else 1e-5 * max(1.0, float(np.abs(src).max(initial=0)))
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=0, atol=tol)


@st.composite
def stitch_args(draw):
    """Tiles for boxes that cover an h x w frame (a grid, or random boxes plus a whole-frame box), or,
    in a fifth of the cases, tiles and a frame size the engine must refuse; boxes as boxes_in damages them."""
    h, w = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    boxes = draw(boxes_in(h, w))
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2 and not draw(_one_in(4)):
        boxes = np.concatenate([boxes, [[0.0, 0.0, h, w]]]).astype(boxes.dtype)  # every pixel covered
    n = len(boxes) if isinstance(boxes, (np.ndarray, list)) else 1
    odd = draw(_one_in(5))
    dtype = draw(st.sampled_from([np.float64, np.uint8, np.int32])) if odd else draw(st.sampled_from([np.float32, np.float16]))
    shape = (draw(st.integers(0, 3)) if odd else n, draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    tiles = draw(hnp.arrays(dtype, shape, elements=st.integers(0, 100)))
    if odd:
        h, w = draw(st.sampled_from([(h, w), (0, w), (h, -1), (2**31 + 7, w), (h, 2.5)]))
    return tiles, boxes, h, w


@needs_native
@fuzz(300)
@given(args=stitch_args(), window=st.sampled_from([*tiling.WINDOWS] * 2 + ["bogus", 2]), threads=threads_st)
def test_stitch_is_an_error_or_the_reference(args, window, threads):
    tiles, boxes, height, width = args
    try:
        got = tiling.stitch(tiles, boxes, height, width, window=window, threads=threads)
    except ERRORS as err:
        event(f"refused: {type(err).__name__}")
        return
    event("stitched")
    want = tiling_reference.stitch(tiles, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), height, width, window)
    assert got.shape == want.shape == (tiles.shape[1], height, width)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@st.composite
def whole_grid(draw):
    """A real tile grid with arbitrary tiles: the path the runtime takes, every value legal."""
    h, w = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    grid = tiling.TileGrid.from_overlap_ratio(h, w, draw(st.integers(1, 5)), draw(st.integers(1, 5)),
                                              draw(st.floats(0, 0.9)))
    th, tw = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    tiles = draw(hnp.arrays(np.float32, (len(grid), 1, th, tw), elements=st.floats(0, 100, width=32)))
    return grid, tiles


@needs_native
@fuzz(150)
@given(case=whole_grid(), threads=st.integers(1, 8))
def test_stitching_a_grid_is_finite_and_within_the_tile_range(case, threads):
    grid, tiles = case
    got = tiling.stitch(tiles, grid.boxes, grid.height, grid.width, threads=threads)[0]
    assert np.isfinite(got).all()
    assert tiles.min() - 1e-3 <= got.min() and got.max() <= tiles.max() + 1e-3
    np.testing.assert_array_equal(got, tiling.stitch(tiles, grid.boxes, grid.height, grid.width, threads=1)[0])


# The native module called directly, as another extension or a careless user could: anything goes.
any_array = st.one_of(
    hnp.arrays(st.sampled_from([np.uint8, np.float16, np.float32, np.float64, np.int64]),
               hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6)),
    st.none(), st.integers(), st.text(max_size=3),
)
EDGE_INTS = (0, -3, 2**28 + 1, 2**31 - 1, -(2**31))


@st.composite
def native_call(draw):
    """(op, positional args) for the native module: two thirds what tiling.py would pass (sources,
    boxes inside them, sizes, threads), one third anything at all."""
    op = draw(st.sampled_from(["crop_rgb", "crop_map", "stitch", "window"]))
    ints = [draw(st.sampled_from(EDGE_INTS)) if draw(_one_in(8)) else draw(st.integers(1, 40))
            for _ in range(3)]
    if op == "window":
        assume(ints[0] * ints[1] < 1 << 22)
        return op, (ints[0], ints[1], ints[2] % 5)
    if draw(_one_in(4)):
        a, b = draw(any_array), draw(st.one_of(boxes_in(8, 8), any_array))
    elif op == "stitch":
        a, b, ints[0], ints[1] = draw(stitch_args())
    else:
        h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        shape = (h, w, 3) if op == "crop_rgb" else (draw(st.integers(1, 4)), h, w)
        a = draw(hnp.arrays(np.uint8 if op == "crop_rgb" else st.sampled_from([np.float32, np.float16]), shape))
        b = draw(boxes_in(h, w))
    if isinstance(b, list):
        b = np.asarray(b, dtype=np.float64)
    half = draw(st.booleans())
    if op == "crop_rgb":
        return op, (a, b, ints[0], ints[1], [1.0] * 3, [0.0] * 3, half, ints[2])
    if op == "crop_map":
        return op, (a, b, ints[0], ints[1], half, ints[2])
    return op, (a, b, ints[0], ints[1], draw(st.integers(-1, 4)), ints[2])


@needs_native
@fuzz(400)
@given(call=native_call())
def test_native_module_checks_everything_itself(call):
    op, args = call
    try:
        out = getattr(native.cpu, op)(*args)
    except ERRORS as err:
        event(f"refused: {type(err).__name__}")
        return
    event(f"{op} ran")
    assert isinstance(out, np.ndarray) and out.dtype in (np.float32, np.float16)


@st.composite
def snap_args(draw):
    """A depth map with any float32 values (NaN, inf, zero, negative among them), a guide that
    usually matches it, and a contrast that is usually valid."""
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    depth = draw(hnp.arrays(np.float32, (h, w), elements=st.one_of(
        st.floats(0.5, 60.0, width=32), st.floats(allow_nan=True, allow_infinity=True, width=32))))
    gh, gw = (h, w) if draw(st.integers(0, 9)) else (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    guide = draw(hnp.arrays(np.float32, (3, gh, gw), elements=st.floats(0, 1, width=32)))
    contrast = draw(st.one_of(st.floats(0.01, 2.0), st.sampled_from([0.0, -0.1, float("nan"), 11.0])))
    return depth, guide, contrast


@needs_native
@fuzz(300)
@given(args=snap_args(), threads=st.integers(1, 4))
def test_snap_edges_is_an_error_or_the_reference(args, threads):
    depth, guide, contrast = args
    try:
        got = tiling.snap_edges(depth, guide, contrast, threads=threads)
    except ERRORS as err:
        event(f"refused: {type(err).__name__}")
        assert guide.shape != (3, *depth.shape) or not 0 < contrast <= 10
        return
    np.testing.assert_array_equal(got, tiling_reference.snap_edges(depth, guide, contrast))


@st.composite
def guided_args(draw):
    """A depth map with any float32 values (NaN, inf, zero, negative among them), a guide that
    usually matches it, a frame of any size, and a step, radius and eps that are usually valid."""
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    depth = draw(hnp.arrays(np.float32, (h, w), elements=st.one_of(
        st.floats(0.5, 60.0, width=32), st.floats(allow_nan=True, allow_infinity=True, width=32))))
    gh, gw = (h, w) if draw(st.integers(0, 9)) else (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    guide = draw(hnp.arrays(np.float32, (3, gh, gw), elements=st.floats(0, 1, width=32)))
    image = draw(hnp.arrays(np.uint8, (draw(st.integers(1, 30)), draw(st.integers(1, 30)), 3)))
    step = draw(st.one_of(st.integers(1, 4), st.sampled_from([0, 17, -1])))
    radius = draw(st.one_of(st.integers(0, 5), st.sampled_from([-1, 65])))
    eps = draw(st.one_of(st.floats(1e-6, 1e-2), st.sampled_from([0.0, float("nan"), 2.0])))
    return depth, guide, image, step, radius, eps


@needs_native
@fuzz(300)
@given(args=guided_args(), threads=st.integers(1, 4))
def test_guided_upsample_is_an_error_or_the_reference(args, threads):
    from edgedepth.guided_filter import fast_guided_upsample

    depth, guide, image, step, radius, eps = args
    try:
        got, valid = tiling.guided_upsample(depth, guide, image, step, radius, eps, threads=threads)
    except ERRORS as err:
        event(f"refused: {type(err).__name__}")
        assert guide.shape != (3, *depth.shape) or not 1 <= step <= 16 or not 0 <= radius <= 64 or not 1e-8 <= eps <= 1
        return
    want = fast_guided_upsample(depth, guide, image, step, radius, eps)
    ok = np.isfinite(want)
    np.testing.assert_array_equal(valid, ok)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4)
    assert (got[~ok] == 0).all()
