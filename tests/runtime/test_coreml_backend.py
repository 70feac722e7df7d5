"""The CoreML backend's host-side parts: image inputs fed from the runtime's normalised arrays,
compressed variants selectable by precision. CoreML prediction itself needs macOS."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.backends import get_backend
from edgedepth.backends.coreml import pixels

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_pixels_undo_the_runtime_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = ((rgb.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(pixels(x, MEAN, STD), rgb)
    with pytest.raises(ValueError, match=r"one \(1, 3, H, W\) frame"):
        pixels(np.concatenate([x, x]), MEAN, STD)


def test_palette6_is_a_precision_only_coreml_holds(tiny_bundle):
    assert "palette6" in get_backend("coreml").supported_precisions
    with pytest.raises(ValueError, match="onnxruntime.*cannot run precision 'palette6'"):
        Runtime(tiny_bundle, backend="onnxruntime", precision="palette6")
    with pytest.raises(ValueError, match="palette6"):
        Runtime(tiny_bundle, backend="onnxruntime", precision="int4")


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS the CoreML backend runs")
def test_coreml_backend_says_it_needs_macos(tiny_bundle):
    with pytest.raises(ImportError, match="runs only on macOS"):
        Runtime(tiny_bundle, backend="coreml")
