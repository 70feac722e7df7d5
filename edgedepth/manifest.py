"""The bundle manifest's schema, checked once when a bundle is opened (docs/interfaces.md, "Bundle").

A manifest is data from outside. Every value the runtime will compute with is checked here, with
its bounds, so that a bad manifest is refused at load with a message naming the key, instead of
failing on every frame (rows 0, window 'bogus', std 0) or running silently wrong (std 1e-300,
fx_norm -0.8). Bounds are generous for any real model and small enough that no value can ask for
an absurd allocation (a 30000 x 30000 coarse input, a refiner batch of 1e9).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from .backends.base import PRECISIONS
from .coarse_fit import FITS
from .tiling_reference import MIN_JOINT_SIGMA, UPSAMPLING, WINDOWS

SCHEMA = "edgedepth.bundle/1"
SUPPORTED_SCHEMAS = frozenset({SCHEMA})

#: Most pixels per side of the coarse model's input and of a refiner tile.
MAX_MODEL_SIDE = 4096
#: Most tiles per refiner call a manifest may fix (refiner.batch / coreml_batch).
MAX_BATCH = 1024
#: Most rows or columns of tiles.
MAX_GRID = 64
#: Most channels of a coarse output or refiner input.
MAX_CHANNELS = 4096
#: Focal length over image width (fx / W, both in pixels) a camera may have: 0.05 is a 169 degree
#: horizontal field of view, 100 a 0.6 degree one. Applies to the bundle's training camera and to
#: the intrinsics a caller passes.
FX_RATIO_RANGE = (0.05, 100.0)
#: Normalisation std on RGB in [0, 1]: below 1e-3 a pixel step of 1/255 becomes > 4, i.e. the
#: model sees saturated input; 1e-300 makes every input infinite.
STD_RANGE = (1e-3, 1e3)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest value is missing, of the wrong type or out of range; the message names the key."""


