"""Explicit INT8 for TensorRT: an ONNX with Q/DQ pairs, calibrated on real frames' tiles.

TensorRT's explicit-quantization rules (METHODS.md §6, NVIDIA ModelOpt's placement): Q/DQ only on
the inputs of weighted layers (Conv/MatMul), symmetric scales, zero-point 0 (signed INT8 activations
and weights), per-channel weight scales (axis 0 of Conv weights); biases, norms, activations,
resizes and concats stay float. Every residual head (the last weighted layer before each place a
residual meets the coarse depth, and what follows it) and the stem stay out of INT8: the heads
write depth corrections, where INT8 steps show as terraces. The same file runs in ONNX Runtime,
which is how it is tested and scored here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgedepth.atomic import atomic_path

from .optional import require

# Ops whose weights make them the "last layer" of a path.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MIN_CALIB_TILES = 64


def _coarse_path(model, inputs: Sequence[str]) -> set[str]:
    """Tensor names computed from the graph inputs ``inputs`` without passing a weighted layer."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seen = set(inputs)
    stack = list(inputs)
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.op_type in WEIGHTED_OPS:
                continue
            for out in node.output:
                if out not in seen:
                    seen.add(out)
                    stack.append(out)
    return seen


def head_nodes(model, scope: str = "head", depth_input: str = "coarse_depth") -> list[str]:
    """Names of every residual head and what follows it: the nodes from the last weighted layer(s)
    on to each place a residual meets the coarse depth (an Add, or a Mul with exp(residual): an
    elementwise node with one input computed from ``depth_input`` without a weighted layer and one
    computed by the network), plus the graph output's own tail, plus any node of a module called
    ``scope``. A refiner has several heads (PRV2: the final and the C2F residual); the C2F one
    reaches the graph output only through later layers, so walking back from the output alone
    misses it."""
    producer = {out: node for node in model.graph.node for out in node.output}
    coarse = _coarse_path(model, [depth_input])
    starts = [o.name for o in model.graph.output]
    for node in model.graph.node:
        if node.op_type in ("Add", "Mul") and len(node.input) == 2:
            on = [i in coarse for i in node.input]
            if any(on) and not all(on) and all(i in producer or i in coarse for i in node.input):
                starts.append(node.output[0])
    keep = _tails(producer, starts)
    for node in model.graph.node:
        if f"/{scope}/" in node.name or node.name.startswith(f"{scope}/"):
            keep[node.name] = None
    return list(keep)


def _tails(producer: dict, starts: Sequence[str]) -> dict[str, None]:
    """Names of the nodes computing ``starts`` back to (and including) the last weighted layer(s)."""
    keep: dict[str, None] = {}
    stack = list(starts)
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in keep:
            continue
        keep[node.name] = None
        if node.op_type not in WEIGHTED_OPS:
            stack.extend(node.input)
    return keep


