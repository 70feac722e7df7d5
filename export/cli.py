"""``edgedepth export CHECKPOINT --targets ... --precision ... --calib DATA --out NAME.edgedepth``."""
from __future__ import annotations

import argparse
from pathlib import Path

from edgedepth.commands.arguments import csv_list, frame_size, tile_grid
from edgedepth.tiling_reference import UPSAMPLING

from .quantize_qdq import CALIB_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder (model.safetensors + model.json)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write, NAME.edgedepth")
    parser.add_argument("--targets", type=csv_list, default=["onnx"],
                        help="comma-separated subset of onnx,openvino,coreml,tensorrt,torch (default onnx; torch is what "
                             "`--backend torch` runs)")
    parser.add_argument("--precision", type=csv_list, default=["fp32", "fp16", "int8"],
                        help="comma-separated subset of fp32,fp16,int8 (default all three)")
    parser.add_argument("--openvino-precision", type=csv_list, default=None,
                        help="precisions written as OpenVINO IR (default: all of --precision); OpenVINO runs the "
                             "bundle's ONNX files for the others, e.g. int8 alone keeps a bundle small")
    parser.add_argument("--calib", default="procedural:16",
                        help="calibration frames, no depth needed: a folder of images or a video of your camera "
                             "(images:PATH, video:PATH), a data-set folder ([KIND:]PATH) or procedural:N (default)")
    parser.add_argument("--heldout", default="procedural:4",
                        help="held-out frames with depth for the parity report (data-set folder or procedural:N)")
    parser.add_argument("--select", default="procedural:4",
                        help="frames with depth on which NNCF accuracy control picks the OpenVINO INT8 model "
                             "(kept apart from --heldout, which reports it)")
    parser.add_argument("--frame-size", type=frame_size, default=None, metavar="WxH",
                        help="size of procedural frames (default: the checkpoint's training frame size)")
    parser.add_argument("--tiles", type=tile_grid, default=None, metavar="ROWSxCOLS",
                        help="the bundle's grid (default: the checkpoint's training tiling)")
    parser.add_argument("--overlap", type=float, default=None, help="tile overlap, fraction of the tile pitch")
    parser.add_argument("--window", default=None, help="blend window: uniform, linear, cosine, gaussian")
    parser.add_argument("--shrink", type=float, default=None,
                        help="adaptive grid: tiles of SHRINK x the refiner input in frame pixels (0: fixed grid)")
    parser.add_argument("--max-side", type=int, default=None, metavar="PX",
                        help="adaptive grid: frames whose longer side exceeds PX get the grid of that frame "
                             "shrunk to PX, with larger tiles (0: no limit; default: the checkpoint's)")
    parser.add_argument("--upsample", choices=UPSAMPLING, default=None,
                        help="how the runtime turns refined tiles into the full-resolution map (default: the "
                             "checkpoint's tiling.upsample; joint_bilateral: guided by the frame's colours; guided: "
                             "the fast guided filter, steps placed to the frame pixel)")
    parser.add_argument("--joint-sigma", type=float, default=None,
                        help="colour scale of the joint bilateral upsampling (0..1 per channel; default 0.05)")
    parser.add_argument("--snap", type=float, default=None, metavar="CONTRAST",
                        help="with joint_bilateral or guided: keep depth steps steep at the refiner's resolution where a 3x3 "
                             "neighbourhood spans a depth ratio above exp(CONTRAST) (0: off; default: the "
                             "checkpoint's)")
    parser.add_argument("--calib-tiles", type=int, default=64, help="minimum INT8 calibration tiles (64)")
    parser.add_argument("--calib-method", default="minmax", choices=tuple(CALIB_METHODS),
                        help="how the ONNX Q/DQ INT8 takes activation ranges from the calibration frames "
                             "(default minmax; OpenVINO INT8 is NNCF's own)")
    parser.add_argument("--int8-bound", type=float, default=0.02,
                        help="max relative AbsRel rise of INT8 over float32 (0.02 = +2%%)")
    parser.add_argument("--no-accuracy-control", action="store_true", help="plain NNCF PTQ for OpenVINO INT8")
    parser.add_argument("--coarse-int8", choices=("auto", "on", "off"), default="auto",
                        help="INT8 for the coarse model too (auto: for a ViT coarse model such as Depth Anything V2)")
    parser.add_argument("--pipeline", type=frame_size, default=None, metavar="WxH",
                        help="also build the fused single-model pipeline at this size (e.g. 1920x1080)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be built (targets, precisions, tiling, frames, files) and exit")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from edgedepth.tiling import Tiling
    from edgedepth.train.checkpoint import read_meta

    from .exporter import ExportConfig, export_checkpoint, plans_coarse_int8
    from .plan import describe

    trained = read_meta(args.checkpoint).get("train", {}).get("tiling")
    tiling = Tiling.from_json(trained) if trained else Tiling()
    changes = {k: v for k, v in (("overlap_ratio", args.overlap), ("window", args.window), ("shrink", args.shrink),
                                 ("upsample", args.upsample), ("joint_sigma", args.joint_sigma),
                                 ("max_side", args.max_side), ("snap", args.snap))
               if v is not None}
    if args.tiles is not None:  # a grid asked for by rows x cols is a fixed one unless --shrink says otherwise
        changes.update(rows=args.tiles[0], cols=args.tiles[1], shrink=changes.get("shrink", 0.0))
        if not changes["shrink"]:  # a fixed grid has no cap
            changes.setdefault("max_side", 0)
    tiling = dataclasses.replace(tiling, **changes)
    cfg = ExportConfig(targets=args.targets, precisions=args.precision, calib=args.calib, heldout=args.heldout,
                       select=args.select,
                       frame_size=args.frame_size, tiling=tiling,
                       calib_tiles=args.calib_tiles, calib_method=args.calib_method, int8_bound=args.int8_bound,
                       accuracy_control=not args.no_accuracy_control, pipeline_size=args.pipeline,
                       coarse_int8={"auto": None, "on": True, "off": False}[args.coarse_int8],
                       openvino_precisions=args.openvino_precision, overwrite=args.overwrite)
    if args.dry_run:
        cfg.validate()
        meta = read_meta(args.checkpoint)
        print(f"would write {args.out} from {args.checkpoint}:\n"
              + describe(cfg.resolved(meta), plans_coarse_int8(cfg, meta)))
        return 0
    export_checkpoint(args.checkpoint, args.out, cfg)
    return 0
