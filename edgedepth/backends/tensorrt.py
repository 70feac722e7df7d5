"""TensorRT: the one engine builder and engine cache (used by the runtime and by ``edgedepth.export``),
and the backend that runs the engines.

Engines are not portable across TensorRT versions, GPUs, precisions or build profiles, so they are
built on the device from the bundle's ONNX and cached under a key of everything that changes the
engine: ONNX sha256, TensorRT version, GPU (:func:`gpu_name`), precision, DLA core and the tile-batch
profile. The builder, the key and the cache live HERE, in the runtime, because a device installs only
the runtime (DESIGN: the runtime never imports ``train``/``export``); ``edgedepth.export.tensorrt``
only adds the ``trtexec`` line and the bundle-time choices on top, so an engine built by either is
found by the other.

INT8 is *explicit*: the engine is built from the Q/DQ ONNX (TensorRT's implicit calibrators are
deprecated since 10.1); FP16 is enabled alongside so layers kept out of INT8 run in FP16, not FP32.

Buffers are torch CUDA tensors (``device_tensors = True``): frames arrive by DLPack without a copy,
host frames are uploaded from pinned memory asynchronously, and ``execute_async_v3`` runs on
torch's current stream.

Deserialising an engine runs native code, so the cache is trusted only as far as it is private
(:func:`read_cache_file`): the folder and every file must belong to this user and be writable by no
one else, files are opened without following links, and an engine loads only when its sha256
matches the ``.sha256`` record written beside it (a truncated or swapped engine is rebuilt). The
engine bytes that were hashed are the bytes deserialised.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..atomic import atomic_path
from .base import PRECISIONS, Backend, TensorSpec, cache_root, private_dir

# Jetsons expose the board here; it fixes the GPU and the DLA cores (an AGX Orin and an Orin Nano
# both report the CUDA device name "Orin" but need different engines).
_BOARD_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class BuildOptions:
    """How an engine is built. Batch sizes bound the optimisation profile of a dynamic tile axis
    (inputs whose first dimension is -1); static models ignore them."""

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 4            # rows x cols of the default 2x2 tiling
    max_batch: int = 16           # the runtime's default max_tile_batch (tiles per refiner call)
    workspace_mib: int = 1024     # 8 GB Jetsons share memory with the CPU: keep this modest
    dla_core: Optional[int] = None  # Jetson DLA core; layers the DLA cannot run fall back to the GPU

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be >= 1, got {self.workspace_mib}")
        if self.dla_core is not None:
            if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int) or self.dla_core < 0:
                raise ValueError(f"dla_core must be None or an int >= 0, got {self.dla_core!r}")
            if self.precision == "fp32":
                raise ValueError("dla_core needs precision 'fp16' or 'int8': the DLA has no FP32 kernels")

    @classmethod
    def for_tiles(cls, precision: str, tiles: int, max_tile_batch: int = 16, *,
                  dla_core: Optional[int] = None, workspace_mib: int = 1024) -> "BuildOptions":
        """Options for a runtime that refines ``tiles`` tiles per frame in calls of at most
        ``max_tile_batch``: profile 1 / min(tiles, max_tile_batch) / max_tile_batch."""
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
            raise ValueError(f"tiles must be an int >= 1, got {tiles!r}")
        return cls(precision, 1, min(tiles, max_tile_batch), max_tile_batch, workspace_mib, dla_core)

    def key_fields(self) -> dict[str, Any]:
        """The options that change the engine, as they enter the cache key. The workspace is left
        out: it only caps the builder's scratch memory, and keying on it would make a runtime and an
        exporter with different caps rebuild each other's engines."""
        return {"precision": self.precision, "batch": [self.min_batch, self.opt_batch, self.max_batch],
                "dla_core": self.dla_core}


