"""TensorRT at export time: the bundle's engine build options and the equivalent ``trtexec`` line.

Engines are not built here: they are not portable across TensorRT versions or GPUs (METHODS.md §6),
so the device builds them from the bundle's ONNX. The builder, its options and the engine cache are
the runtime's (:mod:`edgedepth.backends.tensorrt`, re-exported below), so an engine built with
``ensure_engine`` on the device is the one the runtime's TensorRT backend finds. This module only
adds what needs the host's ``onnx``: reading the profile shapes for a ``trtexec`` command line.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from edgedepth.backends.tensorrt import BuildOptions, build_engine, engine_path, ensure_engine

from edgedepth.tiling import Tiling
from .onnx_export import io_specs

__all__ = ["BuildOptions", "build_engine", "engine_path", "ensure_engine", "bundle_build_options", "trtexec_command"]


def bundle_build_options(tiling: Tiling, precision: str, max_tile_batch: int = 16) -> BuildOptions:
    """The options the runtime builds with for a bundle of this tiling (the runtime's default
    ``max_tile_batch`` is 16): tile-batch profile 1 / rows*cols / max_tile_batch."""
    return BuildOptions.for_tiles(precision, tiling.rows * tiling.cols, max_tile_batch)


def _profile_shapes(onnx_path: Path, options: BuildOptions) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shapes for every input with a dynamic batch axis (as the builder sets them)."""
    inputs, _ = io_specs(onnx_path)
    shapes = {}
    for spec in inputs:
        if spec.shape and spec.shape[0] == -1:
            if -1 in spec.shape[1:]:
                raise ValueError(f"{onnx_path}: input {spec.name!r} has dynamic axes beyond the batch: {spec.shape}")
            rest = spec.shape[1:]
            shapes[spec.name] = tuple((b, *rest) for b in (options.min_batch, options.opt_batch, options.max_batch))
    return shapes


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions,
                    timing_cache: str | Path | None = None, *, shown_onnx: str | None = None) -> str:
    """The ``trtexec`` command line that builds the same engine as
    :func:`edgedepth.backends.tensorrt.build_engine` with ``options``.

    Shapes are read from ``onnx_path``; ``shown_onnx`` replaces its path in the line (e.g. the
    name the file will have inside a bundle).
    """
    args = ["trtexec", f"--onnx={shown_onnx or onnx_path}", f"--saveEngine={engine_path}"]
    if options.precision in ("fp16", "int8"):
        args.append("--fp16")
    if options.precision == "int8":
        args.append("--int8")  # with a Q/DQ ONNX: explicit quantization, no calibrator
    shapes = _profile_shapes(Path(onnx_path), options)
    for flag, idx in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        if shapes:
            args.append(flag + "=" + ",".join(f"{n}:{'x'.join(map(str, s[idx]))}" for n, s in shapes.items()))
    args.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if options.dla_core is not None:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    return shlex.join(args)
