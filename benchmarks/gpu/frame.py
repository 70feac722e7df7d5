"""Whole frame on the torch backend: a DA-V2-Small-sized coarse model (random weights: every shape
and cost is the real one, the depth is not) + the prv2-mobile refiner at the default bundle's
adaptive grid, at 1080p and 4K, frames handed over as device tensors (nothing crosses to the host).

    python benchmarks/gpu/frame.py OUT_DIR [--work DIR] [--device cuda] [--repeat 10] [--sizes 1080p,4K]
                                   [--upsample bilinear,guided] [--precision fp32,fp16] [--graphs on,off]

Builds the bundle (torch target, fp32, ~100 MB) into --work (default: a temporary folder, removed
after), then times ``Runtime.predict`` per size, upsampling (the default bundle's is guided) and
precision (fp16: the torch backend's default on CUDA) and way of running the models (CUDA graphs,
the backend's way on CUDA, or eager: "... eager"), the variants' repetitions interleaved in random
order:
wall ms min/median after two warm-ups, synchronised (torch.cuda.synchronize) around every frame,
and the runtime's own stage split (medians). Writes OUT_DIR/frame.json. ``--device cpu`` with
``--sizes tiny`` checks the script itself where no GPU is.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {"tiny": (144, 256), "1080p": (1080, 1920), "4K": (2160, 3840)}


def build_models(coarse_input: tuple[int, int]) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Random-init DA-V2-Small (metric head, ``coarse_input`` (h, w)) + prv2-mobile on 128x224 tiles:
    (coarse, refiner, checkpoint meta)."""
    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    coarse = create_coarse("depth-anything-v2-small", input_size=coarse_input, max_depth=80.0).eval()
    rkw = {"width": 0.5, "decoder_width": 0.5}
    refiner = create_refiner("prv2-mobile", coarse, (128, 224), **rkw).eval()
    meta = {"coarse": {"name": coarse.registry_name, "kwargs": coarse.registry_kwargs},
            "refiner": {"name": "prv2-mobile", "kwargs": {"tile_size": [128, 224], **rkw}},
            "camera": {"fx_norm": 0.8}}
    return coarse, refiner, meta


def build_bundle(out: Path, coarse_input: tuple[int, int]) -> Path:
    """:func:`build_models` exported as a torch bundle (fp32 weights, listed for fp16 too), tiled as
    the default bundle is (adaptive grid, capped at its max_side)."""
    from edgedepth.bundle import open_bundle
    from edgedepth.export.exporter import ExportConfig, export_bundle
    from edgedepth.tiling import Tiling

    coarse, refiner, meta = build_models(coarse_input)
    tiling = Tiling.from_json(open_bundle(verify_files=False).tiling)
    cfg = ExportConfig(targets=("torch",), precisions=("fp32", "fp16"), calib="procedural:1", heldout="procedural:1",
                       select="procedural:1", frame_size=(144, 256), tiling=tiling, overwrite=True)
    return Path(export_bundle(coarse, refiner, meta, out, cfg, log=lambda _: None))


def measure(args: argparse.Namespace, sizes: list[str], work: Path) -> int:
    """Builds the bundle in ``work``, times every size, writes OUT_DIR/frame.json."""
    from edgedepth import Runtime

    t0 = time.perf_counter()
    coarse_input = (518, 924) if sizes != ["tiny"] else (56, 98)  # DA-V2 at 1080p: 518 px short side
    bundle = build_bundle(work / "dav2s.edgedepth", coarse_input)
    build_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    runtimes = {}
    for up in args.upsample:
        for p in args.precision:
            for graphs in args.graphs:
                rt = Runtime(bundle, backend="torch", device=args.device, upsample=up, precision=p)
                rt.coarse.cuda_graphs = rt.refiner.cuda_graphs = graphs == "on"
                runtimes[f"{up} {p}" + (" eager" if graphs == "off" and args.device != "cpu" else "")] = rt
    first = next(iter(runtimes.values()))
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "bundle_build_s": build_s, "coarse_input": list(coarse_input),
               "info": {k: v for k, v in first.info().items() if k in ("backend", "device", "precision", "tiling")},
               "sizes": {}}
    rng = np.random.default_rng(0)
    order = np.random.default_rng(1)
    for name in sizes:
        h, w = SIZES[name]
        frame = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).to(args.device)
        for rt in runtimes.values():
            for _ in range(2):
                rt.predict(frame)
        sync()
        wall = {v: [] for v in runtimes}
        stages = {v: [] for v in runtimes}
        for _ in range(args.repeat):
            for v in order.permutation(list(runtimes)):  # interleaved: drift on the machine hits every variant alike
                sync()
                t = time.perf_counter()
                result = runtimes[v].predict(frame)
                sync()
                wall[v].append(1e3 * (time.perf_counter() - t))
                stages[v].append(result.timings)
        grid = result.grid
        entry = {"frame": [h, w], "grid": [grid.rows, grid.cols],
                 "depth_on_device": bool(getattr(result.depth, "is_cuda", False)), "variants": {}}
        for v in runtimes:
            entry["variants"][v] = {
                "ms_min": min(wall[v]), "ms_median": statistics.median(wall[v]),
                "stages_ms_median": {k: statistics.median(s[k] for s in stages[v]) for k in stages[v][0]},
                # whether each model still ran as a CUDA graph (a failed capture falls back to eager)
                "cuda_graphs": {b.role: b.cuda_graphs or b.graph_error or False
                                for b in (runtimes[v].coarse, runtimes[v].refiner)}}
            print(f"{name}, {v}: {grid.rows}x{grid.cols} tiles, {min(wall[v]):.1f} / "
                  f"{statistics.median(wall[v]):.1f} ms min/median", flush=True)
        results["sizes"][name] = entry
    tmp = args.out / "frame.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "frame.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--work", type=Path, help="folder for the bundle (default: a temporary one)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--sizes", default="1080p,4K")
    ap.add_argument("--upsample", default="bilinear,guided",
                    help="upsamplings to time, interleaved (the default bundle's is guided)")
    ap.add_argument("--precision", default=None,
                    help="precisions to time, interleaved (default: fp32,fp16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--graphs", default=None,
                    help="models run as CUDA graphs (the torch backend's way on CUDA) and/or eagerly: "
                         "on,off (default on CUDA), off (the CPU)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("frame.py: no CUDA device visible to torch", file=sys.stderr)
        return 2
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        print(f"frame.py: unknown size(s) {unknown}: choose from {', '.join(SIZES)}", file=sys.stderr)
        return 2
    from edgedepth.tiling import UPSAMPLING

    cuda = args.device.startswith("cuda")
    lists = {"upsample": (args.upsample, UPSAMPLING),
             "precision": (args.precision or ("fp32,fp16" if cuda else "fp32"), ("fp32", "fp16")),
             "graphs": (args.graphs or ("on,off" if cuda else "off"), ("on", "off") if cuda else ("off",))}
    for name, (text, allowed) in lists.items():
        chosen = [c for c in text.split(",") if c]
        if not chosen or any(c not in allowed for c in chosen):
            print(f"frame.py: --{name} takes a list from {', '.join(allowed)} here, got {text!r}", file=sys.stderr)
            return 2
        setattr(args, name, chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        return measure(args, sizes, args.work or Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
