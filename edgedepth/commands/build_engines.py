"""`edgedepth build-engines BUNDLE`: build the bundle's TensorRT engines now, at provisioning time,
into the engine cache the runtime reads (instead of at the first start of the application).

The engines are the ones ``Runtime(BUNDLE, backend="tensorrt", precision=..., tiles=...,
max_tile_batch=..., dla_core=..., device=...)`` would build, found by the same cache key. Builds
take an inter-process lock per engine: two provisioning scripts (or a script and a starting
service) never build the same engine at once; the second waits and reuses the first's.
``--print-trtexec`` prints the equivalent ``trtexec`` lines instead (no TensorRT needed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import tile_grid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="NAME.edgedepth bundle folder")
    parser.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"],
                        help="refiner precision (default fp16); an int8 run keeps the coarse model in fp16")
    parser.add_argument("--dla-core", type=int, default=None, metavar="N",
                        help="build for Jetson DLA core N (static tile batch, unsupported layers on the GPU); "
                             "a per-layer placement report is written beside each engine")
    parser.add_argument("--device", default="cuda", help="CUDA device to build on, e.g. cuda:1 (default: cuda)")
    parser.add_argument("--tiles", type=tile_grid, metavar="ROWSxCOLS",
                        help="the grid the runtime will use (default: the bundle's), e.g. 4x4")
    parser.add_argument("--max-tile-batch", type=int, default=16, metavar="N",
                        help="most tiles per refiner call, as Runtime(max_tile_batch=N) (default 16)")
    parser.add_argument("--cache-dir", default=None, help="engine cache (default: $EDGEDEPTH_CACHE or ~/.cache/edgedepth)")
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the trtexec lines for both models and both TensorRT build modes, build nothing")


def _device_index(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"--device must be cuda or cuda:N, got {device!r}")
    return int(index or 0)


def run(args: argparse.Namespace) -> int:
    from ..bundle import open_bundle
    from ..tiling import Tiling

    if args.dla_core is not None and args.dla_core < 0:
        raise ValueError(f"--dla-core must be >= 0, got {args.dla_core}")
    index = _device_index(args.device)
    bundle = open_bundle(args.bundle)
    tiling = Tiling.from_json(bundle.tiling)
    rows, cols = args.tiles or (tiling.rows, tiling.cols)
    if args.print_trtexec:
        from ..backends.tensorrt_plan import ROLES, trtexec_text

        files = {role: {p: bundle.manifest[role]["files"]["onnx"][p] for p in bundle.precisions(role, "onnx")}
                 for role in ROLES}
        shapes = {role: {s["name"]: s["shape"] for s in bundle.manifest[role]["inputs"]} for role in ROLES}
        print(trtexec_text(files, shapes, rows * cols, args.max_tile_batch, args.dla_core), end="")
        return 0

    from ..backends.tensorrt import TensorRTBackend, bundle_engines, load_engine

    TensorRTBackend.require()  # one line naming what to install, before anything else is tried
    import torch

    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise RuntimeError(f"no CUDA device {args.device!r} here ({torch.cuda.device_count()} visible)")
    cache = Path(args.cache_dir) if args.cache_dir else None
    with torch.cuda.device(index):  # TensorRT builds on the current CUDA device
        for role, (plan, options) in bundle_engines(bundle, args.precision, rows * cols, args.max_tile_batch,
                                                    dla_core=args.dla_core).items():
            if plan.note:
                print(f"{role}: {plan.note}")
            onnx = bundle.model_file(role, "onnx", plan.onnx_precision)
            data = bundle.model_bytes(role, "onnx", plan.onnx_precision)[onnx]
            _, path = load_engine(onnx, options, cache_dir=cache, device_index=index, log=print, onnx_bytes=data)
            print(f"{role}: {path}")
    return 0
