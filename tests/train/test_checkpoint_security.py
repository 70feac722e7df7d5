"""Resuming a run must not execute what a trainer.pt holds, nor follow `latest` out of the run
(train/checkpoint.py loads trainer.pt with weights_only=True plus the numpy globals of the RNG
state, and keeps `latest` inside checkpoints/)."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from edgedepth.train.checkpoint import latest_checkpoint, load_trainer_state, save_training_checkpoint

from .test_checkpoint import meta_for, tiny_models



class _Payload:
    """What a crafted trainer.pt can hold: an object whose unpickling runs a command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_trainer_state_does_not_run_code(tmp_path):
    coarse, refiner = tiny_models()
    folder = save_training_checkpoint(tmp_path / "run", 10, coarse, refiner, meta_for(coarse, refiner),
                                      {"step": 10})
    marker = tmp_path / "pwned"
    with open(folder / "trainer.pt", "wb") as fh:
        pickle.dump({"step": 10, "rng": _Payload(marker)}, fh, protocol=2)
    with pytest.raises(Exception):
        load_trainer_state(folder)
    assert not marker.exists(), "loading trainer.pt ran a shell command"


def test_a_real_trainer_state_still_loads(tmp_path):
    import random

    import numpy as np

    coarse, refiner = tiny_models()
    optimizer = torch.optim.AdamW(refiner.parameters(), lr=1e-3)
    state = {"step": 3, "optimizer": optimizer.state_dict(),
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    folder = save_training_checkpoint(tmp_path / "run", 3, coarse, refiner, meta_for(coarse, refiner), state)
    loaded = load_trainer_state(folder)
    assert loaded["step"] == 3 and np.array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])


def test_latest_may_not_point_outside_the_run(tmp_path):
    coarse, refiner = tiny_models()
    meta = meta_for(coarse, refiner)
    save_training_checkpoint(tmp_path / "run", 10, coarse, refiner, meta, {"step": 10})
    outside = save_training_checkpoint(tmp_path / "elsewhere", 99, coarse, refiner, meta, {"step": 99})
    (tmp_path / "run" / "checkpoints" / "latest").write_text(os.path.relpath(outside, tmp_path / "run" / "checkpoints"))
    assert latest_checkpoint(tmp_path / "run").parent == tmp_path / "run" / "checkpoints"
