"""CoreML mlprogram export with fixed shapes (the Neural Engine needs them), plus compression.

Variants: ``fp16`` (FP16 compute and weights), ``int8`` (linear symmetric INT8 weights,
dequantised on load; activations FP16) and ``palette6`` (6-bit k-means palettised weights); both
compress only tensors of at least Apple's default 2048 elements. Inputs that are pictures are
``ImageType`` (an app feeds a CVPixelBuffer or a Vision request; the normalisation is the image
type's scale/bias). I/O is FP16 or FP32 as coremltools chooses for the deployment target: readers
take the types from the spec. Prediction needs macOS, so :func:`validate_coreml` checks the spec
instead — read without touching the package (:func:`edgedepth.backends.coreml.read_spec`):
input/output names and shapes, deployment target, the op set (nothing the Neural Engine lacks,
e.g. bicubic resize) and the size on disk.
"""
from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from edgedepth.atomic import atomic_dir
from edgedepth.backends.coreml import DEBUG_FILES, input_shapes, read_spec

from .optional import require

VARIANTS = ("fp16", "int8", "palette6")
# Ops the Neural Engine cannot run (they would silently fall back to the CPU).
ANE_UNSUPPORTED = ("upsample_bicubic",)
DEPLOYMENT_TARGET = "iOS16"


@dataclass(frozen=True)
class CoreMLSpec:
    """What a saved .mlpackage declares (image inputs as (1, 3, H, W))."""

    inputs: dict[str, tuple[int, ...]]
    outputs: list[str]
    ops: frozenset[str]
    specification_version: int
    opset: str
    bytes: int


@dataclass(frozen=True)
class ImageInput:
    """An ``ImageType`` input: the model sees ``scale * pixel + bias[c]`` for 8-bit RGB pixels
    (0…255), then ``* gain[c]`` inside the graph when the normalisation's std differs per channel
    (an image type has one scale for all channels)."""

    name: str
    scale: float
    bias: tuple[float, float, float]
    gain: Optional[tuple[float, float, float]] = None


def image_input(name: str, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> ImageInput:
    """The image type giving ``(pixel / 255 - mean) / std`` per channel; no mean/std: raw pixels
    (the fused pipeline normalises inside its graph)."""
    if mean is None or std is None:
        return ImageInput(name, 1.0, (0.0, 0.0, 0.0))
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"image normalisation needs 3 means and 3 positive stds, got mean={mean} std={std}")
    if max(std) - min(std) <= 1e-9 * max(std):
        return ImageInput(name, 1.0 / (255.0 * std[0]), tuple(-m / std[0] for m in mean))
    return ImageInput(name, 1.0 / 255.0, tuple(-m for m in mean), tuple(1.0 / s for s in std))


@dataclass(frozen=True)
class ModelInfo:
    """Metadata an app developer sees in Xcode: what the model does, its I/O (with units), who made it."""

    description: str
    author: str
    license: str
    version: str
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)   # user_defined_metadata (strings only)


