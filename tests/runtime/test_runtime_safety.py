"""Runtime contracts under hostile or careless input: depth finite and >= 0 after any rescale,
implausible cameras refused, the memory budget counting what is really allocated (checked before
allocating), thread counts capped, EXIF orientation honoured."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.runtime import _HostOps

from .tiny_models import random_image as _image


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return Runtime(tiny_bundle, backend="onnxruntime", threads=1)


# --- finite and >= 0 after scaling -----------------------------------------------------------------

@pytest.mark.parametrize("scale", [1e30, 3e38, 1e-30, 1e-45])
def test_finish_enforces_the_contract_after_scaling(scale):
    raw = np.array([[1e10, 2.0], [np.nan, -3.0]], np.float32)
    depth, valid = _HostOps(threads=1).finish(raw, scale)
    assert np.isfinite(depth).all() and (depth >= 0).all()
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = raw * np.float32(scale)
    # A pixel whose rescaled depth overflowed is unknown and reported as "no depth" (0), never inf;
    # a depth of 0 or less is no depth either.
    np.testing.assert_array_equal(valid, np.isfinite(scaled) & (scaled > 0))
    np.testing.assert_array_equal(depth, np.where(np.isfinite(scaled), np.maximum(scaled, 0), 0))


@pytest.mark.parametrize("intrinsics, match", [
    (1e300, r"fx = 1e\+300 px is .* x the image width 60"),
    (np.eye(3), r"fx = 1 px is 0\.0167 x the image width 60"),
    (1e-300, r"fx = 1e-300 px"),
    (-500.0, r"finite and > 0"),
    (np.full((3, 3), np.nan), r"intrinsics must be finite"),
    ("wide", r"intrinsics must be a 3x3 camera matrix"),
])
def test_implausible_focal_lengths_are_refused(runtime, intrinsics, match):
    with pytest.raises(ValueError, match=match):
        runtime.predict(_image(), intrinsics=intrinsics)


def test_plausible_focal_lengths_scale_depth(runtime):
    image = _image()
    base = runtime.predict(image)
    for fx in (0.05 * 60, 0.8 * 60, 100 * 60):  # the ends of the accepted fx/width range, and the bundle's own
        got = runtime.predict(image, intrinsics=fx)
        assert np.isfinite(got.depth).all() and (got.depth >= 0).all()
        np.testing.assert_allclose(got.depth, base.depth * (fx / 60) / 0.8, rtol=1e-5)


# --- the memory budget ------------------------------------------------------------------------------

def _peak_bytes(fn) -> int:
    """Peak bytes numpy (and the native engine, which allocates through numpy) held during fn()."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("tiles, shape, fixed_batch", [((2, 2), (90, 120), None), ((16, 16), (200, 300), None),
                                                       ((3, 3), (64, 64), 4)])
def test_budget_counts_what_a_frame_really_allocates(tiny_bundle, tiles, shape, fixed_batch):
    rt = Runtime(tiny_bundle, backend="onnxruntime", tiles=tiles, threads=1, max_tile_batch=4)
    rt.refiner_batch = fixed_batch  # as a fixed-batch model would declare (padded chunks)
    need = rt.frame_bytes(*shape)
    rt.memory_budget_mb = need / 2**20
    image = _image(*shape)
    peak = _peak_bytes(lambda: rt.predict(image))
    assert peak <= need, f"peak {peak} B > budget {need} B"
    rt.memory_budget_mb = need / 2**20 * 0.999
    with pytest.raises(ValueError, match="over the memory budget"):
        rt.predict(image)


def test_many_small_tiles_are_counted_all_at_once(tiny_bundle):
    # 64x64 tiles on 1080p used to be counted as max_tile_batch tiles and peaked at 3.6 GB under a 1 GB budget.
    rt = Runtime(tiny_bundle, backend="onnxruntime", tiles=(64, 64), memory_budget_mb=64, threads=1)
    assert rt.frame_bytes(1080, 1920) > 64 * 2**20
    with pytest.raises(ValueError, match=r"frame 1080x1920 needs about \d+ MB, over the memory budget of 64 MB"):
        rt.predict(np.zeros((1080, 1920, 3), np.uint8))


def test_float_frames_are_refused_before_they_are_converted(tiny_bundle):
    rt = Runtime(tiny_bundle, backend="onnxruntime", memory_budget_mb=40, threads=1)
    image = np.zeros((1000, 1000, 3), np.float32)  # 12 MB; converting it takes 2 more float copies
    assert rt.frame_bytes(1000, 1000) < 40 * 2**20 < rt.frame_bytes(1000, 1000, 4)

    def refused():
        with pytest.raises(ValueError, match="over the memory budget"):
            rt.predict(image)

    assert _peak_bytes(refused) < 2**20


def test_image_files_are_refused_from_the_header(tiny_bundle, tmp_path):
    from edgedepth.depth_io import write_image

    write_image(tmp_path / "big.png", np.zeros((2000, 3000, 3), np.uint8))
    rt = Runtime(tiny_bundle, backend="onnxruntime", memory_budget_mb=16, threads=1)
    with pytest.raises(ValueError, match=r"big\.png is 3000x2000, over the \d+ pixels allowed \(it was not decoded\)"):
        rt.predict(tmp_path / "big.png")


# --- threads --------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [0, 257, 4000, True, 2.0])
def test_thread_counts_are_capped(tiny_bundle, threads):
    with pytest.raises(ValueError, match=r"threads must be None or an integer in \[1, 256\]"):
        Runtime(tiny_bundle, backend="onnxruntime", threads=threads)


# --- EXIF orientation ---------------------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path, runtime):
    from PIL import Image

    from edgedepth.depth_io import read_image

    stored = _image(40, 60)  # as the sensor wrote it; EXIF 6 = "rotate 90 degrees clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "portrait.png", exif=exif)
    upright = np.rot90(stored, k=-1)
    np.testing.assert_array_equal(read_image(tmp_path / "portrait.png"), upright)
    result = runtime.predict(tmp_path / "portrait.png")
    assert result.depth.shape == (60, 40)
    np.testing.assert_array_equal(result.depth, runtime.predict(np.ascontiguousarray(upright)).depth)
