"""Checkpoint folders: round trip through the registry, atomic writes, resumable training state."""
from __future__ import annotations

import json

import pytest
import torch

from edgedepth.train.checkpoint import (
    latest_checkpoint,
    load_models,
    load_refiner_weights,
    load_trainer_state,
    remove_stale_temporaries,
    save_models,
    save_training_checkpoint,
    step_dir,
)
from edgedepth.train.models import create_coarse
from edgedepth.train.models.refiner import create_refiner
from edgedepth.train.stages.base import model_spec


def tiny_models(seed=0):
    torch.manual_seed(seed)
    coarse = create_coarse("lite", encoder="mobilenetv3_small", width=0.25, input_size=(64, 96),
                           decoder_channels=(8, 8, 16, 16))
    refiner = create_refiner("prv2-mobile", coarse, (32, 32), width=0.25, decoder_width=0.25)
    # perturb the zero-initialised heads so a round trip that dropped them would show
    with torch.no_grad():
        for p in refiner.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return coarse.eval(), refiner.eval()


def meta_for(coarse, refiner):
    meta = {"coarse": model_spec(coarse), "camera": {"fx_norm": 0.8}, "train": {"stage": "test"}}
    if refiner is not None:
        meta["refiner"] = model_spec(refiner)
    return meta


def outputs(coarse, refiner):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 96)
    depth, feats = coarse(x)
    rgb, cd = torch.randn(2, 3, 32, 32), torch.rand(2, 1, 32, 32) * 5
    guides = [torch.randn(2, *g) for g in refiner.guidance]
    return depth, refiner(rgb, cd, *guides)


def test_round_trip_rebuilds_identical_models(tmp_path):
    coarse, refiner = tiny_models()
    path = save_models(tmp_path / "ck", coarse, refiner, meta_for(coarse, refiner))
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((path / "model.json").read_text())
    assert meta["coarse"]["name"] == "lite" and meta["refiner"]["name"] == "prv2-mobile"
    assert meta["camera"] == {"fx_norm": 0.8}
    c2, r2, meta2 = load_models(path)
    assert meta2 == meta
    for a, b in zip(outputs(coarse, refiner), outputs(c2, r2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a different init really differs (the comparison above can fail)
    c3, r3 = tiny_models(seed=5)
    assert not torch.equal(outputs(coarse, refiner)[1], outputs(c3, r3)[1])
    load_refiner_weights(path, r3)
    torch.testing.assert_close(outputs(coarse, refiner)[1], outputs(coarse, r3)[1], rtol=0, atol=0)


def test_coarse_only_checkpoint(tmp_path):
    coarse, _ = tiny_models()
    save_models(tmp_path / "c", coarse, None, meta_for(coarse, None))
    c2, r2, meta = load_models(tmp_path / "c")
    assert r2 is None and "refiner" not in meta
    torch.testing.assert_close(coarse(torch.ones(1, 3, 64, 96))[0], c2(torch.ones(1, 3, 64, 96))[0])


def test_load_errors_name_the_file(tmp_path):
    coarse, refiner = tiny_models()
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_models(tmp_path / "nothing")
    path = save_models(tmp_path / "ck", coarse, refiner, meta_for(coarse, refiner))
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_models(path)
    # weights of another architecture: a clear mismatch, not a crash
    bigger = create_coarse("lite", encoder="mobilenetv3_small", width=0.5, input_size=(64, 96))
    save_models(tmp_path / "big", bigger, None, meta_for(bigger, None))
    meta = json.loads((tmp_path / "big" / "model.json").read_text())
    meta["coarse"]["kwargs"]["width"] = 0.25
    (tmp_path / "big" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="coarse"):
        load_models(tmp_path / "big")
    with pytest.raises(ValueError, match="meta\\['coarse'\\]"):
        save_models(tmp_path / "x", coarse, None, {"camera": {}})


def test_training_checkpoints_latest_pruning_and_stale_temporaries(tmp_path):
    coarse, refiner = tiny_models()
    meta = meta_for(coarse, refiner)
    assert latest_checkpoint(tmp_path) is None
    for step in (10, 20, 30):
        save_training_checkpoint(tmp_path, step, coarse, refiner, meta, {"step": step}, keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000020", "step_00000030"]
    assert latest_checkpoint(tmp_path) == step_dir(tmp_path, 30)
    assert load_trainer_state(latest_checkpoint(tmp_path))["step"] == 30
    # a writer killed mid-checkpoint leaves a temporary folder: ignored and cleaned
    stale = root / ".step_00000040.tmp-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    (root / "latest").write_text("step_00000040\n")  # pointer to something incomplete
    assert latest_checkpoint(tmp_path) == step_dir(tmp_path, 30)
    assert stale.exists()  # reading never deletes what a live writer may be filling
    assert remove_stale_temporaries(tmp_path) == 1 and not stale.exists()
    with pytest.raises(FileNotFoundError, match="trainer.pt"):
        load_trainer_state(tmp_path)
