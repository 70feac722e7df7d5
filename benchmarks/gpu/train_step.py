"""Where a refiner training step's time goes: the data loader alone, the step alone (its batch
already on the device), and the host synchronisations inside one step. The GPU training script's
first run kept an H200 mostly idle (2.3 refiner steps/s of 64 tiles); this says which side held it.

    python benchmarks/gpu/train_step.py OUT_DIR [--device cuda] [--batch 16] [--workers N] [--steps 20] [--size 1080p]
                                        [--compile]

Renders its frames (1080p, or ``--size tiny``) and a random-weight coarse model into a temporary
folder, builds the stage from ``configs/default-refiner.yaml`` as ``scripts/train_default_gpu.sh``
does, and writes OUT_DIR/train_step.json: loader frames/s (after its first batch), step ms
min/median (synchronised), tiles/s each side allows, and on CUDA the synchronisations one step makes
(``torch.cuda.set_sync_debug_mode``). ``--compile`` trains with ``train.compile`` (the refiner
torch.compile'd; its first three steps, compiling included, are timed apart) and writes
OUT_DIR/train_step_compiled.json instead. ``--device cpu --size tiny`` checks the script itself.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SIZES = {"tiny": ((288, 512), [64, 96], 1.2), "1080p": ((1080, 1920), [128, 224], 2.4)}  # frame, tile, shrink


def _setup(work: Path, args: argparse.Namespace):
    import yaml

    from edgedepth.train.checkpoint import save_models
    from edgedepth.train.config import load_config
    from edgedepth.train.models import create_coarse
    from edgedepth.train.shards import render_shards
    from edgedepth.train.trainer import Trainer

    (h, w), tile, shrink = SIZES[args.size]
    frames = render_shards(work / "frames", max(4, 2 * args.batch), (h, w), seed=9, shard_size=4, progress=False)
    model = yaml.safe_load((REPO / "configs" / "default-coarse.yaml").read_text())["model"]
    kwargs = {**model["coarse_kwargs"], "input_size": tile}
    torch.manual_seed(0)
    coarse = create_coarse(model["coarse"], **kwargs).eval()
    save_models(work / "coarse", coarse, None, {"coarse": {"name": model["coarse"], "kwargs": kwargs}})
    cfg = load_config(REPO / "configs" / "default-refiner.yaml", [
        f"data.shards=[{frames}]", f"data.frame_size=[{h}, {w}]", "data.val_samples=1",
        f"data.num_workers={args.workers}", f"model.coarse_checkpoint={work / 'coarse'}", "model.init_refiner=null",
        f"model.tile_size={tile}", f"tiling.shrink={shrink}", f"train.batch_size={args.batch}",
        f"train.device={args.device}", f"train.out_dir={work / 'run'}", "train.progress=false",
        "train.tensorboard=false", f"train.compile={str(args.compile).lower()}"])
    return cfg, Trainer(cfg, resume="never")


def measure(args: argparse.Namespace, work: Path) -> dict:
    from edgedepth.train.data import build_loaders

    cfg, trainer = _setup(work, args)
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loader, _ = build_loaders(cfg, trainer.dist, trainer.stage.items)
    it = iter(loader)
    t = time.perf_counter()
    first = next(it)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.steps):
        next(it)
    loader_fps = args.steps * args.batch / (time.perf_counter() - t)

    (batch,) = list(trainer._micro_batches([first]))
    trainer.stage.train_mode()

    def step() -> int:
        micro_parts, _ = trainer.optimizer_step(itertools.repeat(batch))
        return int(sum(parts.get("tiles", 0) for parts in micro_parts))

    t = time.perf_counter()
    for _ in range(3):  # with --compile, the first calls compile
        tiles = step()
    sync()
    warm_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    syncs = None
    if cuda:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step()
            syncs = sum("synchroniz" in str(w.message) for w in caught)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    step_s = min(times)
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "size": args.size,
        "batch_frames": args.batch, "tiles_per_step": tiles, "workers": args.workers, "compile": args.compile,
        "first_steps_s": warm_s,
        "loader_first_batch_s": first_s, "loader_frames_per_s": loader_fps,
        "loader_bound_tiles_per_s": loader_fps * tiles / args.batch,
        "step_ms_min": 1e3 * step_s, "step_ms_median": 1e3 * statistics.median(times),
        "step_bound_tiles_per_s": tiles / step_s, "syncs_per_step": syncs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16, help="frames per step (4 tiles each)")
    ap.add_argument("--workers", type=int, default=max(1, len(os.sched_getaffinity(0)) - 2))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", choices=sorted(SIZES), default="1080p")
    ap.add_argument("--compile", action="store_true",
                    help="train.compile (torch.compile the refiner); writes train_step_compiled.json")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("train_step.py: no CUDA device visible to torch", file=sys.stderr)
        return 2
    if min(args.batch, args.steps) < 1 or args.workers < 0:
        print("train_step.py: --batch and --steps must be at least 1, --workers at least 0", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    name = "train_step_compiled.json" if args.compile else "train_step.json"
    tmp_file = args.out / (name + ".tmp")
    tmp_file.write_text(json.dumps(result, indent=2))
    os.replace(tmp_file, args.out / name)
    print(f"{'compiled: ' if args.compile else ''}loader {result['loader_frames_per_s']:.1f} frames/s ({result['loader_bound_tiles_per_s']:.0f} tiles/s), "
          f"step {result['step_ms_min']:.1f} ms ({result['step_bound_tiles_per_s']:.0f} tiles/s), "
          f"syncs per step {result['syncs_per_step']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
