"""Lite vs heavy refiners on this machine (PatchRefiner V2's comparison): parameters, FLOPs and the
time of one frame's tiles, at the same tile size and grid, through ONNX Runtime and OpenVINO.

Refiners (128x224 tiles, 16 per call: the default 4x4 grid at 1080p), all against the default lite
coarse model's features: ``prv2-mobile`` as shipped (width 0.5, decoder 0.5, GroupNorm), the same
with BatchNorm (folded into the convolutions at export), and the heavy ``patchrefiner`` (a full copy
of the coarse model run on every tile, as PatchRefiner does; here that copy is the lite coarse model,
so "heavy" is 2.3x the FLOPs, where PatchRefiner's ZoeDepth copy is far more). Weights are the shipped refiner's where the
architecture matches (--checkpoint), else random: time, size and FLOPs do not depend on them.
Accuracy of the same families comes from benchmarks/ablation.py and bench_accuracy.py.

Every model runs with the same threads, repetitions interleaved in a shuffled order; 2-thread wall
and 1-thread CPU time (``time.thread_time()``), min and median.

    python benchmarks/bench_refiners.py [--checkpoint runs/default-refiner/final] [--repeat 7] [--out out/bench_refiners]

Writes figures.json, table.md and chart.png to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_export import graph_flops  # noqa: E402
from bench_runtime import machine  # noqa: E402
from charts import bar_chart  # noqa: E402
from timing import min_median, time_interleaved  # noqa: E402

TILE = (128, 224)
TILES = 16
PRV2 = {"width": 0.5, "decoder_width": 0.5}
# label -> (registry name, kwargs, is the shipped architecture)
REFINERS = {"prv2-mobile GN (shipped)": ("prv2-mobile", PRV2, True),
            "prv2-mobile BN": ("prv2-mobile", {**PRV2, "norm": "bn"}, False),
            "patchrefiner (heavy)": ("patchrefiner", {}, False)}


def build(checkpoint: Path | None) -> tuple[Any, dict[str, Any]]:
    """The coarse model and every refiner of REFINERS (eval mode)."""
    import torch

    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    if checkpoint is not None and checkpoint.is_dir():
        from edgedepth.train.checkpoint import load_models

        coarse, shipped, _ = load_models(checkpoint)
    else:
        coarse, shipped = create_coarse("lite", input_size=(192, 320)), None
    models = {}
    for label, (name, kw, is_shipped) in REFINERS.items():
        shipped_row = is_shipped and shipped is not None and tuple(shipped.tile_size) == TILE
        models[label] = (shipped if shipped_row else create_refiner(name, coarse, TILE, **kw)).eval()
    return coarse.eval(), models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=REPO / "runs" / "default-refiner" / "final")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("out/bench_refiners"))
    args = ap.parse_args()
    import onnxruntime as ort
    import openvino as ov

    from edgedepth.export.onnx_export import export_refiner, refiner_example_inputs, refiner_input_names

    _, models = build(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    fig: dict[str, Any] = {"machine": machine(), "tile": list(TILE), "tiles": TILES, "threads": args.threads,
                           "repeat": args.repeat, "refiners": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sessions: dict[str, dict[int, Any]] = {}
        feeds: dict[str, dict[str, np.ndarray]] = {}
        for label, model in models.items():
            path = export_refiner(model, Path(tmp) / f"{len(feeds)}.onnx")
            example = refiner_example_inputs(model, TILES)
            feeds[label] = {n: t.numpy() for n, t in zip(refiner_input_names(model), example)}
            fig["refiners"][label] = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                                      "gflop_per_tile": round(graph_flops(path) / 1e9, 3)}
            core = ov.Core()
            ir = core.read_model(str(path))
            ir.reshape({n: list(v.shape) for n, v in feeds[label].items()})
            for n in (1, args.threads):
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = n
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                compiled = core.compile_model(ir, "CPU", {"INFERENCE_NUM_THREADS": n, "PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": "f32"})
                sessions.setdefault(label, {})[n] = (sess, compiled)
        for n, clock in ((args.threads, "wall"), (1, "cpu")):
            calls = {}
            for label in models:
                sess, compiled = sessions[label][n]
                calls[f"{label}|onnxruntime"] = (lambda s=sess, f=feeds[label]: s.run(None, f))
                calls[f"{label}|openvino"] = (lambda c=compiled, f=feeds[label]: c(f))
            for key, both in time_interleaved(calls, args.repeat).items():
                label, backend = key.split("|")
                ms = both[clock]
                fig["refiners"][label].setdefault(backend, {})[f"{clock}_{n}t"] = {
                    f"{k}_ms": round(v, 1) for k, v in min_median(ms).items()}
    base = fig["refiners"][next(iter(REFINERS))]
    lines = [f"# Refiners, {TILES} tiles of {TILE[0]}x{TILE[1]} per call ({fig['machine']['cpu']}, {fig['machine']['date']})", "",
             f"| refiner | params (M) | GFLOP/tile | ORT {args.threads}t wall min/med ms | ORT 1t CPU min | "
             f"OpenVINO {args.threads}t wall min/med ms | OpenVINO 1t CPU min | time vs shipped (OV, 1t CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    bars = []
    for label, r in fig["refiners"].items():
        o, v = r["onnxruntime"], r["openvino"]
        wall = f"wall_{args.threads}t"
        ratio = v["cpu_1t"]["min_ms"] / base["openvino"]["cpu_1t"]["min_ms"]
        r["time_vs_shipped"] = round(ratio, 2)
        lines.append(f"| {label} | {r['params_m']} | {r['gflop_per_tile']} | {o[wall]['min_ms']} / {o[wall]['median_ms']} | "
                     f"{o['cpu_1t']['min_ms']} | {v[wall]['min_ms']} / {v[wall]['median_ms']} | {v['cpu_1t']['min_ms']} | "
                     f"{ratio:.2f}x |")
        bars += [(f"{label} ORT", o[wall]["median_ms"], f"{o[wall]['median_ms']:.0f} ms"),
                 (f"{label} OpenVINO", v[wall]["median_ms"], f"{v[wall]['median_ms']:.0f} ms")]
    table = "\n".join(lines) + "\n"
    (args.out / "figures.json").write_text(json.dumps(fig, indent=1))
    (args.out / "table.md").write_text(table)
    bar_chart(args.out / "chart.png", f"{TILES} refiner tiles, median ms, {args.threads} threads, {fig['machine']['date']}", bars)
    print(table)


if __name__ == "__main__":
    main()
