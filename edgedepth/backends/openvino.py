"""OpenVINO backend: CPU or Intel GPU; compiled models are cached in a cache directory.

Reads the bundle's OpenVINO IR when present, else its ONNX directly. The compiled-model cache
(OpenVINO ``CACHE_DIR``) makes the second start of a model much faster; it lives under
``$EDGEDEPTH_CACHE`` (default ``~/.cache/edgedepth``)/openvino because a bundle inside
site-packages is usually read-only.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import Backend, TensorSpec, cache_root, private_dir

_OV_DEVICES = {"cpu": "CPU", "gpu": "GPU"}


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

        return [d.lower() for d in ov.Core().available_devices if d.lower().split(".")[0] in _OV_DEVICES]

    @classmethod
    def default_precision(cls, device: str) -> str:
        return "fp16" if device.startswith("gpu") else "fp32"

    def _load(self) -> None:
        import openvino as ov

        device = self.device.split(".")[0]
        if device not in _OV_DEVICES:
            raise ValueError(f"openvino device must be one of {', '.join(_OV_DEVICES)}, got {self.device!r}")
        core = ov.Core()
        cache = private_dir(self.cache_dir or cache_root() / "openvino")
        core.set_property({"CACHE_DIR": str(cache)})
        config: dict[str, Any] = {}
        if self.threads and device == "cpu":
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if device == "cpu":
            # Keep the requested accuracy: OpenVINO CPU would otherwise silently run bf16 on AMX parts.
            config["INFERENCE_PRECISION_HINT"] = "f32"
        # From the verified bytes (IR: the .xml and the weights of its .bin), not the paths.
        if self.path.suffix == ".xml":
            self._weights = np.frombuffer(self.read(self.path.with_suffix(".bin")), dtype=np.uint8)
            model = core.read_model(self.read(), ov.Tensor(self._weights))
        else:
            model = core.read_model(self.read())
        self.compiled = core.compile_model(model, _OV_DEVICES[device] + self.device[len(device):].upper(), config)
        self.request = self.compiled.create_infer_request()
        # Names come from the model as read: compiling can fuse an FP16 model's input/output Casts
        # into the ports, which then also answer to the Casts' names (graph_input_cast_0 ...) and
        # get_any_name() may return those instead of the names the bundle declares.
        self.inputs = [self._spec(c, r) for c, r in zip(self.compiled.inputs, model.inputs)]
        self.outputs = [self._spec(c, r) for c, r in zip(self.compiled.outputs, model.outputs)]

    @staticmethod
    def _spec(port: Any, declared: Any) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        dtype = "float16" if port.get_element_type().get_type_name() == "f16" else "float32"
        return TensorSpec(declared.get_any_name(), shape, dtype)

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        result = self.request.infer(dict(feeds))
        return {spec.name: result[port].copy() for spec, port in zip(self.outputs, self.compiled.outputs)}
