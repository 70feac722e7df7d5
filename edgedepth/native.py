"""The native tile-engine modules: loading them, their status, and handing them device arrays.

``edgedepth._native`` (CPU) and ``edgedepth._native_cuda`` (CUDA) are optional at run time: when
the CPU module is missing, `edgedepth.tiling` falls back to the numpy reference with a warning,
unless the environment sets ``EDGEDEPTH_REQUIRE_NATIVE=1`` (CI does), in which case importing
`edgedepth.tiling` raises ImportError so a broken build cannot hide behind the fallback.

Device arrays (torch CUDA tensors, CuPy arrays) are read through ``__cuda_array_interface__``:
the kernels get the raw device pointer and the framework's *current* stream, so no data goes
through the host and work is ordered after what the caller queued on that stream.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional


def _load(name: str) -> tuple[Optional[ModuleType], Optional[str]]:
    try:
        return importlib.import_module(f"edgedepth.{name}"), None
    except ImportError as err:  # missing or unloadable build
        return None, str(err)


cpu, cpu_error = _load("_native")
cuda, cuda_error = _load("_native_cuda")

if cpu is None and os.environ.get("EDGEDEPTH_REQUIRE_NATIVE") == "1":
    raise ImportError(
        f"EDGEDEPTH_REQUIRE_NATIVE=1 but the native tile engine edgedepth._native could not be loaded: {cpu_error}. "
        "Rebuild with: pip install --no-build-isolation -e ."
    )


def cuda_device_count() -> int:
    """CUDA devices the CUDA module can use (0 without the module, a driver or a GPU)."""
    return cuda.device_count() if cuda is not None else 0


def native_status() -> dict[str, Any]:
    """Which engines are loaded, and why not (`edgedepth.tiling.native_status` adds the thread default)."""
    return {
        "cpu": cpu is not None,
        "cpu_error": cpu_error,
        "cpu_sanitized": bool(getattr(cpu, "sanitized", False)),
        "cuda": cuda is not None,
        "cuda_error": cuda_error,
        "cuda_runtime": getattr(cuda, "cuda_runtime_version", None),
        "cuda_devices": cuda_device_count(),
    }


# ---------------------------------------------------------------- device arrays

_TYPESTR = {"|u1": "uint8", "<f4": "float32", "<f2": "float16"}


def is_device_array(x: Any) -> bool:
    """True for arrays living on a CUDA device (torch CUDA tensors, CuPy arrays)."""
    if type(x).__module__.split(".")[0] == "torch":
        return bool(getattr(x, "is_cuda", False))
    return hasattr(x, "__cuda_array_interface__")


@dataclass(frozen=True)
class DeviceArray:
    """A C-contiguous device array as the CUDA module sees it, plus the framework to allocate with."""

    obj: Any
    ptr: int
    shape: tuple[int, ...]
    dtype: str  # "uint8" | "float32" | "float16" | other typestr
    stream: int

    @staticmethod
    def wrap(x: Any, name: str) -> "DeviceArray":
        """Makes x C-contiguous (a device copy when it is not) and reads its pointer and stream."""
        framework = type(x).__module__.split(".")[0]
        if framework == "torch":
            import torch

            x = x.detach().contiguous()
            stream = torch.cuda.current_stream(x.device).cuda_stream
        elif framework == "cupy":
            import cupy

            # The array's device, not the current one: a contiguous copy must be made there, and
            # CuPy's current stream is per device.
            with x.device:
                x = cupy.ascontiguousarray(x)
                stream = cupy.cuda.get_current_stream().ptr
        else:
            raise TypeError(f"{name}: device arrays must be torch CUDA tensors or CuPy arrays, got {type(x).__name__}")
        iface = x.__cuda_array_interface__
        dtype = _TYPESTR.get(iface["typestr"], iface["typestr"])
        return DeviceArray(x, int(iface["data"][0]), tuple(int(s) for s in iface["shape"]), dtype, int(stream))

    def empty(self, shape: tuple[int, ...], dtype: str) -> "DeviceArray":
        """A new uninitialised array on the same device and framework."""
        framework = type(self.obj).__module__.split(".")[0]
        if framework == "torch":
            import torch

            out = torch.empty(shape, dtype=getattr(torch, dtype), device=self.obj.device)
        else:
            import cupy

            with self.obj.device:
                out = cupy.empty(shape, dtype=dtype)
        return DeviceArray(out, int(out.__cuda_array_interface__["data"][0]), shape, dtype, self.stream)
