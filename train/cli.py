"""``edgedepth train CONFIG``: train one stage from a YAML config (see configs/).

One process:             edgedepth train configs/default-coarse.yaml
Several GPUs / nodes:    torchrun --nproc_per_node 4 -m edgedepth.cli train configs/default-refiner.yaml
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (sections model, data, tiling, optim, loss, train)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set train.steps=200 (repeatable)")
    parser.add_argument("--out", help="run folder (overrides train.out_dir)")
    parser.add_argument("--resume", default="auto",
                        help="auto: continue from the run folder's newest checkpoint (default); "
                             "never: start over; or a checkpoint folder")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")


def run(args: argparse.Namespace) -> int:
    from .config import load_config, validate_config

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    try:
        cfg = load_config(args.config, overrides)
        validate_config(cfg)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"edgedepth train: {err}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok (stage {cfg.train.stage}, {cfg.train.steps} steps -> {cfg.train.out_dir})")
        return 0

    from .trainer import Trainer

    trainer = Trainer(cfg, resume=args.resume)
    if trainer.dist.is_main and trainer.resumed_from is not None:
        print(f"resuming from {trainer.resumed_from} (step {trainer.step})", file=sys.stderr)
    metrics = trainer.fit()
    if trainer.dist.is_main:
        summary = "  ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in metrics.items())
        print(f"done: {cfg.train.out_dir}/final  {summary}")
    return 0
