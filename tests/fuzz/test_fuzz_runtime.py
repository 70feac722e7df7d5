"""Fuzzing Runtime.predict with the frames and cameras a careless caller or an attacker could pass.
Contracts: a TypeError/ValueError (FileNotFoundError for a path) naming the problem, or a depth map
of the frame's size, finite and >= 0, with a boolean validity mask beside it; and memory bounded:
a frame is refused before anything is allocated, or what the runtime allocates stays within its
budget (numpy and native allocations, traced)."""
from __future__ import annotations

import tracemalloc
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgedepth import Runtime

from .profiles import fuzz

ERRORS = (TypeError, ValueError, FileNotFoundError)


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return Runtime(tiny_bundle, backend="onnxruntime", threads=1)


side = st.integers(1, 48)
unit_floats = st.floats(0, 1, width=16)
image_st = st.one_of(
    hnp.arrays(np.uint8, st.tuples(side, side, st.just(3))),
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(300, 900), st.just(3))),  # extreme aspect
    hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64]), st.tuples(side, side, st.just(3)),
               elements=unit_floats),
    hnp.arrays(st.sampled_from([np.float32, np.float64]), st.tuples(side, side, st.just(3)),
               elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
    hnp.arrays(st.sampled_from([np.uint8, np.int16, np.bool_, np.complex64, np.uint16]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
    st.sampled_from([None, 3, "no/such/frame.png", b"bytes", [[[0, 0, 0]]], {"image": 1}]),
)
intrinsics_st = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1, 5000),
    hnp.arrays(np.float64, (3, 3), elements=st.floats(allow_nan=True, allow_infinity=True)),
    st.floats(5, 2000).map(lambda f: np.array([[f, 0, 16], [0, f, 12], [0, 0, 1]])),
    hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=4)),
    st.sampled_from(["wide", [1, 2], {"fx": 500}]),
)


@fuzz(200)
@given(image=image_st, intrinsics=intrinsics_st)
def test_predict_is_a_named_error_or_finite_non_negative_depth(runtime, image, intrinsics):
    try:
        result = runtime.predict(image, intrinsics=intrinsics)
    except ERRORS as err:
        event(f"refused: {type(err).__name__}")
        return
    event("predicted")
    h, w = np.shape(image)[:2]
    assert result.depth.shape == result.valid.shape == (h, w)
    assert result.depth.dtype == np.float32 and result.valid.dtype == np.bool_
    assert np.isfinite(result.depth).all() and (result.depth >= 0).all()
    assert np.isfinite(result.coarse).all() and (result.coarse >= 0).all()


@lru_cache(maxsize=None)
def _runtime_with_tiles(bundle: str, rows: int, cols: int) -> Runtime:
    return Runtime(bundle, backend="onnxruntime", tiles=(rows, cols), threads=1, max_tile_batch=3)


@fuzz(60)
@given(h=st.integers(1, 300), w=st.integers(1, 300), rows=st.integers(1, 12), cols=st.integers(1, 12),
       budget_mb=st.floats(0.05, 8), dtype=st.sampled_from([np.uint8, np.uint8, np.float32, np.float16]))
def test_memory_stays_within_the_budget(tiny_bundle, h, w, rows, cols, budget_mb, dtype):
    rt = _runtime_with_tiles(str(tiny_bundle), rows, cols)
    rt.memory_budget_mb = budget_mb
    image = np.full((h, w, 3), 0.5 if dtype != np.uint8 else 128, dtype=dtype)
    tracemalloc.start()
    try:
        try:
            result = rt.predict(image)
        except ValueError as err:
            assert "over the memory budget" in str(err)
            event("refused")
            # Refused before allocating: nothing the size of the frame was made.
            assert tracemalloc.get_traced_memory()[1] < 64 * 1024
            return
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    event("predicted")
    assert result.depth.shape == (h, w)
    assert peak <= budget_mb * 2**20, f"peak {peak} B over the budget {budget_mb * 2**20:.0f} B"
