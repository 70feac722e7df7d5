"""Depth Anything V2 Small as the coarse model: what it costs on this machine, per backend and precision.

Weights are random (none can be downloaded here), so shapes, operators, memory and latency are the
real ones and the depth values are not. The bundle comes from two commands (the README's DA-V2 row):

    edgedepth train configs/dav2-small-refiner.yaml --set train.steps=20 --out runs/dav2-small-refiner
    edgedepth export runs/dav2-small-refiner/final --out out/dav2/dav2-small.edgedepth \
        --targets onnx,openvino,tensorrt --calib procedural:8 --heldout procedural:4

Measured, all in one run:
  (a) the coarse stage alone (the bundle's 518x924 input, i.e. 1080p/4K at 16:9; and 518x518, the
      size of the published anchors) per backend and precision: wall time with --threads threads and
      single-thread CPU time (``time.thread_time()``; both backends then run in the calling thread),
      min and median of --repeat calls, variants interleaved in a shuffled order every round;
  (b) the whole frame through ``Runtime.predict`` at 1080p and 4K (coarse + lite refiner, 4x4 and 9x8
      tiles), per-stage medians;
  (c) peak resident memory (VmHWM) of a fresh process running ``Runtime`` on two 4K frames
      (onnxruntime and OpenVINO, fp32 and int8), next to the same process before it loads the bundle;
  (d) FP16 and INT8 drift of the ViT against its FP32 file on held-out procedural frames (seed 3000,
      the accuracy benchmark's stream): depth and DPT features, mean relative and max abs.

    python benchmarks/bench_dav2.py [BUNDLE] [--threads 2] [--repeat 5] [--out out/bench_dav2]

Writes figures.json, table.md and chart.png to --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_runtime import machine, sample_frame  # noqa: E402
from charts import bar_chart  # noqa: E402
from timing import min_median, time_interleaved  # noqa: E402

HELDOUT_SEED = 3000  # benchmarks/bench_accuracy.py's 1080p held-out stream
SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840)}
# Published DA-V2-Small figures at 518 px (not measured here; issue 11 of this project lists them).
ANCHORS = {"Jetson Orin 8 GB, TensorRT FP16": 98.0, "Apple Neural Engine": 30.0, "RTX 4080, ONNX Runtime CUDA": 13.3}


def _backend(name: str, path: Path, precision: str, threads: int):
    from edgedepth.backends.registry import get_backend

    return get_backend(name)(path, role="coarse", device="cpu", precision=precision, threads=threads)


def coarse_variants(bundle: Path, square: Path | None) -> list[tuple[str, str, Path, str]]:
    """(label, backend, model file, precision) for every coarse file the bundle holds (+ 518x518)."""
    from edgedepth.bundle import open_bundle

    b = open_bundle(bundle)
    out = []
    for backend, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        for prec in ("fp32", "fp16", "int8"):
            if prec in b.precisions("coarse", fmt):
                out.append((f"{backend} {prec}", backend, b.model_file("coarse", fmt, prec), prec))
    if square is not None:
        out.append(("onnxruntime fp32 518x518", "onnxruntime", square, "fp32"))
        out.append(("openvino fp32 518x518", "openvino", square, "fp32"))
    return out


def bench_coarse(bundle: Path, square: Path | None, threads: int, repeat: int) -> dict[str, Any]:
    variants = coarse_variants(bundle, square)
    result: dict[str, Any] = {}
    for mode, n, clock in (("wall", threads, "wall"), ("cpu_1thread", 1, "cpu")):
        calls = {}
        for label, backend, path, prec in variants:
            be = _backend(backend, path, prec, n)
            h, w = be.inputs[0].shape[2:]
            x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
            calls[label] = (lambda be=be, x=x: be.run({"image": x}))
        for label, both in time_interleaved(calls, repeat).items():
            ms = both[clock]
            result.setdefault(label, {})[mode] = {"threads": n, **{f"{k}_ms": round(v, 1)
                                                                   for k, v in min_median(ms).items()}}
        del calls
    return result


def bench_frames(bundle: Path, threads: int, repeat: int) -> dict[str, Any]:
    from edgedepth import Runtime

    out: dict[str, Any] = {}
    for backend in ("onnxruntime", "openvino"):
        for prec in ("fp32", "int8"):
            rt = Runtime(bundle, backend=backend, precision=prec, threads=threads)
            for size, (h, w) in SIZES.items():
                frame = sample_frame(h, w)
                rt.predict(frame)
                runs = [rt.predict(frame) for _ in range(repeat)]
                stages = {k: round(statistics.median(r.timings[k] for r in runs), 1) for k in runs[0].timings}
                stages["total_min"] = round(min(r.timings["total"] for r in runs), 1)
                out[f"{size} {backend} {prec}"] = {"tiles": len(runs[0].grid.boxes), **stages}
    return out


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of a big parent
# would report the parent's peak; a new address space starts its own high-water mark.
PEAK_CHILD = """
import sys, numpy as np
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
from edgedepth import Runtime
before = hwm()
rt = Runtime(sys.argv[1], backend=sys.argv[2], precision=sys.argv[3], threads=int(sys.argv[4]))
frame = np.random.default_rng(0).integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
for _ in range(2):
    rt.predict(frame)
