"""Backend registry and ``auto`` selection.

Backends register by name with the module that implements them; a module is imported only when
its backend is asked for, so listing backends never imports onnxruntime, openvino or torch.
"""
from __future__ import annotations

import importlib
import platform
from typing import Callable

from .base import Backend, BackendUnavailableError

# name -> "module:Class"
_REGISTRY: dict[str, str] = {}
# ``auto`` tries these in order (DESIGN.md, Backends); coreml/torch are only used when asked for.
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")


def register_backend(name: str, target: str) -> None:
    """Register backend ``name`` implemented by ``target`` ("package.module:Class")."""
    _REGISTRY[name] = target


def list_backends() -> list[str]:
    """Every registered backend name, installed or not."""
    return list(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """The backend class for ``name``; ValueError for an unknown name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of: auto, {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> list[str]:
    """Registered backends whose package is installed (checked without importing it)."""
    return [name for name in _REGISTRY if get_backend(name).is_available()]


def _x86_cpu() -> bool:
    # OpenVINO's CPU plugin measured faster than onnxruntime on x86-64 at equal threads, on Intel
    # (default bundle, 1280x720, 2 threads: 116 vs 176 ms min) and on AMD (1.4-1.8x, issue 13);
    # on ARM it is unmeasured, so onnxruntime stays the choice there.
    return platform.machine().lower() in ("x86_64", "amd64")


def _has_cuda_gpu() -> bool:
    # TensorRT is worth choosing only with an NVIDIA GPU present; cheap check without CUDA libs.
    import os

    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvhost-ctrl")


_AUTO_CONDITIONS: dict[str, tuple[Callable[[], bool], str]] = {
    "tensorrt": (_has_cuda_gpu, "no NVIDIA GPU"),
    "openvino": (_x86_cpu, "not an x86-64 CPU"),
    "onnxruntime": (lambda: True, ""),
}


def select_backend(name: str = "auto", formats: set[str] | None = None) -> tuple[type[Backend], str]:
    """Resolve ``name`` to a backend class and say why it was chosen.

    ``auto`` takes the first of tensorrt (NVIDIA GPU) > openvino (x86-64 CPU) > onnxruntime that is
    installed and whose model ``formats`` the bundle holds. A named backend that is not installed
    raises BackendUnavailableError naming what to install.
    """
    if name != "auto":
        cls = get_backend(name)
        cls.require()
        return cls, f"{name} (requested)"
    skipped = []
    for candidate in AUTO_ORDER:
        cls = get_backend(candidate)
        condition, why_not = _AUTO_CONDITIONS[candidate]
        if not cls.is_available():
            skipped.append(f"{candidate}: not installed")
        elif not condition():
            skipped.append(f"{candidate}: {why_not}")
        elif formats is not None and not formats.intersection(cls.formats):
            skipped.append(f"{candidate}: bundle has no {'/'.join(cls.formats)} model")
        else:
            reason = f"{candidate} (auto" + (f"; skipped {', '.join(skipped)})" if skipped else ")")
            return cls, reason
    raise BackendUnavailableError(
        "no usable backend: " + "; ".join(skipped) + ". Install one: pip install onnxruntime"
    )


register_backend("tensorrt", "edgedepth.backends.tensorrt:TensorRTBackend")
register_backend("openvino", "edgedepth.backends.openvino:OpenVINOBackend")
register_backend("onnxruntime", "edgedepth.backends.onnxruntime:ONNXRuntimeBackend")
register_backend("coreml", "edgedepth.backends.coreml:CoreMLBackend")
register_backend("torch", "edgedepth.backends.torch:TorchBackend")
