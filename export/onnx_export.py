"""ONNX export of the coarse model and the refiner (separately), simplified, checked, FP16 variant.

Batch axis, chosen per model and target:

* coarse model: static batch 1 — the runtime feeds one frame at a time, and static shapes let
  onnxsim fold every shape computation and TensorRT/OpenVINO pick kernels without a profile.
* refiner: a **dynamic** batch axis ``N`` (the number of tiles) by default — one ONNX then serves
  every tiling the runtime may choose (rows×cols is a run-time option), TensorRT covers it with an
  optimisation profile (min 1, opt rows·cols, max) and OpenVINO/ONNX Runtime handle it natively.
  Pass ``batch=rows*cols`` for targets that need fixed shapes (CoreML's Neural Engine, the fused
  pipeline), which :mod:`edgedepth.export.coreml_export` and :mod:`edgedepth.export.pipeline` do.

Names follow docs/interfaces.md: refiner inputs ``rgb``, ``coarse_depth``, ``guide0``…, output
``depth``; coarse input ``image``, outputs ``depth``, ``feat0``….
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from edgedepth.atomic import atomic_path
from edgedepth.train.models.refiner import refiner_input_names

from .optional import require

OPSET = 17
# Kept in float32 in the FP16 variant: normalisations lose accuracy in half (METHODS.md §6; a ViT's
# LayerNorm after attention overflows in FP16), Softmax sums exponentials, and Resize/Range compute
# coordinates that half precision rounds visibly on large maps.
FP16_KEEP_FP32 = ("LayerNormalization", "InstanceNormalization", "Softmax", "Resize", "Range")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name and shape (-1 for a dynamic axis)."""

    name: str
    shape: tuple[int, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape)}



def refiner_example_inputs(refiner: nn.Module, batch: int) -> tuple[torch.Tensor, ...]:
    """Random inputs of the refiner's declared shapes with ``batch`` tiles (coarse depth in metres)."""
    th, tw = refiner.tile_size
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randn(batch, 3, th, tw, generator=gen)
    depth = 1.0 + 9.0 * torch.rand(batch, 1, th, tw, generator=gen)
    guides = [torch.randn(batch, c, h, w, generator=gen) for c, h, w in refiner.guidance]
    return (rgb, depth, *guides)


class _CoarseOutputs(nn.Module):
    """Flattens ``(depth, [features])`` into a tuple so the exporter can name every output."""

    def __init__(self, coarse: nn.Module) -> None:
        super().__init__()
        self.coarse = coarse

    def forward(self, image: torch.Tensor):
        depth, features = self.coarse(image)
        return (depth, *features)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_batch: bool, opset: int, simplify: bool, dynamo: bool = False) -> Path:
    onnx = require("onnx", "ONNX export")
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization stays one FP32 op), got {opset}")
    dynamic_axes = {n: {0: "N"} for n in input_names + output_names} if dynamic_batch else None
    buf = io.BytesIO()
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, args, buf, input_names=input_names, output_names=output_names,
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True,
                          dynamo=dynamo, **({"external_data": False} if dynamo else {}))
    model = onnx.load_from_string(buf.getvalue())
    if simplify:
        onnxsim = require("onnxsim", "ONNX simplification")
        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError(f"onnxsim could not validate the simplified {path.name}")
        model = simplified
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def export_refiner(refiner: nn.Module, path: str | Path, *, batch: int | None = None, opset: int = OPSET,
                   simplify: bool = True) -> Path:
    """Export ``refiner`` to ONNX at ``path``; ``batch=None`` gives a dynamic tile axis ``N``."""
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be None (dynamic) or >= 1, got {batch}")
    # Trace with 2 tiles when dynamic so no batch-1 special case is baked into the graph.
    args = refiner_example_inputs(refiner, batch or 2)
    return _export(refiner, args, Path(path), refiner_input_names(refiner), ["depth"],
                   dynamic_batch=batch is None, opset=opset, simplify=simplify)


def export_coarse(coarse: nn.Module, path: str | Path, *, opset: int = OPSET, simplify: bool = True) -> Path:
    """Export ``coarse`` (batch 1, its ``input_size``) to ONNX at ``path``: ``image`` → ``depth``, ``feat*``."""
    h, w = coarse.input_size
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    names = ["depth", *[f"feat{k}" for k in range(len(coarse.feature_channels))]]
    return _export(_CoarseOutputs(coarse), (image,), Path(path), ["image"], names,
                   dynamic_batch=False, opset=opset, simplify=simplify)


def convert_fp16(src: str | Path, dst: str | Path, *, keep_fp32: Sequence[str] = FP16_KEEP_FP32) -> Path:
    """Write an FP16-weight/FP16-compute copy of the ONNX ``src`` at ``dst``.

    Inputs and outputs stay float32 so every backend is fed the same arrays; op types in
    ``keep_fp32`` run in float32 behind Cast nodes.
    """
    onnx = require("onnx", "FP16 conversion")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = _unshare_constants(onnx.load(str(src)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16 range" is expected for tiny weights
        half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(keep_fp32))
    # The converter appends its input Casts at the end of the node list; the checker wants order.
    wrapped = OnnxModel(half)
    wrapped.topological_sort()
    half = wrapped.model
    onnx.checker.check_model(half, full_check=True)
    with atomic_path(dst) as tmp:
        onnx.save(half, str(tmp))
    return Path(dst)


def _unshare_constants(model):
    """Give every consumer of a shared Constant node its own copy.

    The FP16 converter names the Cast it inserts for a kept-FP32 consumer after the constant, so
    two such consumers of one constant produce two outputs of one name (not SSA).
    """
    import copy

    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        users = consumers.get(node.output[0], []) if node.op_type == "Constant" else []
        for k, user in enumerate(users[1:], 1):
            clone = copy.deepcopy(node)
            clone.name, clone.output[0] = f"{node.name}_u{k}", f"{node.output[0]}_u{k}"
            user.input[:] = [clone.output[0] if i == node.output[0] else i for i in user.input]
            nodes.append(clone)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def io_specs(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Declared inputs and outputs of an ONNX file (dynamic axes as -1)."""
    onnx = require("onnx", "ONNX inspection")
    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value) -> TensorSpec:
        dims = value.type.tensor_type.shape.dim
        return TensorSpec(value.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims))

    initializers = {i.name for i in graph.initializer}
    return ([spec(v) for v in graph.input if v.name not in initializers], [spec(v) for v in graph.output])
