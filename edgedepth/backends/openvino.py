"""OpenVINO backend: CPU, Intel GPU, NPU or AUTO; compiled models are cached in a cache directory.

Performance settings are explicit, not OpenVINO's defaults (which change between releases): the
runtime sends one frame at a time, so ``PERFORMANCE_HINT`` is LATENCY with one stream, and on the
CPU ``INFERENCE_NUM_THREADS`` is the runtime's ``threads`` when given. What the compiled model
actually uses is read back and reported by :meth:`OpenVINOBackend.describe`.

A model with a dynamic batch axis (the refiner: tiles) is compiled again with that axis fixed for
each tile count it is run with (up to ``MAX_STATIC_BATCHES`` counts, then the dynamic model): on
the CPU the static graph is faster (default bundle, 16 tiles, one thread: 177 -> 139 ms) and an
NPU compiles static shapes only. The counts are few (a frame size gives a full chunk and a rest),
each compiled once (about 0.4 s for the default refiner, cached in ``CACHE_DIR`` after that).

Reads the bundle's OpenVINO IR when present, else its ONNX directly. The compiled-model cache
(OpenVINO ``CACHE_DIR``) makes the second start of a model much faster; it lives under
``$EDGEDEPTH_CACHE`` (default ``~/.cache/edgedepth``)/openvino because a bundle inside
site-packages is usually read-only.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import Backend, TensorSpec, cache_root, private_dir

_OV_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
# Read back from the compiled model for describe(): what it runs with, whoever set it.
_REPORTED = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT")
MAX_STATIC_BATCHES = 4  # batch sizes compiled static per model; any other runs on the dynamic model


def _text(value: Any) -> str:
    """An OpenVINO property value as plain text ("LATENCY", "f32", "2")."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    return getattr(value, "name", None) or str(value)


class OpenVINOBackend(Backend):
    name = "openvino"
    package = "openvino"
    install_hint = "pip install 'edgedepth[openvino]'"
    formats = ("openvino", "onnx")
    supported_precisions = ("fp32", "fp16", "int8")
    thread_safe = False  # one InferRequest; the base class lock serialises run()

    @classmethod
    def devices(cls) -> list[str]:
        import openvino as ov

        found = [d.lower() for d in ov.Core().available_devices if d.lower().split(".")[0] in _OV_DEVICES]
        return found + ["auto"] if found else found

    @classmethod
    def default_precision(cls, device: str) -> str:
        return "fp16" if device.split(".")[0] in ("gpu", "npu") else "fp32"

    def _load(self) -> None:
        import openvino as ov

        # "gpu.1" is a device index; "auto:gpu,cpu" is OpenVINO's AUTO over those candidates ("auto"
        # alone is the runtime's own choice, made before the backend is built).
        device = self.device.split(":")[0].split(".")[0]
        if device not in _OV_DEVICES:
            raise ValueError(f"openvino device must be one of {', '.join(_OV_DEVICES)} (auto as auto:gpu,cpu), "
                             f"got {self.device!r}")
        core = ov.Core()
        cache = private_dir(self.cache_dir or cache_root() / "openvino")
        core.set_property({"CACHE_DIR": str(cache)})
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device != "auto":  # AUTO passes hints on to the device it picks, not streams
            config["NUM_STREAMS"] = 1
        if self.threads and device == "cpu":
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if device in ("cpu", "auto"):
            # Keep the requested accuracy: OpenVINO CPU would otherwise silently run bf16 on AMX parts
            # (AUTO passes the hint on to the CPU when it picks it).
            config["INFERENCE_PRECISION_HINT"] = "f32"
        # From the verified bytes (IR: the .xml and the weights of its .bin), not the paths.
        if self.path.suffix == ".xml":
            self._weights = np.frombuffer(self.read(self.path.with_suffix(".bin")), dtype=np.uint8)
            model = core.read_model(self.read(), ov.Tensor(self._weights))
        else:
            model = core.read_model(self.read())
        self.compiled = core.compile_model(model, self.device.upper(), config)
        self.request = self.compiled.create_infer_request()
        self._core, self._model, self._config = core, model, config
        self._dynamic_batch = all(p.get_partial_shape().rank.is_static and p.get_partial_shape()[0].is_dynamic
                                  for p in model.inputs)
        self._static: dict[int, Any] = {}  # batch size -> (compiled model, infer request)
        self.settings = {k: _text(self._property(k)) for k in _REPORTED if self._property(k) is not None}
        # Names come from the model as read: compiling can fuse an FP16 model's input/output Casts
        # into the ports, which then also answer to the Casts' names (graph_input_cast_0 ...) and
        # get_any_name() may return those instead of the names the bundle declares.
        self.inputs = [self._spec(c, r) for c, r in zip(self.compiled.inputs, model.inputs)]
        self.outputs = [self._spec(c, r) for c, r in zip(self.compiled.outputs, model.outputs)]

    def _property(self, key: str) -> Any:
        try:
            return self.compiled.get_property(key)
        except RuntimeError:  # a device that does not report this property
            return None

    @staticmethod
    def _spec(port: Any, declared: Any) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        dtype = "float16" if port.get_element_type().get_type_name() == "f16" else "float32"
        return TensorSpec(declared.get_any_name(), shape, dtype)

    def _for_batch(self, n: int) -> tuple[Any, Any]:
        """(compiled model, infer request) for a batch of ``n``: the model compiled with its batch
        axis fixed to ``n`` (compiled on first use), or the dynamic one past MAX_STATIC_BATCHES."""
        if not self._dynamic_batch:
            return self.compiled, self.request
        if n not in self._static:
            if len(self._static) >= MAX_STATIC_BATCHES:
                return self.compiled, self.request
            model = self._model.clone()
            model.reshape({p: [n, *list(p.get_partial_shape())[1:]] for p in model.inputs})
            compiled = self._core.compile_model(model, self.device.upper(), self._config)
            self._static[n] = (compiled, compiled.create_infer_request())
        return self._static[n]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "settings": dict(self.settings), "static_batches": sorted(self._static)}

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        compiled, request = self._for_batch(len(next(iter(feeds.values()))))
        result = request.infer(dict(feeds))
        return {spec.name: result[port].copy() for spec, port in zip(self.outputs, compiled.outputs)}
