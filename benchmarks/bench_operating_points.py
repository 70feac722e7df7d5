"""Operating points of a bundle: latency against accuracy, per tile grid, frame size and coarse-only mode.

Points (all on onnxruntime FP32 with the same --threads, default bundle unless --bundle):
  * coarse-only at 1080p (``Runtime(refine=False)``: the coarse depth upsampled and finished);
  * fixed grids 2x2, 3x3 and 4x4 at 1080p (``Runtime(tiles=...)``; tiles larger than the refiner
    was trained on are less accurate, which is what the table shows);
  * the bundle's default tiling at 1080p (adaptive: 4x4 on the default bundle) and at 640x480
    (adaptive: 2x1), and coarse-only at 640x480;
  * at 1080p, the default tiling and coarse-only again with ``upsample="bilinear"`` (the default
    bundle upsamples guided by the frame: what that costs and buys);
  * at 3840x2160, the default tiling (``tiling.max_side`` 1920 on the default bundle: the 1080p
    frame's 4x4 grid with tiles twice as large) and the adaptive grid without that cap (9x8);
  * at 1080p and 4K, the default tiling with edge snapping (``tiling.snap`` 0.1).
Latency: every point predicts one frame per repetition, the points in a random order each
repetition (interleaved, so a noisy neighbour hits all alike); wall ms min and median over
--repeat repetitions after one warm-up pass. Accuracy: AbsRel, RMSE (m) and edge-band AbsRel
(``edgedepth.metrics``, predictions clamped to [1e-3, 80] m on reliable ground truth) on the
held-out procedural frames of ``bench_accuracy.py``: stream 3000 (scene seeds
3000 * 1000003 + i, street/indoor alternating), rendered at 1920x1080 and at 640x480, and stream
3001 at 3840x2160.

    python benchmarks/bench_operating_points.py [--frames 4] [--repeat 6] [--threads 2] [--out out/bench_operating_points]

Writes table.md, figures.json and chart.png (median latency per point, accuracy in the labels).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_accuracy import HELDOUT, VALID_MAX, heldout_frames  # noqa: E402
from bench_runtime import machine  # noqa: E402
from charts import bar_chart  # noqa: E402

from edgedepth import Runtime, metrics  # noqa: E402
from edgedepth.bundle import open_bundle  # noqa: E402
from edgedepth.tiling import Tiling  # noqa: E402

# name -> (held-out resolution key, Runtime keyword arguments; "tiling": fields of the bundle's tiling replaced)
POINTS = {
    "coarse-only 1080p": ("1080p", {"refine": False}),
    "coarse-only 1080p, bilinear": ("1080p", {"refine": False, "upsample": "bilinear"}),
    "2x2 1080p": ("1080p", {"tiles": (2, 2)}),
    "3x3 1080p": ("1080p", {"tiles": (3, 3)}),
    "4x4 1080p": ("1080p", {"tiles": (4, 4)}),
    "default 1080p": ("1080p", {}),
    "default 1080p, bilinear": ("1080p", {"upsample": "bilinear"}),
    "default 640x480": ("640x480", {}),
    "coarse-only 640x480": ("640x480", {"refine": False}),
    "default 4K": ("4K", {}),
    "4K, grid not capped": ("4K", {"tiling": {"max_side": 0}}),
    "default 1080p, snapped": ("1080p", {"tiling": {"snap": 0.1}}),
    "default 4K, snapped": ("4K", {"tiling": {"snap": 0.1}}),
}


def score(depth: np.ndarray, frame: dict) -> dict[str, float]:
    """AbsRel, RMSE (m) and edge-band AbsRel of one prediction against the frame's ground truth."""
    p, valid = metrics.prepare(depth, frame["depth"], frame["reliable"], max_depth=VALID_MAX)
    pw = metrics.pointwise_metrics(p[valid], frame["depth"][valid])
    return {"abs_rel": pw["abs_rel"], "rmse": pw["rmse"],
            "edge_absrel": metrics.edge_band_abs_rel(p, frame["depth"], valid)}


