"""CoreML backend (macOS only): runs the bundle's .mlpackage through coremltools."""
from __future__ import annotations

import platform
from typing import Any, Mapping

import numpy as np

from .base import Backend, BackendUnavailableError, TensorSpec


class CoreMLBackend(Backend):
    name = "coreml"
    package = "coremltools"
    install_hint = "pip install 'edgedepth[coreml]' (CoreML predicts only on macOS)"
    formats = ("coreml",)
    supported_precisions = ("fp32", "fp16")
    thread_safe = False

    @classmethod
    def is_available(cls) -> bool:
        return platform.system() == "Darwin" and super().is_available()

    @classmethod
    def require(cls) -> None:
        if platform.system() != "Darwin":
            raise BackendUnavailableError(
                f"backend 'coreml' runs only on macOS (this is {platform.system()}); "
                "use backend='onnxruntime' or 'openvino' here"
            )
        super().require()

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu", "gpu", "ane", "all"]

    @classmethod
    def default_precision(cls, device: str) -> str:
        return "fp16"

    def _load(self) -> None:
        import coremltools as ct

        units = {"cpu": ct.ComputeUnit.CPU_ONLY, "gpu": ct.ComputeUnit.CPU_AND_GPU,
                 "ane": ct.ComputeUnit.CPU_AND_NE, "all": ct.ComputeUnit.ALL, "auto": ct.ComputeUnit.ALL}
        if self.device not in units:
            raise ValueError(f"coreml device must be one of {', '.join(units)}, got {self.device!r}")
        self.model = ct.models.MLModel(str(self.path), compute_units=units[self.device])
        spec = self.model.get_spec().description
        self.inputs = [TensorSpec(i.name, tuple(i.type.multiArrayType.shape) or (None,)) for i in spec.input]
        self.outputs = [TensorSpec(o.name, tuple(o.type.multiArrayType.shape) or (None,)) for o in spec.output]

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        # CoreML models have fixed shapes (the Neural Engine needs them): run a tile batch one by one
        # when the model's batch axis is 1.
        fixed = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        batch = next(iter(feeds.values())).shape[0]
        if fixed == 1 and batch > 1:
            parts = [self.model.predict({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(batch)]
            return {o.name: np.concatenate([p[o.name] for p in parts]) for o in self.outputs}
        return dict(self.model.predict(dict(feeds)))
