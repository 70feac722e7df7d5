"""Take a refiner's constant lean off: measure how much farther (or nearer) than the ground truth it
reads on tuning frames, fold the mean into its residual head (train/calibration.py), write a new
checkpoint.

    python scripts/calibrate_refiner.py runs/default-refiner-640/final runs/default-refiner-cal

Frames: the tuning stream of the accuracy benchmark (1001; never the held-out streams 3000/3001),
32 at 1080p and 12 at 4K by default, rendered once into --data. The shift is the mean over frames of
each frame's median ln(refined / ground truth); the checkpoint records it under
``train.calibration``. A few minutes on one core, most of them rendering.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840)}


def _counts(text: str) -> dict[str, int]:
    counts = {}
    for item in text.split(","):
        size, _, n = item.partition(":")
        if size not in SIZES or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--frames: expected e.g. 1080p:32,4K:12, got {text!r}")
        counts[size] = int(n)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint folder with a coarse model and a log-residual refiner")
    ap.add_argument("out", help="checkpoint folder to write (must not exist)")
    ap.add_argument("--frames", default="1080p:32,4K:12", help="tuning frames per size (default 1080p:32,4K:12)")
    ap.add_argument("--data", default="out/calibration_data", help="where the tuning frames are rendered once")
    ap.add_argument("--upsample", default="guided", help="how tiles become the frame while measuring (the export's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists: give a new folder")
    counts = _counts(args.frames)

    import dataclasses

    import torch

    from edgedepth.coarse_fit import fit_for_training
    from edgedepth.tiling import Tiling
    from edgedepth.train.calibration import TUNE_STREAM, fold_log_shift, measure_log_bias
    from edgedepth.train.checkpoint import load_models, save_models
    from edgedepth.train.shards import ShardFrames, render_shards

    torch.set_num_threads(1)
    coarse, refiner, meta = load_models(args.checkpoint)
    if refiner is None:
        raise SystemExit(f"{args.checkpoint}: holds no refiner")
    train_meta = meta.get("train", {})
    tiling_cfg = dataclasses.replace(Tiling(**train_meta.get("tiling", {})), upsample=args.upsample)
    fit = fit_for_training(train_meta.get("frame_size"), tuple(coarse.input_size))
    rows = []
    for size, n in counts.items():
        root = render_shards(Path(args.data) / f"tune_{size}_{n}", n, SIZES[size], seed=TUNE_STREAM, shard_size=4)
        src = ShardFrames([root])
        got = measure_log_bias(coarse, refiner, (src.frame(i) for i in range(n)), tiling_cfg, fit)
        rows += got
        print(f"{size}: {n} frames, median ln(depth / ground truth) averaged: refined "
              f"{np.mean([r['refined'] for r in got]):+.4f}, coarse {np.mean([r['coarse'] for r in got]):+.4f}",
              flush=True)
    biases = np.array([r["refined"] for r in rows])
    if not np.isfinite(biases).all():
        raise SystemExit("a tuning frame has no valid ground truth to measure on")
    shift = float(biases.mean())
    fold_log_shift(refiner, shift)
    meta = dict(meta)
    meta["train"] = {**train_meta, "calibration": {
        "log_shift": shift, "stream": TUNE_STREAM, "frames": counts,
        "coarse_bias": float(np.mean([r["coarse"] for r in rows]))}}
    save_models(out, coarse, refiner, meta)
    print(f"folded a shift of {shift:+.4f} in ln depth (depth x {np.exp(-shift):.4f}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
