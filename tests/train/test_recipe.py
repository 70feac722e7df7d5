"""The shipped refiner recipe can fit: on a fixed batch of tiles whose coarse input is the ground
truth shrunk 8x (the oracle), the refiner stage's own loss, optimizer and schedule (the config
defaults) must at least halve the mean |ln error| within a bounded number of steps. The recipe
before the fix (metres residual, SILog 0.85, PRO's BFM, GPCT in metres^2, encoder lr x0.1) barely
moved it."""
from __future__ import annotations

import pytest
import torch

from edgedepth.train.config import config_from_dict
from edgedepth.train.data import ProceduralFrames
from edgedepth.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("torch_single_thread")

STEPS = 300


def recipe_config(tmp_path, **overrides) -> dict:
    cfg = {
        "model": {"coarse": "lite", "coarse_kwargs": {"width": 0.25, "input_size": [32, 32],
                                                      "decoder_channels": [8, 8, 16, 16]},
                  "refiner": "prv2-mobile-dg", "refiner_kwargs": {"width": 0.35, "decoder_width": 0.5},
                  "tile_size": [64, 96]},
        "data": {"frame_size": [144, 256], "oracle_coarse": True, "hflip": False, "val_samples": 1},
        "tiling": {"rows": 2, "cols": 2, "overlap_ratio": 0.25},
        "train": {"stage": "refiner", "steps": STEPS, "batch_size": 2, "tensorboard": False, "progress": False,
                  "out_dir": str(tmp_path / "run")},
    }
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg.setdefault(section, {})[name] = value
    return cfg


def fit_fixed_batch(cfg: dict) -> tuple[float, list[float]]:
    """(oracle's mean |ln error|, the refiner's every 25 steps) training on one fixed batch."""
    torch.manual_seed(0)
    trainer = Trainer(config_from_dict(cfg), resume="never")
    stage = trainer.stage
    items = stage.items(ProceduralFrames((144, 256), ("street", "indoor"), seed=11, far_depth=120.0))
    batch = {k: torch.stack([items[i][k] for i in range(2)]) for k in items[0]}  # 8 tiles
    tiles = stage.cut_tiles(batch)
    ok = tiles.valid & tiles.reliable

    def err(pred):
        return float((torch.log(pred.clamp_min(1e-3)) - torch.log(tiles.gt.clamp_min(1e-3))).abs()[ok].mean())

    errors = []
    for step in range(STEPS):
        loss, _ = stage.train_step(trainer.model, batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(stage.trainable.parameters(), trainer.cfg.optim.grad_clip)
        trainer.optimizer.step()
        trainer.scheduler.step()
        if step % 25 == 24:
            with torch.no_grad():
                errors.append(err(stage.refiner.eval()(tiles.rgb, tiles.coarse)))
            stage.refiner.train()
            if errors[-1] < 0.5 * err(tiles.coarse):
                break
    return err(tiles.coarse), errors


def test_the_default_recipe_fits_a_fixed_batch_of_oracle_tiles(tmp_path):
    start, errors = fit_fixed_batch(recipe_config(tmp_path))
    assert start > 0.02  # the 8x-shrunk oracle is visibly blurry
    assert min(errors) < 0.5 * start, f"mean |ln error| {start:.4f} -> {[round(e, 4) for e in errors]}"