def stem_nodes(model, inputs: Sequence[str] = ("rgb",)) -> list[str]:
    """The first weighted layer(s) on every path from ``inputs`` (the stem: RGB concatenated with ln
    depth, two ranges one per-tensor INT8 scale cannot both hold)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    stems: dict[str, None] = {}
    seen: set[str] = set()
    stack = list(inputs)
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHTED_OPS:
                stems[node.name] = None
            else:
                stack.extend(node.output)
    return list(stems)


def input_nodes(model, inputs: Sequence[str] = ("coarse_depth",)) -> list[str]:
    """Names of the nodes between the graph inputs ``inputs`` and the first weighted layer.

    Metric depth spans 0.1–80 m: an INT8 step of 0.6 m there would erase the near range before
    the refiner's log/normalisation sees it, so that preprocessing stays float.
    """
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep: dict[str, None] = {}
    stack = [name for name in inputs]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.op_type in WEIGHTED_OPS or node.name in keep:
                continue
            keep[node.name] = None
            stack.extend(node.output)
    return list(keep)


def float_node_names(model) -> list[str]:
    """Every node INT8 leaves in float in a refiner: residual heads (their outputs are depth
    corrections, INT8 steps there are depth terraces), the stem, and the metric-depth preprocessing."""
    return list(dict.fromkeys([*head_nodes(model), *stem_nodes(model), *input_nodes(model)]))


def activation_matmuls(model) -> list[str]:
    """MatMuls of two computed tensors (a ViT's attention: Q·Kᵀ and softmax·V): no weights to
    quantize, and the softmax probabilities span a range one INT8 scale holds badly."""
    # Constant-derived tensors: initializers and what is computed from them alone (a Constant, the
    # DequantizeLinear of an INT8 weight, a transposed weight).
    weights = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # nodes are in topological order
        if all(i in weights for i in n.input if i):
            weights.update(n.output)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def coarse_float_node_names(model) -> list[str]:
    """Every node INT8 leaves in float in a coarse model: the depth head's last layers (walked back
    from the ``depth`` output, not from the feature outputs the refiner only crops), the stem (a
    ViT's patch embedding) and the attention MatMuls. Norms and softmax are never Q/DQ'd anyway."""
    producer = {out: node for node in model.graph.node for out in node.output}
    keep = _tails(producer, ["depth"])
    return list(dict.fromkeys([*keep, *stem_nodes(model, ("image",)), *activation_matmuls(model)]))


@dataclass(frozen=True)
class QdqSummary:
    """What the quantizer did: tiles seen, nodes kept in float, quantized weight tensors."""

    path: Path
    calib_tiles: int
    excluded: tuple[str, ...]
    quantized_weights: int


class _Batches:
    """onnxruntime CalibrationDataReader over a list of input dicts."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._it = iter(batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def count_tiles(batches: Iterable[dict[str, np.ndarray]]) -> int:
    """Tiles in calibration batches (the leading axis of each batch's first input)."""
    return sum(int(next(iter(b.values())).shape[0]) for b in batches)


# --calib-method -> onnxruntime CalibrationMethod: the calibration tensors' min/max, or the 99.999th
# percentile of |x| (clips rare outliers). No "entropy": quantize_static builds its Entropy calibrator
# with 128 histogram bins for 128 quantized ones, so the KL search has one candidate, the full range,
# and it gives minmax's scales exactly (checked on the refiner; onnxruntime 1.32 passes it no bin count).
CALIB_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}


