"""``color=``: OpenCV's BGR frames and mono frames give the depth of the RGB frame; nothing is guessed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.depth_io import read_image

SAMPLE = "edgedepth/assets/sample.png"


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    return Runtime(tiny_bundle, backend="onnxruntime", threads=1)


def test_cv2_bgr_frames_give_the_rgb_result(rt):
    path = Path(__file__).resolve().parents[2] / SAMPLE
    bgr = cv2.resize(cv2.imread(str(path)), (96, 54), interpolation=cv2.INTER_AREA)  # as a cv2 camera loop has it
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    expected = rt.predict(rgb).depth
    np.testing.assert_array_equal(rt.predict(bgr, color="bgr").depth, expected)
    # the mistake color= exists for: the same frame read as RGB is another frame
    assert not np.array_equal(rt.predict(bgr).depth, expected)
    streamed = [r.depth for r in rt.stream([bgr, bgr], color="bgr", stabilize=False)]
    np.testing.assert_array_equal(streamed[1], expected)
    np.testing.assert_array_equal(rt.predict_batch([bgr], color="bgr")[0].depth, expected)
    # the file itself is decoded as RGB
    full = rt.predict(path)
    np.testing.assert_array_equal(full.depth, rt.predict(read_image(path)).depth)


def test_gray_frames_are_replicated_to_rgb(rt):
    gray = np.random.default_rng(0).integers(0, 256, (40, 52), dtype=np.uint8)
    expected = rt.predict(np.repeat(gray[..., None], 3, axis=2)).depth
    np.testing.assert_array_equal(rt.predict(gray, color="gray").depth, expected)
    np.testing.assert_array_equal(rt.predict(gray[..., None], color="gray").depth, expected)
    np.testing.assert_array_equal(rt.predict(gray.astype(np.float32) / 255, color="gray").depth, expected)


def test_bgr_cpu_torch_tensor(rt):
    torch = pytest.importorskip("torch")
    bgr = np.random.default_rng(1).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    expected = rt.predict(np.ascontiguousarray(bgr[..., ::-1])).depth
    np.testing.assert_array_equal(rt.predict(torch.from_numpy(bgr), color="bgr").depth, expected)


@pytest.mark.parametrize("image, color, match", [
    (np.zeros((30, 40, 3), np.uint8), "BGR", "color must be one of 'rgb', 'bgr', 'gray', got 'BGR'"),
    (np.zeros((30, 40, 3), np.uint8), "gray", r"color='gray' must have shape \(H, W\) or \(H, W, 1\)"),
    (np.zeros((30, 40), np.uint8), "rgb", "pass color='gray'"),
    (np.zeros((30, 40, 1), np.uint8), "bgr", r"HWC BGR with shape \(H, W, 3\).*pass color='gray'"),
    (SAMPLE, "bgr", "image files are always decoded to RGB"),
])
def test_bad_color_requests_name_the_problem(rt, image, color, match):
    with pytest.raises(ValueError, match=match):
        rt.predict(image, color=color)
