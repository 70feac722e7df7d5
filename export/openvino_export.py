"""OpenVINO IR (xml/bin) at FP32, FP16 and INT8 (NNCF post-training, optionally accuracy-controlled).

IR is converted from the exported ONNX (one graph for every target). FP16 is weight compression
(``compress_to_fp16``): the CPU plugin still computes in FP32/BF16, the GPU/NPU plugins in FP16.
INT8 is NNCF post-training quantization on the same real-frame tiles as TensorRT's Q/DQ, with the
residual head and the metric-depth preprocessing in the ignored scope; the accuracy-controlled
variant lets NNCF return layers to float until AbsRel vs ground truth is within ``max_drop``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .frames import FrameTiles
from .optional import require


def _save(model, xml: Path, fp16: bool) -> Path:
    ov = require("openvino", "OpenVINO export")
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return xml


def to_openvino(onnx_path: str | Path, xml: str | Path, precision: str = "fp32") -> Path:
    """Convert ``onnx_path`` to IR at ``xml`` (``.bin`` beside it); precision ``fp32`` or ``fp16``."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"to_openvino precision must be 'fp32' or 'fp16' (INT8: quantize_openvino), got {precision!r}")
    ov = require("openvino", "OpenVINO export")
    return _save(ov.convert_model(str(onnx_path)), Path(xml), precision == "fp16")


def to_openvino_uint8(onnx_path: str | Path, xml: str | Path, mean: Sequence[float], std: Sequence[float]) -> Path:
    """The coarse model as FP32 IR for callers of OpenVINO itself: input ``image`` is a uint8 RGB
    frame, NHWC (1, H, W, 3) of any H x W, resized inside the graph to the model's input (bilinear,
    half-pixel: the runtime's crop semantics) and normalised there as (x / 255 - mean) / std.

    The runtime does not use it: its native crop+resize already produces the normalised NCHW input,
    and the normalisation costs ~0.005 ms of that 0.3 ms resize (1080p -> 128x224, one thread)."""
    ov = require("openvino", "OpenVINO export")
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

    model = ov.convert_model(str(onnx_path))
    ppp = PrePostProcessor(model)
    port = ppp.input("image")
    port.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    port.model().set_layout(ov.Layout("NCHW"))
    (port.preprocess().convert_element_type(ov.Type.f32).resize(ResizeAlgorithm.RESIZE_LINEAR)
     .mean([255.0 * float(m) for m in mean]).scale([255.0 * float(s) for s in std]))
    return _save(ppp.build(), Path(xml), False)


def _nncf():
    nncf = require("nncf", "OpenVINO INT8")
    nncf.set_log_level(logging.WARNING)  # per-layer INFO lines drown the export's own progress
    return nncf


# OpenVINO op types whose inputs NNCF may quantize: the weighted layers, as in the Q/DQ model.
OV_WEIGHTED_TYPES = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"})


def _ignored(onnx_path: Path, ov_model, role: str = "refiner"):
    """NNCF ignored scope = the Q/DQ model's placement: the ONNX nodes kept float there (by their
    OpenVINO names), and every op type but the weighted layers. NNCF's own presets also quantize
    the inputs of Add/Multiply/Concat/Interpolate; on the default refiner that clipped the sky's
    large residuals (8 % of 1080p tile pixels off by > 1 m, 135 m sky read as a valid 73 m), where
    weighted-layer inputs alone give 20x less drift at the same speed."""
    import onnx

    nncf = _nncf()
    from .quantize_qdq import coarse_float_node_names, float_node_names

    model = onnx.load(str(onnx_path))
    names = set(float_node_names(model) if role == "refiner" else coarse_float_node_names(model))
    present = {op.get_friendly_name() for op in ov_model.get_ops()}
    types = {op.get_type_name() for op in ov_model.get_ops()} - OV_WEIGHTED_TYPES - {"Parameter", "Result", "Constant"}
    return nncf.IgnoredScope(names=sorted(names & present), types=sorted(types), validate=False)


def quantize_openvino(onnx_path: str | Path, xml: str | Path, batches: Sequence[dict[str, np.ndarray]],
                      *, min_tiles: int = 64, role: str = "refiner", transformer: bool = False) -> Path:
    """NNCF post-training INT8 of the ONNX ``onnx_path`` calibrated on ``batches``; IR at ``xml``.

    ``role="coarse"``: ``batches`` are ``{"image": ...}`` frames (``min_tiles`` counts them) and the
    coarse model's float nodes are ignored. ``transformer``: NNCF's transformer scheme (a ViT: keeps
    LayerNorm/Softmax/GELU in float and uses SmoothQuant on the linear layers).
    """
    from .quantize_qdq import count_tiles

    ov = require("openvino", "OpenVINO INT8")
    nncf = _nncf()
    if role not in ("refiner", "coarse"):
        raise ValueError(f"role must be 'refiner' or 'coarse', got {role!r}")
    tiles = count_tiles(batches)
    if tiles < min_tiles:
        unit = "tiles" if role == "refiner" else "frames"
        raise ValueError(f"INT8 calibration needs at least {min_tiles} {unit}, got {tiles}")
    model = ov.convert_model(str(onnx_path))
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    q = nncf.quantize(model, nncf.Dataset(list(batches)), preset=nncf.QuantizationPreset.PERFORMANCE,
                      subset_size=len(batches), ignored_scope=_ignored(Path(onnx_path), model, role), **extra)
    return _save(q, Path(xml), False)


