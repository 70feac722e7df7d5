"""The TensorRT engine cache (keys, paths, timing cache), build options and the GPU name: plain Python,
tested everywhere. Building and running engines needs tensorrt and a GPU: tested where they exist."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edgedepth.backends import BackendUnavailableError
from edgedepth.backends import tensorrt as trt_backend
from edgedepth.backends.tensorrt import (BuildOptions, engine_cache_key, engine_path, ensure_engine, gpu_name,
                                         timing_cache_path)

SHA = "ab" * 32
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_engine_path_changes_with_every_key_part(tmp_path):
    base = dict(gpu_name="NVIDIA H100", trt_version="10.3.0", cache_dir=tmp_path)
    fp16 = BuildOptions(precision="fp16")
    ref = engine_path(Path("refiner.onnx"), SHA, fp16, **base)
    assert ref.parent == tmp_path and ref.name.startswith("refiner.fp16.") and ref.suffix == ".engine"
    assert engine_path(Path("elsewhere/refiner.onnx"), SHA, fp16, **base) == ref  # content, not location
    variants = [
        engine_path(Path("refiner.onnx"), "cd" * 32, fp16, **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(precision="int8"), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(precision="fp32"), **base),
        engine_path(Path("refiner.onnx"), SHA, fp16, **{**base, "gpu_name": "NVIDIA Jetson AGX Orin"}),
        engine_path(Path("refiner.onnx"), SHA, fp16, **{**base, "trt_version": "10.4.0"}),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(dla_core=0), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(dla_core=1), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(min_batch=2), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(opt_batch=9), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(max_batch=32), **base),
    ]
    assert len({ref, *variants}) == 1 + len(variants)
    assert variants[5].name.startswith("refiner.fp16.dla0.")
    # The workspace cap only bounds scratch memory: same engine, same cache entry.
    assert engine_path(Path("refiner.onnx"), SHA, BuildOptions(workspace_mib=256), **base) == ref


def test_cache_key_is_stable():
    key = engine_cache_key(SHA, "10.3.0", "Orin", BuildOptions())
    assert key == engine_cache_key(SHA, "10.3.0", "Orin", BuildOptions()) and len(key) == 20
    assert int(key, 16) >= 0


def test_default_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDEPTH_CACHE", str(tmp_path / "c"))
    path = engine_path(Path("coarse.onnx"), SHA, BuildOptions(precision="fp32"), gpu_name="g", trt_version="10")
    assert path.parent == tmp_path / "c" / "tensorrt"
    timing = timing_cache_path("g", "10")
    assert timing.parent == path.parent and timing.suffix == ".cache"


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path):
    ref = timing_cache_path("Orin", "10.3.0", tmp_path)
    assert ref == timing_cache_path("Orin", "10.3.0", tmp_path)
    assert len({ref, timing_cache_path("H100", "10.3.0", tmp_path), timing_cache_path("Orin", "10.4.0", tmp_path)}) == 3


def test_build_options_for_tiles():
    assert BuildOptions.for_tiles("fp16", 4) == BuildOptions("fp16", 1, 4, 16)
    assert BuildOptions.for_tiles("int8", 36, 16) == BuildOptions("int8", 1, 16, 16)  # chunks of 16 tiles
    assert BuildOptions.for_tiles("fp16", 9, 32, dla_core=1).key_fields() == \
        {"precision": "fp16", "batch": [1, 9, 32], "dla_core": 1}
    with pytest.raises(ValueError, match="tiles"):
        BuildOptions.for_tiles("fp16", 0)


@pytest.mark.parametrize("kw, exc, match", [
    ({"precision": "int4"}, ValueError, "precision"),
    ({"min_batch": 4, "opt_batch": 2}, ValueError, "min_batch"),
    ({"opt_batch": 32}, ValueError, "max_batch"),
    ({"max_batch": 8.0}, TypeError, "max_batch"),
    ({"workspace_mib": 0}, ValueError, "workspace"),
    ({"dla_core": -1}, ValueError, "dla_core"),
    ({"dla_core": True}, ValueError, "dla_core"),
    ({"precision": "fp32", "dla_core": 0}, ValueError, "DLA has no FP32"),
])
def test_build_options_validated(kw, exc, match):
    with pytest.raises(exc, match=match):
        BuildOptions(**kw)


def test_gpu_name_is_the_jetson_board_model(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")  # as the device tree stores it
    monkeypatch.setattr(trt_backend, "_BOARD_MODEL", model)
    assert gpu_name() == "NVIDIA Jetson AGX Orin Developer Kit"


def test_gpu_name_without_a_gpu_says_so(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        assert gpu_name() == torch.cuda.get_device_name(0)
        return
    monkeypatch.setattr(trt_backend, "_BOARD_MODEL", tmp_path / "absent")
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        gpu_name()


def test_missing_onnx_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        ensure_engine(tmp_path / "nope.onnx", cache_dir=tmp_path)


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where tensorrt is absent")
def test_without_tensorrt_the_error_names_jetpack_and_the_extra(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not parsed before the import")
    with pytest.raises(BackendUnavailableError, match=r"JetPack.*edgedepth\[tensorrt\]"):
        ensure_engine(onnx, cache_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        engine_path(onnx, SHA, BuildOptions(), gpu_name="g")  # the key needs TensorRT's version
