"""The refiner alone on the GPU, per precision and way of running it: where the whole frame's
largest stage could go (issue 12: a 4K frame under 20 ms on an H200).

    python benchmarks/gpu/refiner.py OUT_DIR [--device cuda] [--batches 16,72] [--repeat 20]

``prv2-mobile`` as ``frame.py`` builds it (``build_models``: random weights, 128x224 tiles,
guidance from a DA-V2-Small-sized coarse model), fed a batch of tiles already on the device: 16 is the default grid
at 1080p and, capped at ``max_side``, at 4K; 72 is 4K's uncapped 9x8 grid. Variants, their calls
interleaved in random order, wall ms min/median synchronised around each call:

* ``fp32``: as the torch backend runs it (cuDNN's default TF32 convolutions);
* ``fp16``: the backend's default on CUDA;
* ``fp16 channels_last``: NHWC weights and inputs (the layout tensor cores read);
* ``fp16 cudnn.benchmark``: cuDNN times its algorithms per shape once and keeps the fastest;
* ``fp16 graph``, ``fp32 graph``: the forward captured once as a CUDA graph and replayed (no
  per-op launches; the torch backend's ``capture_cuda_graph``, as it runs on CUDA);
* ``fp16 graph channels_last``; ``fp16 all``: channels_last + cudnn.benchmark + graph.

Writes OUT_DIR/refiner.json: per batch and variant ms min/median, ms per tile, and GFLOP/s from the
forward's FLOPs (``torch.utils.flop_counter``, multiply-adds counted twice). ``--device cpu
--batches 2 --tiny`` checks the script itself (fp32 only).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from frame import build_models  # benchmarks/gpu/frame.py: this script's folder is on sys.path

from edgedepth.backends.torch import capture_cuda_graph

VARIANTS = {  # name: (dtype, channels_last, cudnn.benchmark, CUDA graph)
    "fp32": (torch.float32, False, False, False),
    "fp16": (torch.float16, False, False, False),
    "fp16 channels_last": (torch.float16, True, False, False),
    "fp16 cudnn.benchmark": (torch.float16, False, True, False),
    "fp16 graph": (torch.float16, False, False, True),
    "fp32 graph": (torch.float32, False, False, True),
    "fp16 graph channels_last": (torch.float16, True, False, True),
    "fp16 all": (torch.float16, True, True, True),
}


def inputs(refiner: torch.nn.Module, batch: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(batch)
    shapes = [(3, *refiner.tile_size), (1, *refiner.tile_size), *[tuple(s) for s in refiner.guidance]]
    xs = [torch.rand((batch, *s), generator=g) for s in shapes]
    xs[1] = 2 + 30 * xs[1]  # depth in metres
    return [x.to(device) for x in xs]


class Variant:
    """One way of running the refiner on one batch; ``run()`` enqueues a forward pass."""

    def __init__(self, refiner: torch.nn.Module, feeds: list[torch.Tensor], dtype: torch.dtype, channels_last: bool,
                 benchmark: bool, graph: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = copy.deepcopy(refiner).to(dtype=dtype, memory_format=fmt)
        self.feeds = [x.to(dtype).contiguous(memory_format=fmt) if x.dim() == 4 else x.to(dtype) for x in feeds]
        self.benchmark = benchmark
        self.graph = None
        if graph:
            with self._flags():
                self.graph, self.feeds, self.out = capture_cuda_graph(lambda xs: self.model(*xs), self.feeds)

    @contextlib.contextmanager
    def _flags(self):
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.benchmark
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.backends.cudnn.benchmark = before

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        with self._flags():
            self.out = self.model(*self.feeds)


def forward_flops(refiner: torch.nn.Module, device: str) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        refiner(*inputs(refiner, 1, device))
    return int(counter.get_total_flops())


def measure(args: argparse.Namespace) -> dict:
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    refiner = build_models((56, 98) if args.tiny else (518, 924))[1].to(args.device)
    names = list(VARIANTS) if cuda else ["fp32"]  # half, graphs and cuDNN need the GPU
    flops = forward_flops(refiner, args.device)
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
               "tile": list(refiner.tile_size), "gflop_per_tile": flops / 1e9,
               "parameters": sum(p.numel() for p in refiner.parameters()), "batches": {}}
    order = np.random.default_rng(0)
    for batch in args.batches:
        feeds = inputs(refiner, batch, args.device)
        variants = {n: Variant(refiner, feeds, *VARIANTS[n]) for n in names}
        for v in variants.values():  # warm-up: cuDNN plans, allocator blocks
            for _ in range(3):
                v.run()
        sync()
        wall = {n: [] for n in names}
        for _ in range(args.repeat):
            for n in order.permutation(names):
                sync()
                t = time.perf_counter()
                variants[n].run()
                sync()
                wall[n].append(1e3 * (time.perf_counter() - t))
        rows = {}
        for n in names:
            lo, med = min(wall[n]), statistics.median(wall[n])
            rows[n] = {"ms_min": lo, "ms_median": med, "ms_per_tile_min": lo / batch,
                       "gflop_per_s_min_time": flops * batch / (lo * 1e6)}
            print(f"batch {batch:3d}  {n:22s} {lo:8.2f} / {med:8.2f} ms min/median  "
                  f"{lo / batch:6.3f} ms/tile  {rows[n]['gflop_per_s_min_time']:9.0f} GFLOP/s", flush=True)
        results["batches"][str(batch)] = rows
        del variants
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="16,72", help="tiles per call, comma-separated")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--tiny", action="store_true", help="a small coarse model (checks the script on the CPU)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("refiner.py: no CUDA device visible to torch", file=sys.stderr)
        return 2
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        args.batches = []
    if not args.batches or min(args.batches) < 1 or args.repeat < 1:
        print("refiner.py: --batches takes positive integers (e.g. 16,72) and --repeat a positive count",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(args)
    tmp = args.out / "refiner.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "refiner.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
