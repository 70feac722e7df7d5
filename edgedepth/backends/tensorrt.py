"""TensorRT: the one engine builder (used by the runtime, ``edgedepth build-engines`` and
``edgedepth.export``) and the backend that runs the engines.

Engines are not portable across TensorRT versions, GPUs, precisions or build profiles, so they are
built on the device from the bundle's ONNX and cached under a key of everything that changes the
engine: ONNX sha256, TensorRT version, GPU (:func:`gpu_name`), precision, DLA core and the tile-batch
profile. The builder and the key live HERE, in the runtime, because a device installs only the
runtime (DESIGN: the runtime never imports ``train``/``export``); which ONNX and flags a TensorRT
version needs is decided in :mod:`.tensorrt_plan`, the cache files, build lock and eviction live in
:mod:`.engine_cache`, so an engine built by any of them is found by the others.

INT8 is *explicit*: the engine is built from the Q/DQ ONNX (TensorRT's implicit calibrators are
deprecated since 10.1). Up to 10.11 FP16 is enabled alongside so layers kept out of INT8 run in
FP16; from 10.12 networks are strongly typed and the ONNX's types decide (:mod:`.tensorrt_plan`).

Buffers are torch CUDA tensors (``device_tensors = True``): frames arrive by DLPack without a copy,
host frames are uploaded from pinned memory asynchronously, and ``execute_async_v3`` runs on
torch's current stream of the backend's device (``cuda:1`` builds, loads and runs on GPU 1).

Everything that calls TensorRT is kept thin here and checks each result (a None engine, context or
serialised network, a refused input shape) with an error naming the call that failed.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .base import PRECISIONS, Backend, TensorSpec, cache_root
from .engine_cache import (provision, read_cache_file, read_cached_engine, write_cache_file,  # noqa: F401 (API)
                           write_cached_engine)
from .tensorrt_plan import ROLES, BuildOptions, EnginePlan, plan_engines, strongly_typed

# Jetsons expose the board here; it fixes the GPU and the DLA cores (an AGX Orin and an Orin Nano
# both report the CUDA device name "Orin" but need different engines).
_BOARD_MODEL = Path("/proc/device-tree/model")


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


def _tensorrt():
    TensorRTBackend.require()  # BackendUnavailableError saying how to install it
    import tensorrt as trt

    return trt


def _checked(result: Any, what: str) -> Any:
    """``result`` of a TensorRT call that returns None (or False) on failure; RuntimeError naming it."""
    if result is None or result is False:
        raise RuntimeError(f"TensorRT: {what} failed")
    return result


def dla_report(layers: list[tuple[str, str, bool]], dla_core: int) -> dict[str, Any]:
    """The per-layer DLA placement report written beside a DLA engine: ``layers`` are (name, type,
    can run on the DLA) in network order. Layers that cannot run there fall back to the GPU."""
    gpu = [{"layer": name, "type": kind} for name, kind, on_dla in layers if not on_dla]
    return {"dla_core": dla_core, "layers": len(layers), "dla_layers": len(layers) - len(gpu),
            "gpu_fallback": gpu}


def build_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(),
                 timing_cache: str | Path | None = None, onnx_bytes: Optional[bytes] = None, *,
                 strong: Optional[bool] = None, report: Optional[Callable[[dict], None]] = None) -> bytes:
    """Build a serialised engine from ``onnx_path`` (needs ``tensorrt`` and a GPU; builds on the
    current CUDA device).

    ``strong``: build strongly typed (the ONNX's types decide; default: what this TensorRT version
    calls for, :func:`.tensorrt_plan.strongly_typed`); else weakly typed with the FP16/INT8 flags of
    ``options.precision``. ``timing_cache``: a file in a private cache folder, read before the build
    (if it exists) and rewritten after it (atomically). ``onnx_bytes``: the model's verified bytes
    (default: read the file). ``report``: called with :func:`dla_report` when building for a DLA core.
    """
    trt = _tensorrt()
    onnx_path = Path(onnx_path)
    strong = strongly_typed(trt.__version__) if strong is None else strong
    logger = trt.Logger(trt.Logger.WARNING)
    builder = _checked(trt.Builder(logger), "creating the builder (is a CUDA GPU visible?)")
    # Explicit batch is the only mode in TensorRT 10; STRONGLY_TYPED is the flag's bit position.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
    network = _checked(builder.create_network(flags), "create_network")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes if onnx_bytes is not None else onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = _checked(builder.create_builder_config(), "create_builder_config")
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if not strong:
        for flag in {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[options.precision]:
            config.set_flag(getattr(trt.BuilderFlag, flag))
    profile, dynamic = builder.create_optimization_profile(), False
    lo, opt, hi = options.profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:
            if -1 in shape[1:]:
                raise ValueError(f"{onnx_path}: input {tensor.name!r} has dynamic axes beyond the batch: {shape}")
            rest, dynamic = shape[1:], True
            profile.set_shape(tensor.name, (lo, *rest), (opt, *rest), (hi, *rest))
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise RuntimeError(f"TensorRT: add_optimization_profile failed for {onnx_path} (batch {lo}/{opt}/{hi})")
    if options.dla_core is not None:
        if options.dla_core >= builder.num_DLA_cores:
            raise ValueError(f"dla_core={options.dla_core} but this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        if report is not None:
            layers = [network.get_layer(i) for i in range(network.num_layers)]
            report(dla_report([(layer.name, str(layer.type), bool(config.can_run_on_DLA(layer))) for layer in layers],
                              options.dla_core))
    cache_file = Path(timing_cache) if timing_cache is not None else None
    blob = (read_cache_file(cache_file) if cache_file is not None else None) or b""
    cache = config.create_timing_cache(blob)
    if cache is None:  # an unreadable cache file only costs build time: start empty
        cache = _checked(config.create_timing_cache(b""), "create_timing_cache")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT: build_serialized_network returned None for {onnx_path} ({options.precision}"
                           f"{', strongly typed' if strong else ''}); the builder's log above says why")
    if cache_file is not None:
        write_cache_file(cache_file, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def deserialize_engine(engine: bytes, what: str = "the engine", dla_core: Optional[int] = None):
    """The ``ICudaEngine`` of serialised ``engine`` on the current CUDA device; ``dla_core``: the DLA
    core it was built for (the runtime must be told before deserialising). RuntimeError when this
    TensorRT/GPU cannot load it."""
    trt = _tensorrt()
    runtime = _checked(trt.Runtime(trt.Logger(trt.Logger.ERROR)), "creating the runtime")
    if dla_core is not None:
        runtime.DLA_core = dla_core
    loaded = runtime.deserialize_cuda_engine(engine)
    if loaded is None:
        raise RuntimeError(f"TensorRT: deserialize_cuda_engine returned None: {what} does not load with this "
                           "TensorRT version / GPU")
    return loaded


def load_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(), *,
                cache_dir: str | Path | None = None, timing_cache: str | Path | None = None,
                device_index: int = 0, log: Optional[Callable[[str], None]] = None,
                onnx_bytes: Optional[bytes] = None, strong: Optional[bool] = None) -> tuple[Any, Path]:
    """A deserialised engine for ``onnx_path`` and its cache path: from the cache, or built on a miss
    (:func:`.engine_cache.provision`: one build at a time across processes, fsynced, stale engines
    evicted). Builds and loads on the current CUDA device; ``device_index`` names its GPU in the key.

    Another TensorRT version, GPU, precision, DLA core or batch profile gives another path, so a
    mismatch rebuilds; a cached engine that no longer deserialises (e.g. after a driver upgrade) or
    no longer matches its sha256 record is rebuilt too. A cache folder or file another user could
    have written raises PermissionError. ``timing_cache`` defaults to :func:`timing_cache_path` in
    the cache folder. ``onnx_bytes``: the model's verified bytes. ``strong`` as :func:`build_engine`.
    A DLA build writes its per-layer placement report beside the engine (``<engine>.dla.json``).
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
    if timing_cache is None:
        timing_cache = timing_cache_path(gpu, trt.__version__, cache_dir)

    def build() -> bytes:
        if log:
            lo, opt, hi = options.profile()
            log(f"building TensorRT engine {path.name} from {onnx_path.name} ({options.precision}, tile batch "
                f"{lo}/{opt}/{hi}" + (f", DLA {options.dla_core}" if options.dla_core is not None else "")
                + "); the first build takes minutes")
        report = (lambda r: write_cache_file(path.with_name(path.name + ".dla.json"), json.dumps(r, indent=1).encode()))
        return build_engine(onnx_path, options, timing_cache, onnx_bytes, strong=strong, report=report)

    serialized, built = provision(path, build, log=log)
    try:
        return deserialize_engine(serialized, f"engine {path}", options.dla_core), path
    except RuntimeError as err:
        if built:
            raise
        if log:
            log(f"{err}; rebuilding")
    serialized, _ = provision(path, build, reject=serialized, log=log)
    return deserialize_engine(serialized, f"the engine built from {onnx_path}", options.dla_core), path


