"""A refiner's frame-wide depth bias: measured on tuning frames, folded into its residual head.

A refiner sees tiles, never the whole frame, yet it can learn a constant lean: the shipped one reads
every frame about 2.4 % farther than its coarse map, on frames where the coarse map is too near and
too far alike, because in training the shadow shapes made the coarse map read near on half the
frames (docs/experiments.md, "The refiner's lean"). Such a lean carries no information about
the frame, and AbsRel and RMSE pay for it on every frame. With a log residual the refined depth is
``coarse * exp(r)``, so subtracting a constant from the last convolution's bias scales every output
by the same factor, exactly, in every export of the model.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from edgedepth.metrics import MAX_DEPTH
from edgedepth.tiling import Tiling

from .pipeline import refine_frame

# The procedural stream that choices and calibrations are made on (benchmarks/bench_accuracy.py's
# tuning frames), never the held-out streams 3000/3001.
TUNE_STREAM = 1001


def frame_log_bias(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, valid_max: float = MAX_DEPTH) -> float:
    """Median of ln(pred / gt) (H, W maps, metres) over pixels of ``mask`` with ground truth in
    (0, valid_max] and a finite positive prediction; NaN when there is none."""
    ok = mask & (gt > 0) & (gt <= valid_max) & np.isfinite(pred) & (pred > 0)
    if not ok.any():
        return float("nan")
    return float(np.median(np.log(pred[ok].astype(np.float64) / gt[ok])))


def measure_log_bias(coarse: nn.Module, refiner: nn.Module, frames: Iterable[dict], tiling_cfg: Tiling,
                     fit: str = "pad") -> list[dict]:
    """Per frame (dicts with ``image``, ``depth`` and ``reliable``), the median ln depth ratio to the
    ground truth of the refined map and of the coarse map upsampled bilinearly."""
    from edgedepth.metrics import resize_bilinear

    rows = []
    for f in frames:
        out = refine_frame(coarse, refiner, f["image"], tiling_cfg, fit=fit)
        gt, mask = f["depth"], f["reliable"]
        coarse_up = resize_bilinear(np.asarray(out.coarse, np.float32), gt.shape)
        rows.append({"size": list(gt.shape), "refined": frame_log_bias(out.depth, gt, mask),
                     "coarse": frame_log_bias(coarse_up, gt, mask)})
    return rows


def fold_log_shift(refiner: nn.Module, shift: float) -> None:
    """Make ``refiner`` output its depth times exp(-shift): the constant comes off the bias of its
    final residual convolution (``refiner.out``), which only a log residual turns into a scale."""
    if getattr(refiner, "residual", None) != "log":
        raise ValueError(f"a depth scale folds only into a log residual, this refiner's is "
                         f"{getattr(refiner, 'residual', None)!r}")
    head = getattr(refiner, "out", None)
    if not isinstance(head, nn.Conv2d) or head.bias is None or head.out_channels != 1:
        raise ValueError("the refiner has no one-channel final convolution with a bias (refiner.out) to fold into")
    if not np.isfinite(shift):
        raise ValueError(f"shift must be finite, got {shift}")
    with torch.no_grad():
        head.bias -= float(shift)