def quantize_int8_qdq(src: str | Path, dst: str | Path, batches: Sequence[dict[str, np.ndarray]], *,
                      min_tiles: int = MIN_CALIB_TILES, keep_head: bool = True,
                      exclude: Sequence[str] = (), role: str = "refiner", calib_method: str = "minmax") -> QdqSummary:
    """Write a Q/DQ INT8 copy of the float ONNX ``src`` at ``dst``.

    ``role="refiner"``: ``batches`` are refiner input dicts (``rgb``, ``coarse_depth``, ``guide*``)
    from real frames, at least ``min_tiles`` tiles in total; ``keep_head`` keeps
    :func:`float_node_names` in float. ``role="coarse"``: ``batches`` are ``{"image": (1, 3, h, w)}``
    frames (``min_tiles`` counts frames) and ``keep_head`` keeps :func:`coarse_float_node_names`.
    ``exclude`` adds node names. ``calib_method``: how activation ranges are taken from the
    calibration tensors, one of :data:`CALIB_METHODS` (onnxruntime's MinMax or Percentile).
    """
    if role not in ("refiner", "coarse"):
        raise ValueError(f"role must be 'refiner' or 'coarse', got {role!r}")
    if calib_method not in CALIB_METHODS:
        raise ValueError(f"calib_method must be one of {', '.join(CALIB_METHODS)}, got {calib_method!r}")
    onnx = require("onnx", "INT8 quantization")
    quant = require("onnxruntime.quantization", "INT8 quantization")
    src, dst = Path(src), Path(dst)
    tiles = count_tiles(batches)
    if tiles < min_tiles:
        unit = "tiles" if role == "refiner" else "frames"
        raise ValueError(f"INT8 calibration needs at least {min_tiles} {unit}, got {tiles}: "
                         "add frames to the calibration set (or lower min_tiles / --calib-tiles)")
    model = onnx.load(str(src))
    float_nodes = (float_node_names(model) if role == "refiner" else coarse_float_node_names(model)) if keep_head else []
    excluded = tuple(dict.fromkeys([*float_nodes, *exclude]))
    root, level = logging.getLogger(), logging.getLogger().level
    try:
        root.setLevel(logging.ERROR)  # ORT logs "consider pre-processing" through the root logger
        with atomic_path(dst) as tmp:
            quant.quantize_static(
                str(src), str(tmp), _Batches(list(batches)),
                quant_format=quant.QuantFormat.QDQ,
                activation_type=quant.QuantType.QInt8,   # signed: zero-point 0 when symmetric
                weight_type=quant.QuantType.QInt8,
                per_channel=True,
                # TensorRT's rule (and ModelOpt's): Q/DQ only on the inputs of weighted layers, so
                # norms, activations, resizes and concats stay float and add no precision boundaries.
                op_types_to_quantize=list(WEIGHTED_OPS),
                nodes_to_exclude=list(excluded),
                calibrate_method=getattr(quant.CalibrationMethod, CALIB_METHODS[calib_method]),
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "QuantizeBias": False,  # TensorRT quantizes weights and activations only
                               # inputs only: an output Q/DQ would be one more precision boundary
                               "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
                               # a tensor read by a conv and by a concat/add: only the conv reads INT8
                               "DedicatedQDQPair": True},
            )
            qmodel = onnx.load(str(tmp))
            _restrict_to_weighted_inputs(qmodel)
            onnx.save(qmodel, str(tmp))
            onnx.checker.check_model(qmodel, full_check=True)
            check_qdq(qmodel)
    finally:
        root.setLevel(level)
    weights = {i.name for i in qmodel.graph.initializer}
    n_weights = sum(1 for n in qmodel.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
                    and _init(qmodel, n.input[0]).data_type == onnx.TensorProto.INT8)
    return QdqSummary(dst, tiles, excluded, n_weights)


def _restrict_to_weighted_inputs(model) -> None:
    """Give every consumer that is not a weighted layer (nor a residual Add of two INT8 inputs, which
    TensorRT fuses into the conv before it) its float tensor back, and drop the Q/DQ pairs nobody
    reads. ONNX Runtime hands a tensor's Q/DQ output to all its consumers (a concat beside the conv
    that needed it); TensorRT would then keep those tensors INT8 where nothing asked for it."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def float_source(name):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
            return None
        q = producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None

    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        sources = [float_source(i) for i in node.input]
        if node.op_type == "Add" and all(sources):
            continue
        for k, src in enumerate(sources):
            if src is not None:
                node.input[k] = src
    while True:  # prune Q/DQ whose outputs nothing reads any more
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def _init(model, name: str):
    return next(i for i in model.graph.initializer if i.name == name)


def check_qdq(model) -> None:
    """Raise ValueError unless every Q/DQ pair is INT8 with zero-point 0, weights per-channel."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        raise ValueError("the quantized model has no QuantizeLinear/DequantizeLinear nodes")
    for node in qdq:
        if len(node.input) < 3 or node.input[2] not in inits:
            raise ValueError(f"{node.name}: Q/DQ without a constant zero point")
        zp = numpy_helper.to_array(inits[node.input[2]])
        if zp.dtype != np.int8 or np.any(zp != 0):
            raise ValueError(f"{node.name}: zero point must be int8 0 (symmetric), got {zp.dtype} {zp.ravel()[:4]}")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            scale = numpy_helper.to_array(inits[node.input[1]])
            weight = inits[node.input[0]]
            # One scale is per-channel too when the output-channel axis has size 1 (a 1-channel head
            # conv: axis 0; a ConvTranspose: axis 1).
            if len(weight.dims) == 4 and scale.size == 1 and min(weight.dims[:2]) > 1:
                raise ValueError(f"{node.name}: conv weight {node.input[0]} is not quantized per output channel")
