"""torch backend (development, GPU tests): the bundle's torch checkpoint through edgedepth.train models.

The bundle's torch file is ``torch/model.safetensors`` inside a checkpoint folder (model.json beside
it; docs/interfaces.md, Checkpoints); both roles rebuild their module from it with
``edgedepth.train.checkpoint.load_models``. Inputs and outputs are torch tensors on the backend's
device (``device_tensors = True``): with CUDA the runtime keeps the whole frame on the GPU and
tiles it with ``edgedepth.tiling_torch``. torch is imported only when this backend is chosen.

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
from pathlib import Path
from typing import Any, Mapping

from .base import Backend, TensorSpec

_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
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


def _load_checkpoint(files: Mapping[str, bytes], device: str, where: str) -> tuple[Any, Any]:
    # Coarse and refiner backends share one checkpoint: load it once per (content, device). The
    # models are built from the verified bytes, written to a private folder for the loader.
    from edgedepth.train.checkpoint import load_models

    check_checkpoint_meta(json.loads(files["model.json"]), f"{where}/model.json")
    key = ("".join(hashlib.sha256(files[n]).hexdigest() for n in CHECKPOINT_FILES), device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            with tempfile.TemporaryDirectory(prefix="edgedepth-ckpt-") as tmp:
                for name in CHECKPOINT_FILES:
                    (Path(tmp) / name).write_bytes(files[name])
                coarse, refiner, _ = load_models(tmp, map_location=device)
            _CACHE[key] = (coarse, refiner)
        return _CACHE[key]


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
    thread_safe = True  # eval-mode forward under inference_mode holds no shared mutable state

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
        coarse, refiner = _load_checkpoint(files, self.device, str(folder))
        module = coarse if self.role == "coarse" else refiner
        if module is None:
            raise ValueError(f"torch checkpoint {folder} holds no {self.role} model")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.module = module.to(self.dtype) if self.dtype != torch.float32 else module
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

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        args = [torch.as_tensor(feeds[s.name]).to(self.device, self.dtype) for s in self.inputs]
        with torch.inference_mode():
            if self.role == "coarse":
                depth, feats = self.module(*args)
                out = {"depth": depth, **{f"feat{k}": f for k, f in enumerate(feats)}}
            else:
                out = {"depth": self.module(*args)}
        return {k: v.float() if self.device_tensors else v.float().numpy() for k, v in out.items()}
