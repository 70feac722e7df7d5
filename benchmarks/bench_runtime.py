"""Runtime benchmark: per-stage timings and stream() throughput of every backend against a per-tile torch baseline.

For a 1920x1080 and a 3840x2160 frame (the sample scene, resized), through every backend that is
installed and that the bundle has files for (onnxruntime, openvino, torch; torch also once with one
intra-op thread per core, its default before the fix in edgedepth/backends/torch.py):
  * median milliseconds per stage of ``Runtime.predict`` (preprocess, coarse, crop, refine, stitch,
    total) over --repeat frames after a warm-up;
  * ``Runtime.stream`` throughput (frames/s) over --stream-frames frames;
  * the same models in the research-code style, measured in this run: normalise + F.interpolate
    the whole frame, then per tile F.interpolate crops of RGB, coarse depth and features, the
    refiner on that one tile, and a running window-weighted sum (the baseline of every ratio;
    its fps is 1 / total: it has no pipeline).
The models are the bundle's torch checkpoint (or --checkpoint); a bundle without one runs the
baseline's models as its ONNX files in onnxruntime, one tile per call.

Bundle: the positional argument, else the embedded default (edgedepth/assets/default.edgedepth),
else ``--build DIR`` exports random-init registry models shaped like the default (lite coarse,
prv2-mobile refiner, 128x224 tiles, 4x4 grid; onnx + openvino + torch, fp32/fp16/int8) to DIR.

    python benchmarks/bench_runtime.py [BUNDLE | --build DIR] [--repeat 3] [--stream-frames 6] [--out out/bench_runtime]

Writes figures.json and chart.png to --out; prints the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from charts import bar_chart  # noqa: E402

SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840)}
STAGES = ("preprocess", "coarse", "crop", "refine", "stitch", "total")
BACKENDS = ("onnxruntime", "openvino", "torch")


# ---------------------------------------------------------------- bundle and frames

def build_bundle(out: Path, precisions=("fp32", "fp16", "int8")) -> Path:
    """Export random-init registry models shaped like the shipped default to ``out`` (returns it).

    The residual heads start at zero (an untrained refiner returns its coarse input); they get small
    random weights here so that the refiner's output, and so any quantisation error, is not trivial.
    INT8 is exported without the accuracy bound (random weights) and with plain OpenVINO PTQ.
    """
    import torch

    from edgedepth.export.exporter import ExportConfig, export_bundle
    from edgedepth.tiling import Tiling
    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    ckw = {"encoder": "mobilenetv3_small", "width": 0.5, "input_size": (128, 224), "decoder_channels": (16, 24, 32, 48)}
    rkw = {"width": 0.5, "decoder_width": 0.5}
    coarse = create_coarse("lite", **ckw).eval()
    refiner = create_refiner("prv2-mobile", coarse, (128, 224), **rkw).eval()
    for head in refiner.residual_heads():
        torch.nn.init.normal_(head.weight, std=0.02)
    meta = {"coarse": {"name": "lite", "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in ckw.items()}},
            "refiner": {"name": "prv2-mobile", "kwargs": {"tile_size": [128, 224], **rkw}},
            "camera": {"fx_norm": 0.8}}
    cfg = ExportConfig(targets=("onnx", "openvino", "torch"), precisions=tuple(precisions), calib="procedural:4",
                       heldout="procedural:2", frame_size=(576, 1024), tiling=Tiling(4, 4, 0.25, "cosine"),
                       int8_bound=float("inf"), accuracy_control=False, overwrite=True)
    return Path(export_bundle(coarse, refiner, meta, out, cfg, log=lambda _: None))


def resolve_bundle(arg: str | None, build: Path | None) -> Path:
    """The bundle to measure: the argument, a freshly built one, or the embedded default."""
    from edgedepth.bundle import DEFAULT_BUNDLE

    if arg:
        path = Path(arg)
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"bundle {path} has no manifest.json")
        return path
    if build is not None:
        print(f"building a random-init bundle in {build} ...", flush=True)
        return build_bundle(build)
    if (DEFAULT_BUNDLE / "manifest.json").is_file():
        return DEFAULT_BUNDLE
    raise FileNotFoundError(f"no bundle given and the embedded default {DEFAULT_BUNDLE} is not there yet: "
                            "pass a bundle folder or --build DIR")


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d")}


def sample_frame(height: int, width: int) -> np.ndarray:
    """The shipped sample scene resized to (height, width), else seeded noise; HxWx3 uint8."""
    from PIL import Image

    sample = REPO / "edgedepth" / "assets" / "sample.png"
    if sample.is_file():
        img = Image.open(sample).convert("RGB").resize((width, height), Image.BILINEAR)
        return np.array(img)  # writable: torch.from_numpy warns on read-only arrays
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def median_timings(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in STAGES}


def absrel(pred: np.ndarray, ref: np.ndarray) -> float:
    valid = ref > 1e-3
    return float(np.mean(np.abs(pred[valid] - ref[valid]) / ref[valid]))


# ---------------------------------------------------------------- the research-code baseline

class TorchModels:
    """The bundle's models as torch callables: coarse(x) -> (depth, [feat...]); refiner(*inputs) -> depth."""

    def __init__(self, bundle, checkpoint: Path | None) -> None:
        import torch

        self.torch = torch
        folder = checkpoint
        if folder is None and "torch" in bundle.formats("refiner"):
            folder = bundle.model_file("refiner", "torch", "fp32").parent
        if folder is not None:
            from edgedepth.train.checkpoint import load_models

            coarse, refiner, _ = load_models(folder)
            self.coarse, self.refiner = coarse, refiner
            self.kind = f"torch modules ({folder})"
        else:
            import onnxruntime as ort

            c = ort.InferenceSession(str(bundle.model_file("coarse", "onnx", "fp32")), providers=["CPUExecutionProvider"])
            r = ort.InferenceSession(str(bundle.model_file("refiner", "onnx", "fp32")), providers=["CPUExecutionProvider"])
            names = [i.name for i in r.get_inputs()]
            feats = [o.name for o in c.get_outputs()][1:]

            def coarse_fn(x):
                out = c.run(None, {c.get_inputs()[0].name: x.numpy()})
                return torch.from_numpy(out[0]), [torch.from_numpy(o) for o in out[1:]]

            def refiner_fn(*args):
                return torch.from_numpy(r.run(None, {n: a.contiguous().numpy() for n, a in zip(names, args)})[0])

            self.coarse, self.refiner = coarse_fn, refiner_fn
            self.kind = f"ONNX fp32 in onnxruntime, one tile per call (no torch checkpoint; {len(feats)} features)"


