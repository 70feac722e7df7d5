"""CoreML backend (macOS only): runs the bundle's .mlpackage through coremltools.

The package's spec is read without opening it through coremltools (:func:`read_spec`):
``MLModel``/``load_spec`` open a package read-write and may rewrite its ``Manifest.json``, which
would break the bundle's sha256. For the same reason the backend predicts from a private copy.
Input and output types come from the spec: FP16 or FP32 multi-arrays, or an RGB image whose
normalisation (recorded in the model's metadata by the exporter) the backend undoes, because the
runtime hands every backend normalised float32 NCHW arrays.
"""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .base import Backend, BackendUnavailableError, TensorSpec

# Files coremltools may write into a package that are not part of the model (ExecuTorch debugging).
DEBUG_FILES = ("executorch_debug_handle_mapping.json",)
# User-defined metadata keys under which the exporter records an image input's normalisation.
MEAN_KEY, STD_KEY = "com.edgedepth.image_mean", "com.edgedepth.image_std"


def read_spec(path: str | Path):
    """The ``Model`` protobuf of an .mlpackage folder or .mlmodel file, read without writing
    anything (``coremltools.utils.load_spec`` may rewrite the package's ``Manifest.json``).
    FileNotFoundError when missing, ValueError when the package does not name its model."""
    from coremltools.proto import Model_pb2

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CoreML model {path} not found")
    spec_file = path
    if path.is_dir():
        try:
            manifest = json.loads((path / "Manifest.json").read_text(encoding="utf-8"))
            rel = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a readable .mlpackage (Manifest.json names no root model: {err})") from err
        data = (path / "Data").resolve()
        spec_file = (data / rel).resolve()
        if data not in spec_file.parents or not spec_file.is_file():
            raise ValueError(f"{path}: Manifest.json's root model {rel!r} is not a file inside the package")
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    return spec


def input_shapes(spec) -> dict[str, tuple[int, ...]]:
    """Input name -> fixed shape; an image input counts as (1, channels, H, W)."""
    out = {}
    for i in spec.description.input:
        if i.type.HasField("imageType"):
            img = i.type.imageType
            channels = 1 if img.colorSpace == img.GRAYSCALE else 3
            out[i.name] = (1, channels, int(img.height), int(img.width))
        else:
            out[i.name] = tuple(int(d) for d in i.type.multiArrayType.shape)
    return out


def _array_dtype(feature) -> str:
    if feature.type.HasField("imageType"):
        return "float32"  # fed normalised by the runtime, turned back into pixels by the backend
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType as A

    names = {A.FLOAT16: "float16", A.FLOAT32: "float32", A.DOUBLE: "float64", A.INT32: "int32"}
    code = feature.type.multiArrayType.dataType
    if code not in names:
        raise ValueError(f"CoreML feature {feature.name!r} has array data type {code}, which edgedepth does not handle")
    return names[code]


def pixels(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(1, 3, H, W) normalised ``(p / 255 - mean) / std`` -> (H, W, 3) uint8 RGB pixels p, rounded."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"an image input takes one (1, 3, H, W) frame, got {x.shape}")
    p = (x[0] * np.float32(std).reshape(3, 1, 1) + np.float32(mean).reshape(3, 1, 1)) * 255.0
    return np.ascontiguousarray(np.clip(np.rint(p), 0, 255).astype(np.uint8).transpose(1, 2, 0))


class CoreMLBackend(Backend):
    name = "coreml"
    package = "coremltools"
    install_hint = "pip install 'edgedepth[coreml]' (CoreML predicts only on macOS)"
    formats = ("coreml",)
    # int8 / palette6: weight-compressed packages (FP16 compute), picked by Runtime(precision=...).
    supported_precisions = ("fp32", "fp16", "int8", "palette6")
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
        spec = read_spec(self.path)
        shapes = input_shapes(spec)
        meta = spec.description.metadata.userDefined
        self._images: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        for i in spec.description.input:
            if i.type.HasField("imageType"):
                if MEAN_KEY not in meta or STD_KEY not in meta:
                    raise ValueError(f"{self.path.name}: image input {i.name!r} has no recorded normalisation "
                                     f"({MEAN_KEY}/{STD_KEY}); re-export the bundle with this edgedepth")
                self._images[i.name] = (tuple(json.loads(meta[MEAN_KEY])), tuple(json.loads(meta[STD_KEY])))
        self.inputs = [TensorSpec(i.name, shapes[i.name], _array_dtype(i)) for i in spec.description.input]
        self.outputs = [TensorSpec(o.name, tuple(o.type.multiArrayType.shape) or (None,), _array_dtype(o))
                        for o in spec.description.output]
        # Opening a package may rewrite its Manifest.json: open a private copy, never the bundle's.
        self._copy = tempfile.TemporaryDirectory(prefix="edgedepth-coreml-")
        local = Path(self._copy.name) / self.path.name
        shutil.copytree(self.path, local)
        self.model = ct.models.MLModel(str(local), compute_units=units[self.device])

    def _feed(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        from PIL import Image

        out = dict(feeds)
        for name, (mean, std) in self._images.items():
            out[name] = Image.fromarray(pixels(feeds[name], mean, std), "RGB")
        return out

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        # CoreML models have fixed shapes (the Neural Engine needs them): run a tile batch one by one
        # when the model's batch axis is 1.
        fixed = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        batch = next(iter(feeds.values())).shape[0]
        if fixed == 1 and batch > 1:
            parts = [self.model.predict(self._feed({k: v[i:i + 1] for k, v in feeds.items()})) for i in range(batch)]
            return {o.name: np.concatenate([p[o.name] for p in parts]) for o in self.outputs}
        return dict(self.model.predict(self._feed(feeds)))
