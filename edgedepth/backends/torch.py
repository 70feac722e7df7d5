"""torch backend (development, GPU tests): the bundle's torch checkpoint through edgedepth.train models.

The bundle's torch file is ``torch/model.safetensors`` inside a checkpoint folder (model.json beside
it; docs/interfaces.md, Checkpoints); both roles rebuild their module from it with
``edgedepth.train.checkpoint.load_models``. Inputs and outputs are torch tensors on the backend's
device (``device_tensors = True``): with CUDA the runtime keeps the whole frame on the GPU and
tiles it with ``edgedepth.tiling_torch``. torch is imported only when this backend is chosen.

CUDA: fp16 by default (the fp32 weights cast on load), and each input shape's forward is captured
once as a CUDA graph and replayed. Both models are a few hundred kernels of microseconds each, so
launches, not the GPU, set their time (eager fp16 is no faster than fp32 on an H200).

CPU threads: torch runs a model as a few hundred small ops, each an OpenMP parallel region whose
team busy-waits at its closing barrier. When the team is as large as the machine, every region
stalls for a scheduler slice as soon as anything else wants a core: the other stage of
``Runtime.stream`` (coarse and refiner run at once in two threads, each with its own team), the
native tile engine, or another process. On a 2-core machine with one other busy process that made
a 1920x1080 frame's refine 10-200x slower than with one thread (benchmarks/bench_runtime.py). So
without ``threads`` a CPU backend caps torch's intra-op threads at half the usable cores (one per
pipeline stage); ``threads=N`` sets exactly N. Both are process-wide (``torch.set_num_threads``).
The price: on an otherwise idle 2-core machine the full team was 1.2-2.3x faster (predict and
stream, 1080p and 4K), so a box that runs nothing else may pass ``threads=os.cpu_count()``.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .base import Backend, TensorSpec

_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
MAX_CUDA_GRAPHS = 4  # captured input shapes kept per backend
CHECKPOINT_FILES = ("model.json", "model.safetensors")
# What a checkpoint's model.json may ask of the model builders: kwargs that name files or folders
# would load them from anywhere on disk (a checkpoint carries its own weights), and a width or size
# out of these bounds asks for an absurd allocation (width=1e6 is 256 TB).
_PATH_KWARGS = ("path", "pretrained", "weights", "module")
_MAX_WIDTH, _MAX_SIZE = 16.0, 4096


def check_checkpoint_meta(meta: Any, where: str) -> None:
    """Refuse a model.json whose model specs name files or ask for out-of-bound sizes (ValueError)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for role in ("coarse", "refiner"):
        spec = meta.get(role)
        if spec is None and role == "refiner":
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
            raise ValueError(f"{where}: {role} must be {{'name': str, 'kwargs': {{...}}}}, got {spec!r}")
        for key, value in spec.get("kwargs", {}).items():
            what = f"{where}: {role}.kwargs.{key}"
            if key in _PATH_KWARGS and value not in (None, False):
                raise ValueError(f"{what} = {value!r} would load files from outside the bundle; a bundle's "
                                 "checkpoint must carry its weights")
            numbers = value if isinstance(value, list) else [value]
            for v in numbers:
                if isinstance(v, str) and any(c in v for c in "/\\~"):
                    raise ValueError(f"{what} = {value!r} names a path; a bundle's checkpoint may not")
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    bound = _MAX_WIDTH if "width" in key else _MAX_SIZE
                    if not math.isfinite(v) or abs(v) > bound:
                        raise ValueError(f"{what} = {value!r} is out of range (|value| <= {bound:g})")


def _load_checkpoint(files: Mapping[str, bytes], device: str, dtype: Any, where: str) -> tuple[Any, Any]:
    # Coarse and refiner backends share one checkpoint: load it once per (content, device, dtype).
    # The dtype is part of the key because Module.to casts in place: an fp16 runtime must not turn
    # the models of an fp32 one on the same bundle to half. The models are built from the verified
    # bytes, written to a private folder for the loader.
    from edgedepth.train.checkpoint import load_models

    check_checkpoint_meta(json.loads(files["model.json"]), f"{where}/model.json")
    key = ("".join(hashlib.sha256(files[n]).hexdigest() for n in CHECKPOINT_FILES), device, str(dtype))
    with _CACHE_LOCK:
        if key not in _CACHE:
            with tempfile.TemporaryDirectory(prefix="edgedepth-ckpt-") as tmp:
                for name in CHECKPOINT_FILES:
                    (Path(tmp) / name).write_bytes(files[name])
                coarse, refiner, _ = load_models(tmp, map_location=device)
            _CACHE[key] = tuple(m.to(dtype) if m is not None else None for m in (coarse, refiner))
        return _CACHE[key]


