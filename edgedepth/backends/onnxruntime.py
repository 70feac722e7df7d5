"""ONNX Runtime backend: CPU everywhere, the CUDA execution provider when installed and asked for."""
from __future__ import annotations

from typing import Any, Mapping

from .base import Backend, TensorSpec

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


class ONNXRuntimeBackend(Backend):
    name = "onnxruntime"
    package = "onnxruntime"
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"
    formats = ("onnx",)
    supported_precisions = ("fp32", "fp16", "int8")
    thread_safe = True  # InferenceSession.run is documented thread-safe

    @classmethod
    def devices(cls) -> list[str]:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in providers else [])

    def _load(self) -> None:
        import onnxruntime as ort

        if self.device not in self.devices():
            raise ValueError(
                f"onnxruntime cannot run on device {self.device!r} here (available: {', '.join(self.devices())}); "
                "for CUDA install onnxruntime-gpu"
            )
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        # ORT's worker threads spin-wait after each run. The runtime runs two sessions and its own
        # tile engine threads on the same cores in turn, so the spinning threads take the cores from
        # whatever comes next: on 2 cores a 4K frame took 185/202 ms (min/median) with spinning,
        # 155/166 without (the stitch stage 32 -> 16 ms, the refiner's calls 148 -> 131 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda" else ["CPUExecutionProvider"]
        # From the verified bytes, not the path (which could have changed since it was hashed).
        self.session = ort.InferenceSession(self.read(), sess_options=options, providers=providers)
        self.inputs = [TensorSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape),
                                  _ORT_TYPES.get(i.type, "float32")) for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(d if isinstance(d, int) else None for d in o.shape),
                                   _ORT_TYPES.get(o.type, "float32")) for o in self.session.get_outputs()]

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, dict(feeds))))
