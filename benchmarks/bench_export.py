"""Export benchmark: refiner latency, size on disk and accuracy of every precision a bundle holds.

For each refiner file of the bundle in ONNX (run by ONNX Runtime on the CPU) and OpenVINO IR (run
by OpenVINO on the CPU) — FP32, FP16, INT8 (Q/DQ for ONNX, NNCF for OpenVINO) — through the
runtime's own backends (edgedepth.backends):
  * latency of one batch of --batch tiles at the bundle's tile size, every variant interleaved in a
    shuffled order (benchmarks/timing.py): wall ms on --threads threads (default 2) and this
    thread's CPU ms (``time.thread_time()``) on 1 thread, min and median; ms per tile and the
    achieved GFLOP/s (the refiner's Conv/MatMul/Gemm FLOPs counted from the ONNX graph, the same
    count for every precision) next to what this CPU achieves on a large 3x3 convolution in torch
    (1 and --threads threads, measured in the same run); speed-up over ONNX Runtime FP32 (minima);
  * bytes on disk (an IR counts its .xml and .bin) and the ratio to the same format's FP32;
    (a bundle without OpenVINO IR has OpenVINO run its ONNX files, as the runtime does: "openvino/int8 (onnx)");
  * accuracy on --frames procedural frames (held-out seeds, with ground truth): the refiner inputs
    are the ones Runtime.predict computes (ONNX Runtime FP32 coarse model and crops); each variant
    refines all tiles, the tiles are stitched with the bundle's window, and the frame is scored
    by AbsRel against the ONNX Runtime FP32 frame and against ground truth.

Bundle: the positional argument, else the embedded default, else ``--build DIR`` (see
bench_runtime.py: random-init default-shaped models, so AbsRel vs ground truth is meaningless
there; AbsRel vs FP32 still measures the quantisation error).

    python benchmarks/bench_export.py [BUNDLE | --build DIR] [--repeat 7] [--batch 16] [--threads 2] [--out out/bench_export]

Writes figures.json and chart.png to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import absrel, machine, resolve_bundle  # noqa: E402
from charts import bar_chart  # noqa: E402
from timing import min_median, time_interleaved  # noqa: E402

from edgedepth.commands.arguments import frame_size  # noqa: E402

FORMATS = {"onnx": "onnxruntime", "openvino": "openvino"}  # bundle format -> backend that runs it


class _FeedRecorder:
    """Stands in a Runtime's refiner slot: keeps each feed dict the runtime computes, then runs the real backend."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        self.feeds.append({k: np.array(v, dtype=np.float32) for k, v in feeds.items()})
        return self.backend.run(feeds)


def runtime_frames(bundle_path: Path, count: int, size: tuple[int, int], cache: Path) -> tuple[Any, list[dict]]:
    """Procedural frames with the refiner inputs the runtime computes for them (one refiner call each)."""
    from edgedepth import Runtime
    from edgedepth.datasets import render_scene
    from edgedepth.manifest import MAX_BATCH

    # Every tile of a frame in one call (the largest batch the runtime allows).
    rt = Runtime(bundle_path, backend="onnxruntime", device="cpu", precision="fp32", max_tile_batch=MAX_BATCH,
                 cache_dir=cache)
    recorder = _FeedRecorder(rt.refiner)
    rt.refiner = recorder
    frames = []
    for i in range(count):
        # Seeds far from the exporter's calibration/held-out streams (which start at 0).
        sample = render_scene(700_000 + i, size[0], size[1], ("street", "indoor")[i % 2])
        rt.predict(sample["image"])
        frames.append({"feeds": recorder.feeds[-1], "gt": sample["depth"], "boxes": rt.grid_for(*size).boxes})
    return rt, frames


def batch_of(feeds: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """``n`` tiles from ``feeds`` (repeated when the frame has fewer)."""
    have = len(next(iter(feeds.values())))
    idx = np.arange(n) % have
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}


def disk_bytes(path: Path) -> int:
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    if path.is_dir():  # a folder model (.mlpackage)
        files = [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files if f.is_file())


def frame_depth(backend, frame: dict, rt) -> np.ndarray:
    from edgedepth import tiling

    tiles = backend.run(frame["feeds"])["depth"]
    height, width = frame["gt"].shape
    depth = tiling.stitch(np.asarray(tiles, dtype=np.float32), frame["boxes"], height, width, window=rt.window)[0]
    return np.maximum(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0), 0.0)


def graph_flops(path: Path) -> float:
    """FLOPs of one batch-1 call of an ONNX model: 2 x multiply-adds of its Conv, MatMul and Gemm nodes
    (shapes from ONNX shape inference with every symbolic dimension set to 1)."""
    import onnx

    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":  # out elements x (in channels / group) x kernel area
            weight = shapes[node.input[1]]
            total += 2 * np.prod(shapes[node.output[0]]) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):  # out elements x the shared dimension
            total += 2 * np.prod(shapes[node.output[0]]) * shapes[node.input[1]][0 if node.op_type == "MatMul" else 1]
    return float(total)


