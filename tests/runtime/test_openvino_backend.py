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


def test_each_tile_count_runs_on_a_static_batch_model_and_agrees_with_the_dynamic_one(exported_bundle, tmp_path):
    """Refiner batches of 1..6 tiles: the first MAX_STATIC_BATCHES counts get a model compiled with
    the batch fixed, the rest run on the dynamic one; every output matches onnxruntime's."""
    from edgedepth.backends.openvino import MAX_STATIC_BATCHES
    from edgedepth.bundle import open_bundle

    bundle = open_bundle(exported_bundle)
    refiner = bundle.refiner
    ov_backend = get_backend("openvino")(exported_bundle / refiner["files"]["openvino"]["fp32"], role="refiner",
                                         device="cpu", precision="fp32", threads=1, cache_dir=tmp_path / "cache")
    ort_backend = get_backend("onnxruntime")(exported_bundle / refiner["files"]["onnx"]["fp32"], role="refiner",
                                             device="cpu", precision="fp32", threads=1)
    assert ov_backend.inputs[0].shape[0] is None  # still declared batch-dynamic
    rng = np.random.default_rng(0)
    for n in range(1, MAX_STATIC_BATCHES + 3):
        feeds = {s.name: rng.standard_normal((n, *s.shape[1:])).astype(np.float32) for s in ov_backend.inputs}
        got, want = ov_backend.run(feeds)["depth"], ort_backend.run(feeds)["depth"]
        assert got.shape == (n, *want.shape[1:])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert ov_backend.describe()["static_batches"] == list(range(1, MAX_STATIC_BATCHES + 1))


def test_the_runtime_refines_a_frame_on_the_static_model_of_its_tile_count(exported_bundle):
    rt = Runtime(exported_bundle, backend="openvino", threads=1)
    frame = np.random.default_rng(1).integers(0, 256, (144, 176, 3), dtype=np.uint8)
    got = rt.predict(frame)
    assert rt.refiner.describe()["static_batches"] == [len(got.grid.boxes)]
    assert rt.coarse.describe()["static_batches"] == []  # the coarse model's shapes are static already
    want = Runtime(exported_bundle, backend="onnxruntime", threads=1).predict(frame).depth
    np.testing.assert_allclose(got.depth, want, rtol=1e-4, atol=1e-4)