class _ChannelGain(nn.Module):
    """``module(x * gain[c])``: the per-channel part of a normalisation an image type cannot hold."""

    def __init__(self, module: nn.Module, gain: Sequence[float]) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("gain", torch.tensor(gain, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor):
        return self.module(x * self.gain, *rest)


def _ct():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch version not tested" and sklearn notices
        return require("coremltools", "CoreML export")


def to_coreml(module: nn.Module, example: dict[str, torch.Tensor], outputs: Sequence[str], path: str | Path,
              variant: str = "fp16", *, image: Optional[ImageInput] = None, info: Optional[ModelInfo] = None,
              deployment_target: str = DEPLOYMENT_TARGET) -> Path:
    """Export ``module`` on ``example`` (name → tensor, in forward order) and save an mlprogram.

    The example shapes become the model's fixed shapes; ``variant`` is one of :data:`VARIANTS`;
    ``image`` makes that (first, (1, 3, H, W)) input an RGB ``ImageType``; ``info`` is written as
    the model's metadata.
    """
    if variant not in VARIANTS:
        raise ValueError(f"CoreML variant must be one of {VARIANTS}, got {variant!r}")
    names = list(example)
    if image is not None and (image.name != names[0] or tuple(example[image.name].shape[:2]) != (1, 3)):
        raise ValueError(f"the image input {image.name!r} must be the first input and (1, 3, H, W); "
                         f"inputs are {[(n, tuple(t.shape)) for n, t in example.items()]}")
    ct = _ct()
    path = Path(path)
    if image is not None and image.gain is not None:
        module = _ChannelGain(module, image.gain)
    inputs = [ct.TensorType(name=n, shape=tuple(t.shape)) for n, t in example.items()]
    if image is not None:
        inputs[0] = ct.ImageType(name=image.name, shape=tuple(example[image.name].shape), scale=image.scale,
                                 bias=list(image.bias), color_layout=ct.colorlayout.RGB)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch.export, not jit.trace: traced shape arithmetic (F.interpolate(size=x.shape)) leaves
        # aten::Int casts that coremltools cannot fold.
        program = _drop_aliases(torch.export.export(module.eval(), tuple(example.values())).run_decompositions({}))
        model = ct.convert(
            program, inputs=inputs, outputs=[ct.TensorType(name=n) for n in outputs], convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, deployment_target))
        model = compress(model, variant)
    if info is not None:
        describe(model, info)
    with atomic_dir(path) as tmp:  # the temporary keeps the .mlpackage suffix coremltools insists on
        model.save(str(tmp))
        for name in DEBUG_FILES:  # ExecuTorch's op mapping: a debugging aid, not part of the model
            (Path(tmp) / name).unlink(missing_ok=True)
    return path


def describe(model, info: ModelInfo) -> None:
    """Write ``info`` into ``model``'s spec (author, licence, version, descriptions, user metadata)."""
    model.short_description = info.description
    model.author = info.author
    model.license = info.license
    model.version = info.version
    for name, text in info.inputs.items():
        model.input_description[name] = text
    for name, text in info.outputs.items():
        model.output_description[name] = text
    model.user_defined_metadata.update({str(k): str(v) for k, v in info.user.items()})


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
    """Apply the weight compression of ``variant`` to a converted mlprogram. Tensors under Apple's
    default threshold (2048 elements: biases, norms, tiny convs) stay FP16: compressing them saves
    nothing and costs accuracy."""
    if variant == "fp16":
        return model
    import coremltools.optimize.coreml as cto

    if variant == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
        return cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=op))
    op = cto.OpPalettizerConfig(nbits=6, mode="kmeans")
    return cto.palettize_weights(model, cto.OptimizationConfig(global_config=op))


