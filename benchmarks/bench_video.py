"""Video benchmark: flicker and accuracy of ``Runtime.stream`` with and without the temporal stabiliser.

Procedural camera trajectories (edgedepth.datasets.trajectory: a camera driving down a street or
walking into a room, cars and balls moving on their own, exact depth and camera poses) run through
``Runtime.stream`` twice, ``stabilize=False`` and ``stabilize=True`` (the default). Per sequence and
over all:
  * flicker: mean frame-to-frame change of the log-depth error on static surface points, the camera's
    motion removed with the ground-truth poses (edgedepth.metrics.sequence_flicker; 0.01 = 1 %);
  * AbsRel and delta1 over all frames, and AbsRel on the pixels of moving objects (a filter that
    smears them shows up there);
  * the stabiliser's cost: ms per frame (wall, median, from the stream's timings; the model's
    total beside it) and, measured apart on the same frames with one OpenCV thread, its single-thread
    CPU time (time.thread_time()).
The default sequences are not those the stabiliser's settings were chosen on (seeds 1-4, 102, 103).

    python benchmarks/bench_video.py [BUNDLE] [--backend auto] [--size 1024x576] [--frames 24]
        [--sequences street:201,indoor:202,street:203,indoor:204,street:205,indoor:206] [--threads N] [--out out/bench_video]

Writes figures.json and chart.png to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import machine  # noqa: E402
from charts import bar_chart  # noqa: E402

from edgedepth import metrics as M  # noqa: E402
from edgedepth.commands.arguments import frame_size  # noqa: E402


def sequence_figures(depths: list[np.ndarray], frames) -> dict:
    gts = [f.sample["depth"] for f in frames]
    scores = [M.compute_metrics(d, g, boundary=False) for d, g in zip(depths, gts)]
    on_movers = [M.compute_metrics(d, g, f.moving, boundary=False)["abs_rel"]
                 for d, g, f in zip(depths, gts, frames) if (f.moving & (g > 0)).sum() >= 100]
    return {
        "flicker": M.sequence_flicker(depths, gts, frames[0].sample["intrinsics"], [f.pose for f in frames],
                                      [~f.moving for f in frames]),
        "abs_rel": float(np.mean([s["abs_rel"] for s in scores])),
        "delta1": float(np.mean([s["delta1"] for s in scores])),
        "abs_rel_moving": float(np.mean(on_movers)) if on_movers else None,
        "moving_frames": len(on_movers),
    }


def stabilizer_thread_ms(depths, valids, frames) -> float:
    """Median single-thread CPU ms per frame of the stabiliser over one sequence (OpenCV on one thread)."""
    import cv2

    from edgedepth.stabilizer import Stabilizer

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        st, times = Stabilizer(), []
        for d, v, f in zip(depths, valids, frames):
            t0 = time.thread_time()
            st(f.sample["image"], d, v, f.sample["intrinsics"])
            times.append((time.thread_time() - t0) * 1e3)
    finally:
        cv2.setNumThreads(threads)
    return statistics.median(times[1:])  # frame 0 only primes the history


def change(before: float, after: float) -> str:
    return f"{(after / before - 1) * 100:+.1f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", default=None, help="bundle folder (default: the embedded model)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--size", type=frame_size, default=(576, 1024), metavar="WxH", help="frame size (default 1024x576)")
    p.add_argument("--frames", type=int, default=24, help="frames per sequence (default 24)")
    p.add_argument("--sequences", default="street:201,indoor:202,street:203,indoor:204,street:205,indoor:206",
                   help="comma-separated LAYOUT:SEED trajectories")
    p.add_argument("--threads", type=int, default=None, help="runtime CPU threads")
    p.add_argument("--strength", type=float, default=None,
                   help="StabilizerConfig.strength to measure (default: the library's default)")
    p.add_argument("--out", type=Path, default=Path("out/bench_video"))
    args = p.parse_args()

    from edgedepth import Runtime
    from edgedepth.datasets.trajectory import render_trajectory
    from edgedepth.stabilizer import StabilizerConfig

    config = StabilizerConfig() if args.strength is None else StabilizerConfig(strength=args.strength)

    rt = Runtime(args.bundle, backend=args.backend, threads=args.threads)
    h, w = args.size
    print(f"{rt!r}\n{machine()}\n{len(args.sequences.split(','))} sequences x {args.frames} frames of {w}x{h}",
          flush=True)
    header = (f"{'sequence':14s} {'flicker raw':>11s} {'stabilised':>10s} {'change':>7s}  {'AbsRel raw':>10s} "
              f"{'stabilised':>10s} {'change':>7s}  {'moving raw':>10s} {'stabilised':>10s}  {'ms/frame':>8s}")
    print(header)
    figures: dict = {"machine": machine(), "runtime": repr(rt), "size": [h, w], "frames": args.frames,
                     "stabilizer": dataclasses.asdict(config), "sequences": {}}
    for item in args.sequences.split(","):
        layout, seed = item.split(":")
        frames = list(render_trajectory(int(seed), h, w, layout, args.frames))
        k = frames[0].sample["intrinsics"]
        images = [f.sample["image"] for f in frames]
        raw = list(rt.stream(images, intrinsics=k, stabilize=False))
        stable = list(rt.stream(images, intrinsics=k, stabilize=config))
        before = sequence_figures([r.depth for r in raw], frames)
        after = sequence_figures([r.depth for r in stable], frames)
        cost = {"stabilize_ms": statistics.median(r.timings["stabilize"] for r in stable[1:]),
                "model_ms": statistics.median(r.timings["total"] - r.timings["stabilize"] for r in stable[1:]),
                "stabilize_thread_ms": stabilizer_thread_ms([r.depth for r in raw], [r.valid for r in raw], frames)}
        figures["sequences"][item] = {"raw": before, "stabilised": after, **cost}
        mv = (f"{before['abs_rel_moving']:10.4f} {after['abs_rel_moving']:10.4f}" if before["abs_rel_moving"] is not None
              else f"{'-':>10s} {'-':>10s}")
        print(f"{item:14s} {before['flicker']:11.4f} {after['flicker']:10.4f} {change(before['flicker'], after['flicker']):>7s}  "
              f"{before['abs_rel']:10.4f} {after['abs_rel']:10.4f} {change(before['abs_rel'], after['abs_rel']):>7s}  "
              f"{mv}  {cost['stabilize_ms']:8.1f}", flush=True)
    seqs = figures["sequences"].values()
    mean = {side: {key: float(np.mean([s[side][key] for s in seqs if s[side][key] is not None]))
                   for key in ("flicker", "abs_rel", "delta1", "abs_rel_moving")} for side in ("raw", "stabilised")}
    figures["mean"] = {**mean,
                       "flicker_change": mean["stabilised"]["flicker"] / mean["raw"]["flicker"] - 1,
                       "abs_rel_change": mean["stabilised"]["abs_rel"] / mean["raw"]["abs_rel"] - 1,
                       "stabilize_ms": float(np.median([s["stabilize_ms"] for s in seqs])),
                       "model_ms": float(np.median([s["model_ms"] for s in seqs])),
                       "stabilize_thread_ms": float(np.median([s["stabilize_thread_ms"] for s in seqs]))}
    m = figures["mean"]
    print(f"{'mean':14s} {mean['raw']['flicker']:11.4f} {mean['stabilised']['flicker']:10.4f} "
          f"{m['flicker_change'] * 100:+6.1f}%  {mean['raw']['abs_rel']:10.4f} {mean['stabilised']['abs_rel']:10.4f} "
          f"{m['abs_rel_change'] * 100:+6.1f}%  {mean['raw']['abs_rel_moving']:10.4f} "
          f"{mean['stabilised']['abs_rel_moving']:10.4f}  {m['stabilize_ms']:8.1f}")
    print(f"stabiliser: {m['stabilize_ms']:.1f} ms/frame wall in the stream ({m['model_ms']:.0f} ms the model), "
          f"{m['stabilize_thread_ms']:.1f} ms single-thread CPU; delta1 {mean['raw']['delta1']:.3f} -> "
          f"{mean['stabilised']['delta1']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))
    bars = []
    for name, s in figures["sequences"].items():
        bars.append((f"{name} raw", s["raw"]["flicker"] * 100, f"{s['raw']['flicker'] * 100:.2f} %"))
        bars.append((f"{name} stabilised", s["stabilised"]["flicker"] * 100,
                     f"{s['stabilised']['flicker'] * 100:.2f} % ({change(s['raw']['flicker'], s['stabilised']['flicker'])})"))
    bar_chart(args.out / "chart.png", "flicker on static surfaces, % per frame (Runtime.stream, stabilize off / on)", bars)
    print(f"wrote {args.out / 'figures.json'} and chart.png")


if __name__ == "__main__":
    main()
