"""The CUDA engine's per-pixel code, compiled for the host and held to the CPU engine's bits, so that
its kernels' arithmetic is checked where no GPU is (tests/cuda runs the kernels themselves on a GPU):
the grid stitch (csrc/grid_stitch.hpp), which must also refuse every layout it does not take, the
joint upsampling's gather, blend and finish (csrc/tile_math.hpp), the guided filter
(csrc/guided_math.hpp) and several maps cropped in one launch (csrc/map_crops.hpp)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgedepth import native, tiling
from edgedepth.tiling import TileGrid

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
pytestmark = [pytest.mark.skipif(CXX is None, reason="no C++ compiler"),
              pytest.mark.skipif(native.cpu is None, reason="native CPU engine not built")]


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("host") / "cuda_code_host"
    # -ffp-contract=off: the CUDA module is built with -fmad=false, the CPU one with this flag. Under
    # AddressSanitizer + UBSan where the compiler has them, so a kernel's bad index fails here too.
    base = [CXX, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-I", str(ROOT / "csrc"),
            str(ROOT / "tests/native/cuda_code_host.cpp"), "-o", str(exe)]
    sanitized = subprocess.run(base + ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                               capture_output=True)
    if sanitized.returncode != 0:
        subprocess.run(base, check=True)
    return exe


def _run(exe: Path, tmp: Path, tiles: np.ndarray, boxes, height: int, width: int, kind: str) -> np.ndarray | None:
    boxes = np.ascontiguousarray(boxes, dtype=np.float64)
    n, c, th, tw = tiles.shape
    half = tiles.dtype == np.float16
    head = np.array([n, c, th, tw, height, width, tiling.WINDOWS.index(kind), int(half)], np.int32)
    (tmp / "in.bin").write_bytes(head.tobytes() + boxes.tobytes() + np.ascontiguousarray(tiles).tobytes())
    done = subprocess.run([str(exe), "grid", str(tmp / "in.bin"), str(tmp / "out.bin")])
    if done.returncode == 3:
        return None
    assert done.returncode == 0
    return np.fromfile(tmp / "out.bin", np.float32).reshape(c, height, width)


@pytest.mark.parametrize("kind", tiling.WINDOWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_grid_stitch_gives_the_cpu_engines_bits(harness, tmp_path, kind, dtype) -> None:
    rng = np.random.default_rng(3)
    for height, width, rows, cols, overlap, th, tw, c in [(270, 480, 4, 4, 17, 56, 96, 1), (97, 131, 3, 3, 11, 40, 40, 2),
                                                          (64, 200, 1, 5, 9, 30, 33, 1), (33, 21, 2, 1, 0, 9, 60, 3)]:
        g = TileGrid(height, width, rows, cols, overlap)
        tiles = rng.uniform(0.5, 80.0, (len(g), c, th, tw)).astype(dtype)
        got = _run(harness, tmp_path, tiles, g.boxes, height, width, kind)
        assert got is not None, (height, width, rows, cols)
        np.testing.assert_array_equal(got, tiling.stitch(tiles, g.boxes, height, width, kind))


def test_shuffled_boxes_and_uncovered_pixels(harness, tmp_path) -> None:
    # Grid order does not matter; pixels outside every box are 0 in both engines (the public stitch
    # refuses such boxes, the engines below it do not).
    rng = np.random.default_rng(4)
    g = TileGrid(60, 90, 2, 3, 8)
    boxes = np.ascontiguousarray(g.boxes[rng.permutation(len(g))] * 0.8 + 3.0)
    tiles = rng.standard_normal((len(g), 1, 16, 24)).astype(np.float32)
    got = _run(harness, tmp_path, tiles, boxes, 60, 90, "cosine")
    want = native.cpu.stitch(tiles, boxes, 60, 90, tiling.WINDOWS.index("cosine"), 1)
    assert (want[:, -5:, -5:] == 0).all()
    np.testing.assert_array_equal(got, want)


def test_layouts_it_does_not_take_are_refused(harness, tmp_path) -> None:
    rng = np.random.default_rng(5)
    tiles = rng.random((3, 1, 8, 8)).astype(np.float32)
    scattered = np.array([[0.0, 0, 20, 20], [5, 12, 30, 25], [17, 3, 12, 40]])
    assert _run(harness, tmp_path, tiles, scattered, 50, 50, "cosine") is None  # not a grid
    thick = np.array([[0.0, 0, 30, 50], [10, 0, 30, 50], [20, 0, 30, 50]])  # three row bands over y = 25
    assert _run(harness, tmp_path, tiles, thick, 50, 50, "cosine") is None
    doubled = np.array([[0.0, 0, 25, 50], [0.0, 0, 25, 50], [25, 0, 25, 50]])  # a box twice, a cell empty
    assert _run(harness, tmp_path, tiles, doubled, 50, 50, "cosine") is None


@pytest.mark.parametrize("sigma, scale, valid_max", [(0.05, 1.0, np.inf), (0.01, 1.25, 60.0), (0.5, 0.8, 20.0)])
def test_joint_upsampling_gives_the_cpu_engines_bits(harness, tmp_path, sigma, scale, valid_max) -> None:
    rng = np.random.default_rng(6)
    for h, w, height, width in [(54, 96, 216, 384), (37, 41, 100, 333), (20, 30, 20, 30)]:
        depth = np.exp(rng.uniform(0.0, 4.0, (h, w))).astype(np.float32)
        depth[h // 3:, : w // 2] *= 3.0  # steps, so that both the flat and the colour-weighted blend run
        depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, -1.0, np.inf  # and the finish rejects something
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        guide = tiling.crop_resize(image, [[0.0, 0.0, height, width]], (h, w))[0]
        head = np.array([h, w, height, width], np.int32).tobytes() + np.array([sigma, scale, valid_max], np.float32).tobytes()
        (tmp_path / "in.bin").write_bytes(head + depth.tobytes() + guide.tobytes() + image.tobytes())
        subprocess.run([str(harness), "joint", str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
        raw = (tmp_path / "out.bin").read_bytes()
        got = np.frombuffer(raw[: 4 * height * width], np.float32).reshape(height, width)
        got_valid = np.frombuffer(raw[4 * height * width:], np.uint8).reshape(height, width).astype(bool)
        want, want_valid = tiling.joint_upsample(depth, guide, image, sigma, scale, valid_max)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(got_valid, want_valid)


@pytest.mark.parametrize("step, radius, eps, scale, valid_max",
                         [(2, 3, 1e-5, 1.0, np.inf), (1, 2, 1e-3, 1.25, 60.0), (3, 1, 1e-8, 0.8, 20.0), (2, 0, 1e-5, 1.0, 80.0)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_guided_upsampling_gives_the_cpu_engines_bits(harness, tmp_path, step, radius, eps, scale, valid_max,
                                                      threads) -> None:
    # The CPU engine splits the rows among its threads and the CUDA engine works one pooled pixel at
    # a time: both form every sum in the one order of csrc/guided_math.hpp, so any split gives these bits.
    rng = np.random.default_rng(7)
    seen = np.zeros(2, bool)  # valid and invalid output pixels, so that the finish is exercised both ways
    for h, w, height, width in [(54, 96, 216, 384), (37, 41, 100, 333), (20, 31, 20, 31), (5, 3, 40, 17)]:
        depth = np.exp(rng.uniform(0.0, 4.0, (h, w))).astype(np.float32)
        depth[h // 3:, : w // 2] *= 3.0
        depth[0, 0], depth[1, min(1, w - 1)], depth[h - 1, w - 1] = np.nan, -1.0, np.inf  # pooled pixels without depth
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        guide = tiling.crop_resize(image, [[0.0, 0.0, height, width]], (h, w))[0]
        head = (np.array([h, w, height, width, step, radius], np.int32).tobytes() + np.array([eps]).tobytes()
                + np.array([scale, valid_max], np.float32).tobytes())
        (tmp_path / "in.bin").write_bytes(head + depth.tobytes() + guide.tobytes() + image.tobytes())
        subprocess.run([str(harness), "guided", str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
        raw = (tmp_path / "out.bin").read_bytes()
        got = np.frombuffer(raw[: 4 * height * width], np.float32).reshape(height, width)
        got_valid = np.frombuffer(raw[4 * height * width:], np.uint8).reshape(height, width).astype(bool)
        want, want_valid = tiling.guided_upsample(depth, guide, image, step, radius, eps, scale, valid_max,
                                                  threads=threads)
        seen |= [want_valid.any(), not want_valid.all()]
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(got_valid, want_valid)
    assert seen.all()


def _run_maps(exe: Path, tmp: Path, srcs: list[np.ndarray], boxes: np.ndarray, sizes: list[tuple[int, int]],
              half: bool) -> list[np.ndarray]:
    n = boxes.shape[1]
    head = np.array([len(srcs), n, int(srcs[0].dtype == np.float16), int(half)], np.int32)
    dims = np.array([[*s.shape, *hw] for s, hw in zip(srcs, sizes)], np.int32)
    body = b"".join(np.ascontiguousarray(s).tobytes() for s in srcs)
    (tmp / "in.bin").write_bytes(head.tobytes() + dims.tobytes() + np.ascontiguousarray(boxes, np.float64).tobytes() + body)
    subprocess.run([str(exe), "maps", str(tmp / "in.bin"), str(tmp / "out.bin")], check=True)
    flat = np.fromfile(tmp / "out.bin", np.float16 if half else np.float32)
    out, at = [], 0
    for s, (oh, ow) in zip(srcs, sizes):
        size = n * s.shape[0] * oh * ow
        out.append(flat[at:at + size].reshape(n, s.shape[0], oh, ow))
        at += size
    assert at == flat.size
    return out


@pytest.mark.parametrize("src_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("half", [False, True])
def test_several_maps_cut_in_one_launch_match_crops_one_map_at_a_time(harness, tmp_path, src_dtype, half) -> None:
    # crop_maps_cuda: every map's tables in one shared table, every output element found by its map's
    # running totals. Maps of different channels, sizes and output sizes, as the runtime's coarse
    # depth and feature maps are, each cut at the tiles' boxes scaled to it.
    rng = np.random.default_rng(11)
    g = TileGrid(270, 480, 3, 4, 20)
    shapes = [(1, 72, 128), (24, 36, 64), (40, 18, 32), (3, 9, 16), (1, 5, 7), (8, 72, 128), (16, 2, 3), (2, 50, 91)]
    srcs = [rng.standard_normal(s).astype(src_dtype) for s in shapes]
    sizes = [(40, 56), (20, 28), (10, 14), (5, 7), (3, 2), (1, 1), (7, 9), (33, 17)]
    boxes = np.stack([g.boxes * np.array([s[1] / 270, s[2] / 480] * 2) for s in shapes])
    for count in (1, 3, 8):
        got = _run_maps(harness, tmp_path, srcs[:count], boxes[:count], sizes[:count], half)
        for k in range(count):
            want = tiling.crop_resize(srcs[k], boxes[k], sizes[k], dtype=np.float16 if half else np.float32)
            # Within rounding, not to the bit: the CPU engine blends rows first, these kernels columns.
            # One map at a time on a GPU runs the same crop_map_value, so there the bits are equal.
            np.testing.assert_allclose(got[k].astype(np.float32), want.astype(np.float32), rtol=2e-3 if half else 1e-6,
                                       atol=2e-3 if half else 1e-6, err_msg=f"map {k} of {count}")
