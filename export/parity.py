"""Parity report: every exported variant scored against the float32 torch model and ground truth.

A variant is a callable from refiner feeds (or the coarse input) to depth; it is run over held-out
frames prepared by :mod:`edgedepth.export.frames`. Scores follow METHODS.md §5 (AbsRel, δ1, RMSE
on valid pixels). INT8 variants must stay within a bound of the float32 model's AbsRel vs ground
truth (default +2 % relative), or the export fails naming the variant.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edgedepth import metrics

from .frames import FrameTiles, stitch_frame

DEFAULT_INT8_BOUND = 0.02  # relative AbsRel increase allowed for INT8 variants


class ParityError(ValueError):
    """A quantized variant drifted beyond its bound."""


@dataclass(frozen=True)
class ParityRow:
    """Scores of one variant (``role/format/precision``) over the held-out frames; depths in metres."""

    variant: str
    absrel_vs_fp32: float   # mean |p - p_fp32| / p_fp32 against the torch float32 model
    absrel_vs_gt: float     # AbsRel against ground truth
    delta1: float           # share of valid pixels with max(p/g, g/p) < 1.25
    rmse: float             # against ground truth, metres
    max_abs: float          # max |p - p_fp32|, metres
    bytes: int              # size on disk

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "variant"}


def scores(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[float, float, float]:
    """(AbsRel, δ1, RMSE) of ``pred`` vs ``gt`` over ``valid`` pixels, as :mod:`edgedepth.metrics`
    scores them (prediction clamped to the valid depth range)."""
    pred, ok = metrics.prepare(pred, gt, valid)
    if not ok.any():
        raise ValueError("no valid ground-truth pixels to score")
    m = metrics.pointwise_metrics(pred[ok], gt[ok])
    return m["abs_rel"], m["delta1"], m["rmse"]


def score_refiner(variant: str, run: Callable[[dict[str, np.ndarray]], np.ndarray], frames: Sequence[FrameTiles],
                  window: str, size_bytes: int) -> ParityRow:
    """Score a refiner variant: ``run(feeds) -> (N, 1, th, tw)`` tiles, stitched per frame."""
    preds = [stitch_frame(run(f.inputs), f, window) for f in frames]
    return _row(variant, preds, [f.reference for f in frames], frames, size_bytes)


def score_coarse(variant: str, run: Callable[[np.ndarray], np.ndarray], inputs: Sequence[np.ndarray],
                 frames: Sequence[FrameTiles], size_bytes: int) -> ParityRow:
    """Score a coarse variant: ``run(image (1,3,h,w)) -> (1,1,h,w)`` depth, upsampled to the frame."""
    from edgedepth import tiling

    def to_frame(d: np.ndarray, shape) -> np.ndarray:
        whole = np.array([[0.0, 0.0, *d.shape[-2:]]])
        return tiling.crop_resize(np.asarray(d, np.float32).reshape(1, *d.shape[-2:]), whole, tuple(shape))[0, 0]

    preds = [to_frame(f.coarse_metres(np.asarray(run(x)).reshape(f.coarse.shape)), f.gt.shape)
             for x, f in zip(inputs, frames)]
    refs = [to_frame(f.coarse_metres(f.coarse), f.gt.shape) for f in frames]
    return _row(variant, preds, refs, frames, size_bytes)


def _row(variant, preds, refs, frames, size_bytes) -> ParityRow:
    every = [np.ones_like(f.valid) for f in frames]
    vs_ref = [scores(p, r, m) for p, r, m in zip(preds, refs, every)]
    vs_gt = [scores(p, f.gt, f.valid) for p, f in zip(preds, frames)]
    max_abs = max(float(np.max(np.abs(p - r))) for p, r in zip(preds, refs))
    return ParityRow(variant, float(np.mean([s[0] for s in vs_ref])), float(np.mean([s[0] for s in vs_gt])),
                     float(np.mean([s[1] for s in vs_gt])), float(np.mean([s[2] for s in vs_gt])),
                     max_abs, int(size_bytes))


def reference_row(role: str, frames: Sequence[FrameTiles]) -> ParityRow:
    """The float32 torch model's own scores (the baseline every bound is relative to)."""
    from edgedepth import tiling

    if role == "refiner":
        preds = [f.reference for f in frames]
    else:
        maps = [np.ascontiguousarray(f.coarse_metres(f.coarse), dtype=np.float32) for f in frames]
        preds = [tiling.crop_resize(m[None], np.array([[0.0, 0.0, *m.shape]]), tuple(f.gt.shape))[0, 0]
                 for m, f in zip(maps, frames)]
    return _row(f"{role}/torch/fp32", preds, preds, frames, 0)


def check_drift(rows: Sequence[ParityRow], baselines: Mapping[str, ParityRow],
                bound: float = DEFAULT_INT8_BOUND) -> None:
    """Raise ParityError naming every INT8 variant whose AbsRel vs GT exceeds its role's float32
    AbsRel by more than ``bound`` (relative)."""
    bad = []
    for row in rows:
        if not row.variant.endswith("/int8"):
            continue
        base = baselines[row.variant.split("/")[0]].absrel_vs_gt
        drift = row.absrel_vs_gt / base - 1.0 if base > 0 else np.inf
        if drift > bound:
            bad.append(f"{row.variant}: AbsRel {row.absrel_vs_gt:.4f} vs float32 {base:.4f} "
                       f"(+{100 * drift:.2f} %, bound +{100 * bound:.2f} %)")
    if bad:
        raise ParityError("INT8 drifted beyond its bound — " + "; ".join(bad)
                          + ". Use more/better calibration frames, keep more layers in float, or raise the bound.")


def markdown(rows: Sequence[ParityRow], skipped: Sequence[tuple[str, str]] = ()) -> str:
    """The parity table as markdown (one row per variant), then each ``(variant, why)`` that
    could not be scored on this machine."""
    head = ("| variant | AbsRel vs fp32 | AbsRel vs GT | δ1 | RMSE (m) | max abs (m) | size |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {r.variant} | {r.absrel_vs_fp32:.2e} | {r.absrel_vs_gt:.4f} | {r.delta1:.4f} | "
                   f"{r.rmse:.4f} | {r.max_abs:.4f} | {_size(r.bytes)} |\n" for r in rows)
    notes = "".join(f"- {variant}: {why}\n" for variant, why in skipped)
    return head + body + (f"\nNot scored here:\n\n{notes}" if notes else "")


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