def gpu_name(device_index: int = 0) -> str:
    """The GPU part of the engine cache key: the Jetson board model, else the CUDA device name
    (torch.cuda.get_device_name). Runtime and export both key engines with this one function."""
    if _BOARD_MODEL.is_file():
        model = _BOARD_MODEL.read_text(errors="ignore").strip("\x00 \n")
        if model:
            return model
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT engines need a CUDA GPU; none is visible here")
    return torch.cuda.get_device_name(device_index)


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu: str, options: BuildOptions) -> str:
    """Stable 20-hex-digit key of everything an engine depends on."""
    blob = json.dumps([onnx_sha256, trt_version, gpu, options.key_fields()], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _trt_version(trt_version: Optional[str]) -> str:
    if trt_version is not None:
        return trt_version
    return _tensorrt().__version__


def engine_path(onnx_path: str | Path, onnx_sha256: str, options: BuildOptions, *, gpu_name: str,
                trt_version: Optional[str] = None, cache_dir: str | Path | None = None) -> Path:
    """Where the engine for this ONNX content / options / GPU / TensorRT version is (or will be) cached:
    ``CACHE/tensorrt/<onnx stem>.<precision>[.dla<N>].<key>.engine`` (CACHE = $EDGEDEPTH_CACHE or
    ~/.cache/edgedepth). The key hashes the content, so the ONNX file's location does not matter."""
    key = engine_cache_key(onnx_sha256, _trt_version(trt_version), gpu_name, options)
    dla = f".dla{options.dla_core}" if options.dla_core is not None else ""
    return _cache_dir(cache_dir) / f"{Path(onnx_path).stem}.{options.precision}{dla}.{key}.engine"


def timing_cache_path(gpu_name: str, trt_version: Optional[str] = None, cache_dir: str | Path | None = None) -> Path:
    """The builder's timing cache for this GPU and TensorRT version (shared by every model built there:
    layer timings do not depend on the model, and reusing them cuts rebuilds from minutes to seconds)."""
    key = hashlib.sha256(json.dumps([_trt_version(trt_version), gpu_name]).encode()).hexdigest()[:12]
    return _cache_dir(cache_dir) / f"timing.{key}.cache"


def _cache_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_root() / "tensorrt"


def read_cache_file(path: str | Path) -> Optional[bytes]:
    """The bytes of the cache file ``path``, None when it does not exist. PermissionError when its
    folder or the file itself could have been written by another user, or it is a link."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PermissionError(f"cache file {path} is a symbolic link; refusing to load it") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"cache file {path} is not a regular file; refusing to load it")
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            raise PermissionError(f"cache file {path} was written by another user or is writable by others "
                                  f"(owner uid {info.st_uid}, mode {info.st_mode & 0o777:o}); refusing to load it")
        return fh.read()


def write_cache_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in a private cache folder, atomically, readable by this user only."""
    path = Path(path)
    private_dir(path.parent)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def _digest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".sha256")


def read_cached_engine(path: str | Path) -> Optional[bytes]:
    """A cached engine's bytes, or None when it is absent or does not match its sha256 record (a crash
    between the two writes, a truncated file: rebuild). PermissionError as :func:`read_cache_file`."""
    engine = read_cache_file(path)
    if engine is None:
        return None
    record = read_cache_file(_digest_path(Path(path)))
    if record is None or record.decode("ascii", "replace").strip() != hashlib.sha256(engine).hexdigest():
        return None
    return engine


def write_cached_engine(path: str | Path, engine: bytes) -> None:
    """Cache ``engine`` at ``path`` with its sha256 record beside it (the record last)."""
    write_cache_file(path, engine)
    write_cache_file(_digest_path(Path(path)), hashlib.sha256(engine).hexdigest().encode("ascii") + b"\n")


def _tensorrt():
    TensorRTBackend.require()  # BackendUnavailableError saying how to install it
    import tensorrt as trt

    return trt