def capture_cuda_graph(forward: Callable[[list[Any]], Any], args: Sequence[Any]) -> tuple[Any, list[Any], Any]:
    """``forward(static_in)`` captured as a CUDA graph, ``static_in`` being copies of the device
    tensors ``args``: (graph, static_in, static_out). Copy new inputs into ``static_in``, call
    ``graph.replay()``, read ``static_out`` (overwritten by the next replay). Two warm-up calls run
    first on a side stream: cuDNN and cuBLAS set up their handles and workspaces outside a capture."""
    import torch

    static_in = [a.clone() for a in args]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(2):
            forward(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = forward(static_in)
    return graph, static_in, static_out


def cpu_threads_default() -> int:
    """torch intra-op threads a CPU backend allows itself without ``threads``: half the usable cores
    (the two stages of ``Runtime.stream`` each run a model), at least one."""
    from ..tiling import available_cores

    return max(1, available_cores() // 2)


class TorchBackend(Backend):
    name = "torch"
    package = "torch"
    install_hint = "pip install 'edgedepth[train]' (torch and the edgedepth.train models)"
    formats = ("torch",)
    supported_precisions = ("fp32", "fp16")
    device_tensors = True  # on CUDA; a CPU instance exchanges numpy (see _load)
    thread_safe = True  # eval-mode forward holds no shared mutable state; the CUDA graphs' buffers have their lock

    @classmethod
    def devices(cls) -> list[str]:
        import torch

        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    @classmethod
    def default_precision(cls, device: str) -> str:
        return "fp16" if device.startswith("cuda") else "fp32"

    def _load(self) -> None:
        import torch

        self.torch = torch
        kind = self.device.split(":")[0]
        if kind not in self.devices():
            raise ValueError(f"torch backend cannot use device {self.device!r} here (available: {', '.join(self.devices())})")
        if self.precision == "fp16" and kind == "cpu":
            raise ValueError("torch backend runs fp16 only on CUDA; use precision='fp32' on the CPU")
        # On the CPU the native tile engine on numpy beats torch tile ops, and numpy<->CPU tensors
        # convert without copies: only a GPU instance keeps tensors.
        self.device_tensors = kind != "cpu"
        if kind == "cpu":
            if self.threads:
                torch.set_num_threads(int(self.threads))
            elif torch.get_num_threads() > cpu_threads_default():
                torch.set_num_threads(cpu_threads_default())
        folder = self.path if self.path.suffix != ".safetensors" else self.path.parent
        files = {name: self.read(folder / name) for name in CHECKPOINT_FILES}
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        coarse, refiner = _load_checkpoint(files, self.device, self.dtype, str(folder))
        module = coarse if self.role == "coarse" else refiner
        if module is None:
            raise ValueError(f"torch checkpoint {folder} holds no {self.role} model")
        self.module = module
        # CUDA: the forward runs as a CUDA graph per input shape (_replay); a caller may set
        # cuda_graphs = False to run eagerly (benchmarks/gpu/frame.py times both).
        self.cuda_graphs = kind == "cuda"
        self.graph_error = ""
        self._graphs: OrderedDict[tuple, tuple[Any, list[Any], dict[str, Any]]] = OrderedDict()
        self._graph_lock = threading.Lock()
        if self.role == "coarse":
            h, w = module.input_size
            self.inputs = [TensorSpec("image", (1, 3, h, w))]
            self.outputs = [TensorSpec("depth", (1, 1, h, w))] + [
                TensorSpec(f"feat{k}", (1, c, h // s, w // s))
                for k, (c, s) in enumerate(zip(module.feature_channels, module.feature_strides))
            ]
        else:
            th, tw = module.tile_size
            self.inputs = [TensorSpec("rgb", (None, 3, th, tw)), TensorSpec("coarse_depth", (None, 1, th, tw))] + [
                TensorSpec(f"guide{k}", (None, c, h, w)) for k, (c, h, w) in enumerate(module.guidance)
            ]
            self.outputs = [TensorSpec("depth", (None, 1, th, tw))]

    def _forward(self, args: list[Any]) -> dict[str, Any]:
        if self.role == "coarse":
            depth, feats = self.module(*args)
            return {"depth": depth, **{f"feat{k}": f for k, f in enumerate(feats)}}
        return {"depth": self.module(*args)}

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        inputs = [torch.as_tensor(feeds[s.name]) for s in self.inputs]
        if self.cuda_graphs:
            try:
                out = self._replay(inputs)
            except RuntimeError as e:  # a model whose forward cannot be captured runs eagerly from now on
                self.cuda_graphs = False
                self.graph_error = f"{type(e).__name__}: {e}"
                warnings.warn(f"torch backend ({self.role}): CUDA graph capture failed, running eagerly: {e}",
                              RuntimeWarning, stacklevel=3)
        if not self.cuda_graphs:
            with torch.inference_mode():
                out = self._forward([x.to(self.device, self.dtype) for x in inputs])
        return {k: v.float() if self.device_tensors else v.float().numpy() for k, v in out.items()}

    def _replay(self, inputs: list[Any]) -> dict[str, Any]:
        """The forward pass as a CUDA graph, captured once per input shape and replayed: one launch
        instead of a few hundred small kernels (the prv2-mobile refiner's 16 tiles on an H200: 8.5 ms
        eager, 3.5 ms replayed, benchmarks/gpu/refiner.py). Inputs are copied (and cast) straight
        into the graph's buffers; outputs are copied out of them (as float32), since the next replay
        overwrites them."""
        torch = self.torch
        key = tuple(tuple(x.shape) for x in inputs)
        with self._graph_lock, torch.cuda.device(self.device):
            entry = self._graphs.get(key)
            if entry is None:
                entry = capture_cuda_graph(self._forward, [x.to(self.device, self.dtype) for x in inputs])
                self._graphs[key] = entry
                if len(self._graphs) > MAX_CUDA_GRAPHS:  # e.g. frames of many sizes: keep the latest few
                    self._graphs.popitem(last=False)
            self._graphs.move_to_end(key)
            graph, static_in, static_out = entry
            for buffer, x in zip(static_in, inputs):
                buffer.copy_(x)
            graph.replay()
            return {k: v.to(torch.float32, copy=True) for k, v in static_out.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "cuda_graphs": self.cuda_graphs,
                **({"cuda_graph_error": self.graph_error} if self.graph_error else {})}
