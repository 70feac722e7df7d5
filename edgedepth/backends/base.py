"""The backend interface: one backend instance wraps one model (coarse or refiner).

A backend loads a model file from a bundle, declares its inputs and outputs, and runs it on a
dict of named arrays. Host backends take and return numpy float32 NCHW arrays (they cast to the
model's own input dtype, e.g. float16, themselves). A backend with ``device_tensors = True`` (torch)
takes and returns torch tensors on its device, so the runtime can keep a whole frame on the GPU.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")
# Weight-compressed variants only some formats hold (CoreML 6-bit palettes): selectable, not a compute precision.
WEIGHT_VARIANTS = ("palette6",)


def cache_root() -> Path:
    """Root of edgedepth's on-disk caches (compiled models, engines): $EDGEDEPTH_CACHE or ~/.cache/edgedepth.

    Not the bundle folder: a bundle installed in site-packages is usually read-only.
    """
    return Path(os.environ.get("EDGEDEPTH_CACHE", Path.home() / ".cache" / "edgedepth"))


def private_dir(path: Path) -> Path:
    """``path`` as a folder only this user can change, created (mode 0700) if missing.

    What a backend loads from a cache (a serialised TensorRT engine, an OpenVINO compiled blob) is
    native code or parsed as such, so a cache folder another user can write is refused with a
    PermissionError naming it: anyone who can write it could plant an engine under the predictable
    name the cache looks for. Checked on POSIX; elsewhere the folder is only created.
    """
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid"):
        info = os.stat(path)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise PermissionError(
                f"cache folder {path} is {'owned by another user' if info.st_uid != os.getuid() else 'writable by other users'} "
                f"(mode {info.st_mode & 0o777:o}); edgedepth loads compiled models from it, so it must be private: "
                "pass cache_dir= (or set EDGEDEPTH_CACHE) to a folder of your own, or chmod go-w it")
    return path


class BackendUnavailableError(ImportError):
    """The backend's Python package is not installed; the message says what to pip install."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None = dynamic axis) and numpy dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


class Backend(ABC):
    """One loaded model. Subclasses set the class attributes and implement ``_load``/``_run``."""

    name: ClassVar[str]
    package: ClassVar[str]             # import name whose presence makes the backend available
    install_hint: ClassVar[str]        # what to pip install when it is missing
    formats: ClassVar[tuple[str, ...]]  # bundle file formats it loads, most preferred first
    supported_precisions: ClassVar[tuple[str, ...]]
    device_tensors: ClassVar[bool] = False
    # Backends whose run() may not be entered from two threads at once say so; the base serialises.
    thread_safe: ClassVar[bool] = False

    def __init__(self, path: Path, *, role: str, device: str, precision: str,
                 threads: int | None = None, cache_dir: Path | None = None,
                 files: Mapping[Path, bytes] | None = None) -> None:
        """``files``: the verified bytes of the model file and its companions by path
        (``Bundle.model_bytes``); a backend loads those instead of reading the paths again."""
        self.require()
        self.path = Path(path)
        self.role = role
        self.device = device
        self.precision = precision
        self.threads = threads
        self.cache_dir = cache_dir
        self.files = {Path(k): v for k, v in (files or {}).items()}
        self._lock = threading.Lock()
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self._load()

    # --- availability -------------------------------------------------------------------------
    @classmethod
    def is_available(cls) -> bool:
        """True when the backend's package can be imported (checked without importing it)."""
        try:
            return importlib.util.find_spec(cls.package) is not None
        except (ImportError, ValueError):
            return False

    @classmethod
    def require(cls) -> None:
        """Raise BackendUnavailableError naming the pip install when the package is missing."""
        try:
            importlib.import_module(cls.package)
        except ImportError as err:
            raise BackendUnavailableError(
                f"backend {cls.name!r} needs the Python package {cls.package!r}, which is not installed: "
                f"{cls.install_hint}"
            ) from err

    @classmethod
    def devices(cls) -> list[str]:
        """Devices this backend can run on here, e.g. ["cpu", "cuda"]; imports the package."""
        return ["cpu"]

    @classmethod
    def default_precision(cls, device: str) -> str:
        """The precision ``precision="auto"`` asks for on ``device``."""
        return "fp32"

    def read(self, path: Path | None = None) -> bytes:
        """The bytes of ``path`` (default: the model file): the verified copy when the runtime handed
        one over, else read from disk (a backend built outside a bundle)."""
        path = self.path if path is None else Path(path)
        return self.files[path] if path in self.files else path.read_bytes()

    # --- running ------------------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Load ``self.path``; fill ``self.inputs`` and ``self.outputs``."""

    @abstractmethod
    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run on feeds already in the model's dtypes; return outputs by name."""

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model: feeds by input name (float32 NCHW) -> outputs by name (float32 NCHW)."""
        missing = [spec.name for spec in self.inputs if spec.name not in feeds]
        if missing:
            raise ValueError(f"{self.name} {self.role} model: missing inputs {missing}")
        if not self.device_tensors:
            feeds = {s.name: np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in self.inputs}
        if self.thread_safe:
            out = self._run(feeds)
        else:
            with self._lock:
                out = self._run(feeds)
        if not self.device_tensors:
            out = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        return out

    def describe(self) -> dict[str, Any]:
        """What was loaded, for Runtime.info()."""
        return {"backend": self.name, "role": self.role, "device": self.device,
                "precision": self.precision, "file": str(self.path)}

