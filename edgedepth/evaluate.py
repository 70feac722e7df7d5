"""Evaluation: score predictions, a bundle or a checkpoint on a data set (``edgedepth eval``).

:func:`evaluate` is the one loop (the export parity report and the tests reuse it): it calls
``predict_fn(sample) -> HxW depth`` per sample, scores with :func:`edgedepth.metrics.compute_metrics`
and writes ``metrics.json`` (means, per-sample scores, settings), ``metrics.md`` (a table) and,
for the first ``max_png`` samples, ``png/<name>_depth.png`` (prediction, colourised on the gt
range), ``png/<name>_error.png`` (AbsRel map, 0..0.25, invalid black) and ``png/<name>_edges.png``
(image with gt edges green, predicted edges red, both yellow).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from . import metrics as M
from .commands.arguments import tile_grid
from .datasets.sample import Sample
from .atomic import atomic_path
from .depth_io import colorize, colorize_depth, read_npy, write_image

PredictFn = Callable[[Sample], np.ndarray]
_TABLE_KEYS = ("delta1", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "see", "b_f1", "si_bf1", "ord")


def evaluate(predict_fn: PredictFn, dataset: Sequence[Sample], out_dir=None, *, min_depth: float = M.MIN_DEPTH,
             max_depth: float = M.MAX_DEPTH, align_mode: Optional[str] = None,
             focal_baseline: Optional[float] = None, boundary: bool = True, limit: Optional[int] = None,
             max_png: int = 4, progress: bool = True, desc: str = "eval") -> dict:
    """Score ``predict_fn`` on ``dataset`` (a Sequence of Samples; the first ``limit`` if given).

    Returns ``{"metrics": per-image means, "per_sample": [{"name", metrics..., "seconds"}],
    "count": n, "seconds_per_frame": mean predict time, "settings": {...}}`` and writes the
    files described in the module docstring when ``out_dir`` is given."""
    from tqdm import tqdm

    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n < 1:
        raise ValueError("evaluate needs at least one sample (empty data set or limit < 1)")
    out = Path(out_dir) if out_dir is not None else None
    per_sample = []
    for i in tqdm(range(n), desc=desc, unit="frame", disable=None if progress else True):  # quiet in logs
        sample = dataset[i]
        t0 = time.perf_counter()
        pred = predict_fn(sample)
        seconds = time.perf_counter() - t0
        pred = np.asarray(pred)
        if pred.ndim == 3 and pred.shape[0] == 1:
            pred = pred[0]
        if pred.ndim != 2:
            raise ValueError(f"prediction for {sample['name']!r} has shape {pred.shape}, expected HxW")
        scores = M.compute_metrics(pred.astype(np.float32), sample["depth"], sample["mask"], min_depth=min_depth,
                                   max_depth=max_depth, align_mode=align_mode, focal_baseline=focal_baseline,
                                   boundary=boundary)
        per_sample.append({"name": sample["name"], **scores, "seconds": seconds})
        if out is not None and i < max_png:
            _write_pngs(out / "png", sample, pred, min_depth, max_depth, align_mode)
    means = M.mean_metrics([{k: v for k, v in s.items() if k not in ("name", "seconds")} for s in per_sample])
    result = {
        "metrics": means,
        "per_sample": per_sample,
        "count": n,
        "seconds_per_frame": float(np.mean([s["seconds"] for s in per_sample])),
        "settings": {"min_depth": min_depth, "max_depth": max_depth, "align": align_mode,
                     "focal_baseline": focal_baseline, "boundary": boundary},
    }
    if out is not None:
        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(_jsonable(result), indent=2))
        with atomic_path(out / "metrics.md") as tmp:
            tmp.write_text(markdown_table(result, title=desc))
    return result


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN
    return x


def markdown_table(result: dict, title: str = "eval") -> str:
    """A markdown table of the mean metrics (and the sample count) of an :func:`evaluate` result."""
    m = result["metrics"]
    keys = [k for k in _TABLE_KEYS if k in m]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"
    lines = [f"## {title}", "", f"{result['count']} frames, {result['seconds_per_frame']:.3f} s/frame, "
             f"settings: {json.dumps(result['settings'])}", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys), "| " + " | ".join(fmt(m[k]) for k in keys) + " |"]
    return "\n".join(lines) + "\n"


def _write_pngs(folder: Path, sample: Sample, pred: np.ndarray, min_depth, max_depth, align_mode) -> None:
    gt = sample["depth"]
    p, valid = M.prepare(pred.astype(np.float32), gt, sample["mask"], min_depth=min_depth, max_depth=max_depth,
                         align_mode=align_mode)
    name = sample["name"]
    if valid.any():
        lo, hi = float(np.percentile(gt[valid], 2)), float(np.percentile(gt[valid], 98))
        write_image(folder / f"{name}_depth.png", colorize_depth(p, lo, max(hi, lo)))
    else:
        write_image(folder / f"{name}_depth.png", colorize_depth(p))
    err = np.where(valid, np.abs(p - gt) / np.where(valid, gt, 1), 0)
    write_image(folder / f"{name}_error.png", colorize(err, 0.0, 0.25, invalid=~valid))
    eg, ep = M.depth_edges(gt, valid), M.depth_edges(p, valid)
    overlay = (sample["image"].astype(np.float32) * 0.5).astype(np.uint8)
    overlay[eg] = (0, 255, 0)
    overlay[ep] = (255, 0, 0)
    overlay[eg & ep] = (255, 255, 0)
    write_image(folder / f"{name}_edges.png", overlay)


# ----------------------------------------------------------------------------- predictors


def folder_predictor(folder) -> PredictFn:
    """Predictions stored as ``folder/<sample name>.npy`` (HxW float32 metres, any size)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {folder}")

    def predict(sample: Sample) -> np.ndarray:
        return read_npy(folder / f"{sample['name']}.npy")

    return predict