print(before, hwm())
"""


def peak_memory(bundle: Path, threads: int) -> dict[str, Any]:
    out = {}
    for backend in ("onnxruntime", "openvino"):
        for prec in ("fp32", "int8"):
            res = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(bundle), backend, prec, str(threads)],
                                 capture_output=True, text=True, check=True)
            before, peak = (int(v) for v in res.stdout.split()[-2:])  # KiB
            out[f"{backend} {prec}"] = {"before_mib": round(before / 1024), "peak_mib": round(peak / 1024)}
    return out


def drift(bundle: Path, frames: int, threads: int) -> dict[str, Any]:
    from edgedepth.bundle import open_bundle
    from edgedepth.datasets import iter_scenes
    from edgedepth.tiling import crop_resize

    b = open_bundle(bundle)
    ch, cw = b.manifest["coarse"]["input_size"]
    mean, std = b.manifest["coarse"]["mean"], b.manifest["coarse"]["std"]
    images = [s["image"] for s in iter_scenes(HELDOUT_SEED, 1080, 1920, count=frames)]
    inputs = [crop_resize(im, np.array([[0.0, 0.0, *im.shape[:2]]]), (ch, cw), mean=mean, std=std) for im in images]
    out: dict[str, Any] = {}
    for backend, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        ref_be = _backend(backend, b.model_file("coarse", fmt, "fp32"), "fp32", threads)
        refs = [ref_be.run({"image": x}) for x in inputs]
        for prec in ("fp16", "int8"):
            if prec not in b.precisions("coarse", fmt):
                continue
            be = _backend(backend, b.model_file("coarse", fmt, prec), prec, threads)
            got = [be.run({"image": x}) for x in inputs]
            row = {}
            for name in refs[0]:
                rel = [float(np.mean(np.abs(g[name] - r[name])) / max(np.mean(np.abs(r[name])), 1e-12)) for g, r in zip(got, refs)]
                row[name] = {"mean_rel": float(np.mean(rel)),
                             "max_abs": float(max(np.max(np.abs(g[name] - r[name])) for g, r in zip(got, refs)))}
            out[f"{backend} {prec}"] = row
    return out


def table(fig: dict[str, Any]) -> str:
    lines = [f"# Depth Anything V2 Small (random weights) on {fig['machine']['cpu']}, {fig['machine']['date']}", "",
             f"## Coarse stage ({fig['threads']} threads wall; 1 thread CPU time), min / median ms", "",
             "| variant | wall min | wall median | CPU 1 thread min | CPU 1 thread median |", "|---|---:|---:|---:|---:|"]
    for label, r in fig["coarse"].items():
        lines.append(f"| {label} | {r['wall']['min_ms']} | {r['wall']['median_ms']} | {r['cpu_1thread']['min_ms']} | "
                     f"{r['cpu_1thread']['median_ms']} |")
    lines += ["", "Published anchors at 518 px (not measured here): "
              + "; ".join(f"{k} {v:g} ms" for k, v in ANCHORS.items()), "",
              f"## Whole frame (Runtime.predict, {fig['threads']} threads), median ms per stage", "",
              "| frame / backend / precision | tiles | coarse | crop | refine | stitch | total | total min |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in fig["frames"].items():
        lines.append(f"| {label} | {r['tiles']} | {r.get('coarse')} | {r.get('crop')} | {r.get('refine')} | "
                     f"{r.get('stitch')} | {r.get('total')} | {r['total_min']} |")
    lines += ["", "## Peak resident memory (VmHWM), a fresh process, two 4K frames", "",
              "| backend / precision | after import, before loading (MiB) | peak (MiB) |", "|---|---:|---:|"]
    for label, r in fig["memory"].items():
        lines.append(f"| {label} | {r['before_mib']} | {r['peak_mib']} |")
    lines += ["", f"## Drift against the FP32 file ({fig['drift_frames']} held-out frames, seed {HELDOUT_SEED})", "",
              "| backend / precision | output | mean relative | max abs |", "|---|---|---:|---:|"]
    for label, outs in fig["drift"].items():
        for name, r in outs.items():
            lines.append(f"| {label} | {name} | {r['mean_rel']:.2e} | {r['max_abs']:.3g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", nargs="?", default="out/dav2/dav2-small.edgedepth")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--drift-frames", type=int, default=4)
    ap.add_argument("--out", default="out/bench_dav2")
    args = ap.parse_args()
    bundle, out = Path(args.bundle), Path(args.out)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"bench_dav2: {bundle} is not a bundle; make it with the two commands in this script's docstring")
    out.mkdir(parents=True, exist_ok=True)
    square = out / "coarse_518x518.onnx"
    if not square.is_file():  # the same weights at the anchors' input size
        from edgedepth.export.onnx_export import export_coarse
        from edgedepth.train.checkpoint import load_models

        ckpt = REPO / "runs" / "dav2-small-refiner" / "final"
        coarse = load_models(ckpt)[0] if ckpt.is_dir() else None
        if coarse is not None:
            coarse.input_size = (518, 518)
            export_coarse(coarse.eval(), square)
    fig: dict[str, Any] = {"machine": machine(), "threads": args.threads, "repeat": args.repeat,
                           "bundle": str(bundle), "drift_frames": args.drift_frames}
    t0 = time.time()
    fig["coarse"] = bench_coarse(bundle, square if square.is_file() else None, args.threads, args.repeat)
    fig["frames"] = bench_frames(bundle, args.threads, max(2, args.repeat // 2))
    fig["memory"] = peak_memory(bundle, args.threads)
    fig["drift"] = drift(bundle, args.drift_frames, args.threads)
    fig["machine"]["load_avg_after"] = [round(v, 2) for v in __import__("os").getloadavg()]
    fig["seconds"] = round(time.time() - t0)
    (out / "figures.json").write_text(json.dumps(fig, indent=1))
    (out / "table.md").write_text(table(fig))
    bars = [(f"coarse {k}", r["wall"]["median_ms"], f"{r['wall']['median_ms']:.0f} ms") for k, r in fig["coarse"].items()]
    bars += [(k, r["total"], f"{r['total']:.0f} ms ({r['tiles']} tiles)") for k, r in fig["frames"].items()]
    bar_chart(out / "chart.png", f"DA-V2-Small coarse + lite refiner, median ms, {args.threads} threads, "
              f"{fig['machine']['date']}", bars)
    print(table(fig))


if __name__ == "__main__":
    main()