def ensure_engine(onnx_path: str | Path, options: BuildOptions = BuildOptions(), *,
                  cache_dir: str | Path | None = None, timing_cache: str | Path | None = None,
                  device_index: int = 0, log: Optional[Callable[[str], None]] = print,
                  strong: Optional[bool] = None) -> Path:
    """Path of a verified (deserialising) engine for ``onnx_path`` in the cache, built on a miss."""
    return load_engine(onnx_path, options, cache_dir=cache_dir, timing_cache=timing_cache,
                       device_index=device_index, log=log, strong=strong)[1]


def bundle_engines(bundle: Any, precision: str, tiles: int, max_tile_batch: int = 16, *,
                   dla_core: Optional[int] = None,
                   trt_version: Optional[str] = None) -> dict[str, tuple[EnginePlan, BuildOptions]]:
    """role -> (plan, build options) of the engines a run of ``bundle`` at ``precision`` uses:
    the one answer the runtime and ``edgedepth build-engines`` share, so one finds what the other built.
    The refiner's profile covers ``tiles`` per frame in calls of at most ``max_tile_batch``."""
    plans = plan_engines(precision, _trt_version(trt_version), {r: bundle.precisions(r, "onnx") for r in ROLES})
    return {role: (plan, BuildOptions.for_tiles(plan.precision, tiles, max_tile_batch, dla_core=dla_core)
                   if role == "refiner" else BuildOptions(plan.precision, dla_core=dla_core))
            for role, plan in plans.items()}


