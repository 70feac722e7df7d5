"""Tile-stage benchmark on a 4K frame: the native engine against competent baselines, measured honestly.

4K frame (2160x3840), 4x4 grid, overlap 135 px (25 % of 2160/4): crop the RGB frame to
16x3x448x448 (normalised), crop the coarse depth (1x392x518) and six coarse feature maps, stitch
16 depth tiles back to 2160x3840.

How it is measured (issue 12): every implementation gets the same thread count; repetitions are
interleaved in a random order (one shuffled pass over all cases per repetition), so a noisy
neighbour hits every case alike; each case is reported as min and median of
  * single-thread CPU time (``time.thread_time()``, everything set to 1 thread: the engine, torch,
    OpenCV run the work on the calling thread; the cpu/wall ratio is recorded as the check), and
  * 2-thread wall time (``--threads``).
The engine crops and stitches into outputs allocated once (``out=``), and the baselines, with
every allocation a competent implementation would hoist, are done once outside the timed call:
  * ``torch_loop``: per-tile ``F.interpolate`` into a preallocated output; the stitch is a
    MONAI-style preallocated accumulator with the window weights summed once per grid (the
    inverse weight map is a grid constant);
  * ``monai``: MONAI's own ``sliding_window_inference`` (gaussian importance map, 16 windows of the
    same size as our boxes; its predictor resizes our tile to the window, the same resize the
    stitch does). Its accumulators are allocated inside the call (MONAI's API), and it also slices
    each window out of a frame-sized input;
  * ``patchfusion_m2``: PatchFusion's m2/rN running-average path (a full-canvas
    ``(pred + count * avg) / (count + ct)`` per tile, canvases reused): a DIFFERENT ALGORITHM with
    a different cost model, listed for what research code does, not as a like-for-like baseline;
  * ``opencv``: ``cv2.resize`` INTER_LINEAR per box on the uint8 frame + normalise to CHW float32
    into a preallocated output (crop_rgb);
  * ``np.copyto`` bandwidth of 256 MiB (1 thread; and two threads copying halves).

    python benchmarks/bench_tiling.py [--threads 2] [--repeat 7] [--out out/bench_tiling]
    python benchmarks/bench_tiling.py --device cuda ...   # engine vs torch on CUDA vs a D2D copy

Writes figures.json and chart.png to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgedepth import native, tiling
from edgedepth.tiling import TileGrid

import bench_runtime  # benchmarks/ (the script's folder is on sys.path)
from charts import bar_chart
from timing import min_median, time_interleaved

FRAME = (2160, 3840)
COARSE = (392, 518)
TILE = (448, 448)
# (channels, stride) of six coarse feature maps; each is cropped to TILE / stride.
FEATURES = [(32, 2), (48, 4), (64, 8), (96, 16), (128, 32), (160, 32)]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COPY_BYTES = 256 << 20
Case = Callable[[], object]


def make_inputs(rng: np.random.Generator) -> dict:
    """Random 4K RGB frame, coarse depth (1, 392, 518), six feature maps and 16 depth tiles (float32)."""
    ch, cw = COARSE
    return {
        "rgb": rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 80, (1, ch, cw)).astype(np.float32),
        "feats": [rng.standard_normal((c, -(-ch // s), -(-cw // s))).astype(np.float32) for c, s in FEATURES],
        "tiles": rng.uniform(0.5, 80, (16, 1, *TILE)).astype(np.float32),
    }


# ---------------------------------------------------------------- implementations

def engine_cases(x: dict, grid: TileGrid) -> dict[str, Case]:
    """The tile engine (`edgedepth.tiling`): numpy in (CPU engine) or torch CUDA tensors in (CUDA engine)."""
    H, W = FRAME
    sy, sx = COARSE[0] / H, COARSE[1] / W
    feat_boxes = [grid.scaled(f.shape[1] / H, f.shape[2] / W) for f in x["feats"]]
    crop, depth_boxes = tiling.crop_resize, grid.scaled(sy, sx)
    if not isinstance(x["rgb"], np.ndarray):  # CUDA tensors: the engine allocates on the device
        return {
            "crop_rgb": lambda: crop(x["rgb"], grid.boxes, TILE, mean=MEAN, std=STD),
            "crop_depth": lambda: crop(x["depth"], depth_boxes, TILE),
            "crop_features": lambda: [crop(f, b, (TILE[0] // s, TILE[1] // s))
                                      for f, b, (_, s) in zip(x["feats"], feat_boxes, FEATURES)],
            "stitch": lambda: tiling.stitch(x["tiles"], grid.boxes, H, W, "cosine"),
        }
    # Outputs allocated once, as the baselines' are (a 38 MB array allocated per call pays ~5 ms of
    # fresh pages: it is above glibc's 32 MiB mmap threshold).
    n = len(grid.boxes)
    rgb_out, depth_out = np.empty((n, 3, *TILE), np.float32), np.empty((n, 1, *TILE), np.float32)
    feat_out = [np.empty((n, c, TILE[0] // s, TILE[1] // s), np.float32) for c, s in FEATURES]
    stitch_out = np.empty((1, H, W), np.float32)
    return {
        "crop_rgb": lambda: crop(x["rgb"], grid.boxes, TILE, mean=MEAN, std=STD, out=rgb_out),
        "crop_depth": lambda: crop(x["depth"], depth_boxes, TILE, out=depth_out),
        "crop_features": lambda: [crop(f, b, (TILE[0] // s, TILE[1] // s), out=o)
                                  for f, b, (_, s), o in zip(x["feats"], feat_boxes, FEATURES, feat_out)],
        "stitch": lambda: tiling.stitch(x["tiles"], grid.boxes, H, W, "cosine", out=stitch_out),
    }


def _int_box(box: np.ndarray, sy: float, sx: float) -> tuple[int, int, int, int]:
    """A box scaled to a map and rounded to whole pixels (at least one), as research code crops."""
    y0, x0, h, w = box
    ya, xa = int(round(y0 * sy)), int(round(x0 * sx))
    return ya, xa, max(ya + 1, int(round((y0 + h) * sy))), max(xa + 1, int(round((x0 + w) * sx)))


def torch_loop_cases(x: dict, grid: TileGrid, device: torch.device) -> dict[str, Case]:
    """Per-tile torch, competently written: outputs, accumulator and the inverse weight map allocated once."""
    H, W = FRAME
    n = len(grid)
    rgb = torch.from_numpy(x["rgb"]).to(device).permute(2, 0, 1)  # (3, H, W) uint8 view
    depth = torch.from_numpy(x["depth"]).to(device)
    feats = [torch.from_numpy(f).to(device) for f in x["feats"]]
    tiles = torch.from_numpy(x["tiles"]).to(device)
    scale = (1.0 / (255.0 * torch.tensor(STD, device=device))).view(3, 1, 1)
    bias = (-torch.tensor(MEAN, device=device) / torch.tensor(STD, device=device)).view(3, 1, 1)
    boxes = [_int_box(b, 1.0, 1.0) for b in grid.boxes]
    win = torch.from_numpy(tiling.window(grid.tile_h, grid.tile_w, "cosine")).to(device)
    inv_weight = torch.zeros(H, W, device=device)
    for ya, xa, yb, xb in boxes:
        inv_weight[ya:yb, xa:xb] += win
    inv_weight.reciprocal_()
    acc = torch.empty(1, H, W, device=device)
    rgb_out = torch.empty(n, 3, *TILE, device=device)
    depth_out = torch.empty(n, 1, *TILE, device=device)
    feat_out = [torch.empty(n, c, TILE[0] // s, TILE[1] // s, device=device) for c, s in FEATURES]

    def crop_map(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        sy, sx = src.shape[1] / H, src.shape[2] / W
        for i, box in enumerate(grid.boxes):
            ya, xa, yb, xb = _int_box(box, sy, sx)
            out[i] = F.interpolate(src[None, :, ya:yb, xa:xb], size=out.shape[2:], mode="bilinear",
                                   align_corners=False)[0]
        return out

    def crop_rgb() -> torch.Tensor:
        for i, (ya, xa, yb, xb) in enumerate(boxes):
            up = F.interpolate(rgb[None, :, ya:yb, xa:xb].float(), size=TILE, mode="bilinear", align_corners=False)
            torch.addcmul(bias, up[0], scale, out=rgb_out[i])
        return rgb_out

    def stitch() -> torch.Tensor:
        acc.zero_()
        for t, (ya, xa, yb, xb) in zip(tiles, boxes):
            up = F.interpolate(t[None], size=(yb - ya, xb - xa), mode="bilinear", align_corners=False)[0]
            acc[:, ya:yb, xa:xb].addcmul_(up, win)
        return acc.mul_(inv_weight)

    return {
        "crop_rgb": crop_rgb,
        "crop_depth": lambda: crop_map(depth, depth_out),
        "crop_features": lambda: [crop_map(f, o) for f, o in zip(feats, feat_out)],
        "stitch": stitch,
    }


def monai_stitch_case(x: dict, grid: TileGrid) -> Case | None:
    """MONAI ``sliding_window_inference`` (gaussian) over a 4x4 scan of windows the size of our boxes;
    None without monai."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return None
    H, W = FRAME
    roi = (grid.tile_h, grid.tile_w)
    # Overlaps that make MONAI's scan (interval = int(roi * (1 - overlap))) cut the same 4x4 windows.
    overlap = []
    for size, side, count in ((H, roi[0], grid.rows), (W, roi[1], grid.cols)):
        interval = -(-(size - side) // (count - 1))
        overlap.append(1.0 - (interval + 0.5) / side)
    frame = torch.zeros(1, 1, H, W)
    tiles = torch.from_numpy(x["tiles"])
    calls = []

    def predictor(window: torch.Tensor) -> torch.Tensor:
        i = len(calls)
        calls.append(i)
        return F.interpolate(tiles[i:i + 1], size=roi, mode="bilinear", align_corners=False)

    def run() -> torch.Tensor:
        calls.clear()
        out = sliding_window_inference(frame, roi, 1, predictor, overlap=overlap, mode="gaussian")
        if len(calls) != len(grid):
            raise RuntimeError(f"MONAI cut {len(calls)} windows, not the {len(grid)} of the grid")
        return out

    return run


def patchfusion_m2_case(x: dict, grid: TileGrid) -> Case:
    """PatchFusion's m2/rN fusion: a full-canvas running average updated once per tile (another algorithm)."""
    H, W = FRAME
    tiles = torch.from_numpy(x["tiles"])
    boxes = [_int_box(b, 1.0, 1.0) for b in grid.boxes]
    pred_map, ct_map = torch.empty(H, W), torch.empty(H, W)
    # PatchFusion starts the running average from the whole-image prediction with a count of one.
    start = F.interpolate(torch.from_numpy(x["depth"])[None], size=FRAME, mode="bilinear", align_corners=False)[0, 0]

    def run() -> torch.Tensor:
        avg, count = start, torch.ones(H, W)
        for t, (ya, xa, yb, xb) in zip(tiles, boxes):
            up = F.interpolate(t[None], size=(yb - ya, xb - xa), mode="bilinear", align_corners=False)[0, 0]
            pred_map.zero_()
            ct_map.zero_()
            pred_map[ya:yb, xa:xb] = up
            ct_map[ya:yb, xa:xb] = 1.0
            avg = (pred_map + count * avg) / (count + ct_map)  # RunningAverageMap.update
            count = count + ct_map
        return avg

    return run


def opencv_crop_case(x: dict, grid: TileGrid) -> Case | None:
    """cv2.resize INTER_LINEAR of each uint8 box + normalise into a preallocated (N, 3, 448, 448) float32."""
    try:
        import cv2
    except ImportError:
        return None
    out = np.empty((len(grid), 3, *TILE), dtype=np.float32)
    scale = (1.0 / (255.0 * np.asarray(STD, dtype=np.float32)))[:, None, None]
    bias = (-np.asarray(MEAN, dtype=np.float32) / np.asarray(STD, dtype=np.float32))[:, None, None]
    boxes = [_int_box(b, 1.0, 1.0) for b in grid.boxes]
    rgb = x["rgb"]

    def run() -> np.ndarray:
        for i, (ya, xa, yb, xb) in enumerate(boxes):
            r = cv2.resize(rgb[ya:yb, xa:xb], TILE[::-1], interpolation=cv2.INTER_LINEAR)
            np.multiply(r.transpose(2, 0, 1), scale, out=out[i])
            out[i] += bias
        return out

    return run


def copy_cases(threads: int) -> dict[str, Case]:
    """np.copyto of 256 MiB on one thread, and split over `threads` Python threads (numpy drops the GIL)."""
    a = np.ones(COPY_BYTES // 4, dtype=np.float32)
    b = np.empty_like(a)
    cases = {"copy_1t": lambda: np.copyto(b, a)}
    if threads > 1:
        parts = np.array_split(np.arange(a.size), threads)
        bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]

        def split_copy() -> None:
            workers = [threading.Thread(target=np.copyto, args=(b[lo:hi], a[lo:hi])) for lo, hi in bounds[1:]]
            for t in workers:
                t.start()
            np.copyto(b[bounds[0][0]:bounds[0][1]], a[bounds[0][0]:bounds[0][1]])
            for t in workers:
                t.join()

        cases[f"copy_{threads}t"] = split_copy
    return cases


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


# ---------------------------------------------------------------- timing

def set_threads(n: int) -> None:
    """The same thread count for every implementation (OpenCV: 0 = run on the calling thread)."""
    tiling.set_num_threads(n)
    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(0 if n == 1 else n)
    except ImportError:
        pass


def measure(cases: dict[str, Case], repeat: int, seed: int,
            sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """timing.time_interleaved over the cases; per case wall_ms_min/median and cpu_ms_min/median
    (this thread's CPU time)."""
    return {k: {f"{clock}_ms_{stat}": v for clock in ("wall", "cpu") for stat, v in min_median(t[clock]).items()}
            for k, t in time_interleaved(cases, repeat, seed, sync).items()}


def cpu_cases(x: dict, grid: TileGrid, threads: int) -> dict[str, Case]:
    """Every CPU case, keyed "op:implementation" (copies as "copy:copy_Nt")."""
    cases = {f"{op}:engine": fn for op, fn in engine_cases(x, grid).items()}
    cases.update({f"{op}:torch_loop": fn for op, fn in torch_loop_cases(x, grid, torch.device("cpu")).items()})
    extra = {"stitch:monai": monai_stitch_case(x, grid), "stitch:patchfusion_m2": patchfusion_m2_case(x, grid),
             "crop_rgb:opencv": opencv_crop_case(x, grid)}
    cases.update({k: fn for k, fn in extra.items() if fn is not None})
    cases.update(half_precision_cases(x, grid))
    cases.update({f"copy:{k}": fn for k, fn in copy_cases(threads).items()})
    return cases


def half_precision_cases(x: dict, grid: TileGrid) -> dict[str, Case]:
    """The engine on float16: RGB crops written as float16 (a float16 model's input) and float16 tiles
    stitched (its output), listed beside the engine's float32 rows as "engine_fp16" (ratio ~1: the
    conversions are F16C instructions, not the integer code that made them 1.5-1.8x slower)."""
    H, W = FRAME
    rgb_out = np.empty((len(grid.boxes), 3, *TILE), np.float16)
    tiles = x["tiles"].astype(np.float16)
    stitch_out = np.empty((1, H, W), np.float32)
    return {
        "crop_rgb:engine_fp16": lambda: tiling.crop_resize(x["rgb"], grid.boxes, TILE, mean=MEAN, std=STD,
                                                           dtype=np.float16, out=rgb_out),
        "stitch:engine_fp16": lambda: tiling.stitch(tiles, grid.boxes, H, W, "cosine", out=stitch_out),
    }


def check_same_result(x: dict, grid: TileGrid) -> dict[str, float]:
    """Max |engine - torch_loop| of the stitch (m): the baseline does the same job (its integer boxes
    match the 4K grid's; window and resize may differ in the last bits)."""
    eng = engine_cases(x, grid)["stitch"]()
    tor = torch_loop_cases(x, grid, torch.device("cpu"))["stitch"]().numpy()
    return {"stitch_max_abs_diff_m": float(np.abs(eng - tor).max())}


def summarise(single: dict, multi: dict, x: dict, grid: TileGrid, threads: int) -> dict:
    """Ratios baseline / engine per op (1-thread CPU min and median, N-thread wall min and median)
    and the engine's achieved bandwidth against np.copyto."""
    nbytes = moved_bytes(x, grid)
    # One thread: CPU time on both sides (robust to a busy machine); N threads: wall time.
    copy_1t = 2 * COPY_BYTES / (single["copy:copy_1t"]["cpu_ms_min"] / 1e3)
    copy_nt = 2 * COPY_BYTES / (multi.get(f"copy:copy_{threads}t", multi["copy:copy_1t"])["wall_ms_min"] / 1e3)
    out: dict = {"copy_GBps_1t": copy_1t / 1e9, f"copy_GBps_{threads}t": copy_nt / 1e9, "ops": {}}
    for op in nbytes:
        e1, en = single[f"{op}:engine"], multi[f"{op}:engine"]
        row = {"engine_GBps_1t": nbytes[op] / (e1["cpu_ms_min"] / 1e3) / 1e9,
               "engine_of_copy_1t": nbytes[op] / (e1["cpu_ms_min"] / 1e3) / copy_1t,
               f"engine_of_copy_{threads}t": nbytes[op] / (en["wall_ms_min"] / 1e3) / copy_nt, "vs": {}}
        for key in single:
            base_op, impl = key.split(":")
            if base_op != op or impl == "engine":
                continue
            b1, bn = single[key], multi[key]
            row["vs"][impl] = {
                "cpu_1t_min": b1["cpu_ms_min"] / e1["cpu_ms_min"],
                "cpu_1t_median": b1["cpu_ms_median"] / e1["cpu_ms_median"],
                f"wall_{threads}t_min": bn["wall_ms_min"] / en["wall_ms_min"],
                f"wall_{threads}t_median": bn["wall_ms_median"] / en["wall_ms_median"],
            }
        out["ops"][op] = row
    return out


def machine() -> dict:
    """What the figures were measured on (bench_runtime.machine: CPU, cores, load, date) and with what."""
    versions = {"torch": torch.__version__, "numpy": np.__version__}
    for name in ("cv2", "monai"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {**bench_runtime.machine(), "usable_cores": tiling.available_cores(),
            "engine": "native" if native.cpu is not None else "numpy reference", "versions": versions}


def run_cpu(x: dict, grid: TileGrid, threads: int, repeat: int, seed: int) -> dict:
    set_threads(1)
    single = measure(cpu_cases(x, grid, 1), repeat, seed)
    set_threads(threads)
    multi = measure(cpu_cases(x, grid, threads), repeat, seed + 1)
    # Single-thread CPU time only counts if the work ran on the calling thread.
    cpu_over_wall = {k: v["cpu_ms_median"] / v["wall_ms_median"] for k, v in single.items()}
    return {"threads": threads, "repeat": repeat, "single_thread": single, f"threads_{threads}": multi,
            "single_thread_cpu_over_wall": cpu_over_wall, "check": check_same_result(x, grid),
            "summary": summarise(single, multi, x, grid, threads)}


def run_cuda(x: dict, grid: TileGrid, repeat: int, seed: int) -> dict:
    """CUDA engine vs per-tile torch on CUDA vs a 256 MiB device-to-device copy (wall ms, synchronised)."""
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    xd = {"rgb": torch.from_numpy(x["rgb"]).to(dev), "depth": torch.from_numpy(x["depth"]).to(dev),
          "feats": [torch.from_numpy(f).to(dev) for f in x["feats"]], "tiles": torch.from_numpy(x["tiles"]).to(dev)}
    a = torch.empty(COPY_BYTES // 4, device=dev)
    b = torch.empty_like(a)
    cases = {f"{op}:engine": fn for op, fn in engine_cases(xd, grid).items()}
    # The coarse depth and the six feature maps in one call, as the runtime cuts them on a GPU.
    (H, W), maps = FRAME, [xd["depth"], *xd["feats"]]
    map_boxes = [grid.scaled(m.shape[1] / H, m.shape[2] / W) for m in maps]
    map_sizes = [TILE] + [(TILE[0] // s, TILE[1] // s) for _, s in FEATURES]
    cases["crop_maps:engine"] = lambda: tiling.crop_resize_maps(maps, map_boxes, map_sizes)
    cases.update({f"{op}:torch_loop": fn for op, fn in torch_loop_cases(x, grid, dev).items()})
    cases["copy:d2d"] = lambda: b.copy_(a)
    cases.update(joint_cases(x, grid, dev))
    res = measure(cases, repeat, seed, sync)
    copy_bps = 2 * COPY_BYTES / (res["copy:d2d"]["wall_ms_min"] / 1e3)
    nbytes = moved_bytes(x, grid)
    ops = {op: {"engine_ms_min": res[f"{op}:engine"]["wall_ms_min"],
                "torch_loop_over_engine_min": res[f"{op}:torch_loop"]["wall_ms_min"] / res[f"{op}:engine"]["wall_ms_min"],
                "engine_of_copy": nbytes[op] / (res[f"{op}:engine"]["wall_ms_min"] / 1e3) / copy_bps}
           for op in nbytes}
    upsampling = {kind: {"engine_ms_min": res[f"{kind}:engine"]["wall_ms_min"],
                         "torch_ops_over_engine_min": res[f"{kind}:torch_ops"]["wall_ms_min"]
                         / res[f"{kind}:engine"]["wall_ms_min"]} for kind in ("joint", "guided")}
    one_call = (ops["crop_rgb"]["engine_ms_min"] + res["crop_maps:engine"]["wall_ms_min"]
                + ops["stitch"]["engine_ms_min"])
    return {"device": torch.cuda.get_device_name(), "repeat": repeat, "cases": res, "copy_GBps": copy_bps / 1e9,
            "ops": ops, "tile_stage_ms_min": sum(r["engine_ms_min"] for r in ops.values()),
            "tile_stage_maps_in_one_call_ms_min": one_call, **upsampling}


def joint_cases(x: dict, grid: TileGrid, dev: torch.device) -> dict[str, Case]:
    """The joint bilateral and the guided-filter upsampling, each with its finish, of a 4K frame from
    the runtime's 431x810 map on CUDA: the engine's kernels vs the torch ops the GPU backend ran
    before them (tiling_torch + its finish)."""
    from edgedepth import tiling_torch
    from edgedepth.runtime import _TorchOps

    H, W = FRAME
    low = torch.from_numpy(tiling.stitch(x["tiles"], grid.scaled(431 / H, 810 / W), 431, 810)[0]).to(dev)
    rgb = torch.from_numpy(x["rgb"]).to(dev)
    guide = tiling.crop_resize(rgb, [[0.0, 0.0, H, W]], (431, 810))[0]
    torch_ops = _TorchOps("cuda")
    torch_ops.impl = tiling_torch  # the GPU backend without its CUDA kernels

    def by_torch_ops():
        return torch_ops.finish(tiling_torch.joint_upsample(low, guide, rgb, 0.05), 1.0, owned=True, valid_max=80.0)

    def guided_by_torch_ops():
        return torch_ops.finish(tiling_torch.guided_upsample(low, guide, rgb, 2, 3, 1e-5), 1.0, owned=True,
                                valid_max=80.0)

    return {"joint:engine": lambda: tiling.joint_upsample(low, guide, rgb, 0.05, 1.0, 80.0),
            "joint:torch_ops": by_torch_ops,
            "guided:engine": lambda: tiling.guided_upsample(low, guide, rgb, 2, 3, 1e-5, 1.0, 80.0),
            "guided:torch_ops": guided_by_torch_ops}


def print_cases(title: str, res: dict) -> None:
    print(f"\n{title}")
    print(f"{'case':32s} {'cpu min':>9s} {'cpu med':>9s} {'wall min':>9s} {'wall med':>9s}  (ms)")
    for name, r in sorted(res.items()):
        print(f"{name:32s} {r['cpu_ms_min']:9.2f} {r['cpu_ms_median']:9.2f} {r['wall_ms_min']:9.2f} "
              f"{r['wall_ms_median']:9.2f}")


def print_summary(s: dict, threads: int) -> None:
    print(f"\nnp.copyto: {s['copy_GBps_1t']:.1f} GB/s on 1 thread, {s[f'copy_GBps_{threads}t']:.1f} GB/s on {threads}")
    for op, row in s["ops"].items():
        print(f"{op}: engine {row['engine_of_copy_1t']:.0%} of copy bandwidth on 1 thread, "
              f"{row[f'engine_of_copy_{threads}t']:.0%} on {threads}")
        for impl, v in row["vs"].items():
            print(f"    {impl:16s} / engine: 1-thread CPU {v['cpu_1t_min']:5.1f}x min {v['cpu_1t_median']:5.1f}x median;"
                  f" {threads}-thread wall {v[f'wall_{threads}t_min']:5.1f}x min {v[f'wall_{threads}t_median']:5.1f}x median")


def write_chart(path: Path, results: dict) -> None:
    """Engine speed-up over each like-for-like baseline: 1-thread CPU time and N-thread wall time (min).

    PatchFusion's m2 path (another algorithm, tens of times slower) is left out so the bars stay readable.
    """
    cpu = results["cpu"]
    threads = cpu["threads"]
    bars = []
    for op, row in cpu["summary"]["ops"].items():
        for impl, v in row["vs"].items():
            if impl == "patchfusion_m2":
                continue
            bars.append((f"{op} vs {impl}: 1t cpu", v["cpu_1t_min"], f"{v['cpu_1t_min']:.1f}x"))
            bars.append((f"{op} vs {impl}: {threads}t wall", v[f"wall_{threads}t_min"],
                         f"{v[f'wall_{threads}t_min']:.1f}x"))
    m = results["machine"]
    bar_chart(path, f"4K tile engine: baseline time / engine time (min of {cpu['repeat']}, interleaved); "
                    f"{m['cpu']}, {m['cores']} cores, {m['date']}", bars, width=900)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="threads for the multi-threaded pass (every side)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--seed", type=int, default=0, help="inputs and the interleaving order")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", type=Path, default=Path("out/bench_tiling"))
    args = p.parse_args()

    grid = TileGrid(*FRAME, 4, 4, round(0.25 * FRAME[0] / 4))
    print(f"frame {FRAME[0]}x{FRAME[1]}, {grid.rows}x{grid.cols} tiles of {grid.tile_h}x{grid.tile_w} "
          f"(overlap {grid.overlap}), crops to {TILE}, engine: {native.native_status()}")
    x = make_inputs(np.random.default_rng(args.seed))
    results: dict = {"machine": machine(), "seed": args.seed}
    if args.device == "cuda":
        if not (torch.cuda.is_available() and native.cuda is not None):
            raise SystemExit("bench_tiling: --device cuda needs a GPU and edgedepth._native_cuda")
        results["cuda"] = run_cuda(x, grid, args.repeat, args.seed)
        print_cases(f"CUDA {results['cuda']['device']} (wall only)", results["cuda"]["cases"])
        print(f"CUDA tile stage (all crops + stitch): {results['cuda']['tile_stage_ms_min']:.3f} ms min; "
              f"with the maps cut in one call (the runtime's way): "
              f"{results['cuda']['tile_stage_maps_in_one_call_ms_min']:.3f} ms")
        for kind in ("joint", "guided"):
            up = results["cuda"][kind]
            print(f"CUDA {kind} upsampling + finish, 431x810 -> 4K: {up['engine_ms_min']:.3f} ms min, "
                  f"{up['torch_ops_over_engine_min']:.1f}x faster than the torch ops")
    else:
        results["cpu"] = run_cpu(x, grid, args.threads, args.repeat, args.seed)
        cpu = results["cpu"]
        print_cases("1 thread everywhere", cpu["single_thread"])
        print_cases(f"{args.threads} threads everywhere", cpu[f"threads_{args.threads}"])
        off = {k: round(v, 2) for k, v in cpu["single_thread_cpu_over_wall"].items() if v < 0.9}
        if off:
            print(f"\nwarning: single-thread CPU/wall below 0.9 (work off the calling thread or a busy machine): {off}")
        print_summary(cpu["summary"], args.threads)
        print(f"check: {cpu['check']}")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "figures.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "figures.json")
    if "cpu" in results:
        write_chart(args.out / "chart.png", results)
    print(f"\nwrote {args.out}/figures.json" + (" and chart.png" if "cpu" in results else ""))


if __name__ == "__main__":
    main()
