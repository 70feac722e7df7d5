"""Runtime benchmark: Runtime.predict per backend against a competent torch pipeline on the same models, same threads.

For a 1920x1080 and a 3840x2160 frame (the sample scene, resized), through every backend that is
installed and that the bundle has files for (onnxruntime, openvino, torch), and the baseline: the
same models in plain torch (normalise + F.interpolate the frame, F.interpolate crops of RGB, coarse
depth and features per tile into preallocated batches, one refiner call for all tiles, a
window-weighted sum into a preallocated accumulator times an inverse weight map computed once).
Every side gets the same thread count:
  * --threads (default 2) threads: wall ms, min and median, and the median ms per stage;
  * 1 thread (backend, tile engine and torch): this thread's CPU ms (``time.thread_time()``), min and
    median, and its ratio to wall time (near 1 when the work ran on the calling thread, as the
    figure needs);
repetitions interleaved in a shuffled order (benchmarks/timing.py); ratios baseline / run on the
minima. Runtimes stitch bilinearly, as the baseline does; backends in --guided (default openvino)
also run as "NAME+guided" with the guided-filter upsampling the default bundle ships, and those in
--joint (default openvino) as "NAME+joint" with the joint bilateral upsampling, in the same rounds,
to price them. The models are the bundle's torch checkpoint (or --checkpoint); a bundle without one runs
the baseline's models as its ONNX files in onnxruntime (same threads).

Bundle: the positional argument, else the embedded default (edgedepth/assets/default.edgedepth),
else ``--build DIR`` exports random-init registry models shaped like the default (lite coarse,
prv2-mobile refiner, 128x224 tiles, 4x4 grid; onnx + openvino + torch, fp32/fp16/int8) to DIR.

    python benchmarks/bench_runtime.py [BUNDLE | --build DIR] [--repeat 5] [--threads 2] [--out out/bench_runtime]

Writes figures.json and chart.png to --out; prints the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from charts import bar_chart  # noqa: E402
from timing import min_median, time_interleaved  # noqa: E402

SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840)}
STAGES = ("preprocess", "coarse", "crop", "refine", "stitch", "total")
MODES = ("wall", "cpu")  # --threads threads, wall time; 1 thread, this thread's CPU time
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


def absrel(pred: np.ndarray, ref: np.ndarray) -> float:
    valid = ref > 1e-3
    return float(np.mean(np.abs(pred[valid] - ref[valid]) / ref[valid]))


# ---------------------------------------------------------------- the torch baseline

class TorchModels:
    """The bundle's models as torch callables on ``threads`` threads: coarse(x) -> (depth, [feat...]);
    refiner(*inputs) -> depth (a batch of tiles)."""

    def __init__(self, bundle, checkpoint: Path | None, threads: int) -> None:
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

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads  # the same threads as every other side
            options.inter_op_num_threads = 1

            def session(role: str):
                return ort.InferenceSession(str(bundle.model_file(role, "onnx", "fp32")), options,
                                            providers=["CPUExecutionProvider"])

            c, r = session("coarse"), session("refiner")
            names = [i.name for i in r.get_inputs()]

            def coarse_fn(x):
                out = c.run(None, {c.get_inputs()[0].name: x.numpy()})
                return torch.from_numpy(out[0]), [torch.from_numpy(o) for o in out[1:]]

            def refiner_fn(*args):
                return torch.from_numpy(r.run(None, {n: a.numpy() for n, a in zip(names, args)})[0])

            self.coarse, self.refiner = coarse_fn, refiner_fn
            self.kind = "ONNX fp32 in onnxruntime (no torch checkpoint), all tiles in one refiner call"


class Baseline:
    """One frame size the way a competent torch engineer would write it: integer tile boxes,
    F.interpolate crops into preallocated batch tensors, one refiner call for all tiles, a
    window-weighted sum into a preallocated accumulator times an inverse weight map computed once."""

    def __init__(self, models: TorchModels, rt, height: int, width: int, window: np.ndarray) -> None:
        torch = models.torch
        self.models, self.rt, self.torch = models, rt, torch
        self.height, self.width = height, width
        grid = rt.grid_for(height, width)
        self.boxes = [tuple(int(v) for v in b) for b in grid.boxes.astype(int)]
        self.mean = torch.tensor(rt.mean).view(1, 3, 1, 1)
        self.inv_std = 1.0 / torch.tensor(rt.std).view(1, 3, 1, 1)
        self.win = torch.from_numpy(window)
        inv_weight = torch.zeros(height, width)
        for y0, x0, h, w in self.boxes:
            inv_weight[y0:y0 + h, x0:x0 + w] += self.win
        self.inv_weight = inv_weight.reciprocal_()
        self.acc = torch.empty(height, width)
        n = len(self.boxes)
        self.rgb = torch.empty(n, 3, *rt.tile_size)
        self.depth = torch.empty(n, 1, *rt.tile_size)
        self.guides = [torch.empty(n, ch, *size) for _, _, ch, size in rt.guides]
        self.sources = [int(source[4:]) for _, source, _, _ in rt.guides]

    def _sub(self, src, y0: int, x0: int, h: int, w: int):
        sy, sx = src.shape[-2] / self.height, src.shape[-1] / self.width
        ya, xa = int(round(y0 * sy)), int(round(x0 * sx))
        yb, xb = max(ya + 1, int(round((y0 + h) * sy))), max(xa + 1, int(round((x0 + w) * sx)))
        return src[..., ya:yb, xa:xb]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Depth (H, W) metres of an HxWx3 uint8 frame, clamped at 0."""
        F = self.torch.nn.functional
        img = (self.torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0 - self.mean) * self.inv_std
        depth, feats = self.models.coarse(F.interpolate(img, size=self.rt.coarse_size, mode="bilinear",
                                                        align_corners=False))
        sources = [feats[i] for i in self.sources]
        for i, (y0, x0, h, w) in enumerate(self.boxes):
            self.rgb[i] = F.interpolate(img[..., y0:y0 + h, x0:x0 + w], size=self.rt.tile_size, mode="bilinear",
                                        align_corners=False)[0]
            self.depth[i] = F.interpolate(self._sub(depth, y0, x0, h, w), size=self.rt.tile_size, mode="bilinear",
                                          align_corners=False)[0]
            for f, out in zip(sources, self.guides):
                out[i] = F.interpolate(self._sub(f, y0, x0, h, w), size=out.shape[-2:], mode="bilinear",
                                       align_corners=False)[0]
        tiles = self.models.refiner(self.rgb, self.depth, *self.guides)
        self.acc.zero_()
        for tile, (y0, x0, h, w) in zip(tiles, self.boxes):
            up = F.interpolate(tile[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            self.acc[y0:y0 + h, x0:x0 + w].addcmul_(up, self.win)
        return self.acc.mul(self.inv_weight).clamp_(min=0).numpy()


# ---------------------------------------------------------------- runs

def backend_names(bundle) -> list[str]:
    """The backends this bundle and this install allow."""
    from edgedepth.backends import get_backend

    out = []
    for name in BACKENDS:
        cls = get_backend(name)
        if not cls.is_available():
            print(f"  {name}: skipped ({cls.package} not installed)")
        elif not set(cls.formats) & set(bundle.formats("refiner")):
            print(f"  {name}: skipped (the bundle holds no {'/'.join(cls.formats)} files)")
        else:
            out.append(name)
    return out


def run_mode(bundle_path: Path, bundle, names: list[str], checkpoint: Path | None, threads: int, image: np.ndarray,
             repeat: int, seed: int, cache: Path,
             upsampled: dict[str, list[str]]) -> tuple[dict[str, dict], dict[str, np.ndarray], str]:
    """Every backend and the baseline on ``threads`` threads, interleaved: per run its wall and CPU ms
    lists, stage timings and last depth; and the baseline's model kind. Runtimes stitch bilinearly,
    as the baseline does (the same job); ``upsampled`` maps an upsampling ("joint_bilateral",
    "guided") to the backends also run as "NAME+joint" or "NAME+guided" with it, to price it in the
    same rounds."""
    import torch

    from edgedepth import Runtime, tiling

    runtimes = {name: Runtime(bundle_path, backend=name, device="cpu", threads=threads, cache_dir=cache,
                              upsample="bilinear") for name in names}
    runtimes.update({f"{name}+{up.split('_')[0]}": Runtime(bundle_path, backend=name, device="cpu", threads=threads,
                                                           cache_dir=cache, upsample=up)
                     for up, backends in upsampled.items() for name in backends if name in names})
    names = list(runtimes)
    torch.set_num_threads(threads)  # after the runtimes: a torch runtime sets this process-wide too
    height, width = image.shape[:2]
    rt0 = next(iter(runtimes.values()))
    models = TorchModels(bundle, checkpoint, threads)
    grid = rt0.grid_for(height, width)
    baseline = Baseline(models, rt0, height, width, tiling.window(grid.tile_h, grid.tile_w, rt0.window))
    last: dict[str, Any] = {}
    stages: dict[str, list[dict]] = {name: [] for name in names}

    def predict(name: str) -> None:
        result = runtimes[name].predict(image)
        stages[name].append(result.timings)
        last[name] = result.depth

    def base() -> None:
        with torch.inference_mode():
            last["baseline"] = baseline(image)

    calls = {name: (lambda name=name: predict(name)) for name in names}
    calls["baseline"] = base
    times = time_interleaved(calls, repeat, seed)
    for name in names:
        del stages[name][0]  # the warm-up call
        times[name]["stages"] = stages[name]
    return times, last, models.kind


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--build", type=Path, help="export a random-init default-shaped bundle to this folder and use it")
    p.add_argument("--checkpoint", type=Path, help="torch checkpoint of the bundle's models, for the baseline")
    p.add_argument("--sizes", default="1080p,4K", help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--repeat", type=int, default=5, help="interleaved rounds per mode")
    p.add_argument("--threads", type=int, default=2, help="threads of every side in the wall-time mode")
    p.add_argument("--seed", type=int, default=0, help="the interleaving order")
    p.add_argument("--guided", default="openvino",
                   help="comma list of backends also run with the guided-filter upsampling, the default bundle's "
                        "(default openvino; every other run stitches bilinearly, as the baseline does)")
    p.add_argument("--joint", default="openvino",
                   help="comma list of backends also run with the joint bilateral upsampling (default openvino)")
    p.add_argument("--out", type=Path, default=Path("out/bench_runtime"))
    args = p.parse_args()

    from edgedepth import tiling
    from edgedepth.bundle import open_bundle

    before = machine()
    print(f"machine: {before['cpu']}, {before['cores']} cores, load average {before['load_avg_1_5_15']}")
    bundle_path = resolve_bundle(args.bundle, args.build)
    bundle = open_bundle(bundle_path)
    names = backend_names(bundle)
    if not names:
        raise SystemExit("no backend can run this bundle here")
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join(sys.argv), "machine_before": before, "bundle": str(bundle_path),
                               "threads": args.threads, "repeat": args.repeat,
                               "tile_engine": tiling.native_status(), "sizes": {}}
    for size in args.sizes.split(","):
        height, width = SIZES[size]
        image = sample_frame(height, width)
        row: dict[str, Any] = {"frame": [height, width], "runs": {}}
        for i, (mode, n) in enumerate(zip(MODES, (args.threads, 1))):
            times, last, kind = run_mode(bundle_path, bundle, names, args.checkpoint, n, image, args.repeat,
                                         args.seed + i, cache,
                                         {"guided": [b for b in args.guided.split(",") if b],
                                          "joint_bilateral": [b for b in args.joint.split(",") if b]})
            results["baseline_models"] = kind
            for name, t in times.items():
                fig = row["runs"].setdefault(name, {})
                fig[f"{mode}_ms"] = min_median(t[mode])
                if mode == "wall":
                    if "stages" in t:
                        fig["stages_ms_median"] = {s: float(np.median([st[s] for st in t["stages"]])) for s in STAGES}
                    fig["absrel_vs_baseline"] = absrel(last[name], last["baseline"])
                else:  # CPU time counts the work only if it ran on the calling thread
                    fig["cpu_over_wall_1t"] = float(np.median(np.divide(t["cpu"], t["wall"])))
        base = row["runs"]["baseline"]
        for fig in row["runs"].values():
            fig["baseline_over_run"] = {f"{m}_min": base[f"{m}_ms"]["min"] / fig[f"{m}_ms"]["min"] for m in MODES}
        results["sizes"][size] = row
        print(f"\n{size} ({width}x{height}); wall: {args.threads} threads; cpu: 1 thread, this thread's CPU time; "
              f"{args.repeat} interleaved rounds; baseline: {kind}")
        print(f"{'run':15s} {'wall min':>9s} {'wall med':>9s} {'cpu min':>9s} {'cpu med':>9s} {'cpu/wall':>8s} "
              f"{'base/run wall':>13s} {'base/run cpu':>12s} {'AbsRel vs base':>14s}  stages (median ms, wall)")
        for name, fig in row["runs"].items():
            st = " ".join(f"{s} {v:.1f}" for s, v in fig.get("stages_ms_median", {}).items() if s != "total")
            print(f"{name:15s} {fig['wall_ms']['min']:9.1f} {fig['wall_ms']['median']:9.1f} {fig['cpu_ms']['min']:9.1f} "
                  f"{fig['cpu_ms']['median']:9.1f} {fig['cpu_over_wall_1t']:8.2f} "
                  f"{fig['baseline_over_run']['wall_min']:13.2f} {fig['baseline_over_run']['cpu_min']:12.2f} "
                  f"{fig['absrel_vs_baseline']:14.2e}  {st}", flush=True)
    results["machine_after"] = machine()
    print(f"\nload average after: {results['machine_after']['load_avg_1_5_15']}")

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "figures.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out / "figures.json")
    bars = [(f"{size}: {name}", fig["wall_ms"]["min"],
             f"{fig['wall_ms']['min']:.0f} ms ({args.threads} thr), {fig['baseline_over_run']['wall_min']:.2f}x; "
             f"1-thr CPU {fig['cpu_ms']['min']:.0f} ms")
            for size, row in results["sizes"].items() for name, fig in row["runs"].items()]
    bar_chart(args.out / "chart.png", "edgedepth Runtime.predict min ms vs a torch pipeline, same threads "
              "(ratio: baseline / run)", bars, width=900)
    print(f"wrote {args.out / 'figures.json'} and {args.out / 'chart.png'}")


if __name__ == "__main__":
    main()
