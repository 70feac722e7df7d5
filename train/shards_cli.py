"""``edgedepth train-data OUT --count N --size WxH``: pre-render procedural training frames as shards
(:mod:`edgedepth.train.shards`) on every core; point a config's ``data.shards`` at OUT."""
from __future__ import annotations

import argparse
import sys

from edgedepth.commands.arguments import frame_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="shard folder (created; an interrupted render resumes)")
    parser.add_argument("--count", type=int, required=True, help="number of frames")
    parser.add_argument("--size", type=frame_size, required=True, metavar="WxH", help="frame size, e.g. 1920x1080")
    parser.add_argument("--seed", type=int, default=0,
                        help="stream seed: frame i is scene seed SEED*1000003+i (default 0; validation uses 1000)")
    parser.add_argument("--layout", default="street,indoor", help="comma-separated layouts; frames alternate")
    parser.add_argument("--far-depth", type=float, default=120.0,
                        help="depth (m) of the sky and of anything beyond 80 m (default 120; 0 = invalid)")
    parser.add_argument("--no-panes", action="store_true", help="no transparent panes (unreliable ground truth)")
    parser.add_argument("--shadows", action="store_true",
                        help="cast shadows from the sun (colour edges without depth edges, as in photographs)")
    parser.add_argument("--shard-size", type=int, default=8, help="frames per shard file (default 8)")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: every core)")


def run(args: argparse.Namespace) -> int:
    from .shards import render_shards

    layouts = [s.strip() for s in args.layout.split(",") if s.strip()]
    h, w = args.size
    try:
        root = render_shards(args.out, args.count, (h, w), seed=args.seed, layouts=layouts,
                             unreliable=not args.no_panes, far_depth=args.far_depth, shard_size=args.shard_size,
                             workers=args.workers, shadows=args.shadows)
    except (ValueError, FileNotFoundError) as err:
        print(f"edgedepth train-data: {err}", file=sys.stderr)
        return 2
    print(f"{args.count} frames of {w}x{h} in {root}")
    return 0
