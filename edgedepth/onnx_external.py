"""Which tensors of an ONNX model keep their data in other files ("external data"), read from the
model's bytes without the ``onnx`` package (the runtime does not install it).

An ONNX file may say that a weight lives at ``location`` in another file; ONNX Runtime, OpenVINO and
TensorRT then open that path themselves, relative to the model, and some versions follow ``..`` or an
absolute path (ONNX Runtime 1.19 returned an arbitrary file's bytes as depth). The bundle reader uses
:func:`external_data_locations` to refuse such models before any backend sees them.

The walk follows every place a ``TensorProto`` can sit: graph initializers and sparse initializers,
node attributes (tensors, subgraphs of If/Loop/Scan), functions and training graphs.
"""
from __future__ import annotations

from typing import Iterator

# message -> {field number: message type of that (length-delimited) field}; onnx/onnx.proto3
_SCHEMA: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 20: "TrainingInfo", 25: "Function"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Function": {7: "Node"},
    "Graph": {1: "Node", 5: "Tensor", 15: "SparseTensor"},
    "Node": {5: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "SparseTensor", 23: "SparseTensor"},
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "Tensor": {},  # its external_data entries (field 13) are read by _walk itself
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1
_MAX_DEPTH = 64  # nested subgraphs; deeper is not a model any exporter writes


class ONNXFormatError(ValueError):
    """The bytes are not a well-formed ONNX protobuf."""


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ONNXFormatError("truncated or overlong varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message; value is an int or a memoryview (wire type 2)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            value = None
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise ONNXFormatError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ONNXFormatError("truncated message")
        yield field, wire, value


def _walk(buf: memoryview, kind: str, depth: int, found: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise ONNXFormatError(f"graphs nested more than {_MAX_DEPTH} deep")
    children = _SCHEMA[kind]
    external = False
    locations = []
    for field, wire, value in _fields(buf):
        if kind == "Tensor" and field == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif kind == "Tensor" and field == _TENSOR_EXTERNAL_DATA and wire == 2:
            entry = {f: bytes(v) for f, w, v in _fields(value) if w == 2}
            if entry.get(1) == b"location":
                locations.append(entry.get(2, b"").decode("utf-8", "replace"))
        elif wire == 2 and field in children:
            _walk(value, children[field], depth + 1, found)
    if external or locations:
        found.extend(locations or ["<no location>"])


def external_data_locations(model: bytes) -> list[str]:
    """The ``location`` of every tensor of the serialised ONNX ``model`` whose data is external
    (empty for a self-contained model). ONNXFormatError when the bytes are not a protobuf."""
    # Every external reference carries the key "location": without those bytes anywhere there is
    # none, and the walk (pure Python, ~10 ms per MB of graph) is skipped.
    if b"location" not in model:
        return []
    found: list[str] = []
    _walk(memoryview(model), "Model", 0, found)
    return found
