"""Jetson on-device benchmark: latency, memory, placement, power and energy per frame of a bundle.

    python -m benchmarks.jetson BUNDLE [--backend auto] [--precision auto] [--dla-core N]
        [--size 1920x1080] [--warmup 5] [--frames 50] [--interval-ms 100] [--out out/bench_jetson]

Run from the repository root on the device. Records the L4T/JetPack release, TensorRT and CUDA
versions, nvpmodel mode and jetson_clocks state (benchmarks/jetson/device.py); the runtime's start
time (engine build or cache load) and warm-up; per-frame latency p50/p90/p99 and the runtime's
per-stage medians (its own timings: with torch CUDA buffers the host-to-device upload is inside
"preprocess" and the download inside "stitch"; no backend exposes a separate H2D/compute/D2H split);
where each model runs (GPU, DLA core, CPU); peak resident memory; and board power and energy per
frame from tegrastats sampled during the timed frames. Off a Jetson every missing fact is reported
with its reason and the rest is measured anyway. Writes ``figures.json`` to --out.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import device
from .tegrastats import Sampler, power_summary


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear between samples (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def placement(info: dict[str, Any]) -> dict[str, str]:
    """role -> where the model runs, from ``Runtime.info()``."""
    out = {}
    for model in info["models"]:
        build = model.get("build") or {}
        if build.get("dla_core") is not None:
            where = f"DLA core {build['dla_core']} (layers it cannot run on the GPU; see the engine's .dla.json)"
        elif model["backend"] == "tensorrt":
            where = f"GPU ({model['device']})"
        else:
            where = f"{model['backend']} on {model['device']}"
        out[model["role"]] = where
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(bundle: str, backend: str, precision: str, dla_core: Optional[int], size: tuple[int, int], warmup: int,
        frames: int, interval_ms: int) -> dict[str, Any]:
    from edgedepth import Runtime

    height, width = size
    t0 = time.perf_counter()
    kwargs = {"dla_core": dla_core} if dla_core is not None else {}
    rt = Runtime(bundle, backend=backend, precision=precision, **kwargs)
    start_s = time.perf_counter() - t0
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for _ in range(warmup):
        rt.predict(frame)
    warmup_s = time.perf_counter() - t0
    latencies, stages = [], []
    with Sampler(interval_ms) as sampler:
        if sampler.available:
            time.sleep(2 * interval_ms / 1000)  # let tegrastats print before the window opens
        begin = time.perf_counter()
        for _ in range(frames):
            t = time.perf_counter()
            result = rt.predict(frame)
            latencies.append((time.perf_counter() - t) * 1e3)
            stages.append(result.timings)
        end = time.perf_counter()
        if sampler.available:
            time.sleep(2 * interval_ms / 1000)  # the line covering the last frames arrives after them
        window = sampler.between(begin, end + 2 * interval_ms / 1000)
    power = power_summary(window, end - begin, frames) if sampler.available else {
        "power_w": None, "energy_per_frame_j": None, "why": sampler.why}
    info = rt.info()
    return {
        "bundle": str(bundle), "backend": info["backend"], "precision": info["precision"], "device": info["device"],
        "frame": [height, width], "tiles": len(rt.grid_for(height, width)), "frames": frames, "warmup_frames": warmup,
        "start_s": round(start_s, 3), "warmup_s": round(warmup_s, 3),
        "latency_ms": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                       "p99": percentile(latencies, 99), "mean": statistics.fmean(latencies)},
        "fps": frames / (end - begin),
        "stage_ms_median": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
        "transfer_split": "not exposed by the backend: upload is inside 'preprocess', download inside 'stitch'",
        "placement": placement(info), "peak_rss_mb": round(peak_rss_mb(), 1), "power": power,
        "platform": device.describe(),
    }


def _size(text: str) -> tuple[int, int]:
    from edgedepth.commands.arguments import frame_size

    return frame_size(text)


def _missing(figures: dict[str, Any]) -> list[str]:
    """Every fact the run could not record, with its reason."""
    out = []
    d = figures["platform"]
    for what, entry, key in (("JetPack", d["release"], "jetpack"), ("nvpmodel", d["nvpmodel"], "mode"),
                             ("jetson_clocks", d["jetson_clocks"], "pinned"), ("power", figures["power"], "power_w")):
        if entry.get(key) is None:
            out.append(f"{what}: {entry.get('why', 'unknown')}")
    for name in ("tensorrt", "cuda"):
        if d["versions"].get(name) is None:
            out.append(f"{name}: {d['versions'].get(name + '_why', 'unknown')}")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jetson", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="NAME.edgedepth bundle folder")
    parser.add_argument("--backend", default="auto", help="runtime backend (auto = tensorrt on a Jetson)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    parser.add_argument("--dla-core", type=int, default=None, help="run on this DLA core (tensorrt)")
    parser.add_argument("--size", type=_size, default=(1080, 1920), metavar="WIDTHxHEIGHT", help="frame size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first (default 5)")
    parser.add_argument("--frames", type=int, default=50, help="timed frames (default 50)")
    parser.add_argument("--interval-ms", type=int, default=100, help="tegrastats sampling interval (default 100)")
    parser.add_argument("--out", default="out/bench_jetson", help="folder for figures.json")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.interval_ms < 1:
        parser.error("--frames must be >= 1, --warmup >= 0, --interval-ms >= 1")
    figures = run(args.bundle, args.backend, args.precision, args.dla_core, args.size, args.warmup, args.frames,
                  args.interval_ms)
    figures["missing"] = _missing(figures)
    from edgedepth.atomic import atomic_write_text

    out = Path(args.out)
    atomic_write_text(out / "figures.json", json.dumps(figures, indent=2, default=str) + "\n")
    lat = figures["latency_ms"]
    print(f"{figures['backend']} {figures['precision']} {figures['frame'][1]}x{figures['frame'][0]} "
          f"({figures['tiles']} tiles): p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f}, p99 {lat['p99']:.1f}, "
          f"{figures['fps']:.2f} frames/s, peak RSS {figures['peak_rss_mb']:.0f} MB")
    power = figures["power"]
    if power["power_w"] is not None:
        print(f"power {power['power_w']:.2f} W ({power['measured_as']}), {power['energy_per_frame_j']:.3f} J/frame")
    for line in figures["missing"]:
        print(f"missing: {line}")
    print(f"figures: {out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
