"""Soak benchmark: many frames through ``Runtime.stream`` with the process's resident memory, threads
and open files recorded as it goes. A robot calls the runtime every frame for hours: all three must
stay flat once the first frames have warmed the caches (allocator pools, backend arenas).

Frames are a few distinct camera-like frames (the sample scene, shifted and noised) cycled, so the
frames differ without generating each one. Samples every --every frames while the stream runs:
frame index, seconds, RSS (MiB), threads (all native threads of the process, from /proc), open file
descriptors; and once more after the stream has ended. The verdict compares the samples after the
warm-up (--warmup of the frames): the least-squares slope of RSS in MiB per 1000 frames, the spread
of threads and descriptors, and whether the stream's threads and files are gone after it ended.

    python benchmarks/bench_soak.py [BUNDLE] [--frames 10000] [--size 640x360] [--tiles ROWSxCOLS]
        [--every 100] [--warmup 0.1] [--max-growth 1.0] [--out out/bench_soak]

Writes figures.json to --out (atomically) and exits 1 when the run is not flat. Linux (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np


def process_state() -> dict[str, float]:
    """RSS (MiB), native threads and open file descriptors of this process, from /proc."""
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "open_files": len(os.listdir("/proc/self/fd"))}


def frames(count: int, height: int, width: int) -> Iterator[np.ndarray]:
    """``count`` frames: 8 distinct shifted, noised views of the sample scene, cycled."""
    from PIL import Image

    from edgedepth.bundle import DEFAULT_BUNDLE

    sample = Image.open(DEFAULT_BUNDLE.parent / "sample.png").convert("RGB").resize((width + 64, height + 64))
    base = np.asarray(sample)
    rng = np.random.default_rng(0)
    views = []
    for k in range(8):
        dy, dx = rng.integers(0, 64, 2)
        noise = rng.integers(-6, 7, (height, width, 3))
        views.append(np.clip(base[dy:dy + height, dx:dx + width].astype(np.int16) + noise, 0, 255).astype(np.uint8))
    for i in range(count):
        yield views[i % len(views)]


def slope_per_kframe(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs, per 1000 units of x."""
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0] * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=None, help="NAME.edgedepth (default: the embedded bundle)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--every", type=int, default=100, help="sample every N frames")
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of the frames left out of the verdict")
    parser.add_argument("--max-growth", type=float, default=1.0, help="flat: RSS grows < this many MiB per 1000 frames")
    parser.add_argument("--tiles", default=None, help="ROWSxCOLS overriding the bundle's grid (fewer tiles: faster)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="out/bench_soak")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("bench_soak reads /proc: Linux only")
    from tqdm import tqdm

    from edgedepth import Runtime
    from edgedepth.atomic import atomic_write_text
    from edgedepth.commands.arguments import frame_size, tile_grid

    height, width = frame_size(args.size)
    runtime = Runtime(args.bundle, backend=args.backend, threads=args.threads,
                      tiles=tile_grid(args.tiles) if args.tiles else None)
    before = process_state()
    samples = []
    start = time.perf_counter()
    stream = runtime.stream(frames(args.frames, height, width))
    for i, result in enumerate(tqdm(stream, total=args.frames, unit="frame", disable=None), 1):
        assert np.isfinite(result.depth).all()
        if i % args.every == 0 and i < args.frames:  # the last result arrives after the stream's thread ended
            samples.append({"frame": i, "seconds": round(time.perf_counter() - start, 2), **process_state()})
    seconds = time.perf_counter() - start
    after = process_state()

    steady = [s for s in samples if s["frame"] >= args.warmup * args.frames] or samples[-1:]
    growth = slope_per_kframe([s["frame"] for s in steady], [s["rss_mib"] for s in steady])
    spread = {k: max(s[k] for s in steady) - min(s[k] for s in steady) for k in ("threads", "open_files")}
    # The stream's own thread is gone once it has ended; backend thread pools stay with the runtime.
    released = after["threads"] <= steady[-1]["threads"] - 1 and after["open_files"] <= steady[-1]["open_files"]
    flat = growth < args.max_growth and spread["threads"] == 0 and spread["open_files"] == 0 and released
    report = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg": os.getloadavg()},
        "runtime": repr(runtime), "frames": args.frames, "size": [height, width],
        "fps": round(args.frames / seconds, 2), "before": before, "after": after,
        "verdict": {"flat": flat, "rss_growth_mib_per_1000_frames": round(growth, 3),
                    "rss_mib_first_last": [round(samples[0]["rss_mib"], 1), round(samples[-1]["rss_mib"], 1)],
                    "rss_mib_steady_min_max": [round(min(s["rss_mib"] for s in steady), 1),
                                               round(max(s["rss_mib"] for s in steady), 1)],
                    "threads_spread": spread["threads"], "open_files_spread": spread["open_files"],
                    "stream_threads_released": released,
                    "after_warmup_frames": int(args.warmup * args.frames)},
        "samples": samples,
    }
    out = Path(args.out)
    atomic_write_text(out / "figures.json", json.dumps(report, indent=1) + "\n")
    v = report["verdict"]
    print(f"{args.frames} frames {width}x{height} at {report['fps']} fps: RSS {v['rss_mib_first_last'][0]} -> "
          f"{v['rss_mib_first_last'][1]} MiB (steady {v['rss_mib_steady_min_max']}, {v['rss_growth_mib_per_1000_frames']:+.3f} "
          f"MiB/1000 frames), threads spread {v['threads_spread']}, open files spread {v['open_files_spread']}, "
          f"stream thread released {v['stream_threads_released']}: "
          f"{'flat' if flat else 'NOT flat'} -> {out / 'figures.json'}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