def research_predict(models: TorchModels, image: np.ndarray, rt, window: np.ndarray) -> tuple[np.ndarray, dict]:
    """One frame the research-code way (integer tile boxes, F.interpolate per tile, running
    weighted sum), on ``rt``'s grid, coarse size, tile size and guidance; returns (depth, timings ms)."""
    torch = models.torch
    F = torch.nn.functional
    t0 = time.perf_counter()
    height, width = image.shape[:2]
    mean = torch.tensor(rt.mean).view(1, 3, 1, 1)
    std = torch.tensor(rt.std).view(1, 3, 1, 1)
    img = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0 - mean) / std
    x = F.interpolate(img, size=rt.coarse_size, mode="bilinear", align_corners=False)
    t1 = time.perf_counter()
    depth, feats = models.coarse(x)
    t2 = time.perf_counter()
    grid = rt.grid_for(height, width)
    win = torch.from_numpy(window)
    acc = torch.zeros(1, 1, height, width)
    weight = torch.zeros(1, 1, height, width)
    sources = [feats[int(source[4:])] for _, source, _, _ in rt.guides]

    def sub(src, y0, x0, h, w):
        sy, sx = src.shape[-2] / height, src.shape[-1] / width
        ya, xa = int(round(y0 * sy)), int(round(x0 * sx))
        yb, xb = max(ya + 1, int(round((y0 + h) * sy))), max(xa + 1, int(round((x0 + w) * sx)))
        return src[..., ya:yb, xa:xb]

    crop = refine = stitch = 0.0
    for y0, x0, h, w in grid.boxes.astype(int):
        a = time.perf_counter()
        inputs = [F.interpolate(img[..., y0:y0 + h, x0:x0 + w], size=rt.tile_size, mode="bilinear", align_corners=False),
                  F.interpolate(sub(depth, y0, x0, h, w), size=rt.tile_size, mode="bilinear", align_corners=False)]
        inputs += [F.interpolate(sub(f, y0, x0, h, w), size=size, mode="bilinear", align_corners=False)
                   for f, (_, _, _, size) in zip(sources, rt.guides)]
        b = time.perf_counter()
        tile = models.refiner(*inputs)
        c = time.perf_counter()
        up = F.interpolate(tile, size=(h, w), mode="bilinear", align_corners=False)
        acc[..., y0:y0 + h, x0:x0 + w] += up * win
        weight[..., y0:y0 + h, x0:x0 + w] += win
        crop, refine, stitch = crop + b - a, refine + c - b, stitch + time.perf_counter() - c
    a = time.perf_counter()
    out = (acc / weight).clamp(min=0)[0, 0].numpy()
    stitch += time.perf_counter() - a
    ms = {"preprocess": (t1 - t0) * 1e3, "coarse": (t2 - t1) * 1e3, "crop": crop * 1e3, "refine": refine * 1e3,
          "stitch": stitch * 1e3}
    ms["total"] = sum(ms.values())
    return out, ms