def folder_bytes(path: Path) -> int:
    """Size on disk of a file or folder (e.g. an .mlpackage)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def validate_coreml(path: str | Path, inputs: dict[str, Sequence[int]], outputs: Sequence[str], *,
                    deployment_target: str = DEPLOYMENT_TARGET) -> CoreMLSpec:
    """Read the .mlpackage spec at ``path`` (the package is not modified) and check it; ValueError
    naming what differs. Image inputs count as (1, 3, H, W)."""
    ct = _ct()
    path = Path(path)
    spec = read_spec(path)
    got_in = input_shapes(spec)
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


def model_info(role: str, meta: dict, inputs: Sequence[str], outputs: Sequence[str], *,
               size: Optional[tuple[int, int]] = None, mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None) -> ModelInfo:
    """Metadata for the ``coarse``, ``refiner`` or ``pipeline`` model of a checkpoint's ``meta``;
    ``size`` (H, W) of the image input, ``mean``/``std`` its normalisation (recorded for readers
    that feed normalised arrays, e.g. :class:`edgedepth.backends.coreml.CoreMLBackend`)."""
    import json

    from edgedepth import __version__
    from edgedepth.backends.coreml import MEAN_KEY, STD_KEY

    hw = f"{size[1]}x{size[0]}" if size else "fixed-size"
    valid_max = meta.get("depth", {}).get("valid_max")
    unknown = f"; beyond {valid_max} m means unknown (e.g. sky)" if valid_max else ""
    texts = {
        "coarse": ("Coarse metric depth and feature maps of a whole frame (edgedepth, first stage).",
                   {"image": f"RGB frame resized to {hw}"}),
        "refiner": ("Refines a batch of depth tiles from RGB, coarse depth and coarse features (edgedepth, second stage).",
                    {"rgb": "RGB tiles, (p / 255 - mean) / std", "coarse_depth": "coarse z-depth crops, metres"}),
        "pipeline": (f"Metric z-depth of a {hw} RGB frame: coarse pass, tile grid, refiner and blending in one graph (edgedepth).",
                     {"image": f"RGB frame, {hw}"}),
    }
    if role not in texts:
        raise ValueError(f"model_info role must be one of {sorted(texts)}, got {role!r}")
    description, known = texts[role]
    out_texts = {n: (f"z-depth in metres{unknown}" if n == "depth" else f"coarse feature map {n}") for n in outputs}
    user = {"com.edgedepth.depth_unit": "m", "com.edgedepth.depth_kind": "z", "com.edgedepth.role": role}
    if valid_max:
        user["com.edgedepth.valid_max_m"] = str(valid_max)
    if mean is not None and std is not None:
        user[MEAN_KEY], user[STD_KEY] = json.dumps([float(v) for v in mean]), json.dumps([float(v) for v in std])
    return ModelInfo(description=description, author=str(meta.get("author", "edgedepth export")),
                     license=str(meta.get("license", "the checkpoint's licence (not recorded in it)")),
                     version=f"edgedepth {__version__}",
                     inputs={n: known.get(n, f"crops of the coarse feature map for {n}") for n in inputs},
                     outputs=out_texts, user=user)


def coreml_runner(path: str | Path, role: str, precision: str) -> tuple[Optional[Callable], str]:
    """``(run(feeds) -> first output, "")`` predicting with Core ML through the runtime's backend,
    or ``(None, why)`` where Core ML cannot predict (anywhere but macOS)."""
    from edgedepth.backends.coreml import CoreMLBackend

    if not CoreMLBackend.is_available():
        return None, f"Core ML predicts only on macOS (this is {platform.system()}): score it there"
    backend = CoreMLBackend(Path(path), role=role, device="all", precision=precision)
    first = backend.outputs[0].name
    image = backend.inputs[0].name
    return (lambda feeds: backend.run(feeds if isinstance(feeds, dict) else {image: feeds})[first]), ""


def export_models(coarse: nn.Module, refiner: nn.Module, meta: dict, batch: int, variants: Sequence[str],
                  file: Callable[[str], Path]):
    """Convert the refiner (fixed ``batch`` tiles, one package per variant) and the coarse model
    (FP16, image input) to ``coreml/…`` paths given by ``file(rel)``, checking each spec.

    Yields ``(role, variant, path, (run, why_not))`` with :func:`coreml_runner`'s scorer.
    """
    from .onnx_export import _CoarseOutputs, refiner_example_inputs, refiner_input_names

    example = dict(zip(refiner_input_names(refiner), refiner_example_inputs(refiner, batch)))
    info = model_info("refiner", meta, list(example), ["depth"])
    for variant in variants:
        path = to_coreml(refiner, example, ["depth"], file(f"coreml/refiner.{variant}.mlpackage"), variant, info=info)
        validate_coreml(path, {k: v.shape for k, v in example.items()}, ["depth"])
        yield "refiner", variant, path, coreml_runner(path, "refiner", variant)
    h, w = coarse.input_size
    image = torch.randn(1, 3, h, w)
    names = ["depth", *[f"feat{k}" for k in range(len(coarse.feature_channels))]]
    info = model_info("coarse", meta, ["image"], names, size=(h, w), mean=coarse.mean, std=coarse.std)
    path = to_coreml(_CoarseOutputs(coarse), {"image": image}, names, file("coreml/coarse.fp16.mlpackage"),
                     image=image_input("image", coarse.mean, coarse.std), info=info)
    validate_coreml(path, {"image": image.shape}, names)
    yield "coarse", "fp16", path, coreml_runner(path, "coarse", "fp16")