def build_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(),
                 timing_cache: str | Path | None = None, onnx_bytes: Optional[bytes] = None) -> bytes:
    """Build a serialised engine from ``onnx_path`` (needs ``tensorrt`` and a GPU).

    ``timing_cache``: a file in a private cache folder, read before the build (if it exists) and
    rewritten after it (atomically). ``onnx_bytes``: the model's verified bytes (default: read the file).
    """
    trt = _tensorrt()
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes if onnx_bytes is not None else onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile, dynamic = builder.create_optimization_profile(), False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:
            if -1 in shape[1:]:
                raise ValueError(f"{onnx_path}: input {tensor.name!r} has dynamic axes beyond the batch: {shape}")
            rest, dynamic = shape[1:], True
            profile.set_shape(tensor.name, (options.min_batch, *rest), (options.opt_batch, *rest),
                              (options.max_batch, *rest))
    if dynamic:
        config.add_optimization_profile(profile)
    if options.dla_core is not None:
        if options.dla_core >= builder.num_DLA_cores:
            raise ValueError(f"dla_core={options.dla_core} but this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_file = Path(timing_cache) if timing_cache is not None else None
    blob = (read_cache_file(cache_file) if cache_file is not None else None) or b""
    cache = config.create_timing_cache(blob)
    if cache is None:  # an unreadable cache file only costs build time: start empty
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} ({options.precision})")
    if cache_file is not None:
        write_cache_file(cache_file, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def deserialize_engine(engine: bytes, what: str = "the engine"):
    """The ``ICudaEngine`` of serialised ``engine``; RuntimeError when this TensorRT/GPU cannot load it."""
    trt = _tensorrt()
    loaded = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(engine)
    if loaded is None:
        raise RuntimeError(f"{what} does not deserialise with this TensorRT version / GPU")
    return loaded


def load_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(), *,
                cache_dir: str | Path | None = None, timing_cache: str | Path | None = None,
                device_index: int = 0, log: Optional[Callable[[str], None]] = None,
                onnx_bytes: Optional[bytes] = None) -> tuple[Any, Path]:
    """A deserialised engine for ``onnx_path`` and its cache path: from the cache, or built on a miss.

    Another TensorRT version, GPU, precision, DLA core or batch profile gives another path, so a
    mismatch rebuilds; a cached engine that no longer deserialises (e.g. after a driver upgrade) or
    no longer matches its sha256 record is rebuilt too. A cache folder or file another user could
    have written raises PermissionError (:func:`read_cache_file`). ``timing_cache`` defaults to
    :func:`timing_cache_path` in the cache folder. ``onnx_bytes``: the model's verified bytes.
    """
    onnx_path = Path(onnx_path)
    if onnx_bytes is None:
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model {onnx_path} not found")
        onnx_bytes = onnx_path.read_bytes()
    trt = _tensorrt()
    gpu = gpu_name(device_index)
    path = engine_path(onnx_path, hashlib.sha256(onnx_bytes).hexdigest(), options, gpu_name=gpu,
                       trt_version=trt.__version__, cache_dir=cache_dir)
    cached = read_cached_engine(path)
    if cached is not None:
        try:
            return deserialize_engine(cached, f"cached engine {path}"), path
        except RuntimeError as err:
            if log:
                log(f"{err}; rebuilding")
    elif path.is_file() and log:
        log(f"cached engine {path} does not match its sha256 record; rebuilding")
    if log:
        log(f"building TensorRT engine {path.name} from {onnx_path.name} ({options.precision}, tile batch "
            f"{options.min_batch}/{options.opt_batch}/{options.max_batch}"
            + (f", DLA {options.dla_core}" if options.dla_core is not None else "") + "); the first build takes minutes")
    if timing_cache is None:
        timing_cache = timing_cache_path(gpu, trt.__version__, cache_dir)
    serialized = build_engine(onnx_path, options, timing_cache, onnx_bytes)
    engine = deserialize_engine(serialized, f"the engine built from {onnx_path}")
    write_cached_engine(path, serialized)
    return engine, path


def ensure_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(), *,
                  cache_dir: str | Path | None = None, timing_cache: str | Path | None = None,
                  device_index: int = 0, log: Optional[Callable[[str], None]] = print) -> Path:
    """Path of a verified (deserialising) engine for ``onnx_path`` in the cache, built on a miss."""
    return load_engine(onnx_path, options, cache_dir=cache_dir, timing_cache=timing_cache,
                       device_index=device_index, log=log)[1]


class TensorRTBackend(Backend):
    name = "tensorrt"
    package = "tensorrt"
    install_hint = ("JetPack ships it on a Jetson; elsewhere pip install tensorrt (the extra edgedepth[tensorrt]) "
                    "and torch for CUDA buffers")
    formats = ("onnx",)
    supported_precisions = PRECISIONS
    device_tensors = True
    thread_safe = False  # an execution context serves one call at a time

    def __init__(self, path: Path, *, role: str, device: str, precision: str, threads: int | None = None,
                 cache_dir: Path | None = None, build_options: BuildOptions | None = None,
                 files: Mapping[Path, bytes] | None = None) -> None:
        """``build_options``: how to build a missing engine (default ``BuildOptions(precision)``);
        its precision must be ``precision``."""
        if build_options is not None and build_options.precision != precision:
            raise ValueError(f"build_options.precision {build_options.precision!r} differs from precision {precision!r}")
        self.build_options = build_options or BuildOptions(precision=precision)
        super().__init__(path, role=role, device=device, precision=precision, threads=threads, cache_dir=cache_dir,
                         files=files)

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

        if not torch.cuda.is_available():
            raise ValueError("tensorrt backend needs a CUDA GPU; none is visible here")
        self.torch_device = torch.device("cuda" if self.device == "auto" else self.device)
        index = self.torch_device.index if self.torch_device.index is not None else torch.cuda.current_device()
        self.engine, self.engine_file = load_engine(self.path, self.build_options, cache_dir=self.cache_dir,
                                                    device_index=index, log=print, onnx_bytes=self.read())
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
            if spec.shape and spec.shape[0] is None and t.shape[0] > self.build_options.max_batch:
                raise ValueError(f"{self.role} engine {self.engine_file.name} was built for at most "
                                 f"{self.build_options.max_batch} tiles per call, got {t.shape[0]}: lower "
                                 f"max_tile_batch or build with BuildOptions(max_batch=...)")
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
        return {**super().describe(), "engine": str(self.engine_file),
                "build": self.build_options.key_fields()}