def runtime_engines(bundle: Any, precision: str, tiles: int, max_tile_batch: int, *, dla_core: Optional[int] = None,
                    engines: Optional[Mapping[str, str | Path]] = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """For ``Runtime``: role -> (precision of the bundle ONNX to hand over, backend keyword arguments).
    ``engines``: role -> an engine file the user built (e.g. with the bundle's ``trtexec.txt``),
    loaded instead of building one; its I/O is checked against the manifest by the runtime."""
    engines = dict(engines or {})
    unknown = set(engines) - set(ROLES)
    if unknown:
        raise ValueError(f"engines keys must be among {ROLES}, got {sorted(unknown)}")
    out = {}
    for role, (plan, options) in bundle_engines(bundle, precision, tiles, max_tile_batch, dla_core=dla_core).items():
        extra: dict[str, Any] = {"precision": plan.precision, "build_options": options}
        if role in engines:
            extra["engine_file"] = Path(engines[role])
        if plan.note and plan.precision == "fp32" and precision != "fp32":  # a downgrade the user should see
            print(plan.note, file=sys.stderr)
        out[role] = (plan.onnx_precision, extra)
    return out


def batch_chunks(n: int, low: int, high: int) -> list[tuple[int, int, int]]:
    """How ``n`` tiles go through an engine whose profile takes ``low``..``high`` tiles per call:
    (start, stop, padded size) per call; a short call is padded up to ``low`` (a static DLA engine)."""
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got {low}, {high}")
    return [(start, min(start + high, n), max(min(high, n - start), low)) for start in range(0, n, high)]


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
                 files: Mapping[Path, bytes] | None = None, engine_file: str | Path | None = None) -> None:
        """``build_options``: how to build a missing engine (default ``BuildOptions(precision)``);
        its precision must be ``precision``. ``engine_file``: a serialised engine built elsewhere
        (trtexec) to load instead of building from ``path``; it becomes ``self.path``."""
        if build_options is not None and build_options.precision != precision:
            raise ValueError(f"build_options.precision {build_options.precision!r} differs from precision {precision!r}")
        self.build_options = build_options or BuildOptions(precision=precision)
        self.user_engine = Path(engine_file) if engine_file is not None else None
        if self.user_engine is not None and not self.user_engine.is_file():
            raise FileNotFoundError(f"{role} engine {self.user_engine} not found")
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
        device = torch.device("cuda" if self.device == "auto" else self.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {self.device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        self.torch_device = torch.device("cuda", index)
        with torch.cuda.device(index):  # TensorRT builds, deserialises and allocates on the current device
            if self.user_engine is not None:
                self.engine = deserialize_engine(self.user_engine.read_bytes(), f"{self.role} engine {self.user_engine}",
                                                 self.build_options.dla_core)
                self.engine_file = self.path = self.user_engine  # the runtime's I/O checks name this file
            else:
                self.engine, self.engine_file = load_engine(self.path, self.build_options, cache_dir=self.cache_dir,
                                                            device_index=index, log=print, onnx_bytes=self.read())
            self.context = _checked(self.engine.create_execution_context(),
                                    f"create_execution_context() for {self.engine_file.name} (out of GPU memory?)")
        self._torch = torch
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name)).__name__
            if dtype not in ("float32", "float16"):
                raise ValueError(f"{self.role} engine {self.engine_file.name}: tensor {name!r} is {dtype}; edgedepth "
                                 "feeds and reads float32 or float16 tensors")
            spec = TensorSpec(name, shape, dtype)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(spec)
        # The tile batches the engine takes: its profile for a dynamic axis, else its fixed batch.
        first = self.inputs[0]
        if first.shape and first.shape[0] is None:
            low, _, high = self.engine.get_tensor_profile_shape(first.name, 0)
            self.batch_range = (int(low[0]), int(high[0]))
        else:
            self.batch_range = (first.shape[0] or 1,) * 2

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        n = int(next(iter(feeds.values())).shape[0])
        calls = batch_chunks(n, *self.batch_range)
        parts = [self._call({k: v[a:b] for k, v in feeds.items()}, size) for a, b, size in calls]
        return {k: torch.cat([p[k][:b - a] for p, (a, b, _) in zip(parts, calls)]) if len(parts) > 1
                else parts[0][k][:n] for k in parts[0]}

    def _call(self, feeds: Mapping[str, Any], size: int) -> dict[str, Any]:
        """One execution of the engine on ``feeds``, their batch padded up to ``size`` tiles."""
        torch = self._torch
        keep = []
        with torch.cuda.device(self.torch_device):
            for spec in self.inputs:
                t = feeds[spec.name].to(self.torch_device, getattr(torch, spec.dtype)).contiguous()
                if t.shape[0] < size:
                    t = torch.cat([t, t[-1:].expand(size - t.shape[0], *t.shape[1:])]).contiguous()
                keep.append(t)
                if not self.context.set_input_shape(spec.name, tuple(t.shape)):
                    raise ValueError(f"{self.role} engine {self.engine_file.name} refuses input {spec.name!r} of shape "
                                     f"{tuple(t.shape)} (it takes {self.batch_range[0]}..{self.batch_range[1]} tiles "
                                     f"per call of {spec.shape[1:]})")
                _checked(self.context.set_tensor_address(spec.name, t.data_ptr()), f"set_tensor_address({spec.name!r})")
            out = {}
            for spec in self.outputs:
                shape = tuple(self.context.get_tensor_shape(spec.name))
                out[spec.name] = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=self.torch_device)
                _checked(self.context.set_tensor_address(spec.name, out[spec.name].data_ptr()),
                         f"set_tensor_address({spec.name!r})")
            stream = torch.cuda.current_stream(self.torch_device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT: execute_async_v3 failed for {self.engine_file}")
        return {k: v.float() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": str(self.engine_file), "user_engine": self.user_engine is not None,
                "build": self.build_options.key_fields(), "batch_range": list(self.batch_range)}