def bundle_predictor(bundle, **runtime_kwargs) -> PredictFn:
    """``edgedepth.Runtime(bundle, **runtime_kwargs).predict(image, intrinsics).depth``."""
    from . import Runtime

    runtime = Runtime(bundle, **runtime_kwargs)

    def predict(sample: Sample) -> np.ndarray:
        return runtime.predict(sample["image"], sample["intrinsics"]).depth

    return predict


def checkpoint_predictor(path, tiles: Optional[tuple[int, int]] = None, overlap_ratio: float = 0.25,
                         window: str = "cosine", device: str = "cpu") -> PredictFn:
    """A training checkpoint (``edgedepth.train.checkpoint.load_models``) run in torch with the
    runtime's frame pipeline (``edgedepth.train.pipeline.refine_frame``): coarse on the frame fitted
    to its input as a bundle exported from it would (``coarse_fit``), refiner on ``tiles`` = (rows, cols)
    tiles (default 2x2) cut with the runtime's grid and crop rule, stitched with ``window``;
    coarse only when the checkpoint has no refiner. Depth is rescaled by the sample camera's
    fx/W over the checkpoint's ``camera.fx_norm`` (as the runtime does). Needs ``edgedepth[train]``."""
    from . import tiling
    from .coarse_fit import fit_for_training
    from .tiling import Tiling
    from .train.checkpoint import load_models
    from .train.pipeline import coarse_depth, refine_frame

    coarse, refiner, meta = load_models(path, map_location=device)
    fx_norm = float(meta.get("camera", {}).get("fx_norm", 0) or 0)
    cfg = Tiling(*(tiles or (2, 2)), overlap_ratio, window)  # a fixed grid, blended bilinearly
    # frames fill the coarse input as in a bundle exported from this checkpoint
    fit = fit_for_training(meta.get("train", {}).get("frame_size"), tuple(coarse.input_size))

    def predict(sample: Sample) -> np.ndarray:
        image = sample["image"]
        H, W = image.shape[:2]
        if refiner is None:
            d = np.ascontiguousarray(coarse_depth(coarse, image, fit), dtype=np.float32)
            out = tiling.crop_resize(d[None], np.array([[0.0, 0.0, *d.shape]]), (H, W))[0, 0]
        else:
            out = refine_frame(coarse, refiner, image, cfg, fit=fit).depth
        K = sample["intrinsics"]
        if fx_norm > 0 and K is not None:
            out = out * ((float(K[0][0]) / W) / fx_norm)
        return np.maximum(np.nan_to_num(out), 0).astype(np.float32)

    return predict


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets import list_datasets

    parser.add_argument("kind", choices=list_datasets(), help="data set layout")
    parser.add_argument("root", help="data set root folder")
    parser.add_argument("--split", default=None, help="data set split (reader-specific)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", help="folder of predictions <sample name>.npy (HxW metres)")
    src.add_argument("--bundle", help="a NAME.edgedepth bundle run through edgedepth.Runtime")
    src.add_argument("--checkpoint", help="a training checkpoint folder (needs edgedepth[train])")
    parser.add_argument("--out", default="eval_out", help="output folder (default eval_out)")
    parser.add_argument("--align", choices=M.ALIGN_MODES, default=None,
                        help="least-squares alignment for relative-depth models")
    parser.add_argument("--min-depth", type=float, default=M.MIN_DEPTH,
                        help=f"score only ground truth deeper than this, metres (default {M.MIN_DEPTH:g})")
    parser.add_argument("--max-depth", type=float, default=M.MAX_DEPTH,
                        help=f"score only ground truth nearer than this, metres (default {M.MAX_DEPTH:g}); predictions "
                             "are clamped to [min, max] before scoring")
    parser.add_argument("--focal-baseline", type=float, default=None,
                        help="fx x baseline (px m) for SEE's disparity edges; default: depth-ratio edges")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N samples")
    parser.add_argument("--png", type=int, default=4, help="write PNGs for the first N samples (default 4)")
    parser.add_argument("--no-boundary", action="store_true", help="skip boundary F1 and ORD (faster)")
    parser.add_argument("--backend", default="auto",
                        help="runtime backend for --bundle: auto, onnxruntime, openvino, tensorrt, coreml or torch")
    parser.add_argument("--tiles", type=tile_grid, default=None, help="tile grid RxC (bundle/checkpoint)")


def run(args: argparse.Namespace) -> int:
    from .datasets import open_dataset

    dataset = open_dataset(args.kind, args.root, args.split)
    if args.pred:
        predict, label = folder_predictor(args.pred), f"predictions {args.pred}"
    elif args.bundle:
        predict, label = bundle_predictor(args.bundle, backend=args.backend, tiles=args.tiles), f"bundle {args.bundle}"
    else:
        predict, label = checkpoint_predictor(args.checkpoint, tiles=args.tiles), f"checkpoint {args.checkpoint}"
    result = evaluate(predict, dataset, args.out, min_depth=args.min_depth, max_depth=args.max_depth,
                      align_mode=args.align, focal_baseline=args.focal_baseline, boundary=not args.no_boundary,
                      limit=args.limit, max_png=args.png, desc=f"{args.kind} <- {label}")
    m = result["metrics"]
    print(" ".join(f"{k}={m[k]:.4f}" for k in ("delta1", "abs_rel", "rmse", "silog", "see", "b_f1") if k in m))
    print(f"{result['count']} frames scored; wrote {Path(args.out) / 'metrics.json'}, metrics.md and png/")
    return 0
