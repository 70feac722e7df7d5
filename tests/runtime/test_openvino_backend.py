"""OpenVINO backend settings are explicit and reported; devices; the ``auto`` choice on x86-64."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.backends import get_backend, select_backend

pytestmark = pytest.mark.skipif(not get_backend("openvino").is_available(), reason="openvino is not installed")


def test_latency_hint_one_stream_and_threads_are_set_and_reported(tiny_bundle):
    rt = Runtime(tiny_bundle, backend="openvino", threads=1)
    for model in rt.info()["models"]:
        assert model["settings"]["PERFORMANCE_HINT"] == "LATENCY"
        assert model["settings"]["NUM_STREAMS"] == "1"
        assert model["settings"]["INFERENCE_NUM_THREADS"] == "1"
        assert model["settings"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_openvino_auto_device_runs_like_cpu(tiny_bundle):
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cpu = Runtime(tiny_bundle, backend="openvino", device="cpu", threads=1).predict(frame).depth
    auto = Runtime(tiny_bundle, backend="openvino", device="auto:cpu", threads=1)
    assert auto.info()["models"][0]["settings"]["PERFORMANCE_HINT"] == "LATENCY"
    np.testing.assert_allclose(auto.predict(frame).depth, cpu, rtol=1e-5, atol=1e-5)
    assert "auto" in get_backend("openvino").devices()


def test_a_device_that_is_not_here_is_refused_by_name(tiny_bundle):
    if "npu" in get_backend("openvino").devices():
        pytest.skip("this machine has an NPU")
    with pytest.raises(ValueError, match="cannot use device 'npu'"):
        Runtime(tiny_bundle, backend="openvino", device="npu")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the x86-64 choice")
def test_auto_prefers_openvino_on_x86(tiny_bundle):
    if get_backend("tensorrt").is_available():
        pytest.skip("tensorrt is installed and goes first")
    cls, why = select_backend("auto", {"onnx"})
    assert cls.name == "openvino" and "auto" in why
