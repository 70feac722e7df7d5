"""Torch-TensorRT compilation of the refiner, for users who deploy with PyTorch on the Jetson.

The compiled module is saved as a ``torch.export`` program (``.ep``) with a fixed tile batch, which
the runtime's torch backend loads with ``torch.export.load``. Needs ``torch_tensorrt`` and a CUDA
GPU (both on the device, not in the ``[export]`` extra).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .onnx_export import refiner_example_inputs
from .optional import require

_DTYPES = {"fp32": torch.float32, "fp16": torch.half, "int8": torch.int8}


def compile_refiner(refiner: nn.Module, path: str | Path, *, precision: str = "fp16", batch: int = 4,
                    workspace_mib: int = 1024) -> Path:
    """Compile ``refiner`` with Torch-TensorRT for ``batch`` tiles at ``precision``; save to ``path``.

    ``int8`` needs a refiner already carrying fake-quant (Q/DQ) modules from quantization-aware
    training or modelopt; Torch-TensorRT then builds explicit-INT8 engines from them.
    """
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {tuple(_DTYPES)}, got {precision!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    torch_trt = require("torch_tensorrt", "Torch-TensorRT compilation")
    if not torch.cuda.is_available():
        raise RuntimeError("Torch-TensorRT compilation needs a CUDA GPU; none is visible")
    inputs = [t.cuda() for t in refiner_example_inputs(refiner, batch)]
    precisions = {torch.float32, _DTYPES[precision]}
    trt_module = torch_trt.compile(refiner.eval().cuda(), ir="dynamo", inputs=inputs,
                                   enabled_precisions=precisions, workspace_size=workspace_mib << 20)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_trt.save(trt_module, str(path), inputs=inputs)
    return path