def run(bundle: str | None, frames: dict[str, list[dict]], threads: int, repeat: int, seed: int) -> dict:
    """Accuracy (one prediction per frame and point, also the warm-up) then interleaved latency."""
    runtimes, rows = {}, {}
    for name, (res, kwargs) in POINTS.items():
        if "tiling" in kwargs:
            kwargs = {**kwargs, "tiling": dataclasses.replace(Tiling.from_json(open_bundle(bundle).tiling),
                                                              **kwargs["tiling"])}
        with warnings.catch_warnings(record=True) as caught:  # coarser/finer tiles than trained: recorded
            warnings.simplefilter("always")
            rt = Runtime(bundle, backend="onnxruntime", precision="fp32", threads=threads, **kwargs)
            results = [rt.predict(f["image"]) for f in frames[res]]
        scores = [score(r.depth, f) for r, f in zip(results, frames[res])]
        grid = results[0].grid
        runtimes[name] = rt
        rows[name] = {
            "frame": list(frames[res][0]["image"].shape[:2]),
            "grid": None if grid is None else [grid.rows, grid.cols],
            "tile_box": None if grid is None else [grid.tile_h, grid.tile_w],
            **{k: float(np.mean([s[k] for s in scores])) for k in scores[0]},
            "warnings": sorted({str(w.message).split(";")[0] for w in caught}),
        }
        print(f"{name}: accuracy on {len(scores)} frames done", flush=True)
    wall: dict[str, list[float]] = {k: [] for k in POINTS}
    stages: dict[str, list[dict]] = {k: [] for k in POINTS}
    rng = np.random.default_rng(seed)
    for rep in range(repeat):
        for name in rng.permutation(list(POINTS)):
            res = POINTS[name][0]
            image = frames[res][rep % len(frames[res])]["image"]
            t0 = time.perf_counter()
            result = runtimes[name].predict(image)
            wall[name].append(1e3 * (time.perf_counter() - t0))
            stages[name].append(result.timings)
    for name in POINTS:
        rows[name].update(latency_ms_min=min(wall[name]), latency_ms_median=statistics.median(wall[name]),
                          stages_ms_median={k: statistics.median(t[k] for t in stages[name])
                                            for k in stages[name][0]})
    return rows


def table(rows: dict, threads: int, repeat: int) -> str:
    lines = [f"| operating point | frame | grid | latency min / median (ms, {threads} threads, {repeat} interleaved runs) "
             "| AbsRel | RMSE (m) | edge AbsRel |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        grid = "coarse only" if r["grid"] is None else f"{r['grid'][0]}×{r['grid'][1]}"
        lines.append(f"| {name} | {r['frame'][1]}×{r['frame'][0]} | {grid} | {r['latency_ms_min']:.0f} / "
                     f"{r['latency_ms_median']:.0f} | {r['abs_rel']:.3f} | {r['rmse']:.2f} | {r['edge_absrel']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the embedded default bundle)")
    ap.add_argument("--frames", type=int, default=4, help="held-out frames per resolution")
    ap.add_argument("--repeat", type=int, default=6, help="timed predictions per point")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the interleaving order")
    ap.add_argument("--data", default="out/bench_data", help="where held-out frames are rendered once")
    ap.add_argument("--out", default="out/bench_operating_points")
    args = ap.parse_args(argv)

    frames = heldout_frames(Path(args.data), {res: args.frames for res in {r for r, _ in POINTS.values()}})
    rows = run(args.bundle, frames, args.threads, args.repeat, args.seed)
    speedup = rows["default 1080p"]["latency_ms_median"] / rows["default 640x480"]["latency_ms_median"]
    md = table(rows, args.threads, args.repeat)
    print("\n" + md + f"\ndefault 640x480 is {speedup:.1f}x faster than default 1080p (medians; target >= 3x)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"machine": machine(), "threads": args.threads, "repeat": args.repeat, "seed": args.seed,
               "heldout": {res: {"stream": HELDOUT[res][0], "frames": [f["name"] for f in frames[res]]} for res in frames},
               "points": rows, "speedup_640x480_over_1080p_median": speedup}
    for name, text in (("figures.json", json.dumps(figures, indent=2)), ("table.md", md)):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    m = figures["machine"]
    bar_chart(out / "chart.png", f"operating points: median latency ({args.threads} threads, onnxruntime); "
                                 f"{m['cpu']}, {m['date']}",
              [(name, r["latency_ms_median"], f"{r['latency_ms_median']:.0f} ms  AbsRel {r['abs_rel']:.3f}  "
                                              f"edge {r['edge_absrel']:.3f}") for name, r in rows.items()], width=900)
    print(f"wrote {out}/table.md, figures.json, chart.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
