"""Whole frame on the torch backend: a DA-V2-Small-sized coarse model (random weights: every shape
and cost is the real one, the depth is not) + the prv2-mobile refiner at the default bundle's
adaptive grid, at 1080p and 4K, frames handed over as device tensors (nothing crosses to the host).

    python benchmarks/gpu/frame.py OUT_DIR [--work DIR] [--device cuda] [--repeat 10] [--sizes 1080p,4K]

Builds the bundle (torch target, fp32, ~100 MB) into --work (default: a temporary folder, removed
after), then times ``Runtime.predict`` per size:
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


def build_bundle(out: Path, coarse_input: tuple[int, int]) -> Path:
    """Random-init DA-V2-Small (metric head) + prv2-mobile exported as a torch bundle (fp32)."""
    from edgedepth.export.exporter import ExportConfig, export_bundle
    from edgedepth.tiling import Tiling
    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    coarse = create_coarse("depth-anything-v2-small", input_size=coarse_input, max_depth=80.0).eval()
    rkw = {"width": 0.5, "decoder_width": 0.5}
    refiner = create_refiner("prv2-mobile", coarse, (128, 224), **rkw).eval()
    meta = {"coarse": {"name": coarse.registry_name, "kwargs": coarse.registry_kwargs},
            "refiner": {"name": "prv2-mobile", "kwargs": {"tile_size": [128, 224], **rkw}},
            "camera": {"fx_norm": 0.8}}
    cfg = ExportConfig(targets=("torch",), precisions=("fp32",), calib="procedural:1", heldout="procedural:1",
                       select="procedural:1", frame_size=(144, 256),
                       tiling=Tiling(4, 4, 0.25, "cosine", shrink=2.4), overwrite=True)
    return Path(export_bundle(coarse, refiner, meta, out, cfg, log=lambda _: None))


def measure(args: argparse.Namespace, sizes: list[str], work: Path) -> int:
    """Builds the bundle in ``work``, times every size, writes OUT_DIR/frame.json."""
    from edgedepth import Runtime

    t0 = time.perf_counter()
    coarse_input = (518, 924) if sizes != ["tiny"] else (56, 98)  # DA-V2 at 1080p: 518 px short side
    bundle = build_bundle(work / "dav2s.edgedepth", coarse_input)
    build_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    rt = Runtime(bundle, backend="torch", device=args.device)
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "bundle_build_s": build_s, "coarse_input": list(coarse_input),
               "info": {k: v for k, v in rt.info().items() if k in ("backend", "device", "precision", "tiling")},
               "sizes": {}}
    rng = np.random.default_rng(0)
    for name in sizes:
        h, w = SIZES[name]
        frame = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).to(args.device)
        for _ in range(2):
            rt.predict(frame)
        sync()
        wall, stages = [], []
        for _ in range(args.repeat):
            sync()
            t = time.perf_counter()
            result = rt.predict(frame)
            sync()
            wall.append(1e3 * (time.perf_counter() - t))
            stages.append(result.timings)
        grid = result.grid
        results["sizes"][name] = {
            "frame": [h, w], "grid": [grid.rows, grid.cols], "ms_min": min(wall), "ms_median": statistics.median(wall),
            "stages_ms_median": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
            "depth_on_device": bool(getattr(result.depth, "is_cuda", False)),
        }
        print(f"{name}: {grid.rows}x{grid.cols} tiles, {min(wall):.1f} / {statistics.median(wall):.1f} ms min/median",
              flush=True)
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
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("frame.py: no CUDA device visible to torch", file=sys.stderr)
        return 2
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        print(f"frame.py: unknown size(s) {unknown}: choose from {', '.join(SIZES)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        return measure(args, sizes, args.work or Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
