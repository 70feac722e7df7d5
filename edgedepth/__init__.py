"""edgedepth: high-resolution metric monocular depth on edge devices.

    from edgedepth import Runtime
    depth = Runtime().predict("frame.png").depth   # H×W float32 metres

Importing edgedepth never imports torch, edgedepth.train or edgedepth.export.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["Runtime", "DepthResult", "TileGrid", "__version__"]

if TYPE_CHECKING:
    from .runtime import DepthResult, Runtime
    from .tiling import TileGrid

_LAZY = {"Runtime": "runtime", "DepthResult": "runtime", "TileGrid": "tiling"}


def __getattr__(name: str) -> Any:
    # Lazy so `import edgedepth` stays cheap on a device and the CLI starts fast.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'edgedepth' has no attribute {name!r}")
