"""edgedepth.tiling_torch equals the numpy reference and is differentiable."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedepth import tiling_reference as ref
from edgedepth import tiling_torch as tt
from edgedepth.tiling import WINDOWS, TileGrid


@settings(max_examples=50, deadline=None)
@given(H=st.integers(1, 40), W=st.integers(1, 40), oh=st.integers(1, 20), ow=st.integers(1, 20),
       fy=st.floats(0, 1), fx=st.floats(0, 1), fh=st.floats(1e-3, 1), fw=st.floats(1e-3, 1))
def test_crop_equals_reference(H, W, oh, ow, fy, fx, fh, fw) -> None:
    h, w = fh * H, fw * W
    boxes = np.array([[fy * (H - h), fx * (W - w), h, w], [0, 0, H, W]])
    src = np.random.default_rng(H + 7 * W).random((2, H, W)).astype(np.float32)
    got = tt.crop_resize(torch.from_numpy(src), boxes, (oh, ow)).numpy()
    np.testing.assert_allclose(got, ref.crop_resize(src, boxes, (oh, ow)), rtol=0, atol=1e-5)


def test_crop_rgb_and_batched_src() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    boxes = TileGrid(30, 41, 2, 2, 4).boxes
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = tt.crop_resize(torch.from_numpy(img), boxes, (9, 11), mean=mean, std=std).numpy()
    want = ref.crop_resize(img, boxes, (9, 11), mean=np.array(mean), std=np.array(std))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    batch = torch.from_numpy(rng.random((3, 2, 30, 41)).astype(np.float32))
    per_image = np.stack([boxes[:2], boxes[1:3], boxes[2:]])
    got = tt.crop_resize(batch, per_image, (5, 6))
    assert got.shape == (3, 2, 2, 5, 6)
    np.testing.assert_allclose(got[1].numpy(), ref.crop_resize(batch[1].numpy(), per_image[1], (5, 6)), atol=1e-5)


def test_crop_equals_interpolate_on_integer_downscale() -> None:
    src = torch.rand(3, 40, 50, dtype=torch.float64)
    got = tt.crop_resize(src, np.array([[4, 6, 30, 40]]), (11, 13))[0]
    want = F.interpolate(src[None, :, 4:34, 6:46], (11, 13), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", WINDOWS)
def test_stitch_equals_reference(kind: str) -> None:
    g = TileGrid(37, 53, 2, 3, 5)
    tiles = np.random.default_rng(1).random((len(g), 2, 11, 13)).astype(np.float32)
    got = tt.stitch(torch.from_numpy(tiles), g.boxes, 37, 53, kind).numpy()
    np.testing.assert_allclose(got, ref.stitch(tiles, g.boxes, 37, 53, kind), rtol=0, atol=1e-5)


def test_stitch_of_irregular_boxes_equals_reference() -> None:
    # Overlaps that are no grid: the sum of windows is not an outer product of rows and columns.
    boxes = np.array([[0, 0, 20, 30], [0, 25, 24, 28], [15, 0, 22, 26], [18, 22, 19, 31]], dtype=np.float64)
    tiles = np.random.default_rng(2).random((4, 1, 9, 12)).astype(np.float32)
    got = tt.stitch(torch.from_numpy(tiles), boxes, 37, 53, "cosine").numpy()
    np.testing.assert_allclose(got, ref.stitch(tiles, boxes, 37, 53, "cosine"), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # constant boxes are the point here
def test_traced_stitch_holds_no_frame_sized_constant() -> None:
    # The fused CoreML/ONNX pipeline is a trace of this function: a frame-sized weight or normaliser
    # map would ship as megabytes of constants (8 MB per float32 map at 1080p).
    g = TileGrid(270, 480, 4, 4, 20)
    tiles = torch.rand(len(g), 1, 16, 24)
    graph = torch.jit.trace(lambda t: tt.stitch(t, g.boxes, 270, 480, "cosine"), tiles).inlined_graph
    consts = [n.output().toIValue() for n in graph.nodes() if n.kind() == "prim::Constant"
              and n.output().type().kind() == "TensorType"]
    assert consts and max(c.numel() for c in consts) < 480 * 4, sorted(c.shape for c in consts)[-3:]


def test_gradients_flow_and_match_finite_differences() -> None:
    g = TileGrid(12, 14, 2, 2, 3)
    tiles = torch.rand(len(g), 1, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tt.stitch(t, g.boxes, 12, 14, "cosine"), (tiles,))
    src = torch.rand(2, 12, 14, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: tt.crop_resize(s, g.scaled(0.9, 0.8), (4, 5)), (src,))


def test_half_precision_keeps_dtype() -> None:
    src = torch.rand(1, 20, 20).half()
    out = tt.crop_resize(src, np.array([[0, 0, 20, 20]]), (7, 7))
    assert out.dtype == torch.float16
    np.testing.assert_allclose(out.float().numpy(), ref.crop_resize(src.numpy(), np.array([[0, 0, 20, 20]]), (7, 7)),
                               atol=1e-3)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: tt.crop_resize(np.zeros((1, 4, 4)), np.zeros((1, 4)), (2, 2)), TypeError, "src"),
    (lambda: tt.crop_resize(torch.zeros(1, 4, 4, dtype=torch.int32), np.array([[0, 0, 2, 2]]), (2, 2)), TypeError, "src"),
    (lambda: tt.crop_resize(torch.zeros(4, 4, 4, dtype=torch.uint8), np.array([[0, 0, 2, 2]]), (2, 2)), ValueError, "RGB"),
    (lambda: tt.crop_resize(torch.zeros(1, 4, 4), np.array([[0, 0, 5, 2]]), (2, 2)), ValueError, "outside"),
    (lambda: tt.crop_resize(torch.zeros(1, 4, 4), np.array([[0, 0, 2, 2]]), (2, 2), mean=0.1), ValueError, "mean"),
    (lambda: tt.crop_resize(torch.zeros(2, 1, 4, 4), np.zeros((3, 1, 4)), (2, 2)), ValueError, "boxes"),
    (lambda: tt.stitch(torch.zeros(2, 1, 4, 4), np.array([[0, 0, 4, 4]]), 4, 4), ValueError, "2 tiles"),
    (lambda: tt.stitch(torch.zeros(1, 1, 4, 4), np.array([[0, 0, 4, 4]]), 4, 5), ValueError, "uncovered"),
    (lambda: tt.stitch(torch.zeros(1, 1, 4, 4), np.array([[0, 0, 4, 4]]), 4, 4, "x"), ValueError, "window"),
])
def test_errors(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_host_to_device_is_a_plain_conversion_off_cuda() -> None:
    from edgedepth.tiling_torch import host_to_device

    table = np.arange(6, dtype=np.int64)
    t = host_to_device(table, "cpu")
    assert t.dtype == torch.int64 and t.data_ptr() == table.ctypes.data  # no copy on the CPU
    f = host_to_device(np.array([0.25, 1.5]), torch.device("cpu"), torch.float16)
    assert f.dtype == torch.float16 and f.tolist() == [0.25, 1.5]
    k = host_to_device([[-1.0, 0.0, 1.0]], "cpu")
    assert k.dtype == torch.float32 and k.shape == (1, 3)  # as torch.tensor would make it


@pytest.mark.parametrize("mean, std", [([0.5, 0.5], [1.0]), ([0.5], [1.0, 0.0, 1.0]), (None, [1e-50])])
def test_rgb_crop_refuses_bad_normalisation(mean, std) -> None:
    rgb = torch.zeros((8, 8, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="std > 0"):
        tt.crop_resize(rgb, np.array([[0.0, 0.0, 8.0, 8.0]]), (4, 4), mean=mean, std=std)
