"""The TensorRT engine cache layout (plain Python; building and running engines need a GPU)."""
from __future__ import annotations

from pathlib import Path

from edgedepth.backends.tensorrt import engine_path

SHA = "ab" * 32


def test_engine_path_changes_with_every_key_part(tmp_path):
    base = dict(gpu_name="NVIDIA H100", trt_version="10.3.0", cache_dir=tmp_path)
    ref = engine_path(Path("refiner.onnx"), SHA, "fp16", **base)
    assert ref.parent == tmp_path and ref.name.startswith("refiner.fp16.") and ref.suffix == ".engine"
    assert engine_path(Path("elsewhere/refiner.onnx"), SHA, "fp16", **base) == ref  # content, not location
    variants = [
        engine_path(Path("refiner.onnx"), "cd" * 32, "fp16", **base),
        engine_path(Path("refiner.onnx"), SHA, "int8", **base),
        engine_path(Path("refiner.onnx"), SHA, "fp16", **{**base, "gpu_name": "Orin"}),
        engine_path(Path("refiner.onnx"), SHA, "fp16", **{**base, "trt_version": "10.4.0"}),
    ]
    assert len({ref, *variants}) == 5


def test_default_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDEPTH_CACHE", str(tmp_path / "c"))
    path = engine_path(Path("coarse.onnx"), SHA, "fp32", gpu_name="g", trt_version="10")
    assert path.parent == tmp_path / "c" / "tensorrt"

