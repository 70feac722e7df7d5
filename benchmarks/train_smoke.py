"""CPU smoke training: a real lite coarse model on real procedural scenes for a couple of minutes.

Prints the validation curve (SILog loss, AbsRel) and writes it as a PNG; the point is that the
validation loss falls. Usage:

    python benchmarks/train_smoke.py [--steps 80] [--out runs/smoke]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw

from edgedepth.train.config import config_from_dict
from edgedepth.train.trainer import Trainer, read_metrics


def plot(rows: list[dict], keys: list[str], path: Path, size=(640, 360)) -> None:
    """Line plot of val metrics against step (each curve scaled to its own range), as a PNG."""
    w, h, pad = size[0], size[1], 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad // 2, w - pad // 2, h - pad], outline="black")
    steps = [int(r["step"]) for r in rows]
    colors = ["#d62728", "#1f77b4", "#2ca02c"]
    for i, (key, color) in enumerate(zip(keys, colors)):
        vals = [r[key] for r in rows]
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        pts = [(pad + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (w - 1.5 * pad),
                h - pad - (v - lo) / span * (h - 1.5 * pad)) for s, v in zip(steps, vals)]
        d.line(pts, fill=color, width=2)
        d.text((pad + 5, pad // 2 + 5 + 14 * i), f"{key}: {vals[0]:.3f} -> {vals[-1]:.3f}", fill=color)
    d.text((pad, h - pad + 8), f"step {steps[0]}", fill="black")
    d.text((w - 3 * pad, h - pad + 8), f"step {steps[-1]}", fill="black")
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--out", default="runs/smoke")
    args = ap.parse_args()
    cfg = config_from_dict({
        "name": "smoke",
        "model": {"coarse": "lite", "coarse_kwargs": {"encoder": "mobilenetv3_small", "width": 0.5,
                                                      "input_size": [64, 96], "decoder_channels": [16, 16, 32, 32]}},
        "data": {"frame_size": [96, 128], "val_samples": 8},
        "optim": {"lr": 3e-3, "encoder_lr_mult": 1.0, "warmup_steps": 5},
        "train": {"stage": "coarse", "steps": args.steps, "batch_size": 4, "log_every": 5,
                  "val_every": max(1, args.steps // 8), "ckpt_every": args.steps, "tensorboard": False,
                  "out_dir": args.out},
    })
    t0 = time.perf_counter()
    Trainer(cfg, resume="never").fit()
    wall = time.perf_counter() - t0
    rows = read_metrics(Path(args.out) / "val.csv")
    print(f"\n{'step':>6} {'val SILog loss':>15} {'val AbsRel':>11} {'val delta1':>11}")
    for r in rows:
        print(f"{int(r['step']):>6} {r['val/loss']:>15.4f} {r['val/absrel']:>11.4f} {r['val/delta1']:>11.4f}")
    first, last = rows[0], rows[-1]
    print(f"\nval loss {first['val/loss']:.4f} -> {last['val/loss']:.4f} "
          f"({last['val/loss'] / first['val/loss']:.2f}x), AbsRel {first['val/absrel']:.4f} -> {last['val/absrel']:.4f}, "
          f"{args.steps} steps in {wall:.0f} s")
    png = Path(args.out) / "val_curve.png"
    plot(rows, ["val/loss", "val/absrel"], png)
    print(f"curve: {png}")


if __name__ == "__main__":
    main()
