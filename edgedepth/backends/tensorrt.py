"""TensorRT backend (NVIDIA GPUs, Jetson): deserialises a cached engine and runs it on a CUDA stream.

Engines are not portable across TensorRT versions, GPUs or precisions, so they are built on the
device from the bundle's ONNX and cached under a key of (ONNX sha256, TensorRT version, GPU name,
precision). The keying, the cache lookup and the builder live HERE, in the runtime, because a device
build host installs only the runtime; ``edgedepth.export`` imports ``engine_path``/``build_engine``
from this module rather than keeping a second cache layout.

Buffers are torch CUDA tensors (``device_tensors = True``): frames arrive by DLPack without a copy,
host frames are uploaded from pinned memory asynchronously, and ``execute_async_v3`` runs on
torch's current stream.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .base import Backend, TensorSpec, cache_root


def gpu_name(device_index: int = 0) -> str:
    """The GPU part of the engine cache key: the Jetson board model, else the CUDA device name
    (the name nvidia-smi prints). The export layer must key engines with this same function."""
    model = Path("/proc/device-tree/model")  # Jetsons: the board, which fixes GPU and DLA cores
    if model.is_file():
        return model.read_text(errors="ignore").strip("\x00 \n")
    import torch

    return torch.cuda.get_device_name(device_index)


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, precision: str) -> str:
    """Stable 20-hex-digit key of everything an engine depends on."""
    blob = json.dumps([onnx_sha256, trt_version, gpu_name, precision]).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def engine_path(onnx_path: Path, onnx_sha256: str, precision: str, *, gpu_name: str,
                trt_version: str | None = None, cache_dir: Path | None = None) -> Path:
    """Where the engine for this ONNX/precision/GPU/TensorRT version is (or will be) cached."""
    if trt_version is None:
        import tensorrt as trt

        trt_version = trt.__version__
    key = engine_cache_key(onnx_sha256, trt_version, gpu_name, precision)
    root = cache_dir or cache_root() / "tensorrt"
    return root / f"{Path(onnx_path).stem}.{precision}.{key}.engine"


def build_engine(onnx_path: Path, out_path: Path, precision: str, *, max_batch: int = 16,
                 workspace_bytes: int = 1 << 30) -> Path:
    """Build a TensorRT engine from ONNX and write it atomically to ``out_path``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        # Explicit quantization: the ONNX carries Q/DQ pairs; keep fp16 for the unquantized layers.
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:
            dynamic = True
            rest = shape[1:]
            profile.set_shape(tensor.name, [1, *rest], [max(1, max_batch // 2), *rest], [max_batch, *rest])
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} at {precision}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, out_path)
    return out_path


class TensorRTBackend(Backend):
    name = "tensorrt"
    package = "tensorrt"
    install_hint = "pip install tensorrt (JetPack ships it on Jetson) plus torch for CUDA buffers"
    formats = ("onnx",)
    supported_precisions = ("fp32", "fp16", "int8")
    device_tensors = True
    thread_safe = False  # an execution context serves one call at a time

    @classmethod
    def devices(cls) -> list[str]:
        import torch

        return ["cuda"] if torch.cuda.is_available() else []

    @classmethod
    def default_precision(cls, device: str) -> str:
        return "fp16"

    def _load(self) -> None:
        import tensorrt as trt
        import torch

        from ..bundle import sha256_file

        if not torch.cuda.is_available():
            raise ValueError("tensorrt backend needs a CUDA GPU; none is visible here")
        self.torch_device = torch.device("cuda" if self.device == "auto" else self.device)
        index = self.torch_device.index if self.torch_device.index is not None else torch.cuda.current_device()
        path = engine_path(self.path, sha256_file(self.path), self.precision, gpu_name=gpu_name(index),
                           trt_version=trt.__version__, cache_dir=self.cache_dir)
        if not path.is_file():
            build_engine(self.path, path, self.precision)
        self.engine_file = path
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self._torch = torch
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name)).__name__
            spec = TensorSpec(name, shape, dtype)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(spec)

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        keep = []
        for spec in self.inputs:
            t = feeds[spec.name].to(self.torch_device, getattr(torch, spec.dtype)).contiguous()
            keep.append(t)
            self.context.set_input_shape(spec.name, tuple(t.shape))
            self.context.set_tensor_address(spec.name, t.data_ptr())
        out = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            out[spec.name] = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=self.torch_device)
            self.context.set_tensor_address(spec.name, out[spec.name].data_ptr())
        stream = torch.cuda.current_stream(self.torch_device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed for {self.engine_file}")
        return {k: v.float() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": str(self.engine_file)}
