"""Export benchmark: refiner latency, size on disk and accuracy of every precision a bundle holds.

For each refiner file of the bundle in ONNX (run by ONNX Runtime on the CPU) and OpenVINO IR (run
by OpenVINO on the CPU) — FP32, FP16, INT8 (Q/DQ for ONNX, NNCF for OpenVINO) — through the
runtime's own backends (edgedepth.backends):
  * median latency of one batch of --batch tiles at the bundle's tile size (ms, ms/tile; repetitions
    taken round-robin over the variants) and the speed-up over ONNX Runtime FP32 of this run;
  * bytes on disk (an IR counts its .xml and .bin) and the ratio to the same format's FP32;
    (a bundle without OpenVINO IR has OpenVINO run its ONNX files, as the runtime does: "openvino/int8 (onnx)");
  * accuracy on --frames procedural frames (held-out seeds, with ground truth): the refiner inputs
    are the ones Runtime.predict computes (ONNX Runtime FP32 coarse model and crops); each variant
    refines all tiles, the tiles are stitched with the bundle's window, and the frame is scored
    by AbsRel against the ONNX Runtime FP32 frame and against ground truth.

Bundle: the positional argument, else the embedded default, else ``--build DIR`` (see
bench_runtime.py: random-init default-shaped models, so AbsRel vs ground truth is meaningless
there; AbsRel vs FP32 still measures the quantisation error).

    python benchmarks/bench_export.py [BUNDLE | --build DIR] [--repeat 5] [--batch 16] [--out out/bench_export]

Writes figures.json and chart.png to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import absrel, machine, resolve_bundle  # noqa: E402
from charts import bar_chart  # noqa: E402

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--build", type=Path, help="export a random-init default-shaped bundle to this folder and use it")
    p.add_argument("--batch", type=int, default=16, help="tiles per refiner call")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--frames", type=int, default=2, help="procedural frames scored for accuracy")
    p.add_argument("--frame-size", type=frame_size, default=(576, 1024), metavar="WxH",
                   help="size of the scored frames (default 1024x576)")
    p.add_argument("--threads", type=int, help="backend CPU threads (default: the backend's)")
    p.add_argument("--out", type=Path, default=Path("out/bench_export"))
    args = p.parse_args()

    from tqdm.auto import tqdm

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
                backends[key].run(batch)  # warm-up
            except (ValueError, RuntimeError) as err:  # a variant this backend cannot run: say so, go on
                backends.pop(key, None)
                skipped[key] = f"{type(err).__name__}: {err}"
                print(f"  {key}: skipped ({skipped[key][:160]})")
                continue
            depths[key] = [frame_depth(backends[key], f, rt) for f in frames]
            rows[key] = {"backend": backend_name, "file": str(path.relative_to(bundle_path)), "bytes": disk_bytes(path)}
    # Round-robin repetitions: a change in the machine's load hits every variant alike.
    times: dict[str, list[float]] = {key: [] for key in backends}
    for _ in tqdm(range(args.repeat), desc="latency rounds"):
        for key, backend in backends.items():
            t0 = time.perf_counter()
            backend.run(batch)
            times[key].append((time.perf_counter() - t0) * 1e3)
    for key, r in rows.items():
        r.update(ms=statistics.median(times[key]), ms_per_tile=statistics.median(times[key]) / args.batch)
    if "onnx/fp32" not in rows:
        raise SystemExit("the bundle has no ONNX FP32 refiner (or onnxruntime is missing): nothing to compare against")
    base = rows["onnx/fp32"]
    for key, r in rows.items():  # every ratio and accuracy delta is against ONNX Runtime FP32
        r["absrel_vs_fp32"] = float(np.mean([absrel(d, ref) for d, ref in zip(depths[key], depths["onnx/fp32"])]))
        r["absrel_vs_gt"] = float(np.mean([absrel(d, f["gt"]) for d, f in zip(depths[key], frames)]))
        fp32 = next(r2 for k2, r2 in rows.items() if k2.split("/")[0] == key.split("/")[0] and "/fp32" in k2)
        r["speedup_vs_onnx_fp32"] = base["ms"] / r["ms"]
        r["size_vs_fp32"] = r["bytes"] / fp32["bytes"]
    for r in rows.values():
        r["absrel_gt_delta"] = r["absrel_vs_gt"] - base["absrel_vs_gt"]

    print(f"\n{'variant':22s} {'ms/batch':>9s} {'ms/tile':>8s} {'x ORT fp32':>10s} {'size':>10s} {'x fp32':>7s} "
          f"{'AbsRel vs fp32':>14s} {'AbsRel vs GT':>12s} {'d vs fp32':>10s}")
    for key, r in rows.items():
        print(f"{key:22s} {r['ms']:9.1f} {r['ms_per_tile']:8.2f} {r['speedup_vs_onnx_fp32']:10.2f} "
              f"{r['bytes'] / 2**20:8.2f}MB {r['size_vs_fp32']:7.2f} {r['absrel_vs_fp32']:14.2e} "
              f"{r['absrel_vs_gt']:12.4f} {r['absrel_gt_delta']:+10.4f}")
    after = machine()
    print(f"\nload average after: {after['load_avg_1_5_15']}")

    results = {"command": " ".join(sys.argv), "machine_before": before, "machine_after": after,
               "bundle": str(bundle_path), "tile_size": list(rt.tile_size), "batch": args.batch,
               "frames": {"count": args.frames, "size": list(size)}, "variants": rows, "skipped": skipped}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "figures.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "figures.json")
    bars = [(key, r["ms"], f"{r['ms']:.0f} ms ({r['speedup_vs_onnx_fp32']:.2f}x), {r['bytes'] / 2**20:.2f} MB, "
                           f"AbsRel vs fp32 {r['absrel_vs_fp32']:.1e}") for key, r in rows.items()]
    bar_chart(args.out / "chart.png", f"refiner latency, batch {args.batch} of {rt.tile_size[0]}x{rt.tile_size[1]} "
              "tiles, CPU (speed-up over ONNX Runtime FP32)", bars, width=980)
    print(f"wrote {args.out / 'figures.json'} and {args.out / 'chart.png'}")


if __name__ == "__main__":
    main()
