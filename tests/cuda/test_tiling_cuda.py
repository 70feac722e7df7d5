"""CUDA tile engine == numpy reference, on torch device tensors and a non-default stream.

Needs an NVIDIA GPU and edgedepth._native_cuda (conftest.py skips the tests elsewhere).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgedepth import native, tiling
from edgedepth import tiling_reference as ref
from edgedepth.tiling import TileGrid

DEV = torch.device("cuda")


def _on_stream(fn):
    """Runs fn on a fresh non-default stream and returns its result after that stream finished."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = fn()
    stream.synchronize()
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("half", [False, True])
def test_crop_maps(seed: int, half: bool) -> None:
    rng = np.random.default_rng(seed)
    C, H, W = int(rng.integers(1, 9)), int(rng.integers(1, 90)), int(rng.integers(1, 90))
    src = rng.standard_normal((C, H, W)).astype(np.float16 if half else np.float32)
    h, w = rng.uniform(0.2, 1, 2) * (H, W)
    boxes = np.array([[rng.uniform(0, H - h), rng.uniform(0, W - w), h, w], [0, 0, H, W]])
    out = (int(rng.integers(1, 50)), int(rng.integers(1, 50)))
    got = _on_stream(lambda: tiling.crop_resize(torch.from_numpy(src).to(DEV), boxes, out))
    assert got.is_cuda and got.dtype == torch.float32
    np.testing.assert_allclose(got.cpu().numpy(), ref.crop_resize(src, boxes, out), rtol=0, atol=1e-5)


def _maps_at_tiles(rng: np.random.Generator, dtype: torch.dtype, count: int):
    """count device maps of different shapes, the 4x4 grid of a 1080p frame scaled to each, and crop sizes."""
    g = TileGrid(1080, 1920, 4, 4, 120)
    shapes = [(1, 63, 112), (48, 37, 65), (96, 19, 33), (192, 10, 17), (384, 5, 9), (1, 270, 480), (3, 8, 8),
              (7, 100, 31), (2, 11, 13)][:count]
    srcs = [torch.from_numpy(rng.standard_normal(s).astype(np.float32)).to(DEV, dtype) for s in shapes]
    boxes = [g.boxes * np.array([s[1] / 1080, s[2] / 1920] * 2) for s in shapes]
    sizes = [(128, 224), (32, 56), (16, 28), (8, 14), (4, 7), (64, 112), (3, 5), (40, 9), (6, 6)][:count]
    return srcs, boxes, sizes


@pytest.mark.parametrize("src_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_several_maps_in_one_call_give_each_crops_bits(src_dtype, out_dtype) -> None:
    srcs, boxes, sizes = _maps_at_tiles(np.random.default_rng(2), src_dtype, tiling.MAX_MAP_CROPS)
    got = _on_stream(lambda: tiling.crop_resize_maps(srcs, boxes, sizes, dtype=out_dtype))
    for k, (src, b, size) in enumerate(zip(srcs, boxes, sizes)):
        want = _on_stream(lambda: tiling.crop_resize(src, b, size, dtype=out_dtype))
        assert got[k].shape == want.shape and got[k].dtype == want.dtype, k
        assert torch.equal(got[k], want), k


def test_maps_one_call_cannot_take_are_cropped_one_by_one_and_bad_ones_refused() -> None:
    rng = np.random.default_rng(3)
    srcs, boxes, sizes = _maps_at_tiles(rng, torch.float32, tiling.MAX_MAP_CROPS + 1)
    srcs[1] = srcs[1].half()  # two dtypes, and one map more than a call takes: one call per map
    for got, src, b, size in zip(tiling.crop_resize_maps(srcs, boxes, sizes), srcs, boxes, sizes):
        assert torch.equal(got, tiling.crop_resize(src, b, size))
    srcs, boxes, sizes = _maps_at_tiles(rng, torch.float32, 3)
    bad = [b.copy() for b in boxes]
    bad[2][-1, 0] += 1.0  # the bottom row of tiles pushed below the map
    with pytest.raises(ValueError, match="outside"):
        tiling.crop_resize_maps(srcs, bad, sizes)
    with pytest.raises(ValueError, match="same number of boxes"):
        tiling.crop_resize_maps(srcs, [boxes[0], boxes[1][:3], boxes[2]], sizes)
    with pytest.raises(ValueError, match="one entry per map"):
        tiling.crop_resize_maps(srcs, boxes, sizes[:2])


def test_crop_rgb_float_and_half_outputs() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (123, 211, 3), dtype=np.uint8)
    g = TileGrid(123, 211, 3, 4, 9)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = ref.crop_resize(img, g.boxes, (64, 48), mean=np.array(mean), std=np.array(std))
    for dtype, tol in [(np.float32, 1e-5), (np.float16, 2e-3)]:
        got = _on_stream(lambda: tiling.crop_resize(torch.from_numpy(img).to(DEV), g.boxes, (64, 48), mean=mean,
                                                    std=std, dtype=dtype))
        np.testing.assert_allclose(got.float().cpu().numpy(), want, rtol=tol, atol=tol)


