"""Import the optional packages of the ``[export]`` extra with an error that says how to get them."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRA = "edgedepth[export]"

# Packages that are not on PyPI's [export] extra: they come with the device's SDK.
_DEVICE_PACKAGES = {
    "torch_tensorrt": "install torch-tensorrt matching your torch and TensorRT (`pip install torch-tensorrt`)",
}


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        how = _DEVICE_PACKAGES.get(module, f"pip install '{EXTRA}'")
        raise ImportError(f"{purpose} needs the optional package {module!r}: {how}") from err


def missing(modules: list[str]) -> list[str]:
    """The names in ``modules`` that cannot be imported."""
    return [m for m in modules if not available(m)]