def quantize_openvino_accuracy_control(onnx_path: str | Path, xml: str | Path,
                                       batches: Sequence[dict[str, np.ndarray]], frames: Sequence[FrameTiles],
                                       window: str, *, max_drop: float = 0.02) -> Path:
    """INT8 with NNCF accuracy control: AbsRel vs GT on the selection ``frames`` (not the held-out
    ones that report the result) may rise by at most ``max_drop`` (relative, 0.02 = +2 %) over the
    float model; layers go back to float until it holds."""
    from .frames import stitch_frame
    from .parity import scores

    ov = require("openvino", "OpenVINO INT8")
    nncf = _nncf()
    if not frames:
        raise ValueError("accuracy-controlled INT8 needs selection frames with ground truth")

    def validate(compiled, items) -> tuple[float, list[float]]:
        # NNCF maximises the metric: use -AbsRel, whose relative drop is the relative AbsRel rise.
        per = []
        for f in items:
            tiles = compiled(f.inputs)[compiled.output(0)]
            per.append(-scores(stitch_frame(tiles, f, window), f.gt, f.valid)[0])
        return float(np.mean(per)), per

    model = ov.convert_model(str(onnx_path))
    q = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(list(batches)), nncf.Dataset(list(frames), lambda f: f.inputs), validate,
        max_drop=max_drop, drop_type=nncf.DropType.RELATIVE, subset_size=len(batches),
        ignored_scope=_ignored(Path(onnx_path), model))
    return _save(q, Path(xml), False)


def runner(xml: str | Path, device: str = "CPU") -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Compile the IR and return ``run(feeds) -> first output`` (used for parity)."""
    ov = require("openvino", "OpenVINO inference")
    compiled = ov.Core().compile_model(str(xml), device, {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda feeds: np.asarray(compiled(feeds)[compiled.output(0)])


def input_shapes(xml: str | Path, batch: int) -> dict[str, list[int]]:
    """Input name -> shape of the IR at ``xml``, a dynamic batch axis set to ``batch``."""
    ov = require("openvino", "OpenVINO")
    shapes = {}
    for port in ov.Core().read_model(str(xml)).inputs:
        dims = list(port.get_partial_shape())
        shapes[port.get_any_name()] = [batch if d.is_dynamic and i == 0 else d.get_length() for i, d in enumerate(dims)]
    return shapes


def benchmark_app_text(xml_files: Mapping[str, Mapping[str, Path]], names: Mapping[str, Mapping[str, str]],
                       tiles: int) -> str:
    """The bundle's ``openvino/benchmark_app.txt``: a ``benchmark_app`` line per model and precision
    that times the IR as the runtime runs it on the CPU (latency hint, f32 inference, the
    refiner at a static batch of ``tiles``). ``xml_files``: role -> precision -> the IR being written;
    ``names``: the same IRs as the lines name them (bundle-relative)."""
    import shlex

    lines = ["# benchmark_app lines (installed with the openvino wheel) that time the bundle's IR as edgedepth's",
             "# OpenVINO backend runs it on the CPU: PERFORMANCE_HINT=LATENCY (one stream), f32 inference, the",
             f"# refiner compiled for a static batch of {tiles} tile(s) (a frame of the export's size). Run them",
             "# in the bundle folder; -d GPU or -d NPU for those devices. For Runtime(threads=N), replace",
             "# -hint latency by -hint none -nstreams 1 -nthreads N (benchmark_app takes those only without a hint)."]
    for role in ("coarse", "refiner"):
        lines += ["", f"## {role}"]
        for precision, xml in xml_files.get(role, {}).items():
            shape = ",".join(f"{name}[{','.join(map(str, dims))}]"
                             for name, dims in input_shapes(xml, tiles if role == "refiner" else 1).items())
            lines.append(f"benchmark_app -m {shlex.quote(names[role][precision])} -d CPU -hint latency "
                         f"-infer_precision f32 -shape {shlex.quote(shape)}")
    return "\n".join(lines) + "\n"
