"""Tile-stage benchmark on a 4K frame: native engine vs per-tile torch, numpy reference, copy bandwidth.

4K frame (2160x3840), 4x4 grid, overlap 135 px (25 % of 2160/4): crop the RGB frame to
16x3x448x448 (normalised), crop the coarse depth (1x392x518) and six coarse feature maps, stitch
16 depth tiles back to 2160x3840. Every figure is measured in this run:
  (a) a per-tile torch implementation in the research-code style (F.interpolate per tile, running
      weighted sum + weight map), with as many torch threads as the engine gets;
  (b) the numpy reference (one run; it is slow);
  (c) achieved bytes/s (input array bytes + output bytes per op) against np.copyto of 256 MiB
      (bytes read + written), the machine's plain-copy bandwidth.
With a GPU and edgedepth._native_cuda, the same against torch on CUDA and a device tensor copy.

    python benchmarks/bench_tiling.py [--threads N] [--repeat 5] [--out out/bench_tiling]

Writes figures.json and chart.png (speed-ups over the torch baseline) to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgedepth import native, tiling
from edgedepth import tiling_reference as ref
from edgedepth.tiling import TileGrid

from charts import bar_chart  # benchmarks/charts.py (the script's folder is on sys.path)

FRAME = (2160, 3840)
COARSE = (392, 518)
TILE = (448, 448)
# (channels, stride) of six coarse feature maps; each is cropped to TILE / stride.
FEATURES = [(32, 2), (48, 4), (64, 8), (96, 16), (128, 32), (160, 32)]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timeit(fn: Callable[[], object], repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median seconds of `repeat` runs after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_inputs(rng: np.random.Generator) -> dict:
    ch, cw = COARSE
    return {
        "rgb": rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 80, (1, ch, cw)).astype(np.float32),
        "feats": [rng.standard_normal((c, -(-ch // s), -(-cw // s))).astype(np.float32) for c, s in FEATURES],
        "tiles": rng.uniform(0.5, 80, (16, 1, *TILE)).astype(np.float32),
    }


# ---------------------------------------------------------------- the three implementations

def engine_ops(x: dict, grid: TileGrid, crop=tiling.crop_resize, stitch=tiling.stitch) -> dict[str, Callable]:
    H, W = FRAME
    sy, sx = COARSE[0] / H, COARSE[1] / W

    def feats():
        return [crop(f, grid.scaled(f.shape[1] / H, f.shape[2] / W), (TILE[0] // s, TILE[1] // s))
                for f, (_, s) in zip(x["feats"], FEATURES)]

    return {
        "crop_rgb": lambda: crop(x["rgb"], grid.boxes, TILE, mean=MEAN, std=STD),
        "crop_depth": lambda: crop(x["depth"], grid.scaled(sy, sx), TILE),
        "crop_features": feats,
        "stitch": lambda: stitch(x["tiles"], grid.boxes, H, W, "cosine"),
    }


def reference_ops(x: dict, grid: TileGrid) -> dict[str, Callable]:
    def crop(src, boxes, size, mean=None, std=None):
        if mean is not None:
            mean, std = np.asarray(mean), np.asarray(std)
        return ref.crop_resize(src, boxes, size, mean=mean, std=std)

    return engine_ops(x, grid, crop=crop, stitch=ref.stitch)


def torch_ops(x: dict, grid: TileGrid, device: torch.device) -> dict[str, Callable]:
    """Research-code style: integer boxes, one F.interpolate per tile, running weighted sum."""
    H, W = FRAME
    rgb = torch.from_numpy(x["rgb"]).to(device)
    depth = torch.from_numpy(x["depth"]).to(device)
    feats = [torch.from_numpy(f).to(device) for f in x["feats"]]
    tiles = torch.from_numpy(x["tiles"]).to(device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    boxes = grid.boxes.astype(int)
    win = torch.from_numpy(tiling.window(grid.tile_h, grid.tile_w, "cosine")).to(device)

    def crop_map(src, sy, sx, size):
        out = []
        for y0, x0, h, w in boxes:
            ya, xa = int(round(y0 * sy)), int(round(x0 * sx))
            yb, xb = max(ya + 1, int(round((y0 + h) * sy))), max(xa + 1, int(round((x0 + w) * sx)))
            out.append(F.interpolate(src[None, :, ya:yb, xa:xb], size=size, mode="bilinear", align_corners=False))
        return torch.cat(out)

    def crop_rgb():
        img = (rgb.permute(2, 0, 1)[None].float() / 255.0 - mean) / std
        return torch.cat([F.interpolate(img[:, :, y0:y0 + h, x0:x0 + w], size=TILE, mode="bilinear",
                                        align_corners=False) for y0, x0, h, w in boxes])

    def stitch():
        acc = torch.zeros(1, 1, H, W, device=device)
        weight = torch.zeros(1, 1, H, W, device=device)
        for t, (y0, x0, h, w) in zip(tiles, boxes):
            up = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)
            acc[..., y0:y0 + h, x0:x0 + w] += up * win
            weight[..., y0:y0 + h, x0:x0 + w] += win
        return acc / weight

    return {
        "crop_rgb": crop_rgb,
        "crop_depth": lambda: crop_map(depth, COARSE[0] / H, COARSE[1] / W, TILE),
        "crop_features": lambda: [crop_map(f, f.shape[1] / H, f.shape[2] / W, (TILE[0] // s, TILE[1] // s))
                                  for f, (_, s) in zip(feats, FEATURES)],
        "stitch": stitch,
    }


def moved_bytes(x: dict, grid: TileGrid) -> dict[str, int]:
    """Input array bytes + output bytes of each op (what a copy of the same data would move)."""
    n = len(grid)
    out_feats = sum(n * c * (TILE[0] // s) * (TILE[1] // s) * 4 for c, s in FEATURES)
    return {
        "crop_rgb": x["rgb"].nbytes + n * 3 * TILE[0] * TILE[1] * 4,
        "crop_depth": x["depth"].nbytes + n * TILE[0] * TILE[1] * 4,
        "crop_features": sum(f.nbytes for f in x["feats"]) + out_feats,
        "stitch": x["tiles"].nbytes + FRAME[0] * FRAME[1] * 4,
    }


def copy_bandwidth(repeat: int) -> float:
    """Bytes/s of np.copyto on 256 MiB (read + write counted)."""
    a = np.ones(64 << 20, dtype=np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / timeit(lambda: np.copyto(b, a), repeat)


# ---------------------------------------------------------------- runs

def run_cpu(x: dict, grid: TileGrid, threads: int, repeat: int, with_reference: bool) -> dict:
    tiling.set_num_threads(threads)
    torch.set_num_threads(threads)
    eng, tor = engine_ops(x, grid), torch_ops(x, grid, torch.device("cpu"))
    refs = reference_ops(x, grid) if with_reference else {}
    bw = copy_bandwidth(repeat)
    nbytes = moved_bytes(x, grid)
    rows = {}
    for name in eng:
        t_eng, t_torch = timeit(eng[name], repeat), timeit(tor[name], repeat)
        row = {"engine_ms": 1e3 * t_eng, "torch_ms": 1e3 * t_torch, "vs_torch": t_torch / t_eng,
               "GBps": nbytes[name] / t_eng / 1e9, "of_copy_bw": nbytes[name] / t_eng / bw}
        if name in refs:
            t0 = time.perf_counter()
            refs[name]()
            t_ref = time.perf_counter() - t0
            row.update(reference_ms=1e3 * t_ref, vs_reference=t_ref / t_eng)
        rows[name] = row
    return {"threads": threads, "copy_GBps": bw / 1e9, "ops": rows, "engine": "native" if native.cpu else "numpy"}


def run_cuda(x: dict, grid: TileGrid, repeat: int) -> dict:
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    xd = {"rgb": torch.from_numpy(x["rgb"]).to(dev), "depth": torch.from_numpy(x["depth"]).to(dev),
          "feats": [torch.from_numpy(f).to(dev) for f in x["feats"]], "tiles": torch.from_numpy(x["tiles"]).to(dev)}

    def crop(src, boxes, size, **kw):
        return tiling.crop_resize(src, boxes, size, **kw)

    eng = engine_ops(xd, grid, crop=crop)
    # engine_ops reads shapes via .shape, which device tensors provide.
    tor = torch_ops(x, grid, dev)
    a = torch.empty(64 << 20, device=dev)
    b = torch.empty_like(a)
    bw = 2 * a.numel() * 4 / timeit(lambda: b.copy_(a), repeat, sync)
    nbytes = moved_bytes(x, grid)
    rows, total = {}, 0.0
    for name in eng:
        t_eng, t_torch = timeit(eng[name], repeat, sync), timeit(tor[name], repeat, sync)
        total += t_eng
        rows[name] = {"engine_ms": 1e3 * t_eng, "torch_ms": 1e3 * t_torch, "vs_torch": t_torch / t_eng,
                      "GBps": nbytes[name] / t_eng / 1e9, "of_copy_bw": nbytes[name] / t_eng / bw}
    return {"device": torch.cuda.get_device_name(), "copy_GBps": bw / 1e9, "ops": rows, "tile_stage_ms": 1e3 * total}


def print_table(title: str, res: dict) -> None:
    print(f"\n{title}  (copy bandwidth {res['copy_GBps']:.1f} GB/s)")
    print(f"{'op':15s} {'engine ms':>10s} {'torch ms':>10s} {'x torch':>8s} {'ref ms':>10s} {'x ref':>8s} {'GB/s':>7s} {'of copy':>8s}")
    for name, r in res["ops"].items():
        ref_ms = f"{r['reference_ms']:10.1f}" if "reference_ms" in r else f"{'-':>10s}"
        x_ref = f"{r['vs_reference']:8.1f}" if "vs_reference" in r else f"{'-':>8s}"
        print(f"{name:15s} {r['engine_ms']:10.2f} {r['torch_ms']:10.2f} {r['vs_torch']:8.1f} {ref_ms} {x_ref} "
              f"{r['GBps']:7.2f} {r['of_copy_bw']:8.0%}")


def write_chart(path: Path, results: dict) -> None:
    """Bar chart of speed-up over the torch baseline per op."""
    bars = [(f"{run}:{op}", r["vs_torch"], f"{r['vs_torch']:.1f}x") for run in ("cpu", "cuda") if run in results
            for op, r in results[run]["ops"].items()]
    bar_chart(path, "edgedepth tile engine: speed-up over per-tile torch (same run)", bars)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=tiling.get_num_threads())
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) numpy reference")
    p.add_argument("--out", type=Path, default=Path("out/bench_tiling"))
    args = p.parse_args()

    grid = TileGrid(*FRAME, 4, 4, round(0.25 * FRAME[0] / 4))
    print(f"frame {FRAME[0]}x{FRAME[1]}, {grid.rows}x{grid.cols} tiles of {grid.tile_h}x{grid.tile_w} "
          f"(overlap {grid.overlap}), crops to {TILE}, engine: {native.native_status()}")
    x = make_inputs(np.random.default_rng(0))
    results = {"cpu": run_cpu(x, grid, args.threads, args.repeat, not args.no_reference)}
    print_table(f"CPU, {args.threads} threads", results["cpu"])
    if torch.cuda.is_available() and native.cuda is not None:
        results["cuda"] = run_cuda(x, grid, args.repeat)
        print_table(f"CUDA {results['cuda']['device']}", results["cuda"])
        print(f"CUDA whole tile stage: {results['cuda']['tile_stage_ms']:.3f} ms")
    else:
        print("\nCUDA: skipped (no GPU or no edgedepth._native_cuda)")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "figures.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "figures.json")
    write_chart(args.out / "chart.png", results)
    print(f"\nwrote {args.out / 'figures.json'} and {args.out / 'chart.png'}")


if __name__ == "__main__":
    main()
