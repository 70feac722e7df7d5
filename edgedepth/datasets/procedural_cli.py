"""``edgedepth scenes OUT --count N --size WxH --layout street,indoor``: render a procedural
data set folder (readable with ``open_dataset("folder", OUT)``)."""
from __future__ import annotations

import argparse

from ..commands.arguments import frame_size
from .degrade import SENSORS, SensorConfig, degrade
from .procedural import FX_NORM, LAYOUTS, iter_scenes, scene_seed
from .writer import DEPTH_FORMATS, write_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder")
    parser.add_argument("--count", type=int, default=16, help="number of frames (default 16)")
    parser.add_argument("--size", type=frame_size, default=(540, 960), metavar="WxH", help="frame size (default 960x540)")
    parser.add_argument("--layout", default="street,indoor",
                        help=f"comma-separated layouts from {','.join(LAYOUTS)}; frames alternate")
    parser.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    parser.add_argument("--depth-format", choices=DEPTH_FORMATS, default="npy",
                        help="float32 metre .npy (default, lossless to 80 m) or 16-bit millimetre PNG "
                             "(depth beyond 65.535 m becomes invalid)")
    parser.add_argument("--unreliable", action="store_true",
                        help="add transparent panes and write mask/ (False = unreliable ground truth)")
    parser.add_argument("--sensor", choices=SENSORS, default=None,
                        help="real-domain mode: degrade depth like this sensor")
    parser.add_argument("--shadows", action="store_true",
                        help="cast shadows from the sun (colour edges without depth edges, as in photographs)")
    parser.add_argument("--fx-norm", type=float, default=FX_NORM, help=f"fx / width (default {FX_NORM})")


def run(args: argparse.Namespace) -> int:
    layouts = [s.strip() for s in args.layout.split(",") if s.strip()]
    bad = [l for l in layouts if l not in LAYOUTS]
    if bad or not layouts:
        raise SystemExit(f"edgedepth scenes: unknown layout {bad or args.layout!r}; choose from {LAYOUTS}")
    if args.count < 1:
        raise SystemExit("edgedepth scenes: --count must be >= 1")
    h, w = args.size
    stream = iter_scenes(args.seed, h, w, layouts, count=args.count, unreliable=args.unreliable, fx_norm=args.fx_norm,
                         shadows=args.shadows)
    if args.sensor:
        sensor = SensorConfig(args.sensor)
        stream = (degrade(s, sensor, seed=scene_seed(args.seed, i)) for i, s in enumerate(stream))
    n = write_dataset(args.out, stream, args.depth_format, total=args.count)
    print(f"wrote {n} frames of {h}x{w} to {args.out}")
    return 0
