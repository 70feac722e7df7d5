"""Refiner recipe ablation: every change of the recipe trained with the same budget from the same
frozen coarse model, then scored on the accuracy benchmark's held-out frames.

Rows follow PatchRefiner V2's ablation (F2C only -> + C2F -> + GDU -> + Noisy Pretraining), then
each other choice of the shipped recipe switched back one at a time (BFM, GPCT weight, residual in
metres, SILog, no edge weighting, no full-resolution branch, BatchNorm), and PRV2's published settings (metres
residual, SILog 0.85, BFM, no edge weighting, encoder lr x0.1, lr 1.2e-3) as "before", and the heavy
``patchrefiner`` beside the lite one (PRV2's lite vs heavy).

    python benchmarks/ablation.py --coarse runs/default-coarse/final --noisy runs/default-noisy/final \\
        --shards data/train1080 --steps 1000 --out out/ablation [--parallel 2] [--only a,b]

Each variant trains into OUT/runs/NAME (resumable: a finished one is skipped), then
benchmarks/bench_accuracy.py scores them all (1080p frames by default) into OUT/bench.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (refiner_kwargs updates, other overrides, start from Noisy Pretraining)
VARIANTS: dict[str, tuple[dict, dict, bool]] = {
    "f2c-only": ({"c2f": False}, {"loss.c2f": 0.0}, False),
    "c2f-no-gdu": ({"gdu": False}, {}, False),
    "c2f-gdu": ({}, {}, False),
    "default": ({}, {}, True),  # + Noisy Pretraining: the shipped recipe
    "no-edge-weight": ({}, {"loss.edge_weight": 0.0}, True),
    "bfm": ({}, {"loss.bfm": True}, True),
    "gpct-0": ({}, {"loss.gpct": 0.0}, True),
    "gpct-10": ({}, {"loss.gpct": 10.0}, True),
    "residual-metres": ({"residual": "metres"}, {}, True),
    "silog": ({}, {"loss.depth": "silog"}, True),
    # Without the full-resolution branch the Noisy Pretraining weights do not fit: these start from scratch.
    "no-full-res": ({"full_res": False}, {}, False),
    # The Noisy Pretraining weights are GroupNorm's (BatchNorm adds running statistics): compare with c2f-gdu.
    "batchnorm": ({"norm": "bn"}, {}, False),
    # The heavy PatchRefiner baseline (a copy of the coarse model per tile; it has no width): lite vs
    # heavy at the same budget, compare with c2f-gdu (both from scratch).
    "patchrefiner": ({"width": None}, {"model.refiner": "patchrefiner"}, False),
    "prv2-published": ({"residual": "metres", "full_res": False},
                       {"loss.depth": "silog", "loss.c2f": 0.0, "loss.bfm": True, "loss.edge_weight": 0.0, "optim.lr": 1.2e-3,
                        "optim.encoder_lr_mult": 0.1}, False),
}
BASE_REFINER = {"width": 0.5, "decoder_width": 0.5}


def command(name: str, args) -> list[str]:
    kw, overrides, noisy = VARIANTS[name]
    refiner_kwargs = {k: v for k, v in {**BASE_REFINER, **kw}.items() if v is not None}
    sets = {"model.coarse_checkpoint": args.coarse, "data.shards": f"[{args.shards}]", "train.steps": args.steps,
            "train.val_every": args.steps, "train.ckpt_every": 250, "train.log_every": 50,
            "model.refiner_kwargs": "{" + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}"
                                                    for k, v in refiner_kwargs.items()) + "}",
            "model.init_refiner": args.noisy if noisy else "null", **overrides}
    cmd = [sys.executable, "-m", "edgedepth.cli", "train", str(REPO / "configs" / "default-refiner.yaml"),
           "--out", str(Path(args.out) / "runs" / name)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coarse", required=True, help="frozen coarse checkpoint (runs/default-coarse/final)")
    ap.add_argument("--noisy", required=True, help="Noisy Pretraining checkpoint (runs/default-noisy/final)")
    ap.add_argument("--shards", required=True, help="training shard folders, comma-separated (data/train1080,data/train2160)")
    ap.add_argument("--steps", type=int, default=1000, help="steps per variant (default 1000: 8000 tiles)")
    ap.add_argument("--out", default="out/ablation")
    ap.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--parallel", type=int, default=1, help="variants trained at once (one thread each)")
    ap.add_argument("--frames", default="1080p:8", help="bench_accuracy --frames (default 1080p:8)")
    ap.add_argument("--no-bench", action="store_true", help="train only")
    args = ap.parse_args(argv)
    names = list(VARIANTS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    todo = [n for n in names if not (Path(args.out) / "runs" / n / "final" / "model.json").is_file()]
    running: list[tuple[str, subprocess.Popen]] = []
    logs = Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = []
    while todo or running:
        while todo and len(running) < args.parallel:
            name = todo.pop(0)
            print(f"training {name}", flush=True)
            log = open(logs / f"{name}.log", "w")
            running.append((name, subprocess.Popen(command(name, args), stdout=log, stderr=subprocess.STDOUT)))
        name, proc = running[0]
        if proc.wait() != 0:
            failed.append(name)
            print(f"{name} failed: see {logs / (name + '.log')}", flush=True)
        running.pop(0)
    if failed:
        return 1
    if args.no_bench:
        return 0
    bench = [sys.executable, str(REPO / "benchmarks" / "bench_accuracy.py"), "--frames", args.frames,
             "--out", str(Path(args.out) / "bench"), "--png-frames", "1", "--no-seams"]
    for name in names:
        bench += ["--refiner", f"{name}={Path(args.out) / 'runs' / name / 'final'}"]
    return subprocess.call(bench)


if __name__ == "__main__":
    sys.exit(main())
