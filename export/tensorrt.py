"""TensorRT at export time: the bundle's engine build options and the equivalent ``trtexec`` lines.

Engines are not built here: they are not portable across TensorRT versions or GPUs (METHODS.md §6),
so the device builds them from the bundle's ONNX. The builder, its options, the version-dependent
plan and the engine cache are the runtime's (:mod:`edgedepth.backends.tensorrt`,
:mod:`edgedepth.backends.tensorrt_plan`, re-exported below), so an engine built with
``ensure_engine`` or ``edgedepth build-engines`` on the device is the one the runtime finds. This
module only adds what needs the host's ``onnx``: reading the input shapes of ONNX files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from edgedepth.backends.tensorrt import BuildOptions, build_engine, engine_path, ensure_engine
from edgedepth.backends.tensorrt_plan import trtexec_command as _trtexec_line
from edgedepth.backends.tensorrt_plan import trtexec_text as _trtexec_text

from edgedepth.tiling import Tiling
from .onnx_export import io_specs

__all__ = ["BuildOptions", "build_engine", "engine_path", "ensure_engine", "bundle_build_options", "trtexec_command",
           "trtexec_text"]


def bundle_build_options(tiling: Tiling, precision: str, max_tile_batch: int = 16) -> BuildOptions:
    """The options the runtime builds with for a bundle of this tiling (the runtime's default
    ``max_tile_batch`` is 16): tile-batch profile 1 / rows*cols / max_tile_batch."""
    return BuildOptions.for_tiles(precision, tiling.rows * tiling.cols, max_tile_batch)


def _input_shapes(onnx_path: Path) -> dict[str, list[int]]:
    return {spec.name: list(spec.shape) for spec in io_specs(onnx_path)[0]}


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions,
                    timing_cache: str | Path | None = None, *, shown_onnx: str | None = None,
                    strongly_typed: bool = False) -> str:
    """The ``trtexec`` command line that builds the same engine as
    :func:`edgedepth.backends.tensorrt.build_engine` with ``options`` from ``onnx_path``.

    Shapes are read from ``onnx_path``; ``shown_onnx`` replaces its path in the line (e.g. the
    name the file will have inside a bundle). ``strongly_typed``: the TensorRT >= 10.12 form.
    """
    return _trtexec_line(shown_onnx or str(onnx_path), str(engine_path), options, _input_shapes(Path(onnx_path)),
                         strongly_typed=strongly_typed, timing_cache=None if timing_cache is None else str(timing_cache))


def trtexec_text(onnx_files: Mapping[str, Mapping[str, Path]], tiling: Tiling, max_tile_batch: int = 16,
                 dla_core: Optional[int] = None) -> str:
    """The bundle's ``trtexec.txt``: the lines for both models, every precision the bundle can run
    and both TensorRT build modes (:func:`edgedepth.backends.tensorrt_plan.trtexec_text`).
    ``onnx_files``: role -> precision -> ONNX path inside the bundle being written."""
    names = {role: {prec: Path(path).name for prec, path in table.items()} for role, table in onnx_files.items()}
    shapes = {role: _input_shapes(Path(table["fp32"])) for role, table in onnx_files.items()}
    return _trtexec_text(names, shapes, tiling.rows * tiling.cols, max_tile_batch, dla_core)
