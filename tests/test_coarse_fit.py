"""CoarseFit: where a frame sits in the coarse model's fixed input (squeezed, or aspect kept and
edge-padded), the boxes of its tiles in the coarse maps, and the depth scale that padding implies."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth.coarse_fit import ASPECT_TOLERANCE, CoarseFit, fit_for_training
from edgedepth.tiling import TileGrid


def test_frames_of_about_the_inputs_aspect_fill_it_as_in_training() -> None:
    for h, w in ((1080, 1920), (2160, 3840), (128, 224), (288, 512)):  # 16:9 in a 1.75:1 input
        fit = CoarseFit.for_frame(h, w, (128, 224), "pad")
        assert not fit.padded and fit.width_share == 1.0 and (fit.top, fit.left) == (0, 0)
        grid = TileGrid.from_overlap_ratio(h, w, 4, 4, 0.25)
        # exactly TileGrid.scaled: 16:9 frames run bit for bit as before
        np.testing.assert_array_equal(fit.map_boxes(grid.boxes, (32, 56)), grid.scaled(32 / h, 56 / w))


def test_a_4_3_frame_keeps_its_aspect_between_repeated_edge_columns() -> None:
    fit = CoarseFit.for_frame(480, 640, (128, 224), "pad")
    assert fit.padded and (fit.content_h, fit.content_w) == (128, 171) and fit.left == (224 - 171) // 2
    assert fit.width_share == pytest.approx(171 / 224)
    # the whole frame maps onto the content; at a stride-4 map, a quarter of it
    np.testing.assert_allclose(fit.map_boxes([[0, 0, 480, 640]], (128, 224)), [[0, fit.left, 128, 171]])
    np.testing.assert_allclose(fit.map_boxes([[240, 320, 240, 320]], (32, 56)),
                               [[16, (fit.left + 85.5) / 4, 16, 85.5 / 4]])
    x = np.arange(2 * 128 * 171, dtype=np.float32).reshape(1, 2, 128, 171)
    padded = fit.pad_input(x)
    assert padded.shape == (1, 2, 128, 224)
    np.testing.assert_array_equal(fit.content(padded), x)
    np.testing.assert_array_equal(padded[..., :fit.left], np.repeat(x[..., :1], fit.left, axis=-1))
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.pad(torch.from_numpy(x), fit.torch_pad(), mode="replicate")
    np.testing.assert_array_equal(t.numpy(), padded)


def test_a_wide_frame_gets_rows_and_no_depth_scale() -> None:
    fit = CoarseFit.for_frame(400, 1600, (128, 224), "pad")  # 4:1
    assert (fit.content_h, fit.content_w, fit.left) == (56, 224, 0) and fit.top == (128 - 56) // 2
    assert fit.width_share == 1.0  # fx is per frame width, and the width fills the input


def test_squeeze_is_the_old_behaviour_and_bad_input_is_named() -> None:
    fit = CoarseFit.for_frame(480, 640, (128, 224), "squeeze")
    assert not fit.padded
    with pytest.raises(ValueError, match="fit"):
        CoarseFit.for_frame(480, 640, (128, 224), "letterbox")
    with pytest.raises(ValueError, match="non-empty"):
        CoarseFit.for_frame(0, 640, (128, 224))
    with pytest.raises(ValueError, match="coarse input"):
        fit.content(np.zeros((64, 112)))


def test_fit_for_training_feeds_the_model_as_training_did() -> None:
    # trained on frames that fill the input: only other aspects are fitted
    assert fit_for_training([1080, 1920], (128, 224)) == "pad"
    assert fit_for_training(None, (128, 224)) == "pad"
    # trained on 4:3 frames, which training squeezed: the runtime must squeeze too
    assert fit_for_training([192, 256], (128, 224)) == "squeeze"
    edge = 224 / 128 * ASPECT_TOLERANCE * 0.999
    assert fit_for_training([1000, round(1000 * edge)], (128, 224)) == "pad"
