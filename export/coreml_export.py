"""CoreML mlprogram export with fixed shapes (the Neural Engine needs them), plus compression.

Variants: ``fp16`` (FP16 compute and weights), ``int8`` (linear symmetric INT8 weights,
dequantised on load; activations FP16) and ``palette6`` (6-bit k-means palettised weights).
Prediction needs macOS, so :func:`validate_coreml` checks the spec instead: input/output names and
shapes, deployment target, the op set (nothing the Neural Engine lacks, e.g. bicubic resize) and
the size on disk.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from edgedepth.atomic import atomic_dir

from .optional import require

VARIANTS = ("fp16", "int8", "palette6")
# Ops the Neural Engine cannot run (they would silently fall back to the CPU).
ANE_UNSUPPORTED = ("upsample_bicubic",)
DEPLOYMENT_TARGET = "iOS16"


@dataclass(frozen=True)
class CoreMLSpec:
    """What a saved .mlpackage declares."""

    inputs: dict[str, tuple[int, ...]]
    outputs: list[str]
    ops: frozenset[str]
    specification_version: int
    opset: str
    bytes: int


def _ct():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch version not tested" and sklearn notices
        return require("coremltools", "CoreML export")


def to_coreml(module: nn.Module, example: dict[str, torch.Tensor], outputs: Sequence[str], path: str | Path,
              variant: str = "fp16", *, deployment_target: str = DEPLOYMENT_TARGET) -> Path:
    """Export ``module`` on ``example`` (name → tensor, in forward order) and save an mlprogram.

    The example shapes become the model's fixed shapes; ``variant`` is one of :data:`VARIANTS`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"CoreML variant must be one of {VARIANTS}, got {variant!r}")
    ct = _ct()
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch.export, not jit.trace: traced shape arithmetic (F.interpolate(size=x.shape)) leaves
        # aten::Int casts that coremltools cannot fold.
        program = _drop_aliases(torch.export.export(module.eval(), tuple(example.values())).run_decompositions({}))
        model = ct.convert(
            program, inputs=[ct.TensorType(name=n, shape=tuple(t.shape)) for n, t in example.items()],
            outputs=[ct.TensorType(name=n) for n in outputs], convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, deployment_target))
        model = compress(model, variant)
    with atomic_dir(path) as tmp:  # the temporary keeps the .mlpackage suffix coremltools insists on
        model.save(str(tmp))
    return path


def _drop_aliases(program):
    """Replace ``aten.alias`` (a no-op view from same-dtype ``.to()``) by its input: coremltools
    has no converter for it."""
    graph = program.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def compress(model, variant: str):
    """Apply the weight compression of ``variant`` to a converted mlprogram."""
    if variant == "fp16":
        return model
    import coremltools.optimize.coreml as cto

    if variant == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=0)
        return cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=op))
    op = cto.OpPalettizerConfig(nbits=6, mode="kmeans", weight_threshold=0)
    return cto.palettize_weights(model, cto.OptimizationConfig(global_config=op))


def folder_bytes(path: Path) -> int:
    """Size on disk of a file or folder (e.g. an .mlpackage)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def validate_coreml(path: str | Path, inputs: dict[str, Sequence[int]], outputs: Sequence[str], *,
                    deployment_target: str = DEPLOYMENT_TARGET) -> CoreMLSpec:
    """Load the .mlpackage spec at ``path`` and check it; ValueError naming what differs."""
    ct = _ct()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CoreML model {path} not found")
    spec = ct.utils.load_spec(str(path))
    got_in = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
    want_in = {k: tuple(v) for k, v in inputs.items()}
    if got_in != want_in:
        raise ValueError(f"{path.name}: inputs {got_in} differ from the expected {want_in}")
    got_out = [o.name for o in spec.description.output]
    if got_out != list(outputs):
        raise ValueError(f"{path.name}: outputs {got_out} differ from the expected {list(outputs)}")
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path.name}: not an mlprogram (neural network models lack FP16 compute on the ANE)")
    want_version = getattr(ct.target, deployment_target).value
    if spec.specificationVersion < want_version:
        raise ValueError(f"{path.name}: specification version {spec.specificationVersion} is older than "
                         f"{deployment_target} ({want_version})")
    main = spec.mlProgram.functions["main"]
    ops = frozenset(op.type for op in main.block_specializations[main.opset].operations)
    bad = sorted(ops & set(ANE_UNSUPPORTED))
    if bad:
        raise ValueError(f"{path.name}: uses {bad}, which the Neural Engine does not run")
    for name, shape in got_in.items():
        if any(d <= 0 for d in shape):
            raise ValueError(f"{path.name}: input {name} has a flexible shape {shape}; the Neural Engine needs fixed shapes")
    return CoreMLSpec(got_in, got_out, ops, int(spec.specificationVersion), main.opset, folder_bytes(path))