def test_crop_equals_torch_interpolate() -> None:
    src = torch.rand(3, 60, 80, device=DEV)
    got = tiling.crop_resize(src, np.array([[10.0, 20, 40, 50]]), (17, 23))
    want = F.interpolate(src[None, :, 10:50, 20:70], (17, 23), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", tiling.WINDOWS)
def test_window_and_stitch(kind: str) -> None:
    g = TileGrid(97, 131, 3, 3, 11)
    tiles = np.random.default_rng(2).random((len(g), 2, 40, 40)).astype(np.float32)
    got = _on_stream(lambda: tiling.stitch(torch.from_numpy(tiles).to(DEV), g.boxes, 97, 131, kind))
    np.testing.assert_allclose(got.cpu().numpy(), ref.stitch(tiles, g.boxes, 97, 131, kind), rtol=0, atol=1e-5)
    got16 = tiling.stitch(torch.from_numpy(tiles).half().to(DEV), g.boxes, 97, 131, kind)
    np.testing.assert_allclose(got16.cpu().numpy(), ref.stitch(tiles.astype(np.float16), g.boxes, 97, 131, kind),
                               rtol=0, atol=1e-5)
    win = torch.empty(13, 17, device=DEV)
    native.cuda.window(win.data_ptr(), 13, 17, tiling.WINDOWS.index(kind), torch.cuda.current_stream().cuda_stream)
    np.testing.assert_array_equal(win.cpu().numpy(), ref.window(13, 17, kind))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_grid_stitch_gives_the_cpu_engines_bits(dtype) -> None:
    # Grids take the grid kernel (csrc/grid_stitch.hpp), whose arithmetic is the CPU engine's; only the
    # window's cos may round differently in the device's libm, a double ulp the float weights absorb
    # (the linear window has no transcendental: there the bits must match exactly).
    g = TileGrid(2160 // 4, 3840 // 4, 4, 4, 34)
    tiles = np.random.default_rng(6).uniform(0.5, 80, (len(g), 2, 128, 224)).astype(dtype)
    for kind, ulps in (("linear", 0), ("cosine", 1)):
        got = _on_stream(lambda: tiling.stitch(torch.from_numpy(tiles).to(DEV), g.boxes, g.height, g.width, kind))
        want = tiling.stitch(tiles, g.boxes, g.height, g.width, kind)
        if ulps:
            np.testing.assert_array_max_ulp(got.cpu().numpy(), want, maxulp=ulps)
        else:
            np.testing.assert_array_equal(got.cpu().numpy(), want)


def test_layouts_that_are_not_grids_take_the_general_kernel() -> None:
    rng = np.random.default_rng(7)
    tiles = rng.random((4, 1, 12, 16)).astype(np.float32)
    scattered = np.array([[0.0, 0, 40, 60], [10, 25, 30, 35], [20, 5, 20, 50], [0, 30, 40, 30]])
    thick = np.array([[0.0, 0, 25, 60], [8, 0, 25, 60], [15, 0, 25, 60], [0, 0, 40, 60]])  # 4 row bands over y = 20
    for boxes in (scattered, thick):
        got = _on_stream(lambda: tiling.stitch(torch.from_numpy(tiles).to(DEV), boxes, 40, 60, "cosine"))
        np.testing.assert_allclose(got.cpu().numpy(), ref.stitch(tiles, boxes, 40, 60, "cosine"), rtol=0, atol=1e-5)


def _joint_case(seed: int, h: int, w: int, height: int, width: int):
    rng = np.random.default_rng(seed)
    depth = np.exp(rng.uniform(0.0, 4.0, (h, w))).astype(np.float32)
    depth[h // 3:, : w // 2] *= 3.0  # steps: pixels whose taps disagree take the colour weights
    depth[0, 0], depth[1, 1] = np.nan, -1.0  # and the finishing pass has something to reject
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return depth, image


def test_joint_upsample_gives_the_cpu_engines_bits() -> None:
    depth, image = _joint_case(8, 54, 96, 216, 384)
    want, want_valid = tiling.joint_upsample(depth, None, image, 0.05, 1.25, 60.0)
    got, valid = _on_stream(lambda: tiling.joint_upsample(torch.from_numpy(depth).to(DEV), None,
                                                          torch.from_numpy(image).to(DEV), 0.05, 1.25, 60.0))
    assert got.is_cuda and got.dtype == torch.float32 and valid.dtype == torch.bool
    np.testing.assert_array_equal(got.cpu().numpy().view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(valid.cpu().numpy(), want_valid)


@pytest.mark.parametrize("threads", [1, 2])
def test_guided_upsample_gives_the_cpu_engines_bits(threads: int) -> None:
    depth, image = _joint_case(11, 54, 96, 216, 384)
    for step, radius, eps in [(2, 3, 1e-5), (1, 2, 1e-3), (3, 0, 1e-8)]:
        want, want_valid = tiling.guided_upsample(depth, None, image, step, radius, eps, 1.25, 60.0, threads=threads)
        got, valid = _on_stream(lambda: tiling.guided_upsample(torch.from_numpy(depth).to(DEV), None,
                                                               torch.from_numpy(image).to(DEV), step, radius, eps,
                                                               1.25, 60.0))
        assert got.is_cuda and got.dtype == torch.float32 and valid.dtype == torch.bool
        np.testing.assert_array_equal(got.cpu().numpy().view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(valid.cpu().numpy(), want_valid)


@pytest.mark.parametrize("upsample", ["joint_bilateral", "guided"])
def test_runtime_low_finish_runs_the_cuda_kernel(upsample: str) -> None:
    from edgedepth.runtime import _TorchOps

    depth, image = _joint_case(9, 45, 80, 270, 480)
    policy = tiling.Tiling(upsample=upsample)
    got, valid = _TorchOps("cuda").low_finish(torch.from_numpy(depth).to(DEV), torch.from_numpy(image).to(DEV),
                                              policy, 1.0, 80.0)
    want, want_valid = tiling.upsample(depth, None, image, policy, 1.0, 80.0)
    np.testing.assert_array_equal(got.cpu().numpy(), want)
    np.testing.assert_array_equal(valid.cpu().numpy(), want_valid)


def test_finish_in_place_gives_the_cpu_engines_bits() -> None:
    rng = np.random.default_rng(10)
    depth = rng.uniform(-5, 100, (123, 457)).astype(np.float32)
    depth[::7, ::5], depth[1::9, ::4] = np.nan, np.inf
    want = depth.copy()
    want_valid = tiling.finish(want, 1.5, 80.0)
    dev = torch.from_numpy(depth).to(DEV)
    valid = _on_stream(lambda: tiling.finish(dev, 1.5, 80.0))
    assert valid.dtype == torch.bool
    np.testing.assert_array_equal(dev.cpu().numpy().view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(valid.cpu().numpy(), want_valid)
    with pytest.raises(TypeError, match="contiguous"):
        tiling.finish(dev.t(), 1.0)


def test_stitching_crops_gives_the_image_back_on_device() -> None:
    g = TileGrid(2160 // 8, 3840 // 8, 4, 4, 17)
    img = torch.rand(1, g.height, g.width, device=DEV)
    crops = tiling.crop_resize(img, g.boxes, (g.tile_h, g.tile_w))
    torch.testing.assert_close(tiling.stitch(crops, g.boxes, g.height, g.width), img, rtol=0, atol=1e-5)


def test_non_contiguous_device_input_is_copied() -> None:
    src = torch.rand(20, 30, 2, device=DEV).permute(2, 0, 1)
    got = tiling.crop_resize(src, np.array([[0.0, 0, 20, 30]]), (5, 5))
    np.testing.assert_allclose(got.cpu().numpy(), ref.crop_resize(src.cpu().numpy(), np.array([[0.0, 0, 20, 30]]), (5, 5)),
                               atol=1e-5)


def test_device_errors() -> None:
    src = torch.rand(1, 8, 8, device=DEV)
    with pytest.raises(ValueError, match="outside"):
        tiling.crop_resize(src, np.array([[0.0, 0, 9, 8]]), (2, 2))
    with pytest.raises(TypeError, match="boxes"):
        tiling.crop_resize(src, torch.zeros(1, 4, device=DEV), (2, 2))
    with pytest.raises(ValueError, match="out"):  # the C++ extent check: a buffer too small for the output
        small = torch.empty(1, device=DEV)
        native.cuda.crop_map(src.data_ptr(), False, 1, 8, 8, np.array([[0.0, 0, 8, 8]]), small.data_ptr(), 4096, 4096,
                             False, 0)


def test_more_boxes_than_one_kernel_argument_chunk() -> None:
    # Boxes reach the device as kernel arguments, 64 per launch: 150 boxes take three launches.
    rng = np.random.default_rng(5)
    src = rng.standard_normal((2, 70, 90)).astype(np.float32)
    h, w = rng.uniform(5, 60, 150), rng.uniform(5, 80, 150)
    boxes = np.stack([rng.uniform(0, 70 - h), rng.uniform(0, 90 - w), h, w], axis=1)
    got = _on_stream(lambda: tiling.crop_resize(torch.from_numpy(src).to(DEV), boxes, (9, 11)))
    np.testing.assert_allclose(got.cpu().numpy(), ref.crop_resize(src, boxes, (9, 11)), rtol=0, atol=1e-5)


def test_runtime_stitches_half_tiles_without_a_float_copy() -> None:
    from edgedepth.runtime import _TorchOps

    g = TileGrid(97, 131, 3, 3, 11)
    tiles = np.random.default_rng(3).random((len(g), 1, 40, 40)).astype(np.float16)
    ops = _TorchOps("cuda")
    assert ops.impl is tiling  # the native CUDA engine, which reads float16 itself
    got = ops._stitch(torch.from_numpy(tiles).to(DEV), g.boxes, 97, 131, "cosine")
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.cpu().numpy(), ref.stitch(tiles, g.boxes, 97, 131, "cosine")[0], rtol=0, atol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_arrays_on_a_device_that_is_not_current() -> None:
    src = np.random.default_rng(4).random((1, 30, 40)).astype(np.float32)
    want = ref.crop_resize(src, np.array([[2.0, 3, 20, 30]]), (7, 9))
    with torch.cuda.device(0):
        got = tiling.crop_resize(torch.from_numpy(src).to("cuda:1"), np.array([[2.0, 3, 20, 30]]), (7, 9))
        assert got.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=0, atol=1e-5)
    cupy = pytest.importorskip("cupy")
    with cupy.cuda.Device(1):
        arr = cupy.asarray(src)[:, :, ::-1]  # non-contiguous: the contiguous copy must land on device 1
    with cupy.cuda.Device(0):
        got = tiling.crop_resize(arr, np.array([[2.0, 3, 20, 30]]), (7, 9))
        assert got.device.id == 1 and cupy.cuda.Device().id == 0
    np.testing.assert_allclose(cupy.asnumpy(got), ref.crop_resize(np.ascontiguousarray(src[:, :, ::-1]),
                                                                   np.array([[2.0, 3, 20, 30]]), (7, 9)), atol=1e-5)


def test_ranking_loss_on_device_tensors_with_a_cpu_generator() -> None:
    # Training seeds its samplers with CPU generators; the loss must run on CUDA tensors and draw the
    # same pairs as on the CPU.
    from edgedepth.train import losses as L

    rng = torch.Generator().manual_seed(5)
    target = 1.0 + torch.rand(2, 1, 48, 64, generator=rng).cumsum(-1)
    pred, image = target * (1 + 0.2 * torch.rand(target.shape, generator=rng)), torch.rand(2, 3, 48, 64, generator=rng)

    def loss(dev):
        return L.edge_guided_ranking_loss(pred.to(dev), target.to(dev), image=image.to(dev),
                                          generator=torch.Generator().manual_seed(0))

    got = loss(DEV)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), loss("cpu"), rtol=1e-5, atol=1e-6)
