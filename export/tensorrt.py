"""TensorRT engines from the bundle's ONNX, on the real ``tensorrt`` Python API, with a safe cache.

Engines are not portable across TensorRT versions or GPU architectures (METHODS.md §6), so an
engine is cached under a key of model sha256 + TensorRT version + GPU + precision (+ the build
options that change the engine), rebuilt when any part differs, and only used after it
deserialises. INT8 is *explicit*: the engine is built from the Q/DQ ONNX of
:mod:`edgedepth.export.quantize_qdq` (TensorRT's implicit calibrators are deprecated since 10.1);
FP16 is enabled alongside so the layers kept out of INT8 (the residual head) run in FP16, not FP32.

The cache key and layout are the runtime's (``edgedepth.backends.tensorrt.engine_path``); the
options, the profile and the ``trtexec`` line are plain Python (tested everywhere); building and
deserialising need ``tensorrt`` and a GPU and are tested where they exist.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgedepth.backends.tensorrt import engine_path
from edgedepth.bundle import sha256_file

from .onnx_export import io_specs
from .optional import require

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildOptions:
    """Engine build options. Batch sizes bound the optimisation profile of a dynamic tile axis."""

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 4            # rows·cols of the bundle's default tiling
    max_batch: int = 16
    workspace_mib: int = 1024     # 8 GB Jetsons share memory with the CPU: keep this modest
    dla_core: Optional[int] = None  # Jetson DLA core; unsupported layers fall back to the GPU

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be >= 1, got {self.workspace_mib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ValueError(f"dla_core must be None or >= 0, got {self.dla_core}")


def detect_gpu() -> str:
    """GPU name (``nvidia-smi``) or the Jetson board model; "" when there is neither."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            if out.strip():
                return out.strip().splitlines()[0]
        except (subprocess.SubprocessError, OSError):
            pass
    model = Path("/proc/device-tree/model")  # Jetsons have no nvidia-smi
    if model.is_file():
        return model.read_text(errors="ignore").strip("\x00 \n")
    return ""


def _profile_shapes(onnx_path: Path, options: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shapes for every input with a dynamic batch axis."""
    inputs, _ = io_specs(onnx_path)
    shapes = {}
    for spec in inputs:
        if spec.shape and spec.shape[0] == -1:
            if -1 in spec.shape[1:]:
                raise ValueError(f"{onnx_path}: input {spec.name!r} has dynamic axes beyond the batch: {spec.shape}")
            rest = spec.shape[1:]
            shapes[spec.name] = tuple((b, *rest) for b in (options.min_batch, options.opt_batch, options.max_batch))
    return shapes


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions,
                    timing_cache: str | Path | None = None, *, shown_onnx: str | None = None) -> str:
    """The ``trtexec`` command line that builds the same engine as :func:`build_engine`.

    Shapes are read from ``onnx_path``; ``shown_onnx`` replaces its path in the line (e.g. the
    name the file will have inside a bundle).
    """
    args = ["trtexec", f"--onnx={shown_onnx or onnx_path}", f"--saveEngine={engine_path}"]
    if options.precision in ("fp16", "int8"):
        args.append("--fp16")
    if options.precision == "int8":
        args.append("--int8")  # with a Q/DQ ONNX: explicit quantization, no calibrator
    shapes = _profile_shapes(Path(onnx_path), options)
    for flag, idx in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        if shapes:
            args.append(flag + "=" + ",".join(f"{n}:{'x'.join(map(str, s[idx]))}" for n, s in shapes.items()))
    args.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if options.dla_core is not None:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    return shlex.join(args)


def build_engine(onnx_path: str | Path, options: BuildOptions, timing_cache: str | Path | None = None) -> bytes:
    """Build a serialised engine from ``onnx_path`` (needs ``tensorrt`` and a GPU)."""
    trt = require("tensorrt", "building a TensorRT engine")
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    shapes = _profile_shapes(onnx_path, options)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} ({options.precision})")
    if cache_path is not None:
        tmp = cache_path.with_name(f".{cache_path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, cache_path)
    return bytes(serialized)


def verify_engine(engine: bytes) -> None:
    """Raise RuntimeError unless ``engine`` deserialises on this TensorRT and GPU."""
    trt = require("tensorrt", "loading a TensorRT engine")
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    if runtime.deserialize_cuda_engine(engine) is None:
        raise RuntimeError("the TensorRT engine does not deserialise with this TensorRT version / GPU")


def ensure_engine(onnx_path: str | Path, cache_dir: str | Path, options: BuildOptions = BuildOptions(),
                  timing_cache: str | Path | None = None, *, gpu: str | None = None, log=print) -> Path:
    """Path of a verified engine for ``onnx_path``: from the cache, or built on a miss.

    The cache layout and key (ONNX sha256, TensorRT version, GPU, precision) are the runtime's
    (:func:`edgedepth.backends.tensorrt.engine_path`), so an engine built here on the device is the
    one the runtime's TensorRT backend finds. Another TensorRT version or GPU gives another path, so
    a mismatch rebuilds; a cached engine that no longer deserialises is rebuilt too.
    """
    trt = require("tensorrt", "building a TensorRT engine")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} not found")
    path = engine_path(onnx_path, sha256_file(onnx_path), options.precision, gpu_name=gpu or detect_gpu(),
                       trt_version=trt.__version__, cache_dir=Path(cache_dir))
    if path.is_file():
        try:
            verify_engine(path.read_bytes())
            return path
        except RuntimeError as err:  # e.g. a driver upgrade under the same TensorRT version
            log(f"cached engine {path.name} unusable ({err}); rebuilding")
    log("building TensorRT engine; equivalent: " + trtexec_command(onnx_path, path, options, timing_cache))
    engine = build_engine(onnx_path, options, timing_cache)
    verify_engine(engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(engine)
    os.replace(tmp, path)
    return path
