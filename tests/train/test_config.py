"""Config loading: defaults work, YAML round-trips, and every bad value names its field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgedepth.train.config import (
    Config,
    config_from_dict,
    runtime_grid,
    load_config,
    save_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = Config()
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert isinstance(again.model.tile_size, tuple)


def test_yaml_values_and_overrides(tmp_path):
    path = write(tmp_path, {"name": "x", "train": {"steps": 7, "stage": "refiner"}, "model": {"tile_size": [64, 96]},
                            "data": {"frame_size": [96, 160]}})
    cfg = load_config(path, overrides=["train.batch_size=3", "optim.lr=0.01", "data.layouts=[indoor]"])
    assert load_config(path, overrides=["optim.lr=4e-3"]).optim.lr == 0.004  # YAML 1.1 reads it as a string
    assert (cfg.train.steps, cfg.train.batch_size, cfg.optim.lr) == (7, 3, 0.01)
    assert cfg.model.tile_size == (64, 96) and cfg.data.layouts == ("indoor",)
    assert isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    "data, field, exc",
    [
        ({"train": {"stpes": 3}}, "train.stpes", ValueError),
        ({"bogus": {}}, "bogus", ValueError),
        ({"train": {"steps": "ten"}}, "train.steps", TypeError),
        ({"train": {"steps": 0}}, "train.steps", ValueError),
        ({"train": {"tensorboard": "yes"}}, "train.tensorboard", TypeError),
        ({"train": {"stage": "finetune"}}, "train.stage", ValueError),
        ({"train": {"precision": "int8"}}, "train.precision", ValueError),
        ({"train": {"device": "tpu"}}, "train.device", ValueError),
        ({"optim": {"lr": -1.0}}, "optim.lr", ValueError),
        ({"optim": {"betas": [0.9]}}, "optim.betas", ValueError),
        ({"loss": {"detail": "l2"}}, "loss.detail", ValueError),
        ({"model": {"tile_size": [100, 128]}}, "model.tile_size", ValueError),
        ({"model": "prv2"}, "model", TypeError),
        ({"tiling": {"overlap_ratio": 0.7}}, "tiling.overlap_ratio", ValueError),
        ({"train": {"stage": "refiner"}, "tiling": {"rows": 1, "cols": 1}}, "tiling.rows", ValueError),
        ({"train": {"stage": "refiner"}, "tiling": {"overlap_ratio": 0.0}}, "tiling.overlap_ratio", ValueError),
        ({"train": {"stage": "distill"}}, "model.teacher_checkpoint", ValueError),
        ({"tiling": {"rows": 0}}, "tiling", ValueError),
        ({"tiling": {"shrink": -1.0}}, "tiling", ValueError),
        ({"loss": {"depth": "l2"}}, "loss.depth", ValueError),
        ({"loss": {"far": 1.5}}, "loss.far", ValueError),
        ({"loss": {"far": 0.5, "depth": "silog"}}, "loss.far", ValueError),
        ({"loss": {"gpct": -1.0}}, "loss.gpct", ValueError),
        ({"data": {"far_depth": 50.0}}, "data.far_depth", ValueError),
        ({"data": {"oracle_coarse": True}}, "data.oracle_coarse", ValueError),
        ({"data": {"shade": 1.5}}, "data.shade", ValueError),
        # 2x2 tiles of a 64x192 frame are 36x100: a square 32x32 refiner input would squash them
        ({"train": {"stage": "refiner"}, "data": {"frame_size": [64, 192]}, "model": {"tile_size": [32, 32]}},
         "model.tile_size", ValueError),
    ],
)
def test_bad_values_name_their_field(data, field, exc):
    with pytest.raises(exc, match=repr(field).replace("[", r"\[").replace(".", r"\.")):
        config_from_dict(data)


def test_runtime_grid_follows_runtime_rule():
    cfg = config_from_dict({"data": {"frame_size": [64, 96]}, "tiling": {"rows": 2, "cols": 2, "overlap_ratio": 0.25}})
    # the runtime's rule: overlap = round(0.25 * min(64/2, 96/2)) = 8 -> (64+8)/2 x (96+8)/2
    grid = runtime_grid(cfg)
    assert (grid.tile_h, grid.tile_w) == (36, 52)
    # adaptive: tiles of about shrink x the refiner input, whatever rows/cols say
    adaptive = config_from_dict({"data": {"frame_size": [1080, 1920]}, "model": {"tile_size": [128, 224]},
                                 "tiling": {"rows": 2, "cols": 2, "shrink": 2.4}})
    assert (runtime_grid(adaptive).rows, runtime_grid(adaptive).cols) == (4, 4)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)


def test_validate_unknown_models_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="'model.coarse'"):
        validate_config(config_from_dict({"model": {"coarse": "no-such-net"}}))
    with pytest.raises(ValueError, match="'model.refiner'"):
        validate_config(config_from_dict({"train": {"stage": "refiner"}, "model": {"refiner": "no-such-refiner"}}))
    with pytest.raises(FileNotFoundError, match="'data.root'"):
        validate_config(config_from_dict({"data": {"source": "folder", "root": str(tmp_path / "missing")}}))
    with pytest.raises(ValueError, match="'data.root'"):
        validate_config(config_from_dict({"data": {"source": "folder"}}))
    with pytest.raises(FileNotFoundError, match="'model.coarse_checkpoint'"):
        validate_config(config_from_dict({"model": {"coarse_checkpoint": str(tmp_path)}}))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0