def _number(key: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestError(f"{key} must be a finite number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        raise ManifestError(f"{key} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}")
    return float(value)


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ManifestError(f"{key} must be in [{low}, {high}], got {value}")
    return value


def _list(key: str, value: Any, length: int | None = None) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ManifestError(f"{key} must be a list" + (f" of {length}" if length else "") + f", got {value!r}")
    return value


def _dict(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{key} must be an object, got {type(value).__name__}")
    return value


def _size(key: str, value: Any) -> tuple[int, int]:
    h, w = _list(key, value, 2)
    return _int(f"{key}[0]", h, 1, MAX_MODEL_SIDE), _int(f"{key}[1]", w, 1, MAX_MODEL_SIDE)


def _shape(key: str, value: Any, expected: Sequence[int | None]) -> None:
    """A declared tensor shape; -1 is a dynamic axis. ``expected`` None entries accept any size."""
    dims = _list(key, value, len(expected))
    for i, (dim, want) in enumerate(zip(dims, expected)):
        if dim == -1 and i == 0:
            continue
        _int(f"{key}[{i}]", dim, 1, MAX_CHANNELS if want is None else max(want, 1))
        if want is not None and dim != want:
            raise ManifestError(f"{key} must be {list(expected)}, got {dims}")


def _named(key: str, value: Any) -> dict[str, Mapping[str, Any]]:
    """A list of {"name": ...} objects as a dict by name (names unique)."""
    out: dict[str, Mapping[str, Any]] = {}
    for i, spec in enumerate(_list(key, value)):
        spec = _dict(f"{key}[{i}]", spec)
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{key}[{i}].name must be a non-empty string, got {name!r}")
        if name in out:
            raise ManifestError(f"{key} names {name!r} twice")
        out[name] = spec
    return out


def _file_table(key: str, value: Any) -> None:
    for fmt, table in _dict(key, value).items():
        for precision, rel in _dict(f"{key}.{fmt}", table).items():
            # fp32/fp16/int8 for the runtime's backends; exporters add their own (CoreML palette6).
            if not re.fullmatch(r"[a-z0-9_]{1,32}", precision):
                raise ManifestError(f"{key}.{fmt} has precision {precision!r}; names are like {', '.join(PRECISIONS)}")
            if not isinstance(rel, str):
                raise ManifestError(f"{key}.{fmt}.{precision} must be a file path, got {rel!r}")


def _coarse(c: Mapping[str, Any]) -> dict[str, int]:
    h, w = _size("coarse.input_size", c["input_size"])
    for i, v in enumerate(_list("coarse.mean", c["mean"], 3)):
        _number(f"coarse.mean[{i}]", v, -10.0, 10.0)
    for i, v in enumerate(_list("coarse.std", c["std"], 3)):
        _number(f"coarse.std[{i}]", v, *STD_RANGE)
    for name, spec in _named("coarse.inputs", c["inputs"]).items():
        if "shape" in spec:
            _shape(f"coarse.inputs[{name}].shape", spec["shape"], (1, 3, h, w))
    outputs = _named("coarse.outputs", c["outputs"])
    if "depth" not in outputs:
        raise ManifestError("coarse.outputs must include 'depth'")
    channels = {}
    for name, spec in outputs.items():
        channels[name] = _int(f"coarse.outputs[{name}].channels", spec.get("channels", 1), 1, MAX_CHANNELS)
        _int(f"coarse.outputs[{name}].stride", spec.get("stride", 1), 1, MAX_MODEL_SIDE)
    if channels["depth"] != 1:
        raise ManifestError(f"coarse.outputs[depth].channels must be 1, got {channels['depth']}")
    _file_table("coarse.files", c["files"])
    return channels


def _refiner(r: Mapping[str, Any], coarse_channels: Mapping[str, int]) -> None:
    th, tw = _size("refiner.tile_size", r["tile_size"])
    for key in ("batch", "coreml_batch"):
        if r.get(key) is not None:
            _int(f"refiner.{key}", r[key], 1, MAX_BATCH)
    inputs = _named("refiner.inputs", r["inputs"])
    for name, want in (("rgb", 3), ("coarse_depth", 1)):
        if name not in inputs:
            raise ManifestError(f"refiner.inputs must include {name!r}")
        if "shape" in inputs[name]:
            _shape(f"refiner.inputs[{name}].shape", inputs[name]["shape"], (None, want, th, tw))
    for name, spec in inputs.items():
        if name in ("rgb", "coarse_depth"):
            continue
        if not re.fullmatch(r"guide\d+", name):
            raise ManifestError(f"refiner.inputs[{name}]: inputs are rgb, coarse_depth and guide0..guideK")
        source = spec.get("source", f"feat{name[5:]}")
        if not isinstance(source, str) or source not in coarse_channels or source == "depth":
            raise ManifestError(f"refiner.inputs[{name}].source {source!r} is not a coarse feature output "
                                f"(outputs: {', '.join(coarse_channels)})")
        _shape(f"refiner.inputs[{name}].shape", spec.get("shape"), (None, coarse_channels[source], None, None))
        gh, gw = spec["shape"][2:]
        if gh > th or gw > tw:
            raise ManifestError(f"refiner.inputs[{name}].shape: a guidance crop ({gh}x{gw}) larger than the "
                                f"tile ({th}x{tw}) is not a model this runtime knows")
    outputs = _named("refiner.outputs", r["outputs"])
    if "depth" not in outputs:
        raise ManifestError("refiner.outputs must include 'depth'")
    if "shape" in outputs["depth"]:
        _shape("refiner.outputs[depth].shape", outputs["depth"]["shape"], (None, 1, th, tw))
    _file_table("refiner.files", r["files"])


def check_manifest(manifest: Any) -> None:
    """Raise ManifestError naming the first key that is missing, mistyped or out of range."""
    manifest = _dict("the manifest", manifest)
    if not isinstance(manifest.get("schema"), str) or manifest["schema"] not in SUPPORTED_SCHEMAS:
        raise ManifestError(
            f"unknown bundle schema {manifest.get('schema')!r}; this edgedepth reads "
            f"{', '.join(sorted(SUPPORTED_SCHEMAS))} (upgrade edgedepth or re-export the bundle)")
    required = {
        "coarse": ("input_size", "mean", "std", "inputs", "outputs", "files"),
        "refiner": ("tile_size", "inputs", "outputs", "files"),
        "tiling": ("rows", "cols", "overlap_ratio", "window"),
        "camera": ("fx_norm",),
    }
    for section, keys in required.items():
        if not isinstance(manifest.get(section), dict):
            raise ManifestError(f"missing section {section!r}")
        for key in keys:
            if key not in manifest[section]:
                raise ManifestError(f"missing key {section}.{key}")
    if not isinstance(manifest.get("files"), dict):
        raise ManifestError("missing 'files' (sha256 per file)")
    for rel, digest in manifest["files"].items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ManifestError(f"files[{rel!r}] must be a lowercase hex sha256, got {digest!r}")
    if "name" in manifest and not isinstance(manifest["name"], str):
        raise ManifestError(f"name must be a string, got {manifest['name']!r}")

    _refiner(manifest["refiner"], _coarse(manifest["coarse"]))
    if manifest["coarse"].get("fit", "squeeze") not in FITS:
        raise ManifestError(f"coarse.fit must be one of {', '.join(FITS)}, got {manifest['coarse']['fit']!r}")
    t = manifest["tiling"]
    _int("tiling.rows", t["rows"], 1, MAX_GRID)
    _int("tiling.cols", t["cols"], 1, MAX_GRID)
    _number("tiling.overlap_ratio", t["overlap_ratio"], 0.0, 0.99)
    if t["window"] not in WINDOWS:
        raise ManifestError(f"tiling.window must be one of {', '.join(WINDOWS)}, got {t['window']!r}")
    if t.get("upsample", "bilinear") not in UPSAMPLING:
        raise ManifestError(f"tiling.upsample must be one of {', '.join(UPSAMPLING)}, got {t['upsample']!r}")
    if "joint_sigma" in t:
        _number("tiling.joint_sigma", t["joint_sigma"], MIN_JOINT_SIGMA, 10.0)
    if t.get("snap"):
        _number("tiling.snap", t["snap"], 0.0, 10.0, low_open=True)
        if t.get("upsample", "bilinear") == "bilinear":
            raise ManifestError("tiling.snap needs tiling.upsample 'joint_bilateral' or 'guided'")
    for key, (low, high) in {"guided_step": (1, 16), "guided_radius": (0, 64)}.items():
        if key in t:
            _int(f"tiling.{key}", t[key], low, high)
    if "guided_eps" in t:
        _number("tiling.guided_eps", t["guided_eps"], 1e-8, 1.0)
    _number("camera.fx_norm", manifest["camera"]["fx_norm"], *FX_RATIO_RANGE)
    depth = _dict("depth", manifest.get("depth", {}))
    if depth.get("valid_max") is not None:
        _number("depth.valid_max", depth["valid_max"], 0.0, 1e6, low_open=True)
    pipeline = _dict("pipeline", manifest.get("pipeline", {}))
    # "pipeline" mixes per-format file tables with plain values such as input_size.
    _file_table("pipeline", {fmt: table for fmt, table in pipeline.items() if isinstance(table, dict)})