def conv_peak(threads: int, repeat: int) -> dict[str, float]:
    """GFLOP/s of torch on a large 3x3 convolution (64 -> 64 channels, 128x224, batch 4): this thread's CPU
    time on 1 thread, wall time on ``threads`` threads; what this CPU achieves on dense conv work."""
    import torch

    x = torch.randn(4, 64, 128, 224)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    flops = 2 * x.numel() * 64 * 9
    out: dict[str, float] = {}
    with torch.inference_mode():
        for n, clock in ((1, "cpu"), (threads, "wall")):
            torch.set_num_threads(n)
            ms = min(time_interleaved({"conv": lambda: conv(x)}, repeat)["conv"][clock])
            out[f"gflops_{n}t"] = flops / ms / 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--build", type=Path, help="export a random-init default-shaped bundle to this folder and use it")
    p.add_argument("--batch", type=int, default=16, help="tiles per refiner call")
    p.add_argument("--repeat", type=int, default=7, help="interleaved rounds per thread count")
    p.add_argument("--frames", type=int, default=2, help="procedural frames scored for accuracy")
    p.add_argument("--frame-size", type=frame_size, default=(576, 1024), metavar="WxH",
                   help="size of the scored frames (default 1024x576)")
    p.add_argument("--threads", type=int, default=2, help="threads of the wall-time pass (every variant)")
    p.add_argument("--out", type=Path, default=Path("out/bench_export"))
    args = p.parse_args()

    from edgedepth.backends import get_backend
    from edgedepth.bundle import open_bundle

    before = machine()
    print(f"machine: {before['cpu']}, {before['cores']} cores, load average {before['load_avg_1_5_15']}")
    bundle_path = resolve_bundle(args.bundle, args.build)
    bundle = open_bundle(bundle_path)
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    size = args.frame_size
    rt, frames = runtime_frames(bundle_path, args.frames, size, cache)
    batch = batch_of(frames[0]["feeds"], args.batch)
    print(f"bundle {bundle_path}: tile {rt.tile_size}, batch {args.batch}; {args.frames} frames of "
          f"{size[0]}x{size[1]} ({len(frames[0]['boxes'])} tiles each)")

    rows: dict[str, dict[str, Any]] = {}
    depths: dict[str, list[np.ndarray]] = {}
    backends: dict[str, Any] = {}
    single: dict[str, Any] = {}  # the same variants on 1 thread, for the CPU-time pass
    skipped: dict[str, str] = {}
    for fmt, backend_name in FORMATS.items():
        cls = get_backend(backend_name)
        if not cls.is_available():
            print(f"  {fmt}: skipped ({cls.package} not installed)")
            continue
        for precision in ("fp32", "fp16", "int8"):
            # Like the runtime: a backend takes its own format first, then the next it reads (OpenVINO reads ONNX).
            held = [f for f in cls.formats if precision in bundle.precisions("refiner", f)]
            if not held:
                continue
            path = bundle.model_file("refiner", held[0], precision)
            key = f"{fmt}/{precision}" + ("" if held[0] == fmt else f" ({held[0]})")
            try:
                backends[key] = cls(path, role="refiner", device="cpu", precision=precision, threads=args.threads,
                                    cache_dir=cache)
                backends[key].run(batch)  # fails here if this backend cannot run the variant
                single[key] = cls(path, role="refiner", device="cpu", precision=precision, threads=1, cache_dir=cache)
            except (ValueError, RuntimeError) as err:  # a variant this backend cannot run: say so, go on
                backends.pop(key, None)
                single.pop(key, None)
                skipped[key] = f"{type(err).__name__}: {err}"
                print(f"  {key}: skipped ({skipped[key][:160]})")
                continue
            depths[key] = [frame_depth(backends[key], f, rt) for f in frames]
            rows[key] = {"backend": backend_name, "file": str(path.relative_to(bundle_path)), "bytes": disk_bytes(path)}
    graph = bundle.model_file("refiner", "onnx", "fp32") if "onnx" in bundle.formats("refiner") else None
    flops_tile = graph_flops(graph) if graph is not None else float("nan")
    peak = conv_peak(args.threads, args.repeat)
    for clock, variants, n in (("wall", backends, args.threads), ("cpu", single, 1)):
        times = time_interleaved({key: (lambda b=b: b.run(batch)) for key, b in variants.items()}, args.repeat)
        for key, t in times.items():
            ms = min_median(t[clock])
            rows[key][f"{clock}_{n}t_ms"] = ms
            rows[key][f"{clock}_{n}t_ms_per_tile"] = {k: v / args.batch for k, v in ms.items()}
            rows[key][f"{clock}_{n}t_gflops"] = flops_tile * args.batch / ms["min"] / 1e6
            rows[key][f"{clock}_{n}t_of_conv_peak"] = rows[key][f"{clock}_{n}t_gflops"] / peak[f"gflops_{n}t"]
            if clock == "cpu":  # CPU time counts the work only if it ran on the calling thread
                rows[key]["cpu_over_wall_1t"] = float(np.median(np.divide(t["cpu"], t["wall"])))
    wall, cpu = f"wall_{args.threads}t", "cpu_1t"
    if "onnx/fp32" not in rows:
        raise SystemExit("the bundle has no ONNX FP32 refiner (or onnxruntime is missing): nothing to compare against")
    base = rows["onnx/fp32"]
    for key, r in rows.items():  # every ratio and accuracy delta is against ONNX Runtime FP32
        r["absrel_vs_fp32"] = float(np.mean([absrel(d, ref) for d, ref in zip(depths[key], depths["onnx/fp32"])]))
        r["absrel_vs_gt"] = float(np.mean([absrel(d, f["gt"]) for d, f in zip(depths[key], frames)]))
        fp32 = next(r2 for k2, r2 in rows.items() if k2.split("/")[0] == key.split("/")[0] and "/fp32" in k2)
        r["speedup_vs_onnx_fp32"] = {m: base[f"{m}_ms"]["min"] / r[f"{m}_ms"]["min"] for m in (wall, cpu)}
        r["size_vs_fp32"] = r["bytes"] / fp32["bytes"]
    for r in rows.values():
        r["absrel_gt_delta"] = r["absrel_vs_gt"] - base["absrel_vs_gt"]

    print(f"\nrefiner: {flops_tile / 1e9:.3f} GFLOP per tile; torch 3x3 conv: {peak['gflops_1t']:.0f} GFLOP/s on "
          f"1 thread (CPU time), {peak[f'gflops_{args.threads}t']:.0f} on {args.threads} (wall)")
    print(f"{'variant':22s} {'ms/tile ' + wall + ' min/med':>24s} {'GFLOP/s':>8s} {'of conv':>7s} "
          f"{'ms/tile ' + cpu + ' min/med':>22s} {'GFLOP/s':>8s} {'of conv':>7s} {'cpu/wall':>8s} {'x ORT fp32':>10s} "
          f"{'size':>8s} {'AbsRel vs fp32':>14s} {'AbsRel vs GT':>12s} {'d vs fp32':>10s}")
    for key, r in rows.items():
        print(f"{key:22s} {r[wall + '_ms_per_tile']['min']:12.2f} {r[wall + '_ms_per_tile']['median']:11.2f} "
              f"{r[wall + '_gflops']:8.1f} {r[wall + '_of_conv_peak']:7.0%} "
              f"{r[cpu + '_ms_per_tile']['min']:11.2f} {r[cpu + '_ms_per_tile']['median']:10.2f} "
              f"{r[cpu + '_gflops']:8.1f} {r[cpu + '_of_conv_peak']:7.0%} {r['cpu_over_wall_1t']:8.2f} "
              f"{r['speedup_vs_onnx_fp32'][wall]:10.2f} {r['bytes'] / 2**20:6.2f}MB {r['absrel_vs_fp32']:14.2e} "
              f"{r['absrel_vs_gt']:12.4f} {r['absrel_gt_delta']:+10.4f}")
    after = machine()
    print(f"\nload average after: {after['load_avg_1_5_15']}")

    results = {"command": " ".join(sys.argv), "machine_before": before, "machine_after": after,
               "bundle": str(bundle_path), "tile_size": list(rt.tile_size), "batch": args.batch,
               "threads": args.threads, "repeat": args.repeat, "refiner_gflop_per_tile": flops_tile / 1e9,
               "torch_conv3x3_gflops": peak,
               "frames": {"count": args.frames, "size": list(size)}, "variants": rows, "skipped": skipped}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "figures.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "figures.json")
    bars = [(key, r[wall + "_ms_per_tile"]["min"],
             f"{r[wall + '_ms_per_tile']['min']:.2f} ms/tile ({r['speedup_vs_onnx_fp32'][wall]:.2f}x), "
             f"{r[wall + '_of_conv_peak']:.0%} of conv GFLOP/s, AbsRel vs fp32 {r['absrel_vs_fp32']:.1e}")
            for key, r in rows.items()]
    bar_chart(args.out / "chart.png", f"refiner ms per tile, batch {args.batch} of {rt.tile_size[0]}x{rt.tile_size[1]}, "
              f"CPU, {args.threads} threads, min (speed-up over ONNX Runtime FP32)", bars, width=980)
    print(f"wrote {args.out / 'figures.json'} and {args.out / 'chart.png'}")


if __name__ == "__main__":
    main()