# ---------------------------------------------------------------- runs

def bench_runtime(rt, image: np.ndarray, repeat: int, stream_frames: int) -> tuple[np.ndarray, dict]:
    rt.predict(image)  # warm-up: lazy allocations, compilations
    results = [rt.predict(image) for _ in range(repeat)]
    t0 = time.perf_counter()
    n = sum(1 for _ in rt.stream((image for _ in range(stream_frames)), stabilize=False))  # bench_video.py times it
    fps = n / (time.perf_counter() - t0)
    return results[-1].depth, {"stages_ms": median_timings([r.timings for r in results]), "stream_fps": fps}


def variants(bundle, threads: int | None) -> list[tuple[str, str, int | None, str]]:
    """(label, backend, threads, note) of every run this bundle and this install allow."""
    from edgedepth.backends import get_backend
    from edgedepth.tiling import available_cores

    out = []
    for name in BACKENDS:
        cls = get_backend(name)
        if not cls.is_available():
            print(f"  {name}: skipped ({cls.package} not installed)")
            continue
        if not set(cls.formats) & set(bundle.formats("refiner")):
            print(f"  {name}: skipped (the bundle holds no {'/'.join(cls.formats)} files)")
            continue
        out.append((name, name, threads, ""))
        if name == "torch" and threads is None:
            cores = available_cores()
            out.append((f"torch, {cores} thr (pre-fix)", name, cores,
                        "torch intra-op threads = cores, as before edgedepth/backends/torch.py capped them"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--build", type=Path, help="export a random-init default-shaped bundle to this folder and use it")
    p.add_argument("--checkpoint", type=Path, help="torch checkpoint of the bundle's models, for the baseline")
    p.add_argument("--sizes", default="1080p,4K", help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--stream-frames", type=int, default=6)
    p.add_argument("--threads", type=int, help="Runtime(threads=...) for every backend (default: library defaults)")
    p.add_argument("--baseline-threads", type=int, help="torch threads of the baseline (default: the torch backend's)")
    p.add_argument("--out", type=Path, default=Path("out/bench_runtime"))
    args = p.parse_args()

    import torch

    from edgedepth import Runtime, tiling
    from edgedepth.backends.torch import cpu_threads_default
    from edgedepth.bundle import open_bundle

    before = machine()
    print(f"machine: {before['cpu']}, {before['cores']} cores, load average {before['load_avg_1_5_15']}")
    bundle_path = resolve_bundle(args.bundle, args.build)
    bundle = open_bundle(bundle_path)
    runs = variants(bundle, args.threads)
    models = TorchModels(bundle, args.checkpoint)
    base_threads = args.baseline_threads or cpu_threads_default()
    print(f"bundle {bundle_path} ({bundle.name}); baseline: {models.kind}, torch threads {base_threads}")
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join(sys.argv), "machine_before": before, "bundle": str(bundle_path),
                               "baseline_models": models.kind, "baseline_torch_threads": base_threads,
                               "tile_engine": tiling.native_status(), "sizes": {}}
    if not runs:
        raise SystemExit("no backend can run this bundle here")
    # Geometry (grid, sizes, guidance) for the baseline: any runtime of the bundle gives the same.
    rt0 = Runtime(bundle_path, backend=runs[0][1], device="cpu", cache_dir=cache)
    for size in args.sizes.split(","):
        height, width = SIZES[size]
        image = sample_frame(height, width)
        grid = rt0.grid_for(height, width)
        window = tiling.window(grid.tile_h, grid.tile_w, rt0.window)
        torch.set_num_threads(base_threads)  # the torch runtimes change this process-wide setting
        with torch.inference_mode():
            research_predict(models, image, rt0, window)  # warm-up
            timed = [research_predict(models, image, rt0, window) for _ in range(args.repeat)]
        base_depth = timed[-1][0]
        base = {"stages_ms": median_timings([t for _, t in timed])}
        base["fps"] = 1e3 / base["stages_ms"]["total"]
        row: dict[str, Any] = {"frame": [height, width], "grid": [grid.rows, grid.cols], "baseline": base, "backends": {}}
        print(f"\n{size} ({width}x{height}), grid {grid.rows}x{grid.cols} (tiles {grid.tile_h}x{grid.tile_w} px), "
              f"refiner input {rt0.tile_size}")
        print(f"{'run':40s} " + " ".join(f"{s:>10s}" for s in STAGES) + f" {'x base':>7s} {'stream fps':>10s} {'AbsRel vs base':>14s}")
        print(f"{'baseline (per-tile torch)':40s} " + " ".join(f"{base['stages_ms'][s]:10.1f}" for s in STAGES)
              + f" {1.0:7.2f} {base['fps']:10.2f} {'-':>14s}", flush=True)
        for label, name, n, note in runs:
            # Built right before its run: a torch runtime sets torch's process-wide thread count on load.
            rt = Runtime(bundle_path, backend=name, device="cpu", threads=n, cache_dir=cache)
            depth, fig = bench_runtime(rt, image, args.repeat, args.stream_frames)
            fig.update(backend=name, threads=n, torch_threads=torch.get_num_threads() if name == "torch" else None,
                       precision=rt.precision, note=note,
                       vs_baseline=base["stages_ms"]["total"] / fig["stages_ms"]["total"],
                       stream_vs_baseline=fig["stream_fps"] / base["fps"], absrel_vs_baseline=absrel(depth, base_depth))
            row["backends"][label] = fig
            print(f"{label:40s} " + " ".join(f"{fig['stages_ms'][s]:10.1f}" for s in STAGES)
                  + f" {fig['vs_baseline']:7.2f} {fig['stream_fps']:10.2f} {fig['absrel_vs_baseline']:14.2e}", flush=True)
        results["sizes"][size] = row
    results["machine_after"] = machine()
    print(f"\nload average after: {results['machine_after']['load_avg_1_5_15']}")

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "figures.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "figures.json")
    bars = []
    for size, row in results["sizes"].items():
        bars.append((f"{size}: baseline", row["baseline"]["stages_ms"]["total"],
                     f"{row['baseline']['stages_ms']['total']:.0f} ms"))
        bars += [(f"{size}: {label}", fig["stages_ms"]["total"],
                  f"{fig['stages_ms']['total']:.0f} ms, {fig['vs_baseline']:.1f}x, {fig['stream_fps']:.1f} fps")
                 for label, fig in row["backends"].items()]
    bar_chart(args.out / "chart.png", "edgedepth Runtime.predict total ms (ratio: baseline / run; stream fps)", bars,
              width=900)
    print(f"wrote {args.out / 'figures.json'} and {args.out / 'chart.png'}")


if __name__ == "__main__":
    main()
